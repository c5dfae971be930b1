"""Every dataset the zoo trains on, behind one call: ``load_dataset(name, split) -> Split``."""
from __future__ import annotations

import os
import pathlib

import numpy as np

from common import checks
from data import cifar, tiny_imagenet
from data.cache import DatasetUnavailableError, cache_dir, one_line
from data.decode import resize_array
from data.split import Split

DATASETS = ("tiny-imagenet", "cifar10", "cifar100", "svhn", "digits")
# What ``root`` may be for each dataset; digits is built into scikit-learn and reads no folder.
ROOTS = {
    "tiny-imagenet": "a Tiny ImageNet folder, tiny-imagenet-200.zip or a folder of its zip parts",
    "cifar10": "the extracted CIFAR-10 python version (data_batch_1..5, test_batch)",
    "cifar100": "the extracted CIFAR-100 python version (train, test)",
    "svhn": "a folder holding train_32x32.mat and test_32x32.mat",
}
SPLITS = ("train", "val")
DIGITS_IMAGE_SIZE = (32, 32)

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR100_CLASSES = """apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus
butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup
dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion
lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear
pickup_truck pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew
skunk skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television
tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm""".split()

# The cropped-digits format of SVHN (Netzer et al., 2011), with the md5 of each file.
SVHN_URL = "http://ufldl.stanford.edu/housenumbers/{}_32x32.mat"
SVHN_MD5 = {"train": "e26dedcc434d2e4c54c9b2d4a06d8373", "test": "eb5a983be6a315427106f1b164d9cef3"}

OFFLINE_HINT = "pass a local copy with --data PATH, or use --dataset digits, which works offline"


def load_dataset(name: str, split: str, *, root=None, classes: int | None = None,
                 per_class: int | None = None, image_size=None) -> Split:
    """Load ``split`` ("train" or "val") of dataset ``name`` (one of DATASETS) as a uint8 Split.

    "val" is the test split of CIFAR and SVHN and a fixed stratified 20% of digits. classes=N
    keeps the first N classes, per_class=K the first K images of each class, and
    image_size=(H, W) resizes every image with PIL's Lanczos filter.

    root: a local copy (see ROOTS), or None to download (Tiny ImageNet, CIFAR, SVHN). ``root``
    may come from a run's config, so it is read as untrusted input: CIFAR batches go through
    an unpickler that builds only dicts, lists, bytes and plain arrays, images are opened only
    as JPEG or PNG, zips are extracted only inside the cache, and anything else is refused with
    an error naming the file. digits takes no root.
    """
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}. Known datasets: {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}. Received: split={split!r}")
    if image_size is not None:
        image_size = _check_size(image_size)
    _check_root(name, root)
    if name == "tiny-imagenet" or (name == "svhn" and root is None):
        cache_dir()  # a cache that cannot be written is reported before any data is read
    if name == "tiny-imagenet":
        result = tiny_imagenet.load(root, split, classes=classes, per_class=per_class)
    else:
        loader = {"cifar10": _cifar10, "cifar100": _cifar100, "svhn": _svhn, "digits": _digits}[name]
        if name == "digits" and image_size is None:
            image_size = DIGITS_IMAGE_SIZE
        result = select(loader(split, root), classes=classes, per_class=per_class)
    if image_size is not None and result.image_shape[:2] != image_size:
        result = resize(result, image_size)
    return result


def _check_root(name: str, root) -> None:
    if root is None:
        return
    if isinstance(root, bytes) or not isinstance(root, (str, os.PathLike)):
        raise ValueError(f"root must be a path. Received: root={root!r}")
    if not str(root).strip() or "\0" in str(root):
        raise ValueError(f"root must be a path. Received: root={str(root)!r}")
    if name not in ROOTS:
        raise ValueError(f"{name} is built in and reads no folder or file. Received: root={str(root)!r}")


def _check_size(image_size) -> tuple:
    try:
        height, width = (int(value) for value in image_size)
    except (TypeError, ValueError):
        raise ValueError(f"image_size must be (height, width). Received: image_size={image_size!r}") from None
    if height < 1 or width < 1:
        raise ValueError(f"image_size must be positive. Received: image_size={image_size!r}")
    return height, width


def select(split: Split, *, classes: int | None = None, per_class: int | None = None) -> Split:
    """Keep the first ``classes`` classes and the first ``per_class`` images of each, in order."""
    for name, value in (("classes", classes), ("per_class", per_class)):
        if value is not None:
            checks.positive_int(name, value)
    if classes is not None and classes > split.num_classes:
        raise ValueError(f"classes={classes} but the dataset has only {split.num_classes} classes")
    num_classes = split.num_classes if classes is None else classes
    keep = split.labels < num_classes
    if per_class is not None:
        # rank of each image within its class, in dataset order
        order = np.argsort(split.labels, kind="stable")
        sorted_labels = split.labels[order]
        starts = np.searchsorted(sorted_labels, sorted_labels, side="left")
        rank = np.empty(len(split), np.int64)
        rank[order] = np.arange(len(split)) - starts
        keep &= rank < per_class
    if keep.all() and num_classes == split.num_classes:
        return split
    return Split(
        images=split.images[keep], labels=split.labels[keep],
        wnids=list(split.wnids[:num_classes]), class_names=list(split.class_names[:num_classes]),
        boxes=None if split.boxes is None else split.boxes[keep],
    )


