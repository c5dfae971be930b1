"""Attacks: threat-model bounds, closed forms, SNR definitions, argument checks, tracing once."""
from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from attacks import core as attacks

SHAPE = (6, 6, 3)
NUM_CLASSES = 4


def linear_model(seed=0):
    inputs = keras.Input(SHAPE, name="images")
    flat = keras.layers.Flatten(name="flatten")(inputs)
    logits = keras.layers.Dense(NUM_CLASSES, name="logits",
                                kernel_initializer=keras.initializers.RandomNormal(stddev=0.5, seed=seed))(flat)
    return keras.Model(inputs, logits, name="linear")


def conv_model(seed=0):
    inputs = keras.Input(SHAPE, name="images")
    hidden = keras.layers.Conv2D(8, 3, activation="relu", name="conv",
                                 kernel_initializer=keras.initializers.HeNormal(seed=seed))(inputs)
    hidden = keras.layers.Flatten(name="flatten")(hidden)
    logits = keras.layers.Dense(NUM_CLASSES, name="logits",
                                kernel_initializer=keras.initializers.GlorotNormal(seed=seed))(hidden)
    return keras.Model(inputs, logits, name="conv")


def images(count=16, low=0.0, high=1.0, seed=0):
    return np.random.default_rng(seed).uniform(low, high, (count, *SHAPE)).astype("float32")


def labels(count=16, seed=1):
    return np.random.default_rng(seed).integers(0, NUM_CLASSES, count).astype("int32")


def per_example_loss(model, x, y):
    logits = model(np.asarray(x), training=False)
    return keras.ops.convert_to_numpy(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))


def snr_db(x, x_adv):
    signal = np.linalg.norm(x.reshape(len(x), -1), axis=1)
    noise = np.linalg.norm((np.asarray(x_adv) - x).reshape(len(x), -1), axis=1)
    return 20 * np.log10(signal / noise)


@pytest.mark.parametrize("norm", ["inf", "2"])
def test_pgd_stays_in_the_eps_ball_and_pixel_range(norm):
    model, x = conv_model(), images()
    eps = 0.05 if norm == "inf" else 0.5
    x_adv = np.asarray(attacks.pgd(model, x, labels(), eps=eps, step_size=eps / 2, steps=4, norm=norm,
                                   restarts=2, seed=3))
    delta = (x_adv - x).reshape(len(x), -1)
    size = np.abs(delta).max(axis=1) if norm == "inf" else np.linalg.norm(delta, axis=1)
    assert size.max() <= eps + 1e-5
    assert size.min() > 0
    assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_zero_eps_returns_the_input():
    model, x = conv_model(), images()
    np.testing.assert_array_equal(attacks.fgsm(model, x, eps=0), x)
    np.testing.assert_array_equal(attacks.pgd(model, x, labels(), eps=0, step_size=0.1, steps=3, targeted=True), x)


def test_fgsm_on_a_linear_softmax_model_matches_the_closed_form():
    model, x, y = linear_model(), images(), labels()
    eps = 0.03
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in model.get_layer("logits").weights)
    logits = x.reshape(len(x), -1) @ kernel + bias
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    gradient = (probabilities - np.eye(NUM_CLASSES)[y]) @ kernel.T  # d cross-entropy / d x
    expected = np.clip(x + eps * np.sign(gradient).reshape(x.shape), 0, 1)
    np.testing.assert_allclose(attacks.fgsm(model, x, y, eps=eps), expected, atol=1e-6)


def test_y_none_attacks_the_model_predictions():
    model, x = linear_model(), images()
    predicted = np.argmax(model(x), axis=-1)
    np.testing.assert_allclose(attacks.fgsm(model, x, eps=0.02), attacks.fgsm(model, x, predicted, eps=0.02))


def test_pgd_loss_is_at_least_the_fgsm_loss():
    model, x, y = conv_model(), images(32), labels(32)
    eps = 0.03
    fgsm_loss = per_example_loss(model, attacks.fgsm(model, x, y, eps=eps), y)
    pgd_loss = per_example_loss(model, attacks.pgd(model, x, y, eps=eps, step_size=eps / 4, steps=10, seed=0), y)
    assert pgd_loss.mean() >= fgsm_loss.mean()


def test_restarts_never_lower_the_worst_case():
    model, x, y = conv_model(), images(32), labels(32)
    arguments = dict(eps=0.05, step_size=0.01, steps=3, seed=7)
    single = attacks.pgd(model, x, y, **arguments)
    several = attacks.pgd(model, x, y, restarts=4, **arguments)
    fooled = np.argmax(model(several), -1) != y
    not_lower = per_example_loss(model, several, y) >= per_example_loss(model, single, y) - 1e-5
    assert np.all(fooled | not_lower)
    assert fooled.sum() >= (np.argmax(model(single), -1) != y).sum()


def test_targeted_attacks_reach_an_easy_target():
    model, x = linear_model(), images()
    target = np.full(len(x), 2, "int32")
    x_adv = attacks.pgd(model, x, target, eps=0.3, step_size=0.05, steps=20, targeted=True, seed=0)
    assert np.mean(np.argmax(model(x_adv), -1) == target) == 1.0

    x_adv, steps_taken, success = attacks.targeted_until_confident(model, x, target, confidence=0.9,
                                                                   step_size=0.02, max_steps=100)
    probability = keras.ops.convert_to_numpy(keras.ops.softmax(model(x_adv)))[:, 2]
    assert np.all(np.asarray(success)) and np.all(probability >= 0.9)
    assert 0 < np.asarray(steps_taken).max() <= 100
    # Images that already meet the bar are left alone.
    easy, steps_taken, success = attacks.targeted_until_confident(model, x, target, confidence=1e-6,
                                                                  step_size=0.02, max_steps=5)
    np.testing.assert_array_equal(easy, x)
    assert np.all(np.asarray(steps_taken) == 0) and np.all(np.asarray(success))


