"""gram_topk vs numpy (matmul + argpartition + sort) and torch (matmul + topk).

2000 x 512 queries against 50,000 x 512 keys, k = 50, all threads.  Prints time,
peak memory growth and the speed-up of datacredit over each peer.
Run: python benchmarks/bench_gram_topk.py [--n 2000 --N 50000 --d 512 --k 50 --metric ip|l2]
(l2: nearest neighbours; numpy computes |q|^2 + |k|^2 - 2 q.k, datacredit the exact distances.)
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import PeakRSS, best_time, table  # noqa: E402

from datacredit import _core  # noqa: E402
from datacredit.kernels import gram_topk  # noqa: E402


def numpy_topk(q: np.ndarray, keys: np.ndarray, k: int, metric: str = "ip"):
    s = q @ keys.T
    if metric == "l2":  # negated squared distances: the largest are the nearest
        s *= 2
        s -= (q * q).sum(1)[:, None]
        s -= (keys * keys).sum(1)[None, :]
    part = np.argpartition(-s, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(s, part, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    return np.take_along_axis(vals, order, 1), np.take_along_axis(part, order, 1)


def main() -> None:
    from _common import at_least

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=at_least(1), default=2000)
    ap.add_argument("--N", type=at_least(1), default=50_000)
    ap.add_argument("--d", type=at_least(1), default=512)
    ap.add_argument("--k", type=at_least(1), default=50)
    ap.add_argument("--repeat", type=at_least(1), default=5)
    ap.add_argument("--metric", choices=("ip", "l2"), default="ip")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    q = rng.standard_normal((args.n, args.d), dtype=np.float32)
    keys = rng.standard_normal((args.N, args.d), dtype=np.float32)

    runs = {}
    with PeakRSS() as mem:
        t, (v, i) = best_time(
            lambda: gram_topk(q, keys, args.k, metric=args.metric, largest=args.metric == "ip"),
            args.repeat,
        )
    runs["datacredit.gram_topk"] = (t, mem.growth, i)
    with PeakRSS() as mem:
        t, (nv, ni) = best_time(lambda: numpy_topk(q, keys, args.k, args.metric), args.repeat)
    runs["numpy matmul+argpartition+sort"] = (t, mem.growth, ni)
    t_mm, _ = best_time(lambda: q @ keys.T, args.repeat)
    try:
        import torch

        tq, tk = torch.from_numpy(q), torch.from_numpy(keys)
        with PeakRSS() as mem:
            if args.metric == "ip":
                run = lambda: torch.topk(tq @ tk.T, args.k, dim=1)  # noqa: E731
            else:
                run = lambda: torch.topk(torch.cdist(tq, tk), args.k, dim=1, largest=False)  # noqa: E731
            t, (tv, ti) = best_time(run, args.repeat)
        runs[f"torch matmul+topk ({torch.get_num_threads()} threads)"] = (t, mem.growth, ti.numpy())
    except ImportError:
        pass

    base = runs["datacredit.gram_topk"][0]
    rows = [
        (name, f"{t * 1e3:.0f} ms", f"{m / 2**20:.0f} MiB", f"{t / base:.2f}x")
        for name, (t, m, _) in runs.items()
    ]
    rows.append(("(numpy matmul alone)", f"{t_mm * 1e3:.0f} ms", "", f"{t_mm / base:.2f}x"))
    print(
        f"gram_topk n={args.n} N={args.N} d={args.d} k={args.k} metric={args.metric}  "
        f"blas={_core.blas} cpus={os.cpu_count()}"
    )
    print(table(rows, ("method", "time", "peak mem growth", "datacredit speed-up")))
    agree = np.mean(runs["datacredit.gram_topk"][2] == ni)
    print(f"index agreement with numpy: {agree:.4f}")


if __name__ == "__main__":
    main()
