"""One interface over every form of a trained model: uint8 images in, class probabilities out.

``load(target)`` takes a run folder (single model, ensemble, dual-BN run), a ``.keras`` file, or a
folder written by ``inference.export`` (SavedModel or TFLite); an export's files are checked against
the SHA-256 digests its model card records before anything is loaded, so a tampered or truncated
export is refused with the file named.
"""
from __future__ import annotations

import os
import pathlib

import numpy as np

from loading.run_loader import load_run
from inference import classes as class_lists
from inference import manifest


class Predictor:
    """``probabilities(uint8 (B, H, W, 3)) -> float32 (B, classes)``; ``image_size`` is (H, W)."""

    kind = "keras"

    def __init__(self, image_size, classes: class_lists.Classes, source: pathlib.Path):
        self.image_size, self.classes, self.source = tuple(image_size), classes, source

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class KerasPredictor(Predictor):
    """A Keras model (images float32 in [0, 1], logits out), run with ``model.predict``."""

    def __init__(self, model, classes, source):
        super().__init__(model.input_shape[1:3], classes, source)
        self.model = model

    def logits(self, images: np.ndarray) -> np.ndarray:
        return self.model.predict(images.astype(np.float32) / 255.0, batch_size=min(len(images), 64), verbose=0)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        return softmax(self.logits(images))


class SavedModelPredictor(Predictor):
    kind = "saved_model"

    def __init__(self, folder: pathlib.Path, classes, image_size):
        import tensorflow as tf

        super().__init__(image_size, classes, folder)
        self.module = tf.saved_model.load(str(folder / manifest.SAVED_MODEL))

    def outputs(self, images: np.ndarray) -> dict:
        return {name: value.numpy() for name, value in self.module.serve(images).items()}

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        return self.outputs(images)["probabilities"]


class TFLitePredictor(Predictor):
    kind = "tflite"

    def __init__(self, folder: pathlib.Path, classes, image_size, num_threads: int | None = None):
        super().__init__(image_size, classes, folder)
        self.runner = tflite_runner(folder / manifest.TFLITE, num_threads)

    def outputs(self, images: np.ndarray) -> dict:
        return self.runner(images=images)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        return self.outputs(images)["probabilities"].astype(np.float32)


def tflite_runner(path: pathlib.Path, num_threads: int | None = None):
    """The ``serve`` signature of a .tflite file; it resizes its input to each batch it is given."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # LiteRT is TFLite's runtime now; tf.lite.Interpreter is its deprecated copy
        from tensorflow.lite import Interpreter
    try:
        interpreter = Interpreter(model_path=str(path), num_threads=num_threads or os.cpu_count())
        return interpreter.get_signature_runner("serve")
    except (ValueError, RuntimeError) as error:
        raise ValueError(f"{path} is not a readable TFLite model with a 'serve' signature: {error}") from None


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.asarray(logits, np.float64) - np.max(logits, axis=-1, keepdims=True)
    exponentials = np.exp(shifted)
    return (exponentials / exponentials.sum(axis=-1, keepdims=True)).astype(np.float32)


def load(target, *, dataset: str | None = None, data_path=None, num_threads: int | None = None) -> Predictor:
    """The predictor of ``target``; ``dataset``/``data_path`` say where class names come from when the
    run's config does not (or override it)."""
    target = pathlib.Path(target)
    if target.is_dir() and (target / manifest.CARD_JSON).is_file():
        return load_export(target, num_threads=num_threads)
    if target.is_file() and (target.parent / "config.json").is_file():
        # model-adv-bn.keras or another model file of a run: its class names are the run's
        run = load_run(target.parent, model_file=target.name)
    else:
        run = load_run(target)
    count = int(run.model.output_shape[-1])
    return KerasPredictor(run.model, class_lists.of_run(run.config, count, dataset=dataset, root=data_path), target)


def load_export(folder, *, num_threads: int | None = None) -> Predictor:
    """A folder written by ``inference.export``, after checking every file against the model card."""
    folder = pathlib.Path(folder)
    card = manifest.verify(folder)
    classes = class_lists.Classes.from_text((folder / manifest.LABELS).read_text(), folder / manifest.LABELS)
    size = card["input"]["shape"][:2]
    if card["format"] == "saved_model":
        return SavedModelPredictor(folder, classes, size)
    return TFLitePredictor(folder, classes, size, num_threads)
