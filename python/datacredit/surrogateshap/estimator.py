"""SurrogateSHAP's estimator: XGBoost surrogate of the game + interventional TreeSHAP."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from datacredit._arrays import as_mask, check_int
from datacredit.shapley._game import evaluate, game_direction, game_players
from datacredit.shapley.plan import plan_coalitions
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
    Z: np.ndarray,
    v: np.ndarray,
    params: dict[str, Any],
    *,
    seed: int = 0,
    nthread: int = 1,
    weight: np.ndarray | None = None,
):
    """Fit an XGBoost regressor (squared loss) on coalitions Z (m × n bool) → v (m,); a Booster.

    ``weight``: optional per-row weights (m,).
    """
    import xgboost as xgb

    p, rounds = _train_params(params, seed, nthread)
    dtrain = xgb.DMatrix(
        np.asarray(Z, dtype=np.float32), label=np.asarray(v), weight=weight, nthread=nthread
    )
    return xgb.train(p, dtrain, num_boost_round=rounds)


def cross_validate(
    Z: np.ndarray,
    v: np.ndarray,
    param_grid: dict[str, Sequence] | None = None,
    *,
    n_folds: int = 5,
    seed: int = 0,
    n_jobs: int | None = None,
    fixed: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], float, list[tuple[dict[str, Any], float]]]:
    """Grid search by k-fold cross-validated MSE; returns (best params, best MSE, all scores).

    ``fixed``: XGBoost parameters added to every grid point (the grid wins on a clash), used
    in every CV fit exactly as in the final fit.

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

    extra = {k: x for k, x in (fixed or {}).items() if k not in grid}

    def run(combo: dict[str, Any]) -> np.ndarray:
        sse = np.zeros(len(trees))
        for dtrain, dtest, vtest in dm:
            p, _ = _train_params({**extra, **combo}, seed, 1)
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


#: Surrogates tried by the default estimator (None: the linear part alone, i.e. a
#: regression-adjusted KernelSHAP); each is a linear model plus boosted trees on its residual.
ADJUSTED_CANDIDATES: list[dict[str, Any] | None] = [
    None,
    {"max_depth": 2, "n_estimators": 200, "learning_rate": 0.05, "reg_alpha": 0},
    {"max_depth": 3, "n_estimators": 300, "learning_rate": 0.05, "reg_alpha": 0},
    {"max_depth": 5, "n_estimators": 300, "learning_rate": 0.05, "reg_alpha": 0},
    {"max_depth": 5, "n_estimators": 900, "learning_rate": 0.05, "reg_alpha": 0},
]


