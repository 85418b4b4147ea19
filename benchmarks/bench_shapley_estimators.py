"""Shapley estimators on the synthetic games of SurrogateSHAP Appendix E (eqs. 31–33).

Relative ℓ2 error ‖φ̂ − φ‖/‖φ‖ to the exact Shapley values, averaged over trials (a new
w ~ N(0, 1) per trial, b = 0.25, n = 10), for:

- SurrogateSHAP (datacredit; 5-fold CV over the paper's 36-point grid, de-duplicated coalitions)
- KernelSHAP (datacredit; iid coalitions from the Shapley kernel, exact constrained least squares)
- shapiq's KernelSHAP and ProxySPEX (index "SV"; needs lightgbm, skipped without it)

Modes:
  --bar    the accuracy bar: interaction game, M = 512, 60 trials (SurrogateSHAP mean error
           ≤ 0.011 and ≥ 3× lower than KernelSHAP's)
  --sweep  error vs budget (64…1024) on all three games (default 10 trials)

Run: python benchmarks/bench_shapley_estimators.py --bar [--jobs 2]
"""

from __future__ import annotations

import argparse
import time
import warnings
from concurrent.futures import ProcessPoolExecutor

import numpy as np


def _rel(est, exact):
    return float(np.linalg.norm(est - exact) / np.linalg.norm(exact))


def _shapiq_values(iv, n):
    return np.array([iv[(i,)] for i in range(n)], dtype=np.float64)


def run_trial(args):
    kind, budget, trial, methods, n = args
    from datacredit import SurrogateSHAP, games, shapley

    warnings.filterwarnings("ignore")
    g = games.synthetic(kind, n=n, seed=10_000 + trial)
    exact = g.exact_values()
    out = {}
    fn = lambda Z: g(np.asarray(Z, dtype=bool))  # noqa: E731
    for m in methods:
        t0 = time.perf_counter()
        if m == "SurrogateSHAP":
            phi = SurrogateSHAP(budget, seed=trial).explain(g).values
        elif m == "KernelSHAP":
            phi = shapley.kernel_shap(g, budget, seed=trial).values
        elif m == "shapiq.KernelSHAP":
            import shapiq

            phi = _shapiq_values(
                shapiq.KernelSHAP(n=n, random_state=trial).approximate(budget, fn), n
            )
        elif m == "shapiq.ProxySPEX":
            import shapiq

            iv = shapiq.ProxySPEX(n=n, index="SV", max_order=1, random_state=trial).approximate(
                budget, fn
            )
            phi = _shapiq_values(iv, n)
        else:
            raise ValueError(m)
        out[m] = (_rel(phi, exact), time.perf_counter() - t0)
    return out


def available_methods(wanted):
    try:
        import lightgbm  # noqa: F401

        has_lgbm = True
    except ImportError:
        has_lgbm = False
    methods, skipped = [], []
    for m in wanted:
        if m.startswith("shapiq.ProxySPEX") and not has_lgbm:
            skipped.append(m)
        else:
            methods.append(m)
    return methods, skipped


def evaluate(kind, budget, trials, methods, jobs, n=10):
    tasks = [(kind, budget, t, methods, n) for t in range(trials)]
    if jobs > 1:
        with ProcessPoolExecutor(jobs) as pool:
            results = list(pool.map(run_trial, tasks))
    else:
        results = [run_trial(t) for t in tasks]
    return {
        m: (np.array([r[m][0] for r in results]), np.mean([r[m][1] for r in results]))
        for m in methods
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bar", action="store_true")
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--trials", type=int, default=None)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--budgets", type=int, nargs="+", default=[64, 128, 256, 512, 1024])
    ap.add_argument("--games", nargs="+", default=["linear", "nonlinear", "interaction"])
    args = ap.parse_args()
    if not (args.bar or args.sweep):
        args.bar = True
    all_methods = [
        "SurrogateSHAP",
        "KernelSHAP",
        "shapiq.KernelSHAP",
        "shapiq.ProxySPEX",
    ]
    methods, skipped = available_methods(all_methods)
    if skipped:
        print(f"skipped (lightgbm not installed): {', '.join(skipped)}")
    if args.bar:
        trials = args.trials or 60
        t0 = time.perf_counter()
        res = evaluate("interaction", 512, trials, methods, args.jobs)
        print(
            f"\nAccuracy bar: interaction game, n=10, M=512, {trials} trials "
            f"({time.perf_counter() - t0:.0f} s)"
        )
        print(f"{'method':<22} {'mean rel err':>13} {'std':>8} {'s/trial':>8}")
        for m in methods:
            e, t = res[m]
            print(f"{m:<22} {e.mean():>13.4f} {e.std():>8.4f} {t:>8.2f}")
        s, k = res["SurrogateSHAP"][0].mean(), res["KernelSHAP"][0].mean()
        print(
            f"SurrogateSHAP ≤ 0.011: {'PASS' if s <= 0.011 else 'FAIL'} ({s:.4f}); "
            f"KernelSHAP / SurrogateSHAP = {k / s:.1f}x (bar ≥ 3x: {'PASS' if k / s >= 3 else 'FAIL'})"
        )
    if args.sweep:
        trials = args.trials or 10
        for kind in args.games:
            print(f"\n{kind} game, n=10, {trials} trials: mean relative l2 error")
            print(f"{'budget':>7} " + " ".join(f"{m:>20}" for m in methods))
            for b in args.budgets:
                res = evaluate(kind, b, trials, methods, args.jobs)
                print(
                    f"{b:>7} " + " ".join(f"{res[m][0].mean():>20.4g}" for m in methods), flush=True
                )


if __name__ == "__main__":
    main()
