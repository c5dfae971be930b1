"""Saliency of trained runs against the ground-truth boxes: a figure per run and one scores table.

``explain_run`` loads a run and its validation images (with boxes), computes the maps of each
method for the true class, scores them with the pointing games of ``analysis.pointing_game`` and
draws image | map | overlay rows; ``render_table`` puts several runs side by side.
"""
from __future__ import annotations

import dataclasses
import pathlib
import time

import numpy as np

from analysis import pointing_game
from analysis.compare_robustness import training_mode
from analysis.saliency import METHODS, last_convolution, saliency_map
from loading.run_loader import load_run, load_split

METHOD_TITLES = {"vanilla": "vanilla gradient", "smoothgrad": "SmoothGrad", "gradcam": "Grad-CAM",
                 "gradcam++": "Grad-CAM++"}


@dataclasses.dataclass
class RunSaliency:
    """One run's scores: ``methods`` maps a method to pointing_game.scores(...) of its maps."""

    name: str
    model: str
    training: str
    accuracy: float  # top-1 on the scored images
    layer: str | None  # the layer the Grad-CAMs read, None without a Grad-CAM
    methods: dict
    figure: pathlib.Path | None

    def to_json(self) -> dict:
        payload = dataclasses.asdict(self)
        payload["figure"] = str(self.figure) if self.figure else None
        return payload


def explain_run(run_dir, methods=METHODS, *, figure_path=None, figure_images: int = 8, wnids=None,
                limit: int | None = None, tolerance: float = pointing_game.DEFAULT_TOLERANCE,
                data_path: str | None = None, batch_size: int = 64, progress=print, **options) -> RunSaliency:
    """Score ``methods`` on a run's validation images and draw its figure to ``figure_path`` (if given).

    limit: score only the first N validation images (default all of the run's classes);
    figure_images: how many images the figure shows, one per class in turn (or only of ``wnids``);
    options: passed to ``saliency_map`` (noise_level, samples, layer, seed).
    """
    for method in methods:
        if method not in METHODS:
            raise ValueError(f"Unknown saliency method {method!r}. Known methods: {', '.join(METHODS)}")
    run = load_run(run_dir)
    image_size = tuple(int(size) for size in run.model.inputs[0].shape[1:3])
    split = load_split(run.config, "val", image_size=image_size, data_path=data_path)
    if split.boxes is None:
        dataset = run.config.get("dataset", "tiny-imagenet")
        raise ValueError(f"dataset {dataset} has no bounding boxes: saliency scores need Tiny ImageNet")
    scored = np.arange(len(split)) if limit is None else np.arange(min(limit, len(split)))
    images = split.images[scored].astype(np.float32) / 255.0
    labels, boxes = split.labels[scored], split.boxes[scored]
    # Chosen before any map is computed, so a wrong wnid fails at once.
    chosen = figure_indices(labels, split.wnids, figure_images, wnids) if figure_path is not None else None
    logits = run.model.predict(images, batch_size=batch_size, verbose=0)
    predictions = np.argmax(logits, axis=-1)
    layer = None
    if any(method.startswith("gradcam") for method in methods):
        layer = options.get("layer") or last_convolution(run.model)
    results, maps_of = {}, {}
    for method in methods:
        started = time.perf_counter()
        maps = saliency_map(run.model, images, labels, method, batch_size=batch_size, **options)
        results[method] = pointing_game.scores(maps, boxes, tolerance)
        results[method]["seconds"] = round(time.perf_counter() - started, 1)
        maps_of[method] = maps
        progress(f"{run.name}: {METHOD_TITLES[method]} on {len(maps)} images in {results[method]['seconds']} s: "
                 f"pointing {100 * results[method]['pointing']:.1f}% "
                 f"(uniform {100 * results[method]['pointing_baseline']:.1f}%), "
                 f"energy {100 * results[method]['energy']:.1f}% "
                 f"(uniform {100 * results[method]['energy_baseline']:.1f}%)")
    figure = None
    if figure_path is not None:
        figure = draw_figure(images[chosen], boxes[chosen], labels[chosen], predictions[chosen],
                             {method: maps[chosen] for method, maps in maps_of.items()}, split.class_names,
                             figure_path, title=f"{run.name}: saliency of the true class, val images")
    return RunSaliency(name=run.name, model=str(run.config.get("model", run.model.name)),
                       training=training_mode(run.config), accuracy=float(np.mean(predictions == labels)),
                       layer=layer, methods=results, figure=figure)


