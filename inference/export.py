"""Export a run for serving: a SavedModel or a TFLite file that takes raw uint8 pixels and returns
probabilities, checked against the Keras model on real validation images before it is kept.

The serving function ``serve(images)`` takes uint8 (B, H, W, 3) RGB images of the run's size (the
client brings them there with ``data.decode.to_array``, as predict.py does), divides by 255 inside
the graph and returns {"logits", "probabilities"}. It is written with ``keras.export.ExportArchive``;
TFLite files are converted from that SavedModel. Everything is written into a temporary folder
beside the destination and renamed onto it only after the checks pass.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import tempfile
import warnings

import numpy as np

from common.run_folder import TEMPORARY_MARK
from inference import manifest, model_card
from inference.classes import of_run
from inference.predictors import KerasPredictor, SavedModelPredictor, TFLitePredictor

QUANTIZATIONS = (None, "float16", "int8")
# Top-1 agreement with the Keras model each export must reach; float exports must also keep every logit.
REQUIRED_AGREEMENT = {None: 1.0, "float16": 0.995, "int8": 0.98}
MAX_LOGIT_DIFFERENCE = 1e-4
CHECK_IMAGES = 1000  # validation images each export is checked on (all of them for a smaller split)
REPRESENTATIVE_IMAGES = 200  # training images int8 calibration sees
BATCH_SIZE = 64


class ExportCheckError(RuntimeError):
    """An export disagreed with its Keras model more than allowed; nothing was kept."""


@dataclasses.dataclass
class Agreement:
    images: int
    top1_agreement: float
    max_logit_difference: float
    required_top1_agreement: float
    max_logit_difference_allowed: float | None

    @property
    def passed(self) -> bool:
        allowed = self.max_logit_difference_allowed
        within = allowed is None or self.max_logit_difference <= allowed
        return self.top1_agreement >= self.required_top1_agreement and within


def default_out(run_dir: pathlib.Path, fmt: str, quantize: str | None) -> pathlib.Path:
    return run_dir / ("export-" + fmt + (f"-{quantize}" if quantize else ""))


def temporary_prefix(out: pathlib.Path, pid: int) -> str:
    """Name of the hidden folder an export is built in: it carries its process id, so a later export can tell
    a folder a killed export left (its process is gone) from one being written now."""
    return f".{out.name}{TEMPORARY_MARK}{pid}-"


def remove_abandoned_exports(out: pathlib.Path) -> list[pathlib.Path]:
    """Delete the temporary folders that killed exports to ``out`` left beside it; return them."""
    removed = []
    for path in out.parent.glob(f".{out.name}{TEMPORARY_MARK}*"):
        pid = path.name[len(f".{out.name}{TEMPORARY_MARK}"):].split("-")[0]
        if path.is_dir() and pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def check_arguments(fmt: str, quantize: str | None) -> None:
    if fmt not in manifest.FORMATS:
        raise ValueError(f"Unknown export format {fmt!r}. Known formats: {', '.join(manifest.FORMATS)}")
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"Unknown quantization {quantize!r}. Known: float16, int8")
    if quantize and fmt != "tflite":
        raise ValueError(f"--quantize {quantize} is for --format tflite; a SavedModel keeps float32 weights")


def export_run(run, fmt: str, out, *, quantize: str | None = None, command: str = "", log=print) -> dict:
    """Export ``run`` (a ``loading.run_loader.LoadedRun`` of a run folder) as ``fmt`` into ``out``.

    Returns the model card. Raises ExportCheckError (nothing written) when the export disagrees with
    the Keras model on the validation images more than REQUIRED_AGREEMENT allows.
    """
    from loading.run_loader import load_split

    check_arguments(fmt, quantize)
    out = pathlib.Path(out)
    if out.exists():
        raise ValueError(f"{out} already exists: remove it or choose another --out")
    model = run.model
    size = tuple(model.input_shape[1:3])
    classes = of_run(run.config, int(model.output_shape[-1]))
    val = load_split(run.config, "val", image_size=size)
    check_images = _sample(val.images, CHECK_IMAGES, seed=0)
    representative = None
    if quantize == "int8":
        train = load_split(run.config, "train", image_size=size, per_class=run.config.get("per_class"))
        representative = _sample(train.images, REPRESENTATIVE_IMAGES, seed=1)

    out.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned_exports(out)
    temporary = pathlib.Path(tempfile.mkdtemp(prefix=temporary_prefix(out, os.getpid()), dir=out.parent))
    try:
        saved_model = temporary / manifest.SAVED_MODEL
        write_saved_model(model, saved_model)
        if fmt == "tflite":
            (temporary / manifest.TFLITE).write_bytes(convert_to_tflite(saved_model, quantize, representative))
            shutil.rmtree(saved_model)
        (temporary / manifest.LABELS).write_text(classes.to_text())
        log(f"checking the export on {len(check_images)} validation images")
        keras_logits = KerasPredictor(model, classes, run.folder).logits(check_images)
        exported = (SavedModelPredictor(temporary, classes, size) if fmt == "saved_model"
                    else TFLitePredictor(temporary, classes, size))
        agreement = measure_agreement(keras_logits, _logits(exported, check_images), quantize)
        if not agreement.passed:
            raise ExportCheckError(
                f"the {fmt}{' ' + quantize if quantize else ''} export disagrees with the Keras model on "
                f"{agreement.images} validation images: top-1 agreement {agreement.top1_agreement:.4f} (needs "
                f"{agreement.required_top1_agreement}), max |logit difference| {agreement.max_logit_difference:.2e}"
                + (f" (needs <= {MAX_LOGIT_DIFFERENCE})" if agreement.max_logit_difference_allowed else "")
                + "; nothing was written")
        card = model_card.build(run, fmt=fmt, quantize=quantize, classes=classes, image_size=size,
                                agreement=dataclasses.asdict(agreement), command=command)
        model_card.write(temporary, card)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o777 & ~umask)  # mkdtemp's folder is private; the export is not
        temporary.rename(out)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return card


def write_saved_model(model, path: pathlib.Path) -> None:
    """A SavedModel whose ``serve`` endpoint (also ``serving_default``) takes uint8 pixels."""
    import keras
    import tensorflow as tf

    height, width = model.input_shape[1:3]

    @tf.function(input_signature=[tf.TensorSpec((None, height, width, 3), tf.uint8, name="images")])
    def serve(images):
        logits = model(tf.cast(images, tf.float32) / 255.0, training=False)
        return {"logits": logits, "probabilities": tf.nn.softmax(logits)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", serve)
    archive.write_out(str(path), verbose=False)


def convert_to_tflite(saved_model: pathlib.Path, quantize: str | None, representative=None) -> bytes:
    """The ``serve`` signature as a TFLite flatbuffer: float32, float16 weights, or int8 calibrated on
    ``representative`` (uint8 images, one per calibration step)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=["serve"])
    if quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int8":
        converter.representative_dataset = lambda: ({"images": image[None]} for image in representative)
    with warnings.catch_warnings():
        # Calibration runs TensorFlow's own copy of the interpreter, which warns that it is deprecated.
        warnings.filterwarnings("ignore", message=r"(?s).*tf\.lite\.Interpreter is deprecated")
        return converter.convert()


def measure_agreement(reference: np.ndarray, exported: np.ndarray, quantize: str | None) -> Agreement:
    return Agreement(
        images=len(reference),
        top1_agreement=float(np.mean(np.argmax(reference, -1) == np.argmax(exported, -1))),
        max_logit_difference=float(np.max(np.abs(reference - exported))),
        required_top1_agreement=REQUIRED_AGREEMENT[quantize],
        max_logit_difference_allowed=None if quantize else MAX_LOGIT_DIFFERENCE)


def _logits(predictor, images: np.ndarray) -> np.ndarray:
    return np.concatenate([predictor.outputs(images[start:start + BATCH_SIZE])["logits"]
                           for start in range(0, len(images), BATCH_SIZE)]).astype(np.float32)


def _sample(images: np.ndarray, count: int, seed: int) -> np.ndarray:
    """A fixed random ``count`` of ``images`` in their order (all of them when there are fewer)."""
    if len(images) <= count:
        return np.asarray(images)
    return np.asarray(images[np.sort(np.random.default_rng(seed).choice(len(images), count, replace=False))])
