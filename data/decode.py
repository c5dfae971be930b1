"""Decode many small JPEGs into one uint8 .npy array, in parallel worker processes.

For 64x64 images the cost is Python overhead per file (open, header parsing), not the JPEG
decode itself, so threads do not help (the GIL) and processes do. Workers write straight into
a memory-mapped .npy, so decoded pixels are never pickled back to the parent.
"""
from __future__ import annotations

import multiprocessing
import os
import pathlib
import sys
import time

import numpy as np
from numpy.lib.format import open_memmap
from PIL import Image, ImageOps

from data.cache import one_line

# Below this many files, starting worker processes costs more than it saves.
PARALLEL_THRESHOLD = 2000
CHUNK_SIZE = 500
# The only formats a dataset image is opened as, whatever its name says: PIL would otherwise hand
# an EPS file to Ghostscript, a program of its own, and every other plugin is code a dataset
# folder (which may come from an untrusted run config) need never reach.
FORMATS = ("JPEG", "PNG")


# What a user may hand predict.py: the formats phones, browsers and screenshots write. Still no
# EPS (Ghostscript) or other plugin that runs a program of its own.
INPUT_FORMATS = FORMATS + ("WEBP", "GIF", "BMP", "TIFF", "PPM")


def to_array(image: Image.Image, image_size=None) -> np.ndarray:
    """An open PIL image as uint8 (H, W, 3): the one conversion every image the zoo sees goes through.

    The EXIF orientation is applied (a phone's portrait photo stands up); grayscale, palette and
    CMYK become RGB; transparent pixels are composited on white (what a viewer shows), not left
    as whatever colour they hide. image_size=(H, W) resizes with PIL's Lanczos filter. Dataset
    images (JPEG/PNG without orientation or alpha) only get the RGB conversion and the resize.
    """
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    image = image.convert("RGB")
    if image_size is not None and (image.height, image.width) != tuple(image_size):
        image = image.resize((image_size[1], image_size[0]), Image.LANCZOS)
    return np.asarray(image)


def resize_array(image: np.ndarray, image_size) -> np.ndarray:
    """uint8 (H, W, 3) resized to ``image_size`` (H, W) exactly as ``to_array`` does."""
    return to_array(Image.fromarray(image), image_size)


def decode_file(path, expected_size=None, *, image_size=None, formats=FORMATS) -> np.ndarray:
    """One image file as uint8 (H, W, 3) through ``to_array`` (resized to ``image_size`` if given).

    Only ``formats`` are opened (dataset folders: JPEG and PNG); anything else, a truncated file
    or a decompression bomb raises ValueError naming the file.
    """
    if formats is not FORMATS:
        Image.init()  # registers the plugins beyond the few PIL loads up front (WebP, TIFF)
    try:
        with Image.open(path, formats=formats) as image:
            if expected_size is not None and image.size != expected_size:
                raise ValueError(
                    f"image {path} is {image.size[0]}x{image.size[1]}, expected "
                    f"{expected_size[0]}x{expected_size[1]} like the first image"
                )
            return to_array(image, image_size)
    except (OSError, SyntaxError, Image.DecompressionBombError) as error:  # truncated, not an image, or huge
        raise ValueError(f"cannot decode image {path}: {one_line(error)}") from None


def _decode_chunk(task) -> int:
    output, start, paths, size = task
    # Mapped per chunk and released after it: written pages leave this process's resident
    # set instead of piling up to the whole array (1.2 GB for the Tiny ImageNet train split).
    images = np.load(output, mmap_mode="r+")
    for offset, path in enumerate(paths):
        images[start + offset] = decode_file(path, size)
    del images
    return len(paths)


class Progress:
    """A one-line progress report without a tqdm dependency (and without importing Keras)."""

    def __init__(self, total: int, description: str):
        self.total, self.description = total, description
        self.start = time.perf_counter()
        self.interactive = sys.stderr.isatty()
        self.next_report = 0

    def update(self, done: int):
        # A log file gets a line per 10%; a terminal gets a live line.
        if not self.interactive and done < self.next_report and done < self.total:
            return
        self.next_report = done + max(1, self.total // 10)
        elapsed = time.perf_counter() - self.start
        end = "\n" if (done >= self.total or not self.interactive) else ""
        print(f"\r{self.description}: {done}/{self.total} images, {elapsed:.1f}s", end=end, file=sys.stderr, flush=True)


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def decode_images(paths: list, output: pathlib.Path, *, description: str, workers: int | None = None) -> None:
    """Decode ``paths`` into ``output`` (a new .npy of uint8 (N, H, W, 3)).

    Every image must have the size of the first one. A file that cannot be decoded raises
    ValueError naming it; the caller writes ``output`` inside a temporary folder, so a failure
    leaves nothing in the cache.
    """
    if not paths:
        raise ValueError(f"{description}: no images to decode")
    first = decode_file(paths[0])
    size = (first.shape[1], first.shape[0])
    # Create the file (header and size) once; the chunks then fill it in place.
    open_memmap(output, mode="w+", dtype=np.uint8, shape=(len(paths), *first.shape)).flush()
    tasks = [
        (str(output), start, [str(path) for path in paths[start : start + CHUNK_SIZE]], size)
        for start in range(0, len(paths), CHUNK_SIZE)
    ]
    progress = Progress(len(paths), description)
    workers = default_workers() if workers is None else workers
    done = 0
    if workers <= 1 or len(paths) < PARALLEL_THRESHOLD:
        for task in tasks:
            done += _decode_chunk(task)
            progress.update(done)
        return
    # fork: no re-import of the caller's __main__ (which may import TensorFlow); the workers
    # only run PIL and NumPy, never TensorFlow. Elsewhere fork is unavailable or unsafe.
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    with multiprocessing.get_context(method).Pool(workers) as pool:
        for count in pool.imap_unordered(_decode_chunk, tasks):
            done += count
            progress.update(done)
