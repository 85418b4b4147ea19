"""DualDA attributions from the sparse dual, one class column at a time.

``tau_c(x, i) = lambda_ic * f_i . f_x`` is nonzero only for the training samples whose
``lambda`` has class ``c`` among its nonzeros, so a test sample explained for class ``c``
needs the inner products with that column's samples alone: ``O(nnz_c * d)`` instead of
``O(n_sv * d)``, and no ``(n_sv, K)`` weight matrix.  Test samples are grouped by class and
each group goes through the batched top-k kernel (:func:`datacredit.kernels.gram_topk`)
once.  Every other training sample scores exactly 0 and competes as such (ties to the lower
training index), so the result equals the dense computation's.
"""

from __future__ import annotations

import numpy as np

from datacredit.kernels import gram, gram_topk
from datacredit.kernels.sparse_dual import DualColumns

#: A class group with fewer multiply-adds than this runs on one thread: waking a thread team
#: costs more than the work (on a loaded 2-core machine a team of 2 made a 2-query group
#: with 600 keys take 27 ms instead of 1 ms).
SERIAL_WORK = 1 << 24


def _threads(n_queries: int, n_keys: int, d: int, n_threads: int | None) -> int | None:
    return 1 if n_queries * n_keys * d < SERIAL_WORK else n_threads


def _groups(targets: np.ndarray):
    """``(class, positions)`` for each class present in ``targets``."""
    order = np.argsort(targets, kind="stable")
    cls, starts = np.unique(targets[order], return_index=True)
    ends = np.append(starts[1:], order.size)
    for c, b, e in zip(cls, starts, ends):
        yield int(c), order[b:e]


def lowest_outside(taken: np.ndarray, n_train: int, k: int) -> np.ndarray:
    """The ``k`` lowest indices in ``[0, n_train)`` not in ``taken`` (ascending int64);
    ``O(k + len(taken))``."""
    span = np.arange(min(n_train, k + taken.size), dtype=np.int64)
    return np.setdiff1d(span, taken, assume_unique=True)[:k]


def column_topk(
    queries: np.ndarray,
    keys: np.ndarray,
    columns: DualColumns,
    targets: np.ndarray,
    k: int,
    key_index: np.ndarray,
    n_train: int,
    *,
    largest: bool = True,
    n_threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` attributions per query from the dual's columns.

    Args:
        queries: float32 ``(n, d)`` test features.
        keys: float32 ``(n_rows, d)`` features of the dual's rows (e.g. the support vectors;
            a memory map is read row by row, never copied whole).
        columns: :meth:`SparseDual.columns` of those rows' ``lambda``.
        targets: int64 ``(n,)`` class per query, in ``[0, K)``.
        k: ``1 <= k <= n_train``.
        key_index: int64 ``(n_rows,)``, strictly increasing: the training index of each row.
        n_train: the training-set size (the samples outside the rows score 0).
        largest: the largest scores (proponents), or the smallest (opponents).

    Returns:
        ``(values, indices)``: float32 / int64 ``(n, k)``, best first, ties to the lower
        training index.

    Complexity: ``O(sum_c n_c * nnz_c * d)`` time, ``O(max_c nnz_c * d + n * k)`` memory.
    """
    n = queries.shape[0]
    vals = np.empty((n, k), np.float32)
    idx = np.empty((n, k), np.int64)
    for c, pos in _groups(targets):
        rows, lam = columns.column(c)
        taken = key_index[rows]
        k_col = min(k, rows.size)
        if k_col:
            cv, ci = gram_topk(
                queries[pos],
                np.ascontiguousarray(keys[rows]),
                k_col,
                weights=lam.astype(np.float32),
                largest=largest,
                n_threads=_threads(pos.size, rows.size, queries.shape[1], n_threads),
            )
            ci = taken[ci]
        else:
            cv = np.zeros((pos.size, 0), np.float32)
            ci = np.zeros((pos.size, 0), np.int64)
        zeros = lowest_outside(taken, n_train, k)
        v = np.concatenate([cv, np.zeros((pos.size, zeros.size), np.float32)], 1)
        i = np.concatenate([ci, np.broadcast_to(zeros, (pos.size, zeros.size))], 1)
        order = np.lexsort((i, -v if largest else v), axis=1)[:, :k]
        vals[pos] = np.take_along_axis(v, order, 1)
        idx[pos] = np.take_along_axis(i, order, 1)
    return vals, idx


def column_dense(
    queries: np.ndarray,
    keys: np.ndarray,
    columns: DualColumns,
    targets: np.ndarray,
    key_index: np.ndarray,
    n_train: int,
    *,
    n_threads: int | None = None,
) -> np.ndarray:
    """All attributions ``(n, n_train)`` float32 (zeros outside each class's column);
    same arguments as :func:`column_topk`.  ``O(n * n_train)`` memory."""
    out = np.zeros((queries.shape[0], n_train), np.float32)
    for c, pos in _groups(targets):
        rows, lam = columns.column(c)
        if rows.size:
            g = gram(
                queries[pos],
                np.ascontiguousarray(keys[rows]),
                n_threads=_threads(pos.size, rows.size, queries.shape[1], n_threads),
            )
            out[np.ix_(pos, key_index[rows])] = g * lam.astype(np.float32)
    return out
