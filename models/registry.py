"""A timm-style registry: ``@register_model`` on a builder named like the model."""
from __future__ import annotations

import inspect
from typing import Callable

import keras

_BUILDERS: dict[str, Callable[..., keras.Model]] = {}


def register_model(builder: Callable[..., keras.Model]) -> Callable[..., keras.Model]:
    """Register ``builder`` under its function name."""
    name = builder.__name__
    if name in _BUILDERS:
        raise ValueError(f"A model named {name!r} is already registered.")
    _BUILDERS[name] = builder
    return builder


def names() -> list[str]:
    """The registered model names, sorted."""
    return sorted(_BUILDERS)


def get_builder(name: str) -> Callable[..., keras.Model]:
    if name not in _BUILDERS:
        raise ValueError(f"Unknown model {name!r}. Known models: {', '.join(names())}")
    return _BUILDERS[name]


def check_options(name: str, options: dict) -> None:
    """Raise ValueError naming every option in ``options`` that the builder ``name`` does not take."""
    accepted = inspect.signature(get_builder(name)).parameters
    if any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
        return
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        known = sorted(set(accepted) - {"num_classes", "input_shape"})
        raise ValueError(f"{name} takes no option {', '.join(unknown)}. Its options: {', '.join(known)}")


def build(name: str, num_classes: int = 200, input_shape=None, **options) -> keras.Model:
    """Build the registered model ``name`` (uncompiled, logits out).

    ``input_shape=None`` keeps the builder's own default (72x72 for the models whose
    seed upscaled its data). An option the builder does not take raises ValueError.
    """
    builder = get_builder(name)
    check_options(name, options)
    if input_shape is not None:
        options["input_shape"] = tuple(input_shape)
    return builder(num_classes=num_classes, **options)
