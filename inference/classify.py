"""Classify image files with a predictor: top-k rows, printed or written as CSV/JSON."""
from __future__ import annotations

import csv
import dataclasses
import io
import pathlib

import numpy as np

from common.run_folder import write_json, write_text
from inference import inputs

OUT_SUFFIXES = (".csv", ".json")


@dataclasses.dataclass
class Prediction:
    path: str
    labels: list  # class indices, most probable first
    ids: list
    names: list
    probabilities: list


def classify(predictor, paths, *, top: int, batch_size: int, on_error, on_batch=None) -> list[Prediction]:
    """The ``top`` classes of each readable file of ``paths``; ``on_error(path, message)`` for each other.

    ``on_batch(paths, images, probabilities, consumed)`` sees every batch (uint8 images as the model
    got them), for progress and saliency.
    """
    classes = predictor.classes
    results = []
    for chosen, images, consumed in inputs.batches(paths, predictor.image_size, batch_size, on_error):
        probabilities = predictor.probabilities(images)
        # argsort of the negated values: ties keep label order, as np.argmax does for the top-1
        ranked = np.argsort(-probabilities, axis=-1, kind="stable")[:, :top]
        for path, order, row in zip(chosen, ranked, probabilities):
            results.append(Prediction(str(path), order.tolist(), [classes.ids[i] for i in order],
                                      [classes.names[i] for i in order], [float(row[i]) for i in order]))
        if on_batch:
            on_batch(chosen, images, probabilities, consumed)
    return results


def format_text(predictions: list[Prediction]) -> str:
    """Per image: its path, then one line per class: rank, probability, id (when it is not the name), name."""
    lines = []
    for prediction in predictions:
        lines.append(prediction.path)
        for rank, (class_id, name, probability) in enumerate(
                zip(prediction.ids, prediction.names, prediction.probabilities), start=1):
            label = name if class_id == name else f"{class_id}  {name}"
            lines.append(f"  {rank}. {probability:7.2%}  {label}")
    return "\n".join(lines)


def check_out(path) -> pathlib.Path:
    path = pathlib.Path(path)
    if path.suffix.lower() not in OUT_SUFFIXES:
        raise ValueError(f"--out must end in .csv or .json. Received: {path}")
    if path.is_dir():
        raise IsADirectoryError(f"--out {path} is a folder; name a .csv or .json file")
    return path


def write(path, predictions: list[Prediction], failures: list, *, model: str) -> None:
    """One row per image (CSV: path, then id/name/probability per rank) or a JSON document that also
    lists the files that could not be read."""
    path = pathlib.Path(path)
    if path.suffix.lower() == ".json":
        write_json(path, {"model": model, "predictions": [dataclasses.asdict(row) for row in predictions],
                          "failed": [{"path": str(failed), "error": message} for failed, message in failures]})
        return
    top = max((len(row.ids) for row in predictions), default=0)
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["path", *[f"{field}_{rank}" for rank in range(1, top + 1)
                               for field in ("id", "name", "probability")]])
    for row in predictions:
        writer.writerow([row.path, *[value for triple in zip(row.ids, row.names, row.probabilities)
                                     for value in (triple[0], triple[1], f"{triple[2]:.6f}")]])
    write_text(path, text.getvalue())
