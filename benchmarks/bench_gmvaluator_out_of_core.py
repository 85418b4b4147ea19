"""GMValuator out of core: fit(store=DIR) through an encoder, then value(), in bounded memory.

3,000,000 training inputs (32-d, 1,000 clusters, a memory-mapped .npy generated once under
--dir) go through a cheap deterministic encoder (a fixed random projection to d = 128) into
a ShardStore (1.5 GB of embeddings on disk); 5,000 generated samples, k = 50, GMValuator's
defaults otherwise (index="auto" -> "ivf" at this size, nprobe calibrated for
target_recall=0.95 on 64 generated samples). Measured:

* peak anonymous memory (``RssAnon`` of /proc/self/status, sampled every 5 ms by a thread;
  not ru_maxrss, which counts the mapped file pages of the store) during fit and value;
* recall@50 of the final top-50 against exact search on 100 generated samples
  (GMValuation.diagnostics, exact top-k over all shards), and agreement with the brute force;
* value() time against the chunked brute-force loop of bench_gmvaluator.py (numpy distances
  in chunks of 2,048 per generated sample, argpartition, softmax, scatter-add), run on
  --brute-samples generated samples and scaled linearly to 5,000;
* a second fit() on the complete store (encoding skipped);
* the same ratio in CPU seconds (time.process_time, all threads), which a shared machine's
  other jobs do not distort.

fit() runs serially (one shard of 2^20 rows in memory at a time); value() searches the
training shards with a thread pool of --threads workers (executor=), as the brute force's
numpy calls and datacredit's kernels each get the machine's cores.

    nice python benchmarks/bench_gmvaluator_out_of_core.py [--n 3000000 --dir /tmp/gmv-ooc]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import functools
import os
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gmvaluator import brute_force_values  # noqa: E402

print = functools.partial(print, flush=True)  # noqa: A001
# A shared, loaded machine: OpenMP threads that spin while waiting lose their core to other
# processes; sleeping waits keep the kernels' timings meaningful (set before the import).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

IN_DIM = 32


def rss_anon() -> int:
    """Anonymous resident memory of this process, bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon in /proc/self/status")


class PeakAnon:
    """Peak RssAnon while the block runs, sampled every 5 ms."""

    def __enter__(self) -> PeakAnon:
        self._stop = threading.Event()
        self.peak = rss_anon()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_anon())
            time.sleep(0.005)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, rss_anon())


class Projection:
    """The encoder: x @ W, W a fixed seeded (32, 128) Gaussian matrix (deterministic)."""

    def __init__(self, d: int = 128) -> None:
        self.w = np.random.default_rng(123).standard_normal((IN_DIM, d)).astype(np.float32)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(batch, np.float32) @ self.w


def make_inputs(path: Path, n: int, n_gen: int, clusters: int) -> tuple[np.ndarray, np.ndarray]:
    """Clustered inputs written chunk by chunk to a .npy (memory-mapped); generated in RAM."""
    rng = np.random.default_rng(1)
    centres = (rng.standard_normal((clusters, IN_DIM)) * 3).astype(np.float32)
    if not path.exists():
        tmp = path.with_suffix(".tmp.npy")
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, IN_DIM))
        for s in range(0, n, 1 << 18):
            e = min(n, s + (1 << 18))
            r = np.random.default_rng([2, s])
            out[s:e] = centres[r.integers(0, clusters, e - s)] + r.standard_normal(
                (e - s, IN_DIM), dtype=np.float32
            )
        out.flush()
        del out
        tmp.rename(path)
    r = np.random.default_rng(3)
    gen = centres[r.integers(0, clusters, n_gen)] + r.standard_normal((n_gen, IN_DIM), np.float32)
    return np.load(path, mmap_mode="r"), gen.astype(np.float32)