def resize(split: Split, image_size: tuple) -> Split:
    """Every image resized to (H, W) with Lanczos; boxes are scaled with them."""
    height, width = image_size
    images = np.empty((len(split), height, width, 3), np.uint8)
    for index, image in enumerate(split.images):
        images[index] = resize_array(image, image_size)
    boxes = split.boxes
    if boxes is not None:
        old_height, old_width = split.image_shape[:2]
        scale = np.array([width / old_width, height / old_height] * 2)
        boxes = np.round(boxes * scale).astype(np.int32)
    return Split(images=images, labels=split.labels, wnids=split.wnids, class_names=split.class_names, boxes=boxes)


def _from_arrays(images, labels, names) -> Split:
    return Split(
        images=np.ascontiguousarray(images, dtype=np.uint8),
        labels=np.asarray(labels).reshape(-1).astype(np.int32),
        wnids=list(names), class_names=list(names), boxes=None,
    )


# ---------------------------------------------------------------------------------------------
# CIFAR: keras.datasets downloads and caches; root may instead be the extracted "python version",
# read by data.cifar without unpickling anything but what the format holds


def _cifar10(split: str, root) -> Split:
    if root is not None:
        images, labels = cifar.load(root, "cifar10", split)
    else:
        import keras

        train, test = _download(keras.datasets.cifar10.load_data, "CIFAR-10")
        images, labels = train if split == "train" else test
    return _from_arrays(images, labels, CIFAR10_CLASSES)


def _cifar100(split: str, root) -> Split:
    if root is not None:
        images, labels = cifar.load(root, "cifar100", split)
    else:
        import keras

        train, test = _download(lambda: keras.datasets.cifar100.load_data(label_mode="fine"), "CIFAR-100")
        images, labels = train if split == "train" else test
    return _from_arrays(images, labels, CIFAR100_CLASSES)


def _download(function, title: str):
    try:
        return function()
    except Exception as error:
        raise DatasetUnavailableError(f"could not download {title} ({one_line(error)}); {OFFLINE_HINT}") from None


def _existing(root) -> pathlib.Path:
    path = pathlib.Path(root).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"dataset folder not found: {path}")
    if not path.is_dir():
        raise NotADirectoryError(f"{path} is not a folder; SVHN's root must be {ROOTS['svhn']}")
    return path


# ---------------------------------------------------------------------------------------------
# SVHN and digits


def _svhn(split: str, root) -> Split:
    import scipy.io

    part = "train" if split == "train" else "test"
    if root is not None:
        path = _existing(root) / f"{part}_32x32.mat"
        if not path.is_file():
            raise FileNotFoundError(f"SVHN file not found: {path}")
    else:
        import keras

        path = _download(lambda: keras.utils.get_file(
            fname=f"svhn_{part}_32x32.mat", origin=SVHN_URL.format(part), file_hash=SVHN_MD5[part],
            hash_algorithm="md5", cache_dir=str(cache_dir()), cache_subdir="",
        ), "SVHN")
    try:
        content = scipy.io.loadmat(path)
    except Exception as error:
        raise ValueError(f"cannot read SVHN file {path}: {one_line(error)}") from None
    images, labels = content.get("X"), content.get("y")
    well_formed = (isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 4
                   and images.shape[2] == 3 and isinstance(labels, np.ndarray) and labels.size == images.shape[3])
    if not well_formed:
        raise ValueError(f"{path} is not an SVHN file: expected X, uint8 (32, 32, 3, N), and y, (N, 1)")
    return svhn_from_mat(content)


def svhn_from_mat(content: dict) -> Split:
    """SVHN's .mat layout: X is (32, 32, 3, N), y is (N, 1) with digit 0 stored as label 10."""
    images = np.transpose(content["X"], (3, 0, 1, 2))
    labels = np.asarray(content["y"]).reshape(-1) % 10
    return _from_arrays(images, labels, [str(digit) for digit in range(10)])


def _digits(split: str, root) -> Split:
    """scikit-learn's 8x8 digits (offline): a fixed stratified 80/20 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    indices = np.arange(len(digits.target))
    train, val = train_test_split(indices, test_size=0.2, stratify=digits.target, random_state=0)
    chosen = np.sort(train if split == "train" else val)
    gray = np.round(digits.images[chosen] * (255.0 / 16.0)).astype(np.uint8)  # 0..16 -> 0..255
    images = np.repeat(gray[..., None], 3, axis=-1)
    return _from_arrays(images, digits.target[chosen], [str(digit) for digit in range(10)])
