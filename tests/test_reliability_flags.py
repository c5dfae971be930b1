"""Every value is checked on one path before anything runs or is written, every flag that would do
nothing is refused, and every refusal is one line with exit status 2."""
from __future__ import annotations

import json
import pathlib

import keras
import pytest

import ensemble as ensemble_cli
import evaluate as evaluate_cli
import explain as explain_cli
import train as train_cli
import tune as tune_cli
from common import cli, run_config
from common.run_folder import write_json
from experiments import bench as bench_cli, cis680 as cis680_cli
from loading.run_loader import load_run
from training import trainer
from training.recipes import override

DIGITS = ["cis680_allconv", "--dataset", "digits"]


def _one_line(capsys, main, argv) -> str:
    assert cli.run_cli(main, argv) == 2, argv
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "Traceback" not in error and "usage:" not in error, error
    return error


def _argparse_line(capsys, main, argv) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    error = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "\n" not in error and "usage:" not in error, error
    return error


@pytest.mark.parametrize("main, argv, prog", [
    (train_cli.main, DIGITS + ["--epochs", "0"], "train.py"),
    (tune_cli.main, DIGITS + ["--trials", "0"], "tune.py"),
    (explain_cli.main, ["saliency"], "explain.py"),
    (evaluate_cli.main, ["x.keras", "--eps", "-1/255"], "evaluate.py"),
    (ensemble_cli.main, ["average"], "ensemble.py"),
    (bench_cli.main, ["imt", "--seeds", "-1"], "python -m experiments.bench"),
    (cis680_cli.main, ["vanishing", "--seeds", "-1"], "python -m experiments.cis680"),
])
def test_every_cli_refusal_is_one_line_without_the_usage_block(main, argv, prog, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    error = _argparse_line(capsys, main, argv)
    # prog is the script's name (pytest's own under test, so only the experiments' fixed ones are checked)
    assert ": error: " in error and (error.startswith(prog) or not prog.startswith("python -m")), error
    assert not list(tmp_path.iterdir())


def test_a_negative_eps_names_its_range(capsys):
    assert "must be in [0, 1]" in _argparse_line(capsys, evaluate_cli.main, ["x.keras", "--eps", "-1/255"])


@pytest.mark.parametrize("argv, needle", [
    (["--parseval-rows", "0.5"], "--parseval-rows needs --parseval"),
    (["--smoothness-power", "1"], "--smoothness-power needs --smoothness"),
    (["--smoothness-k", "3"], "--smoothness-k needs --smoothness"),
    (["--smoothness-layers", "conv1"], "--smoothness-layers needs --smoothness"),
    (["--adv-fraction", "0.3"], "--adv-fraction needs an attack"),
    (["--adv", "fgsm:1", "--pgd-steps", "3"], "--pgd-steps applies to a PGD attack"),
    (["--adv", "fgsm:1", "--pgd-step-size", "1/255"], "--pgd-step-size applies to a PGD attack"),
    (["--adv", "fgsm:1", "--noise-snr", "33"], "--noise-snr sets the noise attack's SNR"),
    (["--advprop", "--noise-snr", "33"], "--noise-snr sets the noise attack's SNR"),
    (["--synthetic-fraction", "0.3"], "--synthetic-fraction needs --synthetic"),
    (["--advprop", "--adv-fraction", "0.3"], "--adv-fraction does not apply"),
    (["--dual-bn"], "--dual-bn routes adversarial images"),
    (["--image-size", "1000000"], "--image-size` is too large"),
])
def test_train_refuses_flags_that_would_do_nothing(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert needle in _one_line(capsys, train_cli.main, DIGITS + argv)
    assert not list(tmp_path.iterdir())


def test_flags_that_act_together_are_accepted():
    parser = train_cli.build_parser()
    from training.flag_rules import refuse_ignored_flags

    for argv in (["--adv", "pgd:1", "--adv-fraction", "1.0", "--pgd-steps", "2", "--keep-clean", "--dual-bn"],
                 ["--noise-snr", "33", "--parseval", "0.01", "--parseval-rows", "0.5"],
                 ["--advprop", "--pgd-steps", "3"], ["--smoothness", "0.01", "--smoothness-power", "1"],
                 ["--adv", "fgsm:1,noise:1", "--noise-snr", "40"]):
        refuse_ignored_flags(parser.parse_args(DIGITS + argv), parser.parse_args([]))


def _config(**changes):
    config = trainer.default_config("cis680_allconv", dataset="digits", classes=4, per_class=40, verbose=0)
    config.recipe = override(config.recipe, epochs=1, batch_size=32)
    return {**config.to_dict(), **changes}


@pytest.mark.parametrize("changes, needle", [
    ({"adversarial": "fgsm"}, "`adversarial` must be a JSON object or null"),
    ({"image_size": 1000000}, "`image_size` is too large"),
    ({"seed": "3"}, "`seed` must be an integer"),
    ({"classes": -4}, "`classes` must be an integer >= 1"),
    ({"dataset": "imagenet"}, "`dataset` must be one of"),
    ({"parts": [{"kind": "loss"}]}, "`parts` must be a list"),
    ({"mixed_precision": "yes"}, "`mixed_precision` must be true or false"),
])
def test_a_tampered_config_is_one_line_on_resume_naming_file_and_field(changes, needle, capsys, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_json(run_dir / "config.json", _config(**changes))
    error = _one_line(capsys, train_cli.main, ["--resume", str(run_dir)])
    assert f"{run_dir / 'config.json'}: " in error and needle in error, error
    assert sorted(path.name for path in run_dir.iterdir()) == [".lock", "config.json"]


def test_a_tampered_attack_spec_is_one_line_on_resume(capsys, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_json(run_dir / "config.json", _config(adversarial={"attacks": "bogus:1", "eps": 0.01}))
    assert "bogus" in _one_line(capsys, train_cli.main, ["--resume", str(run_dir)])


def _classifier_run(tmp_path, name="run", *, outputs=4, **changes):
    run_dir = tmp_path / name
    run_dir.mkdir()
    inputs = keras.Input((8, 8, 3), name="image")
    hidden = keras.layers.GlobalAveragePooling2D(name="pool")(inputs)
    keras.Model(inputs, keras.layers.Dense(outputs, name="logits")(hidden)).save(run_dir / "model.keras")
    write_json(run_dir / "config.json", {**_config(), "num_classes": 4, **changes})
    return run_dir


def test_loaders_check_the_config_and_the_model_against_it(tmp_path):
    with pytest.raises(ValueError, match=r"config.json: `num_classes` is 4 but the run's model predicts 10"):
        load_run(_classifier_run(tmp_path, "ten", outputs=10))
    with pytest.raises(ValueError, match=r"config.json: `image_size` is too large"):
        load_run(_classifier_run(tmp_path, "huge", image_size=10**6))
    assert load_run(_classifier_run(tmp_path, "fine")).config["num_classes"] == 4


def test_evaluate_refuses_a_gan_run_and_work_it_cannot_finish(capsys, tmp_path, monkeypatch):
    gan = tmp_path / "gan"
    gan.mkdir()
    (gan / "config.json").write_text(json.dumps({"kind": "cgan", "latent_dim": 100, "dataset": "digits"}))
    assert "is a GAN run" in _one_line(capsys, evaluate_cli.main, [str(gan)])
    two = _classifier_run(tmp_path, "two", outputs=2, num_classes=2)
    assert "need at least 4 classes" in _one_line(capsys, evaluate_cli.main, [str(two), "--attack", "autoattack"])
    assert "--targets 9" in _one_line(capsys, evaluate_cli.main, [str(_classifier_run(tmp_path, "four")), "--attack",
                                                                  "autoattack"])
    assert "--apgd-steps only applies to --attack autoattack" in _one_line(
        capsys, evaluate_cli.main, [str(two), "--attack", "fgsm", "--apgd-steps", "10"])
    from common import run_folder

    # Root writes into a read-only folder anyway; ask the permission check what an ordinary user would get.
    monkeypatch.setattr(run_folder.os, "access", lambda path, mode: pathlib.Path(path) != two)
    monkeypatch.setattr("loading.run_loader.load_run", lambda *a, **k: pytest.fail("the model was loaded first"))
    assert "not writable" in _one_line(capsys, evaluate_cli.main, [str(two), "--attack", "fgsm"])


def test_explain_refuses_an_unwritable_out_before_any_work(capsys, tmp_path, monkeypatch):
    from analysis import saliency_report
    from common import run_folder

    locked = tmp_path / "locked"
    locked.mkdir()
    monkeypatch.setattr(run_folder.os, "access", lambda path, mode: pathlib.Path(path) != locked)
    monkeypatch.setattr(saliency_report, "explain_run", lambda *a, **k: pytest.fail("work ran first"))
    run_dir = _classifier_run(tmp_path)
    assert "not writable" in _one_line(capsys, explain_cli.main, ["saliency", str(run_dir), "--out", str(locked)])


@pytest.mark.parametrize("argv, needle", [
    (["--search", "augment", "--lr-max", "0.1"], "--lr-max only applies to --search optimizer"),
    (["--search", "augment", "--optimizers", "adam"], "--optimizers only applies to --search optimizer"),
    (["--adv-fraction", "0.3"], "--adv-fraction only applies with --adv"),
    (["--search", "augment", "--eval-eps", "4/255"], "--eval-eps only applies with --adv"),
])
def test_tune_refuses_flags_of_the_other_search(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert needle in _one_line(capsys, tune_cli.main, DIGITS + argv)
    assert not list(tmp_path.iterdir())


def test_a_check_against_the_built_model_comes_before_config_json(capsys, tmp_path):
    run_dir = tmp_path / "run"
    argv = DIGITS + ["--classes", "4", "--per-class", "20", "--epochs", "1", "--run-dir", str(run_dir)]
    assert "'nope' is not a layer" in _one_line(capsys, train_cli.main, argv + ["--log-gradients", "nope"])
    assert "no normalization layer" in _one_line(capsys, train_cli.main, argv + ["--adv", "fgsm:1", "--dual-bn"])
    assert not run_dir.exists()  # so the same command, corrected, is a new run, not "already holds a run"


def test_a_generator_of_other_classes_is_refused_before_config_json(capsys, tmp_path):
    gan = tmp_path / "gan"
    gan.mkdir()
    noise, label = keras.Input((4,), name="noise"), keras.Input((), dtype="int32", name="label")
    mixed = keras.layers.Add()([noise, keras.layers.Embedding(10, 4, name="label_embedding")(label)])
    image = keras.layers.Reshape((8, 8, 3))(keras.layers.Dense(192, activation="sigmoid")(mixed))
    keras.Model([noise, label], image).save(gan / "generator.keras")
    run_dir = tmp_path / "run"
    argv = DIGITS + ["--classes", "2", "--per-class", "20", "--epochs", "1", "--synthetic", str(gan), "--run-dir",
                     str(run_dir)]
    assert "makes 10 classes but the classifier has 2" in _one_line(capsys, train_cli.main, argv)
    assert not run_dir.exists()


def test_experiments_check_their_data_before_starting_a_run(capsys, tmp_path):
    runs = tmp_path / "runs"
    assert "/nonexistent" in _one_line(capsys, bench_cli.main, ["xie", "--data", "/nonexistent", "--runs", str(runs)])
    assert "/nonexistent" in _one_line(capsys, cis680_cli.main, ["vanishing", "--dataset", "cifar10", "--data",
                                                                 "/nonexistent", "--runs", str(runs)])
    assert not runs.exists()


def test_image_size_is_bounded_by_memory():
    assert run_config.check_image_size("image_size", 64) == 64
    with pytest.raises(ValueError, match="GiB"):
        run_config.check_image_size("image_size", 10**6, dataset="digits")
