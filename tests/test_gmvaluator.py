"""GMValuator: exactness against a direct numpy implementation of eqs. 5-6, PQ recall,
re-rankers, quality weighting, grouping, persistence and bad input."""

from __future__ import annotations

import numpy as np
import pytest

import datacredit
from datacredit.gmvaluator import GMValuation, GMValuator


def _data(rng, n=600, n_gen=40, d=32, centres=12):
    c = rng.standard_normal((centres, d)) * 4
    train = (c[rng.integers(0, centres, n)] + rng.standard_normal((n, d))).astype(np.float32)
    gen = (c[rng.integers(0, centres, n_gen)] + rng.standard_normal((n_gen, d))).astype(np.float32)
    return train, gen


def _reference(train, gen, k, temperature=1.0, q=None, metric="l2"):
    """Eqs. 5-6 directly: all distances, top-k per generated sample, q * softmax(-d/T)."""
    t = train.astype(np.float64)
    g = gen.astype(np.float64)
    if metric == "l2":
        dist = np.sqrt(((g[:, None, :] - t[None]) ** 2).sum(-1))
    else:
        dist = 1 - (g @ t.T) / np.outer(np.linalg.norm(g, axis=1), np.linalg.norm(t, axis=1))
    q = np.ones(len(g)) if q is None else q
    values = np.zeros(len(t))
    tops = []
    for j in range(len(g)):
        top = np.argsort(dist[j], kind="stable")[:k]
        w = np.exp(-dist[j, top] / temperature)
        w = q[j] * w / w.sum()
        values[top] += w
        tops.append(top)
    return values, np.array(tops)


@pytest.mark.parametrize("temperature", [1.0, 0.05])
def test_exact_index_equals_numpy_reference(rng, temperature):
    train, gen = _data(rng)
    q = rng.uniform(0, 1, len(gen))
    gmv = GMValuator(k=10, recall=40, index="exact", rerank="l2", temperature=temperature)
    res = gmv.fit(train).value(gen, quality_scores=q)
    ref_values, ref_top = _reference(train, gen, 10, temperature, q)
    np.testing.assert_array_equal(res.topk_indices, ref_top)
    np.testing.assert_allclose(res.values, ref_values, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(res.topk_weights.sum(1), q, rtol=1e-12)
    # Efficiency of the value function: total value = total quality.
    assert res.values.sum() == pytest.approx(q.sum())


def test_cosine_rerank_equals_reference(rng):
    train, gen = _data(rng)
    res = GMValuator(k=7, recall=len(train), index="exact", rerank="cosine").fit(train).value(gen)
    ref_values, ref_top = _reference(train, gen, 7, metric="cosine")
    np.testing.assert_array_equal(res.topk_indices, ref_top)
    np.testing.assert_allclose(res.values, ref_values, rtol=1e-9, atol=1e-12)


def test_large_distances_do_not_underflow(rng):
    # The published demo divides by zero here: exp(-d) underflows for every candidate.
    train, gen = _data(rng, d=16)
    res = (
        GMValuator(k=5, recall=20, index="exact", temperature=1e-3)
        .fit(train * 1e4)
        .value(gen * 1e4)
    )
    assert np.isfinite(res.values).all()
    np.testing.assert_allclose(res.topk_weights.sum(1), 1.0)


def test_pq_index_recall_and_diagnostics(rng):
    train, gen = _data(rng, n=3000, n_gen=60, d=32)
    gmv = GMValuator(k=10, recall=100, index="pq", pq_m=16, diagnostics_sample=60)
    res = gmv.fit(train).value(gen)
    exact = GMValuator(k=10, recall=100, index="exact").fit(train).value(gen)
    overlap = np.mean(
        [len(np.intersect1d(a, b)) / 10 for a, b in zip(res.topk_indices, exact.topk_indices)]
    )
    assert res.diagnostics["final_recall_at_k"] == pytest.approx(overlap)
    assert overlap >= 0.95
    assert res.diagnostics["pq_m"] == 16 and res.diagnostics["pq_nbits"] == 8
    # Re-ranked distances are exact Euclidean distances of the kept candidates.
    d = np.linalg.norm(gen[:, None, :].astype(np.float64) - train[res.topk_indices], axis=-1)
    np.testing.assert_allclose(res.topk_distances, d, rtol=1e-9)


def test_faiss_index_runs(rng):
    pytest.importorskip("faiss")
    train, gen = _data(rng, n=2000, d=32)
    res = GMValuator(k=5, recall=50, index="faiss", pq_m=16).fit(train).value(gen)
    assert res.diagnostics["final_recall_at_k"] >= 0.9


def test_no_rerank_uses_recall_distances(rng):
    train, gen = _data(rng)
    res = GMValuator(k=5, recall=5, index="exact", rerank=None).fit(train).value(gen)
    ref_values, ref_top = _reference(train, gen, 5)
    np.testing.assert_array_equal(res.topk_indices, ref_top)
    np.testing.assert_allclose(res.values, ref_values, rtol=1e-4)


def test_callable_rerank_and_quality_on_raw_data(rng):
    train, gen = _data(rng, n=300, n_gen=12, d=8)
    imgs_t, imgs_g = train.reshape(-1, 2, 4), gen.reshape(-1, 2, 4)

    def l1(a, b):  # image-space distance on aligned pairs
        return np.abs(np.asarray(a) - np.asarray(b)).reshape(len(a), -1).sum(1)

    def quality(batch):
        return np.full(len(batch), 0.5)

    gmv = GMValuator(
        encoder="pixels", k=4, recall=300, index="exact", rerank=l1, quality=quality, batch_size=64
    )
    res = gmv.fit(imgs_t).value(imgs_g)
    dist = np.abs(gen[:, None, :] - train[None]).sum(-1).astype(np.float64)
    for j in range(len(gen)):
        top = np.argsort(dist[j], kind="stable")[:4]
        np.testing.assert_array_equal(res.topk_indices[j], top)
    np.testing.assert_allclose(res.quality, 0.5)
    assert res.values.sum() == pytest.approx(0.5 * len(gen))


def test_torch_module_encoder(rng):
    torch = pytest.importorskip("torch")
    train, gen = _data(rng, n=200, n_gen=10, d=8)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 6), torch.nn.Tanh())
    res = (
        GMValuator(encoder=net, k=3, recall=10, index="exact")
        .fit(torch.from_numpy(train))
        .value(torch.from_numpy(gen))
    )
    with torch.no_grad():
        et, eg = net(torch.from_numpy(train)).numpy(), net(torch.from_numpy(gen)).numpy()
    ref_values, _ = _reference(et, eg, 3)
    np.testing.assert_allclose(res.values, ref_values, rtol=1e-5, atol=1e-7)


