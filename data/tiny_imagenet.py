"""Tiny ImageNet-200 (Stanford CS231n): official folder, official zip, or a folder of zip parts.

Labels follow wnids.txt order (not sorted folder names), validation labels come from
val/val_annotations.txt, and every split is decoded once into a uint8 cache so later epochs
and runs never touch a JPEG again.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import re
import zipfile

import numpy as np

from common import checks
from data.cache import (DatasetUnavailableError, atomic_directory, cache_dir, cache_key, content_digest, files_digest,
                        one_line, remove_stale_temporaries, source_identity)
from data.decode import decode_images
from data.extract import extract_once
from data.split import Split

OFFICIAL_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
OFFICIAL_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
META_PART = "tiny-imagenet-200-meta-val.zip"
TRAIN_PART = "tiny-imagenet-200-train-{}.zip"
IMAGES_PER_TRAIN_PART = 100  # part K holds images N in [100(K-1), 100K) of every class
NUM_TRAIN_PARTS = 5
CACHE_FORMAT = 2  # bump when the cached arrays change meaning (2: keyed on the data, not the path)
CACHE_FOLDERS = ("tiny-imagenet-200-arrays", "tiny-imagenet-200-extracted", "tiny-imagenet-200-parts")
SPLITS = ("train", "val")


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where the pieces of one Tiny ImageNet copy live once everything is a plain folder.

    meta: the folder with wnids.txt, words.txt, val/ and train/<wnid>/<wnid>_boxes.txt;
    train_roots: folders that each hold train/<wnid>/images/ (one per extracted zip part,
    or just ``meta`` for the official layout); identity: what the cache key records of the
    source (for zips, each zip's size and mtime); from_zips: the folders are this module's own
    extraction of the zips in ``identity``, so their files change only when a zip does.
    """

    meta: pathlib.Path
    train_roots: tuple
    identity: dict
    from_zips: bool = False


