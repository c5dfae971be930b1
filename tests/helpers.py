"""Helpers shared by test modules: a script's exit status in-process; a real train.py started, killed at a chosen
moment, and resumed."""
from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from common.run_folder import read_history

REPO = pathlib.Path(__file__).resolve().parents[1]
EPOCHS = 3
# Every digits image at batch 8: ~180 steps an epoch, long enough to be killed inside one.
TRAIN = ["cis680_allconv", "--dataset", "digits", "--epochs", str(EPOCHS), "--batch-size", "8",
         "--learning-rate", "3e-3", "--quiet"]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


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
