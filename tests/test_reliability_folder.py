"""A run folder survives a kill at any instant, has one writer at a time and is never written through a link.

The slow tests run real train.py processes: one kills itself while the backup file is open, one
races a second process against the first on the same folder."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import keras
import pytest

import ensemble as ensemble_cli
import explain as explain_cli
import train as train_cli
from common import cli
from common.run_folder import FolderInUse, hold_run_folder, read_history
from tests.helpers import ENV, REPO, TRAIN, backed_up, kill_when, resume, resume_and_check, start_train
from training import callbacks as run_callbacks, trainer
from training.recipes import override

# Run inside train.py: SIGKILL the process while the second backup file is open for writing, before it is
# closed (h5py flushes and finishes the file on close): Keras' own callback left a truncated
# backup/latest.weights.h5 at this moment, which no resume could open.
KILL_IN_SECOND_BACKUP = """
import os, signal, h5py
_close, _seen = h5py.File.close, []
def _close_or_die(self):
    name = self.filename if self.id.valid else ""
    if os.sep + "backup" + os.sep in name and self.mode == "r+" and name not in _seen:
        _seen.append(name)  # each backup file is opened for writing twice: weights, then the seed states
        if len(_seen) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
    _close(self)
h5py.File.close = _close_or_die
"""


# Run inside train.py: hold the run (and its lock) at the start of training until the test says go.
WAIT_FOR_GO = """
import pathlib, time, keras
_begin = keras.callbacks.CSVLogger.on_train_begin
def _wait(self, logs=None):
    while not (pathlib.Path(self.filename).parent / "go").exists():
        time.sleep(0.05)
    _begin(self, logs)
