"""datacredit.kernels.ivf_flat_search against numpy brute force restricted to the probed
lists, and its argument errors."""

from __future__ import annotations

import numpy as np
import pytest

from datacredit.kernels import ivf_flat_search


def _lists(rng, n_keys, nlist):
    list_of = rng.integers(0, nlist, n_keys)
    order = np.argsort(list_of, kind="stable").astype(np.int64)
    starts = np.searchsorted(list_of[order], np.arange(nlist + 1)).astype(np.int64)
    return list_of, order, starts


@pytest.mark.parametrize("threads", [1, 2])
def test_best_per_list_are_the_exact_top_over_the_probed_lists(threads):
    rng = np.random.default_rng(0)
    q = rng.standard_normal((60, 16)).astype(np.float32)
    keys = rng.standard_normal((2000, 16)).astype(np.float32)
    nlist, nprobe, k = 25, 5, 8
    list_of, order, starts = _lists(rng, len(keys), nlist)
    probes = np.array([rng.permutation(nlist)[:nprobe] for _ in q], np.int64)
    dist, idx = ivf_flat_search(q, keys, order, starts, probes, k, per_list=k, n_threads=threads)
    d2 = ((q[:, None, :].astype(np.float64) - keys[None]) ** 2).sum(-1)
    for i in range(len(q)):
        allowed = np.flatnonzero(np.isin(list_of, probes[i]))
        ref = allowed[np.argsort(d2[i, allowed], kind="stable")[:k]]
        np.testing.assert_array_equal(idx[i], ref)
        np.testing.assert_allclose(dist[i], d2[i, ref], rtol=1e-4, atol=1e-4)


def test_padding_and_bad_input():
    rng = np.random.default_rng(1)
    q = rng.standard_normal((3, 4)).astype(np.float32)
    keys = rng.standard_normal((10, 4)).astype(np.float32)
    _, order, starts = _lists(rng, 10, 3)
    probes = np.array([[0, 1, 2], [0, -1, -1], [-1, -1, -1]], np.int64)
    dist, idx = ivf_flat_search(q, keys, order, starts, probes, 12)
    assert (idx[0] >= 0).sum() == 10 and (idx[0, 10:] == -1).all()
    assert (idx[2] == -1).all() and np.isinf(dist[2]).all()
    with pytest.raises(ValueError, match="outside"):
        ivf_flat_search(q, keys, order, starts, probes + 5, 2)
    with pytest.raises(ValueError, match="r must be"):
        ivf_flat_search(q, keys, order, starts, probes, 0)
    with pytest.raises(ValueError, match="starts"):
        ivf_flat_search(q, keys, order, starts[::-1].copy(), probes, 2)
    bad = q.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="queries"):
        ivf_flat_search(bad, keys, order, starts, probes, 2)
