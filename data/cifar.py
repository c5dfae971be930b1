"""CIFAR-10/100 from a local copy of the official "python version", read without running its code.

The official batches are pickles (a dict of bytes keys, a uint8 ndarray of pixels and lists of
labels and file names). ``pickle.load`` would call any function a file names, so a folder that a
run's config points at could run code; these batches are read by an unpickler that builds only
what the format holds and refuses everything else, naming the file.
"""
from __future__ import annotations

import codecs
import io
import pathlib
import pickle

import numpy as np

# The official folder names, inside the official archives (cifar-10-python.tar.gz, cifar-100-python.tar.gz).
FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
FILES = {
    ("cifar10", "train"): [f"data_batch_{number}" for number in range(1, 6)],
    ("cifar10", "val"): ["test_batch"],
    ("cifar100", "train"): ["train"],
    ("cifar100", "val"): ["test"],
}
LABEL_KEYS = {"cifar10": b"labels", "cifar100": b"fine_labels"}
NUM_CLASSES = {"cifar10": 10, "cifar100": 100}
IMAGE_BYTES = 3 * 32 * 32
MAX_BATCH_BYTES = 1 << 30  # the largest official batch (CIFAR-100 train) is about 160 MB


def _array_reconstructor():
    """numpy's own ndarray rebuild function, wherever this numpy version keeps it."""
    return np.zeros(1).__reduce__()[0]


def _plain_dtype(*args):
    """np.dtype, refusing object dtypes (whose elements would be arbitrary Python objects)."""
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise pickle.UnpicklingError(f"object arrays are not part of the CIFAR format (dtype {dtype})")
    return dtype


def _from_buffer(buffer, dtype, shape, order="C"):
    """How protocol 5 spells an ndarray (numpy's ``_frombuffer``), for plain bytes and dtypes only."""
    if not isinstance(buffer, (bytes, bytearray, pickle.PickleBuffer)) or not isinstance(dtype, np.dtype) \
            or dtype.hasobject or order not in ("C", "F"):
        raise pickle.UnpicklingError("an ndarray in a CIFAR batch must be plain bytes of a plain dtype")
    return np.frombuffer(buffer, dtype).reshape(shape, order=order)


def _latin1_bytes(text, encoding="latin1"):
    """How a protocol-2 pickle written by Python 3 spells a bytes object; nothing else is allowed."""
    if not isinstance(text, str) or codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError("only latin-1 text may be turned into bytes in a CIFAR batch")
    return text.encode("latin1")


class BatchUnpickler(pickle.Unpickler):
    """An unpickler for CIFAR batches: dicts, lists, bytes, numbers and plain ndarrays, nothing else.

    Dicts, lists, strings, bytes and numbers are pickle opcodes; the only names a batch refers
    to are numpy's ndarray rebuild functions, ``ndarray`` and ``dtype`` (and ``_codecs.encode``
    for bytes in a protocol-2 pickle written by Python 3), so those are the only globals admitted,
    each through a wrapper that accepts only plain data.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _array_reconstructor,
        ("numpy._core.multiarray", "_reconstruct"): _array_reconstructor,
        ("numpy.core.numeric", "_frombuffer"): lambda: _from_buffer,
        ("numpy._core.numeric", "_frombuffer"): lambda: _from_buffer,
        ("numpy", "ndarray"): lambda: np.ndarray,
        ("numpy", "dtype"): lambda: _plain_dtype,
        ("_codecs", "encode"): lambda: _latin1_bytes,
    }

    def find_class(self, module, name):
        make = self.ALLOWED.get((module, name))
        if make is None:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a CIFAR batch never holds")
        return make()

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("it uses persistent ids, which a CIFAR batch never holds")


def read_batch(path: pathlib.Path) -> dict:
    """One official batch file as a dict with bytes keys; ValueError naming ``path`` if it is anything else."""
    size = path.stat().st_size
    if size > MAX_BATCH_BYTES:
        raise ValueError(f"{path} is {size} bytes, far more than any CIFAR batch; refusing to read it")
    try:
        batch = BatchUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            UnicodeDecodeError, OverflowError, MemoryError) as error:
        raise ValueError(f"{path} is not a CIFAR batch, refusing to read it: {error}") from None
    if not isinstance(batch, dict):
        raise ValueError(f"{path} is not a CIFAR batch: it holds a {type(batch).__name__}, not a dict")
    return batch


def batch_arrays(batch: dict, path: pathlib.Path, dataset: str) -> tuple:
    """uint8 (N, 32, 32, 3) images and int (N,) labels from one batch, after checking their shapes and range."""
    label_key = LABEL_KEYS[dataset]
    missing = [key.decode() for key in (b"data", label_key) if key not in batch]
    if missing:
        raise ValueError(f"{path} is not a {dataset} batch: it has no {' or '.join(missing)} entry")
    pixels, labels = batch[b"data"], batch[label_key]
    if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8 or pixels.ndim != 2 \
            or pixels.shape[1] != IMAGE_BYTES:
        shape = getattr(pixels, "shape", None)
        raise ValueError(f"{path}: data must be a uint8 array of shape (N, {IMAGE_BYTES}). "
                         f"Received: {type(pixels).__name__} {getattr(pixels, 'dtype', '')} {shape}")
    try:
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: labels must be a list of integers") from None
    if len(labels) != len(pixels):
        raise ValueError(f"{path}: {len(pixels)} images but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= NUM_CLASSES[dataset]):
        raise ValueError(f"{path}: labels must be in [0, {NUM_CLASSES[dataset]}). "
                         f"Received: {labels.min()}..{labels.max()}")
    # The format stores each image channel-first: 1024 red bytes, then green, then blue.
    images = pixels.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return images, labels


def batch_folder(root, dataset: str) -> pathlib.Path:
    """The folder holding the batch files: ``root`` itself, or its official subfolder."""
    root = pathlib.Path(root).expanduser()
    names = FILES[dataset, "train"] + FILES[dataset, "val"]
    expected = f"the extracted python version of {dataset} ({', '.join(names)}, or a {FOLDERS[dataset]} folder)"
    if not root.exists():
        raise FileNotFoundError(f"{dataset} folder not found: {root}")
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a folder; --data for {dataset} must be {expected}")
    for candidate in (root, root / FOLDERS[dataset]):
        if any((candidate / name).is_file() for name in names):
            return candidate
    raise FileNotFoundError(f"{root} is not a {dataset} folder: expected {expected}")


def load(root, dataset: str, split: str) -> tuple:
    """uint8 (N, 32, 32, 3) images and int (N,) labels of ``split`` from the local copy at ``root``."""
    folder = batch_folder(root, dataset)
    images, labels = [], []
    for name in FILES[dataset, split]:
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"{dataset} batch file not found: {path}")
        batch_images, batch_labels = batch_arrays(read_batch(path), path, dataset)
        images.append(batch_images)
        labels.append(batch_labels)
    return np.concatenate(images), np.concatenate(labels)
