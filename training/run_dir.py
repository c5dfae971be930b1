"""Run folders, written so that a crash never leaves a half-written file."""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import pathlib
import tempfile

DEFAULT_RUNS_ROOT = pathlib.Path("runs")


def new_run_dir(model_name: str, run_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """``run_dir`` if given (it must not hold a run yet), else ``runs/<model>-<timestamp>``.

    The folder itself is made by the trainer once the data has loaded, so a bad ``--data``
    leaves nothing behind."""
    if run_dir is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = DEFAULT_RUNS_ROOT / f"{model_name}-{stamp}"
    else:
        path = pathlib.Path(run_dir)
    if (path / "config.json").exists():
        raise ValueError(f"Run folder {path} already holds a run: pass --resume {path} to continue it")
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path`` (same suffix); rename it onto ``path`` on success."""
    path = pathlib.Path(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=path.suffix, dir=path.parent)
    os.close(handle)
    temporary = pathlib.Path(temporary)
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_json(path: str | os.PathLike, payload: dict) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` atomically, making the parent folder first."""
    pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        temporary.write_text(text)


def read_json(path: str | os.PathLike) -> dict:
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
