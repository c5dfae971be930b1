"""Fit a model into a run folder: the one sequence plain, phased, ensemble and GAN training share.

    fit_into_run(model, run_dir, train_data, epochs=E, validation_data=val,
                 checkpoints=[Checkpoint(base, "model.keras")], finish=lambda rows: {...})

The folder afterwards: history.csv (one row per epoch, ``epoch_seconds`` and ``epoch_cpu_seconds``
included), each checkpoint file, fit.json (written the moment ``fit`` returns), metrics.json
(``finish(rows)``) and the history plot. While a fit is unfinished, ``backup/`` holds BackupAndRestore's
state.

What a crash can cost, at any moment: at most the epoch it interrupted (docs/reliability.md).
- during an epoch: ``resume=True`` trims history.csv to the epochs the newest whole backup holds (an
  empty or header-only file a kill left is removed) and training continues from it;
- while the backup is written: the backup is committed by an atomic rename (AtomicBackupAndRestore), so a
  resume finds the previous epoch's, whole;
- after the last epoch, before or while the backup is deleted, or while metrics or the plot are
  written: fit.json says the fit finished (it is written before the backup goes), so a resume only
  writes what is missing; if the kill came before fit.json, the backup holds every epoch and the
  resumed fit trains none;
- mid-write: every file is written under a temporary name and renamed; the temporaries a kill left
  are removed on the next start.
The folder's writer lock is held throughout (``hold_run_folder``).
"""
from __future__ import annotations

import csv
import dataclasses
import math
import os
import pathlib
import shutil
from typing import Callable

import keras

from common.plots import plot_history
from common.run_folder import (atomic_path, hold_run_folder, read_history, read_json, remove_leftovers,
                               trim_history, write_json)
from training.callbacks import AtomicBackupAndRestore, EpochTimer, StopOnNonFiniteLoss

FIT_MARKER = "fit.json"


@dataclasses.dataclass
class Checkpoint:
    """Save ``model`` as ``filename`` in the run folder when ``monitor`` improves (None: after every epoch)."""

    model: keras.Model
    filename: str = "model.keras"
    monitor: str | None = "val_accuracy"
    mode: str = "max"
    export: Callable[[keras.Model], keras.Model] | None = None  # what is saved instead of ``model`` itself

    def __post_init__(self):
        if self.mode not in ("max", "min"):
            raise ValueError(f"`mode` is 'max' or 'min'. Received: mode={self.mode!r}")


class _CheckpointCallback(keras.callbacks.Callback):
    """Writes a checkpoint atomically; on resume it starts from the best value the history logged."""

    def __init__(self, checkpoint: Checkpoint, path: pathlib.Path):
        super().__init__()
        self.checkpoint, self.path = checkpoint, path
        self.best = -math.inf if checkpoint.mode == "max" else math.inf

    def resume_from(self, finished_epochs) -> None:
        values = [row[self.checkpoint.monitor] for row in finished_epochs if self.checkpoint.monitor in row]
        if values and self.path.exists():
            self.best = max(values) if self.checkpoint.mode == "max" else min(values)

    def on_epoch_end(self, epoch, logs=None):
        monitor = self.checkpoint.monitor
        if monitor is not None:
            value = (logs or {}).get(monitor)
            better = value is not None and (value > self.best if self.checkpoint.mode == "max" else value < self.best)
            if not better:
                return
            self.best = float(value)
        export = self.checkpoint.export
        with atomic_path(self.path) as temporary:
            (export(self.checkpoint.model) if export else self.checkpoint.model).save(temporary)


class _HistoryLogger(keras.callbacks.CSVLogger):
    """CSVLogger whose columns are the logged ones, and whose appended rows keep the columns of the file
    they extend: for a fit without validation (a GAN's) Keras adds val_ columns of "NA", which
    trim_history drops, so a resumed run's rows were longer than its header."""

    def __init__(self, path: pathlib.Path, append: bool):
        super().__init__(str(path), append=append)
        self.columns = None
        if append:
            with path.open(newline="") as handle:
                self.columns = next(csv.reader(handle))[1:]

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self.columns:
            self.keys = list(self.columns)

    def on_epoch_end(self, epoch, logs=None):
        if self.keys is None:
            self.keys = sorted(logs or {})
        super().on_epoch_end(epoch, logs)


def fit_finished(run_dir: str | os.PathLike, history_name: str = "history.csv") -> bool:
    marker = pathlib.Path(run_dir) / FIT_MARKER
    return marker.exists() and read_json(marker).get(history_name, False)


