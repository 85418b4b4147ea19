"""Coalition plans: which coalitions to evaluate for a budget, and with what probability.

A :class:`CoalitionPlan` stratifies coalitions by size (the way shapiq's ``CoalitionSampler``
chooses them): sizes whose expected share of the budget under the Shapley kernel covers all
their coalitions are *enumerated* (the border trick, from the outside in), the rest of the
budget is split over the remaining sizes in proportion to the kernel's size marginal
p(s) ∝ 1/(s(n−s)), and inside each size coalitions are drawn uniformly *without
replacement*, each together with its complement (paired sampling).  The inclusion
probability of every coalition is therefore known, which is what the unbiased Monte-Carlo
corrections (:mod:`datacredit.shapley.adjusted`) and the importance weights of KernelSHAP
need.

Why this allocation: the Shapley value is Σ_S c_i(S) v(S) with |c_i(S)| · C(n, s) ≈ 1/s or
1/(n−s), so each size's total has a scale ∝ 1/(s(n−s)); proportional (Neyman) allocation
with that scale is exactly the Shapley kernel's size marginal.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import comb

import numpy as np


@dataclass
class CoalitionPlan:
    """Coalitions to evaluate plus their sampling design.

    Attributes:
        Z: bool (m × n); rows 0 and 1 are ∅ and N.
        units: int (m,), the sampling unit of each row (a coalition, or a coalition and its
            complement when ``paired``); −1 for rows of enumerated sizes.
        unit_stratum: int (u,), the stratum of each unit.
        strata_population: float (h,), number of units in each stratum's population.
        strata_size: int (h,), coalition size s (≤ n/2) that defines each stratum; with
            ``paired`` a stratum holds sizes s and n − s.
        enumerated: bool (n + 1,), sizes whose coalitions are all in ``Z``.
        paired: whether units are complement pairs.
    """

    Z: np.ndarray
    units: np.ndarray
    unit_stratum: np.ndarray
    strata_population: np.ndarray
    strata_size: np.ndarray
    enumerated: np.ndarray
    paired: bool

    @property
    def n_players(self) -> int:
        return int(self.Z.shape[1])

    @property
    def strata_sampled(self) -> np.ndarray:
        """Units drawn per stratum, int (h,)."""
        return np.bincount(self.unit_stratum, minlength=len(self.strata_size))

    @property
    def exact(self) -> bool:
        """True when every coalition was enumerated (the estimators are then exact)."""
        return bool(self.enumerated.all())


def _kernel_size_weights(n: int) -> np.ndarray:
    """p(s) ∝ 1/(s(n−s)) for s = 0..n (zero at 0 and n)."""
    p = np.zeros(n + 1)
    s = np.arange(1, n)
    p[1:n] = 1.0 / (s * (n - s))
    return p


def _sizes_of_all(n: int, s: int) -> np.ndarray:
    """All coalitions of size s as a bool matrix (C(n, s) × n)."""
    from itertools import combinations

    rows = list(combinations(range(n), s))
    Z = np.zeros((len(rows), n), dtype=bool)
    for k, r in enumerate(rows):
        Z[k, list(r)] = True
    return Z


def plan_coalitions(
    n: int,
    budget: int,
    seed: int | np.random.Generator | None = 0,
    *,
    paired: bool = True,
    min_units: int = 2,
) -> CoalitionPlan:
    """Choose at most ``budget`` distinct coalitions of n players (see the module docstring).

    Sizes are enumerated while ``remaining budget · p̃(s) ≥ C(n, s)`` (p̃ renormalised over
    the sizes not yet enumerated), checked for s and n − s together.  The remaining budget
    goes to the other sizes by largest remainders, each sampled stratum getting at least
    ``min_units`` units when the budget allows that for every stratum, else at least two
    (so its variance can be estimated); with ``paired`` a
    unit costs two evaluations and an odd leftover evaluation stays unused.  With
    ``budget ≥ 2^n`` all coalitions are enumerated.

    Args:
        n: players (≥ 1).
        budget: evaluations (≥ 2).
        seed: int seed or numpy Generator.
        paired: draw each coalition with its complement.
        min_units: the floor of units per sampled stratum where the budget allows it
            for all of them (an integer ≥ 2).  Cross-fitting over K folds needs K units
            in every stratum (:func:`~datacredit.shapley.adjusted.regression_adjusted`
            caps its folds at the smallest stratum), so SurrogateSHAP asks for K.

    Complexity: O(budget · n) plus enumerating the border sizes (≤ budget coalitions).
    """
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    if not isinstance(budget, (int, np.integer)) or isinstance(budget, bool) or budget < 2:
        raise ValueError(f"budget must be an integer >= 2, got {budget!r}")
    if isinstance(min_units, bool) or not isinstance(min_units, (int, np.integer)):
        raise TypeError(f"min_units must be an integer, got {type(min_units).__name__}")
    if min_units < 2:
        raise ValueError(f"min_units must be >= 2, got {min_units}")
    n, budget = int(n), int(budget)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    p = _kernel_size_weights(n)
    C = np.array([float(comb(n, s)) for s in range(n + 1)])
    enumerated = np.zeros(n + 1, dtype=bool)
    enumerated[[0, n]] = True
    left = budget - 2
    # border trick, from the outside in, a size and its complement size together
    changed = True
    while changed and not enumerated.all():
        changed = False
        open_sizes = np.flatnonzero(~enumerated)
        pt = p[open_sizes] / p[open_sizes].sum()
        for s in open_sizes:
            if enumerated[s]:
                continue
            group = sorted({int(s), int(n - s)})
            cost = sum(C[g] for g in group)
            share = left * sum(pt[open_sizes == g][0] for g in group)
            open_total = C[~enumerated].sum()
            if cost <= left and (share >= cost or open_total <= left):
                enumerated[group] = True
                left -= int(cost)
                changed = True
                break
    rows = [np.zeros((1, n), bool), np.ones((1, n), bool)]
    for s in range(1, n):
        if enumerated[s]:
            rows.append(_sizes_of_all(n, s))
    Z_enum = np.concatenate(rows)
    # strata over the open sizes
    open_sizes = [s for s in range(1, n) if not enumerated[s]]
    strata: list[int] = []
    for s in open_sizes:
        key = min(s, n - s) if paired else s
        if key not in strata:
            strata.append(key)
    strata.sort()
    pop, weight = [], []
    for key in strata:
        if paired:
            sizes = {key, n - key}
            pop.append(C[key] / 2 if key == n - key else C[key])
            weight.append(sum(p[s] for s in sizes))
        else:
            pop.append(C[key])
            weight.append(p[key])
    pop_a, w_a = np.array(pop), np.array(weight)
    alloc = np.zeros(len(strata), dtype=np.int64)
    if len(strata):
        units_total = left // 2 if paired else left
        units_total = int(min(units_total, pop_a.sum()))
        ideal = units_total * w_a / w_a.sum()
        alloc = np.minimum(np.floor(ideal).astype(np.int64), pop_a.astype(np.int64))
        floor = int(min_units) if units_total >= int(min_units) * len(strata) else 2
        if units_total >= floor * len(strata):
            alloc = np.maximum(alloc, np.minimum(floor, pop_a.astype(np.int64)))
        # largest remainders (respecting populations) until the units are used
        while alloc.sum() < units_total:
            room = alloc < pop_a
            if not room.any():
                break
            gain = np.where(room, ideal - alloc, -np.inf)
            alloc[int(np.argmax(gain))] += 1
        while alloc.sum() > units_total:
            over = np.where(alloc > floor, alloc - ideal, -np.inf)
            alloc[int(np.argmax(over))] -= 1
    sampled_rows, unit_of_row, unit_stratum = [], [], []
    u = 0
    for h, key in enumerate(strata):
        k = int(alloc[h])
        if k == 0:
            continue
        seen: set = set()
        picks: list[np.ndarray] = []
        while len(picks) < k:
            S = np.zeros(n, bool)
            S[rng.choice(n, size=key, replace=False)] = True
            if paired and key == n - key and not S[0]:
                S = ~S  # a pair {S, Sᶜ} of equal sizes is keyed by its member holding player 0
            kb = S.tobytes()
            if kb in seen:
                continue
            seen.add(kb)
            picks.append(S)
        for S in picks:
            sampled_rows.append(S)
            unit_of_row.append(u)
            if paired:
                sampled_rows.append(~S)
                unit_of_row.append(u)
            unit_stratum.append(h)
            u += 1
    Z_s = np.array(sampled_rows, dtype=bool).reshape(-1, n)
    Z = np.concatenate([Z_enum, Z_s])
    units = np.concatenate([np.full(len(Z_enum), -1, np.int64), np.array(unit_of_row, np.int64)])
    return CoalitionPlan(
        Z=Z,
        units=units,
        unit_stratum=np.array(unit_stratum, dtype=np.int64),
        strata_population=pop_a if len(strata) else np.zeros(0),
        strata_size=np.array(strata, dtype=np.int64),
        enumerated=enumerated,
        paired=bool(paired),
    )


def shapley_coefficients(Z: np.ndarray) -> np.ndarray:
    """c_i(S) with φ_i = Σ_S c_i(S) v(S): float64 (m × n).

    c_i(S) = 1/(n·C(n−1, s−1)) if i ∈ S, −1/(n·C(n−1, s)) if i ∉ S (s = |S|); each row of an
    interior coalition sums to 0 over the players.
    """
    Z = np.asarray(Z, dtype=bool)
    n = Z.shape[1]
    w = np.array([1.0 / (n * comb(n - 1, t)) for t in range(n)])  # w_t, t = 0..n-1
    s = Z.sum(1)
    inside = w[np.clip(s - 1, 0, n - 1)]
    outside = -w[np.clip(s, 0, n - 1)]
    return np.where(Z, inside[:, None], outside[:, None])