def figure_indices(labels: np.ndarray, wnids: list, count: int, chosen_wnids=None) -> np.ndarray:
    """``count`` image indices, taking the classes in turn (only ``chosen_wnids`` if given)."""
    if chosen_wnids:
        unknown = [wnid for wnid in chosen_wnids if wnid not in wnids]
        if unknown:
            raise ValueError(f"unknown wnid {unknown[0]!r}: the run's classes are {', '.join(wnids)}")
        classes = [wnids.index(wnid) for wnid in chosen_wnids]
    else:
        classes = list(range(len(wnids)))
    pools = [list(np.flatnonzero(labels == label)) for label in classes]
    picked = []
    while len(picked) < count and any(pools):
        for pool in pools:
            if pool and len(picked) < count:
                picked.append(pool.pop(0))
    if not picked:
        raise ValueError("no scored image belongs to the chosen classes: raise --limit or choose other wnids")
    return np.array(picked)


def draw_figure(images, boxes, labels, predictions, maps: dict, class_names: list, path, title: str = ""):
    """Rows of image | (map, overlay with the box) per method; float images (N, H, W, 3) in [0, 1]."""
    from matplotlib import patches

    from common.plots import plt, save_figure

    columns = 1 + 2 * len(maps)
    figure, axes = plt.subplots(len(images), columns, figsize=(1.5 * columns, 1.6 * len(images) + 0.6),
                                squeeze=False)
    for row, image in enumerate(images):
        true_name = _short(class_names[labels[row]])
        predicted_name = _short(class_names[predictions[row]])
        mark = "" if labels[row] == predictions[row] else " (wrong)"
        axes[row, 0].imshow(image)
        axes[row, 0].set_title(f"true: {true_name}\npred: {predicted_name}{mark}", fontsize=6)
        for index, (method, method_maps) in enumerate(maps.items()):
            map_axis, overlay_axis = axes[row, 1 + 2 * index], axes[row, 2 + 2 * index]
            map_axis.imshow(method_maps[row], cmap="inferno", vmin=0, vmax=1)
            overlay_axis.imshow(image)
            overlay_axis.imshow(method_maps[row], cmap="jet", alpha=0.45, vmin=0, vmax=1)
            x0, y0, x1, y1 = boxes[row]
            for axis in (map_axis, overlay_axis):
                axis.add_patch(patches.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0 + 1, y1 - y0 + 1, fill=False,
                                                 edgecolor="lime", linewidth=1.2))
            if row == 0:
                map_axis.set_title(f"{METHOD_TITLES[method]}\nmap + box", fontsize=6)
                overlay_axis.set_title(f"{METHOD_TITLES[method]}\noverlay + box", fontsize=6)
    for axis in axes.ravel():
        axis.set_xticks([])
        axis.set_yticks([])
    if title:
        figure.suptitle(title, fontsize=8)
    figure.tight_layout()
    return save_figure(figure, path, dpi=72)  # photographs in PNG are large: keep the grid small


def _short(name: str) -> str:
    """The first of a words.txt entry's comma-separated names, at most 18 characters."""
    first = name.split(",")[0].strip()
    return first if len(first) <= 18 else first[:17] + "."


def render_table(results: list, *, tolerance: float, command: str = "") -> str:
    """A Markdown table: one row per run and method, scores beside the uniform-map baselines."""
    lines = [
        "| run | model | training | accuracy % | method | pointing % | uniform map % | energy % | uniform map % "
        "| images |",
        "| --- | --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for result in results:
        for method, score in result.methods.items():
            lines.append(
                f"| {result.name} | {result.model} | {result.training} | {100 * result.accuracy:.1f} "
                f"| {METHOD_TITLES[method]} | {100 * score['pointing']:.1f} | {100 * score['pointing_baseline']:.1f} "
                f"| {100 * score['energy']:.1f} | {100 * score['energy_baseline']:.1f} | {score['images']} |")
    layers = ", ".join(f"{result.name}: {result.layer}" for result in results if result.layer)
    notes = [
        "",
        f"Maps explain the true class. Pointing: a hit when the map's maximum lies within {tolerance:g} px of the "
        "box (Zhang et al. 2016's 15 px at 224 px, scaled to 64 px; tied maxima share the hit). Energy: the share "
        "of the map's mass inside the box. \"Uniform map\" is what a constant map scores: the box's area share "
        "(widened by the tolerance for pointing).",
    ]
    if layers:
        notes.append(f"Grad-CAM layers: {layers}.")
    if command:
        notes += ["", f"Command: `{command}`"]
    return "\n".join(lines + notes) + "\n"
