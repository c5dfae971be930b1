"""Adversarial training: attack mix parsing, the batch schedule, ALP, mixed precision, tf.distribute, the guard."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from attacks import core as attacks
from training.adversarial import AdversarialConfig, AdversarialModel, CatastrophicOverfittingGuard, parse_attack_mix
from tests.helpers import compiled, small_model, toy_data

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def adversarial_model(config, learning_rate=0.05, seed=0):
    """The toy problem's small ReLU model in the adversarial-training wrapper, compiled with Adam."""
    return compiled(AdversarialModel(small_model(activation="relu", seed=seed), config), learning_rate,
                    keras.optimizers.Adam)


def adversarial_loss(model, x, y, eps=0.1):
    x_adv = attacks.pgd(model, x, y, eps=eps, step_size=eps / 4, steps=10, seed=0)
    logits = model(x_adv, training=False)
    return float(keras.ops.mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)))


def test_parse_attack_mix_and_config_validation():
    assert parse_attack_mix("fgsm:10, pgd:1") == {"fgsm": 10, "pgd": 1}
    assert parse_attack_mix("fast") == {"fast": 1}
    for spec in ("", "fgsm:0", "cw:1", "fgsm:1,fgsm:2", "pgd=3"):
        with pytest.raises(ValueError, match="spec="):
            parse_attack_mix(spec)
    for bad in (dict(fraction=0), dict(fraction=1.5), dict(eps=-0.1), dict(pgd_steps=0), dict(logit_pairing=-1),
                dict(attacks={}), dict(attacks="noise", noise_snr_db=None)):
        with pytest.raises(ValueError, match=f"{list(bad)[-1]}="):
            AdversarialConfig(**bad)
    assert AdversarialConfig(attacks="fgsm:20,pgd:2").schedule() == ("fgsm",) * 10 + ("pgd",)


@pytest.mark.slow
def test_ten_to_one_schedule_picks_the_right_counts():
    x, y = toy_data(22 * 8)
    model = adversarial_model(AdversarialConfig(attacks="fgsm:10,pgd:1", eps=0.05, pgd_steps=2))
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    assert int(model.attack_step.numpy()) == 22
    np.testing.assert_array_equal(model.attack_counts.numpy(), [20, 2])


@pytest.mark.parametrize("spec", ["pgd:1", "fgsm:1,fast:1"])
@pytest.mark.slow
def test_adversarial_training_lowers_the_adversarial_loss(spec):
    x, y = toy_data(256)
    model = adversarial_model(AdversarialConfig(attacks=spec, fraction=1.0, eps=0.05, pgd_steps=3))
    before = adversarial_loss(model, x, y, eps=0.05)
    model.fit(x, y, batch_size=32, epochs=4, verbose=0)
    assert adversarial_loss(model, x, y, eps=0.05) < 0.7 * before


@pytest.mark.slow
def test_logit_pairing_adds_a_positive_term():
    x, y = toy_data(32)
    losses = {}
    for weight in (0.0, 2.0):
        model = adversarial_model(AdversarialConfig(attacks="fgsm", fraction=0.5, eps=0.1, logit_pairing=weight),
                         learning_rate=0.0)
        losses[weight] = model.train_on_batch(x, y, return_dict=True)["loss"]
    clean = model(x[:16])
    adversarial = model(attacks.fgsm(model, x[:16], y[:16], eps=0.1))
    expected = 2.0 * float(keras.ops.mean(keras.ops.square(clean - adversarial)))
    assert expected > 0
    np.testing.assert_allclose(losses[2.0] - losses[0.0], expected, rtol=1e-4)


@pytest.mark.slow
def test_noise_training_and_clean_evaluation():
    x, y = toy_data(64)
    model = adversarial_model(AdversarialConfig(attacks="noise", noise_snr_db=20.0, fraction=0.5))
    history = model.fit(x, y, batch_size=16, epochs=1, verbose=0, validation_data=(x, y))
    assert np.isfinite(history.history["loss"]).all()
    # test_step is the clean one: it matches evaluating the plain base model.
    base = model.base
    base.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    np.testing.assert_allclose(model.evaluate(x, y, verbose=0)[0], base.evaluate(x, y, verbose=0), rtol=1e-5)


@pytest.mark.slow
def test_mixed_precision_train_step_runs():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        x, y = toy_data(64)
        model = adversarial_model(AdversarialConfig(attacks="fgsm:1,pgd:1", eps=0.05, pgd_steps=2, logit_pairing=0.5))
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        history = model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert np.isfinite(history.history["loss"]).all()
    assert int(model.optimizer.iterations.numpy()) == 4


