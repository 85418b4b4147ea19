"""Inverted-file search with exact squared l2 inside the probed lists (IVF-Flat)."""

from __future__ import annotations

from typing import Any

import numpy as np

from datacredit import _core
from datacredit._arrays import as_float_matrix, resolve_threads


def ivf_flat_search(
    queries: Any,
    keys: Any,
    order: np.ndarray,
    starts: np.ndarray,
    probes: np.ndarray,
    r: int,
    *,
    per_list: int | None = None,
    n_threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact squared-l2 top-``r`` of each query inside the lists it probes.

    Args:
        queries: ``(n, d)`` float32 queries.
        keys: ``(N, d)`` float32 keys, in their own order (not copied).
        order: ``(N,)`` int64 key indices grouped by list: list ``l`` holds
            ``order[starts[l]:starts[l + 1]]``.
        starts: ``(nlist + 1,)`` int64, non-decreasing, from 0 to N.
        probes: ``(n, nprobe)`` int64 lists each query scans (-1: none).
        r: candidates returned per query.
        per_list: candidates each (query, list) contributes (default ``r``): with an exact
            re-rank that keeps only the top k, ``k`` (plus a margin) suffices.
        n_threads: threads (``None``: all cores).

    Returns:
        ``(dist, idx)`` ``(n, r)`` float32 squared distances and int64 key indices,
        best first, ties to the lower key index; unused slots hold ``inf`` / ``-1``.  The
        best ``per_list`` are exact (over the probed lists); keys farther than the
        ``per_list``-th nearest of the query's first probe (probes nearest first) are
        skipped, so with ``r > per_list`` the later slots hold only keys within that.

    Batched by list: one GEMM tile per (list, query block), keys gathered once per call,
    then a bounded-heap merge: ``O(n * nprobe * L * d)`` for lists of ``L`` keys.  GIL
    released.
    """
    q = as_float_matrix(queries, "queries")
    k = as_float_matrix(keys, "keys")
    if k.shape[1] != q.shape[1]:
        raise ValueError(f"keys have dimension {k.shape[1]}, queries {q.shape[1]}")
    order = np.ascontiguousarray(order, dtype=np.int64)
    starts = np.ascontiguousarray(starts, dtype=np.int64)
    probes = np.ascontiguousarray(probes, dtype=np.int64)
    if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r < 1:
        raise ValueError(f"r must be a positive integer, got {r!r}")
    per_list = int(r) if per_list is None else per_list
    if isinstance(per_list, bool) or not isinstance(per_list, (int, np.integer)) or per_list < 1:
        raise ValueError(f"per_list must be a positive integer, got {per_list!r}")
    return _core.ivf_flat_search(
        q, k, order, starts, probes, int(per_list), int(r), resolve_threads(n_threads)
    )
