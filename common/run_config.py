"""One validation path for a run's settings, whoever hands them over: a command line, a ``--resume`` or
any loader of a run folder. A config.json is untrusted input (edited by hand, tampered, or from another
version), so every field is checked for type and range, and cross-checked, before anything acts on it;
a failure is a ``ValueError`` naming the source (the file or the flag) and the field:

    runs/x/config.json: `adversarial` must be a JSON object or null. Received: adversarial='fgsm'

Fields are checked by a schema (field -> check); other kinds of run (a GAN run) reuse ``check_fields``
with a schema of their own.
"""
from __future__ import annotations

import os
from typing import Callable

from common import checks
from common.cli import DATASETS

Check = Callable[[str, object], object]

# Images per dataset (train + val) and its classes: what a run of that dataset holds in memory at most.
DATASET_IMAGES = {"tiny-imagenet": (110_000, 200), "cifar10": (60_000, 10), "cifar100": (60_000, 100),
                  "svhn": (99_289, 10), "digits": (1_797, 10)}
STRATEGIES = ("default", "mirrored", "multi-worker")


def optional(check: Check) -> Check:
    return lambda name, value: None if value is None else check(name, value)


def one_of(*choices) -> Check:
    def check(name, value):
        if value not in choices:
            raise ValueError(f"`{name}` must be one of {', '.join(map(repr, choices))}. Received: {name}={value!r}")
        return value
    return check


def of_type(kind: type, label: str) -> Check:
    def check(name, value):
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise ValueError(f"`{name}` must be {label}. Received: {name}={value!r}")
        return value
    return check


def image_shape(name, value):
    if (not isinstance(value, list) or len(value) != 3
            or any(isinstance(side, bool) or not isinstance(side, int) or side < 1 for side in value)):
        raise ValueError(f"`{name}` must be [height, width, channels] of positive integers. Received: {name}={value!r}")
    return value


def parts_list(name, value):
    if not isinstance(value, list) or any(not isinstance(part, dict) or not isinstance(part.get("kind"), str)
                                          or not isinstance(part.get("name"), str) for part in value):
        raise ValueError(f"`{name}` must be a list of {{\"kind\": ..., \"name\": ...}} objects. "
                         f"Received: {name}={value!r}")
    return value


string, boolean, mapping = of_type(str, "a string"), of_type(bool, "true or false"), of_type(dict, "a JSON object")
DATA_FIELDS: dict[str, Check] = {
    "dataset": one_of(*DATASETS), "data": optional(string), "classes": optional(checks.positive_int),
    "per_class": optional(checks.positive_int), "num_classes": optional(checks.positive_int),
    "input_shape": optional(image_shape),
}
TRAIN_FIELDS: dict[str, Check] = {
    **DATA_FIELDS, "model": string, "recipe": mapping, "image_size": optional(checks.positive_int),
    "seed": checks.non_negative_int, "mixed_precision": boolean, "jit_compile": boolean, "tensorboard": boolean,
    "strategy": one_of(*STRATEGIES), "adversarial": optional(of_type(dict, "a JSON object or null")),
    "parts": parts_list, "model_options": mapping, "save_bn": one_of("main", "adv"), "phases": optional(string),
    "command": string,
}


def check_fields(payload: dict, schema: dict[str, Check], source: str) -> dict:
    """Check each field of ``payload`` that ``schema`` names; the first failure names ``source`` and the field."""
    if not isinstance(payload, dict):
        raise ValueError(f"{source}: must hold a JSON object, not {type(payload).__name__}")
    for name, check in schema.items():
        if name in payload:
            try:
                check(name, payload[name])
            except ValueError as error:
                raise ValueError(f"{source}: {error}") from None
    return payload


def memory_bytes() -> int:
    """This machine's physical memory."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_image_size(name: str, size, *, dataset: str = "tiny-imagenet", classes: int | None = None) -> int:
    """``size`` as a positive int small enough that the dataset's images at ``size`` x ``size`` (uint8 RGB,
    as the cache holds them) fit in this machine's memory: a mistyped 1000000 is refused here, not by NumPy."""
    size = checks.positive_int(name, size)
    images, dataset_classes = DATASET_IMAGES.get(dataset, DATASET_IMAGES["tiny-imagenet"])
    if classes:
        images = max(1, images * min(classes, dataset_classes) // dataset_classes)
    needed, available = images * size * size * 3, memory_bytes()
    if needed > available:
        raise ValueError(f"`{name}` is too large: {images:,} {dataset} images at {size}x{size} need "
                         f"{needed / 2**30:,.0f} GiB, more than this machine's {available / 2**30:,.0f} GiB. "
                         f"Received: {name}={size}")
    return size


def check_data_fields(payload: dict, source: str, *, image_size=None) -> dict:
    """The data fields any run folder's config has, and ``image_size`` (None: unknown) against memory."""
    check_fields(payload, DATA_FIELDS, source)
    if image_size is not None:
        try:
            check_image_size("image_size", image_size, dataset=payload.get("dataset", "tiny-imagenet"),
                             classes=payload.get("classes"))
        except ValueError as error:
            raise ValueError(f"{source}: {error}") from None
    return payload


def check_train_config(payload: dict, source: str) -> dict:
    """A train.py run's config (config.json, or what the flags make): every field, then the image size the
    run will use (its own, or on Tiny ImageNet its recipe's) against memory."""
    check_fields(payload, TRAIN_FIELDS, source)
    if not isinstance(payload.get("recipe"), dict):
        raise ValueError(f"{source}: the run's config has no recipe object. Received: recipe={payload.get('recipe')!r}")
    recipe_size = payload["recipe"].get("image_size") if payload.get("dataset", "tiny-imagenet") == "tiny-imagenet" \
        else None
    return check_data_fields(payload, source, image_size=payload.get("image_size") or recipe_size)


def is_gan_run(payload: dict) -> bool:
    """A gan.py run's config (it has a generator's latent size, which no classifier run has)."""
    return "latent_dim" in payload and "kind" in payload


def check_model_classes(output_classes: int, payload: dict, source: str) -> None:
    """A classifier run's model must predict the classes its config says the data has."""
    expected = payload.get("num_classes") or payload.get("classes")
    if expected is not None and int(output_classes) != int(expected):
        field = "num_classes" if payload.get("num_classes") else "classes"
        raise ValueError(f"{source}: `{field}` is {expected} but the run's model predicts {output_classes} classes")
