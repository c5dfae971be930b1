"""Adversarial attacks on image classifiers (TensorFlow backend), cleverhans-style signatures.

Every attack takes float32 NHWC images in [0, 1] and a model that returns logits, calls the model with
`training=False`, computes its loss from float32 logits (input gradients of a float16 loss underflow
under `mixed_float16`) and returns a float32 tensor.  `y=None` attacks the model's own predictions, so
the true labels never leak into the attack.  Each iteration of an iterative attack is exactly one
forward and one backward pass.

Called eagerly, an attack runs through a `tf.function` cached per model and per static argument (a
`tf.function` rebuilt on every call retraces and costs more than the attack); scalar arguments are
passed as tensors so new values do not retrace.  Called while a graph is being traced (inside a
`train_step`), the attack is built straight into that graph.
"""
from __future__ import annotations

import functools
import math
import numbers
import weakref

import tensorflow as tf

from common import checks

__all__ = ["fgsm", "pgd", "fgsm_snr", "gaussian_noise", "targeted_until_confident"]

_NORMS = {"inf": "inf", "2": "2", math.inf: "inf", 2: "2"}
# Keeps L2 directions finite where the gradient or the perturbation is exactly zero.
_TINY = 1e-12

# model -> {static key: tf.function}; weak so a deleted model frees its traced graphs.
_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


# ----------------------------------------------------------------------------------------- checks
def _real(name, value, *, minimum=None, allow_inf=False, strict=False):
    if allow_inf and isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isinf(value):
        if value < 0 and minimum is not None:
            raise ValueError(f"`{name}` must be >= {minimum}. Received: {name}={value!r}")
        return float(value)
    value = checks.finite_real(name, value)
    if minimum is not None:
        checks.real_in_range(name, value, minimum, math.inf, low_open=strict, high_open=True)
    return value


def _integer(name, value, *, minimum):
    return checks.integer(name, value, minimum=minimum)


def _images(x):
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        raise ValueError(f"`x` must hold float images in [0, 1]. Received: x with dtype={x.dtype.name}")
    if x.shape.rank is not None and x.shape.rank < 2:
        raise ValueError(f"`x` must be a batch (rank >= 2). Received: x with shape={x.shape}")
    return tf.cast(x, tf.float32)


def _check_model(model):
    if not callable(model):
        raise ValueError(f"`model` must be a callable returning logits. Received: model={model!r}")


def _check_loss_fn(loss_fn):
    if loss_fn is not None and not callable(loss_fn):
        raise ValueError(f"`loss_fn` must be callable(labels, logits) or None. Received: loss_fn={loss_fn!r}")


def _labels(model, x, y, *, targeted):
    """Integer labels (B,); one-hot labels are reduced with argmax; None means the model's predictions."""
    if y is None:
        if targeted:
            raise ValueError("A targeted attack needs target labels. Received: y=None")
        return _runner(model, "predict", _predict)(x)
    y = tf.convert_to_tensor(y)
    if y.shape.rank == 2:
        y = tf.argmax(y, axis=-1)
    if y.shape.rank != 1:
        raise ValueError(f"`y` must be labels (B,) or one-hot (B, C). Received: y with shape={y.shape}")
    if x.shape[0] is not None and y.shape[0] is not None and x.shape[0] != y.shape[0]:
        raise ValueError(f"`y` must have one label per image. Received: {y.shape[0]} labels for {x.shape[0]} images")
    return tf.cast(y, tf.int32)


def _seed(seed):
    """A (2,) int32 seed for the stateless ops: given, or drawn from TF's global (seedable) generator."""
    if seed is None:
        return tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int32)
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        return tf.constant([int(seed), 0], tf.int32)
    tensor = tf.convert_to_tensor(seed)
    if not tensor.dtype.is_integer or tensor.shape != (2,):
        raise ValueError(f"`seed` must be an int, a (2,) integer tensor or None. Received: seed={seed!r}")
    return tensor


