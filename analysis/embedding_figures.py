"""The t-SNE grid: a row per feature source, a column per perplexity, points coloured by class."""
from __future__ import annotations

import numpy as np


def draw(rows: list, labels: np.ndarray, names: dict, path):
    """rows: [{"features", "pca_components", "panels": [{"perplexity", "trustworthiness", "embedding"}]}];
    labels: int (N,); names: class index -> class word."""
    from common.plots import plt, save_figure

    columns = max(len(row["panels"]) for row in rows)
    figure, axes = plt.subplots(len(rows), columns, figsize=(3.0 * columns, 3.0 * len(rows) + 0.5), squeeze=False)
    colours = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    for row_index, row in enumerate(rows):
        best = max(panel["trustworthiness"] for panel in row["panels"])
        for column, panel in enumerate(row["panels"]):
            axis = axes[row_index, column]
            for colour, (label, name) in enumerate(names.items()):
                points = panel["embedding"][labels == label]
                axis.scatter(points[:, 0], points[:, 1], s=3, color=colours(colour % colours.N), label=name,
                             alpha=0.7, linewidths=0)
            marker = " (best)" if panel["trustworthiness"] == best and len(row["panels"]) > 1 else ""
            axis.set_title(f"{row['features']} ({row['pca_components']} PCs)\nperplexity {panel['perplexity']:g}, "
                           f"trust {panel['trustworthiness']:.3f}{marker}", fontsize=7)
            axis.set_xticks([])
            axis.set_yticks([])
        for column in range(len(row["panels"]), columns):
            axes[row_index, column].axis("off")
    handles, legend_labels = axes[0, 0].get_legend_handles_labels()
    figure.legend(handles, legend_labels, loc="lower center", ncol=min(len(names), 5), fontsize=7, markerscale=3,
                  frameon=False)
    figure.tight_layout(rect=(0, 0.05, 1, 1))
    return save_figure(figure, path, dpi=100)
