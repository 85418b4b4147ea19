"""Sample bank, proxy game and utilities, each against a direct computation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import linalg, stats

from datacredit.surrogateshap import ProxyGame, SampleBank
from datacredit.surrogateshap import utilities as U


class _Interrupted(Exception):
    pass


def _gen(label, n, seed):
    rng = np.random.default_rng(seed)
    return rng.normal(loc=float(label), size=(n, 3)).astype(np.float32)


def _direct_fid(X, W, R):
    """FID from weighted samples (weights sum to 1) via scipy's sqrtm (ddof = 0)."""
    mu = W @ X
    Xc = X - mu
    cov = (Xc * W[:, None]).T @ Xc
    mu_r, cov_r = R.mean(0), np.cov(R, rowvar=False, ddof=0)
    covmean = linalg.sqrtm(cov @ cov_r).real
    return float(np.sum((mu - mu_r) ** 2) + np.trace(cov) + np.trace(cov_r) - 2 * np.trace(covmean))


def _stack(bank, pi):
    xs = [np.asarray(bank.samples_for(lab), dtype=np.float64) for lab in bank.labels]
    X = np.concatenate(xs)
    W = np.concatenate([np.full(len(x), p / len(x)) for x, p in zip(xs, pi)])
    return X, W


def test_bank_memory_disk_resume(tmp_path):
    mem = SampleBank.generate(_gen, [0, 1, 2], 10, seed=3, batch_size=4, progress=False)
    assert mem.labels == [0, 1, 2] and mem.samples_for(1).shape == (10, 3)
    calls = []
    state = {"armed": True}

    def flaky(label, n, seed):
        calls.append((label, n))
        if len(calls) == 5 and state["armed"]:
            state["armed"] = False
            raise _Interrupted
        return _gen(label, n, seed)

    with pytest.raises(_Interrupted):
        SampleBank.generate(flaky, [0, 1, 2], 10, seed=3, path=tmp_path / "b", batch_size=4)
    with pytest.raises(ValueError, match="incomplete"):
        SampleBank.load(tmp_path / "b")
    calls.clear()
    disk = SampleBank.generate(flaky, [0, 1, 2], 10, seed=3, path=tmp_path / "b", batch_size=4)
    # 9 chunks in all, 4 were kept from the interrupted run; +1 call regenerates the first
    # chunk to check that the generator is the one that made the stored chunks
    assert len(calls) == 6
    for lab in [0, 1, 2]:
        np.testing.assert_array_equal(disk.samples_for(lab), mem.samples_for(lab))
    back = SampleBank.load(tmp_path / "b")
    np.testing.assert_array_equal(back.samples_for(2), mem.samples_for(2))
    with pytest.raises(ValueError, match="different bank"):
        SampleBank.generate(_gen, [0, 1], 10, seed=3, path=tmp_path / "b", batch_size=4)
    with pytest.raises(ValueError, match="samples along the first axis"):
        SampleBank.generate(lambda lab, n, s: np.zeros((n + 1, 2)), [0], 3, progress=False)
    with pytest.raises(KeyError, match="not in the sample bank"):
        mem.samples_for(7)


def test_resumed_bank_part_of_the_wrong_shape_is_generated_again(tmp_path):
    """A part file an interrupted run left behind is used only if it is the chunk the bank
    expects (rows, trailing shape, dtype); a damaged or foreign one is regenerated with a
    warning, never concatenated into the bank."""
    mem = SampleBank.generate(_gen, [0, 1], 10, seed=3, batch_size=4, progress=False)
    calls = []

    def flaky(label, n, seed):
        calls.append(label)
        if len(calls) == 6:  # label 1's last chunk: its first two are on disk as parts
            raise _Interrupted
        return _gen(label, n, seed)

    with pytest.raises(_Interrupted):
        SampleBank.generate(flaky, [0, 1], 10, seed=3, path=tmp_path / "b", batch_size=4)
    parts = sorted(p.name for p in (tmp_path / "b").glob("label*.part*.npy"))
    assert parts == ["label1.part0.npy", "label1.part1.npy"]
    np.save(tmp_path / "b" / parts[1], np.zeros((4, 5), np.float64))  # another shape, dtype
    (tmp_path / "b" / parts[0]).write_bytes(b"\x93NUMPY garbage")
    with pytest.warns(RuntimeWarning, match="generated again") as record:
        disk = SampleBank.generate(flaky, [0, 1], 10, seed=3, path=tmp_path / "b", batch_size=4)
    assert sum("generated again" in str(w.message) for w in record) == 2
    for lab in [0, 1]:
        np.testing.assert_array_equal(disk.samples_for(lab), mem.samples_for(lab))


