"""The data layer under hostile or broken input: no dataset path runs code, the cache notices
edits, killed decodes leave nothing behind, and every failure is one line naming the culprit."""
from __future__ import annotations

import errno
import os
import pathlib
import pickle
import signal
import subprocess
import sys
import textwrap
import time
import zipfile

import numpy as np
import pytest
from PIL import Image

import data
from common.cli import run_cli
from data import cache, cifar, decode, tiny_imagenet
from tests.helpers import ERROR
from tests.test_datasets import _cifar_batch, _write_batch
from tests.test_tiny_imagenet import COLORS, WNIDS, _zip_folder, write_tiny_imagenet

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def own_cache(tmp_path, monkeypatch) -> pathlib.Path:
    path = tmp_path / "cache"
    monkeypatch.setenv("ZOO_CACHE_DIR", str(path))
    return path


@pytest.fixture
def folder(tmp_path) -> pathlib.Path:
    return write_tiny_imagenet(tmp_path / "tiny-imagenet-200")


def _one_line_error(capsys, function) -> str:
    """run_cli's report of ``function()``: asserts status 2 and a single line, returns it."""
    status = run_cli(lambda argv: function())
    captured = capsys.readouterr()
    assert status == 2, captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(ERROR), captured.err
    return lines[0]


# ---------------------------------------------------------------------------------------------
# 2. No dataset path runs code: CIFAR batches are read without unpickling arbitrary objects


