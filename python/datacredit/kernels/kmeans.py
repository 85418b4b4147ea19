"""Lloyd's k-means (the coarse quantizer of inverted files, and PQ codebooks' trainer),
and the integer / seed checks the quantizers share."""

from __future__ import annotations

from typing import Any

import numpy as np

from datacredit import _core
from datacredit._arrays import as_float_matrix


def positive_int(value: Any, name: str, upper: int = 2**63 - 1) -> int:
    """``value`` as an int in ``[1, upper]``; ``ValueError`` naming ``name`` otherwise."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or not 1 <= value <= upper
    ):
        raise ValueError(f"{name} must be an integer in [1, {upper}], got {value!r}")
    return int(value)


def check_seed(value: Any) -> int:
    """A k-means / PQ seed as an int in ``[0, 2**63 - 1]``; raises otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"seed must be an integer, got {type(value).__name__}")
    if not 0 <= value <= 2**63 - 1:
        raise ValueError(f"seed = {value} must be in [0, 2**63 - 1]")
    return int(value)


def kmeans(
    x: Any,
    k: int,
    *,
    n_iter: int = 10,
    max_points_per_centroid: int = 64,
    seed: int = 0,
) -> np.ndarray:
    """Lloyd's k-means: ``(k, d)`` float32 centroids of ``x`` ``(n, d)``, ``n >= k``.

    Trained on a seeded sample of at most ``max_points_per_centroid * k`` rows, centroids
    initialised from distinct sample rows, empty clusters re-seeded by splitting the largest;
    deterministic for a given seed.  ``O(n_iter * sample * k * d)`` through GEMM (the
    coarse quantizer of inverted-file indexes).  ``n_iter`` and ``max_points_per_centroid``
    are integers in ``[1, 2**31 - 1]``, ``seed`` in ``[0, 2**63 - 1]``; others raise.
    """
    arr = as_float_matrix(x, "x")
    k = positive_int(k, "k")
    if arr.shape[0] < k:
        raise ValueError(f"x needs at least k = {k} rows, got {arr.shape[0]}")
    return _core.kmeans(
        arr,
        k,
        positive_int(n_iter, "n_iter", 2**31 - 1),
        positive_int(max_points_per_centroid, "max_points_per_centroid", 2**31 - 1),
        check_seed(seed),
        0,
    )
