"""The Square attack: a score-based black-box attack that needs no gradient (TensorFlow backend).

It queries only the model's outputs on images inside the eps-ball and [0, 1], so a model that hides
its gradient (masking, obfuscation) is still attacked at full strength; AutoAttack runs it last.
Conventions as in `attacks.core`: float32 NHWC images in [0, 1], logits, `training=False`.
"""
from __future__ import annotations

import math

import tensorflow as tf

from attacks.core import _NORMS, _check_model, _images, _integer, _labels, _real, _runner, _seed

__all__ = ["square", "square_fraction"]

# Where the share of pixels changed per query halves (the reference schedule, in queries).
_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def square_fraction(p_init: float, query: int) -> float:
    """Share of the image one square covers at `query`: p_init, halved after 10, 50, 200, 500, 1000,
    2000, 4000, 6000 and 8000 queries (the schedule AutoAttack uses with 5000 queries)."""
    return p_init / 2 ** sum(query > bound for bound in _HALVINGS)


def _margin(model, x, labels):
    """z_y − max_{j≠y} z_j from the outputs alone: the inputs and outputs are cut from any tape, so no
    gradient can flow through the model. x (B, H, W, C) float32 -> (B,) float32; <= 0 means fooled."""
    logits = tf.stop_gradient(tf.cast(model(tf.stop_gradient(x), training=False), tf.float32))
    true = tf.gather(logits, labels, batch_dims=1)
    others = tf.where(tf.one_hot(labels, tf.shape(logits)[-1]) > 0, -math.inf, logits)
    return true - tf.reduce_max(others, axis=-1)


def _initial(model, x, labels, eps, seed):
    """Vertical stripes: every column of every channel moved by ±eps (the paper's initialisation)."""
    shape = tf.stack([tf.shape(x)[0], 1, tf.shape(x)[2], tf.shape(x)[3]])
    signs = tf.where(tf.random.stateless_uniform(shape, seed) < 0.5, -1.0, 1.0)
    x_best = tf.clip_by_value(x + eps * signs, 0.0, 1.0)
    return x_best, _margin(model, x_best, labels)


def _query(model, x, x_best, margin, labels, active, eps, size, seed):
    """One query for each image in `active` (indices, (A,)): a size×size square at a random place gets a
    random ±2·eps per channel on top of the image's best point, projected back into the ball and [0, 1];
    kept when the margin drops (or the image is fooled)."""
    x_now, best_now, margin_now = (tf.gather(t, active) for t in (x, x_best, margin))
    count, height, width, channels = (tf.shape(x_now)[axis] for axis in range(4))
    top = tf.random.stateless_uniform([count], seed, maxval=height - size + 1, dtype=tf.int32)
    left = tf.random.stateless_uniform([count], tf.random.experimental.stateless_fold_in(seed, 1),
                                       maxval=width - size + 1, dtype=tf.int32)
    rows, columns = tf.range(height)[None, :], tf.range(width)[None, :]
    in_rows = (rows >= top[:, None]) & (rows < top[:, None] + size)
    in_columns = (columns >= left[:, None]) & (columns < left[:, None] + size)
    window = tf.cast(in_rows[:, :, None, None] & in_columns[:, None, :, None], tf.float32)
    uniform = tf.random.stateless_uniform(tf.stack([count, 1, 1, channels]),
                                          tf.random.experimental.stateless_fold_in(seed, 2))
    signs = tf.where(uniform < 0.5, -1.0, 1.0)
    candidate = tf.clip_by_value(best_now + window * 2.0 * eps * signs, x_now - eps, x_now + eps)
    candidate = tf.clip_by_value(candidate, 0.0, 1.0)
    new_margin = _margin(model, candidate, tf.gather(labels, active))
    keep = (new_margin < margin_now) | (new_margin <= 0.0)
    index = active[:, None]
    # 1·a + 0·b is exact and much faster on a CPU than a broadcasting tf.where.
    mask = tf.cast(keep, tf.float32)[:, None, None, None]
    x_best = tf.tensor_scatter_nd_update(x_best, index, mask * candidate + (1.0 - mask) * best_now)
    return x_best, tf.tensor_scatter_nd_update(margin, index, tf.where(keep, new_margin, margin_now))


def square(model, x, y=None, *, eps, norm="inf", queries=5000, p_init=0.8, seed=None):
    """Square attack (Andriushchenko et al. 2020, "Square Attack: a query-efficient black-box adversarial
    attack via random search"), L∞: random search over squares of ±2·eps, started from vertical ±eps
    stripes, minimising the margin z_y − max_{j≠y} z_j. An image stops being queried once it is fooled.

    `queries` counts model calls per image, the initialisation included. Only `norm="inf"` is
    implemented. x (B, H, W, C) float32 in [0, 1] -> float32 images, each within eps of x (L∞) and in
    [0, 1]: the point of lowest margin found (misclassified if any query fooled the model).
    """
    _check_model(model)
    eps = _real("eps", eps, minimum=0)
    queries = _integer("queries", queries, minimum=1)
    p_init = _real("p_init", p_init, minimum=0, strict=True)
    if p_init > 1:
        raise ValueError(f"`p_init` must be in (0, 1]. Received: p_init={p_init}")
    if norm not in _NORMS:
        raise ValueError(f'`norm` must be "inf" or "2". Received: norm={norm!r}')
    if _NORMS[norm] != "inf":
        raise ValueError(f'Only the L-inf Square attack is implemented. Received: norm={norm!r}')
    if not tf.executing_eagerly():
        raise ValueError("`square` runs eagerly (its loop stops early per image); call it outside a tf.function")
    x = _images(x)
    if x.shape.rank != 4:
        raise ValueError(f"`x` must be images (B, H, W, C). Received: x with shape={x.shape}")
    labels = _labels(model, x, y, targeted=False)
    if eps == 0:
        return x
    seed = _seed(seed)
    height, width, channels = x.shape[1:]
    x_best, margin = _runner(model, "square_init", _initial)(x, labels, tf.constant(eps), seed)
    query = _runner(model, "square_query", _query)
    for number in range(1, queries):
        active = tf.where(margin > 0.0)[:, 0]
        if int(tf.size(active)) == 0:
            break
        # The square's side: sqrt(p · pixels), at least 1 and smaller than the image.
        side = round(math.sqrt(square_fraction(p_init, number - 1) * height * width))
        side = min(max(side, 1), min(height, width) - 1) if min(height, width) > 1 else 1
        x_best, margin = query(x, x_best, margin, labels, active, tf.constant(eps), tf.constant(side),
                               tf.random.experimental.stateless_fold_in(seed, number))
    return x_best