def test_by_group_to_frame_save_load(rng, tmp_path):
    train, gen = _data(rng)
    res = GMValuator(k=5, recall=20, index="exact").fit(train).value(gen)
    groups = np.arange(len(train)) % 7
    labels, s = res.by_group(groups, "sum")
    _, mean = res.by_group(groups, "mean")
    _, mx = res.by_group(groups, "max")
    for g in labels:
        member = res.values[groups == g]
        assert s[g] == pytest.approx(member.sum())
        assert mean[g] == pytest.approx(member.mean())
        assert mx[g] == member.max()
    with pytest.raises(ValueError, match="agg"):
        res.by_group(groups, "median")
    with pytest.raises(ValueError, match="groups"):
        res.by_group(groups[:-1])
    frame = res.to_frame()
    assert (
        frame["rank"].min() == 1
        and frame.loc[frame["rank"] == 1, "value"].item() == res.values.max()
    )
    path = tmp_path / "v.npz"
    res.save(path)
    back = GMValuation.load(path)
    np.testing.assert_array_equal(back.values, res.values)
    np.testing.assert_array_equal(back.topk_indices, res.topk_indices)
    assert back.diagnostics["k"] == 5


def test_embedding_cache(rng, tmp_path):
    train, gen = _data(rng, n=100)
    calls = []

    def enc(b):
        calls.append(len(b))
        return np.asarray(b)

    path = tmp_path / "emb.npy"
    GMValuator(encoder=enc, k=2, recall=4, index="exact").fit(train, cache=path)
    n_calls = len(calls)
    g = GMValuator(encoder=enc, k=2, recall=4, index="exact").fit(train, cache=path)
    assert len(calls) == n_calls  # second fit read the cache
    np.testing.assert_array_equal(g.train_embeddings, train)
    with pytest.raises(ValueError, match="cache"):
        GMValuator(encoder=enc, k=2, recall=4, index="exact").fit(train[:50], cache=path)


def test_top_level_export():
    assert datacredit.GMValuator is GMValuator


