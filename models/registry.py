"""A timm-style registry: ``@register_model`` on a builder named like the model."""
from __future__ import annotations

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


def build(name: str, num_classes: int = 200, input_shape=(64, 64, 3), **options) -> keras.Model:
    """Build the registered model ``name`` (uncompiled, logits out)."""
    return get_builder(name)(num_classes=num_classes, input_shape=tuple(input_shape), **options)
