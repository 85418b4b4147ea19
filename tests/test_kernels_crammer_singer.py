"""crammer_singer_fit against LIBLINEAR, scikit-learn, an independent QP and the KKT conditions."""

from __future__ import annotations

import numpy as np
import pytest

from datacredit.kernels import CSResult, crammer_singer_fit, crammer_singer_objective


def make_data(n: int, d: int, k: int, seed: int = 0, spread: float = 1.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    means = rng.normal(0.0, spread, (k, d))
    x = np.maximum(means[y] + rng.normal(0.0, 1.0, (n, d)), 0.0)
    x *= 3.0 / np.sqrt((x**2).sum(1).mean())
    return x.astype(np.float32), y.astype(np.int64)


def primal_np(x, y, w, b, c):
    """Straightforward float64 primal objective (independent of the C++ code)."""
    x64 = x.astype(np.float64)
    s = x64 @ w.T + (0.0 if b is None else b)
    n = x.shape[0]
    margin = 1.0 + s - s[np.arange(n), y][:, None]
    margin[np.arange(n), y] = 0.0
    reg = (w**2).sum() + (0.0 if b is None else (b**2).sum())
    return 0.5 * reg + c * np.maximum(margin.max(1), 0.0).sum()


def liblinear_fit(x, y, c, eps, bias=True):
    from liblinear.liblinearutil import problem, train

    prob = problem(y.astype(np.float64), x.astype(np.float64))
    model = train(prob, f"-s 4 -c {c} -e {eps} -B {1 if bias else -1} -q")
    assert (model.bias > 0) == bias
    labels = [int(v) for v in model.get_labels()]
    # LIBLINEAR sizes w by the last nonzero feature index: trailing all-zero columns are absent
    k, d, nf = len(labels), x.shape[1], model.get_nr_feature()
    rows = nf + 1 if bias else nf
    wfull = np.ctypeslib.as_array(model.w, shape=(rows * k,)).reshape(rows, k)
    w = np.zeros((k, d))
    b = np.zeros(k)
    for j, lab in enumerate(labels):
        w[lab, :nf] = wfull[:nf, j]
        if bias:
            b[lab] = wfull[nf, j]
    return w, (b if bias else None)


def kkt_violation(x, y, res: CSResult, fit_bias=True) -> float:
    """Max over samples of max_m G_m - min_{m: lambda_m < bound_m} G_m (float64)."""
    n = x.shape[0]
    g = x.astype(np.float64) @ res.coef.T + (res.bias if fit_bias else 0.0) + 1.0
    g[np.arange(n), y] -= 1.0
    bound = np.zeros_like(res.dual_coef)
    bound[np.arange(n), y] = res.C
    free = res.dual_coef < bound
    min_free = np.where(free, g, np.inf).min(1)
    return float((g.max(1) - min_free).max())


@pytest.mark.parametrize("c", [1e-3, 0.1, 1.0])
def test_matches_liblinear_objective(c):
    x, y = make_data(300, 12, 4, seed=1)
    res = crammer_singer_fit(x, y, c, tol=1e-6, max_iter=100000)
    assert res.converged
    w_ll, b_ll = liblinear_fit(x, y, c, 1e-6)
    p_ll = primal_np(x, y, w_ll, b_ll, c)
    p_ours = primal_np(x, y, res.coef, res.bias, c)
    assert abs(p_ours - p_ll) <= 1e-3 * p_ll
    # the reported objectives are the ones of the returned model
    assert res.primal_objective == pytest.approx(p_ours, rel=1e-9)
    assert crammer_singer_objective(x, y, w_ll, b_ll, c) == pytest.approx(p_ll, rel=1e-9)
    # duality gap
    assert 0.0 <= res.duality_gap + 1e-12
    assert res.duality_gap <= 1e-4 * res.primal_objective


def test_matches_liblinear_without_bias():
    x, y = make_data(200, 10, 3, seed=2)
    res = crammer_singer_fit(x, y, 0.1, tol=1e-6, max_iter=100000, fit_bias=False)
    assert np.all(res.bias == 0.0)
    w_ll, _ = liblinear_fit(x, y, 0.1, 1e-6, bias=False)
    p_ll = primal_np(x, y, w_ll, None, 0.1)
    assert abs(primal_np(x, y, res.coef, None, 0.1) - p_ll) <= 1e-3 * p_ll
    np.testing.assert_allclose(res.coef, res.dual_coef.T @ x.astype(np.float64), atol=1e-10)
    assert kkt_violation(x, y, res, fit_bias=False) < 1e-6 * 1.01


def test_matches_sklearn_crammer_singer():
    from sklearn.svm import LinearSVC

    x, y = make_data(120, 6, 4, seed=3)
    c = 0.05
    clf = LinearSVC(
        multi_class="crammer_singer", C=c, tol=1e-5, max_iter=200000, intercept_scaling=1.0
    ).fit(x, y)
    p_sk = primal_np(x, y, clf.coef_, clf.intercept_, c)
    res = crammer_singer_fit(x, y, c, tol=1e-6, max_iter=100000)
    assert abs(res.primal_objective - p_sk) <= 1e-3 * p_sk


def test_matches_independent_qp():
    from scipy.optimize import minimize

    x, y = make_data(24, 3, 3, seed=4, spread=0.7)
    n, d = x.shape
    k, c = 3, 0.5
    xt = np.hstack([x.astype(np.float64), np.ones((n, 1))])  # the bias feature

    # primal QP over (W (k x (d+1)), xi (n)), solved by SLSQP
    def unpack(z):
        return z[: k * (d + 1)].reshape(k, d + 1), z[k * (d + 1) :]

    def fun(z):
        w, xi = unpack(z)
        return 0.5 * (w**2).sum() + c * xi.sum()

    def jac(z):
        w, _ = unpack(z)
        return np.concatenate([w.ravel(), np.full(n, c)])

    rows, cols = [], []
    for i in range(n):
        for m in range(k):
            if m != y[i]:
                rows.append(i)
                cols.append(m)
    rows, cols = np.array(rows), np.array(cols)
    a = np.zeros((len(rows), k * (d + 1) + n))
    for r, (i, m) in enumerate(zip(rows, cols)):
        a[r, y[i] * (d + 1) : (y[i] + 1) * (d + 1)] += xt[i]
        a[r, m * (d + 1) : (m + 1) * (d + 1)] -= xt[i]
        a[r, k * (d + 1) + i] = 1.0
    cons = [
        {"type": "ineq", "fun": lambda z: a @ z - 1.0, "jac": lambda z: a},
        {
            "type": "ineq",
            "fun": lambda z: z[k * (d + 1) :],
            "jac": lambda z: np.eye(n + k * (d + 1))[k * (d + 1) :],
        },
    ]
    z0 = np.concatenate([np.zeros(k * (d + 1)), np.ones(n) * 2.0])
    sol = minimize(
        fun, z0, jac=jac, constraints=cons, method="SLSQP", options={"ftol": 1e-12, "maxiter": 2000}
    )
    assert sol.success
    w_qp, _ = unpack(sol.x)

    res = crammer_singer_fit(x, y, c, tol=1e-8, max_iter=100000)
    assert res.primal_objective == pytest.approx(sol.fun, rel=1e-6)
    np.testing.assert_allclose(res.coef, w_qp[:, :d], atol=1e-4)
    np.testing.assert_allclose(res.bias, w_qp[:, d], atol=1e-4)


@pytest.mark.parametrize("c", [1e-3, 0.2])
def test_dual_feasibility_kkt_and_w(c):
    x, y = make_data(400, 16, 6, seed=5)
    tol = 1e-5
    res = crammer_singer_fit(x, y, c, tol=tol, max_iter=100000)
    lam, n = res.dual_coef, x.shape[0]
    assert lam.shape == (n, 6) and lam.dtype == np.float64
    lam_y = lam[np.arange(n), y]
    assert np.all(lam_y >= 0.0) and np.all(lam_y <= c)
    other = lam.copy()
    other[np.arange(n), y] = 0.0
    assert np.all(other <= 0.0)
    np.testing.assert_allclose(lam.sum(1), 0.0, atol=1e-12 * c + 1e-15)
    # paper convention
    assert np.all(res.alpha >= -1e-15)
    np.testing.assert_allclose(res.alpha.sum(1), c, rtol=1e-12)
    onehot = np.eye(6)[y]
    np.testing.assert_allclose(c * onehot - res.alpha, lam, atol=1e-15)
    # W = lambda^T X and bias = sum lambda, to float precision
    np.testing.assert_allclose(res.coef, lam.T @ x.astype(np.float64), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(res.bias, lam.sum(0), atol=1e-12)
    # KKT: the final pass bounds the max violation (recomputed here from scratch)
    assert kkt_violation(x, y, res) < tol * 1.01
    # support = rows whose largest |lambda| exceeds 1e-9 C (below: solver round-off)
    np.testing.assert_array_equal(res.support, np.flatnonzero(np.abs(lam).max(1) > 1e-9 * c))
    assert res.duality_gap >= -1e-12
    assert res.dual_objective == pytest.approx(
        lam_y.sum() - 0.5 * ((res.coef**2).sum() + (res.bias**2).sum()), rel=1e-10
    )


def test_support_excludes_round_off_rows():
    """On digits at C=0.1 the solver leaves ~130 rows with |lambda| < 1e-14 C (samples moved
    off and back to zero); they are not support vectors, and dropping them changes W by
    round-off only."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16).astype(np.float32)
    c = 0.1
    res = crammer_singer_fit(x, y, c, tol=1e-4, max_iter=100000)
    assert res.converged
    peak = np.abs(res.dual_coef).max(1)
    round_off = (peak > 0) & (peak < 1e-14 * c)
    assert round_off.sum() > 10  # the data does exercise the case
    assert np.all(peak[res.support] > 1e-9 * c)
    off = np.setdiff1d(np.arange(len(y)), res.support)
    assert np.all(peak[off] <= 1e-9 * c)
    w_support = res.dual_coef[res.support].T @ x[res.support].astype(np.float64)
    np.testing.assert_allclose(w_support, res.coef, rtol=0, atol=1e-9 * np.abs(res.coef).max())
    # alpha is built lazily and matches the paper's convention
    np.testing.assert_allclose(res.alpha, c * np.eye(10)[y] - res.dual_coef, atol=1e-15)


def test_sparsity_grows_with_c():
    x, y = make_data(400, 16, 4, seed=6)
    small = crammer_singer_fit(x, y, 1e-4, tol=1e-5)
    large = crammer_singer_fit(x, y, 1.0, tol=1e-5, max_iter=100000)
    assert len(large.support) < len(small.support)


def test_deterministic_and_seeded():
    x, y = make_data(300, 10, 4, seed=7)
    a = crammer_singer_fit(x, y, 0.1, tol=1e-5, seed=3)
    b = crammer_singer_fit(x, y, 0.1, tol=1e-5, seed=3, n_threads=1)
    np.testing.assert_array_equal(a.dual_coef, b.dual_coef)
    np.testing.assert_array_equal(a.coef, b.coef)
    assert a.n_iter == b.n_iter
    other = crammer_singer_fit(x, y, 0.1, tol=1e-5, seed=4)
    assert other.primal_objective == pytest.approx(a.primal_objective, rel=1e-4)


def test_max_iter_is_respected_and_torch_input():
    torch = pytest.importorskip("torch")
    x, y = make_data(300, 10, 4, seed=8)
    res = crammer_singer_fit(torch.from_numpy(x), torch.from_numpy(y), 1.0, tol=1e-8, max_iter=2)
    assert res.n_iter == 2 and not res.converged
    x64 = x.astype(np.float64)
    before = x64.copy()
    crammer_singer_fit(x64, y, 1.0, max_iter=1)
    np.testing.assert_array_equal(x64, before)  # input untouched


def test_n_classes_with_missing_class():
    x, y = make_data(120, 6, 3, seed=9)
    res = crammer_singer_fit(x, y, 0.1, n_classes=5)
    assert res.dual_coef.shape == (120, 5) and res.coef.shape == (5, 6)
    assert np.all(res.dual_coef[:, 3:] <= 0.0)


def test_errors():
    x, y = make_data(50, 4, 3)
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="X contains NaN"):
        crammer_singer_fit(bad, y, 0.1)
    with pytest.raises(ValueError, match="C must be"):
        crammer_singer_fit(x, y, 0.0)
    with pytest.raises(ValueError, match="C must be"):
        crammer_singer_fit(x, y, -1.0)
    with pytest.raises(ValueError, match="tol"):
        crammer_singer_fit(x, y, 0.1, tol=0)
    with pytest.raises(ValueError, match="max_iter"):
        crammer_singer_fit(x, y, 0.1, max_iter=0)
    with pytest.raises(ValueError, match="y must have shape"):
        crammer_singer_fit(x, y[:-1], 0.1)
    with pytest.raises(ValueError, match=">= 0"):
        crammer_singer_fit(x, np.where(y == 0, -1, y), 0.1)
    with pytest.raises(ValueError, match="n_classes"):
        crammer_singer_fit(x, y, 0.1, n_classes=2)
    with pytest.raises(ValueError, match="at least 2 classes"):
        crammer_singer_fit(x, np.zeros(50, dtype=np.int64), 0.1)
    with pytest.raises(TypeError, match="integer"):
        crammer_singer_fit(x, y + 0.5, 0.1)
    with pytest.raises(ValueError, match="matrix"):
        crammer_singer_fit(x[0], y, 0.1)


def test_sample_weight_matches_duplicated_rows():
    """Weight 2 on a sample equals the sample appearing twice (same optimum)."""
    x, y = make_data(80, 5, 3, seed=10)
    w = np.ones(80)
    w[:10] = 2.0
    w[10:15] = 0.0
    res = crammer_singer_fit(x, y, 0.2, tol=1e-8, max_iter=100000, sample_weight=w)
    keep = np.r_[np.arange(10), np.arange(80)]
    keep = keep[(keep < 10) | (keep >= 15)]
    dup = crammer_singer_fit(x[keep], y[keep], 0.2, tol=1e-8, max_iter=100000)
    assert res.primal_objective == pytest.approx(dup.primal_objective, rel=1e-6)
    np.testing.assert_allclose(res.coef, dup.coef, atol=1e-4)
    assert np.all(res.dual_coef[10:15] == 0.0)
    np.testing.assert_allclose(res.alpha.sum(1), 0.2 * w, rtol=1e-12, atol=1e-15)
    assert res.primal_objective == pytest.approx(
        crammer_singer_objective(x, y, res.coef, res.bias, 0.2, sample_weight=w), rel=1e-12
    )
    with pytest.raises(ValueError, match="sample_weight"):
        crammer_singer_fit(x, y, 0.2, sample_weight=-w)


def test_shrink_factor_keeps_the_optimum():
    x, y = make_data(500, 16, 5, seed=11)
    tol = 1e-5
    half = crammer_singer_fit(x, y, 0.1, tol=tol, max_iter=100000, shrink_factor=0.5)
    fast = crammer_singer_fit(x, y, 0.1, tol=tol, max_iter=100000)  # default 0.1
    assert fast.converged and half.converged
    assert kkt_violation(x, y, fast) < tol * 1.01
    assert fast.primal_objective == pytest.approx(half.primal_objective, rel=1e-4)
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="shrink_factor"):
            crammer_singer_fit(x, y, 0.1, shrink_factor=bad)


# --- sparse duals (issue 25): K above the stored working-set cap (64), CSR end to end ---


@pytest.mark.parametrize("c", [1e-3, 0.1])
def test_sparse_dual_many_classes_matches_liblinear(c):
    """K = 80 > 64 exercises the "too many to store: all classes" path; the CSR dual must be
    feasible, give W = lambda^T X, meet the KKT test, and reach LIBLINEAR's objective."""
    x, y = make_data(600, 10, 80, seed=3, spread=2.0)
    res = crammer_singer_fit(x, y, c, tol=1e-5, max_iter=20000, seed=1)
    assert res.converged
    dual = res.dual
    assert dual.indptr.dtype == np.int64 and dual.indices.dtype == np.int32
    assert dual.shape == (600, 80) and np.all(dual.values != 0.0)
    rows = dual.row_ids()
    # each row ascending in class, true class in [0, C], the others <= 0, rows sum to 0
    assert np.all((np.diff(dual.indices) > 0) | (np.diff(rows) > 0))
    on_y = dual.indices == y[rows]
    assert np.all(dual.values[on_y] <= c) and np.all(dual.values[on_y] > 0)
    assert np.all(dual.values[~on_y] < 0)
    np.testing.assert_allclose(np.bincount(rows, dual.values, 600), 0.0, atol=1e-15)
    # W = lambda^T X from the CSR alone (numpy scatter-add, independent of the solver)
    w = np.zeros((80, 10))
    np.add.at(w, dual.indices, dual.values[:, None] * x[rows].astype(np.float64))
    np.testing.assert_allclose(res.coef, w, atol=1e-12)
    np.testing.assert_allclose(res.bias, np.bincount(dual.indices, dual.values, 80), atol=1e-13)
    assert kkt_violation(x, y, res) < 1e-5
    assert res.peak_nnz >= dual.nnz
    assert dual.nnz < 0.2 * 600 * 80  # sparse at the optimum
    w_ll, b_ll = liblinear_fit(x, y, c, 1e-7)
    ours = primal_np(x, y, res.coef, res.bias, c)
    ref = primal_np(x, y, w_ll, b_ll, c)
    assert ours <= ref * (1 + 1e-4)
    assert res.primal_objective - res.dual_objective <= 1e-4 * res.primal_objective


def test_sparse_dual_dense_views_agree():
    """dual_coef / alpha (dense, guarded) are the CSR scattered; take_rows / column agree."""
    from datacredit.kernels.sparse_dual import SparseDual

    x, y = make_data(300, 6, 12, seed=4)
    res = crammer_singer_fit(x, y, 0.05, tol=1e-6, max_iter=10000)
    dense = res.dual_coef
    back = SparseDual.from_dense(dense)
    np.testing.assert_array_equal(back.indptr, res.dual.indptr)
    np.testing.assert_array_equal(back.indices, res.dual.indices)
    np.testing.assert_array_equal(back.values, res.dual.values)
    idx = np.array([5, 0, 299, 5])
    np.testing.assert_array_equal(res.dual.dense_rows(idx), dense[idx])
    r, v = res.dual.column(3)
    np.testing.assert_array_equal(r, np.flatnonzero(dense[:, 3]))
    np.testing.assert_array_equal(v, dense[r, 3])
    np.testing.assert_allclose(res.alpha, 0.05 * np.eye(12)[y] - dense, atol=1e-15)


def test_dense_guard_refuses_more_than_free_memory(monkeypatch):
    from datacredit.kernels import sparse_dual

    monkeypatch.setattr(sparse_dual, "available_memory", lambda: 2**30)
    with pytest.raises(MemoryError, match="sparse form"):
        sparse_dual.check_dense_allocation(2**31, "test")
    with pytest.warns(ResourceWarning, match="0.50 GiB"):
        sparse_dual.check_dense_allocation(2**29, "test")
    sparse_dual.check_dense_allocation(2**20, "test")  # small: silent


def test_memmap_features_read_in_place_and_wrong_dtype_refused(tmp_path):
    x, y = make_data(200, 5, 4, seed=5)
    path = tmp_path / "f.bin"
    mm = np.memmap(path, np.float32, "w+", shape=x.shape)
    mm[:] = x
    mm.flush()
    ro = np.memmap(path, np.float32, "r", shape=x.shape)
    a = crammer_singer_fit(ro, y, 0.1, tol=1e-6)
    b = crammer_singer_fit(x, y, 0.1, tol=1e-6)
    np.testing.assert_array_equal(a.dual.values, b.dual.values)
    wrong = np.memmap(tmp_path / "g.bin", np.float64, "w+", shape=x.shape)
    with pytest.raises(ValueError, match="memory-mapped float64"):
        crammer_singer_fit(wrong, y, 0.1)


def test_sparse_dual_classes_without_samples():
    """n_classes above the labels present: the absent classes only ever take lambda <= 0
    (pushed down), the solve converges and the KKT test holds over all n_classes."""
    x, y = make_data(300, 6, 5, seed=6)
    res = crammer_singer_fit(x, y, 0.1, tol=1e-6, n_classes=8, max_iter=10000)
    assert res.converged and res.dual.shape == (300, 8)
    absent = res.dual.indices >= 5
    assert np.all(res.dual.values[absent] < 0)
    assert np.all(res.bias[5:] <= 0)
    assert kkt_violation(x, y, res) < 1e-6
    with pytest.raises(ValueError, match="outside"):
        crammer_singer_fit(x, y, 0.1, n_classes=4)


def _identical_rows(n=600, k=40, d=8, seed=0):
    """Features that cannot separate the classes (every row the same): every class stays
    active, lambda is nearly dense (the regime the nonzero limit exists for)."""
    rng = np.random.default_rng(seed)
    x = np.tile(np.abs(rng.standard_normal((1, d))).astype(np.float32), (n, 1))
    return x, rng.integers(0, k, n)


def test_nonzero_limit_raises_memory_error_not_oom():
    x, y = _identical_rows()
    free = crammer_singer_fit(x, y, 1e-2, max_nnz=0, max_iter=200)
    per_sample = free.dual.nnz / x.shape[0]
    assert per_sample > 8  # the degenerate case: far above the 2-6 of a separable fit
    limit = free.peak_nnz // 2
    with pytest.raises(MemoryError, match=r"max_nnz.*GiB.*barely separate the classes"):
        crammer_singer_fit(x, y, 1e-2, max_nnz=limit, max_iter=200)
    # a limit above the peak changes nothing (same solution, bit for bit)
    same = crammer_singer_fit(x, y, 1e-2, max_nnz=free.peak_nnz, max_iter=200)
    np.testing.assert_array_equal(same.coef, free.coef)
    with pytest.raises(ValueError, match="max_nnz"):
        crammer_singer_fit(x, y, 1e-2, max_nnz=-1)
    with pytest.raises(TypeError, match="max_nnz"):
        crammer_singer_fit(x, y, 1e-2, max_nnz=1.5)


def test_nearly_dense_dual_warns_and_a_sparse_one_does_not(monkeypatch):
    import warnings

    from datacredit.kernels import crammer_singer as cs

    monkeypatch.setattr(cs, "DENSE_SILENT_BYTES", 0)  # the 256 MiB floor, scaled to the test
    x, y = _identical_rows()
    with pytest.warns(RuntimeWarning, match="nearly dense"):
        crammer_singer_fit(x, y, 1e-2, max_iter=200)
    rng = np.random.default_rng(1)
    k = 40
    centers = rng.standard_normal((k, 8)) * 4.0
    y2 = rng.integers(0, k, 600)
    x2 = (centers[y2] + rng.standard_normal((600, 8))).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        res = crammer_singer_fit(x2, y2, 1e-2)
    assert res.peak_nnz < cs.NEARLY_DENSE_PER_SAMPLE * 600


def test_default_nonzero_limit_follows_available_memory(monkeypatch):
    from datacredit.kernels import crammer_singer as cs

    monkeypatch.setattr(cs, "available_memory", lambda: 40 * 10_000 / cs.NONZERO_MEMORY_SHARE)
    assert cs.default_max_nnz(1000, 50) == 10_000
    assert cs.default_max_nnz(100, 5) == 500  # never above N x K
    assert cs.default_max_nnz(10_000, 5) == 20_010  # never below 2 N + 2 K
    monkeypatch.setattr(cs, "available_memory", lambda: None)
    assert cs.default_max_nnz(1000, 50) == 0
    x, y = _identical_rows()
    monkeypatch.setattr(cs, "available_memory", lambda: 40 * 3_000 / cs.NONZERO_MEMORY_SHARE)
    with pytest.raises(MemoryError, match="nonzeros"):
        crammer_singer_fit(x, y, 1e-2, max_iter=200)