class _Payload:
    """Unpickling this calls os.mkdir(marker): what a hostile "batch" could do with pickle.load."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def test_cifar_batch_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "code-ran"
    batch = _cifar_batch()
    batch[b"labels"] = _Payload(marker)
    _write_batch(tmp_path / "cifar" / "test_batch", batch)
    # The payload is real: plain pickle.load runs it.
    pickle.loads((tmp_path / "cifar" / "test_batch").read_bytes())
    assert marker.is_dir()
    marker.rmdir()
    with pytest.raises(ValueError, match=r"test_batch is not a CIFAR batch.*(posix|os)\.mkdir"):
        data.load_dataset("cifar10", "val", root=tmp_path / "cifar")
    assert not marker.exists()


def test_cifar_root_that_is_not_cifar_is_refused(tmp_path, folder, capsys):
    # A Tiny ImageNet folder passed as CIFAR-10 (--dataset cifar10 --data DIR) is not read as anything else.
    with pytest.raises(FileNotFoundError, match=f"{folder} is not a cifar10 folder: expected .*data_batch_1"):
        data.load_dataset("cifar10", "train", root=folder)
    archive = tmp_path / "cifar-10-python.tar.gz"
    archive.write_bytes(b"not extracted")
    with pytest.raises(NotADirectoryError, match="cifar-10-python.tar.gz is not a folder"):
        data.load_dataset("cifar10", "train", root=archive)
    line = _one_line_error(capsys, lambda: data.load_dataset("cifar100", "val", root=tmp_path / "nowhere"))
    assert "nowhere" in line


@pytest.mark.parametrize("root", [5, ["a"], b"folder", "", "a\0b"])
def test_root_must_be_a_path(root):
    with pytest.raises(ValueError, match="root must be a path"):
        data.load_dataset("cifar10", "val", root=root)


def test_digits_refuses_a_root(tmp_path):
    with pytest.raises(ValueError, match="digits is built in.*root="):
        data.load_dataset("digits", "val", root=tmp_path)


def test_only_jpeg_and_png_are_opened(folder, own_cache, monkeypatch):
    from PIL import EpsImagePlugin

    # PIL recognises this as EPS, which it would hand to Ghostscript (a program) to draw.
    eps = folder / "train" / WNIDS[2] / "images" / f"{WNIDS[2]}_10.JPEG"
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\nshowpage\n")
    with Image.open(eps) as image:
        assert image.format == "EPS"
    reached = []
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "load", lambda self, *args: reached.append(self.filename))
    with pytest.raises(ValueError, match=f"cannot decode image .*{eps.name}"):
        tiny_imagenet.load(folder, "train")
    assert reached == []  # the EPS reader (and Ghostscript) never saw the file
    Image.new("RGB", (64, 64), COLORS[2]).save(eps, format="PNG")  # a PNG under a .JPEG name is fine
    assert len(tiny_imagenet.load(folder, "train")) == 15


def test_non_utf8_text_file_is_named(folder, own_cache):
    (folder / "wnids.txt").write_bytes(b"\xff\xfe\x00n0")
    with pytest.raises(ValueError, match="wnids.txt is not a UTF-8 text file"):
        tiny_imagenet.load(folder, "val")


# ---------------------------------------------------------------------------------------------
# 3. The folder cache is keyed on what the data is, not on the path


def _same_stat(path: pathlib.Path, edit):
    """Apply ``edit`` to ``path``, then give it back its old mtime (and check its size is unchanged)."""
    before = path.stat()
    edit(path)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size


def test_reordered_wnids_change_every_label(folder, own_cache):
    first = tiny_imagenet.load(folder, "val")
    assert first.wnids == WNIDS and first.labels.tolist() == [0, 1, 2, 0, 1, 2]
    reordered = [WNIDS[2], WNIDS[0], WNIDS[1]]
    # Same size and mtime: only the contents of wnids.txt can tell.
    _same_stat(folder / "wnids.txt", lambda path: path.write_text("\n".join(reordered) + "\n"))
    second = tiny_imagenet.load(folder, "val")
    assert second.wnids == reordered and second.labels.tolist() == [1, 2, 0, 1, 2, 0]
    np.testing.assert_array_equal(second.images, first.images)
    train = tiny_imagenet.load(folder, "train", classes=1)
    assert train.wnids == [WNIDS[2]] and np.abs(train.images.mean(axis=(0, 1, 2)) - COLORS[2]).max() < 4


def test_edited_val_annotations_change_the_labels(folder, own_cache):
    assert tiny_imagenet.load(folder, "val").labels.tolist() == [0, 1, 2, 0, 1, 2]
    path = folder / "val" / "val_annotations.txt"

    def swap_first_two(path):
        lines = path.read_text().splitlines()
        lines[0] = lines[0].replace(WNIDS[0], WNIDS[1])  # same length: wnids are 9 characters
        lines[1] = lines[1].replace(WNIDS[1], WNIDS[0])
        path.write_text("\n".join(lines) + "\n")

    _same_stat(path, swap_first_two)
    assert tiny_imagenet.load(folder, "val").labels.tolist() == [1, 0, 2, 0, 1, 2]


def test_replaced_jpeg_is_decoded_again(folder, own_cache):
    first = tiny_imagenet.load(folder, "val")
    image = folder / "val" / "images" / "val_4.JPEG"
    stat = image.stat()
    Image.new("RGB", (64, 64), (250, 250, 250)).save(image, quality=95)
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # a later copy
    second = tiny_imagenet.load(folder, "val")
    assert second.images[4].min() > 240 and first.images[4].min() < 240
    np.testing.assert_array_equal(second.images[:4], first.images[:4])


def test_added_training_image_is_seen(folder, own_cache):
    assert len(tiny_imagenet.load(folder, "train")) == 15
    wnid = WNIDS[0]
    Image.new("RGB", (64, 64), COLORS[0]).save(folder / "train" / wnid / "images" / f"{wnid}_12.JPEG")
    with open(folder / "train" / wnid / f"{wnid}_boxes.txt", "a") as boxes:
        boxes.write(f"{wnid}_12.JPEG\t1\t2\t3\t4\n")
    split = tiny_imagenet.load(folder, "train")
    assert len(split) == 16 and split.boxes[5].tolist() == [1, 2, 3, 4]


def test_replaced_zip_part_is_extracted_again(folder, own_cache, tmp_path):
    parts = tmp_path / "parts"
    parts.mkdir()
    meta_zip = parts / tiny_imagenet.META_PART
    _zip_folder(folder, meta_zip, keep=lambda name: "/images/" not in name or name.startswith("val/"))
    assert tiny_imagenet.load(parts, "val").wnids == WNIDS
    (folder / "wnids.txt").write_text("\n".join(reversed(WNIDS)) + "\n")
    meta_zip.unlink()
    _zip_folder(folder, meta_zip, keep=lambda name: "/images/" not in name or name.startswith("val/"))
    assert tiny_imagenet.load(parts, "val").wnids == list(reversed(WNIDS))


def test_replaced_train_part_and_official_zip_are_decoded_again(folder, own_cache, tmp_path):
    parts = tmp_path / "parts"
    parts.mkdir()
    _zip_folder(folder, parts / tiny_imagenet.META_PART,
                keep=lambda name: "/images/" not in name or name.startswith("val/"))
    train_part, official = parts / tiny_imagenet.TRAIN_PART.format(1), tmp_path / "tiny-imagenet-200.zip"

    def zip_sources():
        for path in (train_part, official):
            path.unlink(missing_ok=True)
        _zip_folder(folder, train_part, keep=lambda name: name.startswith("train/"))
        _zip_folder(folder, official)

    zip_sources()
    # per_class <= 100 needs train part 1 only
    first = [tiny_imagenet.load(source, "train", per_class=20) for source in (parts, official)]
    image = folder / "train" / WNIDS[1] / "images" / f"{WNIDS[1]}_0.JPEG"
    Image.new("RGB", (64, 64), (250, 250, 250)).save(image, quality=95)
    zip_sources()
    for source, before in zip((parts, official), first):
        after = tiny_imagenet.load(source, "train", per_class=20)
        assert after.images[5].min() > 240 and before.images[5].min() < 240
        np.testing.assert_array_equal(after.images[:5], before.images[:5])


def test_unchanged_data_is_not_decoded_again(folder, own_cache, monkeypatch):
    tiny_imagenet.load(folder, "val")
    calls = []
    monkeypatch.setattr(tiny_imagenet, "decode_images", lambda *args, **kwargs: calls.append(args))
    tiny_imagenet.load(folder, "val")
    assert calls == []


# ---------------------------------------------------------------------------------------------
# 1. Leftovers: nothing on a normal exit, killed writers' folders removed on the next start


def _temporaries(own_cache) -> list:
    return sorted(path.name for path in own_cache.rglob(f"*{cache.TEMPORARY_MARK}*"))


@pytest.mark.parametrize("interruption", [KeyboardInterrupt, SystemExit, ValueError])
def test_interrupted_decode_leaves_nothing(folder, own_cache, monkeypatch, interruption):
    def interrupted(paths, output, **kwargs):
        output.write_bytes(b"half")
        raise interruption("stop")

    monkeypatch.setattr(tiny_imagenet, "decode_images", interrupted)
    with pytest.raises(interruption):
        tiny_imagenet.load(folder, "train")
    assert (own_cache / "tiny-imagenet-200-arrays").is_dir() and _temporaries(own_cache) == []


def test_leftovers_of_dead_writers_are_removed_and_live_ones_kept(folder, own_cache):
    arrays = own_cache / "tiny-imagenet-200-arrays"
    arrays.mkdir(parents=True)
    dead = arrays / ".train-0123456789abcdef.tmp-dead"  # a killed writer: marker, nobody holds the lock
    dead.mkdir()
    (dead / cache.LOCK_MARKER).touch()
    (dead / "images.npy").write_bytes(b"\0" * 1000)
    old = arrays / ".val-0123456789abcdef.tmp-old"  # from before locks existed
    old.mkdir()
    stale = time.time() - 2 * cache.UNLOCKED_GRACE_SECONDS
    os.utime(old, (stale, stale))
    young = arrays / ".val-fedcba9876543210.tmp-young"  # a writer between mkdtemp and its lock
    young.mkdir()
    unlocked = arrays / ".val-0000000000000000.tmp-nolocks"  # a writer on a file system without locks
    unlocked.mkdir()
    (unlocked / cache.NO_LOCK_MARKER).touch()
    os.utime(unlocked, (stale, stale))  # decoding for longer than the grace period: still kept
    extraction = own_cache / "tiny-imagenet-200-parts" / "0123456789abcdef" / "train-3" / ".fedcba9876543210.tmp-dead"
    extraction.mkdir(parents=True)  # a zip part's extraction, killed halfway
    (extraction / cache.LOCK_MARKER).touch()
    with cache.atomic_directory(arrays / "train-live") as live:
        tiny_imagenet.load(folder, "val")
        assert dead.name not in _temporaries(own_cache) and old.name not in _temporaries(own_cache)
        assert not extraction.exists() and extraction.parent.is_dir()
        assert live.is_dir() and young.is_dir() and unlocked.is_dir()
        (live / "content").write_text("kept while its writer lives")
    assert (arrays / "train-live" / "content").is_file()
    assert not (arrays / "train-live" / cache.LOCK_MARKER).exists()
    assert _temporaries(own_cache) == sorted([unlocked.name, young.name])


def test_writer_on_a_file_system_without_locks(own_cache, monkeypatch):
    def no_locks(*args):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(cache.fcntl, "flock", no_locks)
    final = own_cache / "entry"
    with cache.atomic_directory(final) as temporary:
        assert (temporary / cache.NO_LOCK_MARKER).is_file() and not (temporary / cache.LOCK_MARKER).exists()
        assert cache.remove_stale_temporaries(own_cache) == []  # young, so judged alive
        (temporary / "content").write_text("x")
    assert sorted(path.name for path in final.iterdir()) == ["content"]


KILLED_DECODE = """
import sys, time
sys.path.insert(0, {repo!r})
from data import tiny_imagenet

