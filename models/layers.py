"""Pieces every zoo builder shares: argument checks, the input normalisation, common constants.

The zoo uses built-in Keras layers plus a few custom ones (models.routes, models.parseval,
models.transfer), each registered with ``keras.saving.register_keras_serializable``: once ``models``
is imported, a saved ``model.keras`` reloads with ``keras.models.load_model(path, safe_mode=True)``.
"""
from __future__ import annotations

import numbers

import keras

from common import checks

NORMALIZATIONS = ("imagenet", "none")

# ImageNet statistics of images in [0, 1] (torchvision's values).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Keras' default BatchNormalization momentum (0.99) leaves the moving statistics mostly at their
# initial values after a few hundred steps, so a short run evaluates far worse than it trains.
# 0.9 (PyTorch's default, which the seed reports trained with) catches up within ~30 steps.
BATCH_NORM_MOMENTUM = 0.9


def check_common_arguments(num_classes, input_shape, normalization) -> tuple[int, int, int]:
    """Validate the arguments every builder takes; return ``input_shape`` as a tuple of ints."""
    checks.positive_int("num_classes", num_classes)
    try:
        shape = tuple(input_shape)
    except TypeError:
        raise ValueError(
            f"input_shape must be (height, width, channels). Received: input_shape={input_shape!r}"
        ) from None
    if len(shape) != 3 or any(
        isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1 for size in shape
    ):
        raise ValueError(
            "input_shape must be three positive integers (height, width, channels). "
            f"Received: input_shape={input_shape!r}"
        )
    if normalization not in NORMALIZATIONS:
        raise ValueError(
            f"normalization must be one of {NORMALIZATIONS}. Received: normalization={normalization!r}"
        )
    if normalization == "imagenet" and shape[2] != 3:
        raise ValueError(
            "normalization='imagenet' needs 3-channel inputs; use normalization='none'. "
            f"Received: input_shape={input_shape!r}"
        )
    return tuple(int(size) for size in shape)


def check_rate(name: str, value) -> float:
    """A dropout rate must lie in [0, 1)."""
    return checks.real_in_range(name, value, 0.0, 1.0, high_open=True)


def normalized_input(input_shape, normalization: str):
    """The model's ``Input`` (float32 images in [0, 1]) and the normalised tensor that follows it.

    The first layer after the input is always named ``input_normalization`` (an ``Identity`` for
    ``"none"``), so code that inspects models finds the same structure either way.
    """
    inputs = keras.Input(shape=input_shape, dtype="float32", name="image")
    if normalization == "imagenet":
        layer = keras.layers.Normalization(
            mean=list(IMAGENET_MEAN),
            variance=[std**2 for std in IMAGENET_STD],
            name="input_normalization",
        )
    else:
        layer = keras.layers.Identity(name="input_normalization")
    return inputs, layer(inputs)
