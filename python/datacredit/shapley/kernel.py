"""KernelSHAP: constrained weighted least squares on sampled coalitions."""

from __future__ import annotations

from math import comb
from typing import Any

import numpy as np

from datacredit._arrays import as_integer_array, check_int
from datacredit.shapley._game import evaluate, game_direction, game_players
from datacredit.shapley.plan import CoalitionPlan, plan_coalitions
from datacredit.shapley.result import ShapleyValues
from datacredit.shapley.sampling import sample_coalitions


def kernel_weights(n: int, sizes: Any) -> np.ndarray:
    """Shapley kernel weight (n−1)/(C(n,s)·s·(n−s)) of a coalition of each size; float64.

    ``n``: players, an integer in ``[2, 2**31 - 1]``; ``sizes``: integer array of coalition
    sizes in ``[1, n − 1]`` (the empty and full coalitions have infinite weight: they enter
    KernelSHAP as constraints).  Each distinct size costs one exact binomial (correctly
    rounded; weights below the float64 range are 0).
    """
    n = check_int(n, "n", 2, 2**31 - 1)
    sizes = as_integer_array(sizes, "sizes")
    if sizes.size and (sizes.min() < 1 or sizes.max() > n - 1):
        bad = int(sizes[(sizes < 1) | (sizes > n - 1)].flat[0])
        raise ValueError(f"sizes holds {bad}, outside [1, n - 1 = {n - 1}]")
    distinct, inverse = np.unique(sizes, return_inverse=True)
    # Python's int / int is correctly rounded even when C(n, s) has no float64 value.
    w = np.array([(n - 1) / (comb(n, s) * s * (n - s)) for s in distinct.tolist()], np.float64)
    return w[inverse].reshape(sizes.shape)


def kernel_shap_solve(
    Z: np.ndarray, v: np.ndarray, v_empty: float, v_full: float, weights: np.ndarray | None = None
) -> np.ndarray:
    """Solve min Σ_m w_m (v_m − v∅ − z_m·φ)² subject to Σφ = v(N) − v(∅); returns φ (n,).

    Z: interior coalitions (m × n bool); v: their utilities (m,); weights: (m,) or None
    (uniform, i.e. coalitions already drawn from the Shapley kernel).  O(m n² + n³).
    """
    Z = np.asarray(Z, dtype=np.float64)
    n = Z.shape[1]
    y = np.asarray(v, dtype=np.float64) - v_empty
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=np.float64)
    A = Z.T @ (Z * w[:, None])
    b = Z.T @ (w * y)
    total = v_full - v_empty
    # KKT system [[A, 1], [1ᵀ, 0]] [φ; λ] = [b; total]
    K = np.zeros((n + 1, n + 1))
    K[:n, :n] = A
    K[:n, n] = 1.0
    K[n, :n] = 1.0
    rhs = np.concatenate([b, [total]])
    sol = np.linalg.lstsq(K, rhs, rcond=None)[0]
    return sol[:n]


def kernel_shap_plan(plan: CoalitionPlan, v: np.ndarray) -> np.ndarray:
    """KernelSHAP on an evaluated :class:`CoalitionPlan`: φ (n,).

    Each interior coalition weighs its Shapley kernel weight divided by its inclusion
    probability (1 for enumerated sizes), the estimator shapiq's ``KernelSHAP`` uses.
    """
    from datacredit.shapley.adjusted import kernel_regression_weights

    Z = plan.Z
    rows = np.arange(len(Z))
    w = kernel_regression_weights(plan, rows)
    inner = w > 0
    return kernel_shap_solve(Z[inner], v[inner], float(v[0]), float(v[1]), w[inner])


def kernel_shap(
    game: Any,
    budget: int,
    seed: int | None = 0,
    *,
    sampling: str = "stratified",
    unique: bool = False,
    paired: bool = False,
    n_players: int | None = None,
) -> ShapleyValues:
    """KernelSHAP (Lundberg & Lee 2017) with exact efficiency constraint.

    ``sampling="stratified"`` (default): the coalitions of :func:`plan_coalitions` (border
    sizes enumerated, the rest drawn without replacement in complement pairs), weighted by
    the Shapley kernel over their inclusion probability — exact when ``budget ≥ 2^n``.
    ``sampling="kernel"``: the classic estimator, ∅ and N plus ``budget − 2`` interior draws
    from the Shapley kernel; with ``unique=False`` iid draws of equal weight, with
    ``unique=True`` distinct coalitions each with its kernel weight; ``paired`` adds
    complements.

    Complexity: ``budget`` game evaluations + O(budget · n² + n³).
    """
    players = game_players(game, n_players)
    n = len(players)
    if sampling not in ("stratified", "kernel"):
        raise ValueError(f"unknown sampling {sampling!r}; expected 'stratified' or 'kernel'")
    budget = check_int(budget, "budget", 1, 2**31 - 1)
    if sampling == "stratified":
        need = min(n + 2, 2**n) if n < 62 else n + 2
        if budget < need:
            raise ValueError(f"budget must be at least {need} for {n} players, got {budget}")
        plan = plan_coalitions(n, int(budget), seed, paired=True)
        v = evaluate(game, plan.Z)
        phi = kernel_shap_plan(plan, v)
        return ShapleyValues(
            values=phi,
            players=players,
            v_empty=float(v[0]),
            v_full=float(v[1]),
            coalitions=plan.Z,
            utilities=v,
            method="kernel_shap",
            info={"budget": int(budget), "sampling": sampling, "evaluated": int(len(v))},
            higher_is_better=game_direction(game),
        )
    if budget < n + 2:
        raise ValueError(f"budget must be at least n_players + 2 = {n + 2}, got {budget}")
    Z = sample_coalitions(n, budget, seed, unique=unique, paired=paired)
    v = evaluate(game, Z)
    inner_Z, inner_v = Z[2:], v[2:]
    w = kernel_weights(n, inner_Z.sum(1)) if unique else None
    phi = kernel_shap_solve(inner_Z, inner_v, v[0], v[1], w)
    return ShapleyValues(
        values=phi,
        players=players,
        v_empty=float(v[0]),
        v_full=float(v[1]),
        coalitions=Z,
        utilities=v,
        method="kernel_shap",
        info={"budget": int(budget), "sampling": sampling, "unique": unique, "paired": paired},
        higher_is_better=game_direction(game),
    )
