"""DualDA surrogate bookkeeping: opponents, internal batching, cached global attribution,
support-row lookup, duality gap in the fit summary."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from datacredit import DualDA  # noqa: E402


def _blobs(n, d=6, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(k, d, generator=g) * 1.5
    y = torch.randint(0, k, (n,), generator=g)
    return centers[y] + torch.randn(n, d, generator=g), y


@pytest.fixture(scope="module")
def fitted():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x, y = _blobs(300)
    model = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 3))
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(100):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    dd = DualDA(model, (x, y), layer="2", C=0.05, progress=False, batch_size=7).fit()
    xt, _ = _blobs(25, seed=1)
    yield dd, xt
    torch.set_num_threads(threads)


def test_opponents_are_the_most_negative(fitted):
    dd, xt = fitted
    dense = dd.attribute(xt, targets=1)
    for k in (1, 5, dd.n_support + 3):
        vals, idx = dd.attribute(xt, targets=1, top_k=k, opponents=True)
        order = np.lexsort((np.broadcast_to(np.arange(dense.shape[1]), dense.shape), dense))
        ref = np.take_along_axis(dense, order[:, :k], 1)
        np.testing.assert_allclose(vals, ref, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.take_along_axis(dense, idx, 1), vals, rtol=1e-5, atol=1e-6)
        assert np.all(np.diff(vals, axis=1) >= 0)  # most negative first
    assert dense.min() < 0  # opponents exist
    with pytest.raises(ValueError, match="needs top_k"):
        dd.attribute(xt, opponents=True)


def test_internal_batching_matches_one_batch(fitted):
    dd, xt = fitted  # batch_size=7: 25 inputs in 4 chunks
    t = torch.arange(25) % 3
    dense = dd.attribute(xt, targets=t)
    f = np.concatenate([dd._features(xt[i : i + 1])[0] for i in range(25)])
    lam = dd.dual_coef_rows(np.arange(dd.n_train))
    ref = np.zeros((25, dd.n_train))
    ref[:, dd.support] = (f @ dd.support_features.T.astype(np.float64)) * lam[dd.support].T[
        t.numpy()
    ]
    np.testing.assert_allclose(dense, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())
    vals, idx = dd.attribute(xt, targets=t, top_k=4)
    assert vals.shape == (25, 4)
    np.testing.assert_allclose(np.take_along_axis(dense, idx, 1), vals, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="targets"):
        dd.attribute(xt, targets=t[:10])


def test_global_attribution_cached_read_only_and_rows(fitted):
    dd, _ = fitted
    g = dd.global_attribution()
    assert dd.global_attribution() is g and not g.flags.writeable
    with pytest.raises(ValueError):
        g[0, 0] = 1.0
    idx = np.array([dd.support[0], 0, dd.n_train - 1, dd.support[-1]])
    np.testing.assert_array_equal(dd.dual_coef_rows(idx), g[idx])


def test_fit_summary_reports_the_duality_gap(fitted):
    dd, _ = fitted
    s = dd.stats
    assert s["converged"]
    assert s["duality_gap"] == pytest.approx(s["primal_objective"] - s["dual_objective"])
    assert 0 <= s["relative_duality_gap"] < 1e-3
