"""Accuracy on held-out images under an attack: the one implementation the fast-AT guard, the
tuner's robust objective and evaluate.py share."""
from __future__ import annotations

import numpy as np
import tensorflow as tf


def accuracy(model, images, labels, attack=None, batch_size: int = 128) -> float:
    """Top-1 accuracy of ``model`` (logits out) on float [0, 1] ``images`` after
    ``attack(model, x, y)`` (None: clean), in batches, with the model in inference mode."""
    images, labels = np.asarray(images), np.asarray(labels)
    if len(images) != len(labels) or len(images) == 0:
        raise ValueError(f"images and labels must be non-empty and of one length. Received: {len(images)} images, "
                         f"{len(labels)} labels")
    correct = 0
    for start in range(0, len(images), batch_size):
        x = tf.convert_to_tensor(images[start:start + batch_size], tf.float32)
        y = tf.convert_to_tensor(labels[start:start + batch_size], tf.int32)
        if attack is not None:
            x = attack(model, x, y)
        predicted = tf.argmax(model(x, training=False), -1, output_type=tf.int32)
        correct += int(tf.reduce_sum(tf.cast(predicted == y, tf.int32)))
    return correct / len(images)


def pgd_attack(eps: float, steps: int = 10, step_size: float | None = None, restarts: int = 1, seed: int = 0):
    """``attack(model, x, y)`` running L-inf PGD; the step size defaults to Madry et al.'s 2.5·eps/steps."""
    from augment import attacks

    size = step_size if step_size is not None else 2.5 * eps / steps
    return lambda model, x, y: attacks.pgd(model, x, y, eps=eps, step_size=size, steps=steps, restarts=restarts,
                                           seed=seed)