def _mark_finished(run_dir: pathlib.Path, history_name: str) -> None:
    marker = run_dir / FIT_MARKER
    payload = read_json(marker) if marker.exists() else {}
    write_json(marker, {**payload, history_name: True})


def fit_into_run(model: keras.Model, run_dir, train_data, *, epochs: int, steps_per_epoch: int | None = None,
                 validation_data=None, checkpoints=(), callbacks=(), resume: bool = False, verbose="auto",
                 finish: Callable[[list[dict]], dict] | None = None, plot_title: str = "",
                 plot_metrics=("loss", "accuracy"), history_name: str = "history.csv",
                 backup_name: str = "backup", metrics_name: str | None = "metrics.json",
                 plot_name: str | None = "curves.png") -> list[dict]:
    """Fit compiled ``model`` into ``run_dir`` (which exists) and return the history rows.

    ``train_data`` is a dataset, or a function of ``start_batch`` that gives the stream from that batch on
    (``run_setup.make_datasets``'): a resumed fit then trains on the batches an uninterrupted one would,
    which needs ``steps_per_epoch``. ``callbacks`` with a ``resume_from(rows)`` method get the finished epochs' rows of a resumed run
    (patience, best values). ``finish(rows)`` returns the dict written to ``metrics_name`` (default:
    the last row). Several fits can share a folder under different history/backup names (phases).
    """
    run_dir = pathlib.Path(run_dir)
    with hold_run_folder(run_dir):
        return _fit_into_run(model, run_dir, train_data, epochs=epochs, steps_per_epoch=steps_per_epoch,
                             validation_data=validation_data, checkpoints=checkpoints, callbacks=callbacks,
                             resume=resume, verbose=verbose, finish=finish, plot_title=plot_title,
                             plot_metrics=plot_metrics, history_name=history_name, backup_name=backup_name,
                             metrics_name=metrics_name, plot_name=plot_name)


def _fit_into_run(model, run_dir: pathlib.Path, train_data, *, epochs, steps_per_epoch, validation_data, checkpoints,
                  callbacks, resume, verbose, finish, plot_title, plot_metrics, history_name, backup_name,
                  metrics_name, plot_name) -> list[dict]:
    history_path, backup_dir = run_dir / history_name, run_dir / backup_name
    remove_leftovers(run_dir)
    if resume and fit_finished(run_dir, history_name):
        if backup_dir.is_dir():  # a kill while Keras deleted it; the fit is finished, so it is spent
            shutil.rmtree(backup_dir)
        rows = read_history(history_path)
    else:
        backup = AtomicBackupAndRestore(backup_dir, on_finished=lambda: _mark_finished(run_dir, history_name),
                                        log=lambda line: print(line, flush=True))
        # The backup is chosen (and verified) before the history is touched, so the history is trimmed
        # to exactly the epochs training continues from.
        epochs_done = backup.restorable() if resume else 0
        previous = trim_history(history_path, epochs_done) if resume else []
        if callable(train_data):  # the stream from where the backup's epochs left it
            if steps_per_epoch is None:
                raise ValueError("a train stream needs steps_per_epoch (where each epoch ends in it)")
            train_data = train_data(start_batch=epochs_done * steps_per_epoch)
        checkpoint_callbacks = [_CheckpointCallback(checkpoint, run_dir / checkpoint.filename)
                                for checkpoint in checkpoints]
        every = [StopOnNonFiniteLoss(), EpochTimer(), *callbacks, *checkpoint_callbacks,
                 _HistoryLogger(history_path, append=bool(previous))]
        for callback in every:
            if hasattr(callback, "resume_from"):  # state that lives in the finished epochs' history
                callback.resume_from(previous)
        # Last, so an epoch counts as done only once its history row and checkpoints are written.
        every.append(backup)
        model.fit(train_data, epochs=epochs, steps_per_epoch=steps_per_epoch, validation_data=validation_data,
                  callbacks=every, verbose=verbose, shuffle=False)  # the dataset shuffles itself
        _mark_finished(run_dir, history_name)  # already written unless fit() ended without on_train_end
        rows = read_history(history_path)
    if plot_name and rows:
        plot_history(history_path, run_dir / plot_name, title=plot_title, metrics=tuple(plot_metrics))
    if metrics_name:  # last: a run folder with metrics.json is a finished run
        write_json(run_dir / metrics_name, finish(rows) if finish else (rows[-1] if rows else {}))
    return rows
