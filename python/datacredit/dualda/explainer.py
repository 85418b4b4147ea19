"""The DualDA explainer artifact: what a server needs to answer "which training samples support
this prediction", saved by :meth:`DualDA.save_explainer`, read here and by the C API
(``dc_dualda_load`` in ``cpp/src/c_api.cpp``).

File: a safetensors container (:mod:`datacredit.safetensors_io`) with

====================  =======  ================  ===========================================
tensor                dtype    shape             meaning
====================  =======  ================  ===========================================
``features``          F32      ``(n_sv, d)``     penultimate features of the support vectors
``dual_indptr``       I64      ``(n_sv + 1,)``   lambda of the support vectors in CSR: row
``dual_indices``      I32      ``(nnz,)``        ``i``'s classes (ascending) and values at
``dual_values``       F32      ``(nnz,)``        ``dual_indptr[i]:dual_indptr[i+1]``
``coef``              F64      ``(K, d)``        surrogate weights ``W = lambda^T F``
``bias``              F64      ``(K,)``          surrogate bias ``sum_i lambda_ic``
``support``           I64      ``(n_sv,)``       training index of each support vector,
                                                 strictly increasing, in ``[0, n_train)``
``labels``            I64      ``(n_sv,)``       training label of each support vector
====================  =======  ================  ===========================================

and metadata ``format = "datacredit.dualda_explainer"``, ``format_version = "2"``,
``n_train``, ``n_classes``, ``dim`` (decimal strings) plus informational keys.  Version 1
(files written before the sparse duals) held lambda dense as ``dual_coef`` F32
``(n_sv, K)`` instead of the three CSR tensors; both the Python reader and ``dc_dualda_load``
still read it (``upgrade_explainer`` rewrites one as version 2).

Top-k semantics (identical in Python and C): for a feature row ``f`` and class ``c`` (given,
or the surrogate's prediction ``argmax_c (W f + bias)_c`` in float64, ties to the lower
class), the scores of all ``n_train`` training samples are ``tau_c(i) = lambda_ic f_i . f``
(float32, through the fused Gram kernel, over the samples whose lambda has class ``c``
among its nonzeros) and exactly 0 for the others;
the ``k`` largest (proponents) or smallest (opponents) are returned, ties to the lower
training index.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from datacredit.dualda.sparse_attribution import column_topk
from datacredit.kernels.sparse_dual import SparseDual
from datacredit.safetensors_io import load_safetensors, save_safetensors

EXPLAINER_FORMAT = "datacredit.dualda_explainer"
EXPLAINER_FORMAT_VERSION = "2"  # 2: lambda in CSR (dual_indptr / dual_indices / dual_values)
READABLE_VERSIONS = ("1", "2")

__all__ = [
    "EXPLAINER_FORMAT",
    "EXPLAINER_FORMAT_VERSION",
    "DualDAExplainer",
    "upgrade_explainer",
    "write_explainer",
]


def write_explainer(
    path: str | os.PathLike,
    *,
    features: np.ndarray,
    dual: SparseDual | None = None,
    dual_coef: np.ndarray | None = None,
    coef: np.ndarray,
    bias: np.ndarray,
    support: np.ndarray,
    labels: np.ndarray,
    n_train: int,
    extra_metadata: dict[str, str] | None = None,
) -> None:
    """Validate and write an explainer file atomically (layout in the module docstring).

    lambda of the support vectors is ``dual`` (a :class:`SparseDual`, ``n_sv`` rows) or, for
    callers holding it dense, ``dual_coef`` ``(n_sv, K)`` (its nonzeros are stored); exactly
    one of the two.  ``O(n_sv * d + nnz)`` bytes.
    """
    if (dual is None) == (dual_coef is None):
        raise ValueError("write_explainer: pass exactly one of dual and dual_coef")
    if dual is None:
        lam_dense = np.asarray(dual_coef)
        if lam_dense.ndim != 2:
            raise ValueError("write_explainer: features, dual_coef and coef must be 2-d")
        dual = SparseDual.from_dense(lam_dense.astype(np.float32))
    f = np.ascontiguousarray(features, np.float32)
    w = np.ascontiguousarray(coef, np.float64)
    b = np.ascontiguousarray(bias, np.float64)
    sup = np.ascontiguousarray(support, np.int64)
    lab = np.ascontiguousarray(labels, np.int64)
    if f.ndim != 2 or w.ndim != 2:
        raise ValueError("write_explainer: features, dual_coef and coef must be 2-d")
    n_sv, d = f.shape
    k = w.shape[0]
    if w.shape != (k, d) or dual.shape != (n_sv, k) or b.shape != (k,) or k < 1 or d < 1:
        raise ValueError(
            f"write_explainer: inconsistent shapes features {f.shape}, dual {dual.shape}, "
            f"coef {w.shape}, bias {b.shape}"
        )
    if sup.shape != (n_sv,) or lab.shape != (n_sv,):
        raise ValueError("write_explainer: support and labels need one entry per support vector")
    if n_sv and (sup[0] < 0 or sup[-1] >= n_train or (np.diff(sup) <= 0).any()):
        raise ValueError("write_explainer: support must be strictly increasing in [0, n_train)")
    meta = dict(extra_metadata or {})
    meta.update(
        format=EXPLAINER_FORMAT,
        format_version=EXPLAINER_FORMAT_VERSION,
        n_train=str(int(n_train)),
        n_classes=str(k),
        dim=str(d),
    )
    save_safetensors(
        path,
        {
            "features": f,
            "dual_indptr": np.ascontiguousarray(dual.indptr, np.int64),
            "dual_indices": np.ascontiguousarray(dual.indices, np.int32),
            "dual_values": np.ascontiguousarray(dual.values, np.float32),
            "coef": w,
            "bias": b,
            "support": sup,
            "labels": lab,
        },
        meta,
    )


def _int_meta(meta: dict[str, str], key: str, path: Any) -> int:
    value = meta.get(key)
    if value is None or not value.isdigit():
        raise ValueError(f"{path}: metadata {key!r} must be a non-negative integer, got {value!r}")
    return int(value)


class DualDAExplainer:
    """A loaded DualDA explainer: top-k training samples for penultimate feature vectors.

    Args:
        path: a file written by :meth:`DualDA.save_explainer`.
        n_threads: threads of each :meth:`topk` (``None``: all cores; a server answering
            requests in parallel wants 1).

    Raises:
        ValueError: not an explainer file, an unknown format version, or inconsistent tensors.
    """

    def __init__(self, path: str | os.PathLike, *, n_threads: int | None = None) -> None:
        self.n_threads = n_threads
        tensors, meta = load_safetensors(path, mmap=False)
        if meta.get("format") != EXPLAINER_FORMAT:
            raise ValueError(f"{path}: not a DualDA explainer (format {meta.get('format')!r})")
        version = meta.get("format_version")
        if version not in READABLE_VERSIONS:
            raise ValueError(
                f"{path}: explainer format version {version!r} is not supported (this "
                f"version reads {', '.join(READABLE_VERSIONS)}; write it anew with "
                "DualDA.save_explainer)"
            )
        sparse_names = {
            "dual_indptr": np.int64,
            "dual_indices": np.int32,
            "dual_values": np.float32,
        }
        want = {
            "features": np.float32,
            **({"dual_coef": np.float32} if version == "1" else sparse_names),
            "coef": np.float64,
            "bias": np.float64,
            "support": np.int64,
            "labels": np.int64,
        }
        for name, dt in want.items():
            if name not in tensors or tensors[name].dtype != dt:
                raise ValueError(f"{path}: tensor {name!r} missing or not {np.dtype(dt)}")
        self.n_train = _int_meta(meta, "n_train", path)
        self.n_classes = _int_meta(meta, "n_classes", path)
        self.dim = _int_meta(meta, "dim", path)
        self.features = tensors["features"]
        self.format_version = version
        self.coef = tensors["coef"]
        self.bias = tensors["bias"]
        self.support = tensors["support"]
        self.labels = tensors["labels"]
        self.metadata = meta
        n_sv, d, k = self.features.shape[0], self.dim, self.n_classes
        if version == "1":
            lam = tensors["dual_coef"]
            if lam.shape != (n_sv, k):
                raise ValueError(f"{path}: tensor shapes do not match dim={d}, n_classes={k}")
            if not np.isfinite(lam).all():
                raise ValueError(f"{path}: tensor 'dual_coef' holds NaN or inf")
            self.dual = SparseDual.from_dense(lam)
            self.dual = SparseDual(
                self.dual.indptr, self.dual.indices, self.dual.values.astype(np.float32), k
            )
        else:
            try:
                self.dual = SparseDual(
                    tensors["dual_indptr"], tensors["dual_indices"], tensors["dual_values"], k
                )
            except ValueError as exc:
                raise ValueError(f"{path}: {exc}") from None
            if not np.isfinite(self.dual.values).all():
                raise ValueError(f"{path}: tensor 'dual_values' holds NaN or inf")
        ok = (
            self.features.shape == (n_sv, d)
            and self.dual.shape == (n_sv, k)
            and self.coef.shape == (k, d)
            and self.bias.shape == (k,)
            and self.support.shape == (n_sv,)
            and self.labels.shape == (n_sv,)
            and d >= 1
            and k >= 1
            and n_sv <= self.n_train
        )
        if not ok:
            raise ValueError(f"{path}: tensor shapes do not match dim={d}, n_classes={k}")
        if n_sv and (
            self.support[0] < 0
            or self.support[-1] >= self.n_train
            or (np.diff(self.support) <= 0).any()
        ):
            raise ValueError(f"{path}: support indices are not strictly increasing in [0, n_train)")
        for name in ("features", "coef", "bias"):
            if not np.isfinite(tensors[name]).all():
                raise ValueError(f"{path}: tensor {name!r} holds NaN or inf")
        self._columns = self.dual.columns()

    @property
    def dual_coef(self) -> np.ndarray:
        """lambda of the support vectors, dense float32 ``(n_sv, K)`` (built on each access,
        through the dense guard); queries use the sparse ``dual``."""
        return self.dual.toarray(np.float32, what="DualDAExplainer.dual_coef")

    @property
    def n_support(self) -> int:
        """Number of support vectors."""
        return int(self.support.shape[0])

    def predict(self, features: np.ndarray) -> np.ndarray:
        """The surrogate's class ``argmax (W f + bias)`` (float64) per row: ``(n,)`` int64."""
        f = self._rows(features)
        return (f.astype(np.float64) @ self.coef.T + self.bias).argmax(1).astype(np.int64)

    def _rows(self, features: Any) -> np.ndarray:
        f = np.asarray(features)
        if f.dtype.kind not in "fiu" or f.ndim != 2 or f.shape[1] != self.dim or f.shape[0] < 1:
            raise ValueError(
                f"features must be a non-empty real (n, {self.dim}) array, got shape {f.shape}"
            )
        f = np.ascontiguousarray(f, np.float32)
        if not np.isfinite(f).all():
            raise ValueError("features hold NaN or inf")
        return f

    def topk(
        self, features: Any, k: int, targets: Any = None, *, opponents: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most supporting (or, with ``opponents``, most opposing) training samples.

        Args:
            features: ``(n, d)`` penultimate features.
            k: ``1 <= k <= n_train``.
            targets: ``(n,)`` class per row, ``-1`` (or ``None`` for all rows) for the
                surrogate's prediction.
            opponents: the ``k`` smallest scores instead of the largest.

        Returns:
            ``(values, indices)``: float32 / int64 ``(n, k)``, best first, indices into the
            training set (semantics in the module docstring).

        Complexity: ``O(sum_c n_c * nnz_c * d)`` (per target class, its column of the
        sparse lambda) through :func:`datacredit.kernels.gram_topk`; memory
        ``O(n * k + max_c nnz_c * d)``.
        """
        f = self._rows(features)
        n = f.shape[0]
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise TypeError(f"k must be an integer, got {type(k).__name__}")
        if not 1 <= k <= self.n_train:
            raise ValueError(f"k = {k} must be in [1, n_train = {self.n_train}]")
        k = int(k)
        if targets is None:
            t = np.full(n, -1, np.int64)
        else:
            t = np.asarray(targets)
            if t.shape != (n,) or t.dtype.kind not in "iu":
                raise ValueError(f"targets must be {n} integers, got shape {t.shape}")
            t = t.astype(np.int64)
            if t.min() < -1 or t.max() >= self.n_classes:
                raise ValueError(f"targets must lie in [-1, {self.n_classes})")
        t = np.where(t < 0, self.predict(f), t)
        return column_topk(
            f,
            self.features,
            self._columns,
            t,
            k,
            self.support,
            self.n_train,
            largest=not opponents,
            n_threads=self.n_threads,
        )


def upgrade_explainer(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Rewrite an explainer file of any readable version as the current one (lambda in CSR).

    Reads ``src`` through :class:`DualDAExplainer` (every check applies), writes ``dst``
    atomically; the queries of both files return the same answers.
    """
    ex = DualDAExplainer(src)
    extra = {
        key: value
        for key, value in ex.metadata.items()
        if key not in ("format", "format_version", "n_train", "n_classes", "dim")
    }
    write_explainer(
        dst,
        features=ex.features,
        dual=ex.dual,
        coef=ex.coef,
        bias=ex.bias,
        support=ex.support,
        labels=ex.labels,
        n_train=ex.n_train,
        extra_metadata=extra,
    )
