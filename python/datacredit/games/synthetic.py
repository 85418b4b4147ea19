"""Synthetic coalition games of SurrogateSHAP Appendix E (eqs. 31–33)."""

from __future__ import annotations

import numpy as np

from datacredit._arrays import check_choice

# eq. 33: pairwise terms (i, j, alpha) and the third-order term on players 0, 2, 4.
PAIRS = ((0, 1, 1.5), (2, 3, -1.0), (4, 5, 0.8))
ALPHA_TRI = 2.0


class SyntheticGame:
    """v(z) for z ∈ {0,1}^n (Appendix E):

    - ``linear``:      v = b + wᵀz                                   (eq. 31)
    - ``nonlinear``:   v = 3 tanh((b + wᵀz)/3)                       (eq. 32)
    - ``interaction``: v = 3 tanh((b + wᵀz + Σ α z_i z_j + 2 z0 z2 z4)/3)   (eq. 33)

    with P = {(0,1,1.5), (2,3,−1.0), (4,5,0.8)}.  Call it with a bool matrix (m × n);
    ``exact_values()`` gives the exact Shapley values (closed form for ``linear``,
    enumeration otherwise).
    """

    higher_is_better = True  # a utility: larger is better

    def __init__(self, kind: str, w: np.ndarray, b: float = 0.25):
        self.kind = check_choice(kind, "kind", ("linear", "nonlinear", "interaction"))
        self.w = np.asarray(w, dtype=np.float64).ravel()
        self.b = float(b)
        n = self.w.shape[0]
        if kind == "interaction" and n < 6:
            raise ValueError(f"the interaction game needs n >= 6 players, got {n}")
        self.players = [str(i) for i in range(n)]
        self.n_calls = 0

    @property
    def n_players(self) -> int:
        return len(self.players)

    def __call__(self, Z: np.ndarray) -> np.ndarray:
        Z = np.asarray(Z)
        if Z.ndim != 2 or Z.shape[1] != self.n_players:
            raise ValueError(f"Z must have shape (m, {self.n_players}), got {Z.shape}")
        self.n_calls += Z.shape[0]
        z = Z.astype(np.float64)
        s = self.b + z @ self.w
        if self.kind == "linear":
            return s
        if self.kind == "interaction":
            for i, j, a in PAIRS:
                s = s + a * z[:, i] * z[:, j]
            s = s + ALPHA_TRI * z[:, 0] * z[:, 2] * z[:, 4]
        return 3.0 * np.tanh(s / 3.0)

    def exact_values(self) -> np.ndarray:
        """Exact Shapley values (n,) float64."""
        if self.kind == "linear":
            return self.w.copy()
        from datacredit.shapley.exact import shapley_from_table
        from datacredit.shapley.sampling import all_coalitions

        n = self.n_players
        if n > 20:
            raise ValueError("exact values need n <= 20")
        calls = self.n_calls
        v = self(all_coalitions(n))
        self.n_calls = calls
        return shapley_from_table(v, n)


def synthetic(
    kind: str = "interaction", n: int = 10, seed: int | None = 0, *, b: float = 0.25
) -> SyntheticGame:
    """The Appendix E game ``kind`` with n players, w ~ N(0, 1) drawn from ``seed``, b = 0.25."""
    if not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(f"n must be an integer >= 2, got {n!r}")
    w = np.random.default_rng(seed).standard_normal(int(n))
    return SyntheticGame(kind, w, b)
