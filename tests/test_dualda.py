"""DualDA: attributions against brute force, conservation, Theorem 3.1, cache, errors."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from datacredit import DualDA  # noqa: E402
from datacredit.kernels import crammer_singer_fit  # noqa: E402

# Most fits below only need the algebraic identities, not a converged surrogate.
pytestmark = pytest.mark.filterwarnings("ignore:the SVM solver stopped:RuntimeWarning")


class MLP(nn.Module):
    def __init__(self, d_in=6, hidden=10, k=3):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(d_in, 16), nn.ReLU(), nn.Linear(16, hidden), nn.ReLU())
        self.fc = nn.Linear(hidden, k)

    def forward(self, x):
        return self.fc(self.body(x))


def blobs(n, d=6, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(k, d, generator=g) * 2.0
    y = torch.randint(0, k, (n,), generator=g)
    x = centers[y] + torch.randn(n, d, generator=g)
    return x, y


@pytest.fixture(scope="module")
def trained():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model: one thread is fastest, above all on a busy machine
    torch.manual_seed(0)
    x, y = blobs(240)
    model = MLP()
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    xt, yt = blobs(40, seed=1)
    yield model, x, y, xt, yt
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def fitted(trained):
    model, x, y, _, _ = trained
    return DualDA(model, (x, y), layer="fc", C=0.05, progress=False, tol=1e-6, max_iter=50000).fit()


def features(model, x):
    return model.body(x).detach().double().numpy()


def test_dense_matches_brute_force_and_conservation(trained, fitted):
    model, x, y, xt, _ = trained
    dd = fitted
    f_tr, f_te = features(model, x), features(model, xt)
    lam = dd.global_attribution()
    assert lam.shape == (240, 3)
    for c in range(3):
        tau = dd.attribute(xt, targets=c)
        ref = (f_te @ f_tr.T) * lam[:, c][None, :]
        np.testing.assert_allclose(tau, ref, rtol=1e-4, atol=1e-6)
        # conservation: sum_i tau + bias_c = surrogate logit c
        logits = dd.surrogate_logits(xt)
        np.testing.assert_allclose(tau.sum(1) + dd.bias[c], logits[:, c], rtol=1e-4, atol=1e-5)
    # default targets = model predictions
    pred = model(xt).argmax(1).numpy()
    tau = dd.attribute(xt)
    np.testing.assert_allclose(tau, (f_te @ f_tr.T) * lam[:, pred].T, rtol=1e-4, atol=1e-6)
    # non-support samples get exactly 0
    non_sv = np.setdiff1d(np.arange(240), dd.support)
    assert np.all(tau[:, non_sv] == 0.0)
    # surrogate W = lambda^T F, bias = sum lambda
    np.testing.assert_allclose(dd.coef, lam.T @ f_tr, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(dd.bias, lam.sum(0), atol=1e-12)


def test_top_k_matches_dense(trained, fitted):
    _, _, _, xt, _ = trained
    dense = fitted.attribute(xt)
    vals, idx = fitted.attribute(xt, top_k=7)
    assert vals.shape == (40, 7) and idx.dtype == np.int64
    order = np.argsort(-dense, axis=1, kind="stable")[:, :7]
    np.testing.assert_allclose(vals, np.take_along_axis(dense, order, 1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.take_along_axis(dense, idx, 1), vals, rtol=1e-5, atol=1e-6)


def test_top_k_beyond_support(trained):
    model, x, y, xt, _ = trained
    dd = DualDA(model, (x, y), layer="fc", C=5.0, progress=False).fit()
    k = min(dd.n_support + 5, 240)
    vals, idx = dd.attribute(xt[:3], top_k=k)
    dense = dd.attribute(xt[:3])
    ref = -np.sort(-dense, axis=1)[:, :k]
    np.testing.assert_allclose(vals, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.take_along_axis(dense, idx, 1), vals, rtol=1e-5, atol=1e-6)
    assert all(len(set(r)) == k for r in idx)


def test_self_influence_kinds(trained, fitted):
    model, x, y, _, _ = trained
    f = features(model, x)
    lam_y = fitted.global_attribution()[np.arange(240), y.numpy()]
    sq = (f**2).sum(1)
    np.testing.assert_allclose(fitted.self_influence(), lam_y * sq, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(fitted.self_influence("lambda_norm"), lam_y * np.sqrt(sq), rtol=1e-5)
    np.testing.assert_allclose(fitted.self_influence("lambda"), lam_y)
    # lambda_norm2 is the self-attribution tau_{y_i}(x_i, i)
    tau_self = fitted.attribute(x[:20], targets=y[:20])[np.arange(20), np.arange(20)]
    np.testing.assert_allclose(tau_self, fitted.self_influence()[:20], rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="unknown kind"):
        fitted.self_influence("norm")


def test_theorem_3_1_finite_difference(trained):
    """tau_c(x, i) = d/d eps of the surrogate output W f_x when sample i's loss weight is
    1 - eps (Theorem 3.1), checked against an exact refit.  The theorem's derivation keeps
    the other dual variables fixed; an exact refit agrees when no support vector sits on
    the margin, which holds here (binary labels on the model's features, small C: every
    lambda at a bound, asserted below)."""
    model, x, y, xt, _ = trained
    f = features(model, x).astype(np.float32)
    ft = features(model, xt)
    yy = (y.numpy() == 0).astype(np.int64)
    c = 1e-5
    res = crammer_singer_fit(f, yy, c, tol=1e-9, max_iter=100000)
    assert res.converged
    lam = res.dual_coef
    assert np.all(np.isin(np.round(lam / c, 7), [-1.0, 0.0, 1.0]))  # no free dual variable
    scores = f.astype(np.float64) @ res.coef.T + res.bias
    for i in range(0, 240, 30):
        margin = 1.0 + scores[i, 1 - yy[i]] - scores[i, yy[i]]
        assert margin > 1e-3  # strictly violating, so not on the margin
        eps = 1e-3
        w = np.ones(len(yy))
        w[i] = 1.0 - eps
        res_i = crammer_singer_fit(f, yy, c, tol=1e-9, max_iter=100000, sample_weight=w)
        fd = (ft @ res.coef.T - ft @ res_i.coef.T) / eps  # (n_test, K), bias part excluded
        tau = (ft @ f[i].astype(np.float64))[:, None] * lam[i][None, :]
        np.testing.assert_allclose(fd, tau, rtol=1e-6, atol=1e-12)
        # and DualDA's definition: the class-y_i attribution is +C f_i.f_x, the other -C f_i.f_x
        np.testing.assert_allclose(tau[:, yy[i]], c * (ft @ f[i]), rtol=1e-9)


def test_cache_roundtrip(trained, tmp_path):
    model, x, y, xt, _ = trained
    a = DualDA(model, (x, y), layer="fc", C=0.05, cache_dir=tmp_path, progress=False).fit()
    assert not a.loaded_from_cache
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1
    with np.load(files[0], allow_pickle=False) as z:  # non-executable format
        assert z["features"].shape[0] == a.n_support
    b = DualDA(model, (x, y), layer="fc", C=0.05, cache_dir=tmp_path, progress=False).fit()
    assert b.loaded_from_cache
    np.testing.assert_array_equal(a.attribute(xt), b.attribute(xt))
    np.testing.assert_array_equal(a.global_attribution(), b.global_attribution())
    c = DualDA(model, (x, y), layer="fc", C=0.1, cache_dir=tmp_path, progress=False).fit()
    assert not c.loaded_from_cache  # another C, another entry
    y2 = y.clone()
    y2[0] = (y2[0] + 1) % 3
    d = DualDA(model, (x, y2), layer="fc", C=0.05, cache_dir=tmp_path, progress=False).fit()
    assert not d.loaded_from_cache  # data fingerprint changed
    assert len(list(tmp_path.glob("*.npz"))) == 3
    assert not list(tmp_path.glob(".dualda-*"))  # no temporary files left


def test_dataset_dataloader_and_predictions(trained, fitted):
    model, x, y, xt, _ = trained
    ds = torch.utils.data.TensorDataset(x, y)
    a = DualDA(model, ds, layer="fc", C=0.05, progress=False, tol=1e-6, max_iter=50000).fit()
    np.testing.assert_allclose(a.attribute(xt), fitted.attribute(xt), rtol=1e-5, atol=1e-7)
    loader = torch.utils.data.DataLoader(ds, batch_size=64, shuffle=False)
    b = DualDA(model, loader, layer="fc", C=0.05, progress=False, tol=1e-6, max_iter=50000).fit()
    np.testing.assert_allclose(b.attribute(xt), fitted.attribute(xt), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="shuffle"):
        DualDA(
            model, torch.utils.data.DataLoader(ds, shuffle=True), layer="fc", progress=False
        ).fit()
    p = DualDA(model, (x, y), layer="fc", C=0.05, use_predictions=True, progress=False).fit()
    np.testing.assert_array_equal(p.train_labels, model(x).argmax(1).numpy())


def test_surrogate_fidelity(trained, fitted):
    _, _, _, xt, yt = trained
    fid = fitted.surrogate_fidelity((xt, yt))
    assert set(fid) == {"weight_cosine", "logit_cosine", "mcc"}
    for v in fid.values():
        assert -1.0 <= v <= 1.0
    assert fid["mcc"] > 0.8  # the surrogate predicts like the model on separable blobs


def test_errors(trained, fitted):
    model, x, y, xt, _ = trained
    with pytest.raises(ValueError, match="not a submodule.*did you mean 'fc'"):
        DualDA(model, (x, y), layer="fcc")
    with pytest.raises(ValueError, match="C must be"):
        DualDA(model, (x, y), layer="fc", C=0.0)
    with pytest.raises(ValueError, match="C must be"):
        DualDA(model, (x, y), layer="fc", C=-1)
    bad = x.clone()
    bad[3, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        DualDA(model, (bad, y), layer="fc", progress=False).fit()
    with pytest.raises(ValueError, match="outside \\[0, 3\\)"):
        DualDA(model, (x, y + 1), layer="fc", progress=False).fit()
    with pytest.raises(ValueError, match="device"):
        fitted.attribute(torch.empty(2, 6, device="meta"))
    with pytest.raises(ValueError, match="targets"):
        fitted.attribute(xt, targets=5)
    with pytest.raises(ValueError, match="top_k"):
        fitted.attribute(xt, top_k=0)
    with pytest.raises(RuntimeError, match="fit"):
        DualDA(model, (x, y), layer="fc").attribute(xt)