def load(root=None, split: str = "train", classes: int | None = None, per_class: int | None = None) -> Split:
    """Load one split of Tiny ImageNet as uint8 images (N, 64, 64, 3).

    root: a folder in the official layout (holding wnids.txt, or holding tiny-imagenet-200/),
    the official tiny-imagenet-200.zip, a folder of the tiny-imagenet-200-*.zip parts, or None
    to download the official zip. classes=N keeps the first N wnids; per_class=K keeps the
    first K images of each class by image number.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}. Received: split={split!r}")
    for name, value in (("classes", classes), ("per_class", per_class)):
        if value is not None:
            checks.positive_int(name, value)
    remove_leftovers()
    layout = resolve(root, split, per_class)
    wnids = _wnids(layout, classes)
    key = cache_key(format=CACHE_FORMAT, split=split, classes=classes, per_class=per_class, source=layout.identity,
                    data=data_identity(layout, split, wnids, per_class))
    entry = cache_dir() / "tiny-imagenet-200-arrays" / f"{split}-{key}"
    if not entry.is_dir():
        paths, labels, boxes, names = _index(layout, split, wnids, per_class)
        with atomic_directory(entry) as temporary:
            decode_images(paths, temporary / "images.npy", description=f"Decoding Tiny ImageNet {split}")
            np.save(temporary / "labels.npy", labels)
            np.save(temporary / "boxes.npy", boxes)
            (temporary / "meta.json").write_text(json.dumps({"wnids": wnids, "class_names": names}))
    meta = json.loads((entry / "meta.json").read_text())
    return Split(
        images=np.load(entry / "images.npy"),
        labels=np.load(entry / "labels.npy"),
        wnids=meta["wnids"],
        class_names=meta["class_names"],
        boxes=np.load(entry / "boxes.npy"),
    )


def data_identity(layout: Layout, split: str, wnids: list, per_class: int | None) -> dict:
    """What a decoded split is made of, for its cache key: editing any of it gives a new entry.

    The bytes of wnids.txt (whose order is what every label means) and, for "val", of
    val/val_annotations.txt; the size and mtime of words.txt and, for "train", of each class's
    boxes file; and the list of image files the split decodes, with their sizes and mtimes (a
    replaced, added or removed JPEG). Image bytes are not read: one stat per file keeps the
    key cheap enough for every load of the 100,000 training images. For a zip source the
    files are the cache's own extraction, and each zip's size and mtime (``layout.identity``,
    keyed beside this) stand for all of them.
    """
    identity = {"wnids": content_digest(layout.meta / "wnids.txt")}
    if split == "val":
        identity["val_annotations"] = content_digest(layout.meta / "val" / "val_annotations.txt")
    if layout.from_zips:
        return identity  # layout.identity, also in the key, holds each zip's size and mtime
    text_files = [layout.meta / "words.txt"]
    if split == "train":
        paths = [path for _, path in _train_files(layout, wnids, per_class)]
        text_files += [layout.meta / "train" / wnid / f"{wnid}_boxes.txt" for wnid in wnids]
    else:
        paths = _val_index(layout.meta, _all_wnids(layout), len(wnids), per_class)[0]
    identity.update(images=files_digest(paths), text_files=files_digest(path for path in text_files if path.is_file()))
    return identity


def remove_leftovers() -> list:
    """Remove what killed decodes and extractions left in the cache (``.NAME.tmp-*`` folders); return them."""
    cache = cache_dir()
    folders = [cache / name for name in CACHE_FOLDERS[:2]]
    # Zip parts are extracted to tiny-imagenet-200-parts/<source>/<part>/<zip identity>.
    folders += [part for source in _subfolders(cache / CACHE_FOLDERS[2]) for part in _subfolders(source)]
    return [path for folder in folders for path in remove_stale_temporaries(folder)]


def _subfolders(folder: pathlib.Path) -> list:
    return [path for path in folder.iterdir() if path.is_dir()] if folder.is_dir() else []


# ---------------------------------------------------------------------------------------------
# Finding the data


def resolve(root, split: str, per_class: int | None) -> Layout:
    """Turn any accepted ``root`` into a Layout of plain folders, extracting zips once."""
    if root is None:
        root = download_official_zip()
    root = pathlib.Path(root).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"Tiny ImageNet not found: {root} does not exist")
    if root.is_file():
        if not zipfile.is_zipfile(root):
            raise ValueError(f"{root} is neither a folder nor a zip file")
        identity = source_identity(root)
        extracted = extract_once(root, cache_dir() / "tiny-imagenet-200-extracted" / cache_key(**identity))
        meta = _official_folder(extracted)
        if meta is None:
            raise ValueError(f"{root} does not hold tiny-imagenet-200/wnids.txt")
        return Layout(meta, (meta,), identity, from_zips=True)
    meta = _official_folder(root)
    if meta is not None:
        return Layout(meta, (meta,), source_identity(meta))
    if (root / META_PART).is_file():
        return _extract_parts(root, split, per_class)
    raise FileNotFoundError(
        f"{root} is not a Tiny ImageNet folder: expected wnids.txt, tiny-imagenet-200/wnids.txt "
        f"or {META_PART} in it"
    )


def _official_folder(folder: pathlib.Path) -> pathlib.Path | None:
    for candidate in (folder, folder / "tiny-imagenet-200"):
        if (candidate / "wnids.txt").is_file():
            return candidate
    return None


def _extract_parts(root: pathlib.Path, split: str, per_class: int | None) -> Layout:
    """Extract the meta part and only the train parts that ``per_class`` needs."""
    base = cache_dir() / "tiny-imagenet-200-parts" / cache_key(**source_identity(root))
    # Each part has its own entry keyed on that zip's size and mtime: a replaced part is extracted again.
    meta_zip = root / META_PART
    identity = {"meta-val": source_identity(meta_zip)}
    meta = extract_once(meta_zip, base / "meta-val" / cache_key(**identity["meta-val"])) / "tiny-imagenet-200"
    train_roots = [meta]
    if split == "train":
        count = NUM_TRAIN_PARTS
        if per_class is not None:
            count = min(NUM_TRAIN_PARTS, math.ceil(per_class / IMAGES_PER_TRAIN_PART))
        train_roots = []
        for number in range(1, count + 1):
            part = root / TRAIN_PART.format(number)
            if not part.is_file():
                raise FileNotFoundError(f"{part} is missing; per_class={per_class} needs train parts 1..{count}")
            identity[f"train-{number}"] = source_identity(part)
            destination = base / f"train-{number}" / cache_key(**identity[f"train-{number}"])
            train_roots.append(extract_once(part, destination) / "tiny-imagenet-200")
    return Layout(meta, tuple(train_roots), identity, from_zips=True)


def download_official_zip() -> pathlib.Path:
    """The official zip, fetched once into cache_dir() and checked against its md5."""
    import keras  # imported here: only downloading needs it, and it brings TensorFlow along

    try:
        path = keras.utils.get_file(
            fname="tiny-imagenet-200.zip", origin=OFFICIAL_URL, file_hash=OFFICIAL_MD5,
            hash_algorithm="md5", cache_dir=str(cache_dir()), cache_subdir="",
        )
    except Exception as error:  # network, HTTP, disk or checksum: all mean "no data here"
        raise DatasetUnavailableError(
            f"could not download Tiny ImageNet from {OFFICIAL_URL} ({one_line(error)}); pass a local "
            "copy with --data PATH (a tiny-imagenet-200 folder, tiny-imagenet-200.zip, or a folder of "
            "its zip parts), or use --dataset digits, which works offline"
        ) from None
    return pathlib.Path(path)


# ---------------------------------------------------------------------------------------------
# Reading the text files


def _all_wnids(layout: Layout) -> list:
    return read_wnids(layout.meta / "wnids.txt")


def _wnids(layout: Layout, classes: int | None) -> list:
    """The first ``classes`` wnids of wnids.txt (all of them for None), in label order."""
    all_wnids = _all_wnids(layout)
    if classes is not None and classes > len(all_wnids):
        raise ValueError(f"classes={classes} but {layout.meta / 'wnids.txt'} lists only {len(all_wnids)} wnids")
    return all_wnids if classes is None else all_wnids[:classes]


def _index(layout: Layout, split: str, wnids: list, per_class):
    """File paths, int32 labels, int32 (N, 4) boxes and class names of one split, before any decoding."""
    names = read_class_names(layout.meta / "words.txt", wnids)
    if split == "train":
        paths, labels, boxes = _train_index(layout, wnids, per_class)
    else:
        paths, labels, boxes = _val_index(layout.meta, _all_wnids(layout), len(wnids), per_class)
    return paths, np.asarray(labels, np.int32), np.asarray(boxes, np.int32).reshape(-1, 4), names


def _read_text(path: pathlib.Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not a UTF-8 text file ({error.reason} at byte {error.start})") from None


def read_wnids(path: pathlib.Path) -> list:
    if not path.is_file():
        raise FileNotFoundError(f"Tiny ImageNet wnids file not found: {path}")
    wnids = [line.strip() for line in _read_text(path).splitlines() if line.strip()]
    if not wnids:
        raise ValueError(f"{path} lists no wnids")
    if len(set(wnids)) != len(wnids):
        raise ValueError(f"{path} lists a wnid twice")
    return wnids


def read_class_names(path: pathlib.Path, wnids: list) -> list:
    """A readable name per wnid from words.txt (which covers all of ImageNet); the wnid if absent."""
    if not path.is_file():
        raise FileNotFoundError(f"Tiny ImageNet words file not found: {path}")
    wanted, names = set(wnids), {}
    for line in _read_text(path).splitlines():
        wnid, _, name = line.partition("\t")
        if wnid in wanted:
            names[wnid] = name.strip()
    return [names.get(wnid) or wnid for wnid in wnids]


def _box(fields, where: str) -> list:
    try:
        return [int(value) for value in fields]
    except ValueError:
        raise ValueError(f"{where}: bounding box must be 4 integers. Received: {fields}") from None


def _image_number(name: str) -> int:
    match = re.search(r"_(\d+)\.[A-Za-z]+$", name)
    return int(match.group(1)) if match else -1


def _train_files(layout: Layout, wnids: list, per_class) -> list:
    """(label, path) of every training image the split holds, by class, then by image number.

    Plain strings and os.scandir: for 100,000 files, pathlib objects cost more than the listing.
    """
    chosen = []
    for label, wnid in enumerate(wnids):
        files = []
        for train_root in layout.train_roots:
            try:
                with os.scandir(train_root / "train" / wnid / "images") as entries:
                    files.extend((entry.name, entry.path) for entry in entries
                                 if entry.name.lower().endswith((".jpeg", ".jpg")))
            except (FileNotFoundError, NotADirectoryError):
                continue
        if not files:
            expected = layout.train_roots[0] / "train" / wnid / "images"
            raise FileNotFoundError(f"no training images for wnid {wnid}: expected {expected}")
        files.sort(key=lambda file: (_image_number(file[0]), file[0]))
        chosen.extend((label, path) for _, path in files[:per_class])
    return chosen


def _train_index(layout: Layout, wnids: list, per_class):
    paths, labels, boxes = [], [], []
    current, class_boxes, boxes_path = None, {}, None
    for label, path in _train_files(layout, wnids, per_class):
        if label != current:  # files come class by class: each boxes file is read once
            current, wnid = label, wnids[label]
            boxes_path = layout.meta / "train" / wnid / f"{wnid}_boxes.txt"
            class_boxes = _read_train_boxes(boxes_path)
        name = os.path.basename(path)
        if name not in class_boxes:
            raise ValueError(f"{boxes_path} has no box for {name}")
        boxes.append(class_boxes[name])
        paths.append(path)
        labels.append(label)
    return paths, labels, boxes


def _read_train_boxes(path: pathlib.Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"Tiny ImageNet boxes file not found: {path}")
    boxes = {}
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 5:
            raise ValueError(f"{path}:{number}: expected 'file x0 y0 x1 y1'. Received: {line!r}")
        boxes[fields[0]] = _box(fields[1:], f"{path}:{number}")
    return boxes


def _val_index(meta: pathlib.Path, all_wnids: list, num_classes: int, per_class):
    """Validation images of the first ``num_classes`` wnids, in image-number order."""
    path = meta / "val" / "val_annotations.txt"
    if not path.is_file():
        raise FileNotFoundError(f"Tiny ImageNet validation annotations not found: {path}")
    label_of = {wnid: label for label, wnid in enumerate(all_wnids)}
    rows = []
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        fields = line.split("\t") if "\t" in line else line.split()
        if not line.strip():
            continue
        if len(fields) != 6:
            raise ValueError(f"{path}:{number}: expected 'file wnid x0 y0 x1 y1'. Received: {line!r}")
        name, wnid = fields[0].strip(), fields[1].strip()
        if wnid not in label_of:
            raise ValueError(f"{path}:{number}: unknown wnid {wnid!r} (not in wnids.txt) for {name}")
        rows.append((_image_number(name), name, label_of[wnid], _box(fields[2:], f"{path}:{number}")))
    rows.sort(key=lambda row: (row[0], row[1]))
    taken = [0] * num_classes
    paths, labels, boxes = [], [], []
    for _, name, label, box in rows:
        if label >= num_classes or (per_class is not None and taken[label] >= per_class):
            continue
        taken[label] += 1
        paths.append(meta / "val" / "images" / name)
        labels.append(label)
        boxes.append(box)
    if not paths:
        raise ValueError(f"{path} lists no images of the first {num_classes} classes")
    return paths, labels, boxes
