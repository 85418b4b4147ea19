"""DualDA at scale: the Crammer–Singer fit on memory-mapped features, K up to 1,000.

Each fit runs in its own child process on features memory-mapped from disk; the child
samples its anonymous memory (``RssAnon`` of ``/proc/self/status``, i.e. everything but the
page cache of the feature file) every 20 ms and reports the peak, the fit time, the duality
gap and ``nnz(lambda)``.  ``--dense-python`` names a Python whose ``datacredit`` is the dense
solver (e.g. the installed copy of ``main`` before issue 25) to run beside it; the same
features file and settings are used.

Explanations: top-k proponents per test sample at K classes, from the sparse dual (the
predicted class's column only) beside the dense ``gram_topk`` over every support vector
with its ``(n_sv, K)`` weights.

    nice python benchmarks/bench_dualda_scale.py --n 100000,200000 --d 512 --k 1000 --C 1e-3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

# Anonymous memory of the child process (RssAnon: everything but file-backed pages, so the
# page cache of a memory-mapped feature file does not count); both child scripts start here.
RSS_ANON = r"""
import json, sys, threading, time
import numpy as np

def rss_anon():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0

"""

CHILD = (
    RSS_ANON
    + r"""
peak = [rss_anon()]
stop = threading.Event()
def sample():
    while not stop.is_set():
        peak[0] = max(peak[0], rss_anon())
        time.sleep(0.02)

path, n, d, C, tol, threads, max_iter = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
from datacredit.kernels import crammer_singer_fit
x = np.memmap(path + ".x", np.float32, "r", shape=(n, d))
y = np.fromfile(path + ".y", np.int64, count=n)
base = rss_anon()
t = threading.Thread(target=sample, daemon=True); t.start()
start = time.perf_counter()
cpu0 = time.process_time()
import warnings
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # a max_iter-limited run is not expected to converge
    res = crammer_singer_fit(x, y, C, tol=tol, max_iter=max_iter, n_threads=threads)
seconds = time.perf_counter() - start
cpu_s = time.process_time() - cpu0
stop.set(); t.join()
peak[0] = max(peak[0], rss_anon())
dual = getattr(res, "dual", None)
out = dict(seconds=seconds, cpu_s=cpu_s, peak_anon=peak[0], base_anon=base, n_iter=res.n_iter,
           converged=res.converged, gap=res.relative_duality_gap,
           primal=res.primal_objective, n_support=int(res.support.size),
           nnz=None if dual is None else dual.nnz,
           peak_nnz=getattr(res, "peak_nnz", None))
print("RESULT " + json.dumps(out))
"""
)


def write_features(path: Path, n: int, d: int, k: int, seed: int = 0, chunk: int = 20000) -> None:
    """ReLU-like features as in bench_crammer_singer.py, written chunk by chunk to disk."""
    if path.with_suffix(".x").exists() and path.with_suffix(".y").exists():
        if path.with_suffix(".x").stat().st_size == n * d * 4:
            return
    rng = np.random.default_rng(seed)
    means = rng.normal(0.0, 1.0, (k, d)).astype(np.float32)
    y = rng.integers(0, k, n).astype(np.int64)
    x = np.memmap(path.with_suffix(".x"), np.float32, "w+", shape=(n, d))
    for b in range(0, n, chunk):
        e = min(n, b + chunk)
        block = np.maximum(0.6 * means[y[b:e]] + rng.normal(0.0, 1.0, (e - b, d)), 0.0)
        x[b:e] = block * (10.0 / np.sqrt((block**2).sum(1).mean()))
    x.flush()
    del x
    y.tofile(path.with_suffix(".y"))


def run_child(
    python: str, env: dict, path: Path, n: int, d: int, c: float, tol: float, t: int, it: int
):
    proc = subprocess.run(
        [python, "-c", CHILD, str(path), str(n), str(d), str(c), str(tol), str(t), str(it)],
        capture_output=True,
        text=True,
        env=env,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return {"error": proc.stderr.strip().splitlines()[-1:] or ["no output"]}


STREAM_CHILD = (
    RSS_ANON
    + r"""
import torch

n, cache = int(sys.argv[1]), sys.argv[2]

class Lazy(torch.utils.data.Dataset):
    # item i made from i on access: nothing of the data is held in memory
    def __init__(self, n):
        self.n = n
        self.centers = torch.randn(10, 16, generator=torch.Generator().manual_seed(0)) * 2
    def __len__(self):
        return self.n
    def __getitem__(self, i):
        y = i % 10
        noise = torch.from_numpy(np.random.default_rng(i).standard_normal(16).astype(np.float32))
        return self.centers[y] + noise, y

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10)).eval()
from datacredit import DualDA
base = rss_anon()
peak = [base]
stop = threading.Event()
def sample():
    while not stop.is_set():
        peak[0] = max(peak[0], rss_anon())
        time.sleep(0.02)
t = threading.Thread(target=sample, daemon=True); t.start()
start = time.perf_counter()
dd = DualDA(model, Lazy(n), layer="2", C=1e-3, batch_size=4096, cache_dir=cache, progress=False,
            tol=1e-3, n_threads=1).fit()
seconds = time.perf_counter() - start
stop.set(); t.join()
print("RESULT " + json.dumps(dict(n=n, seconds=seconds, base_anon=base, peak_anon=peak[0],
      n_support=int(dd.n_support), gap=dd.stats["relative_duality_gap"],
      features_bytes=n * 32 * 4)))
