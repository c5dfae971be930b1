"""Attacks by name: the one registry that adversarial training, evaluate.py, AutoAttack and the tuner read.

    @register_attack("pgd")
    def pgd(*, eps, steps=10, step_size=None, restarts=1, norm="inf"):
        return lambda model, x, y, seed: core.pgd(model, x, y, eps=eps, ...)

    attack = make_attack("pgd", eps=8 / 255, steps=10, snr_db=None)   # options it does not declare are left out
    x_adv = attack(model, x, y, seed)

A registered attack is a factory. Its keyword parameters are the options it declares (from the pool
eps, steps, step_size, restarts, targets, queries, p_init, eot, norm, snr_db); ``make_attack`` passes it
only those, so a caller (the attack mix, evaluate.py, AutoAttack) hands every attack the same settings.
What the factory returns follows one calling convention: ``attack(model, x, y, seed) -> x_adv``, with x
float32 NHWC in [0, 1], a model returning logits and called with ``training=False``, y int labels (or
None: the model's own predictions), seed an int or a (2,) integer tensor (or None), x_adv float32 in [0, 1].

Each attack also declares:
- ``sweep``: what evaluate.py varies it over: "eps" (L∞ radii) or "snr" (signal-to-noise ratios, dB);
- ``overfitting_guard``: training with it adds the catastrophic-overfitting guard (single-step attacks
  from a random start, Wong et al. 2020, "Fast is better than free").

Attacks from outside the project are registered by a plugin module (``common.plugins``: ZOO_PLUGINS).
"""
from __future__ import annotations

import dataclasses
import inspect
import re
from typing import Callable

import attacks.apgd as apgd_module
import attacks.core as core
import attacks.square as square_module
from common.plugins import import_plugins

SWEEPS = ("eps", "snr")
OPTIONS = ("eps", "steps", "step_size", "restarts", "targets", "queries", "p_init", "eot", "norm", "snr_db")


@dataclasses.dataclass(frozen=True)
class AttackInfo:
    """A registered attack: its factory and what it declares."""

    name: str
    factory: Callable
    sweep: str = "eps"
    overfitting_guard: bool = False

    @property
    def options(self) -> tuple[str, ...]:
        return tuple(inspect.signature(self.factory).parameters)

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(name for name, parameter in inspect.signature(self.factory).parameters.items()
                     if parameter.default is inspect.Parameter.empty)

    @property
    def summary(self) -> str:
        return (inspect.getdoc(self.factory) or self.name).splitlines()[0]


_ATTACKS: dict[str, AttackInfo] = {}


def register_attack(name: str, *, sweep: str = "eps", overfitting_guard: bool = False):
    """Decorator: register ``factory(**options) -> attack(model, x, y, seed)`` under ``name``."""
    if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_-]*", name) or name == "autoattack":
        raise ValueError(f"An attack name is lower-case letters, digits, '_' or '-' (not 'autoattack'). "
                         f"Received: name={name!r}")
    if sweep not in SWEEPS:
        raise ValueError(f"`sweep` is one of {SWEEPS}. Received: sweep={sweep!r}")

    def register(factory):
        if name in _ATTACKS:
            raise ValueError(f"An attack named {name!r} is already registered.")
        parameters = inspect.signature(factory).parameters.values()
        unknown = [parameter.name for parameter in parameters
                   if parameter.kind is not inspect.Parameter.KEYWORD_ONLY or parameter.name not in OPTIONS]
        if unknown:
            raise ValueError(f"Attack {name!r}: a factory takes keyword-only options from {', '.join(OPTIONS)}. "
                             f"Received: {unknown}")
        _ATTACKS[name] = AttackInfo(name, factory, sweep, bool(overfitting_guard))
        return factory

    return register


def attack_names() -> list[str]:
    import_plugins()
    return sorted(_ATTACKS)


