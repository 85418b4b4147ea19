"""Coalition sampling from the Shapley kernel."""

from __future__ import annotations

import numpy as np

from datacredit._arrays import check_int


def shapley_size_probs(n: int) -> np.ndarray:
    """p(s) ∝ (n−1)/(s(n−s)) for s = 1..n−1 (the Shapley kernel's size marginal); shape (n−1,).

    ``n``: an integer in ``[2, 2**31 - 1]`` (at least 2 players have interior coalitions).
    """
    n = check_int(n, "n", 2, 2**31 - 1)
    s = np.arange(1, n)
    w = (n - 1) / (s * (n - s))
    return w / w.sum()


def _draw(rng: np.random.Generator, n: int, m: int, probs: np.ndarray) -> np.ndarray:
    sizes = rng.choice(np.arange(1, n), size=m, p=probs)
    ranks = np.argsort(np.argsort(rng.random((m, n)), axis=1), axis=1)
    return ranks < sizes[:, None]


def _keys(Z: np.ndarray) -> np.ndarray:
    packed = np.packbits(Z, axis=1)
    return np.ascontiguousarray(packed).view(np.dtype((np.void, packed.shape[1]))).ravel()


def all_coalitions(n: int) -> np.ndarray:
    """All 2^n coalitions as a bool matrix (2^n × n); row k has player i iff bit i of k is set.

    ``n``: an integer in ``[1, 24]`` (2^24 rows is the enumeration limit).
    """
    n = check_int(n, "n", 1, 24)
    k = np.arange(1 << n, dtype=np.int64)
    return ((k[:, None] >> np.arange(n)) & 1).astype(bool)


def sample_coalitions(
    n: int,
    budget: int,
    seed: int | np.random.Generator | None = 0,
    *,
    unique: bool = True,
    paired: bool = False,
) -> np.ndarray:
    """Coalitions for a budget of ``budget`` game evaluations; bool matrix (m × n), m ≤ budget.

    Rows 0 and 1 are always the empty and the full coalition.  The other ``budget − 2``
    are interior coalitions drawn from the Shapley kernel: a size s ∈ 1..n−1 with
    p(s) ∝ (n−1)/(s(n−s)), then a uniform subset of that size.

    Args:
        n: number of players (≥ 2).
        budget: number of coalitions (≥ 2; ≥ n + 2 is what the estimators require).
        seed: int seed or a numpy Generator.
        unique: de-duplicate (default): each coalition appears once, draws continue until
            ``budget − 2`` distinct interior coalitions are found.  When 2^n ≤ budget all
            2^n coalitions are returned (enumeration).  ``False`` samples iid with replacement.
        paired: add the complement of every drawn coalition right after it (antithetic
            sampling); with an odd ``budget − 2`` the last complement is dropped.

    Complexity: O(budget · n log n) expected time for the draws.
    """
    if not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(f"n must be an integer >= 2, got {n!r}")
    if not isinstance(budget, (int, np.integer)) or budget < 2:
        raise ValueError(f"budget must be an integer >= 2, got {budget!r}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    n, budget = int(n), int(budget)
    ends = np.zeros((2, n), dtype=bool)
    ends[1] = True
    if unique and n <= 24 and (1 << n) <= budget:
        allz = all_coalitions(n)
        return np.concatenate([ends, allz[1:-1]])
    need = budget - 2
    probs = shapley_size_probs(n)
    if not unique:
        if paired:
            half = _draw(rng, n, (need + 1) // 2, probs)
            body = np.empty((2 * half.shape[0], n), dtype=bool)
            body[0::2], body[1::2] = half, ~half
            body = body[:need]
        else:
            body = _draw(rng, n, need, probs)
        return np.concatenate([ends, body])
    chosen: list[np.ndarray] = []
    seen: set = {bytes(_keys(ends[:1])[0]), bytes(_keys(ends[1:])[0])}
    count = 0
    attempts = 0
    while count < need:
        attempts += 1
        if attempts > 10_000:
            raise RuntimeError("could not draw enough distinct coalitions; lower the budget")
        draw = _draw(rng, n, max(64, 2 * (need - count)), probs)
        if paired:
            # keep each coalition next to its complement: accept both or neither
            for row in draw:
                ka, kb = bytes(_keys(row[None])[0]), bytes(_keys(~row[None])[0])
                if ka in seen or kb in seen:
                    continue
                seen.update((ka, kb))
                chosen.extend((row, ~row))
                count += 2
                if count >= need:
                    break
            continue
        for row, key in zip(draw, _keys(draw)):
            kb = bytes(key)
            if kb in seen:
                continue
            seen.add(kb)
            chosen.append(row)
            count += 1
            if count == need:
                break
    return np.concatenate([ends, np.asarray(chosen[:need], dtype=bool).reshape(-1, n)])