def linear_tree_fit(
    params: dict[str, Any] | None, n: int, *, seed: int = 0, nthread: int = 1, order: int = 1
):
    """A :data:`~datacredit.shapley.adjusted.SurrogateFit`: f = v(∅) + zᵀβ [+ pairs] + trees(z).

    ``order=1``: β is the KernelSHAP solution on the training rows (efficiency-constrained
    weighted least squares, weights from the sampling design), so f is exact on additive
    games.  ``order=2``: the base also has every pairwise product z_i z_j
    (:func:`~datacredit.shapley.interactions.pairwise_regression_solve`, a second-order
    KernelSHAP), so f is exact on games with pairwise terms and its interaction index is
    the fitted Γ.  With ``params`` an XGBoost model fitted to the residual adds the rest.
    φ(f) = β [+ ½ Σ_j Γ_ij] + TreeSHAP(trees).  The fitted booster of the last call is kept
    in ``fit.booster``, and ``fit.interactions()`` gives the last f's exact pairwise Shapley
    interaction index (n × n): Γ + the trees' analytic index.
    """
    from datacredit.shapley.interactions import pairwise_regression_solve, tree_interactions
    from datacredit.shapley.kernel import kernel_shap_solve

    if order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, got {order!r}")

    def interactions() -> np.ndarray:
        out = fit.gamma.copy()
        if fit.booster is not None:
            from datacredit.kernels.treeshap import from_xgboost

            out += tree_interactions(from_xgboost(fit.booster), n)
        return out

    def fit(Z: np.ndarray, v: np.ndarray, w: np.ndarray):
        empty = np.flatnonzero(~Z.any(1))
        full = np.flatnonzero(Z.all(1))
        v0, v1 = float(v[empty[0]]), float(v[full[0]])
        inner = w > 0
        if order == 1:
            beta = kernel_shap_solve(Z[inner], v[inner], v0, v1, w[inner])
            gamma = np.zeros((n, n))
        else:
            beta, gamma = pairwise_regression_solve(Z[inner], v[inner], v0, v1, w[inner])
        fit.gamma = gamma
        upper = np.triu(gamma, 1)

        def base(Zq):
            Zf = np.asarray(Zq, np.float64)
            out = v0 + Zf @ beta
            if order == 2:
                out += np.einsum("mi,ij,mj->m", Zf, upper, Zf)
            return out

        phi_base = beta + 0.5 * gamma.sum(1)
        if params is None:
            fit.booster = None
            return base, phi_base
        import xgboost as xgb

        booster = fit_surrogate(Z, v - base(Z), params, seed=seed, nthread=nthread)
        fit.booster = booster
        phi = phi_base + surrogate_shapley(booster, n)

        def predict(Zq):
            Zq = np.asarray(Zq)
            tree = booster.predict(xgb.DMatrix(Zq.astype(np.float32), nthread=nthread))
            return base(Zq) + tree.astype(np.float64)

        return predict, phi

    fit.booster = None
    fit.gamma = np.zeros((n, n))
    fit.interactions = interactions
    return fit


#: Candidates whose estimated variance is within this factor of the least one count as tied
#: with the selected one: its standard error is the largest of theirs (see
#: :func:`selected_stderr`).
SELECTION_TIE_RATIO = 1.5


def selected_stderr(variances: Sequence[float], stderrs: Sequence[np.ndarray]) -> np.ndarray:
    """Standard errors of the candidate selected by least estimated variance, corrected for
    the selection: the element-wise largest standard error among the candidates whose
    estimated variance is within :data:`SELECTION_TIE_RATIO` of the least.

    Why: the variance estimates of few units per stratum are noisy, and the least of several
    is biased low (the winner's curse).  The default's 5 candidates on Appendix E's
    nonlinear game at n = 10, budget 64 (100 seeds): each candidate alone had ≤ 1.3 % of
    its errors beyond 3 SE, the selected one 2.0 %; with this rule 1.2 %.  NaN where the
    selected candidate's standard errors are NaN.  ``variances``: (k,); ``stderrs``: k
    arrays of one shape.  O(k · size).
    """
    var = np.asarray(variances, dtype=np.float64)
    if not np.isfinite(var).any():
        return np.asarray(stderrs[0], dtype=np.float64)
    best = int(np.nanargmin(var))
    tied = [
        k
        for k in range(len(var))
        if np.isfinite(var[k]) and var[k] <= SELECTION_TIE_RATIO * var[best]
    ]
    out = np.asarray(stderrs[best], dtype=np.float64).copy()
    for k in tied:
        out = np.maximum(out, np.asarray(stderrs[k], dtype=np.float64))  # NaN propagates
    return out


def symmetric_equations(plan: Any) -> int:
    """Equations that a paired coalition plan gives about the symmetric part v(S) + v(Sᶜ)
    of the game besides v(∅) + v(N): one per complement pair (enumerated sizes come with
    their complement sizes; a sampled unit is one pair).  O(m)."""
    n_enum = int((plan.units < 0).sum()) - 2
    return n_enum // 2 + len(plan.unit_stratum)


def _check_int(x: Any, name: str, low: int) -> int:
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(x).__name__}")
    if x < low:
        raise ValueError(f"{name} must be >= {low}, got {x}")
    return int(x)


