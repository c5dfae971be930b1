"""From the INPUT arguments of predict.py (files, folders, globs) to uint8 batches of the run's size."""
from __future__ import annotations

import glob
import pathlib

import numpy as np

from data.decode import INPUT_FORMATS, decode_file


def expand(inputs) -> list[pathlib.Path]:
    """Every file ``inputs`` name, in order, each once: a file itself, a folder's files (recursively,
    sorted, hidden ones skipped) and a glob's matches. Which of them are images is for ``read`` to say,
    so a stray file in a folder is reported rather than silently passed over.

    Raises FileNotFoundError naming an input that is no file, no folder and matches nothing.
    """
    found, seen = [], set()

    def add(path: pathlib.Path):
        if path not in seen:
            seen.add(path)
            found.append(path)

    for text in inputs:
        text = str(text)
        path = pathlib.Path(text).expanduser()
        if path.is_file():
            add(path)
        elif path.is_dir():
            for child in sorted(path.rglob("*")):
                if child.is_file() and not any(part.startswith(".") for part in child.relative_to(path).parts):
                    add(child)
        elif glob.has_magic(text):
            matches = sorted(pathlib.Path(match) for match in glob.glob(str(path), recursive=True))
            if not matches:
                raise FileNotFoundError(f"{text} matches no file")
            for match in matches:
                if match.is_file():
                    add(match)
        else:
            raise FileNotFoundError(f"{text} does not exist")
    return found


def read(path, image_size) -> np.ndarray:
    """One file as uint8 (H, W, 3) of ``image_size`` (H, W), converted exactly as the datasets are.

    ValueError naming the file for a truncated file, a non-image or a format not in INPUT_FORMATS.
    """
    return decode_file(path, image_size=tuple(image_size), formats=INPUT_FORMATS)


def batches(paths, image_size, batch_size: int, on_error):
    """Yield (paths, uint8 (B, H, W, 3), files consumed so far) of up to ``batch_size`` readable files;
    ``on_error(path, message)`` is called for each unreadable one, which is left out."""
    chosen, images = [], []
    consumed = 0
    for consumed, path in enumerate(paths, start=1):
        try:
            images.append(read(path, image_size))
        except ValueError as error:
            on_error(path, str(error))
            continue
        chosen.append(path)
        if len(chosen) == batch_size:
            yield chosen, np.stack(images), consumed
            chosen, images = [], []
    if chosen:
        yield chosen, np.stack(images), consumed
