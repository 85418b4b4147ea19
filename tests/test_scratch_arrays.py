"""Derived N x d arrays of a memory-mapped training set are file-backed, not anonymous
memory (datacredit._scratch): 4M x 128 memory-mapped embeddings took 2.1 GB of anonymous
memory in GMValuator.fit (the inverted file's list-ordered copy) where 0.9 GB was measured
before (benchmarks/bench_gmvaluator_memmap.py)."""

from __future__ import annotations

import numpy as np
import pytest

from datacredit import GMValuator
from datacredit._scratch import is_memory_mapped, scratch_array
from datacredit.kernels import build_inverted_lists


def _clustered(n, d, seed):
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(40, d)).astype(np.float32) * 3
    return (c[rng.integers(0, 40, n)] + rng.normal(size=(n, d))).astype(np.float32)


def test_scratch_follows_its_input(tmp_path):
    np.save(tmp_path / "x.npy", np.ones((5, 3), np.float32))
    m = np.load(tmp_path / "x.npy", mmap_mode="r")
    assert is_memory_mapped(m) and is_memory_mapped(m[1:]) and is_memory_mapped(np.asarray(m))
    assert not is_memory_mapped(np.ones(3)) and not is_memory_mapped(np.array(m))
    a = scratch_array((4, 3), np.float32, like=m)
    assert is_memory_mapped(a) and a.flags.c_contiguous and a.flags.writeable
    a[:] = 2.0
    assert float(a.sum()) == 24.0
    from datacredit._scratch import scratch_dir

    assert scratch_dir(m) == str(tmp_path)  # next to the input's file, not in /tmp
    b = scratch_array((4, 3), np.float32, like=np.ones(3))
    assert not is_memory_mapped(b) and b.shape == (4, 3)


def test_build_inverted_lists_into_out_equals_the_default():
    x = _clustered(3000, 8, 0)
    lists = np.random.default_rng(1).integers(0, 17, 3000)
    a = build_inverted_lists(x, lists, 17)
    out = np.empty_like(x)
    b = build_inverted_lists(x, lists, 17, out=out)
    assert b.keys is out
    for f in ("keys", "sq_norms", "ids", "starts"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    # independent check: list l holds exactly the keys labelled l, in their order
    for lab in (0, 5, 16):
        rows = np.flatnonzero(lists == lab)
        np.testing.assert_array_equal(a.ids[a.starts[lab] : a.starts[lab + 1]], rows)
        np.testing.assert_array_equal(a.keys[a.starts[lab] : a.starts[lab + 1]], x[rows])
    with pytest.raises(ValueError, match="out must be"):
        build_inverted_lists(x, lists, 17, out=np.empty((3000, 8), np.float64))


@pytest.mark.parametrize("rerank", ["l2", "cosine"])
def test_memory_mapped_training_set_keeps_its_copies_on_file(tmp_path, rerank):
    x = _clustered(20_000, 16, 2)
    x[:, 0] += 50.0  # far from the origin: the l2 search space is a shifted copy
    gen = _clustered(200, 16, 3)
    gen[:, 0] += 50.0
    np.save(tmp_path / "emb.npy", x)
    mm = np.load(tmp_path / "emb.npy", mmap_mode="r")
    kw = dict(k=10, index="ivf", rerank=rerank, n_threads=1, seed=0)
    on_file = GMValuator(**kw).fit(mm)
    in_ram = GMValuator(**kw).fit(x)
    assert is_memory_mapped(on_file._ivf["inverted"].keys)
    assert not is_memory_mapped(in_ram._ivf["inverted"].keys)
    assert is_memory_mapped(on_file._search_emb)  # shifted (l2) or normalised (cosine)
    a, b = on_file.value(gen), in_ram.value(gen)
    np.testing.assert_array_equal(a.topk_indices, b.topk_indices)
    np.testing.assert_allclose(a.values, b.values, rtol=1e-6, atol=1e-12)


def test_out_of_core_shard_searches_copy_into_file_backed_arrays(tmp_path, monkeypatch):
    """Out of core, each shard's list-ordered copy is file-backed: 2 concurrent shard
    searches of 2^20 x 128 held 1.2 GB of anonymous memory during value (3M x 128 store),
    where 900 MB is the bound.  The answers equal those of an anonymous copy."""
    from datacredit.gmvaluator import stages

    seen = []
    real = stages.build_inverted_lists

    def spy(keys, lists, nlist, ids=None, *, out=None):
        seen.append(out is not None and is_memory_mapped(out))
        return real(keys, lists, nlist, ids, out=out)

    def anonymous(keys, lists, nlist, ids=None, *, out=None):
        return real(keys, lists, nlist, ids)

    x, gen = _clustered(4000, 8, 4), _clustered(50, 8, 5)
    kw = dict(k=5, index="ivf", pq_nlist=20, n_threads=1, seed=0)
    monkeypatch.setattr(stages, "build_inverted_lists", spy)
    gmv = GMValuator(**kw).fit(x, store=tmp_path / "s", shard_rows=1000)
    ooc = gmv.value(gen)
    assert seen and all(seen)
    monkeypatch.setattr(stages, "build_inverted_lists", anonymous)
    ref = GMValuator(**kw).fit(x, store=tmp_path / "s", shard_rows=1000).value(gen)
    np.testing.assert_array_equal(ooc.topk_indices, ref.topk_indices)
    np.testing.assert_array_equal(ooc.values, ref.values)
