"""Proxy-game fidelity on real data (SurrogateSHAP §5.2, §5.4) with an enumerable retraining game.

scikit-learn digits, the 10 digits as players; generator = PCA on the coalition's training
images + per-class Gaussians in that space (retraining refits both).  For FID and IS:

- proxy vs retraining utility agreement over all 1,023 non-empty coalitions (Pearson,
  Spearman, range-normalised RMSE and MAE as in Table 1), and cost per coalition;
- LDS (eq. 12; 100 uniform subsets of size αn, α ∈ {0.25, 0.5, 0.75}, retraining
  utilities) of: exact Shapley of the retraining game (the ceiling), exact Shapley of the
  proxy game, SurrogateSHAP on the proxy game (budget M, 5-fold CV on the paper grid) and
  KernelSHAP on the proxy game with the same budget.

Run: python benchmarks/bench_fidelity_digits.py [--budget 256]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    from _common import at_least

    from datacredit import SurrogateSHAP, shapley
    from datacredit.games import DigitsRetraining
    from datacredit.metrics import lds_coalitions, lds_groups
    from datacredit.metrics.correlation import spearman

    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=at_least(12), default=256)
    ap.add_argument("--seeds", type=at_least(1), default=3, help="LDS test-set seeds")
    args = ap.parse_args()
    Z = shapley.all_coalitions(10)
    ne = Z.any(1)
    for kind in ("is", "fid"):
        D = DigitsRetraining(utility=kind)
        t0 = time.perf_counter()
        vr = D.retraining_game(Z)
        t_r = (time.perf_counter() - t0) / len(Z)
        t0 = time.perf_counter()
        vp = D.proxy_game(Z)
        t_p = (time.perf_counter() - t0) / len(Z)
        rng_ = vr[ne].max() - vr[ne].min()
        print(f"\n=== utility {kind.upper()} (digits, 10 players) ===")
        print(
            f"proxy vs retraining over 1023 coalitions: Pearson {np.corrcoef(vr[ne], vp[ne])[0, 1]:.4f}, "
            f"Spearman {spearman(vr[ne], vp[ne]):.4f}, "
            f"NRMSE {np.sqrt(np.mean((vr[ne] - vp[ne]) ** 2)) / rng_:.4f}, "
            f"NMAE {np.mean(np.abs(vr[ne] - vp[ne])) / rng_:.4f}"
        )
        print(
            f"cost per coalition: retraining {t_r * 1e3:.2f} ms, proxy {t_p * 1e3:.3f} ms "
            f"({t_r / t_p:.0f}x)"
        )
        phr = shapley.shapley_from_table(vr, 10)
        php = shapley.shapley_from_table(vp, 10)
        sur = SurrogateSHAP(args.budget, seed=0).explain(D.proxy_game)
        ker = shapley.kernel_shap(D.proxy_game, args.budget, seed=0)
        rel = lambda a, ref=phr: np.linalg.norm(a - ref) / np.linalg.norm(ref)  # noqa: E731
        print(
            f"relative l2 to retraining Shapley: exact proxy {rel(php):.4f}, "
            f"SurrogateSHAP(M={args.budget}) {rel(sur.values):.4f}, "
            f"KernelSHAP(M={args.budget}) {rel(ker.values):.4f}"
        )
        print(
            f"{'alpha':>6} {'retrain exact':>14} {'proxy exact':>12} {'SurrogateSHAP':>14} {'KernelSHAP':>11}"
        )
        for alpha in (0.25, 0.5, 0.75):
            vals = {k: [] for k in ("r", "p", "s", "k")}
            for s in range(args.seeds):
                T = lds_coalitions(10, alpha, 100, seed=100 + s)
                vt = D.retraining_game(T)
                for k, phi in (("r", phr), ("p", php), ("s", sur.values), ("k", ker.values)):
                    vals[k].append(lds_groups(phi, T, vt))
            m = {k: 100 * np.mean(v) for k, v in vals.items()}
            print(f"{alpha:>6} {m['r']:>13.1f}% {m['p']:>11.1f}% {m['s']:>13.1f}% {m['k']:>10.1f}%")


if __name__ == "__main__":
    main()