"""
)


def stream_dataset(n: int, root: Path, threads: int) -> dict:
    """``DualDA(model, Dataset of n lazy items, cache_dir=...).fit()`` in a child process:
    wall time and peak anonymous memory while the items stream to disk and the fit runs
    (features d = 32, K = 10; the items are made from their index on access)."""
    import shutil

    cache = root / f"stream-{n}"
    shutil.rmtree(cache, ignore_errors=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    proc = subprocess.run(
        [sys.executable, "-c", STREAM_CHILD, str(n), str(cache)],
        capture_output=True,
        text=True,
        env=env,
    )
    shutil.rmtree(cache, ignore_errors=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return {"error": proc.stderr.strip().splitlines()[-3:] or ["no output"]}


def explain_timing(n: int, d: int, k: int, n_test: int, c: float, top: int, seed: int = 0):
    """ms per test sample at N = n, K = k: the sparse dual's class column
    (:func:`datacredit.dualda.sparse_attribution.column_topk`) beside the dense path
    (``gram_topk`` over all ``n`` rows with ``(n, K)`` float32 weights, as before issue 25).
    The dual is Crammer–Singer shaped: the true class plus 1-3 negative classes per row."""
    from datacredit.dualda.sparse_attribution import column_topk
    from datacredit.kernels import gram_topk
    from datacredit.kernels.sparse_dual import SparseDual

    rng = np.random.default_rng(seed)
    feats = np.abs(rng.normal(size=(n, d))).astype(np.float32)
    labels = rng.integers(0, k, n)
    per = rng.integers(1, 4, n)
    others = rng.integers(0, k, (n, 3))
    cls = np.concatenate([labels[:, None], others], 1)
    vals = np.concatenate([np.full((n, 1), c), -rng.uniform(0, c, (n, 3))], 1)
    keep = np.concatenate([np.ones((n, 1), bool), np.arange(3)[None, :] < per[:, None]], 1)
    keep[:, 1:] &= others != labels[:, None]
    dense = np.zeros((n, k), np.float32)
    r = np.repeat(np.arange(n), keep.sum(1))
    dense[r, cls[keep]] = vals[keep]
    dual = SparseDual.from_dense(dense)
    q = np.abs(rng.normal(size=(n_test, d))).astype(np.float32)
    t = rng.integers(0, k, n_test)
    start = time.perf_counter()
    columns = dual.columns()
    build = time.perf_counter() - start
    key_index = np.arange(n, dtype=np.int64)
    start = time.perf_counter()
    sv, si = column_topk(q, feats, columns, t, top, key_index, n, largest=True)
    sparse_ms = (time.perf_counter() - start) / n_test * 1e3
    start = time.perf_counter()
    dv, di = gram_topk(q, feats, top, weights=dense, classes=t, largest=True)
    dense_ms = (time.perf_counter() - start) / n_test * 1e3
    return {
        "n_test": n_test,
        "top_k": top,
        "nnz": dual.nnz,
        "column_index_build_s": build,
        "sparse_ms_per_test": sparse_ms,
        "dense_ms_per_test": dense_ms,
        "speedup": dense_ms / sparse_ms,
        "dense_weights_MB": dense.nbytes / 2**20,
        "sparse_dual_MB": dual.nbytes / 2**20,
        "same_indices": bool(np.array_equal(si, di)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=str, default="100000,200000")
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--C", type=float, default=1e-3)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dir", type=str, default=".bench-cache/dualda_scale")
    ap.add_argument("--dense-python", type=str, default=None)
    ap.add_argument("--dense-n", type=str, default="", help="sizes to run the dense solver at")
    ap.add_argument("--explain-n", type=int, default=0, help="explanation timing at this N")
    ap.add_argument("--explain-queries", type=int, default=2000)
    ap.add_argument("--max-iter", type=int, default=100000, help="epochs (a partial run: 1-2)")
    ap.add_argument("--skip-fit", action="store_true")
    ap.add_argument(
        "--stream-n", type=int, default=0, help="stream a lazy torch Dataset of this many items"
    )
    args = ap.parse_args()
    root = Path(args.dir)
    root.mkdir(parents=True, exist_ok=True)
    sizes = [int(v) for v in args.n.split(",") if v]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    print(f"# K={args.k} d={args.d} C={args.C:g} tol={args.tol:g} threads={args.threads}")
    print("# machine: shared 2-core box (other agents running), figures are indicative")
    for n in [] if args.skip_fit else sizes:
        path = root / f"relu_n{n}_d{args.d}_k{args.k}"
        write_features(path, n, args.d, args.k)
        r = run_child(
            sys.executable, env, path, n, args.d, args.C, args.tol, args.threads, args.max_iter
        )
        print(f"sparse n={n}: {json.dumps(r)}", flush=True)
        if args.dense_python and str(n) in args.dense_n.split(","):
            denv = {k: v for k, v in env.items() if k != "PYTHONPATH"}
            r = run_child(
                args.dense_python,
                denv,
                path,
                n,
                args.d,
                args.C,
                args.tol,
                args.threads,
                args.max_iter,
            )
            print(f"dense  n={n}: {json.dumps(r)}", flush=True)
    if args.stream_n:
        r = stream_dataset(args.stream_n, root, args.threads)
        print(f"stream n={args.stream_n}: {json.dumps(r)}", flush=True)
    if args.explain_n:
        r = explain_timing(args.explain_n, args.d, args.k, args.explain_queries, args.C, 10)
        print(f"explain n={args.explain_n} K={args.k}: {json.dumps(r)}", flush=True)


if __name__ == "__main__":
    main()
