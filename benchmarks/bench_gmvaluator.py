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

``--baselines``: the reference implementations side by side on one labelled data set
(clustered embeddings, the cluster is the class; default 200,000 x 128, 2,000 generated):
the faiss IVF-PQ configuration of the GMValuator-System demo (``IndexIVFPQ``, 256 lists,
8 sub-vectors of 8 bits, 1 probe, top-4, no re-rank), brute force (exact float64 numpy
distances, as the SurrogateSHAP authors' GMValuator baseline, top-50), and datacredit at
its defaults (k=50) and at the demo's k=4: time of index build + search, recall@k against
exact search, and the identical-class ratio C1 of the top-k.

    python benchmarks/bench_gmvaluator.py --baselines [--n 200000 --n-gen 2000 --d 128]

``--ivf``: the inverted file against faiss side by side in one process (issue 24), on
clustered embeddings (600,000 x 64 around 3,000 centres, 2,000 generated, k=20) and on
unstructured ones (isotropic Gaussian, same size): GMValuator ``index="ivf"`` at its
calibrated nprobe (target_recall=0.95), GMValuator ``index="exact"``, faiss
``IndexIVFFlat`` at the same nlist / nprobe, faiss ``IndexFlatL2``; the time of
``value`` (ours: calibration, search, float64 re-rank and values; the first call of a fit
calibrates, later ones reuse it: both are timed) and of the search alone, each with its
recall@k against exact search on all generated samples.

    python benchmarks/bench_gmvaluator.py --ivf [--n 600000 --n-gen 2000 --d 64 --k 20]

``--row-cost``: the cost of a row scanned by the inverted-file kernel relative to a row of
exact search (the ``IVF_ROW_COST`` of ``index="auto"``'s fallback rule), on isotropic
Gaussian and clustered embeddings (200,000 x 64, 2,000 generated, k=20, nlist = sqrt(N)):
per nprobe, the coarse ranking plus ``ivf_flat_search`` (top k) against ``gram_topk``
top-k and top-200 (what the exact fallback runs at the default ``recall``), timed
alternately (best of 3) so that a change of the machine's load hits both alike.

    python benchmarks/bench_gmvaluator.py --row-cost [--n 200000 --n-gen 2000 --d 64]
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PeakRSS, best_time  # noqa: E402
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


def _labelled(n: int, n_gen: int, d: int, n_clusters: int, spread: float, seed: int = 1):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, d)).astype(np.float32)
    lab = rng.integers(0, n_clusters, n + n_gen)
    x = centres[lab] + spread * rng.standard_normal((n + n_gen, d), dtype=np.float32)
    return x[:n], lab[:n], x[n:], lab[n:]


def _exact_topk(train: np.ndarray, gen: np.ndarray, k: int, chunk: int = 256) -> np.ndarray:
    """Brute force: float64 numpy squared distances (expanded, centred), stable top k."""
    mean = train.mean(0, dtype=np.float64)
    t = train.astype(np.float64) - mean
    tn = (t * t).sum(1)
    out = np.empty((len(gen), k), np.int64)
    for s in range(0, len(gen), chunk):
        g = gen[s : s + chunk].astype(np.float64) - mean
        d = tn[None] - 2 * g @ t.T
        part = np.argpartition(d, k, axis=1)[:, :k]
        order = np.lexsort((part, np.take_along_axis(d, part, 1)), axis=-1)
        out[s : s + chunk] = np.take_along_axis(part, order, 1)
    return out