# ---------------------------------------------------------------------------------------- helpers
def _runner(model, name, body, jit_compile=False, **static):
    """`body` bound to `model`: a cached tf.function when eager, the plain function inside a trace."""
    if not tf.executing_eagerly():
        return functools.partial(body, model, **static)
    per_model = _CACHE.setdefault(model, {})
    key = (name, jit_compile, tuple(sorted(static.items(), key=lambda item: item[0])))
    function = per_model.get(key)
    if function is None:
        # A weak reference, or the cached function would keep its own key (the model) alive. A partial, not a
        # lambda: TF counts retracing per code object, so every runner's lambda would share one count and its
        # first traces would add up to a false "excessive retracing" warning.
        bound = functools.partial(_call_with_model, weakref.ref(model), body, static)
        function = tf.function(bound, jit_compile=jit_compile, reduce_retracing=True)
        per_model[key] = function
    return function


def _call_with_model(model_ref, body, static, *args):
    return body(model_ref(), *args, **static)


def _float_logits(model, x):
    return tf.cast(model(x, training=False), tf.float32)


def _predict(model, x):
    return tf.argmax(_float_logits(model, x), axis=-1, output_type=tf.int32)


def _per_example_loss(labels, logits, loss_fn):
    if loss_fn is None:
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    loss = tf.cast(loss_fn(labels, logits), tf.float32)
    # A loss_fn that reduces to a scalar still gives per-image gradients: images don't interact.
    return tf.broadcast_to(loss, tf.shape(labels)) if loss.shape.rank == 0 else loss


def _input_gradient(model, x, labels, loss_fn, targeted):
    """Per-image ascent direction (descent for targeted), per-example loss and logits: one fwd+bwd."""
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits = _float_logits(model, x)
        loss = _per_example_loss(labels, logits, loss_fn)
        # A sum, not a mean: each image keeps its own gradient scale (a mean shrinks it by 1/B).
        total = tf.reduce_sum(loss)
    gradient = tape.gradient(total, x)
    return (-gradient if targeted else gradient), loss, logits


def _per_image(values, rank):
    """(B,) values reshaped to broadcast against a rank-`rank` batch."""
    return tf.reshape(values, [-1] + [1] * (rank - 1))


def _norm(t):
    """Per-image L2 norm, shaped to broadcast against the batch."""
    return _per_image(tf.norm(tf.reshape(t, [tf.shape(t)[0], -1]), axis=1), t.shape.rank)


def _project(x, x_adv, eps, norm):
    """Back into the eps-ball around x (per image), then into the valid pixel range."""
    delta = x_adv - x
    if norm == "inf":
        delta = tf.clip_by_value(delta, -eps, eps)
    else:
        delta *= tf.minimum(1.0, eps / (_norm(delta) + _TINY))
    return tf.clip_by_value(x + delta, 0.0, 1.0)


def _random_start(x, eps, norm, seed):
    if norm == "inf":
        delta = tf.random.stateless_uniform(tf.shape(x), seed, minval=-eps, maxval=eps)
    else:
        # Uniform in the L2 ball: a Gaussian direction and radius eps * u^(1/d).
        direction = tf.random.stateless_normal(tf.shape(x), seed)
        direction /= _norm(direction) + _TINY
        size = tf.cast(tf.reduce_prod(tf.shape(x)[1:]), tf.float32)
        u = tf.random.stateless_uniform(tf.shape(_norm(x)), tf.random.experimental.stateless_fold_in(seed, 1))
        delta = direction * eps * u ** (1.0 / size)
    return tf.clip_by_value(x + delta, 0.0, 1.0)


# ------------------------------------------------------------------------------------------- PGD
def _pgd_run(model, x, labels, eps, step_size, steps, seed, *, norm, random_start, targeted, loss_fn):
    x_adv = _random_start(x, eps, norm, seed) if random_start else x

    def step(i, x_adv):
        gradient, _, _ = _input_gradient(model, x_adv, labels, loss_fn, targeted)
        if norm == "inf":
            direction = tf.sign(gradient)
        else:
            direction = gradient / (_norm(gradient) + _TINY)
        return i + 1, _project(x, tf.stop_gradient(x_adv + step_size * direction), eps, norm)

    _, x_adv = tf.while_loop(lambda i, _: i < steps, step, (tf.constant(0, steps.dtype), x_adv))
    return x_adv