@pytest.mark.parametrize("d,n", [(3, 40), (12, 2)])  # covariance path and Gram path (N < d)
def test_fid_matches_direct(rng, d, n):
    data = {lab: rng.normal(loc=lab, scale=1 + lab, size=(n, d)) for lab in range(4)}
    bank = SampleBank(data)
    R = rng.normal(size=(50, d))
    counts = [5.0, 1.0, 2.0, 7.0]
    fid = U.FID(None, R, estimator="plugin", ddof=0)
    game = ProxyGame(bank, {"a": [0, 1], "b": [1, 2], "c": 3}, fid, label_weights=counts)
    Z = np.array([[1, 0, 0], [0, 1, 1], [1, 1, 1], [0, 0, 1]], dtype=bool)
    got = game(Z)
    assert (game.utility._gram is not None) == (4 * n < d)
    for z, g in zip(Z, got):
        labs = sorted(
            {lab for p, ls in zip("abc", [[0, 1], [1, 2], [3]]) if z["abc".index(p)] for lab in ls}
        )
        pi = np.zeros(4)
        pi[labs] = np.array(counts)[labs] / np.sum(np.array(counts)[labs])
        X, W = _stack(bank, pi)
        assert g == pytest.approx(_direct_fid(X, W, R), rel=1e-6, abs=1e-6)
    # reference given as (mean, cov) gives the same values
    g2 = ProxyGame(
        bank,
        {"a": [0, 1], "b": [1, 2], "c": 3},
        U.FID(None, (R.mean(0), np.cov(R, rowvar=False, ddof=0)), estimator="plugin", ddof=0),
        label_weights=counts,
    )
    np.testing.assert_allclose(g2(Z), got, rtol=1e-9)


def test_fid_features_callable(rng):
    data = {lab: rng.normal(size=(20, 2, 2)) + lab for lab in range(3)}
    bank = SampleBank(data)
    R = rng.normal(size=(30, 4))
    flat = lambda x: x.reshape(len(x), -1)  # noqa: E731
    u = U.FID(flat, R, batch_size=7, estimator="plugin", ddof=0).prepare(bank)
    X, W = _stack(SampleBank({k: flat(v) for k, v in data.items()}), np.ones(3) / 3)
    assert u.evaluate(np.ones(3) / 3)[0] == pytest.approx(_direct_fid(X, W, R), rel=1e-8)


def test_inception_score_mean_score_diversity(rng):
    K = 5
    data = {f"l{i}": rng.dirichlet(np.ones(K) * (0.3 + i), size=30) for i in range(4)}
    bank = SampleBank(data)
    isu = U.InceptionScore(estimator="plugin").prepare(bank)
    pi = np.array([0.1, 0.2, 0.3, 0.4])
    # direct IS on the weighted union of samples
    X, W = _stack(bank, pi)
    pbar = W @ X
    kl = np.sum(X * (np.log(X) - np.log(pbar)), 1)
    assert isu.evaluate(pi)[0] == pytest.approx(np.exp(W @ kl), rel=1e-10)
    ms = U.MeanScore(lambda x: x[:, 0] * 2).prepare(bank)
    assert ms.evaluate(pi)[0] == pytest.approx(W @ (X[:, 0] * 2), rel=1e-12)
    pair = lambda a, b: np.abs(a[:, None, 0] - b[None, :, 0])  # noqa: E731
    div = U.PairwiseDiversity(pair).prepare(bank)
    xs = [bank.samples_for(lab) for lab in bank.labels]
    expect = 0.0
    for i in range(4):
        for j in range(4):
            tot = cnt = 0.0
            for a in range(len(xs[i])):
                for b in range(len(xs[j])):
                    if i == j and a == b:
                        continue
                    tot += abs(xs[i][a, 0] - xs[j][b, 0])
                    cnt += 1
            expect += pi[i] * pi[j] * tot / cnt
    assert div.evaluate(pi)[0] == pytest.approx(expect, rel=1e-10)
    with pytest.raises(ValueError, match="sum to 1"):
        ms.evaluate(np.ones(4))
    with pytest.raises(RuntimeError, match="prepare"):
        U.MeanScore().evaluate(pi)


