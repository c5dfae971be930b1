"""load_dataset: digits offline for real; CIFAR and SVHN through monkeypatched loaders (no downloads)."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import scipy.io

import data
from data import datasets
from tests.test_tiny_imagenet import WNIDS, write_tiny_imagenet


def test_public_names():
    assert data.DATASETS == ("tiny-imagenet", "cifar10", "cifar100", "svhn", "digits")
    assert callable(data.load_dataset) and data.Split is datasets.Split
    assert data.cache_dir().is_dir()


def test_unknown_name_and_split():
    with pytest.raises(ValueError, match="mnist.*tiny-imagenet, cifar10"):
        data.load_dataset("mnist", "train")
    with pytest.raises(ValueError, match="split='test'"):
        data.load_dataset("digits", "test")
    with pytest.raises(ValueError, match="image_size"):
        data.load_dataset("digits", "train", image_size=(0, 8))


def test_digits():
    train = data.load_dataset("digits", "train")
    val = data.load_dataset("digits", "val")
    assert (len(train), len(val)) == (1437, 360)
    assert train.images.shape[1:] == (32, 32, 3) and train.images.dtype == np.uint8
    assert train.wnids == [str(digit) for digit in range(10)] and train.boxes is None
    assert train.images.max() == 255 and (train.images[..., 0] == train.images[..., 2]).all()
    # stratified: every digit is about 20% of its class in val
    in_val, in_train = np.bincount(val.labels, minlength=10), np.bincount(train.labels, minlength=10)
    counts = in_val / (in_val + in_train)
    assert np.all(np.abs(counts - 0.2) < 0.02)
    np.testing.assert_array_equal(data.load_dataset("digits", "val").images, val.images)  # fixed split


def test_digits_size_classes_and_per_class():
    split = data.load_dataset("digits", "train", classes=3, per_class=5, image_size=(8, 8))
    assert split.images.shape == (15, 8, 8, 3) and np.bincount(split.labels).tolist() == [5, 5, 5]
    assert split.wnids == ["0", "1", "2"] and split.num_classes == 3
    assert set(np.unique(split.images)) <= {round(value * 255 / 16) for value in range(17)}


def test_select_keeps_the_first_images_of_each_class_in_order():
    images = np.arange(8, dtype=np.uint8).reshape(8, 1, 1, 1).repeat(3, axis=-1)
    split = data.Split(images, np.array([1, 0, 1, 2, 0, 1, 0, 2], np.int32), ["a", "b", "c"], ["A", "B", "C"])
    chosen = datasets.select(split, classes=2, per_class=2)
    assert chosen.images[:, 0, 0, 0].tolist() == [0, 1, 2, 4]
    assert chosen.wnids == ["a", "b"] and chosen.class_names == ["A", "B"]
    with pytest.raises(ValueError, match="classes=4"):
        datasets.select(split, classes=4)


def _fake_cifar(num_classes):
    rng = np.random.default_rng(0)
    train = (rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8), (np.arange(20) % num_classes).reshape(-1, 1))
    test = (rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8), (np.arange(6) % num_classes).reshape(-1, 1))
    return train, test


def test_cifar10_from_keras_loader(monkeypatch):
    import keras

    train, test = _fake_cifar(10)
    monkeypatch.setattr(keras.datasets.cifar10, "load_data", lambda: (train, test))
    split = data.load_dataset("cifar10", "val")
    np.testing.assert_array_equal(split.images, test[0])
    assert split.labels.dtype == np.int32 and split.labels.tolist() == test[1].ravel().tolist()
    assert split.wnids[:2] == ["airplane", "automobile"] and split.num_classes == 10
    resized = data.load_dataset("cifar10", "train", classes=2, per_class=2, image_size=(40, 36))
    assert resized.images.shape == (4, 40, 36, 3) and resized.labels.tolist() == [0, 1, 0, 1]


def test_cifar100_from_keras_loader(monkeypatch):
    import keras

    train, test = _fake_cifar(100)
    monkeypatch.setattr(keras.datasets.cifar100, "load_data", lambda label_mode: (train, test))
    split = data.load_dataset("cifar100", "train")
    assert split.num_classes == 100 and split.wnids[0] == "apple" and split.wnids[-1] == "worm"
    assert len(set(split.wnids)) == 100 and split.labels.tolist() == list(range(20))


def test_cifar10_from_local_pickles(tmp_path):
    images = np.arange(4 * 3072, dtype=np.int64).reshape(4, 3072) % 256
    with open(tmp_path / "test_batch", "wb") as handle:
        pickle.dump({b"data": images.astype(np.uint8), b"labels": [3, 1, 4, 1]}, handle)
    split = data.load_dataset("cifar10", "val", root=tmp_path)
    assert split.images.shape == (4, 32, 32, 3) and split.labels.tolist() == [3, 1, 4, 1]
    # the pickle is channel-first: pixel (0, 0) takes bytes 0, 1024 and 2048
    assert split.images[0, 0, 0].tolist() == [0, 1024 % 256, 2048 % 256]
    with pytest.raises(FileNotFoundError, match="data_batch_1"):
        data.load_dataset("cifar10", "train", root=tmp_path)


def _write_batch(path, content, protocol=pickle.DEFAULT_PROTOCOL):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(content, protocol=protocol))


def _cifar_batch(count=4, labels=None):
    """A batch in the official CIFAR-10 layout: uint8 (N, 3072) channel-first pixels and a list of labels."""
    pixels = (np.arange(count * 3072) % 251).astype(np.uint8).reshape(count, 3072)
    return {b"batch_label": b"testing batch 1 of 1", b"data": pixels,
            b"labels": list(range(count)) if labels is None else labels,
            b"filenames": [f"image_{index}.png".encode() for index in range(count)]}


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_batches_in_every_pickle_protocol_are_read(tmp_path, protocol):
    batch = _cifar_batch(labels=[3, 1, 4, 1])
    _write_batch(tmp_path / "test_batch", batch, protocol=protocol)
    split = data.load_dataset("cifar10", "val", root=tmp_path)
    assert split.labels.tolist() == [3, 1, 4, 1]
    np.testing.assert_array_equal(split.images, batch[b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


def test_cifar_batch_with_python2_numpy_names(tmp_path):
    # The official files were written by Python 2 with numpy.core.multiarray._reconstruct.
    content = pickle.dumps(_cifar_batch(labels=[0, 1, 2, 3]), protocol=2)
    assert b"cnumpy._core.multiarray\n_reconstruct\n" in content
    content = content.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    folder = tmp_path / "cifar-10-batches-py"  # the official subfolder, found from its parent
    folder.mkdir()
    (folder / "test_batch").write_bytes(content)
    assert data.load_dataset("cifar10", "val", root=tmp_path).labels.tolist() == [0, 1, 2, 3]


def test_cifar100_from_a_local_folder(tmp_path):
    batch = _cifar_batch(labels=None)
    batch[b"fine_labels"] = [99, 0, 5, 7]
    _write_batch(tmp_path / "test", batch)
    split = data.load_dataset("cifar100", "val", root=tmp_path)
    assert split.labels.tolist() == [99, 0, 5, 7] and split.wnids[99] == "worm"


@pytest.mark.parametrize("change, message", [
    (lambda batch: batch.pop(b"labels"), "has no labels entry"),
    (lambda batch: batch.update({b"data": batch[b"data"][:, :100]}), "data must be a uint8 array"),
    (lambda batch: batch.update({b"data": batch[b"data"].astype(np.float32)}), "data must be a uint8 array"),
    (lambda batch: batch.update({b"labels": [0, 1, 2]}), "4 images but 3 labels"),
    (lambda batch: batch.update({b"labels": [0, 1, 2, 10]}), r"labels must be in \[0, 10\)"),
])
def test_malformed_cifar_batch_is_named(tmp_path, change, message):
    batch = _cifar_batch()
    change(batch)
    _write_batch(tmp_path / "test_batch", batch)
    with pytest.raises(ValueError, match=f"test_batch.*{message}"):
        data.load_dataset("cifar10", "val", root=tmp_path)
    (tmp_path / "test_batch").write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(ValueError, match="test_batch is not a CIFAR batch: it holds a list"):
        data.load_dataset("cifar10", "val", root=tmp_path)
    (tmp_path / "test_batch").write_bytes(b"\x89PNG not a pickle")
    with pytest.raises(ValueError, match="test_batch is not a CIFAR batch"):
        data.load_dataset("cifar10", "val", root=tmp_path)


def test_cifar_download_failure(monkeypatch):
    import keras

    def offline():
        raise Exception("URL fetch failure")

    monkeypatch.setattr(keras.datasets.cifar10, "load_data", offline)
    with pytest.raises(data.DatasetUnavailableError, match="--dataset digits"):
        data.load_dataset("cifar10", "train")


def _write_svhn(path, count=5):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (32, 32, 3, count), dtype=np.uint8)
    labels = np.array([10, 1, 2, 10, 9][:count]).reshape(-1, 1)  # 10 means the digit 0
    scipy.io.savemat(path, {"X": images, "y": labels})
    return images, labels


def test_svhn_through_get_file(tmp_path, monkeypatch):
    import keras

    images, _ = _write_svhn(tmp_path / "test.mat")
    requested = []

    def fake_get_file(**kwargs):
        requested.append(kwargs)
        return str(tmp_path / "test.mat")

    monkeypatch.setattr(keras.utils, "get_file", fake_get_file)
    split = data.load_dataset("svhn", "val")
    assert requested[0]["origin"].endswith("test_32x32.mat") and requested[0]["file_hash"]
    assert split.labels.tolist() == [0, 1, 2, 0, 9] and split.wnids[0] == "0"
    np.testing.assert_array_equal(split.images[2], images[..., 2])


def test_svhn_from_local_folder(tmp_path):
    _write_svhn(tmp_path / "train_32x32.mat")
    split = data.load_dataset("svhn", "train", root=tmp_path, per_class=1)
    assert split.labels.tolist() == [0, 1, 2, 9]  # the first image of each digit, in order
    with pytest.raises(FileNotFoundError, match="test_32x32.mat"):
        data.load_dataset("svhn", "val", root=tmp_path)


def test_tiny_imagenet_resized_boxes_scale(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "cache"))
    root = write_tiny_imagenet(tmp_path / "tiny-imagenet-200")
    plain = data.load_dataset("tiny-imagenet", "train", root=root, classes=2)
    split = data.load_dataset("tiny-imagenet", "train", root=root, classes=2, image_size=(72, 72))
    assert split.images.shape == (10, 72, 72, 3) and split.wnids == WNIDS[:2]
    np.testing.assert_array_equal(split.boxes, np.round(plain.boxes * 72 / 64).astype(np.int32))
