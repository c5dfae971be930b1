"""How large the loss gradient is at chosen layers while a model trains (the CIS680 report's
"gradient magnitude in the first and last conv layer").

``GradientMonitor`` is an after-update hook: inside the train step, right after
``optimizer.apply``, it takes the gradients the step already computed and, every ``every``
steps, stores the mean absolute gradient of each chosen kernel (float32, one number per layer)
in non-trainable variables, with no second backward pass. ``GradientLog`` is the callback that
drains those variables and writes the run folder's ``gradients.csv`` (columns ``epoch``,
``step`` — the 0-based global optimizer step — and one per layer) and ``gradients.png`` (log
scale). Default layers: the first and the last convolution of the model (layers whose kernel has
rank 3 or more, in the model's layer order). Default period: 20 records per epoch.

Under a distribution strategy the numbers are the first replica's local gradients; under mixed
precision they are the gradients of the scaled loss, as the step hands them over.
"""
from __future__ import annotations

import math
import numbers
import os
import pathlib
import warnings

import keras
import numpy as np
import tensorflow as tf

from common.run_folder import read_history, write_history
from training.parts import Hook, RunContext, register_part

DEFAULT_RECORDS_PER_EPOCH = 20
CSV_NAME = "gradients.csv"
PNG_NAME = "gradients.png"


def _all_layers(layer) -> list:
    """Every sublayer, depth first in the order each model holds them, so a nested backbone or a
    training wrapper's base is searched in its own layer order (Keras' recursive walk is breadth
    first and reverses nested models)."""
    found = []
    for sublayer in layer._flatten_layers(include_self=False, recursive=False):
        found += [sublayer, *_all_layers(sublayer)]
    return found


def convolution_layers(model: keras.Model) -> list:
    """Layers of ``model`` (nested models included) whose ``kernel`` has rank >= 3, in model order."""
    found = []
    for layer in _all_layers(model):
        kernel = getattr(layer, "kernel", None)
        if kernel is not None and len(kernel.shape) >= 3 and layer not in found:
            found.append(layer)
    return found


def resolve_layers(model: keras.Model, names=()) -> list:
    """The layers named ``names`` (each must have a kernel), or the first and last convolution."""
    if not names:
        convolutions = convolution_layers(model)
        if not convolutions:
            raise ValueError(f"Model {model.name!r} has no convolution to monitor; name layers with kernels instead")
        return [convolutions[0]] if len(convolutions) == 1 else [convolutions[0], convolutions[-1]]
    by_name = {layer.name: layer for layer in _all_layers(model)}
    with_kernel = [layer.name for layer in _all_layers(model) if getattr(layer, "kernel", None) is not None]
    chosen = []
    for name in names:
        layer = by_name.get(name)
        if layer is None or getattr(layer, "kernel", None) is None:
            shown = getattr(model, "base", model).name  # a training wrapper's own name says nothing
            raise ValueError(f"Layer {name!r} is not a layer with a kernel in model {shown!r}. "
                             f"Layers with kernels: {', '.join(with_kernel) or 'none'}")
        chosen.append(layer)
    return chosen


def _variable_index(variables, kernel) -> int:
    for index, variable in enumerate(variables):
        if variable is kernel:
            return index
    for index, variable in enumerate(variables):  # a wrapper may hand over other Python objects
        if getattr(variable, "path", None) == kernel.path:
            return index
    raise ValueError(f"The kernel {kernel.path!r} is not among the trained variables (is its layer frozen?)")


