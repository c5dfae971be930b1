"""Where decoded and extracted data lives, how it is named, and how it is written without ever being half there."""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import pathlib
import shutil
import tempfile
import time

try:
    import fcntl  # POSIX: a lock the kernel drops when its owner dies, even on SIGKILL
except ImportError:  # pragma: no cover - Windows
    fcntl = None

TEMPORARY_MARK = ".tmp-"
LOCK_MARKER = ".locked"
NO_LOCK_MARKER = ".unlocked"  # the writer's file system has no locks
# A temporary folder without a marker is that young at most while its writer takes the lock;
# where locks are unavailable, a folder this much older than its last change is taken as abandoned.
UNLOCKED_GRACE_SECONDS = 60.0
ABANDONED_SECONDS = 24 * 3600.0


class DatasetUnavailableError(FileNotFoundError):
    """A dataset could neither be found locally nor downloaded; the message says what to do."""


def cache_dir() -> pathlib.Path:
    """The data cache: $ZOO_CACHE_DIR, else ~/.keras/datasets (where keras.utils.get_file caches).

    Checked before any data is read: a cache that is a file, cannot be created or cannot be
    written raises NotADirectoryError or PermissionError naming it, instead of failing halfway
    through a decode.
    """
    value = os.environ.get("ZOO_CACHE_DIR")
    path = pathlib.Path(value).expanduser() if value else pathlib.Path("~/.keras/datasets").expanduser()
    name = f"the data cache {path}" + (" (ZOO_CACHE_DIR)" if value else "")
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{name} is not a folder; set ZOO_CACHE_DIR to a writable folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        # os.access says yes to root on a read-only mount; writing a file is the real test.
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise
        reason = error.strerror or one_line(error)
        if error.errno in (errno.ENOTDIR, errno.EEXIST):  # a file where a parent folder should be
            raise NotADirectoryError(f"{name} cannot be created ({reason}); set ZOO_CACHE_DIR to a writable "
                                     "folder") from None
        raise PermissionError(f"{name} is not writable ({reason}); set ZOO_CACHE_DIR to a writable folder") from None
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


def files_digest(paths) -> str:
    """A digest of ``paths`` in order, with each file's size and mtime (not its bytes).

    Replacing, adding, removing or renaming a file changes it; one stat per file keeps it cheap
    enough to compute on every load of the 100,000 Tiny ImageNet training images.
    """
    digest = hashlib.sha256()
    for path in paths:
        stat = os.stat(path)
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def content_digest(path: pathlib.Path) -> str:
    """The sha256 of a (small) file's bytes: for the text files that say what every label means."""
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------------------
# Writing an entry in one step, and cleaning up after writers that were killed


@contextlib.contextmanager
def atomic_directory(final: pathlib.Path):
    """Yield a temporary folder next to ``final``; on success rename it to ``final`` in one step.

    A crash or an exception leaves only the temporary folder's removal to do, never a ``final``
    folder with some files missing, so "the folder exists" means "the entry is complete". If
    another process finished the same entry first, its folder is kept and ours is dropped. The
    temporary folder stays locked while this process lives, so a later start can tell the
    leftovers of a killed writer (``remove_stale_temporaries``) from a writer still at work.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(final.parent)
    temporary = pathlib.Path(tempfile.mkdtemp(prefix=f".{final.name}{TEMPORARY_MARK}", dir=final.parent))
    lock = _lock(temporary)
    try:
        yield temporary
        for marker in (LOCK_MARKER, NO_LOCK_MARKER):
            (temporary / marker).unlink(missing_ok=True)
        try:
            os.replace(temporary, final)
        except OSError:
            if not final.is_dir():
                raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
        if lock is not None:
            os.close(lock)


def _lock(folder: pathlib.Path) -> int | None:
    """Lock ``folder`` for this process's lifetime, then mark it as locked; the descriptor, or None."""
    if fcntl is None:  # pragma: no cover - Windows
        return None
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # a file system without locks: the folder is then judged by its age alone
        os.close(descriptor)
        (folder / NO_LOCK_MARKER).touch()
        return None
    # Written only once the lock is held: a lock that can be taken while the marker exists
    # means the writer is gone, never that it has not locked yet.
    (folder / LOCK_MARKER).touch()
    return descriptor


def _abandoned(folder: pathlib.Path) -> bool:
    """Whether the writer of temporary ``folder`` is gone (killed, or crashed before its cleanup)."""
    try:
        age = time.time() - folder.stat().st_mtime
    except FileNotFoundError:
        return False  # its writer finished (renamed or removed it) meanwhile
    if fcntl is None or (folder / NO_LOCK_MARKER).exists():
        return age > ABANDONED_SECONDS
    if not (folder / LOCK_MARKER).exists():
        # Written before locks existed, or its writer is between mkdtemp and the lock.
        return age > UNLOCKED_GRACE_SECONDS
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False  # a live process holds it
    finally:
        os.close(descriptor)
    return True


def remove_stale_temporaries(folder: pathlib.Path) -> list:
    """Remove the ``.NAME.tmp-*`` folders that killed writers left in ``folder``; return them.

    A decode killed halfway leaves one such folder (about 1.2 GB for the Tiny ImageNet train
    split); the folders of writers still running (in this or another process) are kept.
    """
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in folder.glob(f".*{TEMPORARY_MARK}*"):
        if path.is_dir() and not path.is_symlink() and _abandoned(path):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def one_line(error: BaseException) -> str:
    """An exception's message squeezed onto one line, for errors that wrap another."""
    return " ".join(str(error).split()) or type(error).__name__
