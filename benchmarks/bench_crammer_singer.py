"""crammer_singer_fit vs LIBLINEAR's Crammer–Singer solver (-s 4), side by side.

Same data, same C, same tolerance, same bias convention (-B 1), in the same process.
LIBLINEAR's time is its `train` call only (its conversion of the dense array to its
sparse float64 format is reported separately and not counted).  Both primal objectives
are evaluated by the same function on the returned models.

    flock /tmp/bench.lock python benchmarks/bench_crammer_singer.py [--n 60000 --d 512 ...]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from datacredit.kernels import crammer_singer_fit, crammer_singer_objective


def make_features(n: int, d: int, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """ReLU-like penultimate features: class means plus noise, rectified, mean norm ~10."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    means = rng.normal(0.0, 1.0, (k, d))
    x = np.maximum(0.6 * means[y] + rng.normal(0.0, 1.0, (n, d)), 0.0)
    x *= 10.0 / np.sqrt((x**2).sum(1).mean())
    return x.astype(np.float32), y.astype(np.int64)


def liblinear_model(prob, c: float, tol: float, d: int):
    from liblinear.liblinearutil import train

    start = time.perf_counter()
    model = train(prob, f"-s 4 -c {c} -e {tol} -B 1 -q")
    seconds = time.perf_counter() - start
    labels = [int(v) for v in model.get_labels()]
    # LIBLINEAR sizes w by the last nonzero feature index (trailing zero columns are absent)
    k, nf = len(labels), model.get_nr_feature()
    wfull = np.ctypeslib.as_array(model.w, shape=((nf + 1) * k,)).reshape(nf + 1, k)
    w = np.zeros((k, d))
    b = np.zeros(k)
    for j, lab in enumerate(labels):
        w[lab, :nf] = wfull[:nf, j]
        b[lab] = wfull[nf, j]
    return w, b, seconds


def main() -> None:
    from _common import at_least, positive

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=at_least(2), default=60000)
    ap.add_argument("--d", type=at_least(1), default=512)
    ap.add_argument("--k", type=at_least(2), default=10)
    ap.add_argument("--C", type=str, default="1e-5,1e-3,1e-1")
    ap.add_argument("--tol", type=positive, default=1e-4)
    ap.add_argument("--threads", type=at_least(1), default=None)
    ap.add_argument(
        "--repeats", type=at_least(1), default=1, help="our solver: best of this many runs"
    )
    ap.add_argument(
        "--shrink-factors",
        type=str,
        default="0.1,0.5",
        help="our solver's shrink_factor values (0.1 = our default, 0.5 = LIBLINEAR's halving)",
    )
    args = ap.parse_args()

    from liblinear.liblinearutil import problem

    x, y = make_features(args.n, args.d, args.k)
    start = time.perf_counter()
    prob = problem(y.astype(np.float64), x.astype(np.float64))
    convert = time.perf_counter() - start
    print(
        f"N={args.n} d={args.d} K={args.k} tol={args.tol}  mean ||x||="
        f"{np.linalg.norm(x, axis=1).mean():.2f}  (liblinear's dense->sparse conversion "
        f"{convert:.2f} s, not counted)"
    )
    header = (
        f"{'C':>8} {'shrink':>6} | {'ours s':>8} {'passes':>6} {'#SV':>6} {'primal':>12} | "
        f"{'liblinear s':>11} {'primal':>12} | {'rel diff':>9} {'speedup':>7}"
    )
    print(header)
    print("-" * len(header))
    factors = [float(v) for v in args.shrink_factors.split(",")]
    for c in [float(v) for v in args.C.split(",")]:
        w, b, ll_seconds = liblinear_model(prob, c, args.tol, args.d)
        p_ll = crammer_singer_objective(x, y, w, b, c)
        for factor in factors:
            best = np.inf
            for _ in range(args.repeats):
                start = time.perf_counter()
                res = crammer_singer_fit(
                    x,
                    y,
                    c,
                    tol=args.tol,
                    max_iter=100000,
                    n_threads=args.threads,
                    shrink_factor=factor,
                )
                best = min(best, time.perf_counter() - start)
            rel = (res.primal_objective - p_ll) / p_ll
            print(
                f"{c:8.0e} {factor:6.2f} | {best:8.3f} {res.n_iter:6d} {len(res.support):6d} "
                f"{res.primal_objective:12.6f} | {ll_seconds:11.3f} {p_ll:12.6f} | "
                f"{rel:9.2e} {ll_seconds / best:6.1f}x",
                flush=True,
            )


if __name__ == "__main__":
    main()
