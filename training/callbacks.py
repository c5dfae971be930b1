"""Callbacks that keep a run folder complete and honest across crashes and resumes."""
from __future__ import annotations

import math
import os
import pathlib
import time

import keras

from common.run_folder import TEMPORARY_MARK, read_json, write_json


class EpochTimer(keras.callbacks.Callback):
    """Adds ``epoch_seconds`` (wall) and ``epoch_cpu_seconds`` (this process, all threads) to the epoch logs,
    so they land in history.csv: a run resumed across processes still knows what each epoch cost."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._cpu_start = time.perf_counter(), time.process_time()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["epoch_seconds"] = time.perf_counter() - self._start
            logs["epoch_cpu_seconds"] = time.process_time() - self._cpu_start


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops a diverged run with a clear error at the end of the epoch whose loss is NaN or infinite.

    Put first: the diverged epoch is then neither logged nor backed up, so the run folder keeps its last
    finite epoch. (Checked once an epoch, unlike TerminateOnNaN's per-batch check, so it costs no sync.)"""

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise ValueError(f"the training loss is {float(loss)} after epoch {epoch + 1}: training diverged; "
                             "start a new run with a lower learning rate or loss weight (--smoothness, "
                             "--logit-pairing)")


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


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """BackupAndRestore whose backup a resume reads is always whole, whenever a kill lands.

    Keras writes ``latest.weights.h5`` in place, so a kill mid-write leaves a truncated file no resume
    can open. Here each epoch's weights go to a file of their own (``epoch-N.weights.h5``, written under
    a temporary name, flushed to disk and renamed), then ``training_metadata.json``, replaced atomically,
    names it: that rename is the commit. The previous epoch's file is kept, so a backup damaged later
    still has a fallback. ``restorable()`` picks and verifies the state before ``fit`` starts (so the
    history can be trimmed to it); ``on_train_begin`` loads it. ``on_finished`` runs before the backup is
    deleted at the end of training, so there is no instant at which neither says where the run stands.
    Each weights file also holds the model's random-draw states (``SEED_STATES``), so a resumed run's
    dropout masks go on where they were instead of repeating the first epochs'.
    """

    METADATA = "training_metadata.json"

    def __init__(self, backup_dir, *, on_finished=None, log=print):
        super().__init__(str(backup_dir))
        self.folder = pathlib.Path(backup_dir)
        self.on_finished, self.log = on_finished, log
        self._chosen = None  # (epoch, weights path) to load in on_train_begin

    def _committed(self) -> list[tuple[int, pathlib.Path]]:
        """(epochs, weights file) of each backed-up state, newest first; Keras' own in-place layout too."""
        states = []
        for metadata, legacy in ((self.METADATA, "latest.weights.h5"), (self.METADATA + ".bkp", "latest.weights.h5.bkp")):
            try:
                payload = read_json(self.folder / metadata)
            except (FileNotFoundError, ValueError):
                continue
            for state in (payload, payload.get("previous") or {}):
                epoch, name = state.get("epoch"), state.get("weights", legacy if state is payload else None)
                if isinstance(epoch, int) and epoch > 0 and isinstance(name, str) and "/" not in name:
                    states.append((epoch, self.folder / name))
        return sorted(set(states), key=lambda state: -state[0])

    def restorable(self) -> int:
        """Epochs of the newest backup that is whole (0: none); a damaged one is named in one line."""
        self._chosen = None
        for epoch, path in self._committed():
            problem = _unreadable(path)
            if problem is None:
                self._chosen = (epoch, path)
                return epoch
            self.log(f"note: the backup of epoch {epoch} ({path}) is damaged ({problem}); trying an older one")
        if self._committed():
            self.log(f"note: no whole backup in {self.folder}: training starts again from the first epoch")
        return 0

    def on_train_begin(self, logs=None):
        if self._chosen is None:
            return
        epoch, path = self._chosen
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(str(path))
        _load_seed_states(self.model, path)
        self.model._initial_epoch = epoch  # what Keras' own callback sets: fit() starts from this epoch

    def _save_model(self):
        self.folder.mkdir(parents=True, exist_ok=True)
        epoch = self._current_epoch
        name = f"epoch-{epoch}.weights.h5"
        # Keras only writes names ending in .weights.h5; the mark lets remove_leftovers find a killed write.
        temporary = self.folder / f".{name}{TEMPORARY_MARK}{os.getpid()}.weights.h5"
        self.model.save_weights(str(temporary), overwrite=True)
        _save_seed_states(self.model, temporary)
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())  # whole on disk before anything names it
        os.replace(temporary, self.folder / name)
        committed = self._committed()
        previous = {"epoch": committed[0][0], "weights": committed[0][1].name} if committed else None
        write_json(self.folder / self.METADATA, {"epoch": epoch, "batch": 0, "weights": name, "previous": previous})
        keep = {name, previous and previous["weights"], self.METADATA}
        for path in self.folder.iterdir():
            if path.name not in keep and not path.name.startswith("."):
                path.unlink()

    def on_train_end(self, logs=None):
        if self.on_finished is not None:
            self.on_finished()
        super().on_train_end(logs)


SEED_STATES = "seed_generator_states"  # a group of the backup's weights file that Keras' loading passes over


def _seed_states(model: keras.Model) -> list:
    """The state of every keras.random.SeedGenerator in the model (Dropout's, an in-model augmentation's)
    and in its kernel constraints (the sampled Parseval retraction's ``seed_generator``), in the model's
    order: variables, but not weights, so ``save_weights`` leaves them out."""
    constraints = (getattr(layer, "kernel_constraint", None) for layer in _layers(model))
    drawing = [constraint.seed_generator.state for constraint in constraints
               if isinstance(getattr(constraint, "seed_generator", None), keras.random.SeedGenerator)]
    return [variable for variable in model.variables if variable.name == "seed_generator_state"] + drawing


def _save_seed_states(model: keras.Model, path: pathlib.Path) -> None:
    import h5py

    with h5py.File(path, "a") as handle:
        group = handle.create_group(SEED_STATES)
        for index, variable in enumerate(_seed_states(model)):
            group[str(index)] = keras.ops.convert_to_numpy(variable)


def _load_seed_states(model: keras.Model, path: pathlib.Path) -> None:
    import h5py

    states = _seed_states(model)
    with h5py.File(path, "r") as handle:
        group = handle.get(SEED_STATES)
        if group is None or len(group) != len(states):  # a backup written before they were kept
            return
        for index, variable in enumerate(states):
            variable.assign(group[str(index)][()])


def _unreadable(path: pathlib.Path) -> str | None:
    """Why the weights file at ``path`` cannot be read back (None: every array in it reads)."""
    import h5py

    if not path.is_file():
        return "missing"
    def read(name, item):
        if isinstance(item, h5py.Dataset):
            item[()]  # noqa: B018 (reading every array is the check; visititems stops at a non-None return)

    try:
        with h5py.File(path, "r") as handle:
            handle.visititems(read)
    except (OSError, KeyError, RuntimeError, ValueError, TypeError) as error:
        return (str(error).splitlines() or [type(error).__name__])[0][:200]
    return None
