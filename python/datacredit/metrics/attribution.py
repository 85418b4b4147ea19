"""Evaluation metrics for data attribution (DualXDA paper, Appendix E), for any method.

Attributions are either a dense ``(n_test, N)`` score matrix (higher = more supportive)
or a top-k pair ``(values, indices)`` as returned by ``DualDA.attribute(..., top_k=k)``,
or just the ``(n_test, k)`` index matrix, best first.  Numpy arrays or CPU torch tensors.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from datacredit._arrays import as_integer_array, as_mask, to_numpy


def _as_array(x: Any, name: str) -> np.ndarray:
    return np.asarray(to_numpy(x, name))


def _top_indices(attributions_or_topk: Any, k: int, n_train: int | None) -> np.ndarray:
    """The ``k`` best training indices per test row, largest score first (ties: lower index)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if isinstance(attributions_or_topk, tuple) and len(attributions_or_topk) == 2:
        idx = as_integer_array(attributions_or_topk[1], "indices")
    else:
        arr = _as_array(attributions_or_topk, "attributions")
        if arr.ndim != 2:
            raise ValueError(
                f"attributions must be 2-D (n_test, N) or (n_test, k), got {arr.shape}"
            )
        if arr.dtype.kind in "iu":
            idx = arr
        else:
            if n_train is not None and arr.shape[1] != n_train:
                raise ValueError(
                    f"attributions have {arr.shape[1]} columns (training samples) but "
                    f"{n_train} training labels were given"
                )
            if arr.shape[1] < k:
                raise ValueError(f"k = {k} exceeds the number of training samples {arr.shape[1]}")
            if not np.isfinite(arr).all():
                raise ValueError("attributions contain NaN or inf")
            # stable sort of -score keeps the lower index first among ties
            return np.argsort(-arr, axis=1, kind="stable")[:, :k]
    if idx.ndim != 2:
        raise ValueError(f"indices must be 2-D (n_test, k), got {idx.shape}")
    if idx.shape[1] < k:
        raise ValueError(f"k = {k} but only {idx.shape[1]} indices per test sample were given")
    idx = idx[:, :k].astype(np.int64)
    # A negative index would silently wrap to the end of the training set.
    if idx.size and idx.min() < 0:
        raise ValueError(f"indices must be >= 0, got {int(idx.min())}")
    if n_train is not None and idx.size and idx.max() >= n_train:
        raise ValueError(f"indices must lie in [0, {n_train}), got {int(idx.max())}")
    return idx


def identical_class(
    attributions_or_topk: Any, train_labels: Any, test_predictions: Any, k: int = 5
) -> float:
    """Identical-class test (E.1): mean share of the top-``k`` training samples whose label
    equals the test sample's predicted class.  ``O(n_test * N log N)`` for dense input,
    ``O(n_test * k)`` for top-k input.  In ``[0, 1]``; higher is better.
    """
    labels = as_integer_array(train_labels, "train_labels")
    pred = as_integer_array(test_predictions, "test_predictions")
    if labels.ndim != 1:
        raise ValueError(f"train_labels must be a vector (N,), got shape {labels.shape}")
    idx = _top_indices(attributions_or_topk, k, labels.shape[0])
    if pred.shape != (idx.shape[0],):
        raise ValueError(f"test_predictions must have shape ({idx.shape[0]},), got {pred.shape}")
    return float((labels[idx] == pred[:, None]).mean())


def identical_subclass(
    attributions_or_topk: Any, train_subclasses: Any, test_subclasses: Any, k: int = 5
) -> float:
    """Identical-subclass test (E.2 in the paper's numbering of E.1): mean share of the
    top-``k`` training samples (attributed for the predicted superclass) whose true
    subclass equals the test sample's true subclass.  In ``[0, 1]``; higher is better.
    """
    return identical_class(attributions_or_topk, train_subclasses, test_subclasses, k=k)


