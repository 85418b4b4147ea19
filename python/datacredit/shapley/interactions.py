"""Pairwise Shapley interaction index (Grabisch & Roubens) of coalition games and trees.

SII_ij = Σ_{S ⊆ N∖{i,j}} s!(n−s−2)!/(n−1)! · [v(S∪ij) − v(S∪i) − v(S∪j) + v(S)]:
positive for complementary contributors, negative for redundant ones.

For a tree ensemble evaluated on coalitions (x = the indicator z, interventional against
the all-zeros reference) every reachable leaf is a product game
u(z) = value · Π_{a∈A} z_a · Π_{b∈B} (1 − z_b) (A: features the path needs present, B:
needs absent), whose interaction is closed-form: with σ = +1 on A and −1 on B,
SII_ij(u) = value · σ_i σ_j · a! b! / (a + b + 1)!, a = |A∖{i,j}|, b = |B∖{i,j}| (the
coalition sum is a Beta integral), and 0 unless i, j ∈ A ∪ B.
"""

from __future__ import annotations

from math import comb, factorial

import numpy as np


def interaction_coefficients(Z: np.ndarray) -> np.ndarray:
    """c_ij(T) with SII_ij = Σ_T c_ij(T) v(T): float64 (m × n × n), zero diagonal.

    c_ij(T) = (−1)^{[i∉T] + [j∉T]} · s!(n−s−2)!/(n−1)!, s = |T ∖ {i, j}|.  O(m n²) memory.
    """
    Z = np.asarray(Z, dtype=bool)
    m, n = Z.shape
    if n < 2:
        return np.zeros((m, n, n))
    w = np.array([1.0 / ((n - 1) * comb(n - 2, s)) for s in range(n - 1)])
    size = Z.sum(1)
    zi = Z[:, :, None].astype(np.int64)
    zj = Z[:, None, :].astype(np.int64)
    s = size[:, None, None] - zi - zj
    sign = np.where(zi == zj, 1.0, -1.0)  # (−1)^{2−zi−zj}
    c = sign * w[np.clip(s, 0, n - 2)]
    idx = np.arange(n)
    c[:, idx, idx] = 0.0
    return c


def interactions_from_table(v: np.ndarray, n: int) -> np.ndarray:
    """Exact pairwise SII (n × n) from all 2^n utilities (row k = bit mask k).  O(4^n)."""
    from datacredit.shapley.sampling import all_coalitions

    Z = all_coalitions(n)
    return np.einsum("mij,m->ij", interaction_coefficients(Z), np.asarray(v, dtype=np.float64))


def tree_interactions(ens, n: int) -> np.ndarray:
    """Pairwise SII (n × n, symmetric, zero diagonal) of a :class:`TreeEnsemble` on
    coalitions, x = all-ones against the all-zeros reference.

    Each root-to-leaf path is walked once; a feature split twice on a path keeps the
    conditions of both (a contradiction drops the leaf).  O(leaves · depth²).
    """
    out = np.zeros((n, n))
    fact = [float(factorial(k)) for k in range(2 * n + 2)]
    left, right, feature = ens.left, ens.right, ens.feature
    thr, value = ens.threshold, ens.value
    for root in ens.roots:
        # stack of (node, needs) with needs: dict feature -> required z (0/1)
        stack = [(int(root), {})]
        while stack:
            node, needs = stack.pop()
            if left[node] < 0:
                if len(needs) < 2 or value[node] == 0:
                    continue
                feats = list(needs)
                sig = {f: (1.0 if z == 1 else -1.0) for f, z in needs.items()}
                n_a = sum(1 for z in needs.values() if z == 1)
                n_b = len(needs) - n_a
                val = float(value[node])
                for x in range(len(feats)):
                    for y in range(x + 1, len(feats)):
                        i, j = feats[x], feats[y]
                        a = n_a - (needs[i] == 1) - (needs[j] == 1)
                        b = n_b - (needs[i] == 0) - (needs[j] == 0)
                        term = val * sig[i] * sig[j] * fact[a] * fact[b] / fact[a + b + 1]
                        out[i, j] += term
                        out[j, i] += term
                continue
            f = int(feature[node])
            t = np.float32(thr[node])
            # z goes left iff z < threshold (float32 compare of 0.0 / 1.0)
            c0 = int(left[node]) if np.float32(0) < t else int(right[node])
            c1 = int(left[node]) if np.float32(1) < t else int(right[node])
            if c0 == c1:
                stack.append((c0, needs))  # no condition on f at this node
                continue
            prev = needs.get(f)
            for z, child in ((0, c0), (1, c1)):
                if prev is None:
                    stack.append((child, {**needs, f: z}))
                elif prev == z:
                    stack.append((child, needs))
    return out


def pairwise_features(Z: np.ndarray) -> np.ndarray:
    """The products z_i z_j (i < j) of coalitions Z (m × n): float64 (m × n(n−1)/2), pairs in
    ``np.triu_indices(n, 1)`` order."""
    Z = np.asarray(Z, dtype=np.float64)
    iu, ju = np.triu_indices(Z.shape[1], 1)
    return Z[:, iu] * Z[:, ju]


def pairwise_regression_solve(
    Z: np.ndarray,
    v: np.ndarray,
    v_empty: float,
    v_full: float,
    weights: np.ndarray,
    *,
    ridge: float = 1e-8,
) -> tuple[np.ndarray, np.ndarray]:
    """Second-order KernelSHAP: the weighted least-squares fit
    f(z) = v(∅) + zᵀβ + Σ_{i<j} Γ_ij z_i z_j subject to f(N) = v(N).

    With every coalition and the Shapley kernel as ``weights`` this is the order-2 Faithful
    Shapley interaction index (Tsai, Yeh & Ravikumar 2023): Γ is FSII of the pairs, β the
    first-order FSII terms.  For the fitted f itself, the pairwise Shapley interaction index
    is exactly Γ and its Shapley values are β_i + ½ Σ_j Γ_ij.

    Z: interior coalitions (m × n bool); v: (m,); weights: (m,) ≥ 0.  A ridge of ``ridge``
    times the mean diagonal keeps the system solvable when m < n + n(n−1)/2 (then the fit is
    the minimum-norm-like interpolant, which the cross-fitted correction of the caller makes
    unbiased).  Returns β (n,), Γ (n × n, symmetric, zero diagonal).  O(m p² + p³),
    p = n(n+1)/2.
    """
    Z = np.asarray(Z, dtype=np.float64)
    n = Z.shape[1]
    X = np.concatenate([Z, pairwise_features(Z)], axis=1)
    p = X.shape[1]
    y = np.asarray(v, dtype=np.float64) - v_empty
    w = np.asarray(weights, dtype=np.float64)
    A = X.T @ (X * w[:, None])
    A[np.diag_indices(p)] += ridge * max(float(np.trace(A)) / p, 1e-300)
    b = X.T @ (w * y)
    K = np.zeros((p + 1, p + 1))
    K[:p, :p] = A
    K[:p, p] = 1.0
    K[p, :p] = 1.0
    sol = np.linalg.lstsq(K, np.concatenate([b, [v_full - v_empty]]), rcond=None)[0]
    beta = sol[:n]
    G = np.zeros((n, n))
    iu, ju = np.triu_indices(n, 1)
    G[iu, ju] = sol[n:p]
    G[ju, iu] = sol[n:p]
    return beta, G