def test_resampling_and_probe_correlation(rng):
    data = {i: rng.normal(size=(200, 2)) + np.array([i, -i]) for i in range(3)}
    bank = SampleBank(data)
    res = U.Resampled(lambda z: z[:, 0].mean(), n_samples=20000, seed=1).prepare(bank)
    pi = np.array([0.5, 0.0, 0.5])
    mean_direct = 0.5 * data[0][:, 0].mean() + 0.5 * data[2][:, 0].mean()
    assert res.evaluate(pi)[0] == pytest.approx(mean_direct, abs=0.03)
    drawn = res.draw(pi)
    assert not np.isin(drawn[:, 0], data[1][:, 0]).any()  # zero-weight label never drawn
    np.testing.assert_array_equal(drawn, res.draw(pi))  # common random numbers
    pc = U.ProbeCorrelation(lambda x: x[:, 0], lambda x: x[:, 1], n_samples=500, seed=2).prepare(
        bank
    )
    z = pc.draw(np.ones(3) / 3)
    assert pc.evaluate(np.ones(3) / 3)[0] == pytest.approx(
        stats.spearmanr(z[:, 0], z[:, 1])[0], abs=1e-12
    )
    ties = np.array([1, 2, 2, 3, 3, 3, 0.5])
    other = np.array([3, 1, 2, 2, 5, 0, 1])
    assert U.spearman(ties, other) == pytest.approx(stats.spearmanr(ties, other)[0], abs=1e-12)


def test_proxy_game_errors(rng):
    bank = SampleBank({0: rng.normal(size=(5, 2)), 1: rng.normal(size=(5, 2))})
    ms = U.MeanScore(lambda x: x[:, 0], higher_is_better=True)
    with pytest.raises(ValueError, match="missing from the sample bank"):
        ProxyGame(bank, {"a": [0, 5]}, ms, label_weights="uniform")
    with pytest.raises(ValueError, match="no labels"):
        ProxyGame(bank, {"a": []}, ms, label_weights="uniform")
    # π_S: required unless the bank knows the training counts; uniform only by name
    with pytest.raises(ValueError, match="label_weights is required"):
        ProxyGame(bank, {"a": 0, "b": [0, 1]}, ms)
    with pytest.raises(ValueError, match="'uniform'"):
        ProxyGame(bank, {"a": 0, "b": [0, 1]}, ms, label_weights="equal")
    g = ProxyGame(bank, {"a": 0, "b": [0, 1]}, ms, label_weights="uniform")
    with pytest.raises(ValueError, match="empty_value"):
        g(np.zeros((1, 2), bool))
    g2 = ProxyGame(bank, {"a": 0, "b": [0, 1]}, ms, empty_value=-1.0, label_weights="uniform")
    out = g2(np.array([[0, 0], [1, 0], [1, 1], [0, 1]], bool))
    m0, m1 = bank.samples_for(0)[:, 0].mean(), bank.samples_for(1)[:, 0].mean()
    np.testing.assert_allclose(out, [-1.0, m0, (m0 + m1) / 2, (m0 + m1) / 2])
    with pytest.raises(ValueError, match="shape"):
        g2(np.zeros((1, 3), bool))


