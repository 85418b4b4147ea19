"""From re-rank distances to contributions: the softmax weights of eq. 6."""

from __future__ import annotations

import numpy as np


def softmax_weights(distances: np.ndarray, temperature: float) -> np.ndarray:
    """Row-wise ``softmax(-d / T)`` (eq. 6), float64 ``(n, k)``, for any finite T > 0.

    The row minimum is subtracted *before* dividing by T (log-sum-exp with the max
    subtracted), so the nearest candidate always has exponent 0 and weight >= 1/k: a tiny
    T that sends every ``-d/T`` to ``-inf`` gives the hard nearest-neighbour limit (ties
    share equally) instead of 0/0.  ``+inf`` distances (unused slots) get weight 0; a row
    without any finite distance raises.  O(n * k).
    """
    d = np.asarray(distances, dtype=np.float64)
    if d.ndim != 2:
        raise ValueError(f"distances must be a matrix (n, k), got shape {d.shape}")
    if not (np.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
    if d.size == 0:
        return d.copy()
    if np.isnan(d).any():
        raise ValueError("distances contain NaN")
    dmin = d.min(axis=1, keepdims=True)
    if not np.isfinite(dmin).all():
        raise ValueError("every row of distances needs at least one finite distance")
    with np.errstate(over="ignore", invalid="ignore"):
        z = -((d - dmin) / temperature)  # <= 0; -inf where (d - dmin) / T overflows
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
