"""The DualDA explainer artifact: what a server needs to answer "which training samples support
this prediction", saved by :meth:`DualDA.save_explainer`, read here and by the C API
(``dc_dualda_load`` in ``cpp/src/c_api.cpp``).

File: a safetensors container (:mod:`datacredit.safetensors_io`) with

====================  =======  ================  ===========================================
tensor                dtype    shape             meaning
====================  =======  ================  ===========================================
``features``          F32      ``(n_sv, d)``     penultimate features of the support vectors
``dual_coef``         F32      ``(n_sv, K)``     lambda of the support vectors
``coef``              F64      ``(K, d)``        surrogate weights ``W = lambda^T F``
``bias``              F64      ``(K,)``          surrogate bias ``sum_i lambda_ic``
``support``           I64      ``(n_sv,)``       training index of each support vector,
                                                 strictly increasing, in ``[0, n_train)``
``labels``            I64      ``(n_sv,)``       training label of each support vector
====================  =======  ================  ===========================================

and metadata ``format = "datacredit.dualda_explainer"``, ``format_version = "1"``,
``n_train``, ``n_classes``, ``dim`` (decimal strings) plus informational keys.

Top-k semantics (identical in Python and C): for a feature row ``f`` and class ``c`` (given,
or the surrogate's prediction ``argmax_c (W f + bias)_c`` in float64, ties to the lower
class), the scores of all ``n_train`` training samples are ``tau_c(i) = lambda_ic f_i . f``
(float32, through the fused Gram kernel) for support vectors and exactly 0 for the others;
the ``k`` largest (proponents) or smallest (opponents) are returned, ties to the lower
training index.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from datacredit.safetensors_io import load_safetensors, save_safetensors

EXPLAINER_FORMAT = "datacredit.dualda_explainer"
EXPLAINER_FORMAT_VERSION = "1"

__all__ = ["EXPLAINER_FORMAT", "EXPLAINER_FORMAT_VERSION", "DualDAExplainer", "write_explainer"]


def write_explainer(
    path: str | os.PathLike,
    *,
    features: np.ndarray,
    dual_coef: np.ndarray,
    coef: np.ndarray,
    bias: np.ndarray,
    support: np.ndarray,
    labels: np.ndarray,
    n_train: int,
    extra_metadata: dict[str, str] | None = None,
) -> None:
    """Validate and write an explainer file atomically (layout in the module docstring)."""
    f = np.ascontiguousarray(features, np.float32)
    lam = np.ascontiguousarray(dual_coef, np.float32)
    w = np.ascontiguousarray(coef, np.float64)
    b = np.ascontiguousarray(bias, np.float64)
    sup = np.ascontiguousarray(support, np.int64)
    lab = np.ascontiguousarray(labels, np.int64)
    if f.ndim != 2 or w.ndim != 2 or lam.ndim != 2:
        raise ValueError("write_explainer: features, dual_coef and coef must be 2-d")
    n_sv, d = f.shape
    k = w.shape[0]
    if w.shape != (k, d) or lam.shape != (n_sv, k) or b.shape != (k,) or k < 1 or d < 1:
        raise ValueError(
            f"write_explainer: inconsistent shapes features {f.shape}, dual_coef {lam.shape}, "
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
            "dual_coef": lam,
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
        if meta.get("format_version") != EXPLAINER_FORMAT_VERSION:
            raise ValueError(
                f"{path}: explainer format version {meta.get('format_version')!r} is not "
                f"supported (this version reads {EXPLAINER_FORMAT_VERSION!r})"
            )
        want = {
            "features": np.float32,
            "dual_coef": np.float32,
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
        self.dual_coef = tensors["dual_coef"]
        self.coef = tensors["coef"]
        self.bias = tensors["bias"]
        self.support = tensors["support"]
        self.labels = tensors["labels"]
        self.metadata = meta
        n_sv, d, k = self.features.shape[0], self.dim, self.n_classes
        ok = (
            self.features.shape == (n_sv, d)
            and self.dual_coef.shape == (n_sv, k)
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
        for name in ("features", "dual_coef", "coef", "bias"):
            if not np.isfinite(tensors[name]).all():
                raise ValueError(f"{path}: tensor {name!r} holds NaN or inf")

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

        Complexity: ``O(n * n_sv * d)`` through :func:`datacredit.kernels.gram_topk`,
        memory ``O(n * k)``.
        """
        from datacredit.kernels import gram_topk

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
        k_sv = min(k, self.n_support)
        if k_sv:
            sv_vals, sv_pos = gram_topk(
                f,
                self.features,
                k_sv,
                weights=self.dual_coef,
                classes=t,
                largest=not opponents,
                n_threads=self.n_threads,
            )
            sv_idx = self.support[sv_pos]
        else:
            sv_vals = np.zeros((n, 0), np.float32)
            sv_idx = np.zeros((n, 0), np.int64)
        # Non-support samples score exactly 0; the lowest-indexed k of them are candidates.
        mask = np.ones(self.n_train, bool)
        mask[self.support] = False
        zeros_idx = np.flatnonzero(mask)[:k]
        vals = np.concatenate([sv_vals, np.zeros((n, zeros_idx.size), np.float32)], 1)
        idx = np.concatenate([sv_idx, np.broadcast_to(zeros_idx, (n, zeros_idx.size))], 1)
        key = vals if opponents else -vals
        order = np.lexsort((idx, key), axis=1)[:, :k]
        return np.take_along_axis(vals, order, 1), np.take_along_axis(idx, order, 1)
