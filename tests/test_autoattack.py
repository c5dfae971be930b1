"""APGD, APGD-T, Square and the AutoAttack ledger, on tiny models and hand-made logits."""
from __future__ import annotations

import logging
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from analysis import autoattack
from attacks import apgd as apgd_module
from attacks import core as attacks, square as square_module

EPS = 8 / 255


def small_net(num_classes=10, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((12, 12, 3))
    hidden = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)
    hidden = keras.layers.Flatten()(hidden)
    return keras.Model(inputs, keras.layers.Dense(num_classes)(hidden))


def linear_net(scale, num_classes=10, masked=False):
    """logits = scale · W·x + b: a large `scale` makes a model that any eps-step can fool."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((12, 12, 3))
    hidden = keras.layers.Flatten()(inputs)
    if masked:  # the input's gradient never reaches the attacker: white-box attacks see zero
        hidden = keras.layers.Lambda(lambda t: tf.stop_gradient(t))(hidden)
    dense = keras.layers.Dense(num_classes, kernel_initializer=keras.initializers.RandomNormal(stddev=scale))
    return keras.Model(inputs, dense(hidden))


def images(count=24, seed=0):
    return tf.random.stateless_uniform((count, 12, 12, 3), (seed, 1))


def predictions(model, x):
    return tf.argmax(model(x, training=False), -1, output_type=tf.int32)


def cross_entropy(model, x, labels):
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=model(x, training=False)).numpy()


# --------------------------------------------------------------------------------------------- APGD
def test_checkpoints_for_100_steps_are_the_papers():
    # p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06); w_j = ceil(p_j * N) while p_j <= 1
    fractions = [0.0, 0.22]
    while True:
        following = fractions[-1] + max(fractions[-1] - fractions[-2] - 0.03, 0.06)
        if following > 1:
            break
        fractions.append(following)
    paper = [math.ceil(round(p * 100, 6)) for p in fractions]
    assert paper == [0, 22, 41, 57, 70, 80, 87, 93, 99]
    assert apgd_module.checkpoints(100) == paper
    assert apgd_module.checkpoints(10) == [0, 2, 3, 4, 5, 6, 7, 8, 9, 10]  # windows never shorter than 1


def test_dlr_losses_match_their_closed_form():
    logits = tf.constant([[3.0, 1.0, 2.0, 0.0], [3.0, 1.0, 2.0, 0.0], [0.5, 4.0, -1.0, 2.0]])
    labels = tf.constant([0, 1, 3])
    # -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)
    expected = [-(3 - 2) / (3 - 1), -(1 - 3) / (3 - 1), -(2 - 4) / (4 - 0.5)]
    np.testing.assert_allclose(apgd_module.dlr_loss(labels, logits).numpy(), expected, rtol=1e-6)
    targets = tf.constant([2, 3, 0])
    # -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)
    expected = [-(3 - 2) / (3 - 0.5), -(1 - 0) / (3 - 0.5), -(2 - 0.5) / (4 - 0.5 * (0.5 - 1))]
    np.testing.assert_allclose(apgd_module.targeted_dlr_loss(labels, targets, logits).numpy(), expected, rtol=1e-6)
    # Invariant to shifting and scaling the logits, the point of the DLR loss.
    np.testing.assert_allclose(apgd_module.dlr_loss(labels, 7 * logits - 3).numpy(),
                               apgd_module.dlr_loss(labels, logits).numpy(), rtol=1e-5)


@pytest.mark.slow
def test_apgd_reaches_at_least_pgds_loss_and_stays_in_the_ball():
    model, x = small_net(), images()
    labels = predictions(model, x)
    eps = 1 / 255
    found = apgd_module.apgd(model, x, labels, eps=eps, steps=20, seed=0)
    baseline = attacks.pgd(model, x, labels, eps=eps, step_size=2.5 * eps / 20, steps=20, seed=0)
    assert np.abs(found - x).max() <= eps + 1e-6 and 0 <= found.numpy().min() and found.numpy().max() <= 1
    # Where neither flips the label, APGD returns its highest-loss point: compare loss with loss there.
    kept = ((predictions(model, found) == labels) & (predictions(model, baseline) == labels)).numpy()
    assert kept.sum() >= len(x) // 2
    apgd_loss, pgd_loss = cross_entropy(model, found, labels)[kept], cross_entropy(model, baseline, labels)[kept]
    assert apgd_loss.mean() >= pgd_loss.mean() and np.mean(apgd_loss >= pgd_loss - 1e-4) >= 0.9
    assert apgd_loss.mean() > cross_entropy(model, x, labels)[kept].mean()
    l2 = apgd_module.apgd(model, x, labels, eps=0.5, norm="2", steps=10, loss="dlr", seed=0)
    assert np.linalg.norm((l2 - x).numpy().reshape(len(x), -1), axis=1).max() <= 0.5 + 1e-5


def test_apgd_fools_at_least_as_many_images_as_pgd():
    model, x = small_net(), images(48)
    labels = predictions(model, x)
    found = apgd_module.apgd(model, x, labels, eps=EPS, steps=20, restarts=2, seed=0)
    baseline = attacks.pgd(model, x, labels, eps=EPS, step_size=2.5 * EPS / 20, steps=20, seed=0)
    assert np.mean(predictions(model, found) == labels) <= np.mean(predictions(model, baseline) == labels)
    assert np.mean(predictions(model, found) == labels) < 1.0


def test_targeted_dlr_drives_the_target_up():
    model, x = small_net(), images()
    labels = predictions(model, x)
    target = tf.argsort(model(x), axis=-1, direction="DESCENDING")[:, 1]  # what targets=1 attacks
    found = apgd_module.apgd_targeted(model, x, labels, eps=2 / 255, steps=20, targets=1, seed=0)

    def target_lead(images):
        logits = model(images)
        return (tf.gather(logits, target, batch_dims=1) - tf.gather(logits, labels, batch_dims=1)).numpy()

    assert np.all(target_lead(found) > target_lead(x))


@pytest.mark.parametrize("call, message", [
    (lambda m, x: apgd_module.apgd(m, x, eps=EPS, loss="hinge"), "loss"),
    (lambda m, x: apgd_module.apgd(m, x, eps=EPS, steps=0), "steps"),
    (lambda m, x: apgd_module.apgd(m, x, eps=-1.0), "eps"),
    (lambda m, x: apgd_module.apgd_targeted(m, x, eps=EPS, targets=10), "targets"),
    (lambda m, x: apgd_module.apgd(small_net(2), x, eps=EPS, loss="dlr"), "3 classes"),
    (lambda m, x: square_module.square(m, x, eps=EPS, norm="2"), "L-inf"),
    (lambda m, x: square_module.square(m, x, eps=EPS, queries=0), "queries"),
])
def test_bad_arguments_raise_value_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call(small_net(), images(4))


# ------------------------------------------------------------------------------------------- Square
class GradientForbidden:
    """A model wrapper that records every input it is asked about and raises if a gradient is taken."""

    def __init__(self, model):
        self.model, self.queries = model, []

    def __call__(self, x, training=False):
        self.queries.append(np.array(x))

        @tf.custom_gradient
        def no_gradient(logits):
            def gradient(_):
                raise RuntimeError("a gradient was asked of a black-box model")
            return tf.identity(logits), gradient
        return no_gradient(self.model(x, training=training))


def test_square_queries_only_inside_the_ball_and_never_a_gradient():
    # One constant grey level per image, 0 and 1 included, far apart: each query shows which image it is.
    levels = np.array([0.0, 0.2, 0.4, 0.6, 0.8, 1.0], np.float32)
    x = np.broadcast_to(levels[:, None, None, None], (6, 12, 12, 3)).copy()
    wrapped = GradientForbidden(linear_net(0.01))
    labels = predictions(wrapped.model, x)
    tf.config.run_functions_eagerly(True)  # so the wrapper sees each query's numbers
    try:
        result = square_module.square(wrapped, x, labels, eps=EPS, queries=40, seed=0)
        with pytest.raises(Exception, match="black-box"):  # the wrapper does forbid gradients
            apgd_module.apgd(wrapped, x, labels, eps=EPS, steps=2)
    finally:
        tf.config.run_functions_eagerly(False)
    queries = np.concatenate(wrapped.queries[:-1])  # the last call is APGD's
    assert len(wrapped.queries) > 10
    which = np.rint(queries.reshape(len(queries), -1).mean(axis=1) * 5).astype(int)
    assert np.abs(queries - x[which]).max() <= EPS + 1e-6
    assert queries.min() >= 0.0 and queries.max() <= 1.0
    assert np.abs(result - x).max() <= EPS + 1e-6


def test_square_p_schedule_halves_at_the_references_query_counts():
    assert [square_module.square_fraction(0.8, q) for q in (0, 10, 11, 51, 201, 4001, 8001)] == [
        0.8, 0.8, 0.4, 0.2, 0.1, 0.8 / 128, 0.8 / 512]


# -------------------------------------------------------------------------------------- the ledger
def test_a_model_robust_to_nothing_has_zero_worst_case_accuracy():
    model, x = linear_net(5.0), images(16)
    labels = predictions(model, x).numpy()
    result = autoattack.autoattack(model, x.numpy(), labels, eps=EPS, steps=5, targets=3, queries=10)
    assert result["clean_acc"] == 1.0 and result["autoattack_acc"] == 0.0 and result["verified_acc"] == 0.0
    assert sum(row["first_broken"] for row in result["ledger"]) == 16
    assert result["ledger"][-1]["attack"] == "square" and result["ledger"][-1]["attacked"] == 0
    assert result["within_threat_model"] and result["max_perturbation"] <= EPS + 1e-6
    assert result["threat_model"] == "Linf" and result["eps"] == "8/255" and "FAB-T" in result["fab_t"]


def test_autoattack_at_two_budgets_warns_of_no_retracing():
    """Each attack's function traces at most twice (a full batch, then a shrinking one); TF must not add those
    first traces up across attacks into an "excessive retracing" warning."""
    model, x = small_net(), images(24)
    labels = predictions(model, x).numpy()
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    tf.get_logger().addHandler(handler)
    try:
        for eps in (2 / 255, 4 / 255):
            autoattack.autoattack(model, x.numpy(), labels, eps=eps, steps=3, targets=3, queries=5, batch_size=12)
    finally:
        tf.get_logger().removeHandler(handler)
    assert not [message for message in messages if "retracing" in message]


@pytest.mark.slow
def test_a_model_that_ignores_its_input_keeps_its_clean_accuracy():
    inputs = keras.Input((12, 12, 3))
    flat = keras.layers.Flatten()(inputs)
    model = keras.Model(inputs, keras.layers.Dense(10, kernel_initializer="zeros",
                                                   bias_initializer=keras.initializers.Constant(np.arange(10.0)))(flat))
    labels = np.array([9] * 6 + [0] * 2)
    result = autoattack.autoattack(model, images(8).numpy(), labels, eps=EPS, steps=5, targets=2, queries=10)
    assert result["clean_acc"] == result["autoattack_acc"] == 0.75
    assert not result["possible_gradient_masking"]


def test_square_breaking_what_gradients_cannot_is_flagged_as_masking():
    model, x = linear_net(5.0, masked=True), images(12)
    labels = predictions(model, x).numpy()
    result = autoattack.autoattack(model, x.numpy(), labels, eps=EPS, version="custom",
                                   components=["apgd-ce", "square"], steps=5, queries=30)
    by_attack = {row["attack"]: row for row in result["ledger"]}
    assert by_attack["apgd-ce"]["first_broken"] == 0 and by_attack["square"]["first_broken"] > 0
    assert result["possible_gradient_masking"]


# ------------------------------------------------------------------------------------- checkpoints
class Killed(Exception):
    pass


def killed_at(monkeypatch, attack, batch):
    """Make the AutoAttack components raise Killed in ``attack``'s ``batch``-th batch (1-based), once; returns
    the list of (attack, batch size) calls made."""
    real, calls, armed = autoattack._component, [], [True]

    def component(name, settings):
        run = real(name, settings)

        def counted(model, x, y):
            calls.append((name, len(x)))
            if armed[0] and name == attack and sum(call[0] == attack for call in calls) == batch:
                armed[0] = False
                raise Killed
            return run(model, x, y)
        return counted

    monkeypatch.setattr(autoattack, "_component", component)
    return calls


@pytest.mark.parametrize("attack", ["apgd-t", "square"])
def test_a_killed_pass_goes_on_from_its_checkpoint_to_the_uninterrupted_result(attack, tmp_path, monkeypatch):
    model, x = small_net(), images(24)
    labels = predictions(model, x).numpy()
    options = dict(eps=1 / 255, steps=3, targets=3, queries=20, batch_size=8)  # APGD-T: 3 batches, Square: 2
    whole = autoattack.autoattack(model, x.numpy(), labels, **options)
    monkeypatch.setattr(autoattack, "CHECKPOINT_EVERY", 0.0)  # saved after every batch
    calls = killed_at(monkeypatch, attack, batch=2)
    path = autoattack.checkpoint_path(tmp_path / "robustness", 1 / 255)
    with pytest.raises(Killed):
        autoattack.autoattack(model, x.numpy(), labels, checkpoint=path, **options)
    assert path.name == "robustness-autoattack-1_255.partial.npz" and path.exists()
    before, lines = len(calls), []
    resumed = autoattack.autoattack(model, x.numpy(), labels, checkpoint=path, log=lines.append, **options)
    # Nothing finished is attacked again: the pass starts at the killed batch.
    assert calls[before][0] == attack and sum(name == "apgd-ce" for name, _ in calls[before:]) == 0
    assert lines[0].startswith(f"autoattack 1/255: going on from {path} ({attack} has attacked 8 images")
    for key in ("clean_acc", "autoattack_acc", "verified_acc", "max_perturbation", "within_threat_model"):
        assert resumed[key] == whole[key]
    assert [{k: row[k] for k in ("attack", "attacked", "broken", "first_broken")} for row in resumed["ledger"]] == [
        {k: row[k] for k in ("attack", "attacked", "broken", "first_broken")} for row in whole["ledger"]]
    assert resumed["resumed"]["from"] == str(path) and resumed["resumed"]["cpu_seconds"] > 0
    assert resumed["seconds"] >= resumed["resumed"]["seconds"] > 0 and "resumed" not in whole


def test_a_finished_attack_is_saved_even_when_no_checkpoint_is_due(tmp_path, monkeypatch):
    model, x = small_net(), images(16)
    labels = predictions(model, x).numpy()
    options = dict(eps=1 / 255, steps=3, targets=3, queries=20, batch_size=8)
    monkeypatch.setattr(autoattack, "CHECKPOINT_EVERY", 1e9)  # no batch's save is ever due
    calls = killed_at(monkeypatch, "apgd-t", batch=1)
    path = autoattack.checkpoint_path(tmp_path / "robustness", 1 / 255)
    with pytest.raises(Killed):
        autoattack.autoattack(model, x.numpy(), labels, checkpoint=path, **options)
    before, lines = len(calls), []
    autoattack.autoattack(model, x.numpy(), labels, checkpoint=path, log=lines.append, **options)
    assert "(apgd-t has attacked 0 images" in lines[0]
    assert not [name for name, _ in calls[before:] if name == "apgd-ce"]  # APGD-CE is not run again


def test_a_checkpoint_of_other_settings_or_a_broken_one_is_not_used(tmp_path, monkeypatch):
    model, x = small_net(), images(24)
    labels = predictions(model, x).numpy()
    options = dict(eps=1 / 255, steps=3, targets=3, batch_size=8)
    monkeypatch.setattr(autoattack, "CHECKPOINT_EVERY", 0.0)
    path = tmp_path / "robustness-autoattack-1_255.partial.npz"
    autoattack.autoattack(model, x.numpy(), labels, checkpoint=path, queries=20, **options)  # leaves a finished pass
    lines = []
    other = autoattack.autoattack(model, x.numpy(), labels, checkpoint=path, queries=30, log=lines.append, **options)
    assert "is of another model, images or settings: starting afresh" in lines[0] and "resumed" not in other
    assert other["attack_versions"]["square"] == "Square, 30 queries, p_init 0.8"
    path.write_bytes(b"not a checkpoint")
    lines.clear()
    assert "resumed" not in autoattack.autoattack(model, x.numpy(), labels, checkpoint=path, queries=30,
                                                  log=lines.append, **options)
    assert "is unreadable" in lines[0]
    autoattack.remove_checkpoints(tmp_path / "robustness", [2 / 255])  # another radius's: kept
    assert path.exists()
    autoattack.remove_checkpoints(tmp_path / "robustness", [1 / 255])
    assert not list(tmp_path.iterdir())


def test_ledger_arguments_are_checked():
    model, x = small_net(), images(4).numpy()
    with pytest.raises(ValueError, match="version"):
        autoattack.autoattack(model, x, np.zeros(4), eps=EPS, version="plus")
    with pytest.raises(ValueError, match="components"):
        autoattack.autoattack(model, x, np.zeros(4), eps=EPS, version="custom", components=["fab-t"])