def mislabel_detection_auc(self_influence: Any, is_mislabeled: Any) -> float:
    """Mislabel detection (E.2): normalised area under the cumulative detection curve.

    Training samples are visited by decreasing self-influence (ties: lower index first);
    ``c_j`` is the share of all mislabeled samples found among the first ``j``.  The mean
    of ``c_j`` is mapped linearly so that the best possible order scores 1, the worst 0,
    and a random order 0.5 in expectation.  ``O(N log N)``.

    Raises:
        ValueError: mismatched lengths, NaN scores, no mislabeled or only mislabeled samples.
    """
    si = _as_array(self_influence, "self_influence").astype(np.float64)
    mis = as_mask(is_mislabeled, "is_mislabeled")
    if si.ndim != 1 or mis.shape != si.shape:
        raise ValueError(
            f"self_influence and is_mislabeled must be vectors of equal length, got "
            f"{si.shape} and {mis.shape}"
        )
    if not np.isfinite(si).all():
        raise ValueError("self_influence contains NaN or inf")
    n, m = si.shape[0], int(mis.sum())
    if m == 0 or m == n:
        raise ValueError("is_mislabeled must mark some, but not all, samples")
    order = np.argsort(-si, kind="stable")
    area = np.cumsum(mis[order]).sum() / (m * n)
    j = np.arange(1, n + 1)
    best = np.minimum(j, m).sum() / (m * n)
    worst = np.maximum(j - (n - m), 0).sum() / (m * n)
    return float((area - worst) / (best - worst))


