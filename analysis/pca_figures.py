"""The two PCA figures: whole-set retained-variance curves, and one image's per-channel PCA."""
from __future__ import annotations

import pathlib

import numpy as np

from analysis.pca import (CHANNELS, THRESHOLDS, components_for, per_image_components, reconstruct_channel,
                          retained)

COLOURS = {"all": "black", "red": "tab:red", "green": "tab:green", "blue": "tab:blue"}


def draw(eigenvalues: dict, per_image: np.ndarray, image: np.ndarray, out) -> list:
    """Write pca-dataset.png and pca-image.png into ``out``; image: uint8 (H, W, C), the per-image example."""
    out = pathlib.Path(out)
    return [draw_dataset(eigenvalues, out / "pca-dataset.png"), draw_image(per_image, image, out / "pca-image.png")]


def draw_dataset(eigenvalues: dict, path):
    """Cumulative retained variance against the number of components (log scale), 90/95/99% marked."""
    from common.plots import plt, save_figure

    figure, axis = plt.subplots(figsize=(6.4, 4.2))
    for name, values in eigenvalues.items():
        curve = retained(values)
        label = f"{name} ({len(values)} dims): " + " / ".join(str(components_for(curve, share)) for share in THRESHOLDS)
        axis.plot(np.arange(1, len(curve) + 1), curve, color=COLOURS.get(name), label=label,
                  linewidth=2 if name == "all" else 1.2)
    for share in THRESHOLDS:
        axis.axhline(share, color="grey", linestyle=":", linewidth=0.8)
    axis.set_xscale("log")
    axis.set_xlabel("principal components kept")
    axis.set_ylabel("share of variance retained")
    axis.set_ylim(0, 1.01)
    axis.grid(alpha=0.3, which="both")
    axis.legend(title="components for 90 / 95 / 99%", fontsize=7, title_fontsize=7, loc="lower right")
    axis.set_title("PCA of the training images (exact covariance spectrum)", fontsize=9)
    figure.tight_layout()
    return save_figure(figure, path, dpi=100)


def draw_image(per_image: np.ndarray, image: np.ndarray, path):
    """One image, its red channel rebuilt from the components for 95%, and per-image curves."""
    from common.plots import plt, save_figure

    red = image[..., 0].astype(np.float64) / 255.0
    squared = per_image[0, 0]
    needed = int(per_image_components(squared[None], 0.95)[0])
    figure, axes = plt.subplots(1, 4, figsize=(12, 3.2))
    axes[0].imshow(image)
    axes[0].set_title("image", fontsize=8)
    axes[1].imshow(red, cmap="Reds_r", vmin=0, vmax=1)
    axes[1].set_title("red channel", fontsize=8)
    axes[2].imshow(np.clip(reconstruct_channel(red, needed), 0, 1), cmap="Reds_r", vmin=0, vmax=1)
    axes[2].set_title(f"from {needed} of {len(squared)} components (95%)", fontsize=8)
    for axis in axes[:3]:
        axis.set_xticks([])
        axis.set_yticks([])
    counts = np.arange(1, per_image.shape[-1] + 1)
    totals = per_image.sum(axis=-1, keepdims=True)
    curves = np.cumsum(per_image, axis=-1) / np.where(totals > 0, totals, 1.0)
    for channel in range(per_image.shape[1]):
        name = CHANNELS[channel] if per_image.shape[1] == 3 else f"channel {channel}"
        low, median, high = np.percentile(curves[:, channel], [25, 50, 75], axis=0)
        axes[3].plot(counts, median, color=COLOURS.get(name), label=f"{name}: median of {len(per_image)} images")
        axes[3].fill_between(counts, low, high, color=COLOURS.get(name), alpha=0.15)
    axes[3].plot(counts, curves[0, 0], color="black", linestyle="--", label="this image, red")
    axes[3].axhline(0.95, color="grey", linestyle=":", linewidth=0.8)
    axes[3].set_xlabel("components kept (rows as samples)", fontsize=8)
    axes[3].set_ylabel("share of variance retained", fontsize=8)
    axes[3].set_xlim(1, min(32, per_image.shape[-1]))
    axes[3].legend(fontsize=6)
    axes[3].grid(alpha=0.3)
    figure.suptitle(f"Per-image PCA of one colour channel ({red.shape[0]} x {red.shape[1]} matrix, rows as samples); "
                    "band: quartiles", fontsize=9)
    figure.tight_layout()
    return save_figure(figure, path, dpi=100)
