"""make_dataset: float batches in [0, 1], seeded shuffling and per-batch augmentation seeds."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from data import Split
from data.pipeline import make_dataset, steps_per_epoch


def _split(count=10, size=4):
    # image i is filled with the value i, so a batch shows which examples it holds
    images = np.broadcast_to(np.arange(count, dtype=np.uint8)[:, None, None, None], (count, size, size, 3)).copy()
    return Split(images, (np.arange(count) % 3).astype(np.int32), ["a", "b", "c"], ["A", "B", "C"])


def _ids(dataset):
    return [(images[:, 0, 0, 0].numpy() * 255).round().astype(int).tolist() for images, _ in dataset]


def _noise(images, seed):
    # a simple augmentation whose result depends only on the seed it is given
    return images + tf.random.stateless_uniform(tf.shape(images), seed=seed, maxval=0.001)


def test_evaluation_batches_keep_order_and_types():
    split = _split(count=10)
    batches = list(make_dataset(split, 4, training=False))
    assert [len(labels) for _, labels in batches] == [4, 4, 2]
    images, labels = batches[0]
    assert images.dtype == tf.float32 and images.shape == (4, 4, 4, 3) and labels.dtype == tf.int32
    assert _ids(make_dataset(split, 4, training=False)) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    np.testing.assert_allclose(batches[2][0].numpy()[:, 0, 0, 0], [8 / 255, 9 / 255], rtol=1e-6)
    assert np.concatenate([labels.numpy() for _, labels in batches]).tolist() == split.labels.tolist()


def test_training_shuffles_every_epoch_and_covers_everything():
    dataset = make_dataset(_split(count=12), 4, training=True, seed=1)
    first, second = _ids(dataset), _ids(dataset)
    assert sorted(sum(first, [])) == list(range(12)) and sorted(sum(second, [])) == list(range(12))
    assert first != second and sum(first, []) != list(range(12))


def test_labels_stay_with_their_images():
    split = _split(count=9)
    for images, labels in make_dataset(split, 4, training=True, augment=_noise, seed=3):
        ids = np.floor(images.numpy()[:, 0, 0, 0] * 255 + 1e-3).astype(int)
        assert labels.numpy().tolist() == (ids % 3).tolist()


def test_same_seed_same_batches():
    split = _split(count=10)

    def take(seed):
        dataset = make_dataset(split, 4, training=True, augment=_noise, seed=seed)
        return [images.numpy() for images, _ in dataset]

    first, again, other = take(7), take(7), take(8)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert any(a.shape != b.shape or not np.array_equal(a, b) for a, b in zip(first, other))


def test_augment_gets_a_distinct_int32_seed_per_batch_and_epoch():
    def seed_out(images, seed):
        # checked while tracing: the contract is an int32 tensor of shape (2,)
        assert seed.dtype == tf.int32 and seed.shape == (2,)
        return tf.broadcast_to(tf.cast(seed[1], tf.float32), tf.shape(images))

    split = _split(count=8)
    repeated = make_dataset(split, 4, training=True, augment=seed_out, seed=5, repeat=True)
    values = [int(images.numpy()[0, 0, 0, 0]) for images, _ in repeated.take(6)]  # three epochs
    assert len(set(values)) == 6
    once = make_dataset(split, 4, training=True, augment=seed_out, seed=5)
    epochs = [[int(images.numpy()[0, 0, 0, 0]) for images, _ in once] for _ in range(3)]
    assert len({value for epoch in epochs for value in epoch}) > 2  # not the same seeds every epoch


def test_a_stream_started_later_gives_the_batches_the_whole_stream_gives_there():
    # what a resumed run trains on: the same order and the same augmentation draws, across passes
    split = _split(count=10)

    def stream(start_batch):
        dataset = make_dataset(split, 4, training=True, augment=_noise, seed=2, repeat=True, start_batch=start_batch)
        return [images.numpy() for images, _ in dataset.take(9 - start_batch)]

    whole, later = stream(0), stream(5)  # batch 5 lies in the second pass over the 10 images
    for a, b in zip(whole[5:], later, strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="start_batch=-1"):
        make_dataset(split, 4, training=True, start_batch=-1)


def test_no_augmentation_when_not_training():
    def fail(images, seed):
        raise AssertionError("augment called")

    images, _ = next(iter(make_dataset(_split(), 4, training=False, augment=fail)))
    assert float(tf.reduce_max(images)) <= 1.0


def test_steps_per_epoch_and_bad_batch_size():
    assert steps_per_epoch(10, 4) == 3 and steps_per_epoch(8, 4) == 2 and steps_per_epoch(0, 4) == 1
    with pytest.raises(ValueError, match="batch_size=0"):
        make_dataset(_split(), 0, training=False)
