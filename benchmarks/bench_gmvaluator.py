"""GMValuator pipeline speed: datacredit vs the brute-force per-sample loop it replaces.

10,000 generated vs 1,000,000 training embeddings (d=512, clustered synthetic), k=50,
rerank="l2".  The reference (as in the published baselines): for each generated sample,
Euclidean distances to all training embeddings in chunks of 2,048 with numpy, then
argpartition for the top k and the softmax weights; timed on 100 samples and scaled
linearly.  datacredit with GMValuator's defaults unless flags say otherwise (index="auto",
which is `ivf` at this size: inverted file, exact l2 inside the probed lists via the fused
Gram top-k kernel; `--index pq`: PQ + IVF ADC recall of `recall` candidates), then exact l2
re-rank, top k, values.  recall@50 of datacredit's top-50 against exact search is measured on 100
generated samples (GMValuation.diagnostics) and reported.

    flock /tmp/bench.lock python benchmarks/bench_gmvaluator.py [--n 1000000 --n-gen 10000]
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pq import clustered  # noqa: E402

print = functools.partial(print, flush=True)  # noqa: A001


def brute_force_values(train: np.ndarray, gen: np.ndarray, k: int, chunk: int = 2048):
    """The per-sample loop: chunked numpy distances, argpartition, softmax, scatter-add."""
    values = np.zeros(len(train))
    tops = []
    for g in gen:
        d = np.concatenate(
            [np.linalg.norm(train[s : s + chunk] - g, axis=1) for s in range(0, len(train), chunk)]
        )
        top = np.argpartition(d, k)[:k]
        top = top[np.argsort(d[top])]
        w = np.exp(-(d[top] - d[top].min()))
        values[top] += w / w.sum()
        tops.append(top)
    return values, np.array(tops)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--n-gen", type=int, default=10_000)
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--k", type=int, default=50)
    # Index settings default to GMValuator's own defaults (None: not passed).
    ap.add_argument("--index", default=None, choices=["ivf", "pq", "exact"])
    ap.add_argument("--recall", type=int, default=None)
    ap.add_argument("--pq-m", type=int, default=None)
    ap.add_argument("--nlist", type=int, default=None)
    ap.add_argument("--nprobe", type=int, default=None)
    ap.add_argument("--brute-samples", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--clusters", type=int, default=1000)
    args = ap.parse_args()

    from datacredit import GMValuator

    t0 = time.perf_counter()
    data = clustered(args.n + args.n_gen, args.d, args.clusters, 1.0, seed=1)
    train, gen = data[: args.n], data[args.n :]
    print(
        f"data: {args.n} training x {args.n_gen} generated embeddings, d={args.d}, "
        f"k={args.k}, threads={args.threads} [{time.perf_counter() - t0:.1f} s]"
    )

    chosen = {
        "index": args.index,
        "recall": args.recall,
        "pq_m": args.pq_m,
        "pq_nlist": args.nlist,
        "pq_nprobe": args.nprobe,
    }
    gmv = GMValuator(
        k=args.k,
        rerank="l2",
        n_threads=args.threads,
        diagnostics_sample=100,
        **{key: v for key, v in chosen.items() if v is not None},
    )
    t0 = time.perf_counter()
    gmv.fit(train)
    t_fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = gmv.value(gen)
    t_value = time.perf_counter() - t0
    diag = res.diagnostics
    print(
        f"datacredit fit (index={gmv.index} -> {gmv.index_}, PQ m={diag.get('pq_m')}, "
        f"nlist={diag.get('pq_nlist')}, nprobe={diag.get('pq_nprobe')}, "
        f"recall={gmv.recall}): {t_fit:.1f} s"
    )
    print(
        f"datacredit value: {t_value:.1f} s total (recall {diag['recall_s']:.1f} s, "
        f"re-rank+values {diag['rerank_and_values_s']:.1f} s, diagnostics incl.)"
    )
    print(
        f"recall@{args.k} vs exact (100 samples): recall stage "
        f"{diag['recall_stage_recall_at_k']:.4f}, final {diag['final_recall_at_k']:.4f}"
    )

    nb = args.brute_samples
    t0 = time.perf_counter()
    bvals, btop = brute_force_values(train, gen[:nb], args.k)
    t_b = time.perf_counter() - t0
    t_b_scaled = t_b * args.n_gen / nb
    agree = np.mean(
        [len(np.intersect1d(a, b)) / args.k for a, b in zip(btop, res.topk_indices[:nb])]
    )
    print(
        f"brute-force loop: {t_b:.1f} s for {nb} samples -> {t_b_scaled:.0f} s scaled to "
        f"{args.n_gen}"
    )
    print(f"top-{args.k} agreement with the brute force on those {nb}: {agree:.4f}")
    print()
    print(f"speed-up value() vs brute force:          {t_b_scaled / t_value:7.1f}x")
    print(f"speed-up fit()+value() vs brute force:    {t_b_scaled / (t_fit + t_value):7.1f}x")


if __name__ == "__main__":
    main()
