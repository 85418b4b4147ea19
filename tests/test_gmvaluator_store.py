"""GMValuator out of core (fit(store=...)): against eqs. 5-6 computed directly, against the
in-core fit, identical across executors, resumable and skipped when complete."""

from __future__ import annotations

import concurrent.futures as cf

import numpy as np
import pytest

from datacredit.gmvaluator import GMValuator
from datacredit.store import ShardStore

P = np.random.default_rng(7).standard_normal((16, 24)).astype(np.float32)


def project(batch):
    """A deterministic encoder: a fixed random projection 16 -> 24, then tanh."""
    return np.tanh(np.asarray(batch, np.float32) @ P / 4)


def _data(n=1500, n_gen=30, centres=10, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, 16)) * 3
    train = (c[rng.integers(0, centres, n)] + rng.standard_normal((n, 16))).astype(np.float32)
    gen = (c[rng.integers(0, centres, n_gen)] + rng.standard_normal((n_gen, 16))).astype(np.float32)
    return train, gen


def _reference(train_emb, gen_emb, k):
    """Eqs. 5-6 directly in float64: all distances, top-k, softmax(-d), scatter-add."""
    t, g = train_emb.astype(np.float64), gen_emb.astype(np.float64)
    dist = np.sqrt(((g[:, None, :] - t[None]) ** 2).sum(-1))
    values = np.zeros(len(t))
    tops = []
    for j in range(len(g)):
        top = np.argsort(dist[j], kind="stable")[:k]
        w = np.exp(-(dist[j, top] - dist[j, top].min()))
        values[top] += w / w.sum()
        tops.append(top)
    return values, np.array(tops)


@pytest.mark.parametrize("index", ["exact", "ivf"])
def test_store_fit_matches_direct_computation(tmp_path, index):
    train, gen = _data()
    kw = {"pq_nlist": 12, "pq_nprobe": 12} if index == "ivf" else {}  # all lists: exact
    gmv = GMValuator(encoder=project, k=10, recall=40, index=index, **kw)
    gmv.fit(train, store=tmp_path / "s", shard_rows=256)
    assert gmv.train_embeddings is None and gmv.index_ == index
    res = gmv.value(gen)
    # The embeddings on disk are the encoder's output, in order (float32 rounding of the
    # batched GEMM aside).
    emb = ShardStore(tmp_path / "s" / "embeddings")
    assert emb.n_shards == 6
    stored = emb.concat("embeddings")
    exact = np.tanh(train.astype(np.float64) @ P / 4)
    bound = 16 * np.finfo(np.float32).eps * (np.abs(train) @ np.abs(P) / 4 + 1)  # GEMM rounding
    assert (np.abs(stored - exact) <= bound).all()
    ref_vals, ref_top = _reference(stored, gmv.encoder.encode(gen), 10)
    np.testing.assert_array_equal(res.topk_indices, ref_top)
    np.testing.assert_allclose(res.values, ref_vals, rtol=1e-9, atol=1e-12)
    assert np.isclose(res.values.sum(), len(gen))  # efficiency: each sample gives q_j = 1
    # The in-core fit gives the same result.
    core = GMValuator(encoder=project, k=10, recall=40, index=index, **kw).fit(train).value(gen)
    np.testing.assert_array_equal(core.topk_indices, res.topk_indices)
    np.testing.assert_allclose(core.values, res.values, rtol=1e-12, atol=1e-15)


