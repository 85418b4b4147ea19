"""Harness cases from issue 11's reproducers (``shared/repros/rNN_*.py``).

Each case does what its reproducer does and expects what the reproducer's header asks
for: a clear error, or the right answer (checked here against an independent
reference: float64 brute force, additivity against the model's own prediction, exact
Shapley values, the previous file's contents).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

from harness.registry import case

GiB = 1 << 30


@case("repro.r01_packedcodes_segv", match="list_blocks")
def r01():
    from datacredit.kernels import PackedCodes, ProductQuantizer

    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 16)).astype(np.float32)
    pq = ProductQuantizer(16, 4, 4, nlist=8, nprobe=2).train(X, n_iter=3)
    P = pq.pack(pq.encode(X), lists=pq.assign(X))
    lb = P.list_blocks.copy()
    lb[3] = 10**12  # interior entry beyond list_blocks[-1]
    pq.search(X[:3], PackedCodes(P.data, P.n, P.m, lb, P.ids), 3)


@case("repro.r02_cosine_large_d_abort", "either", timeout=180, address_space=3 * GiB)
def r02():
    # A 2 x 3 problem with d = 2^23 must not need per-thread buffers of 512 * d floats:
    # it either runs (buffers sized to the problem) or raises MemoryError, never aborts.
    from datacredit.kernels import gram_topk

    q = np.ones((2, 2**23), np.float32)
    k = np.ones((3, 2**23), np.float32)
    v, _ = gram_topk(q, k, 2, metric="cosine", n_threads=2)
    np.testing.assert_allclose(v, 1.0, rtol=1e-5)


@case("repro.r03_topk_large_k_abort", "either", timeout=300, address_space=3 * GiB)
def r03():
    from datacredit.kernels import gram_topk

    q = np.ones((2, 1), np.float32)
    k = np.ones((50_000_000, 1), np.float32)
    gram_topk(
        q, k, 50_000_000, n_threads=1
    )  # fails inside the OpenMP region: SIGABRT before the fix


@case("repro.r04_treeshap_deep_chain", "either", timeout=180)
def r04():
    # ~80k nodes deep: an iterative walk returns exact values (or a clear depth error).
    from datacredit.kernels import TreeEnsemble, tree_shap_interventional

    D = 80_000
    n = 2 * D + 1
    left = np.full(n, -1, np.int32)
    right = np.full(n, -1, np.int32)
    left[0 : 2 * D : 2] = np.arange(2, 2 * D + 1, 2)
    right[0 : 2 * D : 2] = np.arange(1, 2 * D, 2)
    ens = TreeEnsemble(
        left=left,
        right=right,
        feature=np.zeros(n, np.int32),
        threshold=(1.0 - np.arange(n) * 1e-7).astype(np.float32),
        default_left=np.ones(n, np.uint8),
        value=np.full(n, 0.5, np.float32),
        roots=np.zeros(1, np.int64),
        base_score=0.0,
        n_features=2,
    )
    X = np.zeros((2, 2), np.float32)
    phi, base = tree_shap_interventional(ens, X, X)
    np.testing.assert_allclose(phi.sum(1) + base, ens.predict(X), atol=1e-5)


@case("repro.r05_treeshap_dag_hang", timeout=30)
def r05():
    from datacredit.kernels import TreeEnsemble, tree_shap_interventional

    D = 40
    left = np.array(list(range(1, D + 1)) + [-1], np.int32)
    ens = TreeEnsemble(
        left=left,
        right=left.copy(),
        feature=np.zeros(D + 1, np.int32),
        threshold=np.full(D + 1, 0.5, np.float32),
        default_left=np.ones(D + 1, np.uint8),
        value=np.r_[np.zeros(D), 1.0].astype(np.float32),
        roots=np.zeros(1, np.int64),
        base_score=0.0,
        n_features=2,
    )
    X = np.zeros((2, 2), np.float32)
    tree_shap_interventional(ens, X, X)


@case("repro.r06_nthreads_unbounded", "either", timeout=120, address_space=int(1.5 * GiB))
def r06():
    from datacredit.kernels import gram_topk

    q = np.ones((2, 64), np.float32)
    k = np.ones((100_000, 64), np.float32)
    gram_topk(q, k, 5, n_threads=512)


@case("repro.r07_core_binding_oob")
def r07():
    from datacredit import _core

    q = np.ones((3, 64), np.float32)
    k = np.ones((4, 8), np.float32)
    _core.gram_dense(q, k, None, None, "ip", 1)  # keys narrower than queries


@case("repro.r07_core_binding_weights")
def r07_weights():
    from datacredit import _core

    q = np.ones((3, 8), np.float32)
    k = np.ones((4, 8), np.float32)
    _core.gram_topk(q, k, 2, np.ones((2, 3), np.float32), np.array([0, 1, 2]), "ip", True, 1)


@case("repro.r07_core_binding_classes")
def r07_classes():
    from datacredit import _core

    q = np.ones((3, 8), np.float32)
    k = np.ones((4, 8), np.float32)
    _core.gram_topk(q, k, 2, np.ones((4, 2), np.float32), np.array([0, 1, 99]), "ip", True, 1)


@case("repro.r08_l2_cancellation", "returns")
def r08():
    from datacredit.kernels import gram_topk

    rng = np.random.default_rng(0)
    q = (1000 + rng.standard_normal((3, 64))).astype(np.float32)
    k = (1000 + rng.standard_normal((50, 64))).astype(np.float32)
    d, i = gram_topk(q, k, 5, metric="l2", largest=False)
    true = ((q[:, None].astype(np.float64) - k[None]) ** 2).sum(-1)
    # float32 rounding of the true distance (plus the float32 sum of 64 terms)
    np.testing.assert_allclose(d, np.sort(true, 1)[:, :5], rtol=1e-5)
    np.testing.assert_array_equal(i, np.argsort(true, 1, kind="stable")[:, :5])
    d2, _ = gram_topk(q, np.concatenate([q, q + 1e-3]), 1, metric="l2", largest=False)
    np.testing.assert_allclose(d2.ravel(), 0.0, atol=1e-4)


@case("repro.r09_gmv_cache", "returns")
def r09():
    import datacredit as dc

    d = tempfile.mkdtemp()
    a = np.random.default_rng(0).standard_normal((500, 8)).astype(np.float32)
    b = a + 5
    g = dc.GMValuator(k=5, recall=10, index="exact")
    g.fit(a, cache=d + "/emb.npy")
    g.fit(b, cache=d + "/emb.npy")
    np.testing.assert_array_equal(g.train_embeddings, b)
    g.fit(a, cache=d + "/emb.cache")
    assert os.path.exists(d + "/emb.cache"), sorted(os.listdir(d))


@case("repro.r10_cs_large_C", "either")
def r10():
    # The all-zero dual of C = 1e15 (or features x 1e8) must not pass silently: a clear
    # error, or a warning that says what to do (scale the features / lower C).
    from datacredit.kernels import crammer_singer_fit

    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 5)).astype(np.float32)
    y = np.arange(60) % 3
    X[np.arange(60), y] += 2
    for C, s in [(1e15, 1), (0.1, 1e8)]:
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            r = crammer_singer_fit(X * s, y, C, max_iter=2000)
        if np.abs(r.dual_coef).max() == 0:
            said = " ".join(str(x.message) for x in w).lower()
            assert "scale" in said or "lower c" in said or "smaller c" in said, (
                f"C={C:g} scale={s:g}: all-zero dual with warnings {said!r}"
            )


@case("repro.r11_cli_bool", "returns")
def r11():
    from harness.cases import _GMV_CFG, _cli

    _cli({**_GMV_CFG, "temperature": True})


@case("repro.r12_nonatomic_save", "returns", timeout=180, alone=True)
def r12():
    # kill -9 while overwriting: the previous good file must survive intact.
    from datacredit.kernels import PackedCodes

    d = tempfile.mkdtemp()
    p = os.path.join(d, "codes.npz")
    code = (
        "import numpy as np\n"
        "from datacredit.kernels import PackedCodes\n"
        "PackedCodes(np.random.default_rng(0).integers(0, 255, (20000, 8, 32), dtype=np.uint8),"
        f" 640_000, 16).save({p!r})\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    good = PackedCodes.load(p).data.copy()
    proc = subprocess.Popen([sys.executable, "-c", code])
    t0 = time.monotonic()
    # kill while it writes: as soon as the file or a temporary file next to it changes
    before = {n: os.stat(os.path.join(d, n)).st_mtime_ns for n in os.listdir(d)}
    while time.monotonic() - t0 < 60 and proc.poll() is None:
        now = {}
        for n in os.listdir(d):
            try:
                now[n] = os.stat(os.path.join(d, n)).st_mtime_ns
            except FileNotFoundError:
                pass
        if now != before:
            break
        time.sleep(0.0005)
    proc.kill()
    proc.wait()
    np.testing.assert_array_equal(PackedCodes.load(p).data, good)
    # save("x") writes x, not x.npz
    q = os.path.join(d, "plain")
    PackedCodes(good[:2], 64, 16).save(q)
    assert os.path.exists(q), sorted(os.listdir(d))


@case("repro.r13_blas_threads_race", "returns", timeout=180, alone=True)
def r13():
    import threading

    from threadpoolctl import threadpool_info, threadpool_limits

    from datacredit.kernels import gram_topk

    def ob():
        return [i["num_threads"] for i in threadpool_info() if "libscipy_openblas" in i["filepath"]]

    rng = np.random.default_rng(0)
    Q = rng.standard_normal((2000, 128)).astype(np.float32)
    K = rng.standard_normal((30000, 128)).astype(np.float32)
    before = ob()
    lim = threadpool_limits(1, user_api="blas")
    t = threading.Thread(target=lambda: gram_topk(Q, K, 5, n_threads=2))
    t.start()
    time.sleep(0.2)
    lim.restore_original_limits()
    t.join()
    assert ob() == before, (before, ob())


@case("repro.r14_shapley_save_numpy", "returns", timeout=120)
def r14():
    from datacredit import SurrogateSHAP
    from datacredit.shapley import FunctionGame, ShapleyValues

    g = FunctionGame(lambda Z: Z[:, 0] * 3.0 + Z[:, 1], 4)
    r = SurrogateSHAP(32, param_grid=dict(max_depth=np.array([2, 3]), n_estimators=[5])).explain(g)
    p = tempfile.mkdtemp() + "/sv.json"
    r.save(p)
    np.testing.assert_array_equal(ShapleyValues.load(p).values, r.values)


@case("repro.r15_dualda_corrupt_cache", "returns", timeout=120)
def r15():
    import glob

    import torch

    import datacredit as dc

    torch.manual_seed(0)
    X = torch.randn(200, 4)
    y = (X[:, 0] > 0).long()
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    d = tempfile.mkdtemp()
    ref = dc.DualDA(model, (X, y), layer="2", cache_dir=d, progress=False).fit()
    p = glob.glob(d + "/dualda-*.npz")[0]
    with open(p, "rb") as f:
        b = f.read()
    with open(p, "wb") as f:
        f.write(b[: len(b) // 2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = dc.DualDA(model, (X, y), layer="2", cache_dir=d, progress=False).fit()
    np.testing.assert_allclose(again.attribute(X[:3]), ref.attribute(X[:3]), rtol=1e-5, atol=1e-6)


@case("repro.r16_bank_mixed_resume", "either")
def r16():
    from datacredit.surrogateshap import SampleBank

    d = tempfile.mkdtemp() + "/bank"
    SampleBank.generate(lambda lab, n, s: np.zeros((n, 2)), [0, 1], 10, path=d, progress=False)
    b = SampleBank.generate(lambda lab, n, s: np.ones((n, 2)), [0, 1], 10, path=d, progress=False)
    # reaching here means the bank was reused; it must at least hold the new generator's output
    assert np.asarray(b.samples_for(0)).mean() == 1.0, "bank mixes two generators"


@case("repro.r17_gmv_tiny_temperature", "either")
def r17():
    import datacredit as dc

    rng = np.random.default_rng(0)
    E = rng.standard_normal((400, 8)).astype(np.float32)
    G = rng.standard_normal((30, 8)).astype(np.float32)
    v = dc.GMValuator(k=5, recall=20, index="exact", temperature=1e-320).fit(E).value(G).values
    assert np.isfinite(v).all(), f"{int(np.isnan(v).sum())} NaN values of {v.size}"


@case("repro.r18_fid_d1", "either")
def r18():
    from datacredit.surrogateshap import SampleBank
    from datacredit.surrogateshap.utilities import FID

    rng = np.random.default_rng(0)
    bank = SampleBank({0: rng.standard_normal((20, 1)), 1: rng.standard_normal((20, 1)) + 1})
    u = FID(None, rng.standard_normal((30, 1))).prepare(bank)
    out = np.asarray(u.evaluate(np.array([[0.5, 0.5]])))
    assert np.isfinite(out).all(), out


def _r19(n):
    from datacredit import SurrogateSHAP
    from datacredit.shapley import FunctionGame

    r = SurrogateSHAP(8).explain(FunctionGame(lambda Z: Z.sum(1).astype(float), n))
    np.testing.assert_allclose(r.values, np.ones(n), atol=1e-6)  # v(S) = |S|: phi_i = 1


@case("repro.r19_surrogateshap_1_player", "either", timeout=120)
def r19_1():
    _r19(1)


@case("repro.r19_surrogateshap_2_players", "either", timeout=120)
def r19_2():
    _r19(2)


def _diabetes():
    from sklearn.datasets import load_diabetes

    X, y = load_diabetes(return_X_y=True)
    return X.astype(np.float32), y


def _additivity(model, Xe, R, pred):
    from datacredit.kernels import tree_shap_interventional

    phi, base = tree_shap_interventional(model, Xe, R)
    gap = np.abs(np.asarray(phi).sum(1) + np.asarray(base) - pred).max()
    assert gap <= 1e-4 * np.abs(pred).max() + 1e-3, f"additivity gap {gap}"


@case("repro.r20a_xgboost_early_stopping", "either", timeout=120)
def r20a():
    import xgboost as xgb

    X, y = _diabetes()
    m = xgb.XGBRegressor(n_estimators=1000, learning_rate=0.3, early_stopping_rounds=2)
    m.fit(X[:300], y[:300], eval_set=[(X[300:], y[300:])], verbose=False)
    _additivity(m, X[:5], X[:20], m.predict(X[:5]))


@case("repro.r20b_xgboost_missing_sentinel", "either", timeout=120)
def r20b():
    import xgboost as xgb

    X, y = _diabetes()
    Xm = X.copy()
    Xm[np.random.default_rng(0).random(X.shape) < 0.3] = 1e-8
    m = xgb.XGBRegressor(n_estimators=50, missing=1e-8).fit(Xm, y)
    _additivity(m, Xm[:5], Xm[:20], m.predict(Xm[:5]))


@case("repro.r20c_treeshap_inf_grouped", "returns", timeout=120)
def r20c():
    import xgboost as xgb

    from datacredit.kernels.treeshap import from_xgboost

    X, y = _diabetes()
    m = xgb.XGBRegressor(n_estimators=50).fit(X, y)
    Xi = X[:5].copy()
    Xi[0, 2] = np.inf
    _additivity(m, Xi, X[:20], from_xgboost(m).predict(Xi))


@case("repro.r20d_xgboost_multiclass", "returns", timeout=120)
def r20d():
    # multi:softprob: values per output, laid out as shap does, (n, n_features, n_outputs)
    import xgboost as xgb

    from datacredit.kernels import tree_shap_interventional

    X, y = _diabetes()
    cls = np.digitize(y, np.quantile(y, [1 / 3, 2 / 3]))
    m = xgb.XGBClassifier(n_estimators=10, max_depth=3).fit(X, cls)
    phi, base = tree_shap_interventional(m, X[:4], X[:10])
    margin = m.get_booster().predict(xgb.DMatrix(X[:4]), output_margin=True)
    phi = np.asarray(phi)
    assert phi.shape == (4, X.shape[1], 3), phi.shape
    gap = np.abs(phi.sum(1) + np.asarray(base).reshape(-1, 3) - margin).max()
    assert gap <= 1e-3, f"additivity gap {gap}"