def slow_decode(paths, output, *, description, workers=None):
    output.write_bytes(b"\\0" * 4096)
    print("decoding", flush=True)
    time.sleep(60)

tiny_imagenet.decode_images = slow_decode
tiny_imagenet.load({folder!r}, "train")
"""


@pytest.mark.slow
def test_decode_killed_with_sigkill_is_cleaned_on_the_next_start(folder, own_cache):
    script = KILLED_DECODE.format(repo=str(REPO), folder=str(folder))
    process = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], stdout=subprocess.PIPE,
                               env=dict(os.environ, ZOO_CACHE_DIR=str(own_cache)))
    try:
        assert process.stdout.readline().strip() == b"decoding"
        left = _temporaries(own_cache)
        assert len(left) == 1 and left[0].startswith(".train-")
        # While the writer lives, another start leaves its folder alone.
        tiny_imagenet.load(folder, "val")
        assert _temporaries(own_cache) == left
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    tiny_imagenet.load(folder, "val")
    assert _temporaries(own_cache) == []
    assert len(tiny_imagenet.load(folder, "train")) == 15


# ---------------------------------------------------------------------------------------------
# 5. One line and status 2: corrupt zip members, and a cache that is a file or read-only


def _corrupt_member(zip_path: pathlib.Path, member_name: str):
    """Flip one byte of a stored member's data, so its CRC no longer matches."""
    with zipfile.ZipFile(zip_path) as archive:
        info = archive.getinfo(member_name)
    content = bytearray(zip_path.read_bytes())
    name_length = int.from_bytes(content[info.header_offset + 26: info.header_offset + 28], "little")
    extra_length = int.from_bytes(content[info.header_offset + 28: info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_length + extra_length
    content[start + info.file_size // 2] ^= 0xFF
    zip_path.write_bytes(bytes(content))


def test_zip_member_with_bad_crc_is_named(folder, own_cache, tmp_path, capsys):
    zip_path = tmp_path / "tiny-imagenet-200.zip"
    _zip_folder(folder, zip_path)  # ZIP_STORED: the member's bytes sit in the file as they are
    member = "tiny-imagenet-200/val/images/val_3.JPEG"
    _corrupt_member(zip_path, member)
    with zipfile.ZipFile(zip_path) as archive, pytest.raises(zipfile.BadZipFile, match="Bad CRC-32"):
        archive.read(member)
    with pytest.raises(ValueError, match=f"corrupt zip {zip_path}: member '{member}'.*Bad CRC-32"):
        tiny_imagenet.load(zip_path, "val")
    line = _one_line_error(capsys, lambda: data.load_dataset("tiny-imagenet", "val", root=zip_path))
    assert str(zip_path) in line and member in line
    extracted = own_cache / "tiny-imagenet-200-extracted"
    assert list(extracted.iterdir()) == []  # nothing half-extracted to trust later


def test_cache_that_is_a_file_is_refused_before_reading(folder, tmp_path, monkeypatch, capsys):
    not_a_folder = tmp_path / "cache-file"
    not_a_folder.write_text("x")
    monkeypatch.setenv("ZOO_CACHE_DIR", str(not_a_folder))
    monkeypatch.setattr(tiny_imagenet, "resolve", lambda *args: pytest.fail("data read before the cache check"))
    with pytest.raises(NotADirectoryError, match=f"{not_a_folder} \\(ZOO_CACHE_DIR\\) is not a folder"):
        data.load_dataset("tiny-imagenet", "val", root=folder)
    line = _one_line_error(capsys, lambda: data.load_dataset("tiny-imagenet", "val", root=folder))
    assert "cache-file (ZOO_CACHE_DIR) is not a folder" in line
    monkeypatch.setenv("ZOO_CACHE_DIR", str(not_a_folder / "below"))
    with pytest.raises(NotADirectoryError, match="below \\(ZOO_CACHE_DIR\\) cannot be created \\(Not a directory"):
        data.cache_dir()


def test_read_only_cache_is_refused_before_reading(folder, tmp_path, monkeypatch, capsys):
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    read_only.chmod(0o500)
    monkeypatch.setenv("ZOO_CACHE_DIR", str(read_only))
    monkeypatch.setattr(tiny_imagenet, "resolve", lambda *args: pytest.fail("data read before the cache check"))
    try:
        (read_only / "probe").touch()
    except PermissionError:
        pass
    else:
        # root writes through the mode bits: fail the write the way a read-only mount does.
        (read_only / "probe").unlink()

        def read_only_file_system(*args, **kwargs):
            raise OSError(errno.EROFS, "Read-only file system", str(read_only))

        monkeypatch.setattr(cache.tempfile, "TemporaryFile", read_only_file_system)
    try:
        with pytest.raises(PermissionError, match=f"{read_only} \\(ZOO_CACHE_DIR\\) is not writable"):
            data.load_dataset("tiny-imagenet", "val", root=folder)
        line = _one_line_error(capsys, lambda: data.load_dataset("tiny-imagenet", "val", root=folder))
        assert "read-only (ZOO_CACHE_DIR) is not writable" in line
    finally:
        read_only.chmod(0o700)


def test_parallel_decode_failure_names_the_file_and_leaves_nothing(folder, own_cache, monkeypatch):
    monkeypatch.setattr(decode, "PARALLEL_THRESHOLD", 1)
    monkeypatch.setattr(decode, "CHUNK_SIZE", 4)
    broken = folder / "val" / "images" / "val_5.JPEG"
    broken.write_bytes(b"GIF89a not really")
    with pytest.raises(ValueError, match="val_5.JPEG"):
        tiny_imagenet.load(folder, "val")
    assert _temporaries(own_cache) == []


def test_cifar_unpickler_admits_only_plain_data():
    assert isinstance(cifar.BatchUnpickler.ALLOWED, dict)
    for module, name in [("os", "system"), ("builtins", "eval"), ("numpy", "load"), ("subprocess", "Popen")]:
        payload = f"c{module}\n{name}\n(S'x'\ntR.".encode()
        with pytest.raises(pickle.UnpicklingError, match=f"{module}.{name}"):
            cifar.BatchUnpickler(__import__("io").BytesIO(payload)).load()