def main() -> None:
    from _common import at_least

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=at_least(1), default=3_000_000)
    ap.add_argument("--n-gen", type=at_least(1), default=5_000)
    ap.add_argument("--k", type=at_least(1), default=50)
    ap.add_argument("--clusters", type=at_least(1), default=1000)
    ap.add_argument("--brute-samples", type=at_least(1), default=20)
    ap.add_argument("--threads", type=at_least(1), default=2)
    ap.add_argument("--dir", default="/tmp/gmv-ooc")
    ap.add_argument("--shard-rows", type=at_least(1), default=1 << 20)
    ap.add_argument("--keep", action="store_true", help="keep the store from a previous run")
    args = ap.parse_args()

    from datacredit import GMValuator

    root = Path(args.dir)
    root.mkdir(parents=True, exist_ok=True)
    store = root / f"store-{args.n}"
    if store.exists() and not args.keep:
        shutil.rmtree(store)
    t0 = time.perf_counter()
    inputs, gen = make_inputs(root / f"inputs-{args.n}.npy", args.n, args.n_gen, args.clusters)
    print(
        f"inputs: {args.n} x {IN_DIM} (memory-mapped), {args.n_gen} generated, encoder "
        f"-> d=128, k={args.k}, threads={args.threads} [{time.perf_counter() - t0:.1f} s]"
    )
    base = rss_anon()
    print(f"anonymous memory before fit: {base / 2**20:.0f} MB")
    gmv = GMValuator(encoder=Projection(), k=args.k, n_threads=args.threads, batch_size=8192)
    with PeakAnon() as m_fit:
        t0 = time.perf_counter()
        gmv.fit(inputs, store=store, shard_rows=args.shard_rows)
        t_fit = time.perf_counter() - t0
    # value(): the training shards searched by a thread pool of --threads workers (each
    # shard search is single-threaded small GEMMs; the pool is how it uses the cores).
    with PeakAnon() as m_val, cf.ThreadPoolExecutor(args.threads) as pool:
        t0, c0 = time.perf_counter(), time.process_time()
        res = gmv.value(gen, executor=pool)
        t_value, c_value = time.perf_counter() - t0, time.process_time() - c0
    diag = res.diagnostics
    print(
        f"fit(store=...): {t_fit:.1f} s (embed {diag['embed_train_s']:.1f} s, index "
        f"{diag['build_index_s']:.1f} s; {diag['n_shards']} shards, index={gmv.index_}, "
        f"nlist={diag['pq_nlist']}, nprobe={diag['pq_nprobe']})"
    )
    print(
        f"value(): {t_value:.1f} s (recall {diag['recall_s']:.1f} s, re-rank+values "
        f"{diag['rerank_and_values_s']:.1f} s, diagnostics incl.)"
    )
    if "calibration_queries" in diag:
        print(
            f"recall calibration: target {diag['target_recall']}, "
            f"{diag['calibration_queries']} calibration queries, recall@{args.k} "
            f"{diag['calibration_recall_at_k']:.4f} at nprobe {diag.get('calibrated_nprobe')}"
            f" ({diag['calibration_s']:.1f} s); auto fallback: {diag.get('auto_fallback')}"
        )
    print(f"peak RssAnon during fit:   {m_fit.peak / 2**20:7.0f} MB")
    print(f"peak RssAnon during value: {m_val.peak / 2**20:7.0f} MB")
    print(
        f"recall@{args.k} vs exact ({diag['diagnostics_rows']} samples): recall stage "
        f"{diag['recall_stage_recall_at_k']:.4f}, final {diag['final_recall_at_k']:.4f}"
    )
    again = GMValuator(encoder=Projection(), k=args.k, n_threads=args.threads, batch_size=8192)
    t0 = time.perf_counter()
    again.fit(inputs, store=store, shard_rows=args.shard_rows)
    print(f"fit() again on the complete store (encoding skipped): {time.perf_counter() - t0:.1f} s")
    del again

    nb = args.brute_samples
    emb_all = np.lib.format.open_memmap(
        root / "emb-tmp.npy", mode="w+", dtype=np.float32, shape=(args.n, 128)
    )
    for s in range(gmv._store.store.n_shards):
        b, e = gmv._store.store.rows(s)
        emb_all[b:e] = gmv._store.shard(s)
    gen_emb = Projection()(gen)
    t0, c0 = time.perf_counter(), time.process_time()
    _, btop = brute_force_values(emb_all, gen_emb[:nb], args.k)
    t_b, c_b = time.perf_counter() - t0, time.process_time() - c0
    t_scaled, c_scaled = t_b * args.n_gen / nb, c_b * args.n_gen / nb
    agree = np.mean(
        [len(np.intersect1d(a, b)) / args.k for a, b in zip(btop, res.topk_indices[:nb])]
    )
    del emb_all
    (root / "emb-tmp.npy").unlink()
    print(
        f"brute-force loop: {t_b:.1f} s for {nb} samples -> {t_scaled:.0f} s scaled to "
        f"{args.n_gen} (measured on a subset and scaled linearly)"
    )
    print(f"top-{args.k} agreement with the brute force on those {nb}: {agree:.4f}")
    print(f"speed-up value() vs brute force (wall time): {t_scaled / t_value:.1f}x")
    # CPU seconds of the whole process (all threads): the work done, robust to other jobs
    # taking the cores at one moment and not the other on a shared machine.
    print(
        f"CPU time: value() {c_value:.1f} s, brute force {c_b:.1f} s for {nb} -> "
        f"{c_scaled:.0f} s scaled; ratio {c_scaled / c_value:.1f}x"
    )


if __name__ == "__main__":
    main()
