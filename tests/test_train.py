"""train.py and the trainer: run folders, resume, seeds, CLI errors, distribution."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import keras
import pytest

import train as train_cli
from analysis import results_table
from experiments.bench import weights_digest
from training import trainer
from common.run_folder import read_history
from training.callbacks import ResumableEarlyStopping, ResumableReduceLROnPlateau
from training.recipes import get_recipe, override
from tests.helpers import ERROR, CrashAfter

FAST = dict(dataset="digits", classes=4, per_class=40, verbose=0)


def fast_config(epochs=2, **changes):
    config = trainer.default_config("cis680_allconv", **{**FAST, **changes})
    config.recipe = override(config.recipe, epochs=epochs, batch_size=32, learning_rate=3e-3)
    return config


@pytest.mark.slow
def test_short_run_lowers_loss_and_writes_a_complete_run_folder(tmp_path):
    run_dir = trainer.train(fast_config(epochs=3), tmp_path / "run")
    for name in ("config.json", "model.keras", "history.csv", "metrics.json", "curves.png"):
        assert (run_dir / name).is_file(), name
    assert not (run_dir / "backup").exists()
    history = read_history(run_dir / "history.csv")
    assert [row["epoch"] for row in history] == [0, 1, 2]
    assert history[-1]["loss"] < history[0]["loss"]
    assert all(row["epoch_cpu_seconds"] > 0 and row["epoch_seconds"] > 0 for row in history)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0.0 <= metrics["val_top1"] <= metrics["val_top3"] <= metrics["val_top5"] <= 1.0
    assert metrics["epochs"] == 3 and metrics["parameters"] > 0 and metrics["seconds_per_epoch"] > 0
    config = json.loads((run_dir / "config.json").read_text())
    assert trainer.TrainConfig.from_dict(config).recipe == fast_config(epochs=3).recipe


@pytest.mark.slow
def test_kill_and_resume_continues_at_the_right_epoch(tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated crash"):
        trainer.train(fast_config(epochs=4), run_dir, extra_callbacks=(CrashAfter(2),))
    assert [row["epoch"] for row in read_history(run_dir / "history.csv")] == [0, 1]
    assert not (run_dir / "metrics.json").exists()

    started, handed_over = [], []

    class Recorder(keras.callbacks.Callback):
        def resume_from(self, finished_epochs):  # the trainer hands every such callback the history
            handed_over.extend(row["epoch"] for row in finished_epochs)

        def on_epoch_begin(self, epoch, logs=None):
            started.append(epoch)

    trainer.train(fast_config(epochs=4), run_dir, resume=True, extra_callbacks=(Recorder(),))
    assert started == [2, 3]
    assert handed_over == [0, 1]
    assert [row["epoch"] for row in read_history(run_dir / "history.csv")] == [0, 1, 2, 3]
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 4


@pytest.mark.slow
def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path):
    # the resumed epochs train on the batches (order, augmentation draws) the uninterrupted run trained on
    def config():
        config = fast_config(epochs=4, seed=5)
        config.recipe = override(config.recipe, augment="flip_shift")
        return config

    straight = trainer.train(config(), tmp_path / "straight")
    with pytest.raises(RuntimeError, match="simulated crash"):
        trainer.train(config(), tmp_path / "resumed", extra_callbacks=(CrashAfter(2),))
    resumed = trainer.train(config(), tmp_path / "resumed", resume=True)
    losses = [[row["loss"] for row in read_history(run / "history.csv")] for run in (straight, resumed)]
    assert losses[0] == losses[1]
    assert weights_digest(straight) == weights_digest(resumed)


@pytest.mark.slow
def test_same_seed_gives_the_same_first_epoch(tmp_path):
    first = trainer.train(fast_config(epochs=1, seed=3), tmp_path / "a")
    second = trainer.train(fast_config(epochs=1, seed=3), tmp_path / "b")
    row_a, row_b = read_history(first / "history.csv")[0], read_history(second / "history.csv")[0]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert row_a[key] == pytest.approx(row_b[key], rel=1e-5), key


@pytest.mark.slow
def test_results_table_records_runs_next_to_the_seed(tmp_path):
    run_dir = trainer.train(fast_config(epochs=1), tmp_path / "cis-run")
    results = tmp_path / "results"
    (results / "gan").mkdir(parents=True)
    (results / "gan" / "README.md").write_text("# GAN\n")
    (results / "imt").mkdir()
    (results / "imt" / "table.md").write_text("# IMT\n")
    (results / "claims.md").write_text("# The claims\n\n- **confirmed** — a claim\n")
    assert results_table.main([str(run_dir), "--results", str(results)]) == 0
    page = (results / "README.md").read_text()
    assert "| cis-run | cis680_allconv | digits, 4 classes, 40/class | 1 |" in page
    assert "- gan/: [README](gan/README.md)" in page and "- imt/: [table](imt/table.md)" in page
    assert "judged on the bench\n\n- **confirmed** — a claim\n" in page and "# The claims" not in page
    assert (results / "runs" / "cis-run.json").is_file()


def test_recipes_follow_the_seed_reports():
    assert get_recipe("alphanet_v1").epochs == 300
    v2, v4 = get_recipe("alphanet_v2"), get_recipe("alphanet_v4")
    assert (v2.early_stopping_patience, v2.reduce_lr_factor, v2.reduce_lr_patience) == (15, 0.1, 10)
    assert (v4.early_stopping_patience, v4.reduce_lr_factor, v4.reduce_lr_patience) == (10, 0.316, 5)
    assert get_recipe("alphanet_v3").image_size == 72 and get_recipe("bravonet_v1").image_size == 72
    assert get_recipe("bravonet_v2").reduce_lr_factor == 0.316
    assert (v4.optimizer, v4.learning_rate) == ("adam", 1e-3)
    with pytest.raises(ValueError, match="bogus"):
        override(v4, bogus=1)


@pytest.mark.parametrize("argv, needle", [
    (["no_such_model"], "Unknown model 'no_such_model'. Known models: "),
    (["cis680_allconv", "--data", "/nonexistent/tiny"], "/nonexistent/tiny"),
    (["cis680_allconv", "--dataset", "digits", "--augment", "Z"], "'Z'"),
    (["cis680_allconv", "--dataset", "digits", "--hparams", "/nonexistent.json"], "/nonexistent.json"),
    (["--resume", "/nonexistent/run"], "/nonexistent/run"),
    (["cis680_allconv", "--dataset", "digits", "--weights", "none"], "cis680_allconv takes no option weights"),
])
def test_cli_errors_are_one_line_with_exit_status_2(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert train_cli.run_cli(train_cli.main, argv) == 2
    error = capsys.readouterr().err.strip()
    assert needle in error and "\n" not in error and error.startswith(ERROR)
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus(tmp_path):
    # A fresh process: logical CPU devices must be configured before TensorFlow starts.
    command = [sys.executable, "train.py", "cis680_allconv", "--dataset", "digits", "--classes", "4",
               "--per-class", "40", "--epochs", "1", "--batch-size", "32", "--strategy", "mirrored",
               "--quiet", "--run-dir", str(tmp_path / "run")]
    result = subprocess.run(command, cwd=train_cli.__file__.rsplit("/", 1)[0], capture_output=True, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "MirroredStrategy: 2 replicas in sync" in result.stdout
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs"] == 1


def test_plateau_callbacks_count_patience_across_a_resume():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    finished = [{"epoch": 0, "val_accuracy": 0.5}, {"epoch": 1, "val_accuracy": 0.4},
                {"epoch": 2, "val_accuracy": 0.45}]
    stopping = ResumableEarlyStopping("val_accuracy", mode="max", patience=3)
    plateau = ResumableReduceLROnPlateau("val_accuracy", mode="max", factor=0.5, patience=2)
    for callback in (stopping, plateau):
        callback.resume_from(finished)
        callback.set_model(model)
        callback.on_train_begin()
    assert (stopping.best, stopping.wait) == (0.5, 2)
    # The replay reached plateau's patience but leaves the rate to the backup's restore.
    assert (plateau.best, plateau.wait) == (0.5, 0)
    assert float(model.optimizer.learning_rate) == pytest.approx(0.1)

    stopping.on_epoch_end(3, {"val_accuracy": 0.45})
    assert model.stop_training  # a fresh EarlyStopping would wait three more epochs
