"""Data attribution metrics against straightforward loop references and scipy/sklearn."""

from __future__ import annotations

import numpy as np
import pytest

from datacredit.metrics import (
    coreset_indices,
    coreset_ranking,
    identical_class,
    identical_subclass,
    lds,
    matthews_corrcoef,
    mislabel_detection_auc,
    shortcut_detection_auprc,
)


def test_identical_class_dense_and_topk(rng):
    n_test, n, k = 30, 50, 5
    scores = rng.normal(size=(n_test, n)).astype(np.float32)
    labels = rng.integers(0, 4, n)
    pred = rng.integers(0, 4, n_test)
    ref = np.mean(
        [
            np.mean(
                [labels[j] == pred[t] for j in sorted(range(n), key=lambda j: -scores[t, j])[:k]]
            )
            for t in range(n_test)
        ]
    )
    assert identical_class(scores, labels, pred, k=k) == pytest.approx(ref)
    order = np.argsort(-scores, axis=1)[:, :8]
    vals = np.take_along_axis(scores, order, 1)
    assert identical_class((vals, order), labels, pred, k=k) == pytest.approx(ref)
    assert identical_class(order, labels, pred, k=k) == pytest.approx(ref)
    assert identical_subclass(scores, labels, pred, k=k) == pytest.approx(ref)
    # ties go to the lower index
    tied = np.zeros((1, 6))
    assert identical_class(tied, np.array([1, 1, 0, 0, 0, 0]), np.array([1]), k=2) == 1.0
    with pytest.raises(ValueError, match="k = 9"):
        identical_class(order, labels, pred, k=9)
    with pytest.raises(ValueError, match="test_predictions"):
        identical_class(scores, labels, pred[:-1], k=k)


def mislabel_reference(si, mis):
    order = sorted(range(len(si)), key=lambda i: (-si[i], i))
    m = mis.sum()
    curve = np.cumsum([mis[i] for i in order]) / m
    best = np.cumsum(sorted(mis, reverse=True)) / m
    worst = np.cumsum(sorted(mis)) / m
    return (curve.sum() - worst.sum()) / (best.sum() - worst.sum())


def test_mislabel_detection_auc(rng):
    n = 200
    mis = rng.random(n) < 0.1
    si = rng.normal(size=n) + 2.0 * mis
    assert mislabel_detection_auc(si, mis) == pytest.approx(mislabel_reference(si, mis))
    assert mislabel_detection_auc(mis.astype(float), mis) == pytest.approx(1.0)
    assert mislabel_detection_auc(-mis.astype(float), mis) == pytest.approx(0.0)
    random_scores = [mislabel_detection_auc(rng.random(n), mis) for _ in range(200)]
    assert abs(np.mean(random_scores) - 0.5) < 0.03
    with pytest.raises(ValueError, match="some, but not all"):
        mislabel_detection_auc(si, np.zeros(n, bool))
    with pytest.raises(ValueError, match="equal length"):
        mislabel_detection_auc(si[:-1], mis)


def test_shortcut_detection_auprc_matches_sklearn(rng):
    from sklearn.metrics import average_precision_score

    n_test, n = 12, 80
    poisoned = rng.random(n) < 0.15
    scores = rng.normal(size=(n_test, n)) + poisoned
    scores[0, :10] = 0.5  # ties
    ref = np.mean([average_precision_score(poisoned, row) for row in scores])
    assert shortcut_detection_auprc(scores, poisoned) == pytest.approx(ref, rel=1e-12)
    with pytest.raises(ValueError, match="marks no"):
        shortcut_detection_auprc(scores, np.zeros(n, bool))


def test_lds_matches_scipy_spearman(rng):
    from scipy.stats import spearmanr

    n_test, n, m = 7, 40, 25
    tau = rng.normal(size=(n_test, n))
    masks = rng.random((m, n)) < 0.5
    outputs = masks.astype(float) @ tau.T + 0.3 * rng.normal(size=(m, n_test))
    outputs[:5, 0] = outputs[0, 0]  # ties in one column
    ref = np.mean(
        [spearmanr(tau[t] @ masks.T.astype(float), outputs[:, t])[0] for t in range(n_test)]
    )
    assert lds(tau, masks, outputs) == pytest.approx(ref, rel=1e-10)
    as_lists = [np.flatnonzero(row) for row in masks]
    assert lds(tau, as_lists, outputs) == pytest.approx(ref, rel=1e-10)
    with pytest.raises(ValueError, match="subset_outputs"):
        lds(tau, masks, outputs[:, :-1])


def test_coreset_ranking_and_indices(rng):
    a = rng.normal(size=(9, 30))
    order, imp = coreset_ranking(a)
    np.testing.assert_allclose(imp, [np.mean([abs(a[t, i]) for t in range(9)]) for i in range(30)])
    assert list(order) == sorted(range(30), key=lambda i: (-imp[i], i))
    keep = coreset_indices(a, 0.2)
    np.testing.assert_array_equal(keep, np.sort(order[:6]))
    pruned = coreset_indices(a, 0.2, prune=True)
    assert len(pruned) == 24 and not set(pruned) & set(keep)
    with pytest.raises(ValueError, match="fraction"):
        coreset_indices(a, 0.0)


def test_matthews_matches_sklearn(rng):
    from sklearn.metrics import matthews_corrcoef as sk_mcc

    a = rng.integers(0, 5, 300)
    b = np.where(rng.random(300) < 0.7, a, rng.integers(0, 5, 300))
    assert matthews_corrcoef(a, b) == pytest.approx(sk_mcc(a, b), rel=1e-12)
    assert matthews_corrcoef(a, a) == pytest.approx(1.0)
