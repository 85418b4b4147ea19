"""GMValuator's evaluation criteria (C1-C3) and the proof on scikit-learn's digits."""

from __future__ import annotations

import numpy as np
import pytest

from datacredit.metrics import identical_class_ratio, ood_rank


def test_identical_class_ratio_matches_loop(rng):
    top = rng.integers(0, 50, (20, 7))
    tl = rng.integers(0, 3, 50)
    gl = rng.integers(0, 3, 20)
    for k in (1, 4, 7):
        ref = np.mean([[tl[i] == gl[j] for i in top[j, :k]] for j in range(20)])
        assert identical_class_ratio(top, tl, gl, k) == pytest.approx(ref)
    per = identical_class_ratio(top, tl, gl, 7, per_sample=True)
    assert per.shape == (20,)


def test_identical_attribute_vectors_need_all_equal(rng):
    tl = np.array([[0, 1], [0, 0], [1, 1]])
    gl = np.array([[0, 1], [1, 1]])
    top = np.array([[0, 1, 2], [2, 0, 1]])
    assert identical_class_ratio(top, tl, gl) == pytest.approx((1 / 3 + 1 / 3) / 2)
    assert identical_class_ratio(top, tl, gl, 1) == pytest.approx(1.0)


def test_identical_class_ratio_bad_input(rng):
    top = np.zeros((3, 4), np.int64)
    with pytest.raises(ValueError, match="k = 5"):
        identical_class_ratio(top, np.zeros(5), np.zeros(3), 5)
    with pytest.raises(ValueError, match="gen_labels"):
        identical_class_ratio(top, np.zeros(5), np.zeros(2))
    with pytest.raises(ValueError, match="outside"):
        identical_class_ratio(top + 9, np.zeros(5), np.zeros(3))
    with pytest.raises(TypeError, match="integers"):
        identical_class_ratio(top.astype(float), np.zeros(5), np.zeros(3))


def test_ood_rank(rng):
    v = np.array([5.0, 1.0, 3.0, 0.0, 0.0, 4.0])
    np.testing.assert_array_equal(ood_rank(v, np.array([1, 3])), [4.0, 5.5])
    mask = np.zeros(6, bool)
    mask[[3, 0]] = True
    np.testing.assert_array_equal(ood_rank(v, mask, ties="max"), [1.0, 6.0])
    from scipy.stats import rankdata

    w = rng.standard_normal(100)
    idx = rng.choice(100, 10, replace=False)
    np.testing.assert_array_equal(ood_rank(w, idx), rankdata(-w)[idx])
    with pytest.raises(ValueError, match="ties"):
        ood_rank(v, mask, ties="dense")
    with pytest.raises(ValueError, match="no samples"):
        ood_rank(v, np.zeros(6, bool))
    with pytest.raises(ValueError, match="NaN"):
        ood_rank(np.array([np.nan, 1.0]), np.array([0]))


@pytest.mark.slow
def test_digits_proof_identical_class_and_noisy_ranks():
    """load_digits: held-out digits as 'generated' data, a small trained encoder, 100
    Gaussian-noise-corrupted training images.  C1 >= 0.9 at k=30; C3: every noisy image
    ranks in the bottom 10% of values."""
    torch = pytest.importorskip("torch")
    from sklearn.datasets import load_digits

    from datacredit import GMValuator

    x, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(x))
    gen, train = perm[:500], perm[500:]
    x_train, y_train = x[train].astype(np.float32), y[train]
    noisy = rng.choice(len(train), 100, replace=False)
    x_train[noisy] += rng.normal(0.0, 16.0, size=(100, 64)).astype(np.float32)
    is_noisy = np.zeros(len(train), bool)
    is_noisy[noisy] = True

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 64-32-10 MLP: extra threads only contend on a busy machine
    torch.manual_seed(0)
    body = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU())
    head = torch.nn.Linear(32, 10)
    opt = torch.optim.Adam([*body.parameters(), *head.parameters()], lr=1e-2)
    xt = torch.from_numpy(x_train[~is_noisy] / 16.0)
    yt = torch.from_numpy(y_train[~is_noisy]).long()
    try:
        for _ in range(300):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(head(body(xt)), yt).backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)

    def encoder(batch):
        with torch.no_grad():
            return body(torch.as_tensor(np.asarray(batch)) / 16.0).numpy()

    gmv = GMValuator(encoder=encoder, k=30, recall=120, index="pq", pq_m=8, diagnostics_sample=500)
    res = gmv.fit(x_train).value(x[gen].astype(np.float32))
    assert identical_class_ratio(res.topk_indices, y_train, y[gen], k=30) >= 0.9
    ranks = ood_rank(res.values, is_noisy)
    assert np.all(ranks > 0.9 * len(x_train)), np.sort(ranks)[:5] / len(x_train)
    assert res.diagnostics["final_recall_at_k"] >= 0.95
