"""4-bit PQ fast scan: packed layout, 8-bit tables, search vs a numpy brute force."""

from __future__ import annotations

import numpy as np
import pytest

from datacredit import _core
from datacredit.kernels import PackedCodes, ProductQuantizer


def _clustered(rng, n, d, centres=20):
    c = rng.standard_normal((centres, d)).astype(np.float32) * 3
    return (c[rng.integers(0, centres, n)] + rng.standard_normal((n, d))).astype(np.float32)


def _ref_quantize(tables: np.ndarray, metric: str):
    """Independent numpy version of the documented quantization (float32 arithmetic)."""
    t = -tables if metric == "ip" else tables
    m = t.shape[1]
    lo = t.min(axis=2)  # (nq, m)
    rng_ = t.max(axis=2).astype(np.float64) - lo.astype(np.float64)
    r_max = rng_.max(axis=1)
    r_sum = rng_.sum(axis=1)
    with np.errstate(divide="ignore"):
        sc = np.minimum(255.0 / r_max, (65535.0 - m) / r_sum)
    sc = np.where(r_max > 0, np.minimum(sc, 1e30), 1.0).astype(np.float32)
    lut = np.rint((t - lo[:, :, None]) * sc[:, None, None]).clip(0, 255).astype(np.uint8)
    return lut, sc, lo.astype(np.float64).sum(axis=1).astype(np.float32)


def _brute(lut, scale, bias, codes, k, metric):
    """Integer sums over the quantized tables, stable sort (ties to the lower index)."""
    nq, m, _ = lut.shape
    s = np.zeros((nq, codes.shape[0]), np.int64)
    for j in range(m):
        s += lut[:, j, codes[:, j]]
    order = np.argsort(s, axis=1, kind="stable")[:, :k]
    sk = np.take_along_axis(s, order, 1).astype(np.float32)
    dist = sk / scale[:, None] + bias[:, None]
    return (-dist if metric == "ip" else dist), order, s


def _search_both(pq, q, packed, k, monkeypatch):
    monkeypatch.setenv("DATACREDIT_PQ_FASTSCAN", "scalar")
    scalar = pq.search(q, packed, k)
    monkeypatch.setenv("DATACREDIT_PQ_FASTSCAN", "auto")
    fast = pq.search(q, packed, k)
    return scalar, fast


def test_avx2_path_is_used_when_the_cpu_has_it():
    # Otherwise the AVX2 == scalar comparisons below would compare the scalar path to itself.
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        pytest.skip("no /proc/cpuinfo")
    if " avx2" not in flags:
        pytest.skip("CPU without AVX2")
    assert _core.pq_fastscan_has_avx2()


