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


def _quadratic_game(n, seed):
    """z·w + three pairwise terms: their coefficients are exactly the pairwise SII."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=n)
    pairs = [(0, 3), (2, 5), (4, 7)]
    coef = rng.normal(0, 2, size=3)

    def g(Z):
        Z = np.atleast_2d(np.asarray(Z, bool)).astype(np.float64)
        return Z @ w + sum(c * Z[:, i] * Z[:, j] for (i, j), c in zip(pairs, coef))

    truth = np.zeros((n, n))
    for (i, j), c in zip(pairs, coef):
        truth[i, j] = truth[j, i] = c
    return g, truth


def test_pairwise_regression_on_all_coalitions_is_the_faithful_sii():
    """Second-order KernelSHAP on every coalition with the Shapley kernel is FSII (order 2);
    checked against shapiq's exact FSII, and on a quadratic game against its coefficients."""
    from datacredit.shapley.interactions import pairwise_regression_solve
    from datacredit.shapley.kernel import kernel_weights

    n = 6
    g = games.synthetic("nonlinear", n=n, seed=3)
    Z = shapley.all_coalitions(n)
    v = g(Z)
    s = Z.sum(1)
    inner = (s > 0) & (s < n)
    _, G = pairwise_regression_solve(
        Z[inner], v[inner], v[0], v[-1], kernel_weights(n, s[inner]), ridge=0.0
    )
    np.testing.assert_allclose(G, G.T)
    shapiq = pytest.importorskip("shapiq")
    iv = shapiq.ExactComputer(n_players=n, game=lambda Q: g(np.asarray(Q, bool)))("FSII", order=2)
    for i, j in itertools.combinations(range(n), 2):
        assert G[i, j] == pytest.approx(iv[(i, j)], abs=1e-9)
    q, truth = _quadratic_game(n + 2, 0)
    Zq = shapley.all_coalitions(n + 2)
    sq = Zq.sum(1)
    iq = (sq > 0) & (sq < n + 2)
    vq = q(Zq)
    _, Gq = pairwise_regression_solve(
        Zq[iq], vq[iq], vq[0], vq[-1], kernel_weights(n + 2, sq[iq]), ridge=0.0
    )
    np.testing.assert_allclose(Gq, truth, atol=1e-9)
    np.testing.assert_allclose(interactions_from_table(vq, n + 2), truth, atol=1e-12)


def test_estimator_interactions_exact_on_pairwise_game_at_budget_200():
    """Issue 23: n = 8, three pairwise terms, budget 200 — the trees-only estimate was off
    by 0.109 of the largest term (shapiq's RegressionFSII: exact).  The pairwise base of the
    interaction surrogate makes it exact; the index returned is the pairwise SII
    (enumeration)."""
    g, truth = _quadratic_game(8, 1)
    exact = interactions_from_table(g(shapley.all_coalitions(8)), 8)
    np.testing.assert_allclose(exact, truth, atol=1e-12)
    res = SurrogateSHAP(200, seed=0).explain(g, n_players=8, interactions=True)
    assert np.abs(res.interactions - exact).max() < 1e-6 * np.abs(truth).max()
    assert res.info["interactions"]["order"] == 2


def test_estimator_interactions_are_sii_not_fsii_on_three_way_terms():
    """A three-way unanimity term z0 z1 z2 has pairwise SII 1/2 on each pair (its FSII is
    different); full budget: exact by enumeration, and the partial budget stays close."""
    n = 8

    def g(Z):
        Z = np.atleast_2d(np.asarray(Z, bool)).astype(np.float64)
        return Z.sum(1) + 3.0 * Z[:, 0] * Z[:, 1] * Z[:, 2]

    v = g(shapley.all_coalitions(n))
    exact = interactions_from_table(v, n)
    assert exact[0, 1] == pytest.approx(1.5) and exact[3, 4] == pytest.approx(0.0)
    assert _sii_by_definition(v, n, 0, 2) == pytest.approx(exact[0, 2], abs=1e-12)
    res = SurrogateSHAP(160, seed=1).explain(g, n_players=n, interactions=True)
    assert np.abs(res.interactions - exact).max() < 0.05 * 1.5