def test_ivf_probing_few_lists_recall_and_executors_identical(tmp_path):
    train, gen = _data(n=3000, n_gen=60)
    kw = dict(encoder=project, k=10, recall=30, index="ivf", pq_nlist=30, pq_nprobe=6)
    serial = GMValuator(**kw).fit(train, store=tmp_path / "a", shard_rows=500).value(gen)
    _, ref_top = _reference(project(train), project(gen), 10)
    recall = np.mean([len(np.intersect1d(a, b)) / 10 for a, b in zip(ref_top, serial.topk_indices)])
    assert recall >= 0.9, recall
    assert serial.diagnostics["final_recall_at_k"] == pytest.approx(recall)
    with cf.ThreadPoolExecutor(2) as ex:
        threads = GMValuator(**kw).fit(train, store=tmp_path / "b", shard_rows=500, executor=ex)
        threads = threads.value(gen)
    np.testing.assert_array_equal(threads.topk_indices, serial.topk_indices)
    np.testing.assert_array_equal(threads.values, serial.values)
    np.testing.assert_array_equal(threads.topk_weights, serial.topk_weights)
    for name in ("embeddings", "ivf-nlist30-seed0/coarse", "ivf-nlist30-seed0/lists"):
        for i in range(ShardStore(tmp_path / "a" / name).n_shards):
            f = f"{name}/shard-{i:05d}.safetensors"
            assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()


def test_existing_store_skips_encoding_and_resumes(tmp_path):
    train, gen = _data(n=800)
    calls = []

    def counting(batch):
        calls.append(len(batch))
        return project(batch)

    gmv = GMValuator(encoder=counting, k=5, recall=20, index="exact", batch_size=1000)
    first = gmv.fit(train, store=tmp_path / "s", shard_rows=200).value(gen)
    n_fit_calls = len(calls)
    assert sum(calls) >= 800
    calls.clear()
    again = GMValuator(encoder=counting, k=5, recall=20, index="exact", batch_size=1000)
    again.fit(train, store=tmp_path / "s", shard_rows=200)
    assert sum(calls) <= 3  # only the three fingerprint samples, no shard re-encoded
    np.testing.assert_array_equal(again.value(gen).values, first.values)
    # A lost shard is recomputed alone.
    (tmp_path / "s" / "embeddings" / "shard-00002.done").unlink()
    calls.clear()
    GMValuator(encoder=counting, k=5, recall=20, index="exact", batch_size=1000).fit(
        train, store=tmp_path / "s", shard_rows=200
    )
    assert sum(calls) == 3 + 200
    assert n_fit_calls > 0
    # Another index on the same store reuses the embeddings.
    calls.clear()
    kw = dict(encoder=counting, k=5, recall=20, index="ivf", batch_size=1000)
    GMValuator(**kw, pq_nlist=8).fit(train, store=tmp_path / "s", shard_rows=200)
    GMValuator(**kw, pq_nlist=9).fit(train, store=tmp_path / "s", shard_rows=200)
    assert sum(calls) == 6
    assert (tmp_path / "s" / "ivf-nlist9-seed0" / "lists" / "manifest.json").exists()
    # Other training data: an error naming the difference.
    with pytest.raises(ValueError, match="fingerprint"):
        GMValuator(encoder=counting, k=5, recall=20, index="exact").fit(
            train[::-1].copy(), store=tmp_path / "s", shard_rows=200
        )


def test_store_bad_input(tmp_path):
    train, _ = _data(n=300)
    with pytest.raises(ValueError, match="index='auto', 'ivf', 'pq' or 'exact'"):
        GMValuator(encoder=project, index="faiss", k=5, recall=20).fit(train, store=tmp_path / "s")
    with pytest.raises(ValueError, match="either cache= or store="):
        GMValuator(encoder=project, k=5, recall=20).fit(
            train, store=tmp_path / "s", cache=tmp_path / "c.npy"
        )
    with pytest.raises(ValueError, match="need store="):
        GMValuator(encoder=project, k=5, recall=20).fit(train, shard_rows=10)
    gmv = GMValuator(encoder=project, k=5, recall=20).fit(train)
    with pytest.raises(ValueError, match="executor= needs"):
        gmv.value(train[:3], executor=cf.ThreadPoolExecutor(1))


