"""Run folders, written so that a crash never leaves a half-written file.

Every file goes through ``atomic_path``: written under a hidden temporary name beside its target
(``.model.keras.tmp-XXXX.keras``), then renamed. A kill mid-write leaves only such a temporary,
which ``remove_leftovers`` deletes on the next start.
"""
from __future__ import annotations

import contextlib
import csv
import datetime
import fcntl
import json
import math
import os
import pathlib
import shutil
import tempfile

DEFAULT_RUNS_ROOT = pathlib.Path("runs")
TEMPORARY_MARK = ".tmp-"
LOCK_NAME = ".lock"


def new_run_dir(model_name: str, run_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """``run_dir`` if given (it must not hold a run yet), else ``runs/<model>-<timestamp>``.

    The folder itself is made by the trainer once the data has loaded, so a bad ``--data``
    leaves nothing behind."""
    if run_dir is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = DEFAULT_RUNS_ROOT / f"{model_name}-{stamp}"
    else:
        path = pathlib.Path(run_dir)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"--run-dir {path} is a file, not a folder")
    if (path / "metrics.json").exists():
        raise ValueError(f"Run folder {path} holds a finished run; choose another --run-dir")
    if (path / "config.json").exists():
        raise ValueError(f"Run folder {path} already holds a run: pass --resume {path} to continue it")
    check_writable(path)
    return path


def check_writable(folder: pathlib.Path) -> None:
    """Raise a one-line error if ``folder`` (or the nearest existing parent) cannot be written."""
    existing = pathlib.Path(folder)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise NotADirectoryError(f"{existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"{existing} is not writable")


# ------------------------------------------------------------------------ one writer per folder
class FolderInUse(ValueError):
    """Another process holds the run folder's lock."""


_held: dict[str, list] = {}  # real path -> [lock file descriptor, nesting depth] of the locks this process holds


def refuse_symlinks(folder: str | os.PathLike) -> None:
    """Raise if anything inside ``folder`` is a symbolic link.

    Keras' CSVLogger, BackupAndRestore and every ``open`` follow links, so a planted ``history.csv`` or
    ``backup/`` link would send a run's writes (or BackupAndRestore's final rmtree) to a file elsewhere.
    The folder itself may be a link (a runs/ folder on another disk); nothing inside it may."""
    for root, directories, files in os.walk(folder):  # os.walk never descends into a linked folder
        for name in directories + files:
            path = pathlib.Path(root, name)
            if path.is_symlink():
                raise ValueError(f"{path} is a symbolic link: a run folder's files are never written through "
                                 "links; replace it with a real file or folder")


def _holder(lock_path: pathlib.Path) -> str:
    try:
        pid = lock_path.read_text().strip()
    except OSError:
        pid = ""
    return f"process {pid}" if pid.isdigit() else "another process"


@contextlib.contextmanager
def hold_run_folder(folder: str | os.PathLike, *, create: bool = False):
    """Hold ``folder``'s exclusive writer lock (``fcntl.flock`` on ``folder/.lock``) while the block runs.

    Taken before anything in the folder is read or written, so two commands on one folder never
    interleave; the OS releases it when the process dies, so a killed run never blocks its resume.
    A second process is refused with ``FolderInUse`` naming the holder's pid. Re-entrant within a
    process (the CLI and ``fit_into_run`` both hold it). ``create`` makes a missing folder; one that
    this call made and that is still empty at the end is removed, so a refused new run leaves nothing.
    Anything inside the folder that is a symbolic link is refused first (``refuse_symlinks``)."""
    folder = pathlib.Path(folder)
    key = os.path.realpath(folder)
    if key in _held:
        _held[key][1] += 1
        try:
            yield folder
        finally:
            _held[key][1] -= 1
        return
    made = []
    if not folder.is_dir():
        if not create:
            raise FileNotFoundError(f"{folder} does not exist or is not a folder")
        check_writable(folder)
        missing = folder
        while not missing.exists():
            made.append(missing)
            missing = missing.parent
        folder.mkdir(parents=True, exist_ok=True)
        key = os.path.realpath(folder)
    refuse_symlinks(folder)
    lock_path = folder / LOCK_NAME
    descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, _umask_mode())
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderInUse(f"{folder} is in use by {_holder(lock_path)}: one command at a time writes a "
                              "run folder; wait for it to end or stop it") from None
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{os.getpid()}\n".encode())
        _held[key] = [descriptor, 1]
        try:
            yield folder
        finally:
            del _held[key]
            if made and [path.name for path in folder.iterdir()] == [LOCK_NAME]:
                lock_path.unlink()
                for path in made:  # innermost first; only the folders this call made, and only when empty
                    with contextlib.suppress(OSError):
                        path.rmdir()
    finally:
        os.close(descriptor)  # releases the lock