def test_bad_input(rng):
    train, gen = _data(rng, n=100, d=8)
    with pytest.raises(ValueError, match="must not exceed recall"):
        GMValuator(k=10, recall=5)
    with pytest.raises(ValueError, match="index"):
        GMValuator(index="hnsw")
    with pytest.raises(ValueError, match="temperature"):
        GMValuator(temperature=0)
    with pytest.raises(ValueError, match="recall = 200 exceeds"):
        GMValuator(k=5, recall=200).fit(train)
    with pytest.raises(ValueError, match="empty"):
        GMValuator(k=5, recall=10).fit(train[:0])
    gmv = GMValuator(k=5, recall=10, index="exact")
    with pytest.raises(RuntimeError, match="not fitted"):
        gmv.value(gen)
    gmv.fit(train)
    with pytest.raises(ValueError, match="empty"):
        gmv.value(gen[:0])
    with pytest.raises(ValueError, match="dimension"):
        gmv.value(gen[:, :4])
    bad = gen.copy()
    bad[1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        gmv.value(bad)
    nan_train = train.copy()
    nan_train[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        GMValuator(k=5, recall=10).fit(nan_train)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        gmv.value(gen, quality_scores=np.full(len(gen), 1.5))
    with pytest.raises(ValueError, match="shape"):
        gmv.value(gen, quality_scores=np.ones(3))
    with pytest.raises(ValueError, match="unknown encoder"):
        GMValuator(encoder="resnet")
    with pytest.raises(ValueError, match="image distance"):
        GMValuator(rerank="ssim")


def test_pq_with_ivf(rng):
    train, gen = _data(rng, n=4000, n_gen=50, d=32)
    res = (
        GMValuator(
            k=10, recall=100, index="pq", pq_m=16, pq_nlist=16, pq_nprobe=4, diagnostics_sample=50
        )
        .fit(train)
        .value(gen)
    )
    assert res.diagnostics["pq_nlist"] == 16 and res.diagnostics["pq_nprobe"] == 4
    assert res.diagnostics["final_recall_at_k"] >= 0.95
    assert (res.topk_indices >= 0).all()
    np.testing.assert_allclose(res.topk_weights.sum(1), 1.0)
    # a probe of one tiny list cannot fill `recall` slots: exact candidates fill the rows
    res1 = (
        GMValuator(
            k=10, recall=1000, index="pq", pq_m=16, pq_nlist=16, pq_nprobe=1, diagnostics_sample=0
        )
        .fit(train)
        .value(gen)
    )
    assert (res1.topk_indices >= 0).all()


def test_ivf_exact_within_lists(rng):
    train, gen = _data(rng, n=3000, n_gen=40, d=16)
    # probing every list is exact search
    full = GMValuator(k=8, recall=30, index="ivf", pq_nlist=10, pq_nprobe=10).fit(train)
    exact = GMValuator(k=8, recall=30, index="exact").fit(train)
    a, b = full.value(gen), exact.value(gen)
    np.testing.assert_array_equal(a.topk_indices, b.topk_indices)
    np.testing.assert_allclose(a.values, b.values, rtol=1e-9, atol=1e-12)
    part = (
        GMValuator(k=8, recall=30, index="ivf", pq_nlist=10, pq_nprobe=3, diagnostics_sample=40)
        .fit(train)
        .value(gen)
    )
    assert part.diagnostics["final_recall_at_k"] >= 0.95
    assert (part.topk_indices >= 0).all()


def test_ivf_small_lists_keep_valid_candidates(rng):
    train, gen = _data(rng, n=500, n_gen=20, d=8)
    res = (
        GMValuator(k=5, recall=300, index="ivf", pq_nlist=40, pq_nprobe=2, diagnostics_sample=20)
        .fit(train)
        .value(gen)
    )
    assert (res.topk_indices >= 0).all() and np.isfinite(res.topk_distances).all()
    for row in res.topk_indices:
        assert len(set(row)) == len(row)


def test_auto_index_is_exact_when_small_and_ivf_when_large(rng, monkeypatch):
    from datacredit.gmvaluator import valuator

    train, gen = _data(rng, n=3000, n_gen=30, d=16)
    small = GMValuator(k=8, recall=30).fit(train)  # default index="auto"
    assert small.index == "auto" and small.index_ == "exact"
    res = small.value(gen)
    ref_values, ref_top = _reference(train, gen, 8)
    np.testing.assert_array_equal(res.topk_indices, ref_top)
    np.testing.assert_allclose(res.values, ref_values, rtol=1e-9, atol=1e-12)
    assert res.diagnostics["index"] == "exact"

    monkeypatch.setattr(valuator, "AUTO_IVF_MIN_TRAIN", 1000)
    large = GMValuator(k=8, recall=30, diagnostics_sample=30).fit(train)
    assert large.index_ == "ivf"
    res = large.value(gen)
    assert res.diagnostics["index"] == "ivf"
    assert res.diagnostics["final_recall_at_k"] >= 0.9