class SurrogateSHAP:
    """Shapley values from a gradient-boosted tree surrogate of the game (Lu et al., §4.2).

    Two estimators share the coalition evaluations:

    - ``estimator="adjusted"`` (default): regression-adjusted Monte Carlo (Witter, Liu &
      Musco 2025).  Coalitions come from :func:`~datacredit.shapley.plan_coalitions`
      (border sizes enumerated, the rest drawn without replacement in complement pairs,
      stratified by size).  The surrogate is a KernelSHAP linear model plus XGBoost trees on
      its residual; its Shapley values are exact (β + TreeSHAP), and an unbiased
      Horvitz–Thompson estimate of φ(v − f) from held-out coalitions (K-fold cross-fitting)
      corrects them (:func:`~datacredit.shapley.adjusted.regression_adjusted`).  The
      surrogate is chosen among :data:`ADJUSTED_CANDIDATES` (or the points of
      ``param_grid``) by the estimated variance of the final values — a prediction of their
      Shapley error, not of the surrogate's MSE.  Each value gets a standard error.
    - ``estimator="paper"``: the paper's estimator — Shapley-kernel coalitions
      (de-duplicated), an XGBoost regressor on (z, v(z)) chosen by 5-fold CV MSE over the
      paper's grid (Table S.1) when ``cv=True``, and the surrogate's exact values by our
      interventional TreeSHAP at x = 1 against the reference 0 (with the boundary
      correction of ``efficiency``).

    Args:
        budget: number of game evaluations (≥ min(n_players + 2, 2^n)); with
            budget ≥ 2^n every coalition is evaluated and the values are exact.
        estimator: ``"adjusted"`` or ``"paper"``.
        cv: select the surrogate (adjusted: among the candidates by estimated variance;
            paper: by CV MSE over ``param_grid``); ``False`` uses ``xgb_params`` (default
            :data:`DEFAULT_PARAMS`).
        param_grid: dict of lists of XGBoost parameters; adjusted: its grid points are the
            candidates (plus the linear-only surrogate); paper: the CV grid (default
            :data:`PAPER_GRID`).
        xgb_params: with ``cv=False`` the parameters; with ``cv=True`` fixed extra
            parameters added to every candidate / grid point, in selection and final fit.
        seed: seeds coalition sampling, the folds and XGBoost.
        n_jobs: parallel CV configurations for ``"paper"`` (threads; None: 1).
        n_folds: folds (cross-fitting for ``"adjusted"``, CV for ``"paper"``); capped by
            what the budget allows.
        unique, paired: coalition sampling options of ``"paper"`` (see
            ``shapley.sample_coalitions``); ``"adjusted"`` always pairs.
        batch_size: coalitions per game call (None: all at once).
        efficiency: ``"paper"`` only: ``"boundary"`` (default) shifts every value by
            (v(N) − v(∅) − Σφ)/n, the exact effect of replacing the surrogate at ∅ and N by
            the evaluated v(∅), v(N); None returns the plain surrogate values.

    Cost: ``budget`` game evaluations + (adjusted) candidates × K boosting runs and TreeSHAP
    passes; (paper, CV) 12·n_folds boosting runs of up to 900 trees on ``budget`` rows.
    """

    def __init__(
        self,
        budget: int = 512,
        *,
        estimator: str = "adjusted",
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
        if estimator not in ("adjusted", "paper"):
            raise ValueError(f"unknown estimator {estimator!r}; expected 'adjusted' or 'paper'")
        if efficiency not in ("boundary", None):
            raise ValueError(f"unknown efficiency {efficiency!r}; expected 'boundary' or None")
        self.estimator = estimator
        self.efficiency = efficiency
        self.budget = _check_int(budget, "budget", 2)
        self.cv = bool(cv)
        if param_grid is not None:
            if not isinstance(param_grid, dict):
                raise TypeError("param_grid must be a dict of lists")
            grid = {}
            for key, vals in param_grid.items():
                if isinstance(vals, (str, bytes)) or not hasattr(vals, "__iter__"):
                    raise ValueError(f"param_grid[{key!r}] must be a list of values")
                vals = [x.item() if isinstance(x, np.generic) else x for x in vals]
                if not vals:
                    raise ValueError(f"param_grid[{key!r}] is empty")
                grid[str(key)] = vals
            param_grid = grid
        self.param_grid = param_grid
        if xgb_params is not None and not isinstance(xgb_params, dict):
            raise TypeError("xgb_params must be a dict")
        self.xgb_params = (
            {k: (x.item() if isinstance(x, np.generic) else x) for k, x in xgb_params.items()}
            if xgb_params
            else None
        )
        self.seed = check_int(seed, "seed", 0, 2**32 - 1)  # XGBoost takes 32-bit seeds
        self.n_jobs = None if n_jobs is None else check_int(n_jobs, "n_jobs", 1)
        self.n_folds = _check_int(n_folds, "n_folds", 2)  # one fold has nothing held out
        self.unique = unique
        self.paired = paired
        self.batch_size = batch_size
        self.booster_ = None
        self.cv_results_: list | None = None

    def _minimum_budget(self, n: int) -> int:
        return min(n + 2, 2**n) if n < 62 else n + 2

    def explain(
        self, game: Any, *, n_players: int | None = None, interactions: bool = False
    ) -> ShapleyValues:
        """Estimate the Shapley values of ``game`` (callable bool (m × n) → (m,)).

        ``interactions=True`` also returns the pairwise Shapley interaction index (SII,
        Grabisch & Roubens; not the Faithful SII) as ``.interactions`` (n × n, symmetric),
        with per-pair standard errors in ``info["interaction_stderr"]`` (``"adjusted"``
        only).  Candidates: every value candidate (linear base + trees; the trees' SII is
        analytic per leaf), a pairwise base (second-order KernelSHAP) alone or with the two
        shallow tree candidates, each with the cross-fitted Monte-Carlo correction of the
        values, and the pairwise base fitted on all rows with the GREG correction
        (:func:`~datacredit.shapley.greg.greg_pairwise`); the interactions come from the
        candidate with the least estimated variance of the interactions, the values from
        the one with the least estimated variance of the values.  The plan stays paired
        unless its complement pairs are too few to determine the n(n−1)/2 pair terms (the
        SII depends on v only through v(S) + v(Sᶜ)); then it is unpaired (n = 14 at budget
        128).  Exact when every coalition is evaluated, and on games of degree ≤ 3 whenever
        the pairs determine the pairwise base (its symmetric part is pairwise).  Costs
        three more cross-fitted fits and the trees' interaction index (O(leaves · depth²)
        per ensemble): about 3-7 s at n = 10-14 on one core.
        """
        players = game_players(game, n_players)
        direction = game_direction(game)  # carried to the result: it ranks by it
        n = len(players)
        need = self._minimum_budget(n)
        if self.budget < need:
            raise ValueError(f"budget must be at least {need} for {n} players, got {self.budget}")
        small = n < 3 or (n < 62 and self.budget >= 2**n)
        if interactions and self.estimator != "adjusted" and not small:
            raise ValueError("interactions=True needs estimator='adjusted'")
        if self.estimator == "adjusted" or small:
            plan = self._plan(n, interactions=interactions)
            v = evaluate(game, plan.Z, batch_size=self.batch_size)
            sv = self._explain_plan(plan, v, players, interactions)
            sv.higher_is_better = direction
            sv.info["utility_report"] = _utility_report(game, plan.Z)
            return sv
        Z = sample_coalitions(n, self.budget, self.seed, unique=self.unique, paired=self.paired)
        v = evaluate(game, Z, batch_size=self.batch_size)
        sv = self.explain_coalitions(Z, v, players, higher_is_better=direction)
        sv.info["utility_report"] = _utility_report(game, Z)
        return sv

    def _plan(self, n: int, interactions: bool = False) -> Any:
        """The coalition plan of the adjusted estimator.

        The kernel's proportional allocation, unless it leaves a partly sampled stratum with
        fewer than :data:`~datacredit.shapley.adjusted.MIN_UNITS_FOR_STDERR` units (n = 20
        at budget 128: 2 units of size 10): then no standard error can be estimated and the
        cross-fitting is capped at 2 folds (each surrogate sees half the sampled units), so
        the budget is re-allocated to give every stratum ``n_folds`` units.  Measured on
        20-player games (``benchmarks/bench_shapley_estimators.py --large``): the error at
        budget 128 fell 2.4-3x.  Where every stratum already has 3 units the plan is the
        proportional one (a floor of 5 everywhere was worse on the nonlinear game at n = 16,
        budget 128 and n = 20, budget 256).
        """
        from datacredit.shapley.adjusted import MIN_UNITS_FOR_STDERR

        paired = True
        plan = plan_coalitions(n, self.budget, self.seed, paired=True)
        if interactions and not plan.exact and symmetric_equations(plan) <= n * (n - 1) // 2:
            # the SII depends on v only through v(S) + v(Sᶜ) (c_ij(Sᶜ) = c_ij(S)), so a
            # complement pair is one equation about the n(n−1)/2 pair terms: with fewer
            # pairs than terms (n = 14, budget 128: 63 for 91) no estimator can determine
            # them, while the same budget unpaired can (shapiq's RegressionFSII: exact)
            paired = False
            plan = plan_coalitions(n, self.budget, self.seed, paired=False)
        m_h = plan.strata_sampled
        partly = (m_h > 0) & (plan.strata_population > m_h)
        if partly.any() and m_h[partly].min() < MIN_UNITS_FOR_STDERR:
            floor = max(self.n_folds, MIN_UNITS_FOR_STDERR)
            plan = plan_coalitions(n, self.budget, self.seed, paired=paired, min_units=floor)
        return plan

    def _candidates(self) -> list[dict[str, Any] | None]:
        extra = self.xgb_params or {}
        if not self.cv:
            return [{**DEFAULT_PARAMS, **extra}]
        if self.param_grid is None:
            return [None if c is None else {**extra, **c} for c in ADJUSTED_CANDIDATES]
        keys = list(self.param_grid)
        grid = [dict(zip(keys, vals)) for vals in itertools.product(*self.param_grid.values())]
        return [None] + [{**extra, **g} for g in grid]

    def _explain_plan(
        self, plan: Any, v: np.ndarray, players: list, interactions: bool = False
    ) -> ShapleyValues:
        from datacredit.shapley.adjusted import regression_adjusted
        from datacredit.shapley.greg import greg_pairwise

        v = np.asarray(v, dtype=np.float64)
        if not np.isfinite(v).all():
            raise ValueError("the game returned non-finite utilities")
        n = plan.n_players
        # (order, params, kind) -> estimate; order 1: linear base, 2: pairwise base
        results = []
        for params in [None] if plan.exact else self._candidates():
            fit = linear_tree_fit(params, n, seed=self.seed)
            est = regression_adjusted(
                plan, v, fit, n_folds=self.n_folds, seed=self.seed, interactions=interactions
            )
            results.append(((1, params, "cross-fitted"), est, fit))
        n_first = len(results)
        if interactions and not plan.exact:
            # interactions have surrogates of their own too: a pairwise base (second-order
            # KernelSHAP) alone or with the two shallow tree candidates (deeper ensembles on
            # a pairwise base cost most of the time), cross-fitted, and the pairwise base
            # fitted on all rows (GREG): where the folds keep fewer rows than its n(n+1)/2
            # parameters, only the full fit determines it
            for p in self._candidates()[:3]:
                f2 = linear_tree_fit(p, n, seed=self.seed, order=2)
                e2 = regression_adjusted(
                    plan, v, f2, n_folds=self.n_folds, seed=self.seed, interactions=True
                )
                results.append(((2, p, "cross-fitted"), e2, f2))
            results.append(((2, None, "greg"), greg_pairwise(plan, v), None))

        def pick(crit: list[float]) -> int:
            crit = np.asarray(crit, dtype=np.float64)
            return int(np.nanargmin(crit)) if np.isfinite(crit).any() else 0

        # the values are chosen among all candidates by the estimated variance of the
        # values, the interactions among all by that of the interactions
        best = pick([r[1].variance for r in results])
        (_, params, _), est, fit = results[best]
        stderr = selected_stderr([r[1].variance for r in results], [r[1].stderr for r in results])
        inter = inter_se = None
        inter_info = None
        if interactions:
            k = pick([r[1].interaction_variance for r in results])
            (order, p, kind), e2, _ = results[k]
            inter = e2.interactions
            inter_se = selected_stderr(
                [r[1].interaction_variance for r in results],
                [r[1].interaction_stderr for r in results],
            )
            inter_info = {
                "order": order,
                "params": p,
                "kind": kind,
                "variance": float(e2.interaction_variance),
                "paired": bool(plan.paired),
            }
        values_info = {"order": results[best][0][0], "kind": results[best][0][2]}
        self.booster_ = None if fit is None else fit.booster
        self.cv_results_ = [(key[1], float(r.variance)) for key, r, _ in results[:n_first]]
        return ShapleyValues(
            values=est.values,
            players=players,
            v_empty=float(v[0]),
            v_full=float(v[1]),
            coalitions=plan.Z,
            utilities=v,
            cv_score=float(est.variance),
            method="surrogate_shap",
            stderr=stderr,
            interactions=inter,
            info={
                "estimator": "adjusted",
                "params": params,
                "budget": int(self.budget),
                "evaluated": int(len(v)),
                "n_folds": int(est.n_folds),
                "exact": bool(plan.exact),
                "enumerated_sizes": np.flatnonzero(plan.enumerated).tolist(),
                "surrogate_values": est.surrogate_values,
                "selection": "estimated variance of the values (sum over players)",
                "surrogate": values_info,
                "interactions": inter_info,
                "interaction_stderr": inter_se,
            },
        )

    def explain_coalitions(
        self,
        Z: Any,
        v: Any,
        players: Sequence | None = None,
        *,
        higher_is_better: bool | None = None,
    ) -> ShapleyValues:
        """The paper's estimator on already evaluated coalitions; rows must include ∅ and N.

        Z: bool (m × n); v: float (m,); ``higher_is_better``: the direction of ``v``
        (True: larger = better model, False: a loss), carried to the result's ranking.
        """
        Z = as_mask(Z, "Z")  # 0.5 or 2 is no coalition membership
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
            folds = min(self.n_folds, Z.shape[0])
            if folds < 2:
                raise ValueError("cv=True needs at least 2 coalitions per fold split")
            params, cv_score, self.cv_results_ = cross_validate(
                Z, v, grid, n_folds=folds, seed=self.seed, n_jobs=self.n_jobs, fixed=extra
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
                "estimator": "paper",
                "params": params,
                "budget": int(Z.shape[0]),
                "efficiency": self.efficiency,
                "surrogate_efficiency_gap": surrogate_gap,
            },
            higher_is_better=higher_is_better,
        )


def _utility_report(game: Any, Z: np.ndarray) -> dict[str, np.ndarray] | None:
    """The game's per-coalition report of its utility estimate (rows of ``Z``, the
    evaluated coalitions), e.g. a :class:`ProxyGame` with FID: samples, reliable, the
    removed finite-bank bias and its standard error, as plain lists (the result's info
    is saved as JSON); None for games without one."""
    rep = getattr(game, "report", None)
    got = rep(Z) if callable(rep) else None
    return None if got is None else {k: np.asarray(v).tolist() for k, v in got.items()}