def _score(model, x, labels, *, targeted, loss_fn):
    """Per-example (success, loss to maximise) used to keep each example's worst restart."""
    logits = _float_logits(model, x)
    loss = _per_example_loss(labels, logits, loss_fn)
    predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
    success = tf.equal(predicted, labels) if targeted else tf.not_equal(predicted, labels)
    return success, (-loss if targeted else loss)


def pgd(model, x, y=None, *, eps, step_size, steps, norm="inf", random_start=True, restarts=1, targeted=False,
        loss_fn=None, seed=None, jit_compile=False):
    """Projected gradient descent (Madry et al. 2018, "Towards Deep Learning Models Resistant to
    Adversarial Attacks"): `steps` steps of `step_size` along sign(grad) (L∞) or grad/‖grad‖₂ (L2),
    each followed by projection into the eps-ball and clipping to [0, 1].

    `restarts` runs from that many random starts and keeps, per example, the worst case: a restart that
    fools the model beats one that does not; otherwise the higher loss (lower for `targeted`) wins.
    `loss_fn(labels, logits)` returns per-example losses (default: softmax cross-entropy).
    `jit_compile=True` compiles with XLA; measure first (it was slower on a 2-core CPU).
    """
    _check_model(model)
    _check_loss_fn(loss_fn)
    eps = _real("eps", eps, minimum=0)
    step_size = _real("step_size", step_size, minimum=0, strict=True)
    steps = _integer("steps", steps, minimum=1)
    restarts = _integer("restarts", restarts, minimum=1)
    if norm not in _NORMS:
        raise ValueError(f'`norm` must be "inf" or "2". Received: norm={norm!r}')
    norm = _NORMS[norm]
    if restarts > 1 and not random_start:
        raise ValueError(f"restarts={restarts} repeats one deterministic attack; it needs random_start=True")
    x = _images(x)
    if eps == 0:
        if targeted and y is None:
            raise ValueError("A targeted attack needs target labels. Received: y=None")
        return x
    labels = _labels(model, x, y, targeted=targeted)
    seed = _seed(seed)
    static = dict(norm=norm, random_start=bool(random_start), targeted=bool(targeted), loss_fn=loss_fn)
    run = _runner(model, "pgd", _pgd_run, jit_compile=jit_compile, **static)
    arguments = (tf.constant(eps), tf.constant(step_size), tf.constant(steps))
    best = run(x, labels, *arguments, seed)
    if restarts == 1:
        return best
    score = _runner(model, "score", _score, targeted=bool(targeted), loss_fn=loss_fn)
    best_success, best_loss = score(best, labels)
    for restart in range(1, restarts):
        candidate = run(x, labels, *arguments, tf.random.experimental.stateless_fold_in(seed, restart))
        success, loss = score(candidate, labels)
        better = (success & ~best_success) | ((success == best_success) & (loss > best_loss))
        best = tf.where(_per_image(better, x.shape.rank), candidate, best)
        best_success, best_loss = best_success | success, tf.where(better, loss, best_loss)
    return best


def fgsm(model, x, y=None, *, eps, targeted=False, loss_fn=None):
    """Fast gradient sign method (Goodfellow et al. 2015, "Explaining and Harnessing Adversarial
    Examples"): x + eps·sign(∇ₓ loss), clipped to [0, 1]; one L∞ PGD step without random start."""
    return pgd(model, x, y, eps=eps, step_size=max(_real("eps", eps, minimum=0), _TINY), steps=1,
               random_start=False, targeted=targeted, loss_fn=loss_fn)


# ------------------------------------------------------------------------------- SNR-based attacks
def _snr_scale(x, direction, snr_db):
    """Per-image factor c so that 20·log10(‖x‖₂ / ‖c·direction‖₂) = snr_db (the IMT report's SNR)."""
    return _norm(x) / (10.0 ** (snr_db / 20.0) * (_norm(direction) + _TINY))


def _fgsm_snr_run(model, x, labels, snr_db, *, clip):
    gradient, _, _ = _input_gradient(model, x, labels, None, False)
    direction = tf.sign(gradient)
    x_adv = x + _snr_scale(x, direction, snr_db) * direction
    return tf.clip_by_value(x_adv, 0.0, 1.0) if clip else x_adv