@register_part("hook", "gradient_monitor")
class GradientMonitor(Hook):
    """After-update hook: every ``every`` steps, the mean |gradient| of each chosen layer's kernel.

    layers: layer names (default: the first and the last convolution); every: record at global
    steps 0, every, 2·every, … (default: ``GradientLog`` sets it to give ``records_per_epoch``
    records an epoch); capacity: records held between two drains by the callback.
    """

    name = "gradient_monitor"

    def __init__(self, layers=(), every: int | None = None, records_per_epoch: int = DEFAULT_RECORDS_PER_EPOCH,
                 capacity: int = 256):
        if isinstance(layers, str):
            layers = (layers,)
        self.layer_names = tuple(layers or ())
        if any(not isinstance(name, str) or not name for name in self.layer_names):
            raise ValueError(f"`layers` must be layer names. Received: layers={layers!r}")
        for label, value in (("every", every), ("records_per_epoch", records_per_epoch), ("capacity", capacity)):
            if value is None and label == "every":
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"`{label}` must be a positive integer. Received: {label}={value!r}")
        self.fixed_every = every
        self.records_per_epoch = int(records_per_epoch)
        self.capacity = int(capacity)
        width = len(self.layer_names) or 2
        # Counters and buffers are per-run state, not weights: a resumed run starts them afresh.
        self.every = keras.Variable(every or 1, dtype="int64", trainable=False, name="gradient_every",
                                    aggregation="only_first_replica")
        self.count = keras.Variable(0, dtype="int64", trainable=False, name="gradient_count",
                                    aggregation="only_first_replica")
        self.values = keras.Variable(np.zeros((self.capacity, width), "float32"), trainable=False,
                                     name="gradient_values", aggregation="only_first_replica")
        self.steps = keras.Variable(np.zeros((self.capacity,), "int64"), trainable=False, name="gradient_steps",
                                    aggregation="only_first_replica")
        self.columns: list[str] | None = None
        self._indices: list[int] | None = None

    def check_model(self, model) -> None:
        """Before the run folder is written: every layer named exists and has a kernel."""
        resolve_layers(model, self.layer_names)

    @property
    def variables(self) -> list:
        """The hook's state, which the training wrapper adds to the model's variables."""
        return [self.every, self.count, self.values, self.steps]

    def bind(self, model: keras.Model, variables=None) -> list[str]:
        """Resolve the layers on ``model`` (and their kernels in ``variables``); return the column names."""
        layers = resolve_layers(model, self.layer_names)
        variables = model.trainable_variables if variables is None else variables
        self._indices = [_variable_index(variables, layer.kernel) for layer in layers]
        self.columns = [layer.name for layer in layers]
        return self.columns

    def config(self) -> dict:
        """The part spec that rebuilds this hook."""
        return {"kind": "hook", "name": self.name, "layers": list(self.layer_names), "every": self.fixed_every,
                "records_per_epoch": self.records_per_epoch}

    def callbacks(self, run: RunContext) -> list:
        """The callback that writes this hook's records into the run folder."""
        return [GradientLog(run.run_dir, self)]

    def __call__(self, model, gradients, variables):
        if self._indices is None:
            self.bind(model, variables)
        # optimizer.apply has already counted this step, so the step just taken is iterations - 1.
        step = tf.cast(model.optimizer.iterations, tf.int64) - 1
        width = self.values.shape[1]

        def record():
            magnitudes = [tf.reduce_mean(tf.abs(tf.cast(gradients[index], tf.float32)))
                          if gradients[index] is not None else tf.constant(math.nan)
                          for index in self._indices]
            magnitudes += [tf.constant(math.nan)] * (width - len(magnitudes))
            slot = tf.math.floormod(self.count.value, self.capacity)
            self.values.assign(tf.tensor_scatter_nd_update(self.values.value, [[slot]], [tf.stack(magnitudes)]))
            self.steps.assign(tf.tensor_scatter_nd_update(self.steps.value, [[slot]], [step]))
            self.count.assign_add(1)
            return tf.constant(True)

        tf.cond(tf.equal(tf.math.floormod(step, self.every.value), 0), record, lambda: tf.constant(False))

    def drain(self) -> list[tuple[int, list[float]]]:
        """The records since the last drain as (step, [value per column]); empties the buffer."""
        count = int(keras.ops.convert_to_numpy(self.count.value))
        if count > self.capacity:
            warnings.warn(f"gradient monitor: {count - self.capacity} records were overwritten before being written; "
                          f"raise `capacity` or `every`", stacklevel=2)
        kept = min(count, self.capacity)
        # With wrap-around the oldest surviving record sits at count % capacity.
        order = [(count - kept + offset) % self.capacity for offset in range(kept)]
        values = keras.ops.convert_to_numpy(self.values.value)
        steps = keras.ops.convert_to_numpy(self.steps.value)
        self.count.assign(0)
        width = len(self.columns or ()) or values.shape[1]
        return [(int(steps[slot]), [float(value) for value in values[slot, :width]]) for slot in order]


