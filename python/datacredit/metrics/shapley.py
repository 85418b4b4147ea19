"""Evaluation of contributor values (SurrogateSHAP §5.4–5.5): LDS and counterfactual sets."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from datacredit._arrays import as_mask, check_float, check_int


def _values(values: Any) -> np.ndarray:
    v = getattr(values, "values", values)
    v = np.asarray(v, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"values must be a non-empty vector (n,), got shape {v.shape}")
    if not np.isfinite(v).all():
        raise ValueError("values contains NaN or inf")
    return v


def lds_groups(values: Any, coalitions: Any, utilities: Any) -> float:
    """Linear datamodeling score (eq. 12): Spearman ρ between Σ_{i∈S} τ_i and v(S).

    Args:
        values: τ (n,) or a ShapleyValues.
        coalitions: bool (m × n), held-out coalitions (e.g. uniform subsets of size αn).
        utilities: their true utilities v(S) (m,), e.g. from retraining.
    Returns: ρ in [−1, 1].  O(m·n + m log m).
    """
    from datacredit.metrics.correlation import spearman

    tau = _values(values)
    Z = as_mask(coalitions, "coalitions")
    v = np.asarray(utilities, dtype=np.float64)
    if Z.ndim != 2 or Z.shape[1] != tau.size:
        raise ValueError(f"coalitions must have shape (m, {tau.size}), got {Z.shape}")
    if v.shape != (Z.shape[0],):
        raise ValueError(f"utilities must have shape ({Z.shape[0]},), got {v.shape}")
    if Z.shape[0] < 3:
        raise ValueError("need at least 3 coalitions for a rank correlation")
    if not np.isfinite(v).all():
        raise ValueError("utilities contains NaN or inf")
    return spearman(Z.astype(np.float64) @ tau, v)


def lds_coalitions(n: int, alpha: float = 0.5, m: int = 100, seed: int = 0) -> np.ndarray:
    """m coalitions drawn uniformly among subsets of size round(αn) (the LDS test sets); bool (m × n).

    ``n`` and ``m`` are integers >= 1, ``alpha`` in ``(0, 1)``.
    """
    n = check_int(n, "n", 1)
    m = check_int(m, "m", 1)
    alpha = check_float(alpha, "alpha", 0.0, 1.0, lo_open=True, hi_open=True)
    k = max(1, int(round(alpha * n)))
    rng = np.random.default_rng(seed)
    Z = np.zeros((m, n), dtype=bool)
    for r in range(m):
        Z[r, rng.choice(n, size=k, replace=False)] = True
    return Z


def counterfactual_ranking(
    values: Any,
    k_fracs: Sequence[float] = (0.05, 0.10, 0.15, 0.20),
    players: Sequence | None = None,
) -> list[dict[str, Any]]:
    """Top / bottom removal sets of Table 3 for each fraction k.

    For each k: the ⌈k·n⌉ (at least 1) highest-valued players (``top``) and lowest-valued
    players (``bottom``), plus the bool masks (n,) of the players kept after removing
    each set (``keep_without_top``, ``keep_without_bottom``) — the coalitions to retrain.
    Ties are broken by player order.  O(n log n).
    """
    tau = _values(values)
    n = tau.size
    if players is None:
        players = getattr(values, "players", None) or list(range(n))
    players = list(players)
    if len(players) != n:
        raise ValueError(f"{len(players)} players for {n} values")
    order = np.argsort(-tau, kind="stable")
    out = []
    for k in k_fracs:
        if not 0 < k < 1:
            raise ValueError(f"every k_frac must be in (0, 1), got {k}")
        c = max(1, int(np.ceil(k * n - 1e-9)))
        top, bottom = order[:c], order[::-1][:c]
        keep_top = np.ones(n, dtype=bool)
        keep_top[top] = False
        keep_bottom = np.ones(n, dtype=bool)
        keep_bottom[bottom] = False
        out.append(
            {
                "k_frac": float(k),
                "n_removed": c,
                "top": [players[i] for i in top],
                "bottom": [players[i] for i in bottom],
                "keep_without_top": keep_top,
                "keep_without_bottom": keep_bottom,
            }
        )
    return out


__all__ = ["counterfactual_ranking", "lds_coalitions", "lds_groups"]
