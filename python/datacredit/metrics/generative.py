"""Evaluation criteria for data valuation of generative models (GMValuator paper, §4).

* C1 / C2 — :func:`identical_class_ratio`: how often the training samples credited for a
  generated sample share its class (C1) or its whole attribute vector (C2).
* C3 — :func:`ood_rank`: where out-of-distribution (e.g. noise-corrupted) training
  samples land in the value ranking; a good valuation puts them at the bottom.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from datacredit._arrays import as_integer_array


def _np(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    if x is None:
        raise TypeError(f"{name} must be an array, got None")
    return np.asarray(x)


def _comparable_labels(tl: np.ndarray, gl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Numeric labels as int64 (``0.5`` raises instead of never matching); other labels
    (e.g. strings) must be of one kind on both sides."""
    numeric = "biuf"
    if tl.dtype.kind in numeric and gl.dtype.kind in numeric:
        return as_integer_array(tl, "train_labels"), as_integer_array(gl, "gen_labels")
    if tl.dtype.kind != gl.dtype.kind:
        raise TypeError(
            f"train_labels ({tl.dtype}) and gen_labels ({gl.dtype}) are of different kinds: "
            "no label could ever match"
        )
    return tl, gl


def identical_class_ratio(
    topk_indices: Any,
    train_labels: Any,
    gen_labels: Any,
    k: int | None = None,
    *,
    per_sample: bool = False,
) -> float | np.ndarray:
    """Fraction of the top-k credited training samples whose label equals the generated
    sample's label, averaged over generated samples (criteria C1 and C2).

    Args:
        topk_indices: ``(n_gen, K)`` training indices per generated sample, best first
            (e.g. ``GMValuation.topk_indices``).
        train_labels: ``(N,)`` class labels, or ``(N, A)`` attribute vectors (C2: a match
            needs every attribute equal).
        gen_labels: ``(n_gen,)`` or ``(n_gen, A)`` labels of the generated samples.
        k: use the first ``k <= K`` columns (default: all).
        per_sample: return the ``(n_gen,)`` per-sample ratios instead of their mean.

    Complexity ``O(n_gen * k * A)``.
    """
    top = _np(topk_indices, "topk_indices")
    tl = _np(train_labels, "train_labels")
    gl = _np(gen_labels, "gen_labels")
    if top.ndim != 2 or top.shape[0] == 0 or top.shape[1] == 0:
        raise ValueError(f"topk_indices must be a non-empty (n_gen, K) matrix, got {top.shape}")
    if top.dtype.kind not in "iu":
        raise TypeError(f"topk_indices must hold integers, got {top.dtype}")
    k = top.shape[1] if k is None else k
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= top.shape[1]:
        raise ValueError(f"k = {k!r} must be an integer in [1, {top.shape[1]}]")
    if tl.ndim not in (1, 2) or tl.shape[0] == 0:
        raise ValueError(f"train_labels must be (N,) or (N, A), got {tl.shape}")
    if gl.shape[0] != top.shape[0] or gl.shape[1:] != tl.shape[1:]:
        raise ValueError(
            f"gen_labels must have shape ({top.shape[0]},{''.join(f' {s}' for s in tl.shape[1:])})"
            f" matching train_labels, got {gl.shape}"
        )
    if top.min() < 0 or top.max() >= tl.shape[0]:
        raise ValueError(f"topk_indices holds indices outside [0, {tl.shape[0]})")
    tl, gl = _comparable_labels(tl, gl)
    matched = tl[top[:, :k]]  # (n_gen, k) or (n_gen, k, A)
    same = matched == gl[:, None]
    if same.ndim == 3:
        same = same.all(-1)
    ratios = same.mean(1)
    return ratios if per_sample else float(ratios.mean())


def ood_rank(values: Any, is_noisy: Any, *, ties: str = "average") -> np.ndarray:
    """Value ranks of the out-of-distribution training samples (criterion C3).

    Args:
        values: ``(N,)`` data values (larger = more valuable).
        is_noisy: ``(N,)`` boolean mask of the OOD samples, or their integer indices.
        ties: how equal values share ranks: ``"average"`` (default), ``"min"`` or ``"max"``
            (as ``scipy.stats.rankdata``).

    Returns:
        ``(n_noisy,)`` float64 ranks, 1 = most valuable, N = least valuable, in the order
        of the OOD samples.  ``ranks / N`` is the percentile (near 1 is good).

    Complexity ``O(N log N)``.
    """
    v = _np(values, "values").astype(np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"values must be a non-empty vector, got shape {v.shape}")
    if not np.isfinite(v).all():
        raise ValueError("values contains NaN or inf")
    if ties not in ("average", "min", "max"):
        raise ValueError(f"unknown ties {ties!r}; expected 'average', 'min' or 'max'")
    m = _np(is_noisy, "is_noisy")
    if m.dtype == bool:
        if m.shape != v.shape:
            raise ValueError(f"is_noisy mask must have shape {v.shape}, got {m.shape}")
        idx = np.flatnonzero(m)
    else:
        if m.ndim != 1 or m.dtype.kind not in "iu":
            raise TypeError("is_noisy must be a boolean mask (N,) or a vector of indices")
        if m.size and (m.min() < 0 or m.max() >= v.size):  # negatives would wrap
            raise ValueError(f"is_noisy holds indices outside [0, {v.size})")
        idx = m.astype(np.int64)
    if idx.size == 0:
        raise ValueError("is_noisy selects no samples")
    from scipy.stats import rankdata

    return rankdata(-v, method=ties)[idx].astype(np.float64)
