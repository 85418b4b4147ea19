"""Per-coalition cost of the proxy game's utilities once the sample bank exists.

20 labels (= players) × 500 samples; FID on d = 2048 features, IS on 1,000 classes, a
mean score, pairwise diversity.  Side by side: datacredit's per-label-statistics
evaluation vs the direct computation on the coalition's samples (stack the samples,
weighted moments, scipy.linalg.sqrtm for FID), on the same coalitions.

Run: flock /tmp/bench.lock python benchmarks/bench_proxy_game.py
"""

from __future__ import annotations

import time

import numpy as np


def main() -> None:
    from scipy import linalg

    from datacredit import shapley
    from datacredit.surrogateshap import ProxyGame, SampleBank
    from datacredit.surrogateshap import utilities as U

    rng = np.random.default_rng(0)
    L, n, d, K = 20, 500, 2048, 1000
    feats = {
        i: (rng.normal(size=(n, 64)) @ rng.normal(size=(64, d)) / 8 + 0.1 * i).astype(np.float32)
        for i in range(L)
    }
    probs = {i: rng.dirichlet(np.full(K, 0.05), size=n) for i in range(L)}
    ref = rng.normal(size=(2000, 64)) @ rng.normal(size=(64, d)) / 8
    contributors = {f"p{i}": [i] for i in range(L)}
    Z = shapley.sample_coalitions(L, 102, seed=0)[2:]

    rows = []
    # mean score / IS / diversity on small per-sample statistics
    bank_p = SampleBank(probs)
    for name, util in [
        ("MeanScore", U.MeanScore(lambda x: x[:, 0], higher_is_better=True)),
        ("InceptionScore", U.InceptionScore()),
        (
            "PairwiseDiversity",
            U.PairwiseDiversity(lambda a, b: np.abs(a[:, None, 0] - b[None, :, 0])),
        ),
    ]:
        t0 = time.perf_counter()
        game = ProxyGame(bank_p, contributors, util, label_weights="uniform")
        t_prep = time.perf_counter() - t0
        t0 = time.perf_counter()
        game(Z)
        t_ours = (time.perf_counter() - t0) / len(Z)
        # direct: stack the coalition's samples and compute the statistic
        W = game.weights(Z[:10])
        t0 = time.perf_counter()
        for pi in W:
            act = np.flatnonzero(pi)
            X = np.concatenate([probs[i] for i in act])
            w = np.concatenate([np.full(n, pi[i] / n) for i in act])
            if name == "MeanScore":
                _ = w @ X[:, 0]
            elif name == "InceptionScore":
                pbar = w @ X
                _ = np.exp(w @ np.sum(X * (np.log(X + 1e-30) - np.log(pbar + 1e-30)), 1))
            else:
                x0 = X[:, 0]
                _ = (w[:, None] * np.abs(x0[:, None] - x0[None, :]) * w[None, :]).sum()
        t_direct = (time.perf_counter() - t0) / len(W)
        rows.append((name, t_prep, t_ours, t_direct))

    from threadpoolctl import threadpool_limits

    # one BLAS thread for both sides: this machine's 2 cores are shared, and multi-threaded
    # LAPACK under oversubscription is ~20x slower than single-threaded
    _limit = threadpool_limits(1, user_api="blas")
    bank_f = SampleBank(feats)
    Zf = Z[:5]
    W = ProxyGame(
        bank_f,
        contributors,
        U.MeanScore(lambda x: x[:, 0], higher_is_better=True),
        label_weights="uniform",
    ).weights(Zf[:1])
    mu_r, cov_r = ref.mean(0), np.cov(ref, rowvar=False, ddof=0)
    t0 = time.perf_counter()
    direct = []
    for pi in W:
        act = np.flatnonzero(pi)
        X = np.concatenate([feats[i] for i in act]).astype(np.float64)
        mu = X.mean(0)
        cov = np.cov(X, rowvar=False, ddof=0)
        covmean = linalg.sqrtm(cov @ cov_r).real
        direct.append(
            np.sum((mu - mu_r) ** 2) + np.trace(cov) + np.trace(cov_r) - 2 * np.trace(covmean)
        )
    t_direct = (time.perf_counter() - t0) / len(W)
    fid_values = {}
    for eig_dtype in ("float64", "float32"):
        t0 = time.perf_counter()
        game = ProxyGame(
            bank_f,
            contributors,
            U.FID(None, ref, blas_threads=1, eig_dtype=eig_dtype),
            label_weights="uniform",
        )
        t_prep = time.perf_counter() - t0
        t0 = time.perf_counter()
        ours = game(Zf)
        t_ours = (time.perf_counter() - t0) / len(Zf)
        fid_values[eig_dtype] = ours[0]
        rows.append((f"FID d={d} {eig_dtype}", t_prep, t_ours, t_direct))
    _limit.restore_original_limits()
    print(f"{L} labels x {n} samples; per-coalition cost after the bank exists")
    print(
        f"{'utility':<20} {'prepare (s)':>12} {'datacredit (ms)':>16} {'direct (ms)':>12} {'ratio':>7}"
    )
    for name, tp, to, td in rows:
        print(f"{name:<20} {tp:>12.2f} {to * 1e3:>16.3f} {td * 1e3:>12.1f} {td / to:>6.0f}x")
    print(
        f"FID first coalition: datacredit float64 {fid_values['float64']:.4f}, "
        f"float32 {fid_values['float32']:.4f}, direct (scipy sqrtm) {direct[0]:.4f}"
    )


if __name__ == "__main__":
    main()