keras.callbacks.CSVLogger.on_train_begin = _wait
"""


@pytest.mark.slow
def test_a_kill_while_the_backup_is_written_resumes_from_the_last_whole_backup(tmp_path):
    run_dir = tmp_path / "run"
    process = start_train(run_dir, *TRAIN, prelude=KILL_IN_SECOND_BACKUP)
    assert process.wait(timeout=600) == -9, process.stderr.read()[-2000:]
    assert backed_up(run_dir) == 1  # the second backup was never committed; the first is whole
    assert [path.name for path in (run_dir / "backup").glob(".*.tmp-*")]  # the half-written one
    result = resume_and_check(run_dir)
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_second_process_on_a_run_folder_is_refused_naming_the_first(tmp_path):
    run_dir = tmp_path / "run"
    first = start_train(run_dir, *TRAIN, prelude=WAIT_FOR_GO)
    lock = run_dir / ".lock"
    while not (lock.exists() and lock.read_text().strip()):
        assert first.poll() is None, first.stderr.read()[-2000:]
        time.sleep(0.01)
    # While the first runs: the same command with another seed, then a resume of the folder.
    second = subprocess.run([sys.executable, "train.py", *TRAIN, "--seed", "5", "--run-dir", str(run_dir)],
                            cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    errors = [line for line in second.stderr.splitlines() if "error: " in line]
    assert second.returncode == 2 and len(errors) == 1, second.stderr
    # Which refusal depends on how far the first got: its lock, or the config.json it wrote under it.
    assert f"process {first.pid}" in errors[0] or "already holds a run" in errors[0], errors
    also = resume(run_dir)
    errors = [line for line in also.stderr.splitlines() if "error: " in line]
    assert also.returncode == 2 and len(errors) == 1 and f"in use by process {first.pid}" in errors[0], also.stderr
    (run_dir / "go").touch()
    kill_when(first, lambda: backed_up(run_dir) >= 1)  # the OS releases the lock of a killed process
    assert json.loads((run_dir / "config.json").read_text())["seed"] == 0
    resume_and_check(run_dir)


def test_the_lock_refuses_another_process_and_is_reentrant(tmp_path):
    probe = ("import sys; from common.run_folder import hold_run_folder\n"
             "with hold_run_folder(sys.argv[1]): print('held')")
    def other_process():
        return subprocess.run([sys.executable, "-c", probe, str(tmp_path)], cwd=REPO, capture_output=True, text=True)

    with hold_run_folder(tmp_path):
        with hold_run_folder(tmp_path):  # the CLI and fit_into_run both hold it
            refused = other_process()
        assert refused.returncode != 0 and f"FolderInUse: {tmp_path} is in use by process {os.getpid()}" \
            in refused.stderr
    assert other_process().stdout.strip() == "held"


def test_a_refused_new_run_leaves_no_folder_behind(tmp_path):
    with pytest.raises(ValueError, match="bad"):
        with hold_run_folder(tmp_path / "runs" / "x", create=True):
            raise ValueError("bad")
    assert not (tmp_path / "runs").exists()
    assert issubclass(FolderInUse, ValueError)  # so every CLI reports it in one line


def _one_line(capsys, main, argv) -> str:
    assert cli.run_cli(main, argv) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "Traceback" not in error, error
    return error


def test_links_inside_a_run_folder_are_refused_before_anything_is_written(capsys, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("mine")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "backup").symlink_to(elsewhere, target_is_directory=True)
    argv = ["cis680_allconv", "--dataset", "digits", "--epochs", "1", "--run-dir", str(run_dir)]
    assert "backup is a symbolic link" in _one_line(capsys, train_cli.main, argv)
    (run_dir / "backup").unlink()
    (run_dir / "history.csv").symlink_to(elsewhere / "keep.txt")
    (run_dir / "config.json").write_text("{}")
    assert "history.csv is a symbolic link" in _one_line(capsys, train_cli.main, ["--resume", str(run_dir)])
    planted = tmp_path / "planted"
    planted.mkdir()
    (planted / "history.csv").symlink_to(elsewhere / "keep.txt")
    assert "history.csv is a symbolic link" in _one_line(capsys, ensemble_cli.main, [
        "alphastack", str(_member(tmp_path)), "--epochs", "1", "--run-dir", str(planted)])
    assert sorted(path.name for path in elsewhere.iterdir()) == ["keep.txt"]
    assert (elsewhere / "keep.txt").read_text() == "mine"


def test_a_linked_explain_folder_is_refused(capsys, tmp_path):
    run_dir = _member(tmp_path)
    (run_dir / "explain").symlink_to(tmp_path, target_is_directory=True)
    assert "explain is a symbolic link" in _one_line(capsys, explain_cli.main, ["saliency", str(run_dir)])


def _member(tmp_path):
    run_dir = tmp_path / "member"
    if not run_dir.exists():
        run_dir.mkdir()
        inputs = keras.Input((8, 8, 3), name="image")
        hidden = keras.layers.GlobalAveragePooling2D(name="pool")(inputs)
        keras.Model(inputs, keras.layers.Dense(4, name="logits")(hidden)).save(run_dir / "model.keras")
        (run_dir / "config.json").write_text(json.dumps({**_config().to_dict(), "num_classes": 4}))
    return run_dir


def _config(epochs=3):
    config = trainer.default_config("cis680_allconv", dataset="digits", classes=4, per_class=40, verbose=0)
    config.recipe = override(config.recipe, epochs=epochs, batch_size=32, learning_rate=3e-3)
    return config


class _StopAtEpoch(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("crash")


@pytest.mark.slow
def test_a_damaged_backup_falls_back_to_the_previous_epoch_in_one_line(tmp_path, capsys):
    run_dir = tmp_path / "run"
    with pytest.raises(RuntimeError, match="crash"):
        trainer.train(_config(), run_dir, extra_callbacks=(_StopAtEpoch(2),))
    metadata = json.loads((run_dir / "backup" / "training_metadata.json").read_text())
    assert metadata["epoch"] == 2 and metadata["previous"]["epoch"] == 1
    newest = run_dir / "backup" / metadata["weights"]
    newest.write_bytes(newest.read_bytes()[:96])  # what disk damage (or a kill in Keras' own writer) leaves
    capsys.readouterr()
    trainer.train(_config(), run_dir, resume=True)
    notes = [line for line in capsys.readouterr().out.splitlines() if "damaged" in line]
    assert len(notes) == 1 and "epoch 2" in notes[0]
    assert [row["epoch"] for row in read_history(run_dir / "history.csv")] == [0, 1, 2]


def test_keras_own_backup_layout_is_still_read_and_its_damage_skipped(tmp_path):
    backup = tmp_path / "backup"
    backup.mkdir()
    inputs = keras.Input((3,))
    keras.Model(inputs, keras.layers.Dense(2)(inputs)).save_weights(backup / "whole.weights.h5")
    (backup / "whole.weights.h5").rename(backup / "latest.weights.h5.bkp")
    (backup / "latest.weights.h5").write_bytes(b"\x89HDF\r\n" + bytes(90))  # a 96-byte truncated file
    (backup / "training_metadata.json").write_text('{"epoch": 2, "batch": 0}')
    (backup / "training_metadata.json.bkp").write_text('{"epoch": 1, "batch": 0}')
    lines = []
    assert run_callbacks.AtomicBackupAndRestore(backup, log=lines.append).restorable() == 1
    assert len(lines) == 1 and "epoch 2" in lines[0] and "damaged" in lines[0]
    (backup / "latest.weights.h5.bkp").write_bytes(b"")
    lines.clear()
    assert run_callbacks.AtomicBackupAndRestore(backup, log=lines.append).restorable() == 0
    assert "starts again from the first epoch" in lines[-1]


@pytest.mark.slow
def test_a_stop_before_fit_json_resumes_without_retraining(tmp_path, monkeypatch):
    """fit() ran every epoch but ended before fit.json: the backup holds them all and nothing is retrained."""
    run_dir = tmp_path / "run"

    def crash(self, logs=None):
        raise RuntimeError("killed before fit.json")

    monkeypatch.setattr(run_callbacks.AtomicBackupAndRestore, "on_train_end", crash)
    with pytest.raises(RuntimeError):
        trainer.train(_config(epochs=2), run_dir)
    monkeypatch.undo()
    assert not (run_dir / "fit.json").exists() and backed_up(run_dir) == 2
    history, model = (run_dir / "history.csv").read_bytes(), (run_dir / "model.keras").read_bytes()
    trainer.train(_config(epochs=2), run_dir, resume=True)
    assert (run_dir / "history.csv").read_bytes() == history and (run_dir / "model.keras").read_bytes() == model
    assert (run_dir / "metrics.json").exists() and not (run_dir / "backup").exists()


@pytest.mark.slow
def test_a_stop_while_the_backup_is_deleted_resumes_without_retraining(tmp_path, monkeypatch):
    from keras.src.utils import file_utils

    run_dir = tmp_path / "run"

    rmtree = file_utils.rmtree

    def half_deleted(path):
        if str(path) != str(run_dir / "backup"):
            return rmtree(path)
        next(p for p in (run_dir / "backup").iterdir() if p.suffix == ".h5").unlink()
        raise RuntimeError("killed while deleting the backup")

    monkeypatch.setattr(file_utils, "rmtree", half_deleted)
    with pytest.raises(RuntimeError):
        trainer.train(_config(epochs=2), run_dir)
    monkeypatch.undo()
    assert (run_dir / "fit.json").exists() and (run_dir / "backup").exists()
    history, model = (run_dir / "history.csv").read_bytes(), (run_dir / "model.keras").read_bytes()
    trainer.train(_config(epochs=2), run_dir, resume=True)
    assert (run_dir / "history.csv").read_bytes() == history and (run_dir / "model.keras").read_bytes() == model
    assert (run_dir / "metrics.json").exists() and not (run_dir / "backup").exists()


@pytest.mark.slow
def test_a_diverged_run_stops_with_a_clear_error_and_keeps_no_nan_epoch(tmp_path):
    config = _config(epochs=2)
    config.recipe = override(config.recipe, learning_rate=1e30)
    with pytest.raises(ValueError, match="training diverged"):
        trainer.train(config, tmp_path / "run")
    assert not read_history(tmp_path / "run" / "history.csv") and backed_up(tmp_path / "run") == 0


def test_a_resumed_fit_goes_on_with_the_random_draws_an_uninterrupted_one_makes(tmp_path):
    # Keras' weights files leave out the SeedGenerator states (Dropout's, the sampled Parseval rows'):
    # restored without them, the resumed epochs would draw the first epochs' masks and rows again
    import numpy as np

    from models.parseval import ParsevalConstraint

    images = np.random.default_rng(0).normal(size=(64, 6)).astype("float32")
    labels = (images[:, 0] > 0).astype("int32")

    class Crash(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise RuntimeError("simulated crash")

    def fit(backup, epochs, *callbacks):
        keras.utils.set_random_seed(3)
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8), keras.layers.Dropout(0.5),
                                  keras.layers.Dense(2, kernel_constraint=ParsevalConstraint(rows=0.5))])
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        callback = run_callbacks.AtomicBackupAndRestore(backup, log=lambda line: None)
        callback.restorable()
        model.fit(images, labels, batch_size=16, epochs=epochs, shuffle=False, verbose=0,
                  callbacks=[*callbacks, callback])
        return model

    straight = fit(tmp_path / "straight", 3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(tmp_path / "resumed", 3, Crash())
    resumed = fit(tmp_path / "resumed", 3)
    for a, b in zip(straight.weights, resumed.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