def test_pack_layout_and_unpack(rng):
    for n, m in [(1, 1), (31, 3), (32, 4), (70, 7), (100, 16)]:
        codes = rng.integers(0, 16, (n, m), dtype=np.uint8)
        pq = ProductQuantizer(m * 2, m, 4)
        packed = pq.pack(codes)
        n_pad, m_pad = -(-n // 32) * 32, m + (m % 2)
        assert packed.data.shape == (n_pad // 32, m_pad // 2, 32)
        full = np.zeros((n_pad, m_pad), np.uint8)
        full[:n, :m] = codes
        blocks = full.reshape(n_pad // 32, 32, m_pad // 2, 2)
        ref = (blocks[..., 0] | (blocks[..., 1] << 4)).transpose(0, 2, 1)
        np.testing.assert_array_equal(packed.data, ref)
        np.testing.assert_array_equal(packed.unpack(), codes)
        assert packed.shape == (n, m) and len(packed) == n


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_quantize_tables_matches_definition(rng, metric):
    d, m = 36, 9
    x = _clustered(rng, 1000, d)
    pq = ProductQuantizer(d, m, 4, metric=metric, seed=1).train(x, n_iter=4)
    t = pq.compute_tables(_clustered(rng, 23, d))
    lut, scale, bias = pq.quantize_tables(t)
    ref_lut, ref_scale, ref_bias = _ref_quantize(t, metric)
    np.testing.assert_array_equal(scale, ref_scale)
    np.testing.assert_array_equal(lut, ref_lut)
    np.testing.assert_allclose(bias, ref_bias, rtol=1e-6, atol=1e-6)
    assert lut.max() == 255 and lut.min(axis=2).max() == 0
    # Constant tables: scale 1, zero entries.
    lut0, scale0, _ = pq.quantize_tables(np.full((2, m, 16), 3.0, np.float32))
    assert np.all(lut0 == 0) and np.all(scale0 == 1.0)


@pytest.mark.parametrize("metric", ["l2", "ip"])
@pytest.mark.parametrize("n,m", [(3000, 16), (1001, 7), (64, 4), (45, 1)])
def test_fastscan_equals_brute_force_over_quantized_tables(rng, monkeypatch, metric, n, m):
    d = m * 4
    x = _clustered(rng, max(n, 200), d)
    pq = ProductQuantizer(d, m, 4, metric=metric, seed=2, n_threads=2).train(x, n_iter=4)
    codes = pq.encode(x[:n])
    packed = pq.pack(codes)
    q = _clustered(rng, 11, d)
    lut, scale, bias = pq.quantize_tables(pq.compute_tables(q))
    for k in sorted({1, 7, min(50, n), n}):
        ref_d, ref_i, _ = _brute(lut, scale, bias, codes, k, metric)
        (sd, si), (fd, fi) = _search_both(pq, q, packed, k, monkeypatch)
        np.testing.assert_array_equal(si, ref_i)
        np.testing.assert_array_equal(fi, ref_i)
        np.testing.assert_allclose(sd, ref_d, rtol=1e-6, atol=1e-5)
        np.testing.assert_array_equal(fd, sd)


def test_fastscan_ties_and_thread_split(rng, monkeypatch):
    # Duplicated codes force exact ties (the lower index must win); a single query splits
    # the code range across threads and merges the partial heaps.
    d, m = 20, 5
    x = _clustered(rng, 500, d)
    pq = ProductQuantizer(d, m, 4, seed=1, n_threads=2).train(x, n_iter=3)
    codes = np.tile(pq.encode(x[:37]), (300, 1))[:11_107]  # n not a multiple of 32
    packed = pq.pack(codes)
    for q in (x[:1], x[:5]):
        lut, scale, bias = pq.quantize_tables(pq.compute_tables(q))
        for k in (1, 150, 1000):
            ref_d, ref_i, s = _brute(lut, scale, bias, codes, k, "l2")
            # the k-th score is tied with many codes, so the tie rule decides
            assert np.sum(s[0] == s[0][ref_i[0, -1]]) > 1
            (sd, si), (fd, fi) = _search_both(pq, q, packed, k, monkeypatch)
            np.testing.assert_array_equal(si, ref_i)
            np.testing.assert_array_equal(fi, ref_i)
            np.testing.assert_array_equal(fd, sd)
            np.testing.assert_allclose(fd, ref_d, rtol=1e-6, atol=1e-5)


def test_fastscan_saturated_tables_do_not_overflow(monkeypatch):
    # Adversarial tables: every code scores the maximum (sum close to 65535 with large m).
    m, n = 300, 70
    pq = ProductQuantizer(m, m, 4)
    pq.centroids = np.zeros((m, 16, 1), np.float32)
    rng = np.random.default_rng(5)
    codes = np.full((n, m), 15, np.uint8)
    codes[::3] = rng.integers(0, 16, (len(codes[::3]), m), dtype=np.uint8)
    tables = np.tile(np.arange(16, dtype=np.float32), (2, m, 1))
    lut, scale, bias = pq.quantize_tables(tables)
    assert int(lut[0].max(axis=1).astype(np.int64).sum()) <= 65535
    # close to the limit, and above 32767 (checks the unsigned 16-bit compares)
    assert int(lut[0].max(axis=1).astype(np.int64).sum()) > 65535 - 2 * m
    packed = pq.pack(codes)
    for mode in ("scalar", "auto"):
        monkeypatch.setenv("DATACREDIT_PQ_FASTSCAN", mode)
        d, i = _core.pq_fastscan_search(tables, packed.data, n, n, "l2", 2, mode == "scalar")
        ref_d, ref_i, _ = _brute(lut, scale, bias, codes, n, "l2")
        np.testing.assert_array_equal(i, ref_i)
        np.testing.assert_allclose(d, ref_d, rtol=1e-6)


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_quantization_error_bound(rng, metric):
    d, m = 64, 16
    x = _clustered(rng, 4000, d)
    pq = ProductQuantizer(d, m, 4, metric=metric, seed=0).train(x, n_iter=5)
    codes = pq.encode(x)
    q = _clustered(rng, 9, d)
    tables = pq.compute_tables(q)
    k = 300
    dist, idx = pq.search(q, pq.pack(codes), k)
    _, scale, _ = pq.quantize_tables(tables)
    exact = np.zeros((len(q), k), np.float64)
    for s in range(m):
        exact += np.take_along_axis(tables[:, s, :], codes[idx, s].astype(np.int64), 1)
    tiny = 1e-5 * np.abs(tables).max(axis=2).sum(axis=1)
    bound = m * 0.5 / scale.astype(np.float64) + tiny
    assert np.all(np.abs(dist - exact) <= bound[:, None])
    order = np.diff(dist, axis=1)
    assert np.all(order >= 0) if metric == "l2" else np.all(order <= 0)


def test_fastscan_recall_close_to_float_adc(rng):
    d, m = 64, 16
    x = _clustered(rng, 6000, d)
    pq = ProductQuantizer(d, m, 4, seed=0).train(x, n_iter=5)
    codes = pq.encode(x)
    q = _clustered(rng, 20, d)
    _, ref = pq.search(q, codes, 20)
    _, got = pq.search(q, pq.pack(codes), 20)
    overlap = np.mean([len(np.intersect1d(a, b)) / 20 for a, b in zip(got, ref)])
    assert overlap > 0.8, overlap


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_rerank_equals_float_adc_over_candidates(rng, metric):
    d, m, n = 28, 7, 2500
    x = _clustered(rng, n, d)
    pq = ProductQuantizer(d, m, 4, metric=metric, seed=4, n_threads=2).train(x, n_iter=4)
    codes = pq.encode(x)
    codes[1::2] = codes[::2]  # duplicates: ties in the float sums too
    packed = pq.pack(codes)
    q = _clustered(rng, 13, d)
    tables = pq.compute_tables(q)
    k, kc = 20, 90
    dist, idx = pq.search(q, packed, k, rerank=kc)
    _, cand = pq.search(q, packed, kc)
    for j in range(len(q)):
        acc = np.zeros(kc, np.float32)
        for s in range(m):  # float32, sub-space order
            acc = acc + tables[j, s, codes[cand[j], s]]
        key = -acc if metric == "ip" else acc
        order = np.lexsort((cand[j], key))[:k]
        np.testing.assert_array_equal(idx[j], cand[j][order])
        np.testing.assert_array_equal(dist[j], acc[order])
    # every code a candidate: exactly the float-table search of the unpacked codes
    full = pq.search(q, packed, k, rerank=n)
    ref = pq.search(q, codes, k)
    np.testing.assert_array_equal(full[1], ref[1])
    np.testing.assert_array_equal(full[0], ref[0])


def test_torch_queries_and_packed_repr(rng):
    torch = pytest.importorskip("torch")
    d, m = 16, 4
    x = _clustered(rng, 300, d)
    pq = ProductQuantizer(d, m, 4).train(x, n_iter=2)
    packed = pq.pack(pq.encode(x))
    assert isinstance(packed, PackedCodes) and "n=300" in repr(packed)
    for a, b in zip(pq.search(torch.from_numpy(x[:4]), packed, 5), pq.search(x[:4], packed, 5)):
        np.testing.assert_array_equal(a, b)


def test_fastscan_bad_input(rng, monkeypatch):
    d, m = 16, 4
    x = _clustered(rng, 300, d)
    pq8 = ProductQuantizer(d, m, 8).train(x, n_iter=2)
    with pytest.raises(ValueError, match="nbits=4"):
        pq8.pack(pq8.encode(x))
    with pytest.raises(ValueError, match="nbits=4"):
        pq8.quantize_tables(np.zeros((1, m, 16), np.float32))
    pq = ProductQuantizer(d, m, 4).train(x, n_iter=2)
    codes = pq.encode(x)
    packed = pq.pack(codes)
    bad = codes.copy()
    bad[5, 2] = 16
    with pytest.raises(ValueError, match=r"codes\[5, 2\] = 16"):
        pq.pack(bad)
    with pytest.raises(TypeError, match="uint8"):
        pq.pack(codes.astype(np.int32))
    with pytest.raises(ValueError, match="shape"):
        pq.pack(codes[:, :3])
    with pytest.raises(ValueError, match="empty"):
        pq.pack(codes[:0])
    with pytest.raises(ValueError, match="k = 0"):
        pq.search(x[:2], packed, 0)
    with pytest.raises(ValueError, match="k = 301"):
        pq.search(x[:2], packed, 301)
    with pytest.raises(TypeError, match="k must be an integer"):
        pq.search(x[:2], packed, 2.0)
    nan = x[:2].copy()
    nan[1, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        pq.search(nan, packed, 3)
    with pytest.raises(ValueError, match="columns"):
        pq.search(x[:2, :8], packed, 3)
    with pytest.raises(ValueError, match="pass the lists to pack"):
        pq.search(x[:2], packed, 3, lists=np.zeros(300, np.int64))
    with pytest.raises(ValueError, match="nprobe= needs codes packed with inverted lists"):
        pq.search(x[:2], packed, 3, nprobe=2)
    other = ProductQuantizer(d, 8, 4).train(x, n_iter=2)
    with pytest.raises(ValueError, match="m = 4"):
        other.search(x[:2], packed, 3)
    with pytest.raises(ValueError, match="tables must have shape"):
        pq.quantize_tables(np.zeros((2, m, 8), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        pq.quantize_tables(np.full((1, m, 16), np.nan, np.float32))
    with pytest.raises(ValueError, match="packed codes must have shape"):
        _core.pq_fastscan_search(pq.compute_tables(x[:1]), packed.data[:-1], 300, 3, "l2", 1, False)
    with pytest.raises(ValueError, match="rerank = 2 must be in"):
        pq.search(x[:2], packed, 3, rerank=2)
    with pytest.raises(ValueError, match="rerank = 301 must be in"):
        pq.search(x[:2], packed, 3, rerank=301)
    with pytest.raises(ValueError, match="only used with PackedCodes"):
        pq.search(x[:2], codes, 3, rerank=10)
    monkeypatch.setenv("DATACREDIT_PQ_FASTSCAN", "fast")
    with pytest.raises(ValueError, match="DATACREDIT_PQ_FASTSCAN"):
        pq.search(x[:2], packed, 3)


# ---------------------------------------------------------------- inverted lists (IVF)


def _ivf_setup(rng, metric, n=3000, d=32, m=8, nlist=10, nprobe=3, dup=True):
    x = _clustered(rng, n, d)
    pq = ProductQuantizer(d, m, 4, metric=metric, nlist=nlist, nprobe=nprobe, seed=3, n_threads=2)
    pq.train(x, n_iter=4)
    codes, lists = pq.encode(x), pq.assign(x)
    if dup:
        # the same codes in different lists: exact ties across lists, which are not scanned
        # in index order (the lower original index must still win)
        codes[n // 2 :] = codes[: n - n // 2]
    return x, pq, codes, lists


def _probes(pq, q, nprobe):
    """Nearest coarse centroids (exact l2 in float64, ties to the lower list)."""
    dc = ((q[:, None, :].astype(np.float64) - pq.coarse_centroids[None]) ** 2).sum(-1)
    return np.argsort(dc, axis=1, kind="stable")[:, :nprobe]


def _ivf_brute(pq, q, codes, lists, k, nprobe):
    """Brute force over the quantized tables restricted to each query's probed lists."""
    lut, scale, bias = pq.quantize_tables(pq.compute_tables(q))
    probes = _probes(pq, q, nprobe)
    nq = len(q)
    dist = np.full((nq, k), -np.inf if pq.metric == "ip" else np.inf, np.float32)
    idx = np.full((nq, k), -1, np.int64)
    ties = 0
    for j in range(nq):
        sel = np.flatnonzero(np.isin(lists, probes[j]))
        rd, ri, s = _brute(lut[j : j + 1], scale[j : j + 1], bias[j : j + 1], codes[sel], k, "l2")
        got = min(k, len(sel))
        idx[j, :got] = sel[ri[0, :got]]
        dist[j, :got] = -rd[0, :got] if pq.metric == "ip" else rd[0, :got]
        if got:
            ties += int(np.sum(s[0] == s[0][ri[0, got - 1]]) > 1)
    return dist, idx, ties


def test_pack_with_lists_layout(rng):
    _, pq, codes, lists = _ivf_setup(rng, "l2", n=700, nlist=9)
    lists[lists == 4] = 5  # an empty list
    packed = pq.pack(codes, lists=lists)
    assert packed.nlist == 9 and "nlist=9" in repr(packed)
    counts = np.bincount(lists, minlength=9)
    np.testing.assert_array_equal(np.diff(packed.list_blocks), -(-counts // 32))
    assert packed.list_blocks[0] == 0 and packed.list_blocks[4] == packed.list_blocks[5]
    assert packed.ids.shape == (packed.list_blocks[-1] * 32,)
    # reference layout: stable grouping, each list padded with -1 to whole blocks
    ref_ids = np.concatenate(
        [
            np.concatenate([np.flatnonzero(lists == lst), np.full(-c % 32, -1)])
            for lst, c in enumerate(counts)
        ]
    )
    np.testing.assert_array_equal(packed.ids, ref_ids)
    rows = np.where(ref_ids[:, None] >= 0, codes[np.maximum(ref_ids, 0)], 0).astype(np.uint8)
    flat = ProductQuantizer(pq.d, pq.m, 4).pack(rows)
    np.testing.assert_array_equal(packed.data, flat.data)
    np.testing.assert_array_equal(packed.unpack(), codes)
    np.testing.assert_array_equal(packed.ids[packed.positions()], np.arange(len(codes)))


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_ivf_fastscan_equals_brute_force_over_probed_lists(rng, monkeypatch, metric):
    x, pq, codes, lists = _ivf_setup(rng, metric)
    packed = pq.pack(codes, lists=lists)
    q = _clustered(rng, 17, pq.d)
    total_ties = 0
    for k, nprobe in [(1, 1), (40, 3), (300, 2), (3000, 5)]:
        ref_d, ref_i, ties = _ivf_brute(pq, q, codes, lists, k, nprobe)
        total_ties += ties
        monkeypatch.setenv("DATACREDIT_PQ_FASTSCAN", "scalar")
        sd, si = pq.search(q, packed, k, nprobe=nprobe)
        monkeypatch.setenv("DATACREDIT_PQ_FASTSCAN", "auto")
        fd, fi = pq.search(q, packed, k, nprobe=nprobe)
        np.testing.assert_array_equal(si, ref_i)
        np.testing.assert_array_equal(fi, ref_i)
        np.testing.assert_array_equal(fd, sd)
        np.testing.assert_allclose(sd, ref_d, rtol=1e-6, atol=1e-5)
        if k == 3000:  # fewer codes in the probed lists than k: inf / -1 padding
            assert np.all((si == -1).sum(1) > 0)
            assert np.all(np.isinf(sd[si == -1]))
    assert total_ties > 0  # the tie rule was exercised
    # the constructor's nprobe is the default
    np.testing.assert_array_equal(pq.search(q, packed, 9)[1], pq.search(q, packed, 9, nprobe=3)[1])


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_ivf_fastscan_all_lists_equals_flat(rng, monkeypatch, metric):
    _, pq, codes, lists = _ivf_setup(rng, metric, n=2000, nlist=7)
    packed, flat = pq.pack(codes, lists=lists), pq.pack(codes)
    q = _clustered(rng, 9, pq.d)
    for mode in ("scalar", "auto"):
        monkeypatch.setenv("DATACREDIT_PQ_FASTSCAN", mode)
        for k in (1, 25, 2000):
            got = pq.search(q, packed, k, nprobe=7)
            ref = pq.search(q, flat, k)
            np.testing.assert_array_equal(got[1], ref[1])
            np.testing.assert_array_equal(got[0], ref[0])


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_ivf_fastscan_rerank(rng, monkeypatch, metric):
    _, pq, codes, lists = _ivf_setup(rng, metric, n=1500)
    packed = pq.pack(codes, lists=lists)
    q = _clustered(rng, 11, pq.d)
    tables = pq.compute_tables(q)
    for k, kc, nprobe in [(10, 60, 2), (400, 1500, 1)]:
        dist, idx = pq.search(q, packed, k, nprobe=nprobe, rerank=kc)
        _, cand = pq.search(q, packed, kc, nprobe=nprobe)
        for j in range(len(q)):
            c = cand[j][cand[j] >= 0]
            acc = np.zeros(len(c), np.float32)
            for s in range(pq.m):  # float32, sub-space order
                acc = acc + tables[j, s, codes[c, s]]
            key = -acc if metric == "ip" else acc
            order = np.lexsort((c, key))[:k]
            got = len(order)
            np.testing.assert_array_equal(idx[j, :got], c[order])
            np.testing.assert_array_equal(dist[j, :got], acc[order])
            assert np.all(idx[j, got:] == -1) and np.all(np.isinf(dist[j, got:]))
        if kc == 1500:  # k > codes of one list for some queries: padding survives rerank
            assert np.any(idx == -1)
    # every list probed, every code a candidate: the float-table search of the codes
    full = pq.search(q, packed, 10, nprobe=pq.nlist, rerank=1500)
    ref = pq.search(q, codes, 10)
    np.testing.assert_array_equal(full[1], ref[1])
    np.testing.assert_array_equal(full[0], ref[0])


def test_ivf_fastscan_errors(rng):
    x, pq, codes, lists = _ivf_setup(rng, "l2", n=400, nlist=5, nprobe=2, dup=False)
    packed = pq.pack(codes, lists=lists)
    with pytest.raises(ValueError, match="nprobe = 6 must not exceed nlist = 5"):
        pq.search(x[:2], packed, 3, nprobe=6)
    with pytest.raises(ValueError, match="pass the lists to pack"):
        pq.search(x[:2], packed, 3, lists=lists)
    with pytest.raises(ValueError, match=r"lists must have shape \(400,\)"):
        pq.pack(codes, lists=lists[:-1])
    with pytest.raises(ValueError, match="lists holds 5, outside"):
        pq.pack(codes, lists=np.full(400, 5))
    with pytest.raises(ValueError, match="lists holds -1, outside"):
        pq.pack(codes, lists=np.full(400, -1))
    with pytest.raises(ValueError, match="k = 401"):
        pq.search(x[:2], packed, 401)
    flat = ProductQuantizer(pq.d, pq.m, 4).train(x, n_iter=2)
    with pytest.raises(RuntimeError, match="coarse quantizer"):
        flat.pack(codes, lists=lists)
    with pytest.raises(RuntimeError, match="coarse quantizer"):
        flat.search(x[:2], packed, 3)
    other = ProductQuantizer(pq.d, pq.m, 4, nlist=4).train(x, n_iter=2)
    with pytest.raises(ValueError, match="nlist = 5"):
        other.search(x[:2], packed, 3)
    t = pq.compute_tables(x[:2])
    probes = np.array([[0, 0], [1, 2]])
    with pytest.raises(ValueError, match="repeat list 0"):
        _core.pq_fastscan_search_ivf(
            t, packed.data, packed.list_blocks, packed.ids, 400, probes, 3, "l2", 1, False
        )
    bad = packed.ids.copy()
    bad[0] = 400
    with pytest.raises(ValueError, match="outside"):
        _core.pq_fastscan_search_ivf(
            t, packed.data, packed.list_blocks, bad, 400, probes[1:].repeat(2, 0), 3, "l2", 1, False
        )


def test_packed_codes_save_load_round_trip(rng, tmp_path):
    _, pq, codes, lists = _ivf_setup(rng, "l2", n=500, nlist=6)
    q = _clustered(rng, 5, pq.d)
    for packed in (pq.pack(codes), pq.pack(codes, lists=lists)):
        path = tmp_path / "packed.npz"
        packed.save(path)
        back = PackedCodes.load(path)
        assert (back.n, back.m, back.nlist) == (packed.n, packed.m, packed.nlist)
        np.testing.assert_array_equal(back.data, packed.data)
        np.testing.assert_array_equal(back.unpack(), codes)
        kw = {} if packed.nlist is None else {"nprobe": 3}
        for a, b in zip(pq.search(q, back, 10, **kw), pq.search(q, packed, 10, **kw)):
            np.testing.assert_array_equal(a, b)
    # a corrupted layout is refused at load time
    bad = pq.pack(codes, lists=lists)
    bad.ids = bad.ids.copy()
    bad.ids[bad.ids == 3] = 4  # code 3 lost, code 4 twice
    bad.save(tmp_path / "bad.npz")
    with pytest.raises(ValueError, match="inconsistent"):
        PackedCodes.load(tmp_path / "bad.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="not a datacredit PackedCodes"):
        PackedCodes.load(tmp_path / "other.npz")
