"""Tiny ImageNet reader: synthetic fixtures for every layout and error, then the real data (slow)."""
from __future__ import annotations

import io
import pathlib
import zipfile

import numpy as np
import pytest
from PIL import Image

from data import decode, tiny_imagenet
from data.cache import DatasetUnavailableError
from data.extract import extract_once

# Deliberately not sorted: labels must follow wnids.txt, not folder names.
WNIDS = ["n03000000", "n01000000", "n02000000"]
COLORS = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]
TRAIN_NUMBERS = [0, 1, 2, 10, 11]  # "10" sorts before "2" as text: order must be by number
VAL_PER_CLASS = 2


def _write_jpeg(path: pathlib.Path, color, grayscale=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", (64, 64), color)
    (image.convert("L") if grayscale else image).save(path, quality=95)


def write_tiny_imagenet(root: pathlib.Path, train_numbers=TRAIN_NUMBERS) -> pathlib.Path:
    """A small Tiny-ImageNet-shaped folder; box of train image N of class c is (N, c, N+10, c+10)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    words = ["n09999999\tsomething unused"] + [f"{wnid}\tthing {index}, other name" for index, wnid in enumerate(WNIDS)]
    (root / "words.txt").write_text("\n".join(words) + "\n")
    for label, wnid in enumerate(WNIDS):
        lines = []
        for number in train_numbers:
            name = f"{wnid}_{number}.JPEG"
            # one grayscale training image, like the 2,178 in the real data
            _write_jpeg(root / "train" / wnid / "images" / name, COLORS[label], grayscale=(label == 0 and number == 1))
            lines.append(f"{name}\t{number}\t{label}\t{number + 10}\t{label + 10}")
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("\n".join(lines) + "\n")
    annotations = []
    for index in range(VAL_PER_CLASS * len(WNIDS)):
        label = index % len(WNIDS)
        _write_jpeg(root / "val" / "images" / f"val_{index}.JPEG", COLORS[label])
        annotations.append(f"val_{index}.JPEG\t{WNIDS[label]}\t{index}\t1\t{index + 5}\t9")
    (root / "val" / "val_annotations.txt").write_text("\n".join(annotations) + "\n")
    return root


def _zip_folder(folder: pathlib.Path, zip_path: pathlib.Path, keep=lambda relative: True):
    with zipfile.ZipFile(zip_path, "w") as archive:
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder).as_posix()
            if path.is_file() and keep(relative):
                archive.write(path, f"tiny-imagenet-200/{relative}")


@pytest.fixture
def own_cache(tmp_path, monkeypatch) -> pathlib.Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("ZOO_CACHE_DIR", str(cache))
    return cache


@pytest.fixture
def folder(tmp_path) -> pathlib.Path:
    return write_tiny_imagenet(tmp_path / "tiny-imagenet-200")


def _check_colors(split):
    means = split.images.reshape(len(split), -1, 3).mean(axis=1)
    expected = np.array(COLORS)[split.labels]
    colored = np.ptp(means, axis=1) > 1  # the grayscale image has no class color left
    assert np.abs(means - expected)[colored].max() < 4  # JPEG shifts colors a little


def test_train_from_folder(folder, own_cache):
    split = tiny_imagenet.load(folder, "train")
    assert split.images.shape == (15, 64, 64, 3) and split.images.dtype == np.uint8
    assert split.labels.dtype == np.int32 and split.labels.tolist() == [0] * 5 + [1] * 5 + [2] * 5
    assert split.wnids == WNIDS
    assert split.class_names == ["thing 0, other name", "thing 1, other name", "thing 2, other name"]
    assert split.boxes[:, 0].tolist() == TRAIN_NUMBERS * 3  # sorted by image number
    assert split.boxes[:, 1].tolist() == split.labels.tolist()
    gray = split.images[1]  # n03000000_1 was saved as a grayscale JPEG
    assert gray.shape == (64, 64, 3) and (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    _check_colors(split)


def test_classes_and_per_class(folder, own_cache):
    split = tiny_imagenet.load(folder, "train", classes=2, per_class=4)
    assert split.wnids == WNIDS[:2] and split.num_classes == 2
    assert split.labels.tolist() == [0] * 4 + [1] * 4
    assert split.boxes[:4, 0].tolist() == [0, 1, 2, 10]


def test_val_labels_and_boxes(folder, own_cache):
    split = tiny_imagenet.load(folder, "val")
    assert len(split) == 6 and split.labels.tolist() == [0, 1, 2, 0, 1, 2]
    assert split.boxes.tolist() == [[index, 1, index + 5, 9] for index in range(6)]
    _check_colors(split)
    smaller = tiny_imagenet.load(folder, "val", classes=2, per_class=1)
    assert smaller.labels.tolist() == [0, 1] and smaller.boxes[:, 0].tolist() == [0, 1]


def test_second_load_uses_the_cache(folder, own_cache, monkeypatch):
    first = tiny_imagenet.load(folder, "train", per_class=2)

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again")

    # The key stats the JPEGs (so it notices edits) but a cache hit never opens one.
    monkeypatch.setattr(tiny_imagenet, "decode_images", no_decoding)
    monkeypatch.setattr(decode.Image, "open", no_decoding)
    second = tiny_imagenet.load(folder, "train", per_class=2)
    np.testing.assert_array_equal(first.images, second.images)
    assert second.wnids == first.wnids and second.class_names == first.class_names


def test_parallel_decode_matches_serial(folder, own_cache, monkeypatch, tmp_path):
    paths = sorted(folder.rglob("*.JPEG"))
    decode.decode_images(paths, tmp_path / "serial.npy", description="serial", workers=1)
    monkeypatch.setattr(decode, "PARALLEL_THRESHOLD", 1)
    monkeypatch.setattr(decode, "CHUNK_SIZE", 4)
    decode.decode_images(paths, tmp_path / "parallel.npy", description="parallel", workers=2)
    np.testing.assert_array_equal(np.load(tmp_path / "serial.npy"), np.load(tmp_path / "parallel.npy"))


def test_official_zip(folder, own_cache, tmp_path):
    zip_path = tmp_path / "tiny-imagenet-200.zip"
    _zip_folder(folder, zip_path)
    split = tiny_imagenet.load(zip_path, "val")
    assert split.labels.tolist() == [0, 1, 2, 0, 1, 2]
    extracted = list((own_cache / "tiny-imagenet-200-extracted").iterdir())
    assert len(extracted) == 1 and (extracted[0] / "tiny-imagenet-200" / "wnids.txt").is_file()
    assert len(tiny_imagenet.load(zip_path, "train", classes=1)) == 5


def test_zip_parts_extract_only_what_is_needed(tmp_path, own_cache):
    source = write_tiny_imagenet(tmp_path / "source", train_numbers=[0, 1, 2, 100, 101])
    parts = tmp_path / "parts"
    parts.mkdir()

    def train_image_number(name):
        """n01443537_101.JPEG -> 101; None for anything but a training image."""
        if "/images/" not in name or not name.startswith("train/"):
            return None
        return int(name.split("_")[-1].split(".")[0])

    _zip_folder(source, parts / "tiny-imagenet-200-meta-val.zip",
                keep=lambda name: "/images/" not in name or name.startswith("val/"))
    _zip_folder(source, parts / "tiny-imagenet-200-train-1.zip",
                keep=lambda name: train_image_number(name) is not None and train_image_number(name) < 100)
    _zip_folder(source, parts / "tiny-imagenet-200-train-2.zip",
                keep=lambda name: train_image_number(name) is not None and train_image_number(name) >= 100)
    assert not (own_cache / "tiny-imagenet-200-parts").exists()
    assert len(tiny_imagenet.load(parts, "val")) == 6
    [base] = (own_cache / "tiny-imagenet-200-parts").iterdir()
    assert sorted(path.name for path in base.iterdir()) == ["meta-val"]
    split = tiny_imagenet.load(parts, "train", classes=2, per_class=3)
    assert split.labels.tolist() == [0, 0, 0, 1, 1, 1] and split.boxes[:3, 0].tolist() == [0, 1, 2]
    assert sorted(path.name for path in base.iterdir()) == ["meta-val", "train-1"]
    split = tiny_imagenet.load(parts, "train", per_class=150)
    assert split.boxes[:5, 0].tolist() == [0, 1, 2, 100, 101]
    with pytest.raises(FileNotFoundError, match="tiny-imagenet-200-train-3.zip"):
        tiny_imagenet.load(parts, "train")


# ---------------------------------------------------------------------------------------------
# Bad input: one clear message naming the thing, and nothing half-written in the cache


def _cache_entries(cache: pathlib.Path) -> list:
    folder = cache / "tiny-imagenet-200-arrays"
    return sorted(path.name for path in folder.iterdir()) if folder.exists() else []


def test_missing_folder(tmp_path, own_cache):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        tiny_imagenet.load(tmp_path / "nowhere", "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="wnids.txt"):
        tiny_imagenet.load(tmp_path / "empty", "train")


@pytest.mark.parametrize("workers", [1, 2])
def test_truncated_jpeg_is_named(folder, own_cache, monkeypatch, workers):
    broken = folder / "train" / WNIDS[1] / "images" / f"{WNIDS[1]}_2.JPEG"
    content = broken.read_bytes()
    broken.write_bytes(content[: len(content) // 2])
    if workers == 2:
        monkeypatch.setattr(decode, "PARALLEL_THRESHOLD", 1)
        monkeypatch.setattr(decode, "CHUNK_SIZE", 4)
    with pytest.raises(ValueError, match=f"{WNIDS[1]}_2.JPEG"):
        tiny_imagenet.load(folder, "train")
    assert _cache_entries(own_cache) == []


def test_unknown_wnid_in_val_annotations(folder, own_cache):
    path = folder / "val" / "val_annotations.txt"
    lines = path.read_text().splitlines()
    lines[1] = lines[1].replace(WNIDS[1], "n07777777")
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"val_annotations.txt:2: unknown wnid 'n07777777'"):
        tiny_imagenet.load(folder, "val")
    assert _cache_entries(own_cache) == []


def test_zip_member_escaping_is_refused(folder, own_cache, tmp_path):
    zip_path = tmp_path / "tiny-imagenet-200.zip"
    _zip_folder(folder, zip_path)
    with zipfile.ZipFile(zip_path, "a") as archive:
        archive.writestr("tiny-imagenet-200/../../evil.txt", "x")
    with pytest.raises(ValueError, match=r"tiny-imagenet-200/\.\./\.\./evil\.txt"):
        tiny_imagenet.load(zip_path, "val")
    extracted = own_cache / "tiny-imagenet-200-extracted"
    assert not extracted.exists() or list(extracted.iterdir()) == []
    assert not (tmp_path / "evil.txt").exists() and not (own_cache / "evil.txt").exists()


def test_download_failure_is_one_clear_error(own_cache, monkeypatch):
    import keras

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on http://cs231n.stanford.edu/tiny-imagenet-200.zip:\nNone -- no network")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(DatasetUnavailableError) as caught:
        tiny_imagenet.load(None, "val")
    message = str(caught.value)
    assert isinstance(caught.value, FileNotFoundError)
    assert "\n" not in message and "--data PATH" in message and "--dataset digits" in message


def test_bad_arguments(folder, own_cache):
    with pytest.raises(ValueError, match="split"):
        tiny_imagenet.load(folder, "test")
    with pytest.raises(ValueError, match="per_class=0"):
        tiny_imagenet.load(folder, "train", per_class=0)
    with pytest.raises(ValueError, match="classes=4"):
        tiny_imagenet.load(folder, "train", classes=4)


# ---------------------------------------------------------------------------------------------
# The real data (zip parts or official folder from TINY_IMAGENET_SHARED)


@pytest.fixture(scope="session")
def real_val(tiny_imagenet_shared):
    return tiny_imagenet.load(tiny_imagenet_shared, "val")


def _real_annotations(root: pathlib.Path):
    """wnids and val_annotations.txt rows straight from the source, and a way to read a val JPEG."""
    meta = root / "tiny-imagenet-200-meta-val.zip"
    if meta.is_file():
        archive = zipfile.ZipFile(meta)
        read = lambda name: archive.read(f"tiny-imagenet-200/{name}")  # noqa: E731
    else:
        base = root / "tiny-imagenet-200" if (root / "tiny-imagenet-200").is_dir() else root
        read = lambda name: (base / name).read_bytes()  # noqa: E731
    wnids = read("wnids.txt").decode().split()
    rows = [line.split("\t") for line in read("val/val_annotations.txt").decode().splitlines() if line.strip()]
    return wnids, rows, read


@pytest.mark.slow
def test_real_val_split(real_val, tiny_imagenet_shared):
    wnids, rows, read = _real_annotations(tiny_imagenet_shared)
    assert real_val.images.shape == (10_000, 64, 64, 3) and real_val.num_classes == 200
    assert np.bincount(real_val.labels, minlength=200).tolist() == [50] * 200
    assert real_val.wnids == wnids
    by_number = sorted(rows, key=lambda row: int(row[0].split("_")[1].split(".")[0]))
    assert real_val.labels.tolist() == [wnids.index(row[1]) for row in by_number]
    assert real_val.boxes.tolist() == [[int(value) for value in row[2:6]] for row in by_number]
    for index in (0, 4321):
        with Image.open(io.BytesIO(read(f"val/images/val_{index}.JPEG"))) as image:
            np.testing.assert_array_equal(real_val.images[index], np.asarray(image.convert("RGB")))


@pytest.mark.slow
def test_real_grayscale_val_image_has_three_channels(real_val, tiny_imagenet_shared):
    _, _, read = _real_annotations(tiny_imagenet_shared)
    for index in range(10_000):
        with Image.open(io.BytesIO(read(f"val/images/val_{index}.JPEG"))) as image:
            if image.mode == "L":
                gray = np.asarray(image)
                break
    else:
        pytest.fail("no grayscale validation image found")
    pixels = real_val.images[index]
    assert pixels.shape == (64, 64, 3)
    for channel in range(3):
        np.testing.assert_array_equal(pixels[..., channel], gray)


@pytest.mark.slow
def test_real_train_subset(tiny_imagenet_shared, monkeypatch):
    requested = []

    def recording_extract(zip_path, destination):
        requested.append(zip_path.name)
        return extract_once(zip_path, destination)

    monkeypatch.setattr(tiny_imagenet, "extract_once", recording_extract)
    split = tiny_imagenet.load(tiny_imagenet_shared, "train", classes=2, per_class=5)
    assert split.images.shape == (10, 64, 64, 3) and split.labels.tolist() == [0] * 5 + [1] * 5
    assert split.boxes.shape == (10, 4) and len(split.class_names) == 2
    if (tiny_imagenet_shared / "tiny-imagenet-200-meta-val.zip").is_file():
        assert requested == ["tiny-imagenet-200-meta-val.zip", "tiny-imagenet-200-train-1.zip"]