def test_greg_pairwise_is_exact_by_enumeration_and_on_pairwise_games():
    """The GREG estimator (pairwise base fitted on all rows + Horvitz–Thompson correction)
    against the SII and Shapley values by enumeration: exact at full enumeration on any game;
    exact on a pairwise game whenever the rows determine the base (n = 14 at budget 128,
    unpaired: 128 rows for 105 parameters, where the folds of the cross-fitted estimator
    keep too few); with a paired plan exact on any game of degree <= 3 (the symmetric part
    v(S) + v(Sᶜ) of a three-way term is pairwise), and its estimated variance is infinite
    where the pairs cannot determine the base (n = 14, 63 pairs for 91 pair terms)."""
    from datacredit.shapley.greg import greg_pairwise

    g = games.synthetic("nonlinear", n=6, seed=2)
    plan = shapley.plan_coalitions(6, 64, seed=0)
    assert plan.exact
    v = g(plan.Z)
    r = greg_pairwise(plan, v)
    table = g(shapley.all_coalitions(6))
    np.testing.assert_allclose(r.interactions, interactions_from_table(table, 6), atol=1e-10)
    np.testing.assert_allclose(r.values, shapley.shapley_from_table(table, 6), atol=1e-10)

    g14, truth = _quadratic_game(14, 3)
    plan = shapley.plan_coalitions(14, 128, seed=1, paired=False)
    r = greg_pairwise(plan, g14(plan.Z))
    assert np.abs(r.interactions - truth).max() < 1e-8 * np.abs(truth).max()
    assert np.isfinite(r.interaction_variance)
    paired = shapley.plan_coalitions(14, 128, seed=1)
    assert np.isinf(greg_pairwise(paired, g14(paired.Z)).interaction_variance)

    def cubic(Z):
        Z = np.atleast_2d(np.asarray(Z, bool)).astype(np.float64)
        return Z @ np.arange(1.0, 11.0) + 2.0 * Z[:, 1] * Z[:, 4] * Z[:, 7] - Z[:, 0] * Z[:, 2]

    exact = interactions_from_table(cubic(shapley.all_coalitions(10)), 10)
    plan = shapley.plan_coalitions(10, 128, seed=2)
    r = greg_pairwise(plan, cubic(plan.Z))
    np.testing.assert_allclose(r.interactions, exact, atol=1e-8)


def test_estimator_interactions_exact_on_pairwise_game_n14_budget128():
    """Issue 23: n = 14, budget 128, pairwise terms — the paired plan's 63 complement
    pairs cannot determine the 91 pair terms (the SII sees only v(S) + v(Sᶜ)); ours was 0.30
    of the largest term off, shapiq's RegressionFSII exact.  The request for interactions
    draws the plan unpaired and the pairwise base fitted on all rows makes it exact, against
    the SII and the Shapley values by enumeration."""
    n = 14
    g, truth = _quadratic_game(n, 5)
    table = g(shapley.all_coalitions(n))
    exact = interactions_from_table(table, n)
    np.testing.assert_allclose(exact, truth, atol=1e-12)
    res = SurrogateSHAP(128, seed=0).explain(g, n_players=n, interactions=True)
    assert res.info["interactions"]["paired"] is False
    assert np.abs(res.interactions - exact).max() < 1e-6 * np.abs(exact).max()
    phi = shapley.shapley_from_table(table, n)
    assert np.abs(res.values - phi).max() < 1e-6 * np.abs(phi).max()
    # without interactions the plan stays paired (the values' plan of issue 14)
    assert SurrogateSHAP(128, seed=0)._plan(n).paired
