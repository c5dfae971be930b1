"""The three kinds of parts a `TrainingModel` step is composed of, and their registry.

- input transforms make views of the batch from the current weights (an attack mix, noise,
  generated images): ``views(model, x, y, step) -> list[View]``;
- loss terms add to the classification loss and are logged as a metric of their own name:
  ``__call__(model, views, outputs) -> scalar``;
- after-update hooks run right after ``optimizer.apply``: ``__call__(model, gradients, variables)``.

A part is a class registered under a name with ``@register_part(kind, name)`` and built from a spec
dict ``{"kind": ..., "name": ..., **options}``; a run's config.json keeps the specs, so a new part
needs no new config field, flag plumbing or train step.
"""
from __future__ import annotations

import dataclasses
from typing import Any

KINDS = ("transform", "loss", "hook")
ROUTES = ("clean", "adversarial")

_PARTS: dict[str, dict[str, type]] = {kind: {} for kind in KINDS}


@dataclasses.dataclass
class View:
    """One view of a batch: what goes through the forward pass, by which route, and what it stands for.

    images: float32 (B', H, W, C) in [0, 1]; labels: int32 (B',).
    route: "clean" or "adversarial": the statistics a route-aware norm layer (dual BN) uses.
    replaces: how many of the leading clean images (of those the transform was given) this view stands
        in for in the classification loss; 0 adds the view to the batch instead.
    in_loss: whether the classification loss counts the view.
    offset: set by the wrapper: where the images this view replaced start in the batch.
    """

    name: str
    images: Any
    labels: Any
    route: str = "clean"
    replaces: int = 0
    in_loss: bool = True
    offset: int = 0

    def __post_init__(self):
        if self.route not in ROUTES:
            raise ValueError(f"A view's route is one of {ROUTES}. Received: route={self.route!r}")


def register_part(kind: str, name: str):
    """Class decorator: register a part of ``kind`` under ``name`` (its ``name`` attribute is set too)."""
    if kind not in KINDS:
        raise ValueError(f"Unknown part kind {kind!r}. Known kinds: {', '.join(KINDS)}")

    def register(cls):
        if name in _PARTS[kind]:
            raise ValueError(f"A {kind} part named {name!r} is already registered.")
        cls.name = name
        _PARTS[kind][name] = cls
        return cls

    return register


def part_names(kind: str) -> list[str]:
    if kind not in KINDS:
        raise ValueError(f"Unknown part kind {kind!r}. Known kinds: {', '.join(KINDS)}")
    return sorted(_PARTS[kind])


def make_part(spec: dict):
    """Build a registered part from ``{"kind": ..., "name": ..., **options}``."""
    if not isinstance(spec, dict) or "kind" not in spec or "name" not in spec:
        raise ValueError(f'A part spec is {{"kind": ..., "name": ..., **options}}. Received: {spec!r}')
    options = {key: value for key, value in spec.items() if key not in ("kind", "name")}
    kind, name = spec["kind"], spec["name"]
    _import_builtin_parts()
    known = part_names(kind)
    if name not in known:
        raise ValueError(f"Unknown {kind} part {name!r}. Known: {', '.join(known) or 'none'}")
    try:
        return _PARTS[kind][name](**options)
    except TypeError as error:
        raise ValueError(f"Bad options for the {kind} part {name!r}: {error}") from None


def make_parts(specs) -> dict[str, list]:
    """{"transform": [...], "loss": [...], "hook": [...]} built from a list of specs, order kept."""
    parts = {kind: [] for kind in KINDS}
    for spec in specs or ():
        part = make_part(spec)  # validates the spec, kind included
        parts[spec["kind"]].append(part)
    return parts


def _import_builtin_parts() -> None:
    # The project's own parts register themselves on import; a spec read back from config.json
    # must find them without the caller importing each module.
    import importlib

    for module in ("training.adversarial", "training.regularizers", "training.gradient_monitor",
                   "training.synthetic"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name != module:
                raise
