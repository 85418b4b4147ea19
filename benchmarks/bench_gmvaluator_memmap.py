"""GMValuator in core on precomputed, memory-mapped embeddings: anonymous memory and recall.

A training set of precomputed embeddings larger than one wants in RAM is valued in core
from ``np.load(path, mmap_mode="r")``: 4,000,000 × 128 float32 (2 GB, written once under
--dir, 1,000 clusters), 5,000 generated samples, k = 50, GMValuator's defaults otherwise
(index="auto" -> "ivf", nprobe calibrated for target_recall=0.95).  Measured: peak
anonymous memory (RssAnon, sampled every 5 ms; the memory map's pages are file-backed and
not counted) during fit and value, the recall@50 of the final top-50 against exact search on
100 generated samples (``diagnostics``), and the times.  The inverted file's list-ordered
copy of the training set is file-backed for such an input (``datacredit._scratch``); in
anonymous memory it alone is N × d × 4 bytes.

    nice python benchmarks/bench_gmvaluator_memmap.py [--n 4000000 --dir /tmp/gmv-memmap]
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import at_least  # noqa: E402
from bench_gmvaluator_out_of_core import PeakAnon, rss_anon  # noqa: E402

print = functools.partial(print, flush=True)  # noqa: A001
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def make_embeddings(path: Path, n: int, n_gen: int, d: int, clusters: int):
    """Clustered embeddings written block by block to a .npy; the generated ones in RAM."""
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((clusters, d)).astype(np.float32)
    if not path.exists():
        tmp = path.with_suffix(".tmp.npy")
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, d))
        for s in range(0, n, 1 << 18):
            e = min(n, s + (1 << 18))
            r = np.random.default_rng([2, s])
            out[s:e] = centres[r.integers(0, clusters, e - s)] + 0.5 * r.standard_normal(
                (e - s, d), dtype=np.float32
            )
        out.flush()
        del out
        tmp.rename(path)
    r = np.random.default_rng(3)
    gen = centres[r.integers(0, clusters, n_gen)] + 0.5 * r.standard_normal((n_gen, d), np.float32)
    return np.load(path, mmap_mode="r"), gen.astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=at_least(1), default=4_000_000)
    ap.add_argument("--n-gen", type=at_least(1), default=5_000)
    ap.add_argument("--d", type=at_least(1), default=128)
    ap.add_argument("--k", type=at_least(1), default=50)
    ap.add_argument("--clusters", type=at_least(1), default=1000)
    ap.add_argument("--threads", type=at_least(1), default=2)
    ap.add_argument("--dir", default="/tmp/gmv-memmap")
    args = ap.parse_args()
    from datacredit import GMValuator

    root = Path(args.dir)
    root.mkdir(parents=True, exist_ok=True)
    emb, gen = make_embeddings(
        root / f"emb-{args.n}x{args.d}.npy", args.n, args.n_gen, args.d, args.clusters
    )
    print(
        f"{args.n} x {args.d} memory-mapped embeddings ({emb.nbytes / 2**30:.2f} GiB), "
        f"{args.n_gen} generated, k = {args.k}, threads = {args.threads}; "
        f"RssAnon before: {rss_anon() / 2**20:.0f} MB"
    )
    gmv = GMValuator(k=args.k, n_threads=args.threads, diagnostics_sample=100)
    with PeakAnon() as m_fit:
        t0 = time.perf_counter()
        gmv.fit(emb)
        t_fit = time.perf_counter() - t0
    with PeakAnon() as m_val:
        t0 = time.perf_counter()
        res = gmv.value(gen)
        t_val = time.perf_counter() - t0
    dg = res.diagnostics
    print(f"index {gmv.index_}, nlist {dg.get('pq_nlist')}, nprobe {dg.get('pq_nprobe')}")
    print(f"fit {t_fit:.1f} s, peak RssAnon {m_fit.peak / 2**20:.0f} MB")
    print(f"value {t_val:.1f} s, peak RssAnon {m_val.peak / 2**20:.0f} MB")
    print(
        f"recall@{args.k} vs exact on {dg['diagnostics_rows']} generated samples: final "
        f"{dg['final_recall_at_k']:.4f} (calibration {dg.get('calibration_recall_at_k')} "
        f"on {dg.get('calibration_queries')} queries)"
    )


if __name__ == "__main__":
    main()
