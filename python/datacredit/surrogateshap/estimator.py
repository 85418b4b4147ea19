"""SurrogateSHAP's estimator: XGBoost surrogate of the game + interventional TreeSHAP."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from datacredit.shapley._game import evaluate, game_players
from datacredit.shapley.result import ShapleyValues
from datacredit.shapley.sampling import sample_coalitions

#: Table S.1 of the paper: the 36-point grid searched by 5-fold cross-validation.
PAPER_GRID: dict[str, list] = {
    "max_depth": [3, 5, 10],
    "n_estimators": [100, 300, 900],
    "learning_rate": [0.01, 0.05],
    "reg_alpha": [0, 10],
}

#: Used when ``cv=False`` and no ``xgb_params`` are given.
DEFAULT_PARAMS: dict[str, Any] = {
    "max_depth": 5,
    "n_estimators": 900,
    "learning_rate": 0.05,
    "reg_alpha": 0,
}

_BASE = {"objective": "reg:squarederror", "tree_method": "hist"}


def _train_params(params: dict[str, Any], seed: int, nthread: int) -> tuple[dict, int]:
    p = dict(params)
    rounds = int(p.pop("n_estimators", 100))
    if "learning_rate" in p:
        p["eta"] = p.pop("learning_rate")
    if "reg_alpha" in p:
        p["alpha"] = p.pop("reg_alpha")
    if "reg_lambda" in p:
        p["lambda"] = p.pop("reg_lambda")
    out = {**_BASE, "seed": int(seed), "nthread": int(nthread), "verbosity": 0, **p}
    return out, rounds


def fit_surrogate(
    Z: np.ndarray, v: np.ndarray, params: dict[str, Any], *, seed: int = 0, nthread: int = 1
):
    """Fit an XGBoost regressor (squared loss) on coalitions Z (m × n bool) → v (m,); a Booster."""
    import xgboost as xgb

    p, rounds = _train_params(params, seed, nthread)
    dtrain = xgb.DMatrix(np.asarray(Z, dtype=np.float32), label=np.asarray(v), nthread=nthread)
    return xgb.train(p, dtrain, num_boost_round=rounds)


def cross_validate(
    Z: np.ndarray,
    v: np.ndarray,
    param_grid: dict[str, Sequence] | None = None,
    *,
    n_folds: int = 5,
    seed: int = 0,
    n_jobs: int | None = None,
) -> tuple[dict[str, Any], float, list[tuple[dict[str, Any], float]]]:
    """Grid search by k-fold cross-validated MSE; returns (best params, best MSE, all scores).

    Configurations that differ only in ``n_estimators`` share one boosting run per fold
    (a model with fewer trees is a prefix of the longer one), so the paper's 36-point grid
    costs 12 runs of 900 trees per fold.  ``n_jobs`` runs that many configurations in
    parallel threads (XGBoost releases the GIL), each with one XGBoost thread.
    """
    import xgboost as xgb

    grid = dict(PAPER_GRID if param_grid is None else param_grid)
    for key, vals in grid.items():
        if isinstance(vals, (str, bytes)) or not hasattr(vals, "__iter__"):
            raise ValueError(f"param_grid[{key!r}] must be a list of values")
        if len(list(vals)) == 0:
            raise ValueError(f"param_grid[{key!r}] is empty")
    Z = np.asarray(Z, dtype=np.float32)
    v = np.asarray(v, dtype=np.float64)
    m = Z.shape[0]
    if n_folds < 2 or n_folds > m:
        raise ValueError(f"n_folds must be in [2, {m}], got {n_folds}")
    rng = np.random.default_rng(seed)
    folds = np.array_split(rng.permutation(m), n_folds)
    trees = sorted({int(t) for t in grid.get("n_estimators", [DEFAULT_PARAMS["n_estimators"]])})
    other_keys = [k for k in grid if k != "n_estimators"]
    combos = [
        dict(zip(other_keys, vals)) for vals in itertools.product(*(grid[k] for k in other_keys))
    ]
    dm = []
    for f in range(n_folds):
        test = folds[f]
        train = np.concatenate([folds[g] for g in range(n_folds) if g != f])
        dm.append(
            (
                xgb.DMatrix(Z[train], label=v[train], nthread=1),
                xgb.DMatrix(Z[test], nthread=1),
                v[test],
            )
        )

    def run(combo: dict[str, Any]) -> np.ndarray:
        sse = np.zeros(len(trees))
        for dtrain, dtest, vtest in dm:
            p, _ = _train_params(combo, seed, 1)
            booster = xgb.train(p, dtrain, num_boost_round=trees[-1])
            for k, t in enumerate(trees):
                pred = booster.predict(dtest, iteration_range=(0, t))
                sse[k] += float(np.sum((pred - vtest) ** 2))
        return sse / m

    workers = 1 if n_jobs is None else max(1, int(n_jobs))
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(run, combos))
    else:
        results = [run(c) for c in combos]
    scores: list[tuple[dict[str, Any], float]] = []
    for combo, mse in zip(combos, results):
        for k, t in enumerate(trees):
            scores.append(({**combo, "n_estimators": t}, float(mse[k])))
    best = min(range(len(scores)), key=lambda i: scores[i][1])
    return scores[best][0], scores[best][1], scores


def surrogate_shapley(booster: Any, n: int) -> np.ndarray:
    """Shapley values (n,) of the surrogate at x = all-ones against reference all-zeros."""
    from datacredit.kernels.treeshap import from_xgboost, tree_shap_interventional

    ens = from_xgboost(booster)
    if ens.n_features != n:
        # XGBoost infers num_feature from the data; a coalition matrix always has n columns.
        raise ValueError(f"the surrogate has {ens.n_features} features, expected {n}")
    phi, _ = tree_shap_interventional(
        ens, np.ones((1, n), dtype=np.float32), np.zeros((1, n), dtype=np.float32), n_threads=1
    )
    return phi[0]


class SurrogateSHAP:
    """Shapley values from a gradient-boosted tree surrogate of the game (Lu et al., §4.2).

    Samples ``budget`` coalitions from the Shapley kernel (empty and full included,
    de-duplicated), evaluates the game on them in batches, fits an XGBoost regressor
    (squared loss) to (z, v(z)) — hyper-parameters chosen by 5-fold CV over the paper's
    grid (Table S.1) when ``cv=True`` — and returns the surrogate's exact Shapley values,
    computed by datacredit's interventional TreeSHAP at x = 1 against the reference 0.

    Args:
        budget: number of game evaluations (≥ n_players + 2).
        cv: choose hyper-parameters by cross-validation over ``param_grid``.
        param_grid: dict of lists (keys ``max_depth``, ``n_estimators``, ``learning_rate``,
            ``reg_alpha`` or any XGBoost parameter); default :data:`PAPER_GRID`.
        xgb_params: parameters used when ``cv=False`` (default :data:`DEFAULT_PARAMS`),
            or fixed extra parameters added to every grid point when ``cv=True``.
        seed: seeds coalition sampling, the CV folds and XGBoost.
        n_jobs: parallel CV configurations (threads; None: 1).
        n_folds: CV folds (5 in the paper).
        unique, paired: coalition sampling options (see ``shapley.sample_coalitions``).
        batch_size: coalitions per game call (None: all at once).
        efficiency: ``"boundary"`` (default) returns the Shapley values of the surrogate with
            its predictions at ∅ and N replaced by the evaluated v(∅) and v(N) — exact for
            those two always-evaluated coalitions, so the values are efficient; it adds
            ``(v(N) − v(∅) − Σφ)/n`` to every player, because ∅ and N enter each player's
            Shapley value with the same weight.  ``None`` returns the plain surrogate values
            (the paper's estimator).  Measured (n=10, M=512, 12 trials per game, paper's
            best grid point): mean relative error 0.0088 → 0.0073 (interaction),
            0.0078 → 0.0070 (nonlinear), 0.0069 → 0.0062 (linear); on a proxy FID game whose
            v(∅) is far from every other coalition (the demo), a tree surrogate cannot
            isolate ∅ and the plain values carry most of that misfit as a uniform shift.

    Cost: ``budget`` game evaluations + (with CV) 12·n_folds boosting runs of up to 900
    trees on ``budget`` rows, + one TreeSHAP pass O(T·L·D).
    """

    def __init__(
        self,
        budget: int = 512,
        *,
        cv: bool = True,
        param_grid: dict[str, Sequence] | None = None,
        xgb_params: dict[str, Any] | None = None,
        seed: int = 0,
        n_jobs: int | None = None,
        n_folds: int = 5,
        unique: bool = True,
        paired: bool = False,
        batch_size: int | None = None,
        efficiency: str | None = "boundary",
    ):
        if efficiency not in ("boundary", None):
            raise ValueError(f"unknown efficiency {efficiency!r}; expected 'boundary' or None")
        self.efficiency = efficiency
        if not isinstance(budget, (int, np.integer)) or budget < 4:
            raise ValueError(f"budget must be an integer >= 4, got {budget!r}")
        self.budget = int(budget)
        self.cv = bool(cv)
        self.param_grid = param_grid
        self.xgb_params = dict(xgb_params) if xgb_params else None
        self.seed = int(seed)
        self.n_jobs = n_jobs
        self.n_folds = int(n_folds)
        self.unique = unique
        self.paired = paired
        self.batch_size = batch_size
        self.booster_ = None
        self.cv_results_: list | None = None

    def explain(self, game: Any, *, n_players: int | None = None) -> ShapleyValues:
        """Estimate the Shapley values of ``game`` (callable bool (m × n) → (m,))."""
        players = game_players(game, n_players)
        n = len(players)
        if self.budget < n + 2:
            raise ValueError(f"budget must be at least n_players + 2 = {n + 2}, got {self.budget}")
        Z = sample_coalitions(n, self.budget, self.seed, unique=self.unique, paired=self.paired)
        v = evaluate(game, Z, batch_size=self.batch_size)
        return self.explain_coalitions(Z, v, players)

    def explain_coalitions(self, Z: Any, v: Any, players: Sequence | None = None) -> ShapleyValues:
        """Fit the surrogate on already evaluated coalitions; rows must include ∅ and N.

        Z: bool (m × n); v: float (m,).
        """
        Z = np.asarray(Z)
        v = np.asarray(v, dtype=np.float64)
        if Z.ndim != 2 or v.shape != (Z.shape[0],):
            raise ValueError(f"Z must be (m, n) and v (m,), got {Z.shape} and {v.shape}")
        if not np.isfinite(v).all():
            raise ValueError("v contains NaN or inf")
        Z = Z.astype(bool)
        n = Z.shape[1]
        players = [str(i) for i in range(n)] if players is None else list(players)
        if len(players) != n:
            raise ValueError(f"{len(players)} players for {n} columns of Z")
        empty = np.flatnonzero(~Z.any(1))
        full = np.flatnonzero(Z.all(1))
        if len(empty) == 0 or len(full) == 0:
            raise ValueError("Z must contain the empty and the full coalition")
        cv_score = None
        extra = self.xgb_params or {}
        if self.cv:
            grid = dict(PAPER_GRID if self.param_grid is None else self.param_grid)
            params, cv_score, self.cv_results_ = cross_validate(
                Z, v, grid, n_folds=self.n_folds, seed=self.seed, n_jobs=self.n_jobs
            )
            params = {**extra, **params}
        else:
            params = {**DEFAULT_PARAMS, **extra}
        self.booster_ = fit_surrogate(Z, v, params, seed=self.seed)
        phi = surrogate_shapley(self.booster_, n)
        v_empty, v_full = float(v[empty[0]]), float(v[full[0]])
        surrogate_gap = float(phi.sum() - (v_full - v_empty))
        if self.efficiency == "boundary":
            phi = phi - surrogate_gap / n
        return ShapleyValues(
            values=phi,
            players=players,
            v_empty=v_empty,
            v_full=v_full,
            coalitions=Z,
            utilities=v,
            cv_score=cv_score,
            method="surrogate_shap",
            info={
                "params": {
                    k: (float(x) if isinstance(x, np.floating) else x) for k, x in params.items()
                },
                "budget": int(Z.shape[0]),
                "efficiency": self.efficiency,
                "surrogate_efficiency_gap": surrogate_gap,
            },
        )
