"""No crash loses more than an epoch, no run folder runs code, every bad input is one line.

The kill tests run a real train.py and SIGKILL it at the moment named; the rest check what is
refused, and that it is refused before anything is written."""
from __future__ import annotations

import errno
import json
import math
import os
import pathlib
import zipfile

import pytest

import ensemble as ensemble_cli
import train as train_cli
import tune as tune_cli
from common import cli
from common.run_folder import read_history, remove_leftovers, trim_history, write_json
from loading.run_loader import load_model
from training import trainer
from training.recipes import override
from tests.helpers import ERROR, TRAIN, backed_up as _backed_up, kill_when as _kill_when
from tests.helpers import resume_and_check as _resume_and_check, start_train as _start


@pytest.mark.slow
def test_kill_in_the_first_epoch_then_resume(tmp_path):
    run_dir = tmp_path / "run"
    process = _start(run_dir, *TRAIN)
    _kill_when(process, lambda: (run_dir / "history.csv").exists())
    assert _backed_up(run_dir) == 0 and not read_history(run_dir / "history.csv")
    _resume_and_check(run_dir)


@pytest.mark.slow
def test_kill_between_epochs_then_resume(tmp_path):
    run_dir = tmp_path / "run"
    process = _start(run_dir, *TRAIN)
    _kill_when(process, lambda: _backed_up(run_dir) >= 1)
    _resume_and_check(run_dir)


@pytest.mark.slow
def test_kill_after_the_last_epoch_resumes_by_writing_only_what_is_missing(tmp_path):
    run_dir = tmp_path / "run"
    process = _start(run_dir, *TRAIN)
    _kill_when(process, lambda: (run_dir / "fit.json").exists())
    assert not (run_dir / "metrics.json").exists()  # backup/ may be there still: fit.json is written before it goes
    history_before = (run_dir / "history.csv").read_bytes()
    model_before = (run_dir / "model.keras").read_bytes()
    _resume_and_check(run_dir)
    assert (run_dir / "history.csv").read_bytes() == history_before  # nothing was retrained
    assert (run_dir / "model.keras").read_bytes() == model_before


FAST = dict(dataset="digits", classes=4, per_class=40, verbose=0)


def fast_config(epochs=2):
    config = trainer.default_config("cis680_allconv", **FAST)
    config.recipe = override(config.recipe, epochs=epochs, batch_size=32, learning_rate=3e-3)
    return config


@pytest.mark.slow
def test_a_failure_after_fit_is_finished_on_resume_without_retraining(tmp_path, monkeypatch):
    from training import fit

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    run_dir = tmp_path / "run"
    train_cli_config = fast_config()
    run_dir.mkdir()
    monkeypatch.setattr(fit, "plot_history", disk_full)
    with pytest.raises(OSError):
        trainer.train(train_cli_config, run_dir)
    assert (run_dir / "fit.json").exists() and not (run_dir / "metrics.json").exists()
    history_before = (run_dir / "history.csv").read_bytes()
    monkeypatch.undo()
    trainer.train(train_cli_config, run_dir, resume=True)
    assert (run_dir / "history.csv").read_bytes() == history_before
    assert (run_dir / "metrics.json").exists() and (run_dir / "curves.png").exists()


def test_empty_history_and_leftovers_do_not_block_a_folder(tmp_path):
    history = tmp_path / "history.csv"
    history.write_text("")
    assert trim_history(history, 0) == [] and not history.exists()
    history.write_text("epoch,loss\n")
    assert trim_history(history, 0) == [] and not history.exists()
    leftover = tmp_path / ".model.keras.tmp-abc123.keras"
    leftover.write_bytes(b"half")
    (tmp_path / "model.keras").write_bytes(b"whole")
    assert remove_leftovers(tmp_path) == [leftover]
    assert not leftover.exists() and (tmp_path / "model.keras").exists()


def test_written_files_get_the_umask_mode_and_json_has_no_nan(tmp_path):
    previous = os.umask(0o022)
    try:
        write_json(tmp_path / "m.json", {"a": math.nan, "b": [math.inf, 1.0]})
    finally:
        os.umask(previous)
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o644
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": None, "b": [None, 1.0]}


def _one_line_error(capsys, main, argv) -> str:
    assert cli.run_cli(main, argv) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(ERROR) and "\n" not in error and "Traceback" not in error, error
    return error