MIRRORED = textwrap.dedent("""
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from training.adversarial import AdversarialConfig, AdversarialModel
    from tests.helpers import small_model, toy_data
    x, y = toy_data(32)
    config = AdversarialConfig(attacks="fgsm:1,pgd:1", eps=0.05, pgd_steps=2, logit_pairing=0.5)
    def make():
        model = AdversarialModel(small_model(activation="relu"), config)
        model.compile(optimizer=keras.optimizers.SGD(0.0),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return model
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        mirrored = make()
    single = make()
    single.set_weights(mirrored.get_weights())
    # fgsm is deterministic and the learning rate 0: both see the same loss if averaged over the global batch.
    got = mirrored.train_on_batch(x, y, return_dict=True)["loss"]
    want = single.train_on_batch(x, y, return_dict=True)["loss"]
    np.testing.assert_allclose(got, want, rtol=1e-4)
    mirrored.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert int(mirrored.attack_step.numpy()) == 3, mirrored.attack_step.numpy()
    print("mirrored ok", got, want)
""")


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus():
    environment = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-c", MIRRORED], cwd=REPO, env=environment, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "mirrored ok" in result.stdout


class CorruptAt(keras.callbacks.Callback):
    """Stands in for a sudden collapse: swaps the two logits at the end of one epoch."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            layer = self.model.base.get_layer("logits")
            layer.set_weights([-w for w in layer.get_weights()])


@pytest.mark.slow
def test_guard_restores_the_best_robust_weights_when_pgd_accuracy_collapses():
    x, y = toy_data(64)
    model = adversarial_model(AdversarialConfig(attacks="fgsm", eps=0.05), learning_rate=0.0)
    # A hand-made robust classifier: the class is the sign of the mean pixel minus 0.5 (16 features,
    # each 0.1 x 27 pixels, so the features sum to 43.2 x mean pixel).
    model.base.get_layer("conv").set_weights([np.full((3, 3, 3, 4), 0.1, "float32"), np.zeros(4, "float32")])
    model.base.get_layer("logits").set_weights([np.tile([[-1.0, 1.0]], (16, 1)).astype("float32"),
                                                np.array([21.6, -21.6], "float32")])
    good = [w.copy() for w in model.base.get_weights()]
    guard = CatastrophicOverfittingGuard(x, y, eps=0.05, step_size=0.02, steps=5, verbose=0)
    history = model.fit(x, y, batch_size=32, epochs=6, verbose=0, callbacks=[CorruptAt(2), guard])
    accuracy = history.history["val_pgd_accuracy"]
    assert len(accuracy) == 3 and accuracy[:2] == [1.0, 1.0] and accuracy[2] < 0.5
    assert guard.collapsed_epoch == 2 and guard.best_epoch == 0
    for restored, expected in zip(model.base.get_weights(), good):
        np.testing.assert_array_equal(restored, expected)


@pytest.mark.slow
def test_guard_resumes_with_the_best_pgd_accuracy_logged_before_a_crash():
    x, y = toy_data(64)
    model = adversarial_model(AdversarialConfig(attacks="fgsm", eps=0.05), learning_rate=0.0)
    guard = CatastrophicOverfittingGuard(x, y, eps=0.05, step_size=0.02, steps=5, verbose=0)
    guard.resume_from([{"epoch": 0, "val_pgd_accuracy": 0.6}, {"epoch": 1, "val_pgd_accuracy": 0.9},
                       {"epoch": 2, "val_pgd_accuracy": 0.9}, {"epoch": 3, "accuracy": 0.5}])
    assert (guard.best_accuracy, guard.best_epoch, guard.best_weights) == (0.9, 1, None)

    # The hand-made robust classifier with its logits swapped: always wrong, so the first resumed
    # epoch collapses against the best from before the crash.
    model.base.get_layer("conv").set_weights([np.full((3, 3, 3, 4), 0.1, "float32"), np.zeros(4, "float32")])
    model.base.get_layer("logits").set_weights([np.tile([[1.0, -1.0]], (16, 1)).astype("float32"),
                                                np.array([-21.6, 21.6], "float32")])
    history = model.fit(x, y, batch_size=32, epochs=3, verbose=0, callbacks=[guard])
    assert history.history["val_pgd_accuracy"] == [0.0]
    assert guard.collapsed_epoch == 0 and guard.best_epoch == 1
