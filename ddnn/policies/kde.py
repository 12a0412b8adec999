"""Gaussian kernel density curves on a grid, and where one weighted density overtakes another.

Used by the AO criterion (Lo et al. §III-C). Everything is in log space so that densities far
from the data (tiny Gaussian tails) still compare correctly.
"""

from __future__ import annotations

import numpy as np


def unit_grid(points: int) -> np.ndarray:
    """``points`` evenly spaced values covering [0, 1], ends included."""
    return np.linspace(0.0, 1.0, points)


def log_kde_mass(samples: np.ndarray, grid: np.ndarray, bandwidth: float) -> np.ndarray:
    """log of ``n * f(grid)``: the Gaussian KDE of ``samples`` scaled by the sample count.

    Scaling by the count (a sum of kernels, not their mean) is what weights two densities by
    how many samples each has. Returns ``-inf`` everywhere for an empty sample.
    """
    x = np.asarray(samples, dtype=np.float64).reshape(1, -1)
    if x.size == 0:
        return np.full(grid.shape, -np.inf)
    z = -0.5 * ((grid.reshape(-1, 1) - x) / bandwidth) ** 2
    top = z.max(axis=1)
    return top + np.log(np.exp(z - top[:, None]).sum(axis=1)) - np.log(bandwidth * np.sqrt(2 * np.pi))


def overtake_points(log_odds: np.ndarray, grid: np.ndarray, level: float) -> np.ndarray:
    """Per row of ``log_odds`` (K, G), the smallest x from which the curve stays >= ``level``.

    Each row is read as piecewise linear between grid points. The answer is where the curve
    last crosses ``level`` from below (linearly interpolated): 0 when the whole row is at or
    above ``level``, +inf when even the last grid point is below it. Rows are either finite or
    all +inf / all -inf (degenerate groups), which give 0 / +inf for any finite level.
    Nondecreasing in ``level``, which is what makes exit rates monotone in the AO knob.
    """
    curves = np.atleast_2d(log_odds)
    k, g = curves.shape
    below = curves < level
    any_below = below.any(axis=1)
    # Index of the last grid point below the level (reverse argmax finds the last True).
    last = g - 1 - below[:, ::-1].argmax(axis=1)
    out = np.zeros(k)
    never = any_below & (last == g - 1)
    out[never] = np.inf
    mid = any_below & ~never
    j = last[mid]
    lo, hi = curves[mid, j], curves[mid, j + 1]
    step = grid[1] - grid[0]
    out[mid] = grid[j] + np.clip((level - lo) / (hi - lo), 0.0, 1.0) * step
    return out


def curve_floor_at(log_odds: np.ndarray, rows: np.ndarray, grid: np.ndarray, x: np.ndarray) -> np.ndarray:
    """min over [x, 1] of the piecewise-linear row ``log_odds[rows]``, per sample.

    A sample at ``x`` in group ``row`` clears ``overtake_points(..., level)`` exactly when
    ``level`` <= this value, so it is the sample's critical level.
    """
    curves = np.atleast_2d(log_odds)
    g = curves.shape[1]
    # Suffix minima: suffix[r, j] = min(curves[r, j:]).
    suffix = np.minimum.accumulate(curves[:, ::-1], axis=1)[:, ::-1]
    step = grid[1] - grid[0]
    xs = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
    j = np.clip(np.floor(xs / step).astype(np.int64), 0, g - 2)
    lo, hi = curves[rows, j], curves[rows, j + 1]
    t = np.clip((xs - grid[j]) / step, 0.0, 1.0)
    # lo == hi covers the all-inf rows of degenerate groups (inf - inf would be nan).
    with np.errstate(invalid="ignore"):
        here = np.where(lo == hi, lo, lo + t * (hi - lo))
    return np.minimum(here, suffix[rows, j + 1])
