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
        res = SurrogateSHAP(512, estimator="paper", cv=False, seed=t).explain(g)
        errs.append(_rel(res.values, exact))
        assert g.n_calls == 512  # each coalition evaluated once
        kerrs.append(_rel(shapley.kernel_shap(g, 512, seed=t, sampling="kernel").values, exact))
    assert np.mean(errs) < 0.03
    assert np.mean(kerrs) > 3 * np.mean(errs)


def test_efficiency_and_treeshap_against_surrogate():
    g = games.synthetic("nonlinear", n=7, seed=2)
    est = SurrogateSHAP(
        64, estimator="paper", cv=False, xgb_params={"n_estimators": 50}, seed=0, efficiency=None
    )
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
    est = SurrogateSHAP(40, estimator="paper", cv=False, xgb_params={"n_estimators": 40}, seed=1)
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
        estimator="paper",
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


def test_default_estimator_beats_kernel_shap_and_improves_with_budget():
    """The adjusted default vs our and shapiq's KernelSHAP on the interaction game."""
    shapiq = pytest.importorskip("shapiq")
    errs = {128: [], 512: []}
    ks, sq = [], []
    for t in range(3):
        g = games.synthetic("interaction", n=10, seed=700 + t)
        exact = g.exact_values()
        for b in errs:
            res = SurrogateSHAP(b, seed=t).explain(g)
            errs[b].append(_rel(res.values, exact))
            # exact up to the float32 rounding of the tree outputs
            assert abs(res.efficiency_gap) < 1e-6 * (1 + abs(res.v_full) + abs(res.v_empty))
            assert res.stderr is not None and (res.stderr > 0).all()
        ks.append(_rel(shapley.kernel_shap(g, 512, seed=t).values, exact))
        iv = shapiq.KernelSHAP(n=10, random_state=t).approximate(512, g)
        sq.append(_rel(np.array([iv[(i,)] for i in range(10)]), exact))
    assert np.mean(errs[512]) < 0.5 * np.mean(errs[128])
    assert np.mean(errs[512]) < np.mean(ks) and np.mean(errs[512]) < np.mean(sq)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_r19_small_games_are_exact(n):
    """r19: 1- and 2-player games raised unclear errors; a budget ≥ 2^n is exact."""
    g = shapley.FunctionGame(lambda Z: Z.sum(1).astype(float) ** 2, n)
    for est in ("adjusted", "paper"):
        res = SurrogateSHAP(8, estimator=est).explain(g)
        np.testing.assert_allclose(res.values, shapley.exact(g).values, atol=1e-12)
        np.testing.assert_allclose(res.stderr, 0)
    with pytest.raises(ValueError, match="budget must be at least 4 for 2 players"):
        SurrogateSHAP(2).explain(shapley.FunctionGame(lambda Z: Z.sum(1) * 1.0, 2))


def test_cv_uses_xgb_params_in_every_fold():
    """Fixed xgb_params were ignored during CV but used in the final fit."""
    import xgboost as xgb

    g = games.synthetic("nonlinear", n=6, seed=0)
    Z = shapley.sample_coalitions(6, 40, seed=0)
    v = g(Z)
    grid = {"max_depth": [2], "n_estimators": [20], "learning_rate": [0.3]}
    fixed = {"reg_lambda": 1e4}
    _, score, _ = cross_validate(Z, v, grid, n_folds=2, seed=3, fixed=fixed)
    folds = np.array_split(np.random.default_rng(3).permutation(40), 2)
    sse = 0.0
    for f in range(2):
        train = folds[1 - f]
        b = fit_surrogate(Z[train], v[train], {**fixed, **grid_point(grid)}, seed=3)
        sse += np.sum((b.predict(xgb.DMatrix(Z[folds[f]].astype(np.float32))) - v[folds[f]]) ** 2)
    assert abs(score - sse / 40) < 1e-6
    res = SurrogateSHAP(40, estimator="paper", param_grid=grid, xgb_params=fixed).explain(g)
    assert res.info["params"]["reg_lambda"] == 1e4


def grid_point(grid):
    return {k: v[0] for k, v in grid.items()}


def _near_additive(n, seed):
    """z·w + 6 small pairwise terms + ½√|z|: a table game (2^n,) with its exact values."""
    rng = np.random.default_rng(seed)
    Z = shapley.all_coalitions(n).astype(np.float64)
    v = Z @ rng.normal(0, 1, n) + 0.5 * np.sqrt(Z.sum(1))
    for _ in range(6):
        i, j = rng.choice(n, 2, replace=False)
        v += 0.3 * rng.normal() * Z[:, i] * Z[:, j]

    def game(Zq):
        return v[(np.asarray(Zq, bool) * (1 << np.arange(n))).sum(1)]

    return game, shapley.shapley_from_table(v, n)


def test_thin_strata_are_reallocated_to_n_folds_units():
    """Issue 23: n = 16 at budget 100 — the kernel's proportional allocation leaves the
    size-8 stratum 2 units, so the standard errors were NaN and the cross-fitting had 2
    folds.  The plan now gives every stratum n_folds = 5 units there: finite standard
    errors, 5 folds, and a smaller error against enumeration than the proportional plan
    with the same estimator (same seeds, same candidates)."""
    from datacredit.shapley.plan import plan_coalitions

    n, budget = 16, 100
    grid = {"max_depth": [2], "n_estimators": [50], "learning_rate": [0.1]}
    new, old = [], []
    for seed in range(4):
        game, exact = _near_additive(n, 40 + seed)
        est = SurrogateSHAP(budget, seed=seed, param_grid=grid)
        proportional = plan_coalitions(n, budget, seed, paired=True)
        assert proportional.strata_sampled.min() == 2
        r = est.explain(game, n_players=n)
        assert r.info["n_folds"] == 5 and np.isfinite(r.stderr).all()
        assert len(r.utilities) <= budget
        gap = r.values.sum() - (game(np.ones((1, n)))[0] - game(np.zeros((1, n)))[0])
        assert abs(gap) < 1e-6 * np.abs(exact).sum()  # efficient up to float32 tree outputs
        players = [str(i) for i in range(n)]
        before = est._explain_plan(proportional, game(proportional.Z), players)
        assert before.info["n_folds"] == 2 and np.isnan(before.stderr).all()
        new.append(_rel(r.values, exact))
        old.append(_rel(before.values, exact))
    assert np.mean(new) < 0.7 * np.mean(old), (new, old)


def test_plan_min_units_floor():
    from datacredit.shapley.plan import plan_coalitions

    for n, budget in ((16, 100), (20, 128), (10, 64)):
        plan = plan_coalitions(n, budget, 0, min_units=5)
        assert plan.strata_sampled.min() >= 5 and len(plan.Z) <= budget
        # inclusion stays uniform within a stratum: units are distinct and of their size
        for h, s in enumerate(plan.strata_size):
            rows = plan.Z[np.isin(plan.units, np.flatnonzero(plan.unit_stratum == h))]
            assert set(rows.sum(1)) <= {int(s), int(n - s)}
            assert len({r.tobytes() for r in rows}) == len(rows)
    assert (plan_coalitions(10, 128, 3).Z == plan_coalitions(10, 128, 3, min_units=5).Z).all()
    with pytest.raises(ValueError, match="min_units"):
        plan_coalitions(10, 128, 0, min_units=1)
    with pytest.raises(TypeError, match="min_units"):
        plan_coalitions(10, 128, 0, min_units=2.5)
