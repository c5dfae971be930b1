"""Figures drawn from run folders (matplotlib, no display needed)."""
from __future__ import annotations

import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from training.callbacks import read_history  # noqa: E402
from training.run_dir import atomic_path  # noqa: E402


def plot_history(history_csv: str | pathlib.Path, out_png: str | pathlib.Path, title: str = "") -> pathlib.Path:
    """Loss and accuracy per epoch, train against val, side by side."""
    rows = read_history(history_csv)
    if not rows:
        raise ValueError(f"{history_csv} holds no epochs to plot")
    epochs = [row["epoch"] + 1 for row in rows]
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, metric in zip(axes, ("loss", "accuracy")):
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
    out_png = pathlib.Path(out_png)
    with atomic_path(out_png) as temporary:
        figure.savefig(temporary, dpi=100)
    plt.close(figure)
    return out_png