def test_bank_map_subset_and_features_bank(rng):
    bank = SampleBank({"a": rng.normal(size=(6, 2, 2)), "b": rng.normal(size=(4, 2, 2))})
    fb = bank.map(lambda x: x.reshape(len(x), -1).sum(1, keepdims=True), batch_size=4)
    np.testing.assert_allclose(
        fb.samples_for("b")[:, 0], bank.samples_for("b").reshape(4, -1).sum(1)
    )
    assert fb.labels == ["a", "b"] and bank.subset(["b"]).labels == ["b"]
    # a feature bank feeds the utilities directly (features=None)
    ms = U.MeanScore(higher_is_better=True).prepare(fb)
    assert ms.evaluate([0.5, 0.5])[0] == pytest.approx(
        0.5 * fb.samples_for("a").mean() + 0.5 * fb.samples_for("b").mean()
    )
    with pytest.raises(TypeError, match="int or str"):
        SampleBank({1.5: np.zeros((2, 1))})


def _pytorch_fid_formula(X, R):
    """pytorch-fid's calculate_frechet_distance on np.cov statistics (ddof = 1), via scipy."""
    mu1, mu2 = X.mean(0), R.mean(0)
    s1, s2 = np.atleast_2d(np.cov(X, rowvar=False)), np.atleast_2d(np.cov(R, rowvar=False))
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


@pytest.mark.parametrize("d", [1, 5])
def test_fid_plugin_ddof1_is_pytorch_fid_and_d1_works(rng, d):
    """r18: FID with d = 1 raised LinAlgError; the plug-in follows pytorch-fid's ddof = 1."""
    X = rng.normal(size=(20, d))
    R = rng.normal(size=(30, d)) + 0.5
    u = U.FID(None, R, estimator="plugin").prepare(SampleBank({0: X}))
    assert u.evaluate(np.ones(1))[0] == pytest.approx(_pytorch_fid_formula(X, R), rel=1e-9)
    bank = SampleBank({0: X, 1: rng.normal(size=(20, d)) + 1})
    for est in ("plugin", "split"):
        vals = U.FID(None, R, estimator=est).prepare(bank).evaluate([[0.5, 0.5], [1, 0]])
        assert np.isfinite(vals).all()
    with pytest.raises(ValueError, match="column"):
        U.FID(None, R[:, 0])


def test_fid_split_gram_path_equals_matrix_path(rng):
    # 4 labels x 8 samples = 32 < d = 40: the Gram path; gram_limit=0 forces the d x d path
    bank = SampleBank({lab: rng.normal(size=(8, 40)) * (1 + lab) for lab in range(4)})
    R = rng.normal(size=(60, 40))
    W = rng.dirichlet(np.ones(4), size=3)
    for K in (2, 4):
        a = U.FID(None, R, n_splits=K).prepare(bank)
        b = U.FID(None, R, gram_limit=0, n_splits=K).prepare(bank)
        assert a._gram is not None and b._gram is None
        # rank-2 groups: most eigenvalues are ~0, and √ turns their round-off ε·‖M‖ into
        # up to d·√(ε‖M‖) in the trace (‖M‖ ≤ 16·40: 1.5e-5 here; measured 1.5e-6)
        tol = 40 * np.sqrt(np.finfo(float).eps * 16 * 40)
        np.testing.assert_allclose(a.evaluate(W), b.evaluate(W), rtol=1e-8, atol=tol)
    with pytest.raises(ValueError, match="n_splits"):
        U.FID(None, R, n_splits=1)
    with pytest.raises(ValueError, match="needs >= 2·n_splits = 6"):
        U.FID(None, R, n_splits=3).prepare(SampleBank({0: rng.normal(size=(5, 40))}))


def _analytic_fid(pi, means, sig, d):
    """FID of the Gaussian-mixture moments (labels N(m_l, s_l² I)) to the reference N(0, I)."""
    mu = pi @ means
    S = sum(p * (s**2 * np.eye(d) + np.outer(m, m)) for p, m, s in zip(pi, means, sig))
    S = S - np.outer(mu, mu)
    ev = np.linalg.eigvalsh(S)
    return float(mu @ mu + np.trace(S) + d - 2 * np.sqrt(np.clip(ev, 0, None)).sum())


