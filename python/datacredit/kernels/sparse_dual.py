"""Sparse per-sample dual variables (CSR) of the Crammer–Singer SVM, and the one guard every
dense ``N x K`` expansion goes through.

A Crammer–Singer sample has a handful of nonzero classes at the optimum, so ``lambda``
(``N x K``) is kept as compressed sparse rows: ``O(nnz)`` memory instead of ``8 N K`` bytes
(10 GB at ImageNet's 1.28M x 1,000).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np

#: Dense expansions up to this many bytes are built without a word; above it they warn with
#: the size and are refused (MemoryError) when the machine does not have the memory free.
DENSE_SILENT_BYTES = 256 * 2**20


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (``MemAvailable``), or None if unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def check_dense_allocation(nbytes: int, what: str) -> None:
    """Warn before a dense allocation above :data:`DENSE_SILENT_BYTES`; refuse one larger than
    the free memory.

    Raises:
        MemoryError: ``nbytes`` exceeds the memory available (the message says what to use).
    """
    if nbytes <= DENSE_SILENT_BYTES:
        return
    free = available_memory()
    if free is not None and nbytes > free:
        raise MemoryError(
            f"{what} needs a dense array of {nbytes / 2**30:.2f} GiB but only "
            f"{free / 2**30:.2f} GiB are available; use the sparse form instead"
        )
    warnings.warn(
        f"{what} allocates a dense array of {nbytes / 2**30:.2f} GiB; the sparse form avoids it",
        ResourceWarning,
        stacklevel=3,
    )


@dataclass(frozen=True)
class SparseDual:
    """An ``(n_rows, n_classes)`` matrix in compressed sparse rows.

    Attributes:
        indptr: int64 ``(n_rows + 1,)``; row ``i`` holds positions ``indptr[i]:indptr[i+1]``.
        indices: int32 ``(nnz,)``; the class of each value, ascending within a row.
        values: float64 ``(nnz,)``.
        n_classes: the number of columns ``K``.
    """

    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    n_classes: int

    def __post_init__(self) -> None:
        p, c, v = self.indptr, self.indices, self.values
        if p.ndim != 1 or p.shape[0] < 1 or c.shape != v.shape or c.ndim != 1:
            raise ValueError("SparseDual: indptr must be (n+1,), indices and values (nnz,)")
        if p[0] != 0 or p[-1] != c.shape[0] or (np.diff(p) < 0).any():
            raise ValueError("SparseDual: indptr must rise from 0 to nnz")
        if c.size and (c.min() < 0 or c.max() >= self.n_classes):
            raise ValueError(f"SparseDual: class indices outside [0, {self.n_classes})")

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_rows, n_classes)``."""
        return (int(self.indptr.shape[0] - 1), int(self.n_classes))

    @property
    def nnz(self) -> int:
        """Number of stored values."""
        return int(self.values.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes held by the three arrays."""
        return int(self.indptr.nbytes + self.indices.nbytes + self.values.nbytes)

    def row_ids(self) -> np.ndarray:
        """int64 ``(nnz,)``: the row of each stored value.  ``O(nnz)``."""
        return np.repeat(np.arange(self.shape[0], dtype=np.int64), np.diff(self.indptr))

    def row_max_abs(self) -> np.ndarray:
        """float64 ``(n_rows,)``: ``max_c |A[i, c]|`` (0 for an empty row).  ``O(nnz)``."""
        out = np.zeros(self.shape[0])
        np.maximum.at(out, self.row_ids(), np.abs(self.values))
        return out

    def take_rows(self, rows: np.ndarray) -> SparseDual:
        """The sub-matrix of ``rows`` (int, any order), as a new :class:`SparseDual`."""
        rows = np.asarray(rows, dtype=np.int64)
        lo, hi = self.indptr[rows], self.indptr[rows + 1]
        counts = hi - lo
        indptr = np.zeros(rows.shape[0] + 1, np.int64)
        np.cumsum(counts, out=indptr[1:])
        pos = np.repeat(lo - indptr[:-1], counts) + np.arange(indptr[-1])
        return SparseDual(indptr, self.indices[pos], self.values[pos], self.n_classes)

    def column(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, values)`` of the nonzeros of column ``c``, rows ascending.  ``O(nnz)``."""
        hit = np.flatnonzero(self.indices == c)
        return self.row_ids()[hit] if hit.size else hit.astype(np.int64), self.values[hit]

    def dense_rows(self, rows: np.ndarray, dtype=np.float64) -> np.ndarray:
        """Dense ``(len(rows), K)`` block of the given rows (checked by the dense guard)."""
        sub = self.take_rows(rows)
        return sub.toarray(dtype)

    def toarray(self, dtype=np.float64, what: str = "SparseDual.toarray") -> np.ndarray:
        """The dense ``(n_rows, K)`` matrix; goes through :func:`check_dense_allocation`."""
        n, k = self.shape
        check_dense_allocation(n * k * np.dtype(dtype).itemsize, what)
        out = np.zeros((n, k), dtype)
        out[self.row_ids(), self.indices] = self.values
        return out

    def columns(self) -> DualColumns:
        """The same nonzeros by column (CSC): ``O(nnz log nnz)`` once, ``O(nnz)`` memory."""
        order = np.argsort(self.indices, kind="stable")  # rows stay ascending in a column
        indptr = np.zeros(self.n_classes + 1, np.int64)
        np.cumsum(np.bincount(self.indices, minlength=self.n_classes), out=indptr[1:])
        return DualColumns(indptr, self.row_ids()[order], self.values[order])

    @classmethod
    def from_dense(cls, dense: np.ndarray) -> SparseDual:
        """CSR of the nonzeros of a dense ``(n, K)`` array (row-major order)."""
        a = np.asarray(dense)
        r, c = np.nonzero(a)
        indptr = np.zeros(a.shape[0] + 1, np.int64)
        np.cumsum(np.bincount(r, minlength=a.shape[0]), out=indptr[1:])
        return cls(indptr, c.astype(np.int32), a[r, c].astype(np.float64), int(a.shape[1]))


@dataclass(frozen=True)
class DualColumns:
    """The nonzeros of a :class:`SparseDual` by column: column ``c`` holds ``rows`` /
    ``values`` at ``indptr[c]:indptr[c+1]``, rows ascending.

    Attributes:
        indptr: int64 ``(K + 1,)``.
        rows: int64 ``(nnz,)``, row of each value.
        values: float64 ``(nnz,)``.
    """

    indptr: np.ndarray
    rows: np.ndarray
    values: np.ndarray

    def column(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, values)`` of column ``c`` (views, no copy)."""
        b, e = int(self.indptr[c]), int(self.indptr[c + 1])
        return self.rows[b:e], self.values[b:e]
