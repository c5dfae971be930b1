"""Auto-PGD: the gradient attacks of AutoAttack (TensorFlow backend), in the conventions of `attacks.core`.

Images are float32 NHWC in [0, 1]; the model returns logits and runs with `training=False`; losses are
computed from float32 logits; the attack loop is one `tf.function` cached per model (`attacks._runner`),
with eps, steps and the checkpoints passed as tensors so new values never retrace.  Each iteration is
one forward and one backward pass (`eot` of each for randomised models).
"""
from __future__ import annotations

import tensorflow as tf

from attacks.core import (_NORMS, _TINY, _check_model, _float_logits, _images, _integer, _labels, _norm,
                             _per_image, _project, _random_start, _real, _runner, _seed)

__all__ = ["apgd", "apgd_targeted", "checkpoints", "dlr_loss", "targeted_dlr_loss"]

LOSSES = ("ce", "dlr")
MOMENTUM = 0.75  # weight of the new step against the previous move
RISE_FRACTION = 0.75  # halve the step when the loss rose in fewer than this share of a window's steps


def checkpoints(steps: int) -> list[int]:
    """Iterations after which APGD may halve its step: 0, then windows of 0.22·N, each 0.03·N shorter than
    the last but never under 0.06·N (as integers, like the reference code; for N = 100 they equal the paper's
    ⌈p_j·N⌉ with p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06))."""
    steps = _integer("steps", steps, minimum=1)
    length, shrink, shortest = (max(int(fraction * steps), 1) for fraction in (0.22, 0.03, 0.06))
    marks = [0]
    while marks[-1] + length <= steps:
        marks.append(marks[-1] + length)
        length = max(length - shrink, shortest)
    return marks


def dlr_loss(labels, logits):
    """Difference of logits ratio (Croce & Hein 2020, eq. 3): −(z_y − max_{i≠y} z_i) / (z_π1 − z_π3 + 1e-12),
    z_π the logits sorted in decreasing order. labels (B,) int, logits (B, C≥3) -> (B,) float32."""
    logits = tf.cast(logits, tf.float32)
    top = tf.math.top_k(logits, k=3)
    true = tf.gather(logits, labels, batch_dims=1)
    best_other = tf.where(tf.equal(top.indices[:, 0], labels), top.values[:, 1], top.values[:, 0])
    return -(true - best_other) / (top.values[:, 0] - top.values[:, 2] + 1e-12)


def targeted_dlr_loss(labels, targets, logits):
    """Targeted DLR (Croce & Hein 2020, eq. 4): −(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2 + 1e-12); rising
    means the target t gains on the true class y. labels, targets (B,) int, logits (B, C≥4) -> (B,) float32."""
    logits = tf.cast(logits, tf.float32)
    top = tf.math.top_k(logits, k=4).values
    true = tf.gather(logits, labels, batch_dims=1)
    target = tf.gather(logits, targets, batch_dims=1)
    return -(true - target) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


def _select(condition, chosen, other):
    """Per image `chosen` where `condition` (B,) holds, else `other`. 1·a + 0·b is exact, and on a CPU it is
    about 10x faster than a broadcasting tf.where over image-sized tensors."""
    mask = tf.cast(_per_image(condition, chosen.shape.rank), chosen.dtype)
    return mask * chosen + (1.0 - mask) * other


def _loss(labels, targets, logits, kind):
    if kind == "ce":
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    if kind == "dlr":
        return dlr_loss(labels, logits)
    return targeted_dlr_loss(labels, targets, logits)


