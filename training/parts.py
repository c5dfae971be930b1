"""The parts a `TrainingModel` step is composed of: three kinds, a base class each, and their registry.

- ``InputTransform`` makes views of the batch from the current weights (an attack mix, noise,
  generated images): ``views(model, x, y, step) -> list[View]``;
- ``LossTerm`` adds to the classification loss and is logged as a metric of its own name:
  ``__call__(model, views, outputs) -> scalar``, given only the views it names in ``views``;
- ``Hook`` runs right after ``optimizer.apply``: ``__call__(model, gradients, variables)``.

Every part (``Part``) may also override these hooks; the defaults do nothing:
- ``variables``: keras.Variables the part owns (schedule counters, monitors). The wrapper tracks them,
  so the resume backup (BackupAndRestore) saves and restores them with the weights.
- ``metrics``: keras.metrics the part updates itself; logged each training epoch, never in val logs.
- ``callbacks(run)``: Keras callbacks for the fit, given a ``RunContext`` (run folder, val split,
  seed): a guard that watches robust accuracy, a CSV writer for a monitor's records.
- ``checkpoints(base)``: further model files the run saves when val accuracy improves
  (``training.fit.Checkpoint``), beside model.keras.
- ``check_model(base)``: called with the built model before config.json is written; raises ValueError
  when the part cannot train it (a monitored layer it lacks, a generator of other classes).

A part is a class registered under a name with ``@register_part(kind, name)`` and built from a spec
dict ``{"kind": ..., "name": ..., **options}``; a run's config.json keeps the specs, so a new part
needs no new config field, flag plumbing or train step. Plugin modules (``common.plugins``) may
register parts too.
"""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

KINDS = ("transform", "loss", "hook")
ROUTES = ("clean", "adversarial")
# The views the wrapper makes itself: "clean" is the clean images no transform replaced (they count in the
# classification loss); "batch" is every clean image of the batch, replaced ones included (made only when a
# loss term asks for it, e.g. to compare an adversarial image's logits with its clean original's).
WRAPPER_VIEWS = ("clean", "batch")

_PARTS: dict[str, dict[str, type]] = {kind: {} for kind in KINDS}


@dataclasses.dataclass
class View:
    """One view of a batch: what goes through the forward pass, by which route, and what it stands for.

    images: float32 (B', H, W, C) in [0, 1]; labels: int32 (B',).
    route: "clean" or "adversarial": the statistics a route-aware norm layer (dual BN) uses.
    replaces: how many of the leading clean images (of those the transform was given) this view stands
        in for in the classification loss; 0 adds the view to the batch instead.
    in_loss: whether the classification loss counts the view.
    offset: set by the wrapper: where the images this view was made from start in the batch.
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


@dataclasses.dataclass
class RunContext:
    """What a part's callbacks may use: the run (or trial) folder, the val split, the run's seed."""

    run_dir: pathlib.Path
    val_split: Any = None  # data.Split
    seed: int = 0


class Part:
    """The hooks every part has, with defaults that do nothing (see the module docstring)."""

    kind: str = ""
    name: str = ""  # set by @register_part
    variables: tuple = ()
    metrics: tuple = ()

    def callbacks(self, run: RunContext) -> list:
        return []

    def checkpoints(self, base) -> list:
        return []

    def check_model(self, base) -> None:
        pass


class InputTransform(Part):
    """Makes views of the batch. ``views`` gets what is left of the clean batch after earlier transforms took
    their images; a view that ``replaces`` n images takes the n leading ones out of the clean view."""

    kind = "transform"

    def views(self, model, x, y, step) -> list[View]:
        raise NotImplementedError


class LossTerm(Part):
    """Adds ``__call__(model, views, outputs)`` to the loss. ``views`` names the views it needs: a transform's
    view name, "clean" (the clean images no transform replaced) or "batch" (every clean image); it gets
    ``views[name]`` (a View) and ``outputs[name]`` (logits), and ``outputs["features"][name][layer]`` for
    each layer in ``feature_layers``. A term never sees another view, so no part changes what it receives.
    ``bind(model)`` is called with the base model before ``feature_layers`` is read."""

    kind = "loss"
    views: tuple[str, ...] = ("clean",)
    feature_layers: tuple[str, ...] = ()

    def bind(self, model) -> None:
        pass

    def __call__(self, model, views: dict, outputs: dict):
        raise NotImplementedError


class Hook(Part):
    """Runs ``__call__(model, gradients, variables)`` after every update. A hook with ``after_update = False``
    takes no part in the step and only brings callbacks or checkpoints."""

    kind = "hook"
    after_update: bool = True

    def __call__(self, model, gradients, variables) -> None:
        pass


BASES = {"transform": InputTransform, "loss": LossTerm, "hook": Hook}


def register_part(kind: str, name: str):
    """Class decorator: register a part of ``kind`` under ``name`` (its ``name`` attribute is set too)."""
    if kind not in KINDS:
        raise ValueError(f"Unknown part kind {kind!r}. Known kinds: {', '.join(KINDS)}")

    def register(cls):
        if not (isinstance(cls, type) and issubclass(cls, BASES[kind])):
            raise ValueError(f"A {kind} part subclasses training.parts.{BASES[kind].__name__}. Received: {cls!r}")
        if name in _PARTS[kind]:
            raise ValueError(f"A {kind} part named {name!r} is already registered.")
        cls.name = name
        _PARTS[kind][name] = cls
        return cls

    return register


def part_names(kind: str) -> list[str]:
    if kind not in KINDS:
        raise ValueError(f"Unknown part kind {kind!r}. Known kinds: {', '.join(KINDS)}")
    _import_builtin_parts()
    return sorted(_PARTS[kind])


def make_part(spec: dict):
    """Build a registered part from ``{"kind": ..., "name": ..., **options}``."""
    if not isinstance(spec, dict) or "kind" not in spec or "name" not in spec:
        raise ValueError(f'A part spec is {{"kind": ..., "name": ..., **options}}. Received: {spec!r}')
    options = {key: value for key, value in spec.items() if key not in ("kind", "name")}
    kind, name = spec["kind"], spec["name"]
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
    # must find them without the caller importing each module. Plugins (ZOO_PLUGINS) come after.
    import importlib

    from common.plugins import import_plugins

    for module in ("training.adversarial", "training.regularizers", "training.gradient_monitor",
                   "training.synthetic", "training.exports"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name != module:
                raise
    import_plugins()