@pytest.mark.parametrize("requested", [10.0, 25.0])
def test_snr_attacks_hit_the_requested_snr(requested):
    model, x = conv_model(), images()
    assert np.abs(snr_db(x, attacks.fgsm_snr(model, x, snr_db=requested, clip=False)) - requested).max() < 0.1
    noisy = attacks.gaussian_noise(x, snr_db=requested, seed=0, clip=False)
    assert np.abs(snr_db(x, noisy) - requested).max() < 0.1
    # Away from the bounds nothing is clipped, so the clipped version hits it too.
    middle = images(low=0.4, high=0.6)
    assert np.abs(snr_db(middle, attacks.fgsm_snr(model, middle, snr_db=30.0)) - 30.0).max() < 0.1
    assert np.abs(snr_db(middle, attacks.gaussian_noise(middle, snr_db=30.0, seed=1)) - 30.0).max() < 0.1


def test_gaussian_noise_is_truncated_and_seeded():
    x = np.full((2, 32, 32, 3), 0.5, "float32")
    noise = np.asarray(attacks.gaussian_noise(x, snr_db=20.0, truncate=1.0, seed=5, clip=False)) - x
    # Truncated at ±1 std of the underlying normal, whose truncated std is 0.54: max/std <= 1.85.
    spread = np.abs(noise).max(axis=(1, 2, 3)) / noise.std(axis=(1, 2, 3))
    assert np.all((spread > 1.7) & (spread < 1.0 / 0.54 * 1.03))
    np.testing.assert_array_equal(attacks.gaussian_noise(x, snr_db=20.0, seed=5),
                                  attacks.gaussian_noise(x, snr_db=20.0, seed=5))


def test_repeated_calls_do_not_retrace():
    model, x, y = conv_model(), images(), labels()
    for eps in (0.01, 0.02, 0.03):
        attacks.pgd(model, x, y, eps=eps, step_size=eps / 2, steps=2 + int(eps * 100), seed=int(eps * 100))
    (traced,) = [function for key, function in attacks._CACHE[model].items() if key[0] == "pgd"]
    assert traced.experimental_get_tracing_count() == 1


def test_attack_loss_uses_float32_logits_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model, x = conv_model(), images()
        x_adv = attacks.pgd(model, x, eps=0.03, step_size=0.01, steps=3, seed=0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert x_adv.dtype == tf.float32
    assert np.abs(np.asarray(x_adv) - x).max() <= 0.03 + 1e-5
    assert np.count_nonzero(np.asarray(x_adv) - x) > 0


BAD_ARGUMENTS = {
    "eps=-0.1": lambda m, x: attacks.pgd(m, x, eps=-0.1, step_size=0.1, steps=1),
    "eps=nan": lambda m, x: attacks.fgsm(m, x, eps=math.nan),
    "step_size=0": lambda m, x: attacks.pgd(m, x, eps=0.1, step_size=0, steps=1),
    "steps=0": lambda m, x: attacks.pgd(m, x, eps=0.1, step_size=0.1, steps=0),
    "steps=1.5": lambda m, x: attacks.pgd(m, x, eps=0.1, step_size=0.1, steps=1.5),
    "norm='1'": lambda m, x: attacks.pgd(m, x, eps=0.1, step_size=0.1, steps=1, norm="1"),
    "restarts=0": lambda m, x: attacks.pgd(m, x, eps=0.1, step_size=0.1, steps=1, restarts=0),
    "restarts=2": lambda m, x: attacks.pgd(m, x, eps=0.1, step_size=0.1, steps=1, restarts=2, random_start=False),
    "y=None": lambda m, x: attacks.fgsm(m, x, eps=0.1, targeted=True),
    "shape=(16, 2, 2)": lambda m, x: attacks.fgsm(m, x, np.zeros((16, 2, 2), "int32"), eps=0.1),
    "3 labels": lambda m, x: attacks.fgsm(m, x, np.zeros(3, "int32"), eps=0.1),
    "dtype=uint8": lambda m, x: attacks.fgsm(m, (x * 255).astype("uint8"), eps=0.1),
    "loss_fn='ce'": lambda m, x: attacks.fgsm(m, x, eps=0.1, loss_fn="ce"),
    "model=None": lambda m, x: attacks.fgsm(None, x, eps=0.1),
    "seed=[1, 2, 3]": lambda m, x: attacks.pgd(m, x, eps=0.1, step_size=0.1, steps=1, seed=[1, 2, 3]),
    "snr_db=nan": lambda m, x: attacks.fgsm_snr(m, x, snr_db=math.nan),
    "snr_db=-inf": lambda m, x: attacks.gaussian_noise(x, snr_db=-math.inf),
    "truncate=0": lambda m, x: attacks.gaussian_noise(x, snr_db=10, truncate=0),
    "confidence=1": lambda m, x: attacks.targeted_until_confident(m, x, np.zeros(16), step_size=0.1, max_steps=1,
                                                                  confidence=1.0),
    "max_steps=0": lambda m, x: attacks.targeted_until_confident(m, x, np.zeros(16), step_size=0.1, max_steps=0),
}


@pytest.mark.parametrize("offending", list(BAD_ARGUMENTS))
def test_bad_arguments_raise_value_error_naming_the_value(offending):
    with pytest.raises(ValueError) as error:
        BAD_ARGUMENTS[offending](linear_model(), images())
    assert offending.split("=")[-1] in str(error.value)