def get_attack(name: str) -> AttackInfo:
    import_plugins()
    if name not in _ATTACKS:
        raise ValueError(f"Unknown attack {name!r}. Known attacks: {', '.join(sorted(_ATTACKS))}")
    return _ATTACKS[name]


def make_attack(name: str, **settings) -> Callable:
    """``attack(model, x, y, seed)`` of attack ``name`` with the settings it declares (None counts as not given)."""
    info = get_attack(name)
    chosen = {key: value for key, value in settings.items() if key in info.options and value is not None}
    missing = [key for key in info.required if key not in chosen]
    if missing:
        raise ValueError(f"The {name!r} attack needs {', '.join(missing)}. Received: "
                         f"{', '.join(f'{key}={value!r}' for key, value in settings.items()) or 'no settings'}")
    return info.factory(**chosen)


# ------------------------------------------------------------------------------- the built-in attacks
@register_attack("fgsm")
def _fgsm(*, eps):
    """FGSM: one signed-gradient step of size eps (Goodfellow et al. 2015)."""
    return lambda model, x, y, seed=None: core.fgsm(model, x, y, eps=eps)


@register_attack("pgd")
def _pgd(*, eps, steps=10, step_size=None, restarts=1, norm="inf"):
    """PGD from a random start; step size 2.5·eps/steps unless given (Madry et al. 2018)."""
    size = step_size if step_size is not None else 2.5 * eps / steps
    return lambda model, x, y, seed=None: core.pgd(model, x, y, eps=eps, step_size=size, steps=steps,
                                                   restarts=restarts, norm=norm, seed=seed)


@register_attack("fast", overfitting_guard=True)
def _fast(*, eps):
    """Fast AT's attack: FGSM from a uniform random start in the eps-ball with step 1.25·eps (Wong et al. 2020)."""
    return lambda model, x, y, seed=None: core.pgd(model, x, y, eps=eps, step_size=1.25 * eps, steps=1, seed=seed)


@register_attack("noise", sweep="snr")
def _noise(*, snr_db):
    """Gaussian noise truncated at 2 standard deviations, scaled per image to snr_db."""
    return lambda model, x, y, seed=None: core.gaussian_noise(x, snr_db=snr_db, seed=seed)


@register_attack("snr", sweep="snr")
def _snr(*, snr_db):
    """FGSM whose per-image step is set by snr_db instead of eps."""
    return lambda model, x, y, seed=None: core.fgsm_snr(model, x, y, snr_db=snr_db)


@register_attack("apgd-ce")
def _apgd_ce(*, eps, steps=100, restarts=1, eot=1, norm="inf"):
    """APGD with the cross-entropy loss (Croce & Hein 2020)."""
    return lambda model, x, y, seed=None: apgd_module.apgd(model, x, y, eps=eps, norm=norm, steps=steps, loss="ce",
                                                           restarts=restarts, eot=eot, seed=seed)


@register_attack("apgd-dlr")
def _apgd_dlr(*, eps, steps=100, restarts=1, eot=1, norm="inf"):
    """APGD with the DLR loss (Croce & Hein 2020)."""
    return lambda model, x, y, seed=None: apgd_module.apgd(model, x, y, eps=eps, norm=norm, steps=steps, loss="dlr",
                                                           restarts=restarts, eot=eot, seed=seed)


@register_attack("apgd-t")
def _apgd_t(*, eps, steps=100, targets=9, norm="inf"):
    """APGD-T: APGD with the targeted DLR loss against the top `targets` other classes."""
    return lambda model, x, y, seed=None: apgd_module.apgd_targeted(model, x, y, eps=eps, norm=norm, steps=steps,
                                                                    targets=targets, seed=seed)


@register_attack("square")
def _square(*, eps, queries=5000, p_init=0.8, norm="inf"):
    """Square: black-box random search over squares (Andriushchenko et al. 2020)."""
    return lambda model, x, y, seed=None: square_module.square(model, x, y, eps=eps, norm=norm, queries=queries,
                                                               p_init=p_init, seed=seed)