def fgsm_snr(model, x, y=None, *, snr_db, clip=True):
    """FGSM whose per-image step size is set by a signal-to-noise ratio instead of eps.
    `clip=False` skips the final clip to [0, 1], so the SNR holds exactly."""
    _check_model(model)
    snr_db = _real("snr_db", snr_db, allow_inf=True)
    x = _images(x)
    labels = _labels(model, x, y, targeted=False)
    if math.isinf(snr_db) and snr_db > 0:
        return x
    if math.isinf(snr_db):
        raise ValueError(f"`snr_db` must be finite or +inf. Received: snr_db={snr_db}")
    return _runner(model, "fgsm_snr", _fgsm_snr_run, clip=bool(clip))(x, labels, tf.constant(snr_db))


def gaussian_noise(x, *, snr_db, truncate=2.0, seed=None, clip=True):
    """Gaussian noise truncated at ±`truncate` standard deviations, scaled per image to `snr_db`
    (same SNR definition as `fgsm_snr`); `clip=False` skips the final clip to [0, 1]."""
    snr_db = _real("snr_db", snr_db, allow_inf=True)
    truncate = _real("truncate", truncate, minimum=0, strict=True, allow_inf=True)
    x = _images(x)
    if math.isinf(snr_db) and snr_db > 0:
        return x
    if math.isinf(snr_db):
        raise ValueError(f"`snr_db` must be finite or +inf. Received: snr_db={snr_db}")
    seed = _seed(seed)
    if math.isinf(truncate):
        noise = tf.random.stateless_normal(tf.shape(x), seed)
    else:
        # Inverse-CDF sampling handles any truncation (stateless_truncated_normal is fixed at 2 std).
        low = 0.5 * tf.math.erfc(truncate / math.sqrt(2.0))
        noise = tf.math.ndtri(tf.random.stateless_uniform(tf.shape(x), seed, minval=low, maxval=1.0 - low))
    noisy = x + _snr_scale(x, noise, snr_db) * noise
    return tf.clip_by_value(noisy, 0.0, 1.0) if clip else noisy


# ------------------------------------------------------------------------------ targeted, to a bar
def _until_confident_run(model, x, target, confidence, step_size, max_steps):
    batch = tf.shape(x)[0]

    def step(i, x_adv, steps_taken, _):
        gradient, _, logits = _input_gradient(model, x_adv, target, None, True)
        reached = tf.gather(tf.nn.softmax(logits), target, batch_dims=1) >= confidence
        moved = tf.clip_by_value(x_adv + step_size * tf.sign(gradient), 0.0, 1.0)
        active = _per_image(~reached, x.shape.rank)
        return i + 1, tf.where(active, moved, x_adv), steps_taken + tf.cast(~reached, tf.int32), reached

    _, x_adv, steps_taken, _ = tf.while_loop(
        lambda i, _x, _s, reached: (i < max_steps) & ~tf.reduce_all(reached),
        step,
        (tf.constant(0), x, tf.zeros([batch], tf.int32), tf.zeros([batch], tf.bool)),
    )
    probabilities = tf.nn.softmax(_float_logits(model, x_adv))
    return x_adv, steps_taken, tf.gather(probabilities, target, batch_dims=1) >= confidence


def targeted_until_confident(model, x, target, *, confidence=0.99, step_size, max_steps):
    """Iterative targeted sign-gradient steps (no eps-ball, only [0, 1]) that stop, per image, as soon as
    the softmax probability of `target` reaches `confidence`.

    Returns (images, steps_taken (B,) int32, success (B,) bool)."""
    _check_model(model)
    confidence = _real("confidence", confidence, minimum=0, strict=True)
    if confidence >= 1:
        raise ValueError(f"`confidence` must be in (0, 1). Received: confidence={confidence}")
    step_size = _real("step_size", step_size, minimum=0, strict=True)
    max_steps = _integer("max_steps", max_steps, minimum=1)
    x = _images(x)
    target = _labels(model, x, target, targeted=True)
    run = _runner(model, "until_confident", _until_confident_run)
    return run(x, target, tf.constant(confidence), tf.constant(step_size), tf.constant(max_steps))
