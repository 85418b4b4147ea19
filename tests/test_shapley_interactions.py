"""Pairwise Shapley interaction index: coefficients, trees (analytic), the estimator."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from datacredit import SurrogateSHAP, games, shapley
from datacredit.shapley import ShapleyValues
from datacredit.shapley.interactions import interactions_from_table, tree_interactions


def _sii_by_definition(v, n, i, j):
    others = [k for k in range(n) if k not in (i, j)]
    tot = 0.0
    for r in range(len(others) + 1):
        w = math.factorial(r) * math.factorial(n - r - 2) / math.factorial(n - 1)
        for S in itertools.combinations(others, r):
            m = sum(1 << k for k in S)
            tot += w * (v[m | 1 << i | 1 << j] - v[m | 1 << i] - v[m | 1 << j] + v[m])
    return tot


def test_table_interactions_match_definition_and_shapiq():
    g = games.synthetic("interaction", n=6, seed=2)
    v = g(shapley.all_coalitions(6))
    E = interactions_from_table(v, 6)
    for i, j in [(0, 1), (2, 3), (0, 4), (1, 5)]:
        assert E[i, j] == pytest.approx(_sii_by_definition(v, 6, i, j), abs=1e-12)
    np.testing.assert_allclose(E, E.T)
    shapiq = pytest.importorskip("shapiq")
    iv = shapiq.ExactComputer(n_players=6, game=lambda Z: g(np.asarray(Z, bool)))("SII", order=2)
    for i, j in itertools.combinations(range(6), 2):
        assert E[i, j] == pytest.approx(iv[(i, j)], abs=1e-10)


def test_tree_interactions_are_exact_for_the_surrogate():
    import xgboost as xgb

    from datacredit.kernels.treeshap import from_xgboost
    from datacredit.surrogateshap import fit_surrogate

    g = games.synthetic("interaction", n=7, seed=1)
    Z = shapley.all_coalitions(7)
    booster = fit_surrogate(
        Z, g(Z), {"max_depth": 4, "n_estimators": 60, "learning_rate": 0.3}, seed=0
    )
    f = booster.predict(xgb.DMatrix(Z.astype(np.float32))).astype(np.float64)
    ref = interactions_from_table(f, 7)
    got = tree_interactions(from_xgboost(booster), 7)
    # float32 leaf values and predictions: error relative to the interactions' size
    assert np.abs(got - ref).max() < 1e-5 * np.abs(ref).max()


def test_estimator_interactions_vs_enumeration(tmp_path):
    g = games.synthetic("interaction", n=8, seed=4)
    exact = interactions_from_table(g(shapley.all_coalitions(8)), 8)
    # full budget: exact
    res = SurrogateSHAP(256, seed=0).explain(g, interactions=True)
    np.testing.assert_allclose(res.interactions, exact, atol=1e-10)
    # half the coalitions: close to the exact index, and the pairs of eq. 33 stand out
    res = SurrogateSHAP(128, seed=0).explain(g, interactions=True)
    assert np.linalg.norm(res.interactions - exact) < 0.2 * np.linalg.norm(exact)
    top = np.argmax(np.abs(np.triu(exact, 1)))
    assert np.argmax(np.abs(np.triu(res.interactions, 1))) == top
    strong = np.abs(exact) > 0.2 * np.abs(exact).max()
    assert (np.sign(res.interactions[strong]) == np.sign(exact[strong])).all()
    np.testing.assert_allclose(res.interactions, res.interactions.T)
    # table, plot, saved file
    df = res.interactions_frame()
    assert df.shape == (8, 8) and list(df.columns) == res.players
    import matplotlib

    matplotlib.use("Agg")
    res.plot_interactions()
    for name in ("i.json", "i.npz"):
        res.save(tmp_path / name)
        np.testing.assert_allclose(
            ShapleyValues.load(tmp_path / name).interactions, res.interactions
        )
    with pytest.raises(ValueError, match="adjusted"):
        SurrogateSHAP(128, estimator="paper").explain(g, interactions=True)
