"""Callbacks that keep a run folder complete and honest across crashes and resumes."""
from __future__ import annotations

import time

import keras



class EpochTimer(keras.callbacks.Callback):
    """Adds ``epoch_seconds`` to the epoch logs, so it lands in history.csv."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["epoch_seconds"] = time.perf_counter() - self._start


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


class ParsevalDeviation(keras.callbacks.Callback):
    """Starts a Parseval network at tight frames and logs how far it stays from them.

    Before the first update of a fresh run every constrained kernel is replaced by its nearest tight frame
    (``models.parseval.tight_frame``; a resumed run keeps its restored weights), so the retraction only has
    to hold the frame and the norm layers' moving statistics see one scale all along. At the end of each
    epoch ``parseval_deviation`` (the mean over constrained kernels of ‖WWᵀ − I‖_F / ‖I‖_F) goes into the
    logs, so a user sees the retraction work in history.csv (put it before CSVLogger)."""

    def _kernels(self):
        from models.parseval import ParsevalConstraint

        return [layer.kernel for layer in _layers(self.model)
                if isinstance(getattr(layer, "kernel_constraint", None), ParsevalConstraint)]

    def on_train_begin(self, logs=None):
        from models.parseval import tight_frame

        # A resumed run's optimizer has counted its updates (BackupAndRestore restores it and the weights).
        if int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)) == 0:
            for kernel in self._kernels():
                kernel.assign(tight_frame(kernel))

    def on_epoch_end(self, epoch, logs=None):
        from models.parseval import parseval_deviation

        kernels = self._kernels()
        if logs is not None and kernels:
            logs["parseval_deviation"] = sum(parseval_deviation(kernel) for kernel in kernels) / len(kernels)


def _layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _layers(layer)
