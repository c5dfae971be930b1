"""The model card beside every export: what the model is, what it was trained on, what it expects,
how well it does, and how closely the export agrees with it (model_card.md for people, .json for tools)."""
from __future__ import annotations

import datetime
import pathlib

from common.run_folder import read_json, to_json, write_text
from inference import manifest

INPUT_CONTRACT = ("uint8 RGB images (batch, {height}, {width}, 3): decode, apply the EXIF orientation, composite "
                  "transparency on white and resize to {height}x{width} with a Lanczos filter (data.decode.to_array, "
                  "as training did); the graph divides by 255")


def build(run, *, fmt: str, quantize, classes, image_size, agreement: dict, command: str) -> dict:
    """The card's content, before the file list (added by ``write``)."""
    config = run.config
    metrics = _metrics(run.folder)
    height, width = image_size
    robustness = metrics.get("robustness") or {}
    return {
        "format": fmt,
        "quantize": quantize,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "model": {"name": config.get("model") or run.model.name, "run": str(run.folder),
                  "parameters": int(run.model.count_params()), "members": config.get("members")},
        "data": {"dataset": config.get("dataset"), "classes": len(classes), "per_class": config.get("per_class"),
                 "labels": manifest.LABELS},
        "input": {"name": "images", "dtype": "uint8", "shape": [height, width, 3],
                  "preprocessing": INPUT_CONTRACT.format(height=height, width=width)},
        "outputs": {"logits": f"float32 (batch, {len(classes)})",
                    "probabilities": f"float32 (batch, {len(classes)}), softmax of the logits"},
        "training": {"command": config.get("command"), "recipe": config.get("recipe"),
                     "adversarial": config.get("adversarial"), "parts": config.get("parts")},
        "evaluation": {key: metrics.get(key) for key in ("val_top1", "val_top3", "val_top5")},
        "robustness": {"n": robustness.get("n"), "clean": robustness.get("clean"), "eps": robustness.get("eps"),
                       "threat_model": robustness.get("threat_model"), "command": robustness.get("command")}
        if robustness else None,
        "agreement": agreement,
    }


def _metrics(folder) -> dict:
    path = pathlib.Path(folder or ".") / "metrics.json"
    return read_json(path) if folder and path.is_file() else {}


def write(folder: pathlib.Path, card: dict) -> None:
    """model_card.md, then model_card.json with the size and SHA-256 of every file (the .md included)."""
    write_text(folder / manifest.CARD_MARKDOWN, markdown(card, manifest.files_of(folder)))
    card["files"] = manifest.files_of(folder)
    write_text(folder / manifest.CARD_JSON, to_json(card))


def _percent(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def markdown(card: dict, files: dict) -> str:
    model, data, agreement = card["model"], card["data"], card["agreement"]
    evaluation = card["evaluation"]
    name = card["format"] + (f" ({card['quantize']})" if card["quantize"] else "")
    lines = [
        f"# {model['name']}: {name} export", "",
        f"Exported with `{card['command']}` on {card['created']} from `{model['run']}`.", "",
        "## Model", "",
        f"- {model['name']}, {model['parameters']:,} parameters"
        + (f"; an ensemble of {', '.join(model['members'])}" if model.get("members") else ""),
        f"- data: {data['dataset']}, {data['classes']} classes (`{data['labels']}`: id and name per line, in "
        f"output order)" + (f", {data['per_class']} training images per class" if data.get("per_class") else ""),
        f"- trained with `{card['training']['command']}`" if card["training"]["command"] else "- training command: n/a",
        "", "## Input and outputs", "",
        f"- input `{card['input']['name']}`: {card['input']['preprocessing']}",
        *[f"- output `{key}`: {value}" for key, value in card["outputs"].items()],
        "", "## Accuracy (the Keras model, validation split)", "",
        f"top-1 {_percent(evaluation['val_top1'])}, top-3 {_percent(evaluation['val_top3'])}, "
        f"top-5 {_percent(evaluation['val_top5'])}", "",
    ]
    robustness = card.get("robustness")
    if robustness and robustness.get("eps"):
        lines += ["## Robust accuracy (L-inf, from the run's evaluate.py)", "",
                  f"{robustness['n']} validation images, clean {_percent(robustness['clean'])}; "
                  f"`{robustness['command']}`", "", "| eps | " + " | ".join(_attacks(robustness)) + " |",
                  "| --- |" + " --- |" * len(_attacks(robustness))]
        for eps, row in robustness["eps"].items():
            cells = [_percent(row.get(attack)) for attack in _attacks(robustness)]
            lines.append(f"| {eps} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [
        "## Agreement of this export with the Keras model", "",
        f"On {agreement['images']} validation images: top-1 agreement {_percent(agreement['top1_agreement'])} "
        f"(required {_percent(agreement['required_top1_agreement'])}), max |logit difference| "
        f"{agreement['max_logit_difference']:.2e}"
        + (f" (allowed {agreement['max_logit_difference_allowed']:g})"
           if agreement["max_logit_difference_allowed"] is not None else ""), "",
        "## Files", "", "| file | bytes |", "| --- | --- |",
        *[f"| {path} | {entry['bytes']:,} |" for path, entry in files.items()], "",
        f"`{manifest.CARD_JSON}` also records each file's SHA-256; predict.py refuses an export that does not "
        "match it.",
    ]
    return "\n".join(lines) + "\n"


def _attacks(robustness: dict) -> list:
    return sorted({attack for row in robustness["eps"].values() for attack, value in row.items()
                   if isinstance(value, float)})
