"""The gradient monitor: numbers equal a hand-made GradientTape, records survive a resume."""
from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from training import trainer
from training.gradient_monitor import GradientLog, GradientMonitor, read_gradients, resolve_layers
from training.recipes import override
from training.wrapper import TrainingModel
from tests.helpers import CrashAfter


def tiny_model(num_classes=3):
    inputs = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="first")(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="middle")(x)
    x = keras.layers.Conv2D(num_classes, 1, name="last")(x)
    outputs = keras.layers.GlobalAveragePooling2D(name="logits")(x)
    return keras.Model(inputs, outputs, name="tiny")


def data(count=32, seed=0):
    generator = np.random.default_rng(seed)
    return generator.random((count, 8, 8, 3), dtype=np.float32), generator.integers(0, 3, count).astype("int32")


def compiled(monitor):
    model = TrainingModel(tiny_model(), hooks=(monitor,))
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model


def test_default_layers_are_the_first_and_last_convolution():
    assert [layer.name for layer in resolve_layers(tiny_model())] == ["first", "last"]
    assert [layer.name for layer in resolve_layers(tiny_model(), ["middle"])] == ["middle"]
    with pytest.raises(ValueError, match="'logits' is not a layer with a kernel.*first, middle, last"):
        resolve_layers(tiny_model(), ["logits"])


@pytest.mark.parametrize("options", [{"every": 0}, {"records_per_epoch": -1}, {"layers": [3]}])
def test_bad_options_raise_value_error(options):
    with pytest.raises(ValueError):
        GradientMonitor(**options)


def test_one_step_equals_a_gradient_tape_by_hand(tmp_path):
    images, labels = data(16)
    monitor = GradientMonitor(every=1)
    model = compiled(monitor)
    model.build((None, 8, 8, 3))
    loss_function = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape() as tape:  # the same loss on the same (pre-update) weights, computed here
        loss = loss_function(labels, model.base(images, training=True))
    kernels = [model.base.get_layer("first").kernel, model.base.get_layer("last").kernel]
    expected = [float(tf.reduce_mean(tf.abs(gradient))) for gradient in tape.gradient(loss, kernels)]

    model.fit(images, labels, batch_size=16, epochs=1, shuffle=False, verbose=0,
              callbacks=[GradientLog(tmp_path, monitor)])
    rows = read_gradients(tmp_path / "gradients.csv")
    assert len(rows) == 1 and rows[0]["epoch"] == 0 and rows[0]["step"] == 0
    assert rows[0]["first"] == pytest.approx(expected[0], rel=1e-5)
    assert rows[0]["last"] == pytest.approx(expected[1], rel=1e-5)
    assert expected[0] > 0 and (tmp_path / "gradients.png").stat().st_size > 0


@pytest.mark.slow
def test_twenty_records_per_epoch_by_default(tmp_path):
    images, labels = data(80)
    monitor = GradientMonitor()
    model = compiled(monitor)
    model.fit(images, labels, batch_size=2, epochs=2, verbose=0, callbacks=[GradientLog(tmp_path, monitor)])
    rows = read_gradients(tmp_path / "gradients.csv")
    assert [row["step"] for row in rows] == list(range(0, 80, 2))  # 40 steps an epoch: every 2nd step
    assert [row["epoch"] for row in rows] == [0] * 20 + [1] * 20
    assert all(math.isfinite(row["first"]) and row["first"] > 0 for row in rows)


def test_small_capacity_is_drained_within_the_epoch(tmp_path):
    images, labels = data(40)
    monitor = GradientMonitor(every=1, capacity=4)
    model = compiled(monitor)
    model.fit(images, labels, batch_size=2, epochs=1, verbose=0, callbacks=[GradientLog(tmp_path, monitor)])
    assert [row["step"] for row in read_gradients(tmp_path / "gradients.csv")] == list(range(20))


@pytest.mark.slow
def test_records_survive_a_crash_and_resume(tmp_path):
    images, labels = data(16)
    backup = tmp_path / "backup"

    def run(crash_after=None, finished=()):
        monitor = GradientMonitor(every=2)
        model = compiled(monitor)
        model.build((None, 8, 8, 3))
        log = GradientLog(tmp_path, monitor)
        log.resume_from(finished)
        callbacks = [log]
        if crash_after is not None:
            callbacks.append(CrashAfter(crash_after))
        callbacks.append(keras.callbacks.BackupAndRestore(str(backup)))
        model.fit(images, labels, batch_size=4, epochs=4, shuffle=False, verbose=0, callbacks=callbacks)

    with pytest.raises(RuntimeError, match="simulated crash"):
        run(crash_after=2)  # epoch 2's records reach the file, but its backup is never made
    assert sorted({row["epoch"] for row in read_gradients(tmp_path / "gradients.csv")}) == [0, 1, 2]
    run(finished=[{"epoch": 0, "loss": 1.0}, {"epoch": 1, "loss": 1.0}])  # the history rows the backup holds
    rows = read_gradients(tmp_path / "gradients.csv")
    assert [row["epoch"] for row in rows] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert list(rows[0]) == ["epoch", "step", "first", "last"]
    assert [row["step"] for row in rows] == [0, 2, 4, 6, 8, 10, 12, 14]  # global steps continue after resume


@pytest.mark.slow
def test_gradients_csv_survives_resume_through_the_trainer(tmp_path):
    config = trainer.default_config("cis680_allconv", dataset="digits", classes=3, per_class=16, verbose=0,
                                    parts=[{"kind": "hook", "name": "gradient_monitor", "every": 1}])
    config.recipe = override(config.recipe, epochs=3, batch_size=16)  # 3 steps an epoch
    run_dir = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated crash"):
        trainer.train(config, run_dir, extra_callbacks=(CrashAfter(1),))  # the hook brings its GradientLog
    assert [row["epoch"] for row in read_gradients(run_dir / "gradients.csv")] == [0] * 3 + [1] * 3
    trainer.train(config, run_dir, resume=True)
    rows = read_gradients(run_dir / "gradients.csv")
    assert [(row["epoch"], row["step"]) for row in rows] == [(epoch, step) for step in range(9)
                                                            for epoch in [step // 3]]
    assert list(rows[0]) == ["epoch", "step", "conv1", "conv5"]
    assert (run_dir / "gradients.png").is_file() and (run_dir / "metrics.json").is_file()