def test_merge_best_equals_full_sort():
    """The partition-based merge keeps exactly the full lexsort's best r, ties included."""
    from datacredit.gmvaluator.stages import _merge_best

    rng = np.random.default_rng(0)
    d = rng.integers(0, 6, (50, 300)).astype(np.float32)  # many ties
    d[rng.random(d.shape) < 0.2] = np.inf
    i = rng.permutation(50 * 300).reshape(50, 300).astype(np.int64)
    i[np.isinf(d) & (rng.random(d.shape) < 0.5)] = -1
    for r in (1, 7, 100, 299):
        got_d, got_i = _merge_best(d, i, r)
        key = np.where(i < 0, np.iinfo(np.int64).max, i)
        order = np.lexsort((key, d), axis=-1)[:, :r]
        np.testing.assert_array_equal(got_d, np.take_along_axis(d, order, 1))
        np.testing.assert_array_equal(got_i, np.take_along_axis(i, order, 1))


@pytest.mark.parametrize("ivf", [False, True])
def test_store_pq_equals_in_core_pq(tmp_path, ivf):
    """PQ out of core: codebooks trained on the same rows, codes per shard, ADC search per
    shard merged by (distance, index): the in-core PQ result exactly; recall vs exact."""
    train, gen = _data(n=1500, n_gen=40)
    kw = dict(encoder=project, k=10, recall=60, index="pq", pq_m=6)
    if ivf:
        kw.update(pq_nlist=10, pq_nprobe=4)
    core = GMValuator(**kw).fit(train).value(gen)
    with cf.ThreadPoolExecutor(2) as ex:
        out = GMValuator(**kw).fit(train, store=tmp_path / "s", shard_rows=256, executor=ex)
        res = out.value(gen)
    np.testing.assert_array_equal(res.topk_indices, core.topk_indices)
    np.testing.assert_array_equal(res.values, core.values)
    assert res.diagnostics["pq_m"] == 6 and res.diagnostics["final_recall_at_k"] >= 0.8
    codes = ShardStore(next((tmp_path / "s").glob("pq-*")) / "codes")
    assert codes.n_shards == 6 and codes.complete
    assert ("lists" in codes.manifest["tensors"]) == ivf
    # A second fit reuses the quantizer and the codes.
    again = GMValuator(**kw).fit(train, store=tmp_path / "s", shard_rows=256).value(gen)
    np.testing.assert_array_equal(again.values, res.values)


def test_lists_stage_writes_no_order_and_resumes_an_old_store(tmp_path, monkeypatch):
    """New stores hold only each shard's ``lists``; a partial store written with the unused
    ``order`` tensor (before it was dropped) resumes with it (shards stay alike) and gives
    the same values as a fresh store."""
    from datacredit.gmvaluator import stages

    train, gen = _data()
    kw = dict(encoder=project, k=10, recall=40, index="ivf", pq_nlist=12, pq_nprobe=12)
    fresh = GMValuator(**kw).fit(train, store=tmp_path / "new", shard_rows=256)
    (lists_dir,) = (tmp_path / "new").glob("ivf-*/lists")
    assert set(ShardStore(lists_dir).shard(0)) == {"lists"}
    ref = fresh.value(gen)

    real = stages._lists_shard
    monkeypatch.setattr(
        stages, "_lists_shard", lambda emb, c, t, _with, *a: real(emb, c, t, True, *a)
    )
    GMValuator(**kw).fit(train, store=tmp_path / "old", shard_rows=256)
    monkeypatch.setattr(stages, "_lists_shard", real)
    (old_dir,) = (tmp_path / "old").glob("ivf-*/lists")
    for suffix in (".done", ".safetensors"):  # shard 2 lost: the next fit recomputes it
        (old_dir / f"shard-00002{suffix}").unlink()
    old = GMValuator(**kw).fit(train, store=tmp_path / "old", shard_rows=256)
    store = ShardStore(old_dir)
    assert all(set(store.shard(i)) == {"lists", "order"} for i in range(store.n_shards))
    res = old.value(gen)
    np.testing.assert_array_equal(res.topk_indices, ref.topk_indices)
    np.testing.assert_array_equal(res.values, ref.values)
