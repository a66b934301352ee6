"""Argument checks that fail early with a message naming the parameter and its value."""
from __future__ import annotations

import math
import numbers

import numpy as np


def check_number(name: str, value) -> float:
    """A real, finite number (bools are refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


def check_positive(name: str, value) -> float:
    """A finite number > 0."""
    if check_number(name, value) <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return float(value)


def check_non_negative(name: str, value) -> float:
    """A finite number >= 0."""
    if check_number(name, value) < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return float(value)


def check_in_range(name: str, value, low: float, high: float) -> float:
    """A finite number in [low, high]."""
    if not low <= check_number(name, value) <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value!r}")
    return float(value)


def check_int(name: str, value, minimum: int | None = None) -> int:
    """An integer (numpy integers accepted), at least `minimum`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(value)


def check_callable(name: str, value) -> None:
    """A function or other callable."""
    if not callable(value):
        raise TypeError(f"{name} must be callable, got {type(value).__name__} {value!r}")


def rng_from(seed) -> np.random.Generator:
    """A numpy Generator: passed through, or seeded from an int."""
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, (numbers.Integral, type(None))):
        raise TypeError(f"seed must be an int or numpy Generator, got {type(seed).__name__}")
    return np.random.default_rng(seed)


# ----------------------------------------------------------------------------- policy outputs
class NoProgressError(RuntimeError):
    """A simulation that cannot go on: a policy keeps the requests it holds from being served."""


def policy_name(policy) -> str:
    """A readable name for a policy, cost model or KV manager, for error messages."""
    name = getattr(policy, "__qualname__", None)
    if isinstance(name, str) and not isinstance(policy, type):
        return name.rpartition("<locals>.")[2]
    text = repr(policy)
    return type(policy).__qualname__ if text.startswith("<") else text


def bad_output(role: str, policy, value, must: str, exc=ValueError, method: str = ""):
    """Raise `exc` in the one message style for a bad policy or cost output.

    "<role> <policy name>[.<method>()] returned <value>: <what it must be>"
    """
    where = f".{method}()" if method else ""
    if isinstance(value, np.generic):  # numpy 2 would print np.float64(-5.0): show -5.0
        value = value.item()
    raise exc(f"{role} {policy_name(policy)}{where} returned {value!r}: {must}")


def is_int(value) -> bool:
    """A real integer (Python or numpy), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def check_duration(role: str, policy, value, *, zero_ok: bool = False, method: str = ""
                   ) -> float:
    """A policy's or cost's answer in seconds: a finite number > 0 (>= 0 if zero_ok)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        bad_output(role, policy, value, "it must be a number of seconds", TypeError, method)
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
        bad_output(role, policy, value, "it must be finite and "
                   + (">= 0 seconds" if zero_ok else "> 0 seconds"), ValueError, method)
    return value
