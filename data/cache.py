"""Where decoded and extracted data lives, and how it is written without ever being half there."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pathlib
import shutil
import tempfile


def cache_dir() -> pathlib.Path:
    """The data cache: $ZOO_CACHE_DIR, else ~/.keras/datasets (where keras.utils.get_file caches)."""
    value = os.environ.get("ZOO_CACHE_DIR")
    path = pathlib.Path(value).expanduser() if value else pathlib.Path("~/.keras/datasets").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_key(**fields) -> str:
    """A short stable name for a cache entry: the hash of its JSON-encoded fields."""
    text = json.dumps(fields, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def source_identity(path: pathlib.Path) -> dict:
    """What identifies a source on disk: its real path, plus size and mtime for a file.

    A replaced zip (same name, new content) then gets a new cache entry instead of stale arrays.
    """
    path = path.resolve()
    identity = {"path": str(path)}
    if path.is_file():
        stat = path.stat()
        identity.update(size=stat.st_size, mtime_ns=stat.st_mtime_ns)
    return identity


@contextlib.contextmanager
def atomic_directory(final: pathlib.Path):
    """Yield a temporary folder next to ``final``; on success rename it to ``final`` in one step.

    A crash or an exception leaves only the temporary folder's removal to do, never a ``final``
    folder with some files missing, so "the folder exists" means "the entry is complete". If
    another process finished the same entry first, its folder is kept and ours is dropped.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    temporary = pathlib.Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield temporary
        try:
            os.replace(temporary, final)
        except OSError:
            if not final.is_dir():
                raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


class DatasetUnavailableError(FileNotFoundError):
    """A dataset could neither be found locally nor downloaded; the message says what to do."""


def one_line(error: BaseException) -> str:
    """An exception's message squeezed onto one line, for errors that wrap another."""
    return " ".join(str(error).split()) or type(error).__name__
