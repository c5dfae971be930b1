"""Helpers shared by test modules: a toy problem and a small model for training-core tests, a callback that
crashes a fit, a script's exit status in-process, and a real train.py started, killed at a chosen moment, and
resumed."""
from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from common.run_folder import read_history

# How run_cli's one-line refusal starts in this process (the program's name, as argparse writes it).
ERROR = f"{pathlib.Path(sys.argv[0]).name}: error: "

REPO = pathlib.Path(__file__).resolve().parents[1]
EPOCHS = 3
# Every digits image at batch 8: ~180 steps an epoch, long enough to be killed inside one.
TRAIN = ["cis680_allconv", "--dataset", "digits", "--epochs", str(EPOCHS), "--batch-size", "8",
         "--learning-rate", "3e-3", "--quiet"]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


# Models that take seconds to build on a 2-core CPU: tests parametrised over the registry check them in the
# slow tier.
SLOW_MODELS = {"resnet34", "resnet50", "resnet101", "resnet152", "convengers", "resnet101_transfer",
               "inception_v3_transfer", "vgg19_transfer"}


def slow_marked(names):
    """``names`` as pytest parameters, the SLOW_MODELS among them marked slow."""
    return [pytest.param(name, marks=pytest.mark.slow) if name in SLOW_MODELS else name for name in names]


# The toy problem of the training-core tests: 4x4x3 images, two classes.
SHAPE = (4, 4, 3)


def toy_data(count=64, seed=0):
    """Two classes whose pixels sit around 0.35 and 0.65: float32 (count, 4, 4, 3), separable with margin at
    eps = 0.1; int32 labels."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, count).astype("int32")
    x = rng.uniform(-0.1, 0.1, (count, *SHAPE)) + np.where(y == 1, 0.65, 0.35)[:, None, None, None]
    return x.astype("float32"), y


def small_model(norm_layer=None, activation=None, seed=0):
    """A seeded conv + dense classifier for SHAPE, two logits; ``norm_layer(name=...)`` after the conv if given."""
    inputs = keras.Input(SHAPE, name="images")
    hidden = keras.layers.Conv2D(4, 3, activation=activation, name="conv",
                                 kernel_initializer=keras.initializers.HeNormal(seed=seed))(inputs)
    if norm_layer is not None:
        hidden = norm_layer(name="norm")(hidden)
    hidden = keras.layers.Flatten(name="flatten")(hidden)
    logits = keras.layers.Dense(2, name="logits", kernel_initializer=keras.initializers.GlorotNormal(seed=seed))(hidden)
    return keras.Model(inputs, logits, name="small")


def compiled(model, learning_rate=0.05, optimizer=keras.optimizers.SGD):
    """``model`` compiled for integer labels and logits, with accuracy."""
    model.compile(optimizer=optimizer(learning_rate), metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


class CrashAfter(keras.callbacks.Callback):
    """Simulates a crash: raises ``error`` at the end of epoch ``epoch`` (0-based), before it is recorded, or at
    the beginning of that epoch with ``at="begin"``."""

    def __init__(self, epoch, error=RuntimeError("simulated crash"), at="end"):
        super().__init__()
        self.epoch, self.error, self.at = epoch, error, at

    def on_epoch_begin(self, epoch, logs=None):
        if self.at == "begin" and epoch == self.epoch:
            raise self.error

    def on_epoch_end(self, epoch, logs=None):
        if self.at == "end" and epoch == self.epoch:
            raise self.error


def cli_status(script, argv: list) -> int:
    """The exit status of ``script.main(argv)`` run as its command line runs it, argparse's refusals included."""
    try:
        return script.run_cli(script.main, argv)
    except SystemExit as exit_:
        return exit_.code


def start_train(run_dir: pathlib.Path, *argv, prelude: str = "") -> subprocess.Popen:
    """train.py with ``argv`` into ``run_dir``; ``prelude`` is Python run first in the same process (a hook)."""
    command = [sys.executable, "train.py"] if not prelude else [
        sys.executable, "-c", prelude + "\nimport sys, train\nsys.exit(train.run_cli(train.main))"]
    return subprocess.Popen([*command, *argv, "--run-dir", str(run_dir)], cwd=REPO, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def kill_when(process: subprocess.Popen, ready, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None:
            raise AssertionError(f"train.py ended before the moment to kill it: {process.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("the moment to kill never came")
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()


def backed_up(run_dir: pathlib.Path) -> int:
    metadata = run_dir / "backup" / "training_metadata.json"
    try:
        return json.loads(metadata.read_text())["epoch"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return 0


def resume(run_dir: pathlib.Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "train.py", "--resume", str(run_dir)], cwd=REPO, capture_output=True,
                          text=True, env=ENV, timeout=600)


def resume_and_check(run_dir: pathlib.Path, epochs: int = EPOCHS) -> subprocess.CompletedProcess:
    """``--resume`` ends with each epoch once in history.csv, the best epoch's model and no leftovers."""
    result = resume(run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    history = read_history(run_dir / "history.csv")
    assert [row["epoch"] for row in history] == list(range(epochs))  # each epoch once
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # model.keras is the best epoch's: its val accuracy is the best logged one.
    assert metrics["val_top1"] == pytest.approx(max(row["val_accuracy"] for row in history), abs=1e-6)
    assert (run_dir / "curves.png").is_file() and not (run_dir / "backup").exists()
    assert not [path for path in run_dir.rglob(".*") if ".tmp-" in path.name]
    return result
