"""Accuracy on held-out images under an attack: the one implementation the fast-AT guard, the
tuner's robust objective and evaluate.py share."""
from __future__ import annotations

import numpy as np
import tensorflow as tf


def accuracy(model, images, labels, attack=None, batch_size: int = 128, *, seed=0, **settings) -> float:
    """Top-1 accuracy of ``model`` (logits out) on float [0, 1] ``images``, in batches, with the model in
    inference mode, after ``attack``: None (clean), a registered attack's name (built with ``settings``,
    e.g. ``accuracy(model, x, y, "pgd", eps=8/255, steps=10)``), or ``attack(model, x, y, seed)``. Every
    batch is attacked with the same ``seed``."""
    images, labels = np.asarray(images), np.asarray(labels)
    if len(images) != len(labels) or len(images) == 0:
        raise ValueError(f"images and labels must be non-empty and of one length. Received: {len(images)} images, "
                         f"{len(labels)} labels")
    if isinstance(attack, str):
        from attacks.registry import make_attack

        attack = make_attack(attack, **settings)
    elif settings:
        raise ValueError(f"Attack settings go with an attack's name. Received: {sorted(settings)} with "
                         f"attack={attack!r}")
    correct = 0
    for start in range(0, len(images), batch_size):
        x = tf.convert_to_tensor(images[start:start + batch_size], tf.float32)
        y = tf.convert_to_tensor(labels[start:start + batch_size], tf.int32)
        if attack is not None:
            x = attack(model, x, y, seed)
        predicted = tf.argmax(model(x, training=False), -1, output_type=tf.int32)
        correct += int(tf.reduce_sum(tf.cast(predicted == y, tf.int32)))
    return correct / len(images)
