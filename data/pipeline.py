"""From a uint8 Split to a tf.data.Dataset of float32 [0, 1] batches, shuffled and augmented."""
from __future__ import annotations

import math

import tensorflow as tf

from data.split import Split


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    """Batches in one pass over ``num_examples`` (the last one may be smaller)."""
    return max(1, math.ceil(num_examples / batch_size))


def make_dataset(split: Split, batch_size: int, *, training: bool, augment=None, seed: int = 0,
                 repeat: bool = False, start_batch: int = 0) -> tf.data.Dataset:
    """Batches of (float32 [0, 1] (B, H, W, 3), int32 (B,)).

    training=True shuffles with ``seed`` (a new order every pass) and applies
    ``augment(images, batch_seed)`` to whole batches, where batch_seed is an int32 (2,) tensor
    derived from ``seed`` and the batch, so the same seed gives the same batches.
    repeat=True never ends; the per-batch seed then keeps changing from epoch to epoch.
    start_batch drops the stream's first batches before any image is loaded: a resumed run goes on
    with exactly the batches (order and augmentation draws) an uninterrupted run trains on there.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive. Received: batch_size={batch_size}")
    if len(split) == 0:
        raise ValueError("cannot make a dataset from an empty split")
    if start_batch < 0:
        raise ValueError(f"start_batch must be 0 or more. Received: start_batch={start_batch}")
    # The arrays become two tensors once; the dataset itself only moves indices. A shuffle
    # buffer of whole images would hold a second copy of the data (1.2 GB for Tiny ImageNet).
    images = tf.convert_to_tensor(split.images, dtype=tf.uint8)
    labels = tf.convert_to_tensor(split.labels, dtype=tf.int32)
    count = len(split)
    dataset = tf.data.Dataset.range(count)
    if training:
        dataset = dataset.shuffle(count, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    # Skipped after numbering and before loading: skipping costs only the shuffled indices.
    dataset = dataset.batch(batch_size).enumerate().skip(start_batch)
    augmenting = training and augment is not None
    base = tf.constant(seed, tf.int64)

    def load_batch(batch_index, indices):
        batch_images = tf.cast(tf.gather(images, indices), tf.float32) / 255.0
        batch_labels = tf.gather(labels, indices)
        if not augmenting:
            return batch_images, batch_labels
        # Unique per batch and fixed by `seed`, so runs repeat exactly. The batch's first
        # shuffled index makes it differ between epochs too when the dataset restarts each
        # epoch (repeat=False), where batch_index alone would repeat the same draws.
        second = (batch_index * count + indices[0]) % (2**31 - 1)
        batch_seed = tf.cast(tf.stack([base % (2**31 - 1), second]), tf.int32)
        return augment(batch_images, batch_seed), batch_labels

    dataset = dataset.map(load_batch, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)
