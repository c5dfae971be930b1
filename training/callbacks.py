"""Callbacks that keep a run folder complete and honest across crashes and resumes."""
from __future__ import annotations

import csv
import math
import pathlib
import time

import keras

from training.run_dir import atomic_path


class EpochTimer(keras.callbacks.Callback):
    """Adds ``epoch_seconds`` to the epoch logs, so it lands in history.csv."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["epoch_seconds"] = time.perf_counter() - self._start


class BestModelCheckpoint(keras.callbacks.Callback):
    """Saves ``model`` (the plain model, not a training wrapper) whenever ``monitor`` improves.

    Unlike ``keras.callbacks.ModelCheckpoint`` it writes to a temporary file and renames it,
    so a crash mid-save never leaves a broken ``model.keras``, and it starts from the best
    value a resumed run had already reached.
    """

    def __init__(self, model_to_save: keras.Model, path: str | pathlib.Path, monitor: str = "val_accuracy",
                 initial_best: float = -math.inf):
        super().__init__()
        self.model_to_save = model_to_save
        self.path = pathlib.Path(path)
        self.monitor = monitor
        self.best = initial_best

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not value > self.best:
            return
        self.best = float(value)
        with atomic_path(self.path) as temporary:
            self.model_to_save.save(temporary)


class _ReplaysFinishedEpochs:
    """Feeds a resumed run's finished epochs to a plateau callback before training goes on.

    Keras resets EarlyStopping's and ReduceLROnPlateau's counters in ``on_train_begin``, so
    without this a run resumed after a crash would wait a whole patience again. Replaying the
    logged epochs restores ``best`` and ``wait`` only: the learning rate is left as it was,
    because BackupAndRestore brings back the optimizer's own.
    """

    finished_epochs = ()

    def resume_from(self, finished_epochs) -> None:
        """The history rows of the epochs a resumed run had finished."""
        self.finished_epochs = [dict(row) for row in finished_epochs]

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if not self.finished_epochs:
            return
        optimizer = self.model.optimizer
        learning_rate = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
        for row in self.finished_epochs:
            self.on_epoch_end(row["epoch"], dict(row))
        optimizer.learning_rate = learning_rate


class ResumableEarlyStopping(_ReplaysFinishedEpochs, keras.callbacks.EarlyStopping):
    """EarlyStopping whose patience counts across ``--resume``."""


class ResumableReduceLROnPlateau(_ReplaysFinishedEpochs, keras.callbacks.ReduceLROnPlateau):
    """ReduceLROnPlateau whose patience counts across ``--resume``."""


def read_history(path: str | pathlib.Path) -> list[dict]:
    """Rows of a CSVLogger file as dicts of floats (epoch as int); [] if there is none."""
    path = pathlib.Path(path)
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [{key: (int(value) if key == "epoch" else float(value)) for key, value in row.items() if value != ""}
            for row in rows]


def trim_history(path: str | pathlib.Path, epochs_done: int) -> list[dict]:
    """Drop rows of epochs a crash interrupted before their backup was written; return the rest."""
    path = pathlib.Path(path)
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        fields, rows = reader.fieldnames, [row for row in reader if int(row["epoch"]) < epochs_done]
    with atomic_path(path) as temporary, temporary.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return read_history(path)