def _umask_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path`` (same suffix); rename it onto ``path`` on success.

    The file gets the mode an ordinary ``open`` would give it (0666 less the umask), not
    ``mkstemp``'s private 0600."""
    path = pathlib.Path(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}{TEMPORARY_MARK}", suffix=path.suffix, dir=path.parent)
    os.close(handle)
    temporary = pathlib.Path(temporary)
    try:
        yield temporary
        if temporary.is_file():
            os.chmod(temporary, _umask_mode())
        os.replace(temporary, path)
    finally:
        if temporary.is_dir():
            shutil.rmtree(temporary, ignore_errors=True)
        else:
            temporary.unlink(missing_ok=True)


def remove_leftovers(folder: str | os.PathLike) -> list[pathlib.Path]:
    """Delete the temporaries a killed write left in ``folder`` (and its subfolders); return them."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        return []
    found = [path for path in folder.rglob(f".*{TEMPORARY_MARK}*") if path.is_file()]
    for path in found:
        path.unlink(missing_ok=True)
    return found


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def to_json(payload) -> str:
    """Strict JSON text: NaN and infinities become null (no file the project writes holds them)."""
    return json.dumps(_finite(payload), indent=2, sort_keys=True, default=str, allow_nan=False) + "\n"


def write_json(path: str | os.PathLike, payload: dict) -> None:
    """Write ``payload`` as strict JSON (``to_json``) atomically, making the parent folder first."""
    pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        temporary.write_text(to_json(payload))


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` atomically, making the parent folder first."""
    pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        temporary.write_text(text)


def read_json(path: str | os.PathLike) -> dict:
    path = pathlib.Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder, not a JSON file")
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        payload = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(payload, dict):
        raise ValueError(f"{path} must hold a JSON object, not a {type(payload).__name__}")
    return payload


# ------------------------------------------------------------------------------------ history
def read_history(path: str | os.PathLike) -> list[dict]:
    """Rows of a CSVLogger file as dicts of floats (epoch as int); [] if there is none or it is empty."""
    path = pathlib.Path(path)
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [{key: (int(value) if key == "epoch" else float(value)) for key, value in row.items()
             if value not in ("", None, "NA") and key is not None} for row in rows]  # CSVLogger: "NA" = not logged


def write_history(path: str | os.PathLike, rows: list[dict]) -> None:
    """Write history rows as CSV atomically; no rows removes the file (CSVLogger starts it afresh)."""
    path = pathlib.Path(path)
    if not rows:
        path.unlink(missing_ok=True)
        return
    fields = []
    for row in rows:
        fields += [key for key in row if key not in fields]
    with atomic_path(path) as temporary, temporary.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(rows)


def trim_history(path: str | os.PathLike, epochs_done: int) -> list[dict]:
    """Keep the rows of the first ``epochs_done`` epochs (those a backup holds); return them.

    A file a kill left empty or header-only is removed, so the next CSVLogger starts it afresh."""
    rows = [row for row in read_history(path) if row["epoch"] < epochs_done]
    write_history(path, rows)
    return rows
