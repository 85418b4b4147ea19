"""datacredit.kernels.ivf_flat_search against numpy brute force restricted to the probed
lists (ragged and empty lists, r above the list sizes, more queries per list than a GEMM
block), and its argument errors."""

from __future__ import annotations

import numpy as np
import pytest

from datacredit.kernels import build_inverted_lists, ivf_flat_search


def _brute(q, keys, list_of, probes, r):
    """Top-r over the probed lists by float64 distance (ties to the lower index)."""
    d2 = ((q[:, None, :].astype(np.float64) - keys[None]) ** 2).sum(-1)
    out = []
    for i in range(len(q)):
        allowed = np.flatnonzero(np.isin(list_of, probes[i][probes[i] >= 0]))
        out.append(allowed[np.argsort(d2[i, allowed], kind="stable")[:r]])
    return d2, out


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(
    "n,n_keys,nlist,nprobe,r",
    [
        (60, 2000, 25, 5, 8),  # balanced-ish random lists
        (700, 1500, 3, 2, 10),  # > 512 queries and > 512 keys per list
        (20, 30, 40, 7, 6),  # most lists empty, r above most list sizes
    ],
)
def test_top_r_is_the_exact_top_over_the_probed_lists(threads, n, n_keys, nlist, nprobe, r):
    rng = np.random.default_rng(n)
    q = rng.standard_normal((n, 16)).astype(np.float32)
    keys = rng.standard_normal((n_keys, 16)).astype(np.float32)
    # Ragged lists: list l drawn with weight l + 1.
    w = np.arange(1, nlist + 1, dtype=np.float64)
    list_of = rng.choice(nlist, n_keys, p=w / w.sum())
    lists = build_inverted_lists(keys, list_of, nlist)
    probes = np.array([rng.permutation(nlist)[:nprobe] for _ in q], np.int64)
    probes[0, 1:] = -1  # one list only
    dist, idx = ivf_flat_search(q, lists, probes, r, n_threads=threads)
    d2, ref = _brute(q, keys, list_of, probes, r)
    for i in range(n):
        m = len(ref[i])
        np.testing.assert_array_equal(idx[i, :m], ref[i])
        np.testing.assert_allclose(dist[i, :m], d2[i, ref[i]], rtol=1e-4, atol=1e-4)
        assert (idx[i, m:] == -1).all() and np.isinf(dist[i, m:]).all()


def test_ids_and_thread_independence():
    rng = np.random.default_rng(5)
    q = rng.standard_normal((50, 8)).astype(np.float32)
    keys = rng.standard_normal((400, 8)).astype(np.float32)
    list_of = rng.integers(0, 10, 400)
    ids = rng.permutation(400).astype(np.int64) + 1000
    lists = build_inverted_lists(keys, list_of, 10, ids=ids)
    probes = np.argsort(rng.random((50, 10)), 1)[:, :4]
    d1, i1 = ivf_flat_search(q, lists, probes, 12, n_threads=1)
    d3, i3 = ivf_flat_search(q, lists, probes, 12, n_threads=3)
    np.testing.assert_array_equal(i1, i3)
    np.testing.assert_array_equal(d1, d3)
    _, ref = _brute(q, keys, list_of, probes, 12)
    for i in range(50):
        np.testing.assert_array_equal(i1[i], ids[ref[i]])


def test_padding_and_bad_input():
    rng = np.random.default_rng(1)
    q = rng.standard_normal((3, 4)).astype(np.float32)
    keys = rng.standard_normal((10, 4)).astype(np.float32)
    lists = build_inverted_lists(keys, rng.integers(0, 3, 10), 3)
    probes = np.array([[0, 1, 2], [0, -1, -1], [-1, -1, -1]], np.int64)
    dist, idx = ivf_flat_search(q, lists, probes, 12)
    assert (idx[0] >= 0).sum() == 10 and (idx[0, 10:] == -1).all()
    assert (idx[2] == -1).all() and np.isinf(dist[2]).all()
    with pytest.raises(ValueError, match="outside"):
        ivf_flat_search(q, lists, probes + 5, 2)
    with pytest.raises(ValueError, match="twice"):
        ivf_flat_search(q, lists, np.array([[0, 0], [1, 2], [2, 1]]), 2)
    with pytest.raises(ValueError, match="r must be"):
        ivf_flat_search(q, lists, probes, 0)
    with pytest.raises(ValueError, match="list_of"):
        build_inverted_lists(keys, np.full(10, 3), 3)
    with pytest.raises(TypeError, match="InvertedLists"):
        ivf_flat_search(q, keys, probes, 2)
    bad = q.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="queries"):
        ivf_flat_search(bad, lists, probes, 2)
    with pytest.raises(ValueError, match="keys"):
        build_inverted_lists(np.full((10, 4), np.nan, np.float32), np.zeros(10, int), 1)


@pytest.mark.parametrize("offset", [0.0, 300.0])
@pytest.mark.parametrize("k", [1, 7, 40])
def test_exact_topk_through_the_lists_equals_gram_topk(offset, k):
    from datacredit.kernels import gram_topk, ivf_exact_topk

    rng = np.random.default_rng(int(offset) + k)
    keys = (rng.standard_normal((900, 12)) + offset).astype(np.float32)
    keys[5] = keys[6]  # an exact tie: the lower index first
    q = (rng.standard_normal((70, 12)) + offset).astype(np.float32)
    q[3] = keys[5]
    w = np.arange(1, 31, dtype=np.float64)
    lists = build_inverted_lists(keys, rng.choice(30, 900, p=w / w.sum()), 33)  # 3 empty
    dist, idx = ivf_exact_topk(q, keys, lists, k)
    ref_d, ref_i = gram_topk(q, keys, k, metric="l2", largest=False)
    np.testing.assert_array_equal(idx, ref_i)
    np.testing.assert_array_equal(dist, ref_d)
    with pytest.raises(ValueError, match="k must be"):
        ivf_exact_topk(q, keys, lists, 901)