def test_fid_bias_correction_recovers_analytic_shapley_values():
    """Gaussian labels with analytic FID, a bank of 60 per label: the default (split) FID's
    exact Shapley values of −FID are within 1.5 % of the analytic ones; the plug-in's are not."""
    from datacredit import shapley

    L, d, n = 8, 32, 60
    Z = shapley.all_coalitions(L)
    errs, rhos, plug = [], [], []
    for seed in range(5):
        rng = np.random.default_rng(seed)
        means = rng.normal(size=(L, d)) * 0.3
        sig = np.linspace(0.5, 2.5, L)[rng.permutation(L)]
        empty = _analytic_fid(np.ones(1), np.zeros((1, d)), [4.0], d)  # "noise": N(0, 16 I)
        pis = Z / np.maximum(Z.sum(1, keepdims=True), 1)
        truth = np.array([_analytic_fid(p, means, sig, d) if p.sum() else empty for p in pis])
        exact = shapley.shapley_from_table(-truth, L)
        data = {lab: means[lab] + sig[lab] * rng.standard_normal((n, d)) for lab in range(L)}
        for est, out in (("split", errs), ("plugin", plug)):
            game = ProxyGame(
                SampleBank(data),
                {f"p{lab}": [lab] for lab in range(L)},
                U.FID(None, (np.zeros(d), np.eye(d)), estimator=est),
                label_weights=np.ones(L),
                empty_value=empty,
            )
            phi = shapley.exact(shapley.FunctionGame(lambda Z, g=game: -g(Z), L)).values
            out.append(np.linalg.norm(phi - exact) / np.linalg.norm(exact))
            if est == "split":
                rhos.append(stats.spearmanr(phi, exact)[0])
    assert np.mean(errs) <= 0.015 and min(rhos) >= 0.93
    assert np.mean(plug) > 1.5 * np.mean(errs)


def test_label_weights_huge_and_from_training_labels(rng):
    """label_weights=1e308 overflowed to inf and evaluated every coalition as empty."""
    data = {0: rng.normal(size=(5, 2)), 1: rng.normal(size=(5, 2)) + 3}
    ms = U.MeanScore(lambda x: x[:, 0], higher_is_better=True)
    Z = np.array([[1, 0], [1, 1]], bool)
    ref = ProxyGame(SampleBank(data), {"a": 0, "b": 1}, ms, label_weights=[1.0, 3.0])(Z)
    huge = ProxyGame(SampleBank(data), {"a": 0, "b": 1}, ms, label_weights=[1e308 / 3, 1e308])
    np.testing.assert_allclose(huge(Z), ref, rtol=1e-12)
    both = ProxyGame(SampleBank(data), {"a": 0, "b": 1}, ms, label_weights=[1e308, 1e308])
    m = [data[0][:, 0].mean(), data[1][:, 0].mean()]
    np.testing.assert_allclose(both(Z), [m[0], (m[0] + m[1]) / 2], rtol=1e-12)
    with pytest.raises(ValueError, match="finite"):
        ProxyGame(SampleBank(data), {"a": 0, "b": 1}, ms, label_weights=[np.inf, 1.0])
    # the empirical training frequency is the default when the bank knows it (eq. 4)
    y_train = np.array([0, 1, 1, 1])
    bank = SampleBank.generate(
        lambda lab, n, s: data[lab][:n], [0, 1], 5, progress=False, train_labels=y_train
    )
    assert bank.label_counts == {0: 1.0, 1: 3.0}
    np.testing.assert_allclose(ProxyGame(bank, {"a": 0, "b": 1}, ms)(Z), ref, rtol=1e-12)


