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