def read_gradients(path: str | os.PathLike) -> list[dict]:
    """Rows of a gradients.csv as dicts (epoch and step as int, layer columns as float)."""
    return [{key: int(value) if key == "step" else value for key, value in row.items()}
            for row in read_history(path)]


class GradientLog(keras.callbacks.Callback):
    """Writes a ``GradientMonitor``'s records to ``run_dir/gradients.csv`` and ``gradients.png``.

    ``monitor`` None: the model's hook named "gradient_monitor" (a ``TrainingModel`` built from
    part specs), found when training begins.

    The file is rewritten atomically at every epoch end. On resume (``resume_from`` with the
    finished epochs' history rows, as the trainer hands them over) only the rows of those epochs
    are kept, like history.csv; a fresh run starts the file afresh.
    """

    def __init__(self, run_dir, monitor: GradientMonitor | None = None, plot: bool = True):
        super().__init__()
        self.monitor = monitor
        self.path = pathlib.Path(run_dir) / CSV_NAME
        self.png = pathlib.Path(run_dir) / PNG_NAME
        self.plot = plot
        self.kept_epochs: set = set()
        self.rows: list[dict] = []
        self._pending: list = []
        self._batches = 0

    def resume_from(self, finished_epochs) -> None:
        self.kept_epochs = {int(row["epoch"]) for row in finished_epochs}

    def on_train_begin(self, logs=None):
        if self.monitor is None:
            hooks = [hook for hook in getattr(self.model, "hooks", ()) if isinstance(hook, GradientMonitor)]
            if not hooks:
                raise ValueError(f"Model {self.model.name!r} trains without a gradient_monitor hook to log")
            self.monitor = hooks[0]
        monitor = self.monitor
        if monitor.columns is None:
            monitor.bind(self.model)
        if monitor.fixed_every is None:
            steps = (self.params or {}).get("steps")
            monitor.every.assign(max(1, int(steps) // monitor.records_per_epoch) if steps else 1)
        monitor.count.assign(0)
        self._every = int(keras.ops.convert_to_numpy(monitor.every.value))
        self.rows = [row for row in read_gradients(self.path) if row["epoch"] in self.kept_epochs]
        write_history(self.path, self.rows)
        self._pending, self._batches = [], 0

    def on_train_batch_end(self, batch, logs=None):
        self._batches += 1
        # Drain well before the buffer could wrap (one record per `every` batches at most).
        if self._batches >= self._every * (self.monitor.capacity // 2):
            self._pending += self.monitor.drain()
            self._batches = 0

    def on_epoch_end(self, epoch, logs=None):
        self._pending += self.monitor.drain()
        self._batches = 0
        columns = self.monitor.columns
        self.rows += [{"epoch": int(epoch), "step": step, **dict(zip(columns, values))}
                      for step, values in self._pending]
        self._pending = []
        write_history(self.path, self.rows)
        if self.plot and self.rows:
            plot_gradients(self.path, self.png, title=f"mean |gradient| of {', '.join(columns)}")


def plot_gradients(csv_path, png_path, title: str = "") -> pathlib.Path:
    """Each layer column of a gradients.csv against the step, on a log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from common.plots import save_figure

    rows = read_gradients(csv_path)
    if not rows:
        raise ValueError(f"{csv_path} holds no gradient records to plot")
    columns = [key for key in rows[0] if key not in ("epoch", "step")]
    figure, axis = plt.subplots(figsize=(6, 4))
    steps = [row["step"] for row in rows]
    for column in columns:
        # Zero or missing values cannot sit on a log axis; NaN leaves a gap instead of a wrong point.
        values = [row.get(column, math.nan) if row.get(column, 0) > 0 else math.nan for row in rows]
        axis.plot(steps, values, marker="o", markersize=2, label=column)
    axis.set_yscale("log")
    axis.set_xlabel("training step")
    axis.set_ylabel("mean |dL/dW|")
    axis.grid(alpha=0.3, which="both")
    axis.legend()
    if title:
        axis.set_title(title)
    figure.tight_layout()
    return save_figure(figure, png_path)