def baselines(args: argparse.Namespace) -> None:
    import faiss

    from datacredit import GMValuator

    faiss.omp_set_num_threads(args.threads)
    train, y, gen, gy = _labelled(args.n, args.n_gen, args.d, args.clusters, args.spread)
    print(
        f"data: {args.n} training x {args.n_gen} generated, d={args.d}, "
        f"{args.clusters} labelled clusters (noise std {args.spread}), threads={args.threads}"
    )
    truth = {}
    rows = []
    for k in (4, 50):
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            truth[k] = _exact_topk(train, gen, k)
        t = time.perf_counter() - t0
        rows.append((f"brute force, float64 numpy, top-{k}", k, 0.0, t, mem, truth[k]))
    # The GMValuator-System demo: IndexIVFPQ(256 lists, m=8, 8 bits), nprobe=1, top-4.
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        quant = faiss.IndexFlatL2(args.d)
        ivfpq = faiss.IndexIVFPQ(quant, args.d, 256, 8, 8)
        ivfpq.train(train)
        ivfpq.add(train)
        ivfpq.nprobe = 1
        t1 = time.perf_counter()
        _, idx = ivfpq.search(gen, 4)
    rows.append(
        (
            "faiss IVF-PQ (demo: 256 lists, m=8, 8 bits, 1 probe), top-4",
            4,
            t1 - t0,
            time.perf_counter() - t1,
            mem,
            idx,
        )
    )
    for k in (50, 4):
        gmv = GMValuator(k=k, recall=max(200, k), n_threads=args.threads, diagnostics_sample=0)
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            gmv.fit(train)
            t1 = time.perf_counter()
            res = gmv.value(gen)
        rows.append(
            (
                f"datacredit defaults (index={gmv.index_}, rerank=l2), top-{k}",
                k,
                t1 - t0,
                time.perf_counter() - t1,
                mem,
                res.topk_indices,
            )
        )
    print()
    print("| method | k | build (s) | search+values (s) | peak RSS growth (MB) | recall@k | C1 |")
    print("|---|---|---|---|---|---|---|")
    for name, k, t_build, t_search, mem, top in rows:
        rec = np.mean([len(np.intersect1d(a[a >= 0], b)) / k for a, b in zip(top, truth[k])])
        # padded slots (-1, a probed list shorter than k) count as misses
        c1 = float(np.mean((top >= 0) & (y[np.maximum(top, 0)] == gy[:, None])))
        print(
            f"| {name} | {k} | {t_build:.2f} | {t_search:.2f} | "
            f"{(mem.peak - mem.start) / 2**20:.0f} | {rec:.4f} | {c1:.4f} |"
        )


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(np.intersect1d(f[:k], t)) / k for f, t in zip(found, truth)]))


def ivf_versus_faiss(args: argparse.Namespace) -> None:
    """Our IVF / our exact / faiss IVFFlat / faiss Flat at equal nlist and nprobe."""
    import faiss

    from datacredit import GMValuator
    from datacredit.kernels import gram_topk

    faiss.omp_set_num_threads(args.threads)
    for name in ("clustered", "unstructured"):
        _ivf_case(name, args, faiss, GMValuator, gram_topk)


def ivf_row_cost(args: argparse.Namespace) -> None:
    """Cost per scanned row of the IVF kernel / cost per row of exact search, per nprobe."""
    for name in ("unstructured", "clustered"):
        _row_cost_case(name, args)


