"""RetrainingHarness: seeded, cached, resumable retraining on subsets; random_subsets;
cross_entropy_loss against scipy."""

from __future__ import annotations

import numpy as np
import pytest

from datacredit.metrics import RetrainingHarness, cross_entropy_loss, random_subsets


def _ridge_harness(tmp_path, calls, tag="ridge"):
    """A real (closed-form) learner: ridge regression on the subset, evaluated on a grid."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3))
    y = x @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.normal(size=50)
    xt = rng.normal(size=(7, 3))

    def train(idx, seed):
        calls.append((tuple(idx), seed))
        noise = np.random.default_rng(seed).normal(scale=1e-3, size=3)  # seeded "training"
        a = x[idx]
        return np.linalg.solve(a.T @ a + np.eye(3), a.T @ y[idx]) + noise

    return (
        RetrainingHarness(train, lambda w: xt @ w, cache_dir=tmp_path, tag=tag, progress=False),
        x,
        y,
        xt,
    )


def test_cache_resume_and_seeds(tmp_path):
    calls = []
    h, x, y, xt = _ridge_harness(tmp_path, calls)
    masks = random_subsets(50, 4, 0.5, seed=1)
    out = h.run(masks[:2], seeds=[0, 1])  # an "interrupted" run: two of four
    assert out.shape == (2, 7) and h.n_trained == 2
    full = h.run(masks, seeds=[0, 1, 2, 3])  # resumes: only the two missing runs train
    assert h.n_trained == 4 and len(calls) == 4
    np.testing.assert_array_equal(full[:2], out)
    # results are the learner's own (independent recomputation)
    idx = np.flatnonzero(masks[2])
    a = x[idx]
    w = np.linalg.solve(a.T @ a + np.eye(3), a.T @ y[idx]) + np.random.default_rng(2).normal(
        scale=1e-3, size=3
    )
    np.testing.assert_allclose(full[2], xt @ w, rtol=1e-12)
    # a fresh harness on the same cache trains nothing; another tag or seed retrains
    calls2 = []
    h2, *_ = _ridge_harness(tmp_path, calls2)
    np.testing.assert_array_equal(h2.run(masks, seeds=[0, 1, 2, 3]), full)
    assert calls2 == []
    h3, *_ = _ridge_harness(tmp_path, calls2, tag="other")
    h3.run(masks[:1], seeds=0)
    h2.run(masks[:1], seeds=5)
    assert len(calls2) == 2


def test_corrupt_cache_file_is_retrained(tmp_path):
    calls = []
    h, *_ = _ridge_harness(tmp_path, calls)
    first = h.run_one(np.arange(10), seed=0)
    (path,) = list(tmp_path.glob("retrain-*.npy"))
    path.write_bytes(b"not a npy file")
    again = h.run_one(np.arange(10), seed=0)
    np.testing.assert_array_equal(first, again)
    assert len(calls) == 2
    assert np.load(path, allow_pickle=False).shape == (7,)


def test_random_subsets_and_errors(tmp_path):
    m = random_subsets(20, 5, 0.3, seed=3)
    assert m.shape == (5, 20) and np.all(m.sum(1) == 6)
    np.testing.assert_array_equal(m, random_subsets(20, 5, 0.3, seed=3))
    with pytest.raises(ValueError, match="fraction"):
        random_subsets(20, 5, 1.0)
    h, *_ = _ridge_harness(tmp_path, [])
    with pytest.raises(ValueError, match="seeds"):
        h.run(m, seeds=[0, 1])
    with pytest.raises(ValueError, match="empty"):
        h.run_one([], 0)


def test_cross_entropy_loss_matches_scipy():
    from scipy.special import log_softmax

    rng = np.random.default_rng(0)
    z = rng.normal(scale=30, size=(40, 6))
    y = rng.integers(0, 6, 40)
    ref = -log_softmax(z, axis=1)[np.arange(40), y].mean()
    assert cross_entropy_loss(z, y) == pytest.approx(ref, rel=1e-12)