@pytest.mark.parametrize("argv, needle", [
    (["--learning-rate", "nan"], "finite"), (["--learning-rate", "-1"], "> 0"), (["--learning-rate", "inf"], "finite"),
    (["--batch-size", "0"], ">= 1"), (["--epochs", "0"], ">= 1"), (["--eps", "2/0"], "2/0"),
    (["--adv", "fgsm:1", "--eps", "3"], "[0, 1]"), (["--adv-fraction", "0"], "(0, 1]"),
    (["--pgd-steps", "0"], ">= 1"), (["--classes", "0"], ">= 1"),
])
def test_nonsense_flags_are_refused_by_argparse(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        train_cli.main(["cis680_allconv", "--dataset", "digits", *argv])
    assert exit_info.value.code == 2 and needle in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_bad_inputs_are_one_line_before_anything_is_written(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    digits = ["cis680_allconv", "--dataset", "digits"]
    (tmp_path / "array.json").write_text("[1, 2]")
    (tmp_path / "eps.json").write_text('{"eps": "2/0"}')
    (tmp_path / "lr.json").write_text('{"learning_rate": -1}')
    (tmp_path / "folder.json").mkdir()
    (tmp_path / "a-file").write_text("")
    cases = [
        (digits + ["--eps", "2/255"], "no --adv"),
        (digits + ["--hparams", "array.json"], "JSON object"),
        (digits + ["--hparams", "eps.json"], "2/0"),
        (digits + ["--hparams", "lr.json"], "learning_rate"),
        (digits + ["--hparams", "folder.json"], "is a folder"),
        (digits + ["--run-dir", "a-file"], "is a file"),
        (["cis680_allconv", "--dataset", "cifar10", "--data", str(tmp_path)], "cifar"),
        (digits + ["--save-bn", "adv"], "--dual-bn"),
    ]
    for argv, needle in cases:
        assert needle in _one_line_error(capsys, train_cli.main, argv), argv
    assert not (tmp_path / "runs").exists()


def test_resume_refusals_say_what_is_wrong(capsys, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    config = fast_config().to_dict()
    write_json(run_dir / "config.json", {**config, "recipe": {**config["recipe"], "bogus": 1}})
    assert "bogus" in _one_line_error(capsys, train_cli.main, ["--resume", str(run_dir)])
    write_json(run_dir / "config.json", {key: value for key, value in config.items() if key != "recipe"})
    assert "no recipe" in _one_line_error(capsys, train_cli.main, ["--resume", str(run_dir)])
    write_json(run_dir / "metrics.json", {})
    assert "finished run" in _one_line_error(capsys, train_cli.main, ["--resume", str(run_dir)])
    message = _one_line_error(capsys, train_cli.main, ["cis680_allconv", "--dataset", "digits", "--run-dir",
                                                        str(run_dir)])
    assert "finished run" in message and "--resume" not in message


def test_a_read_only_run_dir_is_refused_before_data_is_loaded(capsys, tmp_path, monkeypatch):
    from common import run_folder

    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    # Root writes into a 0500 folder anyway; ask the permission check what an ordinary user would get.
    monkeypatch.setattr(run_folder.os, "access", lambda path, mode: pathlib.Path(path) != locked)
    monkeypatch.setattr(trainer, "load_splits", lambda config: pytest.fail("data was loaded first"))
    assert "not writable" in _one_line_error(capsys, train_cli.main, ["cis680_allconv", "--dataset", "digits",
                                                                       "--run-dir", str(locked / "run")])


def test_disk_full_is_one_line(capsys):
    def full(argv):
        raise OSError(errno.ENOSPC, "No space left on device", "runs/x/model.keras")

    assert "no space left" in _one_line_error(capsys, full, [])


def test_a_resume_names_the_flags_it_ignores(capsys, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_json(run_dir / "metrics.json", {})
    cli.run_cli(train_cli.main, ["--resume", str(run_dir), "--epochs", "9", "--learning-rate", "0.1"])
    err = capsys.readouterr().err
    assert "--epochs, --learning-rate ignored with --resume" in err


def _saved_model(tmp_path):
    import keras

    inputs = keras.Input((4,), name="x")
    model = keras.Model(inputs, keras.layers.Dense(2, name="logits")(inputs))
    path = tmp_path / "model.keras"
    model.save(path)
    return path


def test_foreign_and_corrupt_keras_files_are_named_precisely(tmp_path):
    path = _saved_model(tmp_path)
    foreign = tmp_path / "foreign.keras"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(foreign, "w") as target:
        for item in source.infolist():
            content = source.read(item.filename)
            if item.filename == "config.json":
                content = content.replace(b'"Dense"', b'"NoSuchLayer"')
            target.writestr(item, content)
    with pytest.raises(ValueError, match="cannot be loaded"):
        load_model(foreign)
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable .keras file"):
        load_model(corrupt)
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.keras")


def test_tune_refuses_nonsense_before_writing(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        tune_cli.main(["cis680_allconv", "--dataset", "digits", "--lr-max", "inf"])
    assert "finite" in capsys.readouterr().err
    argv = ["cis680_allconv", "--data", str(tmp_path / "missing"), "--dir", "search"]
    assert str(tmp_path / "missing") in _one_line_error(capsys, tune_cli.main, argv)
    assert not (tmp_path / "search").exists()


def _member(tmp_path, name, dataset="digits", classes=4, num_classes=4):
    import keras

    run_dir = tmp_path / name
    run_dir.mkdir()
    inputs = keras.Input((32, 32, 3), name="image")
    hidden = keras.layers.GlobalAveragePooling2D(name="pool")(inputs)
    keras.Model(inputs, keras.layers.Dense(num_classes, name="logits")(hidden)).save(run_dir / "model.keras")
    config = fast_config().to_dict()
    write_json(run_dir / "config.json", {**config, "dataset": dataset, "classes": classes})
    return str(run_dir)


def test_ensembles_refuse_mixed_datasets_and_repeated_members(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    digits = _member(tmp_path, "digits-run")
    tiny = _member(tmp_path, "tiny-run", dataset="tiny-imagenet", classes=4)
    assert "same dataset" in _one_line_error(capsys, ensemble_cli.main, ["average", digits, tiny])
    assert "listed once" in _one_line_error(capsys, ensemble_cli.main, ["average", digits, digits])
    assert not (tmp_path / "runs").exists()


def test_average_reads_only_the_val_split_and_defaults_per_class_to_the_first_members(tmp_path, monkeypatch):
    from training import ensembles

    members = ensembles.load_members([_member(tmp_path, "a"), _member(tmp_path, "b")])
    members[0].config["per_class"] = 7
    assert ensembles.data_config(members, kind="average").per_class == 7
    loaded = []
    monkeypatch.setattr(trainer, "load_splits", lambda config: loaded.append("train") or (_ for _ in ()).throw(
        AssertionError("the average decoded the train split")))
    ensembles.save_average(members, tmp_path / "average")
    assert not loaded and (tmp_path / "average" / "metrics.json").exists()
