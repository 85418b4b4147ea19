"""Batched feature Gram products with fused top-k selection."""

from __future__ import annotations

from typing import Any

import numpy as np

from datacredit import _core
from datacredit._arrays import (
    as_float_matrix,
    as_index_vector,
    check_choice,
    check_flag,
    resolve_threads,
)

METRICS = ("ip", "cosine", "l2")


def _prepare(queries: Any, keys: Any, weights: Any, classes: Any, metric: str):
    check_choice(metric, "metric", METRICS)
    q = as_float_matrix(queries, "queries", check_finite=False)
    kk = as_float_matrix(keys, "keys", check_finite=False)
    if q.shape[1] != kk.shape[1]:
        raise ValueError(
            f"queries and keys must have the same feature dimension, got {q.shape[1]} and {kk.shape[1]}"
        )
    w = cls = None
    if weights is not None:
        w_arr = np.asarray(weights) if not hasattr(weights, "detach") else weights
        ndim = getattr(w_arr, "ndim", None)
        if ndim not in (1, 2):
            raise ValueError(f"weights must be a vector (N,) or a matrix (N, C), got ndim {ndim}")
        w = as_float_matrix(weights, "weights", ndim=ndim, check_finite=False)
        if w.shape[0] != kk.shape[0]:
            raise ValueError(f"weights must have one row per key ({kk.shape[0]}), got {w.shape[0]}")
        if w.ndim == 2:
            if classes is None:
                raise ValueError(
                    "a weight matrix (N, C) needs classes (n,) picking a column per query"
                )
            cls = as_index_vector(classes, "classes", q.shape[0], w.shape[1])
        elif classes is not None:
            raise ValueError(
                "classes is only used with a weight matrix (N, C); weights is a vector"
            )
    elif classes is not None:
        raise ValueError("classes was given without weights")
    return q, kk, w, cls


def gram_topk(
    queries: Any,
    keys: Any,
    k: int,
    *,
    weights: Any = None,
    classes: Any = None,
    metric: str = "ip",
    largest: bool = True,
    n_threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best keys for every query, without forming the full score matrix.

    ``score[i, j] = w_j * s(queries[i], keys[j])`` where ``s`` is the inner product
    (``metric="ip"``), the cosine similarity (``"cosine"``; 0 for an all-zero vector)
    or the squared Euclidean distance (``"l2"``; with ``largest=False`` this is
    nearest-neighbour search).  ``w_j`` is 1, ``weights[j]`` for a vector ``(N,)``,
    or ``weights[j, classes[i]]`` for a matrix ``(N, C)`` with ``classes`` ``(n,)`` —
    DualDA's ``tau = lambda[j, c(i)] * f_j . f_i``.

    Args:
        queries: ``(n, d)`` real array (numpy or CPU torch); float32 is used as is.
        keys: ``(N, d)`` real array.
        k: number of results per query, ``1 <= k <= N``.
        weights: ``None``, ``(N,)`` or ``(N, C)`` per-key weights.
        classes: ``(n,)`` integer column of ``weights`` per query (matrix weights only).
        metric: ``"ip"``, ``"cosine"`` or ``"l2"``.
        largest: keep the largest scores (default) or the smallest.
        n_threads: threads to use, ``1..1024``; ``None`` uses all cores (more than the
            processors available are clamped to them).

    Returns:
        ``(values, indices)``: float32 ``(n, k)`` scores and int64 ``(n, k)`` key
        indices, best first; ties go to the lower key index.  With ``metric="l2"`` the
        values are **squared** Euclidean distances ``‖q − k‖²`` (take ``np.sqrt`` for the
        distances themselves; the order is the same).

    ``"l2"`` is exact: every value is the float32 rounding of the true (weighted) squared
    distance and the selection is the float64 brute force's, whatever the offset of the
    data (the GEMM runs on rows centred by the key mean; ``k + max(16, k // 4)``
    candidates per query are re-ranked by distances recomputed in double, with a
    rounding-error bound certifying that no other key can enter, else that query is
    scanned exactly).

    Complexity: ``O(n * N * d)`` time through BLAS GEMM tiles with the selection fused
    into the scan (``O(n * N)`` compares); memory ``O(n * k + threads * tile)``.
    The GIL is released while it runs.

    Raises:
        ValueError: mismatched dimensions, ``k`` outside ``[1, N]``, NaN/inf, wrong
            ``ndim``, ``classes`` out of range, unknown ``metric``, ``n_threads`` out of range.
        TypeError: non-numeric input; ``largest`` not a bool.
        MemoryError: the ``n * k`` results and heaps (or per-thread tiles) do not fit.
    """
    q, kk, w, cls = _prepare(queries, keys, weights, classes, metric)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an integer, got {type(k).__name__}")
    if not 1 <= k <= kk.shape[0]:
        raise ValueError(f"k = {k} must be in [1, N = {kk.shape[0]}]")
    return _core.gram_topk(
        q, kk, int(k), w, cls, metric, check_flag(largest, "largest"), resolve_threads(n_threads)
    )


def gram(
    queries: Any,
    keys: Any,
    *,
    weights: Any = None,
    classes: Any = None,
    metric: str = "ip",
    n_threads: int | None = None,
) -> np.ndarray:
    """The dense ``(n, N)`` float32 score matrix, same definitions as :func:`gram_topk`.

    For callers that truly need every score; memory is ``O(n * N)``.  ``"l2"`` is computed
    from the differences in double (exact up to the final rounding; ``O(n N d)`` without
    the GEMM).
    """
    q, kk, w, cls = _prepare(queries, keys, weights, classes, metric)
    return _core.gram_dense(q, kk, w, cls, metric, resolve_threads(n_threads))