def test_r16_resume_refuses_another_generator_or_transform(tmp_path):
    """r16: resuming at the same path with another generator mixed the two banks."""
    d = tmp_path / "bank"
    SampleBank.generate(lambda lab, n, s: np.zeros((n, 2)), [0, 1], 10, path=d, progress=False)
    with pytest.raises(ValueError, match="does not reproduce"):
        SampleBank.generate(lambda lab, n, s: np.ones((n, 2)), [0, 1], 10, path=d, progress=False)
    with pytest.raises(ValueError, match="transform"):
        SampleBank.generate(
            lambda lab, n, s: np.zeros((n, 2)), [0, 1], 10, path=d, progress=False, transform=abs
        )
    # the same generator resumes (reuses the stored bank)
    b = SampleBank.generate(lambda lab, n, s: np.zeros((n, 2)), [0, 1], 10, path=d, progress=False)
    assert np.asarray(b.samples_for(1)).mean() == 0.0
    # an explicit fingerprint replaces the first-chunk check and must match
    e = tmp_path / "fp"
    SampleBank.generate(_gen, [0], 4, path=e, progress=False, fingerprint="model-v1")
    with pytest.raises(ValueError, match="fingerprint"):
        SampleBank.generate(_gen, [0], 4, path=e, progress=False, fingerprint="model-v2")
    back = SampleBank.load(e)
    assert back.meta["fingerprint"] == "model-v1" and back.meta["generator"].endswith("_gen")


def test_sufficiency_diagnostic_warns_for_a_small_bank():
    rng = np.random.default_rng(0)
    shift = np.linspace(0, 1, 4)

    def bank(n):
        return SampleBank({lab: rng.normal(size=(n, 1)) * 3 + shift[lab] for lab in range(4)})

    def game(b):
        ms = U.MeanScore(higher_is_better=True)
        return ProxyGame(b, {f"p{lab}": lab for lab in range(4)}, ms, label_weights="uniform")

    small = game(bank(8))
    with pytest.warns(UserWarning, match="too small"):
        rep = small.sufficiency()
    assert not rep.sufficient and rep.half_values.shape == (2, 4)
    # the halves' means, recomputed directly
    x0 = np.asarray(small.bank.samples_for(0))[:, 0]
    assert rep.singleton_values[0] == pytest.approx(x0.mean())
    assert np.mean(rep.half_values[:, 0]) == pytest.approx(x0.mean())
    big = game(bank(20000))
    rep = big.sufficiency()
    assert rep.sufficient and rep.ratio < 0.5
    # the game itself is unchanged by the diagnostic
    np.testing.assert_allclose(big(np.eye(4, dtype=bool)), rep.singleton_values)


def test_sampled_pair_diversity_converges_to_all_pairs(rng):
    data = {lab: rng.normal(size=(12, 1)) * (1 + lab) for lab in range(3)}
    bank = SampleBank(data)

    def dist(a, b):
        return np.abs(a[:, 0] - b[:, 0])

    exact = U.PairwiseDiversity(lambda a, b: np.abs(a[:, None, 0] - b[None, :, 0])).prepare(bank)
    n_pairs = 20000
    est = U.SampledPairDiversity(dist, n_pairs=n_pairs, seed=1, batch_size=5000).prepare(bank)
    # standard error of a mean of n_pairs distances: sd(all pair distances) / sqrt(n_pairs)
    for i in range(3):
        for j in range(3):
            a, b = data[i][:, 0], data[j][:, 0]
            d = np.abs(a[:, None] - b[None, :])
            if i == j:
                d = d[~np.eye(len(a), dtype=bool)]
            assert abs(est.D[i, j] - exact.D[i, j]) < 5 * d.std() / np.sqrt(n_pairs)
    pi = np.array([[0.2, 0.3, 0.5]])
    assert est.evaluate(pi)[0] == pytest.approx(float(pi[0] @ est.D @ pi[0]))
    with pytest.raises(ValueError, match="n_pairs"):
        U.SampledPairDiversity(dist, n_pairs=0)


