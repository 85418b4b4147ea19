"""GMValuator's nearest-neighbour search settings, shared by the in-core valuator and its
out-of-core stages: which index ``"auto"`` picks, the PQ parameters for a training set, and
the exact re-rank distances of recalled candidates."""

from __future__ import annotations

from typing import Any

import numpy as np

INDEXES = ("auto", "ivf", "pq", "exact", "faiss")
# index="auto": exact search below this many training samples, the inverted file from it.
AUTO_IVF_MIN_TRAIN = 100_000
# The index searches embeddings shifted by their mean when |mean|^2 exceeds this multiple of
# the mean squared deviation: float32 |q|^2 + |k|^2 - 2 q.k loses digits with the offset.
CENTRE_MIN_OFFSET_RATIO = 1.0


def pq_settings(gmv: Any, n: int, d: int) -> tuple[int, int, int | None, int]:
    """``(m, nbits, nlist, nprobe)`` of the ``"pq"`` index for ``n`` embeddings of width ``d``
    (in core and out of core alike); raises on an nlist/nprobe the data cannot support."""
    m = gmv.pq_m or default_pq_m(d)
    nbits = max(1, int(min(8, np.floor(np.log2(n)))))
    nlist = gmv.pq_nlist
    if gmv._auto_nlist:
        nlist = int(round(np.sqrt(n))) if n >= 100_000 else None
    if nlist is not None and nlist > n:
        raise ValueError(f"pq_nlist = {nlist} exceeds the number of training samples {n}")
    nprobe = gmv.pq_nprobe or (max(1, nlist // 16) if nlist else 1)
    if nlist is not None and nprobe > nlist:
        raise ValueError(f"pq_nprobe = {nprobe} must not exceed pq_nlist = {nlist}")
    return m, nbits, nlist, nprobe


def default_pq_m(d: int) -> int:
    """Sub-spaces of about 8 dimensions (d=512 -> 64), a divisor of d."""
    target = max(1, d // 8)
    for m in range(target, 0, -1):
        if d % m == 0:
            return m
    return 1  # pragma: no cover


def candidate_distances(
    gen: np.ndarray, cand: np.ndarray, rows: Any, d: int, rerank: Any
) -> np.ndarray:
    """Exact float64 distances ``(n_gen, recall)`` between ``gen[j]`` and the training
    embeddings ``rows(cand[j])``: ``1 - cos`` for ``rerank="cosine"``, else l2.  Works in
    blocks of about 4M values, ``O(n_gen * recall * d)``."""
    out = np.empty(cand.shape, np.float64)
    step = max(1, (1 << 22) // max(1, cand.shape[1] * d))
    for s in range(0, gen.shape[0], step):
        g = gen[s : s + step].astype(np.float64)[:, None, :]
        t = np.asarray(rows(cand[s : s + step])).astype(np.float64)
        if rerank == "cosine":
            num = np.einsum("brd,brd->br", np.broadcast_to(g, t.shape), t)
            den = np.linalg.norm(g, axis=-1) * np.linalg.norm(t, axis=-1)
            out[s : s + step] = 1.0 - np.divide(num, den, out=np.zeros_like(num), where=den > 0)
        else:
            diff = t - g
            out[s : s + step] = np.sqrt(np.einsum("brd,brd->br", diff, diff))
    return out
