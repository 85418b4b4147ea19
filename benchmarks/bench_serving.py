"""Serving latency of a DualDA explainer: in-process (C API) and over loopback HTTP.

A synthetic explainer (10,000 support vectors of 20,000 training samples, d = 512, 10
classes), top k = 10, one query at a time and batches of 64, on ONE core
(``dc_set_num_threads(1)``; the peers pinned to one thread too).  Rows, side by side in one
process:

- ``C API``: ``dc_dualda_topk`` through ctypes (libdatacredit.so; the ctypes call adds ~2 us);
- ``numpy peer``: ``f @ F.T`` (float32, BLAS) times lambda, ``argpartition`` + sort: the
  obvious implementation with the same BLAS thread count;
- ``python explainer``: :meth:`DualDAExplainer.topk` (the fused Gram kernel from Python);
- ``HTTP python`` / ``HTTP C++``: ``POST /explain`` over one kept-alive loopback
  connection to ``datacredit serve`` (in a thread of this process) and to
  ``datacredit_serve`` (a subprocess), JSON both ways.

Prints wall-clock p50 / p99 and CPU-time p50 / p99 (of the calling thread) in milliseconds,
and the HTTP overhead (HTTP p50 - C API p50).

    flock /tmp/bench.lock python benchmarks/bench_serving.py [--lib build/dev/libdatacredit.so]
        [--server build/dev/datacredit_serve] [--reps 300]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # the peers on one core, as the C API
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import ctypes  # noqa: E402
import http.client  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from datacredit.dualda.explainer import DualDAExplainer, write_explainer  # noqa: E402
from datacredit.serve import make_server  # noqa: E402


def make_explainer(path: Path, n_sv: int, n_train: int, d: int, n_classes: int) -> None:
    rng = np.random.default_rng(0)
    feats = np.maximum(rng.normal(size=(n_sv, d)), 0).astype(np.float32)  # ReLU-like
    labels = rng.integers(0, n_classes, n_sv)
    lam = np.zeros((n_sv, n_classes))
    lam[np.arange(n_sv), labels] = rng.uniform(0, 1e-3, n_sv)
    other = (labels + rng.integers(1, n_classes, n_sv)) % n_classes
    lam[np.arange(n_sv), other] = -lam[np.arange(n_sv), labels]
    support = np.sort(rng.choice(n_train, n_sv, replace=False))
    coef = lam.T @ feats.astype(np.float64)
    write_explainer(
        path,
        features=feats,
        dual_coef=lam.astype(np.float32),
        coef=coef,
        bias=lam.sum(0),
        support=support,
        labels=labels,
        n_train=n_train,
    )


def percentiles(fn, reps: int) -> tuple[float, float, float, float]:
    """Wall-clock p50, p99 and this thread's CPU-time p50, p99 (ms) of ``fn()``.

    The CPU time leaves out the time the thread waited for a core, which dominates the wall
    p99 on a shared, overloaded machine; for the HTTP rows it covers only the client side.
    """
    for _ in range(min(20, reps)):
        fn()
    wall = np.empty(reps)
    cpu = np.empty(reps)
    for r in range(reps):
        t0, c0 = time.perf_counter(), time.thread_time()
        fn()
        wall[r], cpu[r] = time.perf_counter() - t0, time.thread_time() - c0
    return tuple(float(np.percentile(a, p) * 1e3) for a in (wall, cpu) for p in (50, 99))


def bench_batch(lib, h, ex, conns, rng, n: int, k: int, dim: int, reps: int) -> list[tuple]:
    """p50/p99 of every row for one batch size ``n``."""
    rows = []
    q = np.maximum(rng.normal(size=(n, dim)), 0).astype(np.float32)
    v = np.zeros((n, k), np.float32)
    i = np.zeros((n, k), np.int64)
    qp, vp, ip = (a.ctypes.data_as(ctypes.c_void_p) for a in (q, v, i))

    def c_api():
        rc = lib.dc_dualda_topk(
            h,
            qp,
            ctypes.c_int64(n),
            ctypes.c_int64(dim),
            None,
            ctypes.c_int64(k),
            vp,
            ip,
        )
        assert rc == 0

    cls = ex.predict(q)

    def numpy_peer():
        s = (q @ ex.features.T) * ex.dual_coef[:, cls].T
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(s, part, 1), axis=1, kind="stable")
        return ex.support[np.take_along_axis(part, order, 1)]

    c_api()
    pv, pi = ex.topk(q, k)
    assert (i == pi).all(), "C API and Python disagree"
    assert (numpy_peer() == pi).all(), "numpy peer disagrees"
    body = json.dumps({"features": q.tolist(), "k": k}).encode()  # bytes: one send with headers
    results = {
        "C API": percentiles(c_api, reps),
        "numpy peer": percentiles(numpy_peer, reps),
        "python explainer": percentiles(lambda: ex.topk(q, k), reps),
    }
    for name, port in conns.items():
        conn = http.client.HTTPConnection("127.0.0.1", port)  # fresh: idle ones time out

        def over_http(conn=conn):
            conn.request("POST", "/explain", body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            out = json.loads(resp.read())
            assert resp.status == 200 and out["indices"] == pi.tolist()

        results[name] = percentiles(over_http, max(50, reps // 3))
    for name, (p50, p99, c50, c99) in results.items():
        rows.append((n, name, p50, p99, c50, c99, p50 - results["C API"][0]))
    return rows


def main() -> None:
    from _common import at_least

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lib", default="build/dev/libdatacredit.so")
    ap.add_argument("--server", default="build/dev/datacredit_serve")
    ap.add_argument("--reps", type=at_least(1), default=300)
    ap.add_argument("--n-sv", type=at_least(1), default=10_000)
    ap.add_argument("--dim", type=at_least(1), default=512)
    ap.add_argument("--k", type=at_least(1), default=10)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    path = tmp / "explainer.safetensors"
    make_explainer(path, args.n_sv, 2 * args.n_sv, args.dim, 10)
    ex = DualDAExplainer(path, n_threads=1)
    lib = ctypes.CDLL(str(Path(args.lib).resolve()))
    assert lib.dc_set_num_threads(1) == 0
    h = ctypes.c_void_p()
    assert lib.dc_dualda_load(str(path).encode(), ctypes.byref(h)) == 0
    rng = np.random.default_rng(1)
    k = args.k
    rows = []
    proc = None
    srv = make_server(path, "127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    conns = {"HTTP python": srv.server_address[1]}
    if Path(args.server).exists():
        proc = subprocess.Popen(
            [args.server, str(path), "--port", "0", "--threads", "1"],
            stdout=subprocess.PIPE,
            text=True,
        )
        port = int(proc.stdout.readline().rsplit(":", 1)[1])
        conns["HTTP C++"] = port
    try:
        for n in (1, 64):
            rows += bench_batch(lib, h, ex, conns, rng, n, k, args.dim, args.reps)
    finally:
        lib.dc_dualda_free(h)
        srv.shutdown()
        if proc is not None:
            proc.terminate()
            proc.wait()
    print(
        f"explainer: {args.n_sv} support vectors x d={args.dim}, k={k}, one thread; "
        f"{path.stat().st_size / 2**20:.1f} MiB file"
    )
    print(
        f"{'batch':>5}  {'row':<18} {'p50 ms':>8} {'p99 ms':>8} {'cpu p50':>8} {'cpu p99':>8} "
        f"{'p50 - C API':>12}"
    )
    for n, name, p50, p99, c50, c99, over in rows:
        extra = f"{over:12.3f}" if name.startswith("HTTP") else ""
        print(f"{n:>5}  {name:<18} {p50:8.3f} {p99:8.3f} {c50:8.3f} {c99:8.3f} {extra}")
    print(
        f"max RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
    )


if __name__ == "__main__":
    main()
