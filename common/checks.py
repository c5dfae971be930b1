"""Argument checks shared by every package, keras-hub style: ``ValueError`` naming the argument
and what was received (``"... Received: eps=1.5"``)."""
from __future__ import annotations

import fractions
import math
import numbers


def parse_int(text: str) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        raise ValueError(f"not an integer: {text!r}") from None


def parse_float(text: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        raise ValueError(f"not a number: {text!r}") from None


def integer(name: str, value, *, minimum: int | None = None) -> int:
    """``value`` as an int (bools refused); at least ``minimum`` when given."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"`{name}` must be an integer. Received: {name}={value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}. Received: {name}={value!r}")
    return int(value)


def positive_int(name: str, value) -> int:
    return integer(name, value, minimum=1)


def non_negative_int(name: str, value) -> int:
    return integer(name, value, minimum=0)


def finite_real(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"`{name}` must be a finite number. Received: {name}={value!r}")
    return float(value)


def positive_real(name: str, value) -> float:
    value = finite_real(name, value)
    if value <= 0:
        raise ValueError(f"`{name}` must be > 0. Received: {name}={value!r}")
    return value


def real_in_range(name: str, value, low: float, high: float, *, low_open: bool = False,
                  high_open: bool = False) -> float:
    """A finite real in the interval from ``low`` to ``high`` (each end closed unless ``*_open``)."""
    value = finite_real(name, value)
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"`{name}` must be in {interval}. Received: {name}={value!r}")
    return value


def pixel_value(text) -> float:
    """An eps in pixel units of [0, 1] images: ``2/255`` or ``0.0078``."""
    try:
        value = float(fractions.Fraction(str(text).strip()))
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"not a number or fraction: {text!r}") from None
    return real_in_range("eps", value, 0.0, 1.0)


def eps_label(eps: float) -> str:
    """``8/255`` where eps is a whole number of grey levels, else the decimal."""
    levels = eps * 255
    return f"{round(levels)}/255" if abs(levels - round(levels)) < 1e-6 else f"{eps:g}"
