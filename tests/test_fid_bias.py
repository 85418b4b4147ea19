"""FID on a finite bank against the analytic FID of Gaussian mixtures (issue 23): the
bias-corrected estimate, its bracket, the automatic small-bank warning, bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from datacredit.surrogateshap import ProxyGame, SampleBank
from datacredit.surrogateshap.utilities import FID


def _mixture(d, n_labels, seed):
    rng = np.random.default_rng(seed)
    k = np.arange(1, d + 1)
    lam = np.array([10.0 / k * rng.lognormal(0, 0.5, d) for _ in range(n_labels)])
    mus = rng.normal(size=(n_labels, d)) * np.sqrt(4.0 / k)
    return mus, lam


def _moments(mus, lam, pi):
    mu = pi @ mus
    return mu, np.diag(pi @ lam) + (mus.T * pi) @ mus - np.outer(mu, mu)


def _analytic_fid(mu, C, mu_r, C_r):
    """FID of two Gaussians' moments by scipy's matrix square root (independent of ours)."""
    from scipy.linalg import sqrtm

    s = sqrtm(C_r @ C)
    return float(((mu - mu_r) ** 2).sum() + np.trace(C) + np.trace(C_r) - 2 * np.trace(s).real)


def _setup(d, n_per_label, n_labels=10, seed=0):
    mus, lam = _mixture(d, n_labels, seed)
    ref = _moments(mus, lam, np.full(n_labels, 1 / n_labels))
    rng = np.random.default_rng(seed + 1)
    bank = SampleBank(
        {
            lab: mus[lab] + rng.standard_normal((n_per_label, d)) * np.sqrt(lam[lab])
            for lab in range(n_labels)
        }
    )
    return mus, lam, ref, bank


def _coalitions(n_labels, seed=2):
    rng = np.random.default_rng(seed)
    out = []
    for size in range(1, n_labels // 2 + 1):
        pi = np.zeros(n_labels)
        pi[rng.choice(n_labels, size, replace=False)] = 1 / size
        out.append(pi)
    return np.array(out)


def test_corrected_fid_close_to_analytic_and_bracketed():
    """d = 32, 100 samples per label: the jackknife-corrected FID is within 6 % (median over
    coalitions of 1..5 labels; the plug-in: 20 %), and the bracket holds the truth."""
    mus, lam, (mu_r, C_r), bank = _setup(32, 100)
    W = _coalitions(10)
    exact = np.array([_analytic_fid(*_moments(mus, lam, pi), mu_r, C_r) for pi in W])
    split = FID(None, (mu_r, C_r)).prepare(bank)
    plugin = FID(None, (mu_r, C_r), estimator="plugin").prepare(bank)
    rel = np.abs(split.evaluate(W) - exact) / exact
    rel_plugin = np.abs(plugin.evaluate(W) - exact) / exact
    assert np.median(rel) < 0.06 and np.median(rel_plugin) > 3 * np.median(rel)
    br = split.bracket(W)
    assert (br[:, 0] <= exact).all() and (exact <= br[:, 1]).all()


def test_small_bank_warns_once_and_large_bank_is_silent():
    mus, lam, ref, small = _setup(64, 20, n_labels=6)
    with pytest.warns(UserWarning, match="samples per label") as rec:
        game = ProxyGame(
            small, {f"p{i}": [i] for i in range(6)}, FID(None, ref), label_weights="uniform"
        )
    assert len([w for w in rec if "too small" in str(w.message)]) == 1
    assert "96" in game.bank_warning  # 1.5·d samples for the smallest coalition
    br = game.bias_bracket(np.eye(6, dtype=bool)[:1])
    assert br[0, 0] < br[0, 1]
    mus, lam, ref, big = _setup(8, 100, n_labels=6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        game = ProxyGame(
            big, {f"p{i}": [i] for i in range(6)}, FID(None, ref), label_weights="uniform"
        )
    assert game.bank_warning is None


def test_bad_banks():
    rng = np.random.default_rng(0)
    ref = (np.zeros(3), np.eye(3))
    one = SampleBank({"a": rng.normal(size=(10, 3)), "b": rng.normal(size=(1, 3))})
    for est in ("split", "plugin"):
        with pytest.raises(ValueError, match="label 'b' has 1 sample"):
            FID(None, ref, estimator=est).prepare(one)
    bad = rng.normal(size=(10, 3))
    bad[4, 1] = np.nan
    with pytest.raises(ValueError, match="'c'"):
        FID(None, ref).prepare(SampleBank({"a": rng.normal(size=(10, 3)), "c": bad}))
    # identical samples: Σ = 0, FID = ‖μ − μ_r‖² + tr Σ_r exactly
    same = SampleBank({"a": np.tile([1.0, 2.0, 3.0], (12, 1))})
    for est in ("split", "plugin"):
        got = FID(None, ref, estimator=est).prepare(same).evaluate(np.ones((1, 1)))[0]
        assert got == pytest.approx(14.0 + 3.0, abs=1e-9)
    # d = 1 (reproducer r18): FID = (μ − μ_r)² + (σ − σ_r)² for the plug-in moments
    x = rng.normal(1.0, 2.0, size=(400, 1))
    f = FID(None, (np.zeros(1), np.ones((1, 1))), estimator="plugin", ddof=0)
    got = f.prepare(SampleBank({0: x})).evaluate(np.ones((1, 1)))[0]
    assert got == pytest.approx(x.mean() ** 2 + (x.std() - 1.0) ** 2, rel=1e-9)


def test_negative_corrected_fid_is_kept_with_a_note():
    """At the reference's own distribution the unbiased estimate straddles 0: kept (clipping
    would bias the Shapley values), with one warning."""
    mus, lam, (mu_r, C_r), bank = _setup(16, 200, n_labels=4, seed=3)
    f = FID(None, (mu_r, C_r), seed=0).prepare(bank)
    vals = []
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        for seed in range(6):
            f.seed = seed
            f.prepare(bank)
            vals.append(f.evaluate(np.full((1, 4), 0.25))[0])
    vals = np.array(vals)
    assert (vals < 0).any() and (vals > 0).any()
    assert sum("negative" in str(w.message) for w in rec) == (vals < 0).sum()