def _row_cost_case(name: str, args: argparse.Namespace) -> None:
    from datacredit.kernels import build_inverted_lists, gram_topk, ivf_flat_search, kmeans

    t, k = args.threads, args.k
    if name == "clustered":
        data = clustered(args.n + args.n_gen, args.d, args.clusters, 1.0, seed=1)
    else:
        rng = np.random.default_rng(1)
        data = rng.standard_normal((args.n + args.n_gen, args.d), dtype=np.float32)
    emb, gen = data[: args.n], data[args.n :]
    nlist = args.nlist or int(round(np.sqrt(args.n)))
    coarse = kmeans(emb, nlist, seed=0)
    lists = gram_topk(emb, coarse, 1, metric="l2", largest=False, n_threads=t)[1][:, 0]
    inverted = build_inverted_lists(emb, lists, nlist)
    sizes = np.bincount(lists, minlength=nlist).astype(np.float64)
    _, ranking = gram_topk(gen, coarse, nlist, metric="l2", largest=False, n_threads=t)
    truth = gram_topk(gen, emb, k, metric="l2", largest=False, n_threads=t)[1]
    print(f"\n{name}: {args.n} x {args.d}, {args.n_gen} queries, k={k}, nlist={nlist}")
    print("nprobe  scanned  recall   ivf s  exact top-k s  exact top-200 s  cost/row (k)  (200)")

    def exact(r: int):
        return gram_topk(gen, emb, r, metric="l2", largest=False, n_threads=t)

    def ivf(nprobe: int):
        _, probes = gram_topk(gen, coarse, nprobe, metric="l2", largest=False, n_threads=t)
        return ivf_flat_search(gen, inverted, probes, k, n_threads=t)

    for nprobe in (nlist // 16, nlist // 4, nlist // 2, 3 * nlist // 4):
        runs = (lambda: ivf(nprobe), lambda: exact(k), lambda: exact(200))  # noqa: B023
        times = np.array([[best_time(f, 1)[0] for f in runs] for _ in range(3)]).min(0)
        frac = (nlist + sizes[ranking[:, :nprobe]].sum(1).mean()) / args.n
        rec = _recall(ivf(nprobe)[1], truth)
        cost = times[0] / (frac * times[1:])
        print(
            f"{nprobe:6d}  {frac:7.3f}  {rec:6.3f}  {times[0]:6.3f}  {times[1]:13.3f}  "
            f"{times[2]:15.3f}  {cost[0]:12.2f}  {cost[1]:5.2f}"
        )


def _forget_calibration(gmv):
    """``gmv`` with its calibration forgotten: its next ``value`` call calibrates."""
    gmv._calibration_memo = None
    return gmv


def _ivf_case(name: str, args: argparse.Namespace, faiss, GMValuator, gram_topk) -> None:
    """One data set: ours IVF / ours exact / faiss IVFFlat / faiss Flat."""
    rng = np.random.default_rng(3)
    if name == "clustered":
        data = clustered(args.n + args.n_gen, args.d, args.clusters, args.spread, seed=1)
    else:
        data = rng.standard_normal((args.n + args.n_gen, args.d), dtype=np.float32)
    train, gen = data[: args.n], data[args.n :]
    truth = gram_topk(gen, train, args.k, metric="l2", largest=False)[1]
    print(
        f"\n{name}: {args.n} x {args.d}, {args.n_gen} generated, k={args.k}, threads={args.threads}"
    )
    kw = dict(k=args.k, n_threads=args.threads, diagnostics_sample=0)
    exact = GMValuator(index="exact", **kw).fit(train)
    t_exact, res_e = best_time(lambda: exact.value(gen), 2)
    ivf = GMValuator(index="ivf", pq_nlist=args.nlist, **kw).fit(train)
    # The first value call of a fit calibrates; later calls reuse its setting.  Forgetting
    # the calibration makes the next call a first one again (best of 2 without refitting).
    t_first, res_first = best_time(lambda: _forget_calibration(ivf).value(gen), 2)
    t_ivf, res_i = best_time(lambda: ivf.value(gen), 2)
    assert res_i.diagnostics["calibration_reused"]
    nlist, nprobe = res_i.diagnostics["pq_nlist"], res_i.diagnostics["pq_nprobe"]
    search = ivf._to_search_space(gen)
    t_ivf_search, (_, cand) = best_time(lambda: ivf._recall(search, ivf.recall, nprobe, "ivf"), 2)
    auto = GMValuator(pq_nlist=args.nlist, **kw).fit(train)
    t_auto_first, _ = best_time(lambda: _forget_calibration(auto).value(gen), 2)
    t_auto, res_a = best_time(lambda: auto.value(gen), 2)
    quant = faiss.IndexFlatL2(args.d)
    fivf = faiss.IndexIVFFlat(quant, args.d, nlist)
    fivf.train(train)
    fivf.add(train)
    fivf.nprobe = nprobe
    t_fivf, (_, fi) = best_time(lambda: fivf.search(gen, args.k), 2)
    t_exact_search, (_, ex_i) = best_time(
        lambda: gram_topk(
            exact._to_search_space(gen),
            exact._search_emb,
            args.k,
            metric="l2",
            largest=False,
            n_threads=args.threads,
        ),
        2,
    )
    flat = faiss.IndexFlatL2(args.d)
    flat.add(train)
    t_flat, (_, ff) = best_time(lambda: flat.search(gen, args.k), 2)
    cal_s = res_first.diagnostics["calibration_s"]
    print(
        f"  nlist={nlist}, calibrated nprobe={nprobe}, scanned "
        f"{res_i.diagnostics['calibration_scanned_fraction']:.3f} of N "
        f"(first call: calibration {cal_s:.3f} s = {cal_s / t_first:.0%} of its IVF value "
        f"call; later calls: {res_i.diagnostics['calibration_s']:.3f} s; recall stage "
        f"{res_i.diagnostics['recall_s']:.3f} s, re-rank and values "
        f"{res_i.diagnostics['rerank_and_values_s']:.3f} s)"
    )
    rows = [
        ("ours IVF value(), first (calibrates)", t_first, _recall(res_first.topk_indices, truth)),
        ("ours IVF value(), later (reuses)", t_ivf, _recall(res_i.topk_indices, truth)),
        ("ours IVF search only", t_ivf_search, _recall(cand, truth)),
        (f"ours auto value() -> {res_a.diagnostics['index']}, first", t_auto_first, np.nan),
        (
            f"ours auto value() -> {res_a.diagnostics['index']}, later",
            t_auto,
            _recall(res_a.topk_indices, truth),
        ),
        ("ours exact value()", t_exact, _recall(res_e.topk_indices, truth)),
        (f"ours exact search only (top-{args.k})", t_exact_search, _recall(ex_i, truth)),
        (f"faiss IndexIVFFlat nprobe={nprobe}", t_fivf, _recall(fi, truth)),
        ("faiss IndexFlatL2", t_flat, _recall(ff, truth)),
    ]
    for label, t, rec in rows:
        print(f"  {label:38s} {t:7.3f} s  recall@{args.k} {rec:.4f}")
    print(
        f"  ours IVF value / ours exact value:  {t_ivf / t_exact:.2f} (first call {t_first / t_exact:.2f})"
    )
    print(f"  ours IVF value / ours exact search: {t_ivf / t_exact_search:.2f}")
    print(f"  ours IVF search / faiss IVFFlat:    {t_ivf_search / t_fivf:.2f}")
    print(f"  ours IVF value / faiss IVFFlat:     {t_ivf / t_fivf:.2f}")


def main() -> None:
    from _common import at_least, positive

    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--baselines", action="store_true", help="reference configurations side by side"
    )
    ap.add_argument("--n", type=at_least(1), default=1_000_000)
    ap.add_argument("--n-gen", type=at_least(1), default=10_000)
    ap.add_argument("--d", type=at_least(1), default=512)
    ap.add_argument("--k", type=at_least(1), default=50)
    # Index settings default to GMValuator's own defaults (None: not passed).
    ap.add_argument("--index", default=None, choices=["ivf", "pq", "exact"])
    ap.add_argument("--recall", type=at_least(1), default=None)
    ap.add_argument("--pq-m", type=at_least(1), default=None)
    ap.add_argument("--nlist", type=at_least(1), default=None)
    ap.add_argument("--nprobe", type=at_least(1), default=None)
    ap.add_argument("--brute-samples", type=at_least(1), default=100)
    ap.add_argument("--threads", type=at_least(1), default=2)
    ap.add_argument("--clusters", type=at_least(1), default=1000)
    ap.add_argument("--spread", type=positive, default=1.5, help="--baselines: noise std per dim")
    ap.add_argument("--ivf", action="store_true", help="our IVF vs faiss IVFFlat (issue 24)")
    ap.add_argument("--row-cost", action="store_true", help="IVF cost per scanned row / exact")
    args = ap.parse_args()
    if args.row_cost:
        defaults = {"--n": 200_000, "--n-gen": 2_000, "--d": 64, "--k": 20}
        for flag, v in defaults.items():
            if flag not in sys.argv:
                setattr(args, flag[2:].replace("-", "_"), v)
        ivf_row_cost(args)
        return
    if args.ivf:
        defaults = {"--n": 600_000, "--n-gen": 2_000, "--d": 64, "--k": 20, "--clusters": 3000}
        for flag, v in defaults.items():
            if flag not in sys.argv:
                setattr(args, flag[2:].replace("-", "_"), v)
        if "--spread" not in sys.argv:
            args.spread = 1.0
        ivf_versus_faiss(args)
        return
    if args.baselines:
        if "--n" not in sys.argv:
            args.n = 200_000
        if "--n-gen" not in sys.argv:
            args.n_gen = 2_000
        if "--d" not in sys.argv:
            args.d = 128
        if "--clusters" not in sys.argv:
            args.clusters = 100
        baselines(args)
        return

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
