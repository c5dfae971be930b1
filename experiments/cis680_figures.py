"""The CIS680 experiments' figures, drawn from run folders (history.csv, gradients.csv) and arrays."""
from __future__ import annotations

import math
import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from common.plots import save_figure  # noqa: E402
from common.run_folder import read_history  # noqa: E402
from training.gradient_monitor import read_gradients  # noqa: E402

COLORS = plt.rcParams["axes.prop_cycle"].by_key()["color"]


def _positive(values):
    # A log axis cannot show 0; NaN leaves a gap instead of a misleading point.
    return [value if value and value > 0 else math.nan for value in values]


def vanishing_figure(runs: dict[str, list[pathlib.Path]], out_png, title: str) -> pathlib.Path:
    """Accuracy per epoch (train solid, test dashed) and the first/last layer's mean |gradient| per step
    (log scale), one colour per model, one line per seed."""
    figure, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for index, (model, folders) in enumerate(runs.items()):
        color = COLORS[index % len(COLORS)]
        for seed_index, folder in enumerate(folders):
            label = model if seed_index == 0 else None
            history = read_history(folder / "history.csv")
            epochs = [row["epoch"] + 1 for row in history]
            axes[0].plot(epochs, [row["accuracy"] for row in history], "-", color=color,
                         label=label and f"{label} train")
            axes[0].plot(epochs, [row.get("val_accuracy") for row in history], "--", color=color,
                         label=label and f"{label} test")
            gradients = read_gradients(folder / "gradients.csv")
            columns = [key for key in gradients[0] if key not in ("epoch", "step")] if gradients else []
            steps = [row["step"] for row in gradients]
            for axis, column in zip(axes[1:], columns[:1] + columns[-1:]):
                axis.plot(steps, _positive([row.get(column) for row in gradients]), color=color, alpha=0.8,
                          label=label and f"{label} ({column})")
    axes[0].set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    axes[1].set(xlabel="training step", ylabel="mean |dL/dW|", title="first convolution", yscale="log")
    axes[2].set(xlabel="training step", ylabel="mean |dL/dW|", title="last convolution", yscale="log")
    for axis in axes:
        axis.grid(alpha=0.3, which="both")
        axis.legend(fontsize=7)
    figure.suptitle(title)
    figure.tight_layout()
    return save_figure(figure, out_png)


def preprocessing_figure(runs: dict[str, list[pathlib.Path]], out_png, title: str) -> pathlib.Path:
    """Train loss, train accuracy and test accuracy per epoch, one colour per setting, one line per seed."""
    panels = (("loss", "train loss"), ("accuracy", "train accuracy"), ("val_accuracy", "test accuracy"))
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for index, (setting, folders) in enumerate(runs.items()):
        color = COLORS[index % len(COLORS)]
        for seed_index, folder in enumerate(folders):
            history = read_history(folder / "history.csv")
            epochs = [row["epoch"] + 1 for row in history]
            for axis, (key, _) in zip(axes, panels):
                axis.plot(epochs, [row.get(key) for row in history], color=color, alpha=0.85,
                          label=setting if seed_index == 0 else None)
    for axis, (_, name) in zip(axes, panels):
        axis.set(xlabel="epoch", title=name)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    return save_figure(figure, out_png)


def pair_figure(original, adversarial, *, true_name: str, target_name: str, p_true: float, p_target: float,
                steps: int, success: bool, out_png) -> pathlib.Path:
    """Original, perturbation (magnified to fill [0, 1]) and adversarial image of one pair.

    original, adversarial: float (H, W, 3) in [0, 1]."""
    perturbation = adversarial - original
    scale = float(np.abs(perturbation).max())
    magnified = 0.5 + 0.5 * perturbation / scale if scale > 0 else np.full_like(original, 0.5)
    figure, axes = plt.subplots(1, 3, figsize=(7.5, 2.9))
    panels = ((original, f"original: {true_name}\np({true_name}) = {p_true:.3f}"),
              (magnified, f"perturbation ×{0.5 / scale:.3g}\nL∞ = {255 * scale:.1f}/255" if scale > 0
               else "no perturbation"),
              (adversarial, f"adversarial{'' if success else ' (FAILED)'}\n"
                            f"p({target_name}) = {p_target:.3f}, {steps} steps"))
    for axis, (image, caption) in zip(axes, panels):
        axis.imshow(np.clip(image, 0.0, 1.0), interpolation="nearest")
        axis.set_title(caption, fontsize=8)
        axis.axis("off")
    figure.tight_layout()
    return save_figure(figure, out_png)
