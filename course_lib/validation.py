"""One place that says what a valid number is, so every config and command checks it the same way.

Each function returns the value when it is allowed and raises ``ValueError`` naming the value and
what is allowed otherwise. ``bool`` is refused wherever a number is asked for (``True`` is an
``int`` to Python, but ``beta=True`` is a mistake, not 1.0), and so are NaN and the infinities:
``lr=inf`` would turn every weight non-finite on the first step.
"""

from __future__ import annotations

import math
import numbers


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _as_number(value):
    """A 0-d numpy array or a one-element tensor as the number it holds; anything else as is."""
    if _is_real(value) or isinstance(value, bool):
        return value
    if hasattr(value, "numel") and hasattr(value, "item"):  # a torch tensor
        return value.item() if value.numel() == 1 and not value.dtype.is_complex else value
    shape = getattr(value, "shape", None)
    if shape == () and hasattr(value, "item"):  # a 0-d numpy array
        return value.item()
    return value


def real(
    name: str,
    value,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    what: str = "",
) -> float:
    """A finite real number in [low, high] (an end is excluded where ``*_open``), as a float.

    A 0-d numpy array or a one-element tensor counts as the number it holds."""
    value = _as_number(value)
    ok = _is_real(value) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lo = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
        hi = "" if high is None else f"{'<' if high_open else '<='} {high:g}"
        bounds = " and ".join(b for b in (lo, hi) if b)
        allowed = f"a finite number{' ' + bounds if bounds else ''}"
        raise ValueError(f"{name}={value!r} is invalid: {what + ', ' if what else ''}{allowed}")
    return float(value)


def positive(name: str, value, what: str = "") -> float:
    """A finite number > 0."""
    return real(name, value, low=0.0, low_open=True, what=what)


def integer(name: str, value, minimum: int = 1, what: str = "", maximum: int | None = None) -> int:
    """An ``int`` (not a bool, not a float) >= ``minimum`` (and <= ``maximum`` when given)."""
    if not (
        isinstance(value, numbers.Integral)
        and not isinstance(value, bool)
        and value >= minimum
        and (maximum is None or value <= maximum)
    ):
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        if maximum is not None:
            kind = f"an integer in [{minimum}, {maximum}]"
        raise ValueError(
            f"{name}={value!r} is invalid: {what + ', ' if what else ''}must be {kind}"
        )
    return int(value)


def tau(value, name: str = "tau") -> float:
    """The KL coefficient tau of the regularised game and of every loss: finite and > 0."""
    return positive(name, value, what="the KL coefficient")


def beta(value, name: str = "beta") -> float:
    """IPO-MD's / Nash-MD's mixture weight on pi_ref: a number in [0, 1]."""
    return real(name, value, low=0.0, high=1.0, what="the mixture weight on pi_ref")


def choice(name: str, value, allowed) -> str:
    """One of ``allowed`` (names are listed in the message)."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(
            f"{name}={value!r} is invalid: choose one of {', '.join(map(str, allowed))}"
        )
    return value
