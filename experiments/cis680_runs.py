"""The CIS680 experiments' training runs (through ``training.trainer``) and what is read back from them.

Every run is a normal run folder (config.json, history.csv, gradients.csv, model.keras, metrics.json);
a folder that already holds the same finished run is reused and an interrupted one is resumed, so an
interrupted experiment continues where it stopped and a rerun rebuilds its tables from the runs.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import pathlib

import numpy as np

from common.run_folder import read_history, read_json
from training.gradient_monitor import read_gradients

MONITOR_SPEC = {"kind": "hook", "name": "gradient_monitor", "layers": [], "every": None, "records_per_epoch": 20}
# Fields of a run's config that may differ between two runs of the same experiment setting.
_INCIDENTAL = ("command", "verbose")


@dataclasses.dataclass(frozen=True)
class Scale:
    """The data and recipe changes an experiment applies to every run (None: the recipe's own)."""

    dataset: str = "digits"
    data: str | None = None
    classes: int | None = None
    per_class: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    verbose: int | str = 2

    def describe(self) -> str:
        parts = [self.dataset if not self.data else f"tiny-imagenet ({self.data})"]
        if self.classes:
            parts.append(f"first {self.classes} classes")
        if self.per_class:
            parts.append(f"{self.per_class} training images per class")
        return ", ".join(parts)


def make_config(model: str, scale: Scale, seed: int, *, normalization: str = "imagenet", augment: str | None = None,
                command: str = ""):
    """A TrainConfig for ``model`` with the gradient monitor, the scale's data and recipe changes."""
    from models.registry import check_options
    from training import trainer
    from training.recipes import override

    config = trainer.default_config(model, dataset=scale.dataset, data=scale.data, classes=scale.classes,
                                    per_class=scale.per_class, seed=seed, verbose=scale.verbose, command=command,
                                    parts=[dict(MONITOR_SPEC)])
    config.recipe = override(config.recipe, epochs=scale.epochs, batch_size=scale.batch_size,
                             learning_rate=scale.learning_rate, augment=augment)
    config.model_options = {"normalization": normalization}
    check_options(model, config.model_options)
    return config


def _comparable(payload: dict) -> dict:
    return {key: value for key, value in payload.items() if key not in _INCIDENTAL}


def run_state(config, run_dir: pathlib.Path) -> str:
    """"new", "unfinished" or "finished"; a folder holding another setting's run is a ValueError."""
    if not (run_dir / "config.json").exists():
        return "new"
    from training.trainer import TrainConfig

    stored = TrainConfig.from_dict(read_json(run_dir / "config.json")).to_dict()
    if _comparable(stored) != _comparable(config.to_dict()):
        raise ValueError(f"{run_dir} holds a run with other settings; pass another --runs folder or delete it")
    return "finished" if (run_dir / "metrics.json").exists() else "unfinished"


def train_run(config, run_dir: pathlib.Path, label: str) -> pathlib.Path:
    """Train ``config`` into ``run_dir`` unless it is already there; resume it if it was interrupted."""
    from training import trainer

    state = run_state(config, run_dir)
    if state == "finished":
        print(f"{label}: reusing the finished run {run_dir}", flush=True)
        return run_dir
    print(f"{label}: {'resuming' if state == 'unfinished' else 'training'} {run_dir}", flush=True)
    # The monitor hook brings its own callback (GradientLog), which writes gradients.csv.
    trainer.train(config, run_dir, resume=state == "unfinished")
    return run_dir


def summarize(run_dir: pathlib.Path) -> dict:
    """Final-epoch numbers of a run and its first/last monitored layer's gradient in its first and last epoch."""
    history = read_history(run_dir / "history.csv")
    if not history:
        raise ValueError(f"{run_dir} has no history.csv rows")
    gradients = read_gradients(run_dir / "gradients.csv")
    columns = [key for key in (gradients[0] if gradients else {}) if key not in ("epoch", "step")]
    last = history[-1]
    summary = {"run": str(run_dir), "epochs": len(history), "train_loss": last["loss"],
               "train_accuracy": last["accuracy"], "test_accuracy": last.get("val_accuracy", math.nan),
               "gap": last["accuracy"] - last.get("val_accuracy", math.nan), "layers": columns}
    final_epoch = max((row["epoch"] for row in gradients), default=0)
    for position, column in zip(("first", "last"), (columns[:1] + columns[-1:]) if columns else []):
        for label, epoch in (("start", 0), ("end", final_epoch)):
            values = [row[column] for row in gradients if row["epoch"] == epoch and column in row]
            summary[f"gradient_{position}_{label}"] = float(np.mean(values)) if values else math.nan
    return summary


@contextlib.contextmanager
def deterministic_ops():
    """TensorFlow's deterministic kernels inside the block, so a rerun with the same seed gives the same table;
    the previous setting comes back afterwards (the public API can only switch it on)."""
    from tensorflow.python.framework import config

    enabled_before = config.is_op_determinism_enabled()
    config.enable_op_determinism()
    try:
        yield
    finally:
        if not enabled_before:
            config.disable_op_determinism()


def mean_std(values) -> tuple[float, float]:
    values = np.asarray([value for value in values if value is not None], dtype=float)
    if values.size == 0:
        return math.nan, math.nan
    return float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else 0.0


def cell(values, kind: str = "accuracy") -> str:
    """One table cell: the value, or mean ± std over seeds; accuracies in %, gradients in scientific notation."""
    mean, std = mean_std(values)
    if math.isnan(mean):
        return "n/a"
    if kind == "number":
        return f"{mean:.2f}" + (f" ± {std:.2f}" if len(values) > 1 else "")
    if kind == "accuracy":
        return f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if len(values) > 1 else "")
    return f"{mean:.2e}" + (f" ± {std:.1e}" if len(values) > 1 else "")


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    return "\n".join([*lines, *("| " + " | ".join(row) + " |" for row in rows)]) + "\n"


def data_tag(scale: Scale) -> str:
    """A folder name for the data an experiment used, e.g. digits or tiny-imagenet-10-100pc."""
    return scale.dataset + (f"-{scale.classes}" if scale.classes else "") + (
        f"-{scale.per_class}pc" if scale.per_class else "")


def write_report(out: pathlib.Path, name: str, title: str, scale: Scale, command: str, table: str, notes: str,
                 payload: dict) -> None:
    """``out/name.md`` (title, data, command, table, notes) and ``out/name.json``; the Markdown is printed too."""
    from common.run_folder import write_json, write_text

    text = f"# {title}\n\nData: {scale.describe()}. Command:\n\n    {command}\n\n{table}\n{notes}"
    write_text(out / f"{name}.md", text)
    write_json(out / f"{name}.json", {"command": command, "data": scale.describe(), **payload})
    print(text)
