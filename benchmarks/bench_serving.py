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

Load test (``--load``, issue 26; CI runs ``--load-only`` on a small explainer): ``--clients``
concurrent clients (50) x ``--requests`` requests each (200), one kept-alive connection per
client with every 10th request on a fresh connection (so accept() bursts too), against each
server. Every answer is checked against :meth:`DualDAExplainer.topk` in this process.
Prints resets / other connection errors, non-200 answers, wrong answers, wall p50 / p99 per
request and the throughput, beside the in-process call's p50 / p99; exits 1 unless resets,
errors and wrong answers are all 0.

    flock /tmp/bench.lock python benchmarks/bench_serving.py [--lib build/dev/libdatacredit.so]
        [--server build/dev/datacredit_serve] [--reps 300] [--load | --load-only]
        [--clients 50] [--requests 200]
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


def load_test(
    ex: DualDAExplainer, port: int, clients: int, requests: int, k: int, seed: int = 2
) -> dict:
    """``clients`` threads x ``requests`` POST /explain each; counts and latencies."""
    rng = np.random.default_rng(seed)
    queries = np.maximum(rng.normal(size=(64, 1, ex.dim)), 0).astype(np.float32)
    bodies = [json.dumps({"features": q.tolist(), "k": k}).encode() for q in queries]
    want = [ex.topk(q, k)[1].tolist() for q in queries]
    lock = threading.Lock()
    stats = {"resets": 0, "conn_errors": 0, "non_200": 0, "wrong": 0, "ok": 0}
    lat: list[float] = []
    start = threading.Barrier(clients)

    def client(c: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine = []
        start.wait()
        for r in range(requests):
            j = (c * requests + r) % len(bodies)
            if r % 10 == 9:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/explain", bodies[j], {"Content-Type": "application/json"})
                resp = conn.getresponse()
                payload = resp.read()
            except ConnectionResetError:
                with lock:
                    stats["resets"] += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                continue
            except (OSError, http.client.HTTPException):
                with lock:
                    stats["conn_errors"] += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                continue
            mine.append(time.perf_counter() - t0)
            key = "ok"
            if resp.status != 200:
                key = "non_200"
            elif json.loads(payload)["indices"] != want[j]:
                key = "wrong"
            with lock:
                stats[key] += 1
        conn.close()
        with lock:
            lat.extend(mine)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    a = np.asarray(lat) * 1e3
    stats.update(
        p50=float(np.percentile(a, 50)) if a.size else float("nan"),
        p99=float(np.percentile(a, 99)) if a.size else float("nan"),
        rps=len(lat) / wall,
    )
    q = queries[0]
    stats["inproc_p50"], stats["inproc_p99"] = percentiles(lambda: ex.topk(q, k), 300)[:2]
    return stats


def run_load(ex: DualDAExplainer, conns: dict, clients: int, requests: int, k: int) -> bool:
    """Print the load test of every server; ``True`` when all answered everything right."""
    print(
        f"load test: {clients} concurrent clients x {requests} requests (1 row, k={k}) per "
        "server; every 10th request on a fresh connection"
    )
    print(
        f"{'server':<12} {'resets':>6} {'errors':>6} {'non200':>6} {'wrong':>6} {'ok':>6} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} {'in-process p50':>15} {'p99':>8}"
    )
    good = True
    for name, port in conns.items():
        st = load_test(ex, port, clients, requests, k)
        print(
            f"{name:<12} {st['resets']:>6} {st['conn_errors']:>6} {st['non_200']:>6} "
            f"{st['wrong']:>6} {st['ok']:>6} {st['p50']:8.3f} {st['p99']:8.3f} "
            f"{st['rps']:8.0f} {st['inproc_p50']:15.3f} {st['inproc_p99']:8.3f}"
        )
        good &= st["ok"] == clients * requests
    return good


def main() -> None:
    from _common import at_least

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lib", default="build/dev/libdatacredit.so")
    ap.add_argument("--server", default="build/dev/datacredit_serve")
    ap.add_argument("--reps", type=at_least(1), default=300)
    ap.add_argument("--n-sv", type=at_least(1), default=10_000)
    ap.add_argument("--dim", type=at_least(1), default=512)
    ap.add_argument("--k", type=at_least(1), default=10)
    ap.add_argument("--load", action="store_true", help="also run the load test")
    ap.add_argument("--load-only", action="store_true", help="only the load test")
    ap.add_argument("--clients", type=at_least(1), default=50)
    ap.add_argument("--requests", type=at_least(1), default=200)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    path = tmp / "explainer.safetensors"
    make_explainer(path, args.n_sv, 2 * args.n_sv, args.dim, 10)
    ex = DualDAExplainer(path, n_threads=1)
    lib = h = None
    if not args.load_only:
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
    good = True
    try:
        if not args.load_only:
            for n in (1, 64):
                rows += bench_batch(lib, h, ex, conns, rng, n, k, args.dim, args.reps)
        if args.load or args.load_only:
            good = run_load(ex, conns, args.clients, args.requests, k)
    finally:
        if lib is not None:
            lib.dc_dualda_free(h)
        srv.shutdown()
        if proc is not None:
            proc.terminate()
            proc.wait()
    if args.load_only:
        raise SystemExit(0 if good else 1)
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
    if not good:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
