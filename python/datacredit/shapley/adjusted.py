"""Regression-adjusted Monte Carlo for Shapley values (Witter, Liu & Musco 2025, "Tree MSR").

φ(v) = φ(f) + φ(v − f) for any surrogate f.  φ(f) is exact (TreeSHAP / a linear model);
φ(v − f) = Σ_S c_i(S)·(v − f)(S) is estimated without bias from the evaluated coalitions
of a :class:`~datacredit.shapley.plan.CoalitionPlan`:

- coalitions of enumerated sizes and every evaluated coalition enter exactly;
- the coalitions never evaluated are covered by a Horvitz–Thompson extrapolation from
  units held out of the surrogate's fit (cross-fitting over K folds of the sampled units,
  stratified by size), so the correction is unbiased given the fitted f.

The estimator is exactly efficient (∅ and N are always evaluated and every interior row of
c sums to 0), exact when the game equals the surrogate's family on the unseen coalitions,
and reports a per-player standard error from the within-stratum variance of the held-out
residuals.  The same variance summed over players is the model-selection criterion: it
estimates the Shapley error of the whole estimator (not the surrogate's MSE).  When a
partly evaluated stratum has fewer than ``MIN_UNITS_FOR_STDERR`` sampled units its
variance cannot be estimated, and the standard errors are NaN (the values are still
unbiased).  The variance is the stratified SRS variance of a total; as it comes from few
units per stratum, the standard error is widened by the Student-t quantile with
Satterthwaite's degrees of freedom (kurtosis-aware), so that over 4 games × budgets 128 /
512 × 100 seeds at most 4.8 % of the values err by more than 2 SE and 1.2 % by more than 3
(tests/test_shapley_adjusted.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from datacredit.shapley.plan import CoalitionPlan, shapley_coefficients

#: Sampled units a partly evaluated stratum needs for its variance to count as a standard
#: error; below it the standard errors are NaN (see :func:`regression_adjusted`).
MIN_UNITS_FOR_STDERR = 3

#: fit(Z_train bool (t × n), v_train (t,), weights (t,)) -> (predict(Z) -> (m,), φ(f) (n,))
SurrogateFit = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[Callable, np.ndarray]]


@dataclass
class AdjustedEstimate:
    """Result of :func:`regression_adjusted`: values, standard errors, diagnostics."""

    values: np.ndarray  # (n,)
    stderr: np.ndarray  # (n,)
    surrogate_values: np.ndarray  # (n,) mean over folds of φ(f_k), before the correction
    n_folds: int
    variance: float  # Σ_i stderr_i², the selection criterion
    interactions: np.ndarray | None = None  # (n, n) pairwise SII, when asked for
    interaction_stderr: np.ndarray | None = None  # (n, n), when asked for
    interaction_variance: float = float("nan")  # Σ_{i<j} SE_ij², selects the surrogate


def t_widening(nu: np.ndarray, z: float = 3.0) -> np.ndarray:
    """t_ν(Φ(z)) / z: how much wider the Student-t quantile with ν degrees of freedom is
    than the normal one at z, by the Cornish–Fisher expansion of the t quantile (Abramowitz
    & Stegun 26.7.5; within 1 % of the exact quantile for ν ≥ 4 at z = 3, 2 % at ν = 3).  ν ≤ 3 is capped
    at ν = 3; ν = inf gives 1.  Shape of ``nu``; O(size)."""
    nu = np.maximum(np.asarray(nu, dtype=np.float64), 3.0)
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return 1.0 + (g1 / nu + g2 / nu**2 + g3 / nu**3 + g4 / nu**4) / z


def kernel_regression_weights(plan: CoalitionPlan, rows: np.ndarray) -> np.ndarray:
    """KernelSHAP weights of ``rows`` of the plan: Shapley kernel × inverse inclusion rate.

    Rows of enumerated sizes weigh μ(S) = (n−1)/(C(n,s)·s·(n−s)); sampled rows of stratum h
    weigh μ(S)·P_h / m_h where m_h of the P_h units are among ``rows``; ∅ and N get 0 (they
    enter KernelSHAP as constraints).
    """
    from math import comb

    Z = plan.Z[rows]
    n = plan.n_players
    s = Z.sum(1)
    C = np.array([float(comb(n, t)) for t in range(n + 1)])
    inner = (s > 0) & (s < n)
    mu = np.zeros(len(rows))
    mu[inner] = (n - 1) / (C[s[inner]] * s[inner] * (n - s[inner]))
    units = plan.units[rows]
    sampled = units >= 0
    if sampled.any():
        strata = plan.unit_stratum[units[sampled]]
        present = np.unique(units[sampled])
        m = np.bincount(plan.unit_stratum[present], minlength=len(plan.strata_size))
        factor = plan.strata_population[strata] / np.maximum(m[strata], 1)
        mu[sampled] *= factor
    return mu


def stratified_variance(plan: CoalitionPlan, x_units: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Variance and standard error of a stratified Horvitz–Thompson total of per-unit
    contributions ``x_units`` (u × w, float64; each unit's residual contribution under a
    surrogate that did not see it).

    Per stratum the SRS-without-replacement variance of a total, P_h²(1 − m_h/P_h)s²_h/m_h;
    the standard error is widened by :func:`t_widening` with Satterthwaite's (kurtosis-aware)
    degrees of freedom, and is NaN everywhere when a partly evaluated stratum has fewer than
    :data:`MIN_UNITS_FOR_STDERR` units.  Returns (var (w,), stderr (w,)).  O(u·w).
    """
    width = x_units.shape[1]
    H = len(plan.strata_size)
    m_h = np.bincount(plan.unit_stratum, minlength=H)
    sampled_h = np.flatnonzero(m_h > 0)
    # Variance: SRS without replacement of m_h units from P_h per stratum; the within-stratum
    # variance s²_h is pooled over all held-out units (each under the f that missed it).
    var = np.zeros(width)
    dof_terms = np.zeros(width)  # Σ_h term_h² var(s²_h)/(2σ⁴_h): Satterthwaite's dof
    for h in sampled_h:
        uh = np.flatnonzero(plan.unit_stratum == h)
        s2 = x_units[uh].var(0, ddof=1) if len(uh) > 1 else np.zeros(width)
        # For a common f the fold average is exactly the total over the sampled units plus
        # (P_h − m_h) × their mean, the SRS estimator of a total: var = P²(1 − m/P) s²/m.
        # (Treating the K folds as independent, as before, ignored that they extrapolate
        # over the same unsampled units: at m_h = P_h/2 it gave 0.6 of this variance, and
        # 8-14 % of values beyond 2 SE at budget 512 of 1,024 coalitions.)
        P = float(plan.strata_population[h])
        term = P * P * max(0.0, 1.0 - m_h[h] / P) * s2 / m_h[h]
        var += term
        if len(uh) > 1:
            # var(s²) = σ⁴ (2/(m−1) + κ/m) with κ the excess kurtosis of the units'
            # contributions: skewed residuals (a few large ones) have fewer effective
            # degrees of freedom than m − 1
            m = len(uh)
            dev = x_units[uh] - x_units[uh].mean(0)
            with np.errstate(divide="ignore", invalid="ignore"):
                kurt = np.where(s2 > 0, np.mean(dev**4, 0) / s2**2 - 3.0, 0.0)
            dof_terms += term**2 * (1.0 / (m - 1) + np.maximum(kurt, 0.0) / (2 * m))
    # var estimates the variance from a few units per stratum (often < 10), so the error
    # over its root is Student-t-like, not normal: with Satterthwaite's degrees of freedom
    # ν = var² / Σ_h term_h² (1/(m_h − 1) + κ_h/(2 m_h)), the standard error is widened by t_ν(q) / z(q) at
    # the 3-sigma quantile, so that "beyond 3 SE" keeps its normal meaning.
    with np.errstate(divide="ignore", invalid="ignore"):
        nu = np.where(dof_terms > 0, var**2 / dof_terms, np.inf)
    stderr = np.sqrt(var) * t_widening(nu)
    unseen = plan.strata_population[sampled_h] > m_h[sampled_h]
    if unseen.any() and m_h[sampled_h][unseen].min() < MIN_UNITS_FOR_STDERR:
        # s²_h from 2 units (1 degree of freedom) is too noisy to be a standard error (4
        # players, budgets 10-14: a quarter of the values erred by more than 3 of them):
        # say "unknown" rather than guess.
        # ``variance`` stays: as a selection criterion it only compares surrogates.
        stderr = np.full(width, np.nan)
    return var, stderr


