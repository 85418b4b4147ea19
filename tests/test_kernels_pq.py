"""ProductQuantizer: k-means codebooks, encode/decode, ADC search vs numpy brute force."""

from __future__ import annotations

import numpy as np
import pytest

from datacredit.kernels import ProductQuantizer


@pytest.fixture(params=["default", "scalar"])
def scan(request, monkeypatch):
    """Both 8-bit scans: the byte-table one (where the processor has AVX-512 VBMI) and the
    portable scalar one (DATACREDIT_PQ_SCAN=scalar)."""
    if request.param == "scalar":
        monkeypatch.setenv("DATACREDIT_PQ_SCAN", "scalar")
    else:
        monkeypatch.delenv("DATACREDIT_PQ_SCAN", raising=False)
    return request.param


def _clustered(rng, n, d, centres=20):
    c = rng.standard_normal((centres, d)).astype(np.float32) * 3
    return (c[rng.integers(0, centres, n)] + rng.standard_normal((n, d))).astype(np.float32)


def _brute_adc(tables: np.ndarray, codes: np.ndarray, k: int, largest: bool):
    """Sequential (sub-space order) float32 ADC sums, then a stable sort: ties to lower index."""
    nq, m, _ = tables.shape
    acc = np.zeros((nq, codes.shape[0]), np.float32)
    for s in range(m):
        acc = acc + tables[:, s, codes[:, s]]
    key = -acc if largest else acc
    order = np.argsort(key, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(acc, order, 1), order


@pytest.mark.parametrize("metric", ["l2", "ip"])
@pytest.mark.parametrize("nbits,m", [(8, 8), (4, 16), (6, 5), (8, 40), (8, 64)])
def test_search_equals_brute_force_adc(rng, metric, nbits, m, scan):
    d = m * 4
    x = _clustered(rng, 3000, d)
    pq = ProductQuantizer(d, m, nbits, metric=metric, seed=3).train(x, n_iter=6)
    codes = pq.encode(x)
    q = _clustered(rng, 37, d)
    tables = pq.compute_tables(q)
    for k in (1, 17, 200):
        dist, idx = pq.search(q, codes, k)
        ref_d, ref_i = _brute_adc(tables, codes, k, largest=(metric == "ip"))
        np.testing.assert_array_equal(idx, ref_i)
        np.testing.assert_array_equal(dist, ref_d)


def test_search_with_ties_and_few_queries(rng, scan):
    # Duplicated codes force exact ties: the lower index must win; one query forces the
    # split of the code range across threads and the merge of the partial heaps.
    d, m = 16, 4
    x = _clustered(rng, 600, d)
    pq = ProductQuantizer(d, m, 8, seed=1, n_threads=2).train(x, n_iter=3)
    codes = np.tile(pq.encode(x[:50]), (400, 1))  # 20,000 codes, each 400 times
    q = x[:1]
    dist, idx = pq.search(q, codes, 120)
    ref_d, ref_i = _brute_adc(pq.compute_tables(q), codes, 120, largest=False)
    np.testing.assert_array_equal(idx, ref_i)
    np.testing.assert_array_equal(dist, ref_d)


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_byte_scan_bounds_on_hard_tables(rng, metric, scan):
    """The byte-table scan's lower bound (tables rounded down to bytes, one scale for all
    sub-spaces, uint16 sums saturating) never drops a true neighbour: sizes that leave a
    partial group of 64, one sub-space with a huge range (the others quantize to a few
    levels), a large common offset, and m = 288 (a byte sum above 65,535 saturates)."""
    for n, m, offset in ((1000, 8, 0.0), (4099, 16, 500.0), (700, 288, 0.0)):
        d = m
        x = _clustered(rng, n, d) + np.float32(offset)
        x[:, 0] *= 300.0  # sub-space 0 dominates the tables' range
        pq = ProductQuantizer(d, m, 8, metric=metric, seed=2, n_threads=2).train(x, n_iter=2)
        codes = pq.encode(x)
        q = x[rng.integers(0, n, 11)] + rng.standard_normal((11, d)).astype(np.float32)
        tables = pq.compute_tables(q)
        for k in (1, 64, n):
            dist, idx = pq.search(q, codes, k)
            ref_d, ref_i = _brute_adc(tables, codes, k, largest=(metric == "ip"))
            np.testing.assert_array_equal(idx, ref_i)
            np.testing.assert_array_equal(dist, ref_d)


def test_tables_match_definition(rng):
    d, m = 24, 6
    x = _clustered(rng, 500, d)
    for metric in ("l2", "ip"):
        pq = ProductQuantizer(d, m, 5, metric=metric).train(x, n_iter=3)
        q = x[:5]
        t = pq.compute_tables(q)
        sub = q.reshape(5, m, 1, d // m).astype(np.float64)
        c = pq.centroids[None].astype(np.float64)
        ref = ((sub - c) ** 2).sum(-1) if metric == "l2" else (sub * c).sum(-1)
        np.testing.assert_allclose(t, ref, rtol=1e-5, atol=1e-4)


def test_encode_picks_nearest_centroid(rng):
    d, m = 32, 4
    x = _clustered(rng, 2000, d)
    pq = ProductQuantizer(d, m, 8).train(x, n_iter=5)
    codes = pq.encode(x)
    sub = x.reshape(-1, m, 1, d // m).astype(np.float64)
    dist = ((sub - pq.centroids[None].astype(np.float64)) ** 2).sum(-1)  # (n, m, ksub)
    chosen = np.take_along_axis(dist, codes[..., None].astype(np.int64), 2)[..., 0]
    np.testing.assert_allclose(chosen, dist.min(-1), rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(pq.decode(codes)[:, : d // m], pq.centroids[0][codes[:, 0]])


def test_reconstruction_error_decreases_with_m(rng):
    d = 48
    x = _clustered(rng, 4000, d)
    errors = []
    for m in (2, 4, 8, 16, 48):
        pq = ProductQuantizer(d, m, 6, seed=0).train(x, n_iter=10)
        errors.append(float(np.mean((pq.decode(pq.encode(x)) - x) ** 2)))
    assert all(a > b for a, b in zip(errors, errors[1:])), errors


def test_training_is_deterministic_and_thread_independent(rng):
    d, m = 32, 8
    x = _clustered(rng, 5000, d)
    a = ProductQuantizer(d, m, 8, seed=7, n_threads=1).train(x, n_iter=4, max_points_per_centroid=8)
    b = ProductQuantizer(d, m, 8, seed=7, n_threads=2).train(x, n_iter=4, max_points_per_centroid=8)
    c = ProductQuantizer(d, m, 8, seed=8, n_threads=2).train(x, n_iter=4, max_points_per_centroid=8)
    np.testing.assert_array_equal(a.centroids, b.centroids)
    assert not np.array_equal(a.centroids, c.centroids)
    np.testing.assert_array_equal(a.encode(x), b.encode(x))


def test_kmeans_reduces_quantization_error(rng):
    # More Lloyd iterations never hurt the training objective much, and beat random init.
    d, m = 16, 2
    x = _clustered(rng, 3000, d)
    e = []
    for it in (1, 20):
        pq = ProductQuantizer(d, m, 6, seed=2).train(x, n_iter=it)
        e.append(float(np.mean((pq.decode(pq.encode(x)) - x) ** 2)))
    assert e[1] < e[0]


def test_save_load_roundtrip(tmp_path, rng):
    d, m = 16, 4
    x = _clustered(rng, 800, d)
    pq = ProductQuantizer(d, m, 8, metric="ip", seed=5).train(x, n_iter=3)
    path = tmp_path / "pq.npz"
    pq.save(path)
    back = ProductQuantizer.load(path)
    assert (back.d, back.m, back.nbits, back.metric, back.seed) == (d, m, 8, "ip", 5)
    np.testing.assert_array_equal(back.centroids, pq.centroids)
    codes = pq.encode(x)
    for a, b in zip(pq.search(x[:3], codes, 5), back.search(x[:3], codes, 5)):
        np.testing.assert_array_equal(a, b)
    # The library's container (safetensors, readable from C), at exactly the given path.
    from datacredit.safetensors_io import read_safetensors_metadata

    meta = read_safetensors_metadata(path)
    assert (meta["format"], meta["format_version"]) == ("datacredit.product_quantizer", "1")


def test_torch_input(rng):
    torch = pytest.importorskip("torch")
    d, m = 16, 4
    x = _clustered(rng, 600, d)
    pq = ProductQuantizer(d, m, 8).train(torch.from_numpy(x), n_iter=2)
    np.testing.assert_array_equal(pq.encode(torch.from_numpy(x)), pq.encode(x))


def test_bad_input(rng):
    with pytest.raises(ValueError, match="multiple of m"):
        ProductQuantizer(10, 3)
    with pytest.raises(ValueError, match="nbits"):
        ProductQuantizer(8, 2, nbits=9)
    with pytest.raises(ValueError, match="metric"):
        ProductQuantizer(8, 2, metric="cos")
    pq = ProductQuantizer(8, 2, 4)
    with pytest.raises(RuntimeError, match="not trained"):
        pq.encode(np.zeros((3, 8)))
    with pytest.raises(ValueError, match="at least"):
        pq.train(np.zeros((10, 8)))
    x = _clustered(rng, 100, 8)
    with pytest.raises(ValueError, match="columns"):
        pq.train(x[:, :6])
    bad = x.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        pq.train(bad)
    pq.train(x, n_iter=2)
    codes = pq.encode(x)
    with pytest.raises(ValueError, match="k = 0"):
        pq.search(x[:2], codes, 0)
    with pytest.raises(ValueError, match="k = 101"):
        pq.search(x[:2], codes, 101)
    with pytest.raises(TypeError, match="uint8"):
        pq.search(x[:2], codes.astype(np.int64), 3)
    with pytest.raises(ValueError, match="shape"):
        pq.search(x[:2], codes[:, :1], 3)
    with pytest.raises(ValueError, match="outside"):
        pq.decode(np.full((2, 2), 16, np.uint8))
    with pytest.raises(ValueError, match="empty"):
        pq.search(x[:0], codes, 3)


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_ivf_search_equals_brute_force_over_probed_lists(rng, metric):
    d, m, nlist = 32, 8, 12
    x = _clustered(rng, 4000, d)
    pq = ProductQuantizer(d, m, 8, metric=metric, nlist=nlist, nprobe=3, seed=2)
    pq.train(x, n_iter=5)
    codes, lists = pq.encode(x), pq.assign(x)
    # assign = nearest coarse centroid
    dc = ((x[:, None, :].astype(np.float64) - pq.coarse_centroids[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(lists, dc.argmin(1))
    q = _clustered(rng, 25, d)
    k = 40
    dist, idx = pq.search(q, codes, k, lists=lists)
    tables = pq.compute_tables(q)
    probes = np.argsort(
        ((q[:, None, :].astype(np.float64) - pq.coarse_centroids[None]) ** 2).sum(-1),
        axis=1,
        kind="stable",
    )[:, :3]
    for j in range(len(q)):
        sel = np.flatnonzero(np.isin(lists, probes[j]))
        acc = np.zeros(len(sel), np.float32)
        for s in range(m):
            acc = acc + tables[j, s, codes[sel, s]]
        key = -acc if metric == "ip" else acc
        order = np.lexsort((sel, key))[:k]
        got = min(k, len(sel))
        np.testing.assert_array_equal(idx[j, :got], sel[order][:got])
        np.testing.assert_array_equal(dist[j, :got], acc[order][:got])
        assert np.all(idx[j, got:] == -1)
    # probing every list equals the flat search
    full = pq.search(q, codes, k, lists=lists, nprobe=nlist)
    flat = pq.search(q, codes, k)
    np.testing.assert_array_equal(full[1], flat[1])


def test_ivf_save_load_and_errors(rng, tmp_path):
    d, m = 16, 4
    x = _clustered(rng, 600, d)
    pq = ProductQuantizer(d, m, 6, nlist=5, nprobe=2).train(x, n_iter=3)
    pq.save(tmp_path / "ivf.npz")
    back = ProductQuantizer.load(tmp_path / "ivf.npz")
    np.testing.assert_array_equal(back.coarse_centroids, pq.coarse_centroids)
    assert (back.nlist, back.nprobe) == (5, 2)
    codes, lists = pq.encode(x), pq.assign(x)
    with pytest.raises(ValueError, match="nprobe"):
        pq.search(x[:2], codes, 3, lists=lists, nprobe=6)
    with pytest.raises(ValueError, match="lists"):
        pq.search(x[:2], codes, 3, lists=lists[:-1])
    with pytest.raises(ValueError, match="nprobe = 3 must not exceed"):
        ProductQuantizer(d, m, nlist=2, nprobe=3)
    flat = ProductQuantizer(d, m, 6).train(x, n_iter=2)
    with pytest.raises(RuntimeError, match="nlist"):
        flat.assign(x)


def test_adc_search_equals_faiss_index_pq_on_the_same_codebooks(scan):
    """Issue 24: with faiss's trained codebooks, our codes and our 8-bit ADC top-k are
    faiss IndexPQ's (same ids, distances to float rounding), so any recall gap between the
    two comes from k-means training, not from the search (ties, tables, candidates)."""
    faiss = pytest.importorskip("faiss")
    rng = np.random.default_rng(5)
    centres = rng.standard_normal((40, 32)).astype(np.float32) * 3
    xb = (centres[rng.integers(0, 40, 6000)] + rng.standard_normal((6000, 32))).astype(np.float32)
    xq = (centres[rng.integers(0, 40, 50)] + rng.standard_normal((50, 32))).astype(np.float32)
    m, k = 4, 20
    index = faiss.IndexPQ(32, m, 8)
    index.train(xb)
    index.add(xb)
    pq = ProductQuantizer(32, m, 8, seed=0, n_threads=1).train(xb[:2000], n_iter=1)
    pq.centroids = np.ascontiguousarray(
        faiss.vector_to_array(index.pq.centroids).reshape(pq.centroids.shape)
    )
    codes = pq.encode(xb)
    np.testing.assert_array_equal(codes, faiss.vector_to_array(index.codes).reshape(len(xb), m))
    dist, ids = pq.search(xq, codes, k)
    f_dist, f_ids = index.search(xq, k)
    np.testing.assert_array_equal(ids, f_ids)
    np.testing.assert_allclose(dist, f_dist, rtol=1e-5, atol=1e-5)
