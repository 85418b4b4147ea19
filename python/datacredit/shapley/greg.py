"""Generalised regression (GREG) estimator of Shapley values and the pairwise interaction
index from one second-order KernelSHAP fit on all evaluated coalitions.

f(z) = v(∅) + zᵀβ + Σ_{i<j} Γ_ij z_i z_j is fitted by weighted least squares (the weights of
:func:`~datacredit.shapley.adjusted.kernel_regression_weights`, f(N) = v(N) exactly) on
*every* evaluated coalition, and the estimate is

    index(f) + Σ_{enumerated rows} c·(v − f) + Σ_h (P_h / m_h) Σ_{sampled rows of h} c·(v − f),

the survey-sampling GREG estimator: the index of the surrogate plus the Horvitz–Thompson
estimate of the index of the residual (c: Shapley or SII coefficients).

Why next to the cross-fitted estimator of :mod:`datacredit.shapley.adjusted`: cross-fitting
trains each surrogate on (K−1)/K of the sampled coalitions, and a pairwise base has
n + n(n−1)/2 parameters (105 at n = 14), more than the rows a fold keeps at budget 128;
fitted on all rows the base is exact on games with pairwise terms as soon as the rows
determine it, as shapiq's ``RegressionFSII`` is.  The price is an O(p/m) bias (the
in-sample residuals are shrunk), so the standard errors come from leave-one-unit-out
residuals (closed form for a linear smoother: e_R = (I − H_RR)⁻¹ r_R), which also make the
estimated variance infinite where the fit interpolates (a unit with leverage 1): then the
estimator cannot be trusted and is not selected.
"""

from __future__ import annotations

import numpy as np

from datacredit.shapley.adjusted import (
    AdjustedEstimate,
    kernel_regression_weights,
    stratified_variance,
)
from datacredit.shapley.interactions import interaction_coefficients, pairwise_features
from datacredit.shapley.plan import CoalitionPlan, shapley_coefficients


def greg_pairwise(
    plan: CoalitionPlan, v: np.ndarray, *, ridge: float = 0.0, interactions: bool = True
) -> AdjustedEstimate:
    """GREG estimate (see the module docstring) with the pairwise base fitted on all rows.

    Args:
        plan: the coalitions and their sampling design (paired or not).
        v: float64 (m,), the game on ``plan.Z``.
        ridge: ridge on the normal equations, times their mean diagonal (0: the
            pseudo-inverse, minimum norm where the rows do not determine the base; its
            estimated variance is then infinite).
        interactions: also return the pairwise SII (n × n) and its standard errors.

    Returns an :class:`~datacredit.shapley.adjusted.AdjustedEstimate` (``n_folds`` = 1;
    ``variance`` / ``interaction_variance``: the summed squared standard errors, inf when a
    unit's leverage is 1).  Complexity O(m p² + p³ + m n²), p = n(n+1)/2.
    """
    Z = plan.Z
    m, n = Z.shape
    v = np.asarray(v, dtype=np.float64)
    v0, v1 = float(v[0]), float(v[1])
    w = kernel_regression_weights(plan, np.arange(m))
    inner = np.flatnonzero(w > 0)
    X = np.concatenate([Z, pairwise_features(Z)], axis=1).astype(np.float64)
    p = X.shape[1]
    y = v - v0
    # f(N) = v(N): the last coefficient is (v(N) − v(∅)) − Σ of the others (x_N is all ones)
    total = v1 - v0
    Xc = X[:, :-1] - X[:, -1:]
    yc = y - total * X[:, -1]
    Xi, wi = Xc[inner], w[inner]
    A = Xi.T @ (Xi * wi[:, None])
    A[np.diag_indices(p - 1)] += ridge * max(float(np.trace(A)) / (p - 1), 1e-300)
    Ainv = np.linalg.pinv(A, hermitian=True)
    theta = Ainv @ (Xi.T @ (wi * yc[inner]))
    coef = np.concatenate([theta, [total - theta.sum()]])
    beta = coef[:n]
    G = np.zeros((n, n))
    iu, ju = np.triu_indices(n, 1)
    G[iu, ju] = G[ju, iu] = coef[n:]
    r = np.zeros(m)
    r[inner] = yc[inner] - Xi @ theta  # ∅ and N are fitted exactly
    c = shapley_coefficients(Z)
    base = beta + 0.5 * G.sum(1)
    if interactions:
        c = np.concatenate([c, interaction_coefficients(Z).reshape(m, n * n)], axis=1)
        base = np.concatenate([base, G.ravel()])
    cr = c * r[:, None]
    units = plan.units
    n_units = len(plan.unit_stratum)
    est = base + cr[units < 0].sum(0)
    x_loo = np.zeros((n_units, c.shape[1]))
    leverage_one = False
    if n_units:
        m_h = np.bincount(plan.unit_stratum, minlength=len(plan.strata_size))
        scale = plan.strata_population / np.maximum(m_h, 1)
        sampled = units >= 0
        est = est + (scale[plan.unit_stratum[units[sampled]]][:, None] * cr[sampled]).sum(0)
        # leave-one-unit-out residuals of the linear smoother: e_R = (I − H_RR)⁻¹ r_R
        for u in range(n_units):
            R = np.flatnonzero(units == u)
            XR = Xc[R]
            H = (XR @ Ainv @ XR.T) * w[R][None, :]
            M = np.eye(len(R)) - H
            if np.linalg.cond(M) > 1e8:
                leverage_one = True
                break
            e = np.linalg.solve(M, r[R])
            x_loo[u] = (c[R] * e[:, None]).sum(0)
    if leverage_one:
        var = np.full(c.shape[1], np.inf)
        stderr = np.full(c.shape[1], np.nan)
    elif n_units:
        var, stderr = stratified_variance(plan, x_loo)
    elif plan.exact:
        var = stderr = np.zeros(c.shape[1])
    else:
        # coalitions left unevaluated and no sampled unit to extrapolate from: unknown
        var = np.full(c.shape[1], np.inf)
        stderr = np.full(c.shape[1], np.nan)
    values, se, var_v = est[:n], stderr[:n], var[:n]
    inter = inter_se = None
    inter_var = float("nan")
    if interactions:
        inter = est[n:].reshape(n, n)
        inter = 0.5 * (inter + inter.T)
        np.fill_diagonal(inter, 0.0)
        inter_se = stderr[n:].reshape(n, n)
        inter_var = float(np.triu(var[n:].reshape(n, n), 1).sum())
    return AdjustedEstimate(
        values=values,
        stderr=se,
        surrogate_values=base[:n],
        n_folds=1,
        variance=float(var_v.sum()),
        interactions=inter,
        interaction_stderr=inter_se,
        interaction_variance=inter_var,
    )