def regression_adjusted(
    plan: CoalitionPlan,
    v: np.ndarray,
    fit: SurrogateFit,
    *,
    n_folds: int = 5,
    seed: int = 0,
    interactions: bool = False,
) -> AdjustedEstimate:
    """Cross-fitted regression-adjusted Shapley estimate on an evaluated plan.

    Args:
        plan: the coalitions (``plan.Z``) and their sampling design.
        v: float64 (m,), the game on ``plan.Z``.
        fit: surrogate fitter, see :data:`SurrogateFit`.
        n_folds: folds K of the sampled units (capped by the smallest stratum's units).
        seed: seeds the fold assignment.
        interactions: also estimate the pairwise Shapley interaction index the same way
            (exact SII of each f_k from ``fit.interactions()`` + the same cross-fitted
            correction with the SII coefficients); O(m·n²) more memory.

    Fold k: f_k is fitted on the enumerated rows and the units outside fold k; the estimate
    is φ(f_k) + Σ_{rows f_k saw} c·(v − f_k) + Σ_h (R_hk / m_hk) Σ_{units of h in fold k}
    c·(v − f_k), with R_hk the units of stratum h not seen by f_k.  The K estimates are
    averaged.  Complexity: K surrogate fits + predictions on m rows + O(m·n).
    """
    Z = plan.Z
    n = plan.n_players
    v = np.asarray(v, dtype=np.float64)
    c = shapley_coefficients(Z)
    surrogate_index = fit
    if interactions:
        # the interaction index is one more linear functional of v: its n² coefficients are
        # estimated by the same cross-fitted correction, as extra columns of c
        from datacredit.shapley.interactions import interaction_coefficients

        c = np.concatenate([c, interaction_coefficients(Z).reshape(len(Z), n * n)], axis=1)

        def surrogate_index(Zt, vt, wt):
            pred, phi_f = fit(Zt, vt, wt)
            return pred, np.concatenate([phi_f, fit.interactions().ravel()])

    def split(x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        return x[:n], (x[n:].reshape(n, n) if interactions else None)

    cv = c * v[:, None]
    units = plan.units
    n_units = len(plan.unit_stratum)
    if n_units == 0:
        phi, inter = split(cv.sum(0))
        if plan.exact:
            zero = None if inter is None else np.zeros((n, n))
            return AdjustedEstimate(phi, np.zeros(n), phi.copy(), 0, 0.0, inter, zero, 0.0)
        # no unit was sampled (tiny budget): one fit on what was evaluated, no correction
        pred, phi_f = surrogate_index(Z, v, kernel_regression_weights(plan, np.arange(len(Z))))
        r = v - pred(Z)
        phi, inter = split(phi_f + (c * r[:, None]).sum(0))
        nan = None if inter is None else np.full((n, n), np.nan)
        return AdjustedEstimate(
            phi, np.full(n, np.nan), phi_f[:n], 1, float("nan"), inter, nan, float("nan")
        )
    H = len(plan.strata_size)
    m_h = np.bincount(plan.unit_stratum, minlength=H)
    sampled_h = np.flatnonzero(m_h > 0)
    K = int(max(1, min(n_folds, m_h[sampled_h].min())))
    rng = np.random.default_rng(seed)
    fold_of_unit = np.empty(n_units, dtype=np.int64)
    for h in sampled_h:
        idx = np.flatnonzero(plan.unit_stratum == h)
        fold_of_unit[rng.permutation(idx)] = np.arange(len(idx)) % K
    row_fold = np.where(units >= 0, fold_of_unit[np.maximum(units, 0)], -1)
    width = c.shape[1]
    estimates, phis_f = [], []
    x_oof = np.zeros(
        (n_units, width)
    )  # each unit's residual contribution under the f that missed it
    for k in range(K):
        train = np.flatnonzero(row_fold != k)
        held = np.flatnonzero(row_fold == k)
        pred, phi_f = surrogate_index(Z[train], v[train], kernel_regression_weights(plan, train))
        r = v - pred(Z)
        cr = c * r[:, None]
        est = phi_f + cr[train].sum(0)
        x = np.zeros((n_units, width))
        np.add.at(x, units[held], cr[held])
        held_units = np.unique(units[held])
        x_oof[held_units] = x[held_units]
        for h in sampled_h:
            uh = held_units[plan.unit_stratum[held_units] == h]
            m_hk = len(uh)
            R = plan.strata_population[h] - (m_h[h] - m_hk)
            est = est + (R / m_hk) * x[uh].sum(0)
        estimates.append(est)
        phis_f.append(phi_f)
    var, stderr = stratified_variance(plan, x_oof)
    values, inter = split(np.mean(estimates, axis=0))
    se, inter_se = split(stderr)
    var_v, var_i = split(var)
    return AdjustedEstimate(
        values=values,
        stderr=se,
        surrogate_values=np.mean(phis_f, axis=0)[:n],
        n_folds=K,
        variance=float(var_v.sum()),
        interactions=inter,
        interaction_stderr=inter_se,
        interaction_variance=float("nan") if var_i is None else float(np.triu(var_i, 1).sum()),
    )
