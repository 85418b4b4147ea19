"""Inverted-file search with exact squared l2 inside the probed lists (IVF-Flat)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from datacredit import _core
from datacredit._arrays import as_float_matrix, resolve_threads
from datacredit.kernels.gram import gram_topk


@dataclass(frozen=True)
class InvertedLists:
    """Keys stored contiguously list by list, as :func:`ivf_flat_search` scans them.

    Attributes:
        keys: ``(N, d)`` float32, row ``p`` is the key numbered ``ids[p]``; list ``l``
            is rows ``starts[l]:starts[l + 1]``.
        sq_norms: ``(N,)`` float32 squared norms of ``keys`` (float64 sums).
        ids: ``(N,)`` int64 key numbers.
        starts: ``(nlist + 1,)`` int64, non-decreasing, from 0 to N.

    Build with :func:`build_inverted_lists`; memory ``N * (d + 3) * 4`` bytes (a copy of
    the keys in list order).
    """

    keys: np.ndarray
    sq_norms: np.ndarray
    ids: np.ndarray
    starts: np.ndarray

    @property
    def nlist(self) -> int:
        """Number of lists."""
        return len(self.starts) - 1

    @property
    def sizes(self) -> np.ndarray:
        """``(nlist,)`` int64 keys per list."""
        return np.diff(self.starts)


def build_inverted_lists(
    keys: Any, list_of: Any, nlist: int, ids: Any = None, *, out: np.ndarray | None = None
) -> InvertedLists:
    """Groups ``keys`` by their list into contiguous storage.

    Args:
        keys: ``(N, d)`` float32 keys (any array-like, e.g. a memory map; read once, in
            blocks of rows).
        list_of: ``(N,)`` integer list of each key, in ``[0, nlist)``.
        nlist: number of lists (lists without keys stay empty).
        ids: ``(N,)`` int64 number of each key (default ``0 .. N-1``).
        out: optional writable C-contiguous ``(N, d)`` float32 array that receives the
            grouped keys (e.g. a file-backed scratch array for a memory-mapped ``keys``:
            then no N × d copy is made in anonymous memory); default a new array.

    Returns:
        The :class:`InvertedLists`; keys keep their relative order inside a list.
        ``O(N * d)`` time, one copy of the keys (into ``out``), O(N) other memory.
    """
    if isinstance(keys, np.ndarray) and keys.ndim == 2 and keys.dtype == np.float32:
        # read block by block below (and checked there): no copy of a whole memory map
        k = keys
        if k.size == 0:
            raise ValueError(f"keys is empty (shape {k.shape})")
    else:
        k = as_float_matrix(keys, "keys")
    lists = np.asarray(list_of)
    if lists.shape != (k.shape[0],) or not np.issubdtype(lists.dtype, np.integer):
        raise ValueError(f"list_of must be ({k.shape[0]},) integers, got {lists.shape}")
    if isinstance(nlist, bool) or not isinstance(nlist, (int, np.integer)) or nlist < 1:
        raise ValueError(f"nlist must be a positive integer, got {nlist!r}")
    if lists.size and (lists.min() < 0 or lists.max() >= nlist):
        raise ValueError(f"list_of must lie in [0, {nlist})")
    if out is None:
        out = np.empty(k.shape, np.float32)
    elif (
        not isinstance(out, np.ndarray)
        or out.shape != k.shape
        or out.dtype != np.float32
        or not out.flags.c_contiguous
        or not out.flags.writeable
    ):
        raise ValueError(
            f"out must be a writable C-contiguous float32 array of shape {k.shape}, got "
            f"{getattr(out, 'shape', None)} {getattr(out, 'dtype', None)}"
        )
    order = np.argsort(lists, kind="stable")
    starts = np.searchsorted(lists[order], np.arange(nlist + 1)).astype(np.int64)
    num = order.astype(np.int64) if ids is None else np.asarray(ids, np.int64)[order]
    sq = np.empty(k.shape[0], np.float32)
    step = max(1, (1 << 24) // max(1, 4 * k.shape[1]))  # 16 MB of gathered rows at a time
    for s in range(0, k.shape[0], step):
        rows = np.sort(order[s : s + step])  # ascending reads of a memory map
        block = np.asarray(k[rows], dtype=np.float32)
        pos = np.argsort(np.argsort(order[s : s + step], kind="stable"), kind="stable")
        block = block[pos]  # back to list order
        if not np.isfinite(block).all():
            raise ValueError("keys contains NaN or inf")
        out[s : s + len(block)] = block
        sq[s : s + len(block)] = np.einsum("ij,ij->i", block, block, dtype=np.float64)
    return InvertedLists(out, sq, np.ascontiguousarray(num), starts)


def ivf_flat_search(
    queries: Any,
    lists: InvertedLists,
    probes: np.ndarray,
    r: int,
    *,
    n_threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact squared-l2 top-``r`` of each query over the union of the lists it probes.

    Args:
        queries: ``(n, d)`` float32 queries.
        lists: the keys grouped by list (:func:`build_inverted_lists`).
        probes: ``(n, nprobe)`` int64 lists each query scans, nearest first (-1: none;
            a list at most once per row).
        r: candidates returned per query.
        n_threads: threads (``None``: all cores).

    Returns:
        ``(dist, idx)`` ``(n, r)`` float32 squared distances and int64 key ids (``lists.ids``),
        best first, ties to the lower id; slots beyond the keys probed hold ``inf`` / ``-1``.

    Batched by list: one GEMM tile per (list, query block, key tile) over the contiguous
    list rows with their precomputed norms (the exact Gram top-k's micro-kernel), bounded
    heaps per (thread, query) merged at the end.  ``O(n * nprobe * L * d)`` for lists of
    ``L`` keys.  GIL released.
    """
    q = as_float_matrix(queries, "queries")
    if not isinstance(lists, InvertedLists):
        raise TypeError(f"lists must be InvertedLists (build_inverted_lists), got {type(lists)}")
    if lists.keys.shape[1] != q.shape[1]:
        raise ValueError(f"keys have dimension {lists.keys.shape[1]}, queries {q.shape[1]}")
    probes = np.ascontiguousarray(probes, dtype=np.int64)
    if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r < 1:
        raise ValueError(f"r must be a positive integer, got {r!r}")
    return _core.ivf_flat_search(
        q,
        lists.keys,
        lists.sq_norms,
        lists.ids,
        lists.starts,
        probes,
        int(r),
        resolve_threads(n_threads),
    )


