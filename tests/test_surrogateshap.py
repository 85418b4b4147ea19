"""SurrogateSHAP estimator: accuracy on Appendix E games, CV, efficiency, errors."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("xgboost")

from datacredit import SurrogateSHAP, games, shapley  # noqa: E402
from datacredit.surrogateshap import PAPER_GRID, cross_validate, fit_surrogate  # noqa: E402


def _rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def test_accuracy_small_version_of_the_bar():
    """3 trials of the interaction game (n=10, M=512) with the paper's best grid point."""
    errs, kerrs = [], []
    for t in range(3):
        g = games.synthetic("interaction", n=10, seed=500 + t)
        exact = g.exact_values()
        res = SurrogateSHAP(512, cv=False, seed=t).explain(g)
        errs.append(_rel(res.values, exact))
        assert g.n_calls == 512  # each coalition evaluated once
        kerrs.append(_rel(shapley.kernel_shap(g, 512, seed=t).values, exact))
    assert np.mean(errs) < 0.03
    assert np.mean(kerrs) > 3 * np.mean(errs)


def test_efficiency_and_treeshap_against_surrogate():
    g = games.synthetic("nonlinear", n=7, seed=2)
    est = SurrogateSHAP(64, cv=False, xgb_params={"n_estimators": 50}, seed=0, efficiency=None)
    res = est.explain(g)
    ones, zeros = np.ones((1, 7), np.float32), np.zeros((1, 7), np.float32)
    import xgboost as xgb

    f1 = est.booster_.predict(xgb.DMatrix(ones))[0]
    f0 = est.booster_.predict(xgb.DMatrix(zeros))[0]
    assert abs(res.values.sum() - (f1 - f0)) < 1e-5
    # the surrogate's Shapley values equal exact enumeration of the surrogate itself
    sur = shapley.FunctionGame(lambda Z: est.booster_.predict(xgb.DMatrix(Z.astype(np.float32))), 7)
    np.testing.assert_allclose(res.values, shapley.exact(sur).values, atol=1e-5)
    assert res.coalitions.shape == (64, 7) and res.cv_score is None


def test_boundary_efficiency_is_the_hybrid_games_shapley_value():
    # "boundary" = exact Shapley values of the game that is the surrogate everywhere but at
    # the empty and full coalitions, where it is the evaluated game.
    import xgboost as xgb

    g = games.synthetic("interaction", n=6, seed=3)
    est = SurrogateSHAP(40, cv=False, xgb_params={"n_estimators": 40}, seed=1)
    res = est.explain(g)
    v_empty, v_full = g(np.zeros((1, 6), bool))[0], g(np.ones((1, 6), bool))[0]

    def hybrid(Z):
        out = est.booster_.predict(xgb.DMatrix(Z.astype(np.float32))).astype(np.float64)
        out[~Z.any(1)] = v_empty
        out[Z.all(1)] = v_full
        return out

    ref = shapley.exact(shapley.FunctionGame(hybrid, 6)).values
    np.testing.assert_allclose(res.values, ref, atol=1e-5)
    assert abs(res.efficiency_gap) < 1e-9 * (1 + abs(v_full - v_empty))
    assert res.info["efficiency"] == "boundary"
    with pytest.raises(ValueError, match="unknown efficiency"):
        SurrogateSHAP(40, efficiency="uniform")


def test_cross_validation_prefix_trick_and_choice(rng):
    import xgboost as xgb

    g = games.synthetic("interaction", n=8, seed=1)
    Z = shapley.sample_coalitions(8, 120, seed=0)
    v = g(Z)
    grid = {"max_depth": [2, 4], "n_estimators": [10, 30], "learning_rate": [0.3], "reg_alpha": [0]}
    best, score, scores = cross_validate(Z, v, grid, n_folds=3, seed=4)
    assert len(scores) == 4
    assert score == min(s for _, s in scores)
    # recompute one grid point independently: separate fits with n_estimators trees
    folds = np.array_split(np.random.default_rng(4).permutation(120), 3)
    params = {"max_depth": 2, "n_estimators": 10, "learning_rate": 0.3, "reg_alpha": 0}
    sse = 0.0
    for f in range(3):
        train = np.concatenate([folds[h] for h in range(3) if h != f])
        b = fit_surrogate(Z[train], v[train], params, seed=4)
        sse += np.sum((b.predict(xgb.DMatrix(Z[folds[f]].astype(np.float32))) - v[folds[f]]) ** 2)
    ref = [s for p, s in scores if p == params][0]
    assert abs(ref - sse / 120) < 1e-6
    assert set(best) == set(grid)
    assert sorted(PAPER_GRID["n_estimators"]) == [100, 300, 900]


def test_cv_runs_on_reduced_grid_and_records_score():
    g = games.synthetic("linear", n=6, seed=0)
    res = SurrogateSHAP(
        40,
        param_grid={"max_depth": [3], "n_estimators": [20, 60], "learning_rate": [0.3]},
        seed=1,
        n_jobs=2,
    ).explain(g)
    assert res.cv_score is not None and res.cv_score >= 0
    assert res.info["params"]["n_estimators"] in (20, 60)
    assert _rel(res.values, g.w) < 0.2


def test_errors():
    g = games.synthetic("linear", n=10, seed=0)
    with pytest.raises(ValueError, match="budget"):
        SurrogateSHAP(11).explain(g)
    bad = shapley.FunctionGame(lambda Z: np.full(len(Z), np.nan), 5)
    with pytest.raises(ValueError, match="non-finite"):
        SurrogateSHAP(20, cv=False).explain(bad)
    with pytest.raises(ValueError, match="empty"):
        SurrogateSHAP(20, cv=False).explain_coalitions(np.ones((4, 3), bool), np.zeros(4))
    with pytest.raises(ValueError, match="param_grid"):
        cross_validate(np.eye(4, dtype=bool), np.zeros(4), {"max_depth": []}, n_folds=2)