def _average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    """Tie-aware average precision (step-wise, as scikit-learn's) of one score vector."""
    order = np.argsort(-scores, kind="stable")
    s, p = scores[order], positive[order]
    tp = np.cumsum(p)
    fp = np.cumsum(~p)
    last = np.r_[np.flatnonzero(s[1:] != s[:-1]), s.shape[0] - 1]  # end of each tie group
    tp, fp = tp[last], fp[last]
    precision = tp / (tp + fp)
    recall = tp / tp[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def shortcut_detection_auprc(attributions: Any, is_shortcut: Any) -> float:
    """Shortcut detection (E.2): mean over test samples of the area under the
    precision-recall curve (average precision) for finding the shortcut-carrying training
    samples from each test sample's attribution row.  ``O(n_test * N log N)``.

    Args:
        attributions: dense ``(n_test, N)`` scores for the evaluation set (test samples
            with the shortcut, classified into the shortcut class, attributed for it).
        is_shortcut: ``(N,)`` bool, the training samples that carry the shortcut.
    """
    a = _as_array(attributions, "attributions").astype(np.float64)
    pos = as_mask(is_shortcut, "is_shortcut")
    if a.ndim != 2 or pos.shape != (a.shape[1],):
        raise ValueError(
            f"attributions must be (n_test, N) and is_shortcut (N,), got {a.shape} and {pos.shape}"
        )
    if not pos.any():
        raise ValueError("is_shortcut marks no training sample")
    if pos.all():
        # every order has precision 1: the metric would say nothing about the attributions
        raise ValueError("is_shortcut marks every training sample; some must be shortcut-free")
    if not np.isfinite(a).all():
        raise ValueError("attributions contain NaN or inf")
    return float(np.mean([_average_precision(row, pos) for row in a]))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..m along the last axis, ties sharing their average rank (row-wise)."""
    order = np.argsort(x, axis=-1, kind="stable")
    xs = np.take_along_axis(x, order, -1)
    m = x.shape[-1]
    ranks_sorted = np.empty_like(xs, dtype=np.float64)
    for r in range(x.shape[0]):  # group ties per row (vectorised inside the row)
        row = xs[r]
        starts = np.r_[0, np.flatnonzero(row[1:] != row[:-1]) + 1]
        ends = np.r_[starts[1:], m]
        avg = (starts + ends + 1) / 2.0
        ranks_sorted[r] = np.repeat(avg, ends - starts)
    ranks = np.empty_like(ranks_sorted)
    np.put_along_axis(ranks, order, ranks_sorted, -1)
    return ranks


def lds(scores: Any, subsets: Any, subset_outputs: Any) -> float:
    """Linear datamodeling score (E.3): mean Spearman correlation between the predicted
    subset effect ``sum_{i in S_j} tau(x, i)`` and the output of a model retrained on
    ``S_j``, over test samples (rows with a constant prediction or output are skipped).

    Args:
        scores: ``(n_test, N)`` attributions ``tau_{c(x)}(x, i)``.
        subsets: ``(m, N)`` boolean membership masks, or a list of ``m`` index arrays.
        subset_outputs: ``(m, n_test)`` outputs ``Phi_j(x)_{c(x)}`` of the retrained models.

    Complexity ``O(n_test * N * m)`` for the subset sums plus ``O(n_test * m log m)``.
    """
    tau = _as_array(scores, "scores").astype(np.float64)
    if tau.ndim != 2:
        raise ValueError(f"scores must be (n_test, N), got {tau.shape}")
    if not np.isfinite(tau).all():  # NaN ranks would give a meaningless correlation
        raise ValueError("scores contain NaN or inf")
    n_test, n = tau.shape
    if isinstance(subsets, (list, tuple)):
        mask = np.zeros((len(subsets), n), bool)
        for j, s in enumerate(subsets):
            members = as_integer_array(s, f"subsets[{j}]").reshape(-1)
            if members.size and (members.min() < 0 or members.max() >= n):
                bad = int(members[(members < 0) | (members >= n)][0])
                raise ValueError(f"subsets[{j}] holds index {bad}, outside [0, {n})")
            mask[j, members] = True
    else:
        mask = as_mask(subsets, "subsets")
    if mask.ndim != 2 or mask.shape[1] != n:
        raise ValueError(f"subsets must be (m, {n}) masks, got {mask.shape}")
    out = _as_array(subset_outputs, "subset_outputs").astype(np.float64)
    if out.shape != (mask.shape[0], n_test):
        raise ValueError(f"subset_outputs must be ({mask.shape[0]}, {n_test}), got {out.shape}")
    if not np.isfinite(out).all():
        raise ValueError("subset_outputs contain NaN or inf")
    if mask.shape[0] < 3:
        raise ValueError("lds needs at least 3 subsets")
    predicted = tau @ mask.T.astype(np.float64)  # (n_test, m)
    rp = _average_ranks(predicted)
    ro = _average_ranks(out.T)
    rp -= rp.mean(1, keepdims=True)
    ro -= ro.mean(1, keepdims=True)
    den = np.sqrt((rp * rp).sum(1) * (ro * ro).sum(1))
    valid = den > 0
    if not valid.any():
        raise ValueError("every test sample has constant predictions or outputs")
    return float(np.mean((rp * ro).sum(1)[valid] / den[valid]))


def coreset_ranking(attributions: Any) -> tuple[np.ndarray, np.ndarray]:
    """Global importance of training samples for coreset selection / data pruning (E.3).

    Returns ``(order, importance)``: ``importance[i] = mean over test samples of
    |tau(x, i)|`` (float64 ``(N,)``) and ``order`` the indices by decreasing importance
    (ties: lower index).  Keep ``order[:p*N]`` for a coreset, drop it for pruning.
    """
    a = _as_array(attributions, "attributions").astype(np.float64)
    if a.ndim != 2:
        raise ValueError(f"attributions must be (n_test, N), got {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError("attributions contain NaN or inf")
    importance = np.abs(a).mean(0)
    return np.argsort(-importance, kind="stable"), importance


def coreset_indices(attributions: Any, fraction: float, *, prune: bool = False) -> np.ndarray:
    """Training indices to keep: the most important ``fraction`` (coreset), or with
    ``prune=True`` everything except them (adversarial data pruning).  Sorted ascending."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.number)):
        raise TypeError(f"fraction must be a number in (0, 1], got {type(fraction).__name__}")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    order, _ = coreset_ranking(attributions)
    top = order[: int(round(fraction * order.shape[0]))]
    keep = np.setdiff1d(order, top) if prune else top
    return np.sort(keep)


def matthews_corrcoef(a: Any, b: Any) -> float:
    """Multiclass Matthews correlation (Gorodkin's R_K) between two label vectors.

    Labels are class indices ``>= 0`` (integers, or whole-number floats).  ``O(n + K^2)``.

    Raises:
        TypeError: non-integer labels (0.5 is not truncated to class 0).
        ValueError: negative labels, empty or mismatched vectors.
    """
    x = as_integer_array(a, "a")
    y = as_integer_array(b, "b")
    if x.shape != y.shape or x.ndim != 1 or x.size == 0:
        raise ValueError("a and b must be non-empty label vectors of equal length")
    if min(x.min(), y.min()) < 0:  # np.add.at would wrap a negative class to the end
        raise ValueError(f"labels must be class indices >= 0, got {int(min(x.min(), y.min()))}")
    k = int(max(x.max(), y.max())) + 1
    conf = np.zeros((k, k), np.float64)
    np.add.at(conf, (x, y), 1.0)
    t, p = conf.sum(1), conf.sum(0)
    c, s = np.trace(conf), conf.sum()
    den = np.sqrt((s * s - (p * p).sum()) * (s * s - (t * t).sum()))
    return float((c * s - (t * p).sum()) / den) if den > 0 else 0.0