def _gradient(model, x, labels, targets, *, loss, eot):
    """Input gradient averaged over `eot` forward+backward passes (expectation over transformation, for
    models that are random at inference), with the last pass's per-image loss and logits."""
    total = None
    for _ in range(eot):
        with tf.GradientTape() as tape:
            tape.watch(x)
            logits = _float_logits(model, x)
            values = _loss(labels, targets, logits, loss)
            summed = tf.reduce_sum(values)  # a sum keeps each image's own gradient scale
        # A model that cuts its input from the loss (masking) gives a zero gradient, not an error.
        gradient = tape.gradient(summed, x, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        total = gradient if total is None else total + gradient
    return (total if eot == 1 else total / eot), values, logits


def _apgd_run(model, x, labels, targets, eps, steps, marks, seed, *, norm, loss, eot):
    """One APGD run (Croce & Hein 2020, Algorithm 1). Returns per image its best iterate (a misclassified
    one beats any other, then the higher loss wins), whether it is misclassified, and its loss."""
    rank = x.shape.rank
    if norm == "inf":
        # The ball ∩ [0, 1] is a box: two bounds computed once make each projection one clip.
        low, high = tf.maximum(x - eps, 0.0), tf.minimum(x + eps, 1.0)

        def project(images):
            return tf.clip_by_value(images, low, high)

        def direction(gradient):
            return tf.sign(gradient)
    else:
        def project(images):
            return _project(x, images, eps, norm)

        def direction(gradient):
            return gradient / (_norm(gradient) + _TINY)

    start = _random_start(x, eps, norm, seed)
    gradient, loss_now, logits = _gradient(model, start, labels, targets, loss=loss, eot=eot)
    fooled = tf.not_equal(tf.argmax(logits, -1, output_type=tf.int32), labels)
    batch = tf.shape(x)[0]
    state = dict(
        i=tf.constant(0, tf.int32), x_adv=start, x_previous=start, gradient=gradient, loss_now=loss_now,
        x_best=start, gradient_best=gradient, loss_best=loss_now, fooled=fooled, loss_max=loss_now,
        step=tf.fill([batch], 2.0 * eps),  # the paper's first step: 2·eps
        rises=tf.zeros([batch], tf.int32), last_mark=tf.constant(0, tf.int32),
        max_at_mark=loss_now, halved_at_mark=tf.ones([batch], tf.bool))

    def body(s):
        # Momentum 1 on the first step (there is no previous move yet), then 0.75:
        # x + w·(z − x) + (1 − w)·(x − x_prev) = w·z + (1 − w)·(2x − x_prev), in fewer passes over the batch.
        weight = tf.where(s["i"] > 0, MOMENTUM, 1.0)
        z = project(s["x_adv"] + _per_image(s["step"], rank) * direction(s["gradient"]))
        x_adv = tf.stop_gradient(project(weight * z + (1.0 - weight) * (2.0 * s["x_adv"] - s["x_previous"])))
        gradient, loss_now, logits = _gradient(model, x_adv, labels, targets, loss=loss, eot=eot)
        wrong = tf.not_equal(tf.argmax(logits, -1, output_type=tf.int32), labels)
        rises = s["rises"] + tf.cast(loss_now > s["loss_now"], tf.int32)
        better = (wrong & ~s["fooled"]) | ((wrong == s["fooled"]) & (loss_now > s["loss_best"]))
        x_best = _select(better, x_adv, s["x_best"])
        gradient_best = _select(better, gradient, s["gradient_best"])
        new = dict(s, i=s["i"] + 1, x_adv=x_adv, x_previous=s["x_adv"], gradient=gradient, loss_now=loss_now,
                   x_best=x_best, gradient_best=gradient_best, loss_best=tf.where(better, loss_now, s["loss_best"]),
                   fooled=s["fooled"] | wrong, loss_max=tf.maximum(loss_now, s["loss_max"]), rises=rises)

        def at_checkpoint():
            window = tf.cast(new["i"] - s["last_mark"], tf.float32)
            oscillating = tf.cast(rises, tf.float32) < RISE_FRACTION * window
            stalled = ~s["halved_at_mark"] & (s["max_at_mark"] >= new["loss_max"])
            halve = oscillating | stalled
            # Halve the step and restart from the best point so far.
            return dict(new, step=tf.where(halve, new["step"] / 2.0, new["step"]),
                        x_adv=_select(halve, x_best, x_adv), gradient=_select(halve, gradient_best, gradient),
                        rises=tf.zeros_like(rises), last_mark=new["i"], max_at_mark=new["loss_max"],
                        halved_at_mark=halve)

        return (tf.cond(tf.reduce_any(tf.equal(marks, new["i"])), at_checkpoint, lambda: new),)

    (final,) = tf.while_loop(lambda s: s["i"] < steps, body, (state,))
    return final["x_best"], final["fooled"], final["loss_best"]


def _check(model, eps, norm, steps, restarts, eot):
    _check_model(model)
    eps = _real("eps", eps, minimum=0)
    steps = _integer("steps", steps, minimum=1)
    restarts = _integer("restarts", restarts, minimum=1)
    eot = _integer("eot", eot, minimum=1)
    if norm not in _NORMS:
        raise ValueError(f'`norm` must be "inf" or "2". Received: norm={norm!r}')
    return eps, _NORMS[norm], steps, restarts, eot


def _classes(model, x, needed, why):
    logits = _runner(model, "logits", _float_logits)(x)
    if logits.shape[-1] is not None and logits.shape[-1] < needed:
        raise ValueError(f"{why} needs at least {needed} classes. Received: logits with {logits.shape[-1]} classes")
    return logits


def _attempts(model, x, labels, target_lists, seeds, *, eps, norm, steps, loss, eot):
    """One APGD run per (targets, seed) pair, each only on the images no earlier run fooled (eagerly; inside
    a trace every run sees the whole batch). Per image: the first fooling result, else the highest loss."""
    run = _runner(model, "apgd", _apgd_run, norm=norm, loss=loss, eot=eot)
    arguments = (tf.constant(eps), tf.constant(steps), tf.constant(checkpoints(steps), tf.int32))
    best, best_fooled, best_loss = None, None, None
    for targets, seed in zip(target_lists, seeds):
        if best is None:
            best, best_fooled, best_loss = run(x, labels, targets, arguments[0], arguments[1], arguments[2], seed)
            continue
        if tf.executing_eagerly():
            remaining = tf.where(~best_fooled)[:, 0]
            if int(tf.size(remaining)) == 0:
                break
            images, fooled, values = run(tf.gather(x, remaining), tf.gather(labels, remaining),
                                         tf.gather(targets, remaining), *arguments, seed)
            index = remaining[:, None]
            better = fooled | (values > tf.gather(best_loss, remaining))
            images = _select(better, images, tf.gather(best, remaining))
            best = tf.tensor_scatter_nd_update(best, index, images)
            best_fooled = tf.tensor_scatter_nd_update(best_fooled, index, fooled)
            kept_loss = tf.maximum(values, tf.gather(best_loss, remaining))
            best_loss = tf.tensor_scatter_nd_update(best_loss, index, kept_loss)
        else:
            images, fooled, values = run(x, labels, targets, *arguments, seed)
            better = (fooled & ~best_fooled) | ((fooled == best_fooled) & (values > best_loss))
            best = _select(better, images, best)
            best_fooled, best_loss = best_fooled | fooled, tf.where(better, values, best_loss)
    return best


def apgd(model, x, y=None, *, eps, norm="inf", steps=100, loss="ce", restarts=1, eot=1, seed=None):
    """Auto-PGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of
    diverse parameter-free attacks"): PGD with momentum 0.75 and a step that starts at 2·eps and is halved,
    with a restart from the best point, at each checkpoint (`checkpoints`) where the loss rose in fewer
    than 75% of the window's steps, or where the step was not halved at the previous checkpoint and the
    best loss has not improved since.

    `loss` is "ce" (cross-entropy) or "dlr" (`dlr_loss`, which needs 3+ classes and is invariant to
    shifting and scaling the logits). `restarts` reruns from new random starts on the images not yet
    fooled; `eot` averages each gradient over that many passes (randomised models). Returns float32
    images (B, ...): per image a misclassified point when one was found, else the highest-loss point.
    """
    eps, norm, steps, restarts, eot = _check(model, eps, norm, steps, restarts, eot)
    if loss not in LOSSES:
        raise ValueError(f'`loss` must be "ce" or "dlr". Received: loss={loss!r}')
    x = _images(x)
    if loss == "dlr":
        _classes(model, x, 3, "the DLR loss")
    labels = _labels(model, x, y, targeted=False)
    if eps == 0:
        return x
    seed = _seed(seed)
    seeds = [tf.random.experimental.stateless_fold_in(seed, restart) for restart in range(restarts)]
    return _attempts(model, x, labels, [labels] * restarts, seeds, eps=eps, norm=norm, steps=steps, loss=loss,
                     eot=eot)


def apgd_targeted(model, x, y=None, *, eps, norm="inf", steps=100, targets=9, restarts=1, seed=None):
    """APGD-T: APGD with the targeted DLR loss (`targeted_dlr_loss`), run once against each of the
    `targets` classes ranked highest after the true class on the clean image (2nd, 3rd, ...), each run
    only on the images the earlier ones did not fool. Success is any misclassification. Needs 4+ classes
    and `targets` <= classes − 1. Returns float32 images (B, ...), chosen per image as `apgd` does."""
    eps, norm, steps, restarts, _ = _check(model, eps, norm, steps, restarts, 1)
    targets = _integer("targets", targets, minimum=1)
    x = _images(x)
    logits = _classes(model, x, 4, "the targeted DLR loss")
    num_classes = int(logits.shape[-1])
    if targets > num_classes - 1:
        raise ValueError(f"`targets` must be <= classes - 1 = {num_classes - 1}. Received: targets={targets}")
    labels = _labels(model, x, y, targeted=False)
    if eps == 0:
        return x
    ranked = tf.argsort(logits, axis=-1, direction="DESCENDING", stable=True)
    seed = _seed(seed)
    target_lists, seeds = [], []
    for rank in range(1, targets + 1):
        for restart in range(restarts):
            target_lists.append(tf.cast(ranked[:, rank], tf.int32))
            seeds.append(tf.random.experimental.stateless_fold_in(seed, rank * restarts + restart))
    return _attempts(model, x, labels, target_lists, seeds, eps=eps, norm=norm, steps=steps, loss="dlr-targeted",
                     eot=1)
