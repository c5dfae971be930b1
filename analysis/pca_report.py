"""The PCA analysis of a data set, end to end: load, compute (analysis.pca), summarise, draw, write."""
from __future__ import annotations

import time

import numpy as np

from analysis import pca, pca_figures


def explain_dataset(dataset: str, *, data_path=None, classes=None, per_class=None, limit=None, components=None,
                    per_image_sample: int = 2000, chunk: int = 1000, seed: int = 0, threads: int | None = None,
                    out, command: str = "", progress=print) -> dict:
    """Load the training split, compute both analyses, write pca.json, pca-dataset.png and pca-image.png.

    threads: BLAS threads for the covariance (None: OpenBLAS's default).
    """
    import data
    from common.run_folder import write_json

    started = time.perf_counter()
    split = data.load_dataset(dataset, "train", root=data_path, classes=classes, per_class=per_class)
    images = split.images
    if limit is not None and limit < len(images):
        chosen = np.sort(np.random.default_rng(seed).choice(len(images), limit, replace=False))
        images = images[chosen]
    loaded = time.perf_counter() - started
    progress(f"{len(images)} training images of {split.num_classes} classes, {images.shape[1:]} "
             f"({images.nbytes / 2**30:.2f} GiB uint8), loaded in {loaded:.0f} s")
    result = pca.dataset_spectra(images, chunk=chunk, progress=progress, threads=threads)
    result["seconds"]["load"] = loaded

    sample = np.sort(np.random.default_rng(seed).choice(len(images), min(per_image_sample, len(images)),
                                                        replace=False))
    per_image = pca.per_image_spectra(images[sample])
    summary = summarize(result, per_image, components)
    summary.update(dataset=dataset, classes=split.num_classes, command=command, blas_threads=threads,
                   image_shape=list(images.shape[1:]))
    paths = pca_figures.draw(result["eigenvalues"], per_image, images[sample[0]], out)
    summary["figures"] = [str(path) for path in paths]
    write_json(out / "pca.json", summary)
    progress(format_summary(summary))
    progress(f"wrote {out / 'pca.json'} and {', '.join(str(path) for path in paths)}")
    return summary


def summarize(result: dict, per_image: np.ndarray, components: int | None) -> dict:
    """The JSON payload: components per threshold, curves at log-spaced k, per-image statistics."""
    whole = {}
    for name, values in result["eigenvalues"].items():
        curve, report_curve = pca.retained(values), pca.retained(values, singular_sum=True)
        keep = len(curve) if components is None else min(components, len(curve))
        points = np.unique(np.geomspace(1, keep, num=min(keep, 200)).astype(int))
        whole[name] = {
            "dimensions": len(values),
            "components_for": {f"{share:.0%}": pca.components_for(curve, share) for share in pca.THRESHOLDS},
            "components_for_singular_value_sum": {f"{share:.0%}": pca.components_for(report_curve, share)
                                                  for share in pca.THRESHOLDS},
            "curve": {"components": points.tolist(), "retained": curve[points - 1].round(6).tolist()},
        }
    per_channel = {}
    for channel in range(per_image.shape[1]):
        name = pca.CHANNELS[channel] if per_image.shape[1] == 3 else f"channel {channel}"
        needed = pca.per_image_components(per_image[:, channel])
        report_needed = pca.per_image_components(per_image[:, channel], singular_sum=True)
        per_channel[name] = {"median": float(np.median(needed)), "mean": float(needed.mean()),
                             "quartiles": [float(q) for q in np.percentile(needed, [25, 75])],
                             "median_singular_value_sum": float(np.median(report_needed))}
    return {"images": result["images"], "seconds": {key: round(value, 1) for key, value in result["seconds"].items()},
            "whole_set": whole, "per_image_95": {"images": int(per_image.shape[0]),
                                                 "components_of": int(per_image.shape[-1]), **per_channel}}


def format_summary(summary: dict) -> str:
    lines = [f"{summary['images']} images; components for 90% / 95% / 99% of the variance:"]
    for name, entry in summary["whole_set"].items():
        counts = " / ".join(str(entry["components_for"][key]) for key in ("90%", "95%", "99%"))
        report = " / ".join(str(entry["components_for_singular_value_sum"][key]) for key in ("90%", "95%", "99%"))
        lines.append(f"  {name:>5} ({entry['dimensions']} dims): {counts}  (summing singular values: {report})")
    per_image = summary["per_image_95"]
    lines.append(f"per image and channel, components for 95% (of {per_image['components_of']}, "
                 f"{per_image['images']} images): " + ", ".join(
                     f"{name} median {per_image[name]['median']:g}" for name in per_image
                     if isinstance(per_image[name], dict)))
    lines.append("seconds: " + ", ".join(f"{key} {value}" for key, value in summary["seconds"].items()))
    return "\n".join(lines)
