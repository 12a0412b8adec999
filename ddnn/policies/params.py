"""Validation of criterion parameters read from code or from policy JSON."""

from __future__ import annotations

import math

from ddnn.errors import PolicyError


def number_field(d: dict, name: str) -> float:
    """A required numeric field of a criterion dict, as float; PolicyError names the field."""
    if name not in d:
        raise PolicyError(f"{d.get('kind')} criterion needs field {name!r}")
    value = d[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PolicyError(f"{d.get('kind')} criterion: field {name!r} must be a number, got {value!r}")
    return float(value)


def checked_number(value, what: str, low: float = 0.0, high: float = math.inf) -> float:
    """``value`` as a finite float in [low, high]; PolicyError saying ``what`` was wrong otherwise."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise PolicyError(f"{what} must be a number, got {value!r}") from None
    if not (math.isfinite(v) and low <= v <= high):
        bounds = f"[{low:g}, {high:g}]" if math.isfinite(high) else f">= {low:g} and finite"
        raise PolicyError(f"{what} must be {'in ' if math.isfinite(high) else ''}{bounds}, got {value!r}")
    return v
