"""A training history drawn as a figure: the plain matplotlib helper every trainer ends with."""
from __future__ import annotations

import os
import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from common.run_folder import atomic_path, read_history  # noqa: E402


def save_figure(figure, out_png: str | os.PathLike, dpi: int = 100) -> pathlib.Path:
    """Save ``figure`` atomically (making the folder) and close it."""
    out_png = pathlib.Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_png) as temporary:
        figure.savefig(temporary, dpi=dpi)
    plt.close(figure)
    return out_png


def plot_history(history_csv: str | os.PathLike, out_png: str | os.PathLike, title: str = "",
                 metrics: tuple[str, ...] = ("loss", "accuracy")) -> pathlib.Path:
    """``metrics`` per epoch (one panel each), train against val where both were logged."""
    rows = read_history(history_csv)
    if not rows:
        raise ValueError(f"{history_csv} holds no epochs to plot")
    epochs = [row["epoch"] + 1 for row in rows]
    figure, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4), squeeze=False)
    for axis, metric in zip(axes[0], metrics):
        for prefix, style in (("", "-"), ("val_", "--")):
            values = [row.get(prefix + metric) for row in rows]
            if any(value is not None for value in values):
                axis.plot(epochs, values, style, marker="o", markersize=3, label=f"{'val' if prefix else 'train'}")
        axis.set_xlabel("epoch")
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
        axis.legend()
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return save_figure(figure, out_png)
