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
    with pytest.raises(ValueError, match="not supported"):
        pq.search(x[:2], packed, 3, lists=np.zeros(300, np.int64))
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