# Extra candidates per query the exact search over the lists keeps before its float64
# re-rank (as the Gram top-k does): the float32 ranking may swap near-ties only.
_EXACT_EXTRA = 16
_UNIT = 2.0**-24  # float32 unit roundoff


def ivf_exact_topk(
    queries: Any,
    keys: Any,
    lists: InvertedLists,
    k: int,
    *,
    n_threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact squared-l2 top-``k`` over *all* keys, searched through the inverted lists.

    Every list is probed (:func:`ivf_flat_search` with ``k + max(16, k // 4)`` candidates,
    no per-call pass over the keys beyond the scan), the candidates are re-ranked by their
    float64 distance, and a bound on the float32 rounding of ``|q|^2 + |x|^2 - 2 q.x``
    certifies per query that no key left out can enter; an uncertified query (rare: data
    far from the origin) is searched again by :func:`datacredit.kernels.gram_topk`.  Same
    result as ``gram_topk(queries, keys, k, metric="l2", largest=False)``: distances are the
    float64 distances rounded to float32, ties to the lower index.

    Args:
        queries: ``(n, d)`` float32.
        keys: ``(N, d)`` float32 keys by id (``lists`` grouped them).
        lists: ``build_inverted_lists(keys, ...)``, ids ``0 .. N-1``.
        k: neighbours per query, ``1 <= k <= N``.
        n_threads: threads (``None``: all cores).

    Returns:
        ``(dist, idx)`` ``(n, k)`` float32 squared distances and int64 indices, best first.

    ``O(n * N * d)`` like exact search, at the per-row cost of the list scan; for a few
    queries cheaper than ``gram_topk``, whose per-call ``O(N * d)`` passes (key mean,
    centred norms, centred copies) it avoids.
    """
    q = as_float_matrix(queries, "queries")
    x = as_float_matrix(keys, "keys", check_finite=False)
    n_keys = x.shape[0]
    if lists.keys.shape != x.shape:
        raise ValueError(f"lists hold {lists.keys.shape} keys, keys is {x.shape}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n_keys:
        raise ValueError(f"k must be an integer in [1, {n_keys}], got {k!r}")
    kk = min(n_keys, k + max(_EXACT_EXTRA, k // 4))
    probes = np.broadcast_to(np.arange(lists.nlist, dtype=np.int64), (q.shape[0], lists.nlist))
    approx, cand = ivf_flat_search(q, lists, probes, kk, n_threads=n_threads)
    diff = x[cand].astype(np.float64) - q[:, None, :].astype(np.float64)
    exact = np.einsum("nrd,nrd->nr", diff, diff).astype(np.float32)
    order = np.lexsort((cand, exact), axis=-1)[:, :k]
    dist = np.take_along_axis(exact, order, 1)
    idx = np.take_along_axis(cand, order, 1)
    if kk < n_keys:
        # A key left out has float32 distance >= the worst kept one's, and its exact
        # distance lies within `slack` of that (dot product over d terms, the rounded norms
        # and the final additions; a factor 2 of margin, as in the Gram top-k).
        q_sq = np.einsum("ij,ij->i", q, q, dtype=np.float64)
        slack = 2.0 * (q.shape[1] + 16) * _UNIT * (q_sq + float(lists.sq_norms.max()))
        worst = approx[:, -1].astype(np.float64)
        bound = worst - slack - 4 * _UNIT * np.abs(worst)
        # (one float32 ulp more, so a left-out key cannot even tie the k-th kept one)
        redo = np.flatnonzero(~(dist[:, -1].astype(np.float64) * (1 + 4 * _UNIT) < bound))
        if redo.size:
            dist[redo], idx[redo] = gram_topk(
                q[redo], x, k, metric="l2", largest=False, n_threads=n_threads
            )
    return dist, idx
