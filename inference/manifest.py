"""What an export folder holds, and the SHA-256 digests that prove it is the folder export.py wrote.

model_card.json lists every other file of the folder with its size and digest; ``verify`` refuses
a folder where a listed file is missing, has changed, or an unlisted file has appeared.
"""
from __future__ import annotations

import hashlib
import pathlib

from common.run_folder import read_json

SAVED_MODEL = "saved_model"
TFLITE = "model.tflite"
LABELS = "labels.txt"
CARD_JSON = "model_card.json"
CARD_MARKDOWN = "model_card.md"
FORMATS = ("saved_model", "tflite")


def sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def files_of(folder: pathlib.Path) -> dict:
    """{relative path: {"bytes", "sha256"}} of every file under ``folder`` but the model card's JSON."""
    return {path.relative_to(folder).as_posix(): {"bytes": path.stat().st_size, "sha256": sha256(path)}
            for path in sorted(folder.rglob("*")) if path.is_file() and path.name != CARD_JSON}


def verify(folder) -> dict:
    """The model card of export ``folder`` once every file matches it; ValueError naming the first that does not."""
    folder = pathlib.Path(folder)
    card = read_json(folder / CARD_JSON)
    recorded = card.get("files")
    if card.get("format") not in FORMATS or not isinstance(recorded, dict) or not recorded:
        raise ValueError(f"{folder / CARD_JSON} is not an export's model card (no format or file list)")
    actual = files_of(folder)
    for name, entry in recorded.items():
        if name not in actual:
            raise ValueError(f"export {folder} is incomplete: {name} is missing")
        if actual[name] != entry:
            raise ValueError(f"export {folder} is corrupted: {name} does not match the SHA-256 in {CARD_JSON}; "
                             "export the run again")
    extra = sorted(set(actual) - set(recorded))
    if extra:
        raise ValueError(f"export {folder} holds a file its model card does not list: {extra[0]}")
    return card
