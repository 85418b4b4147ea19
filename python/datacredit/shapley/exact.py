"""Exact Shapley values by enumerating all coalitions."""

from __future__ import annotations

from math import comb
from typing import Any

import numpy as np

from datacredit._arrays import check_int
from datacredit.shapley._game import evaluate, game_direction, game_players
from datacredit.shapley.result import ShapleyValues
from datacredit.shapley.sampling import all_coalitions


def shapley_from_table(v: np.ndarray, n: int) -> np.ndarray:
    """Shapley values from the full utility table ``v`` (2^n,), indexed by bitmask; (n,) float64.

    φ_i = Σ_{S ∌ i} |S|!(n−|S|−1)!/n! · (v(S ∪ i) − v(S)).  O(n · 2^n).  ``n`` is an
    integer in ``[1, 62]`` matching ``v``'s length; ``v`` must be finite.
    """
    n = check_int(n, "n", 1, 62)
    v = np.asarray(v, dtype=np.float64)
    if v.shape != (1 << n,):
        raise ValueError(f"v must have shape (2**n,) = ({1 << n},) for n = {n}, got {v.shape}")
    if not np.isfinite(v).all():
        raise ValueError("v contains NaN or inf")
    k = np.arange(1 << n, dtype=np.int64)
    size = np.zeros(1 << n, dtype=np.int64)
    for i in range(n):
        size += (k >> i) & 1
    w = np.array([1.0 / (n * comb(n - 1, s)) for s in range(n)])
    phi = np.empty(n)
    for i in range(n):
        without = k[((k >> i) & 1) == 0]
        phi[i] = np.dot(w[size[without]], v[without | (1 << i)] - v[without])
    return phi


def exact(
    game: Any, *, n_players: int | None = None, batch_size: int | None = 65536
) -> ShapleyValues:
    """Exact Shapley values of ``game`` by evaluating all 2^n coalitions (n ≤ 20).

    Args:
        game: callable bool (m × n) → (m,) utilities, with a ``players`` attribute.
        n_players: number of players when ``game`` has no ``players``.
        batch_size: coalitions per game call, an integer in ``[1, 2**31 - 1]`` (``None``:
            all in one call).

    Returns:
        ShapleyValues with all 2^n coalitions (row k has player i iff bit i of k is set).

    Complexity: 2^n game evaluations + O(n · 2^n).
    """
    players = game_players(game, n_players)
    n = len(players)
    if n > 20:
        raise ValueError(f"exact enumeration supports n <= 20 players, got {n}")
    Z = all_coalitions(n)
    v = evaluate(game, Z, batch_size=batch_size)
    phi = shapley_from_table(v, n)
    return ShapleyValues(
        values=phi,
        players=players,
        v_empty=float(v[0]),
        v_full=float(v[-1]),
        coalitions=Z,
        utilities=v,
        method="exact",
        higher_is_better=game_direction(game),
    )