def test_msssim_distance_matches_pytorch_msssim(rng):
    pytest.importorskip("pytorch_msssim")
    import torch
    from pytorch_msssim import ms_ssim

    from datacredit.models import MSSSIMDistance

    a = rng.random((3, 1, 72, 72))
    b = np.clip(a + 0.1 * rng.standard_normal(a.shape), 0, 1)
    dist = MSSSIMDistance(weights=[0.5, 0.5], win_size=3)
    got = dist(a, b)
    ref = (
        1
        - ms_ssim(
            torch.from_numpy(a),
            torch.from_numpy(b),
            data_range=1.0,
            size_average=False,
            win_size=3,
            weights=[0.5, 0.5],
        ).numpy()
    )
    np.testing.assert_allclose(got, ref, rtol=1e-10)
    np.testing.assert_allclose(dist(a, a), 0, atol=1e-12)
    assert (got > 0).all()
    with pytest.raises(ValueError, match="too small"):
        MSSSIMDistance()(a, b)  # win_size 11 needs > 160 pixels
    # as a diversity utility: identical samples within a label have zero diversity
    bank = SampleBank({0: np.repeat(a[:1], 4, 0), 1: b})
    div = U.SampledPairDiversity(dist, n_pairs=8).prepare(bank)
    assert div.D[0, 0] == pytest.approx(0, abs=1e-12) and div.D[1, 1] > 0


def test_label_seeing_score_paired_to_reference(rng):
    from datacredit.models import PairedToReference

    data = {"p": rng.normal(size=(6, 2, 2)), "q": rng.normal(size=(4, 2, 2)) + 1}
    refs = {"p": np.zeros((2, 2)), "q": np.ones((2, 2))}

    def l2(a, b):
        return np.sqrt(((np.asarray(a) - np.asarray(b)) ** 2).reshape(len(a), -1).sum(1))

    ms = U.MeanScore(
        PairedToReference(l2, refs), sees_label=True, batch_size=4, higher_is_better=False
    )
    game = ProxyGame(SampleBank(data), {"A": "p", "B": "q"}, ms, label_weights=[1.0, 3.0])
    direct = {k: l2(v, np.broadcast_to(refs[k], v.shape)).mean() for k, v in data.items()}
    got = game(np.array([[1, 0], [1, 1]], bool))
    np.testing.assert_allclose(got, [direct["p"], 0.25 * direct["p"] + 0.75 * direct["q"]])
    with pytest.raises(KeyError, match="no reference"):
        U.MeanScore(PairedToReference(l2, {"p": refs["p"]}), sees_label=True).prepare(
            SampleBank(data)
        )


def test_fid_sample_path_for_many_labels_equals_matrix_path(rng):
    # many labels: per-label d x d matrices are replaced by the samples themselves
    bank = SampleBank({lab: rng.normal(size=(6, 5)) + 0.1 * lab for lab in range(12)})
    R = rng.normal(size=(40, 5))
    W = rng.dirichlet(np.ones(12), size=3)
    W[0, :6] = 0
    W[0] /= W[0].sum()
    for est in ("split", "plugin"):
        a = U.FID(None, R, estimator=est, gram_limit=0).prepare(bank)
        b = U.FID(None, R, estimator=est, gram_limit=0, max_matrix_bytes=0).prepare(bank)
        assert a._A is not None and b._A is None and b._Y is not None
        np.testing.assert_allclose(b.evaluate(W), a.evaluate(W), rtol=1e-9)


def test_utility_settings_key_follows_what_the_utility_computes(rng):
    """settings_key: equal for equal settings, different for another estimator, K,
    reference or features function (the retraining game's cache keys on it)."""
    R = rng.normal(size=(30, 4))
    f = lambda x: x  # noqa: E731
    base = U.FID(f, R).settings_key()
    assert base == U.FID(f, R.copy()).settings_key()
    assert base != U.FID(f, R, estimator="plugin").settings_key()
    assert base != U.FID(f, R, n_splits=2).settings_key()
    assert base != U.FID(f, R + 1e-3).settings_key()
    assert base != U.FID(lambda x: x * 2, R).settings_key()  # another callable's name
    isu = U.InceptionScore()
    assert isu.settings_key() != U.InceptionScore(estimator="plugin").settings_key()
    assert isu.settings_key() == U.InceptionScore().settings_key()
    bank = SampleBank({0: rng.dirichlet(np.ones(3), size=12)})
    before = isu.settings_key()
    isu.prepare(bank)
    assert isu.settings_key() == before  # preparing does not change what it computes
