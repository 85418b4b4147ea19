"""Artifacts readable without Python: the DualDA explainer, PQ and PackedCodes files.

The committed fixtures (tests/fixtures/v*/, written by each release; legacy-npz/ by the .npz
format of 0.1 before safetensors) must keep loading and answering as the independent
references stored next to them (dense float64 brute force, exact ADC over probed lists).
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import numpy as np
import pytest

from datacredit.dualda.explainer import DualDAExplainer, write_explainer
from datacredit.kernels.pq import PackedCodes, ProductQuantizer
from datacredit.safetensors_io import load_safetensors, save_safetensors

FIXTURES = Path(__file__).parent / "fixtures"
VERSIONS = sorted(p for p in FIXTURES.glob("v*") if p.is_dir())


def brute_topk(ex: DualDAExplainer, f, t, k, opponents):
    dense = np.zeros((f.shape[0], ex.n_train))
    lam = ex.dual_coef.astype(np.float64)[:, t].T
    dense[:, ex.support] = lam * (f.astype(np.float64) @ ex.features.astype(np.float64).T)
    idx = np.arange(ex.n_train)
    order = [np.lexsort((idx, r if opponents else -r))[:k] for r in dense]
    return np.take_along_axis(dense, np.array(order), 1), np.array(order)


def test_fixture_versions_exist():
    assert VERSIONS, "no tests/fixtures/v*/ directory"


@pytest.mark.parametrize("vdir", VERSIONS, ids=lambda p: p.name)
def test_explainer_fixture(vdir):
    ex = DualDAExplainer(vdir / "dualda_explainer.safetensors")
    exp, _ = load_safetensors(vdir / "expected.safetensors")
    q, targets = exp["dualda_queries"], exp["dualda_targets"]
    np.testing.assert_array_equal(
        np.where(targets < 0, ex.predict(q), targets), exp["dualda_classes"]
    )
    for opp, name in ((False, "proponent"), (True, "opponent")):
        v, i = ex.topk(q, 10, targets, opponents=opp)
        want_v = exp[f"{name}_values"]
        np.testing.assert_array_equal(i, exp[f"{name}_indices"])
        np.testing.assert_allclose(v, want_v, rtol=0, atol=1e-5 * np.abs(want_v).max())
        # And against a brute force over the tensors as loaded now.
        bv, bi = brute_topk(ex, q, exp["dualda_classes"], 10, opp)
        np.testing.assert_array_equal(i, bi)


@pytest.mark.parametrize("vdir", VERSIONS, ids=lambda p: p.name)
def test_pq_fixture(vdir):
    pq = ProductQuantizer.load(vdir / "pq.safetensors")
    packed = PackedCodes.load(vdir / "packed_ivf.safetensors")
    exp, _ = load_safetensors(vdir / "expected.safetensors")
    np.testing.assert_array_equal(packed.unpack(), exp["pq_codes"])
    np.testing.assert_array_equal(pq.encode(exp["pq_data"]), exp["pq_codes"])
    np.testing.assert_array_equal(pq.assign(exp["pq_data"]), exp["pq_lists"])
    q = exp["pq_queries"]
    d, i = pq.search(q, packed, 5, rerank=packed.n)
    # Exact ADC over the codes of the nprobe nearest lists.
    tables = pq.compute_tables(q).astype(np.float64)
    codes, lists = exp["pq_codes"], exp["pq_lists"]
    cd = ((q[:, None, :] - pq.coarse_centroids[None].astype(np.float64)) ** 2).sum(-1)
    for r in range(q.shape[0]):
        probed = np.argsort(cd[r], kind="stable")[: pq.nprobe]
        cand = np.flatnonzero(np.isin(lists, probed))
        dist = tables[r, np.arange(pq.m), codes[cand]].sum(1)
        order = np.lexsort((cand, dist))[:5]
        np.testing.assert_array_equal(i[r], cand[order])
        np.testing.assert_allclose(d[r], dist[order], rtol=1e-5, atol=1e-5)


def test_legacy_npz_fixtures_load_as_new():
    vdir = VERSIONS[0]
    old_pq = ProductQuantizer.load(FIXTURES / "legacy-npz" / "pq.npz")
    new_pq = ProductQuantizer.load(vdir / "pq.safetensors")
    assert repr(old_pq) == repr(new_pq)
    np.testing.assert_array_equal(old_pq.centroids, new_pq.centroids)
    np.testing.assert_array_equal(old_pq.coarse_centroids, new_pq.coarse_centroids)
    old_ivf = PackedCodes.load(FIXTURES / "legacy-npz" / "packed_ivf.npz")
    new_ivf = PackedCodes.load(vdir / "packed_ivf.safetensors")
    for a in ("data", "ids", "list_blocks"):
        np.testing.assert_array_equal(getattr(old_ivf, a), getattr(new_ivf, a))
    flat = PackedCodes.load(FIXTURES / "legacy-npz" / "packed_flat.npz")
    exp, _ = load_safetensors(vdir / "expected.safetensors")
    np.testing.assert_array_equal(flat.unpack(), exp["pq_codes"])
    assert flat.list_blocks is None


def test_pq_save_is_safetensors_at_exact_path(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 8)).astype(np.float32)
    for nlist in (None, 3):
        pq = ProductQuantizer(8, 2, 4, nlist=nlist, seed=3).train(x)
        path = tmp_path / f"pq{nlist}"  # no suffix: written exactly here
        pq.save(path)
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
        assert path.read_bytes()[:4] != b"PK\x03\x04"
        back = ProductQuantizer.load(path)
        assert repr(back) == repr(pq)
        np.testing.assert_array_equal(back.centroids, pq.centroids)
        codes = pq.encode(x)
        packed = pq.pack(codes, lists=pq.assign(x) if nlist else None)
        ppath = tmp_path / f"packed{nlist}"
        packed.save(ppath)
        pback = PackedCodes.load(ppath)
        np.testing.assert_array_equal(pback.unpack(), codes)
        np.testing.assert_array_equal(
            back.search(x[:4], pback, 3)[1], pq.search(x[:4], packed, 3)[1]
        )


def test_corrupt_artifacts_raise(tmp_path):
    src = VERSIONS[0] / "packed_ivf.safetensors"
    raw = src.read_bytes()
    bad = tmp_path / "bad"
    bad.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="not a valid safetensors"):
        PackedCodes.load(bad)
    tensors, meta = load_safetensors(src, mmap=False)
    meta["format_version"] = "2"
    save_safetensors(bad, tensors, meta)
    with pytest.raises(ValueError, match="version"):
        PackedCodes.load(bad)
    ids = tensors["ids"].copy()
    ids[np.flatnonzero(ids >= 0)[:2]] = ids[ids >= 0][0]  # one code twice, one missing
    tensors["ids"] = ids
    meta["format_version"] = "1"
    save_safetensors(bad, tensors, meta)
    with pytest.raises(ValueError, match="inverted-list"):
        PackedCodes.load(bad)
    with pytest.raises(ValueError, match="ProductQuantizer"):
        ProductQuantizer.load(src)
    with pytest.raises(ValueError, match="not a DualDA explainer"):
        DualDAExplainer(src)


def test_explainer_rejects_bad_queries_and_files(tmp_path):
    ex = DualDAExplainer(VERSIONS[0] / "dualda_explainer.safetensors")
    q = np.zeros((2, ex.dim), np.float32)
    with pytest.raises(ValueError, match="features"):
        ex.topk(np.zeros((2, ex.dim + 1)), 3)
    with pytest.raises(ValueError, match="k = 0"):
        ex.topk(q, 0)
    with pytest.raises(ValueError, match="targets"):
        ex.topk(q, 3, [0, ex.n_classes])
    with pytest.raises(ValueError, match="NaN"):
        ex.topk(np.full((1, ex.dim), np.nan), 3)
    with pytest.raises(ValueError, match="strictly increasing"):
        write_explainer(
            tmp_path / "x",
            features=ex.features,
            dual_coef=ex.dual_coef,
            coef=ex.coef,
            bias=ex.bias,
            support=ex.support[::-1],
            labels=ex.labels,
            n_train=ex.n_train,
        )


def test_save_explainer_matches_dualda_attribute(tmp_path):
    torch = pytest.importorskip("torch")
    from datacredit import DualDA

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 3, (50,), generator=g)
    x = torch.randn(3, 4, generator=g)[y] * 2 + torch.randn(50, 4, generator=g)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3))
    dda = DualDA(model, (x, y), layer="2", C=0.05, progress=False, max_iter=3000).fit()
    path = tmp_path / "explainer"
    dda.save_explainer(path)
    ex = DualDAExplainer(path)
    assert ex.n_train == 50 and ex.n_support == dda.n_support
    f, _ = dda._features(x[:7])
    np.testing.assert_array_equal(ex.predict(f), dda.surrogate_logits(x[:7]).argmax(1))
    t = np.array([0, 1, 2, 0, 1, 2, 0])
    dense = dda.attribute(x[:7], torch.as_tensor(t))  # (7, 50), the reference scores
    for opp in (False, True):
        v, i = ex.topk(f, 12, t, opponents=opp)
        idx = np.arange(50)
        for r in range(7):
            order = np.lexsort((idx, dense[r] if opp else -dense[r]))[:12]
            np.testing.assert_allclose(v[r], dense[r, order], atol=1e-6 * np.abs(dense).max())
            np.testing.assert_array_equal(i[r], order)


def _c_library():
    for cand in (os.environ.get("DATACREDIT_C_LIB"), "build/dev/libdatacredit.so"):
        if cand and Path(cand).exists():
            return ctypes.CDLL(str(Path(cand).resolve()))
    pytest.skip("libdatacredit.so not built (scripts/dev-build builds it)")


@pytest.mark.parametrize("vdir", VERSIONS, ids=lambda p: p.name)
def test_c_api_agrees_with_python(vdir):
    lib = _c_library()
    ex = DualDAExplainer(vdir / "dualda_explainer.safetensors")
    h = ctypes.c_void_p()
    path = str(vdir / "dualda_explainer.safetensors").encode()
    assert lib.dc_dualda_load(path, ctypes.byref(h)) == 0
    try:
        rng = np.random.default_rng(5)
        q = rng.normal(size=(9, ex.dim)).astype(np.float32)
        for k in (1, 10, ex.n_train):
            v = np.zeros((9, k), np.float32)
            i = np.zeros((9, k), np.int64)
            rc = lib.dc_dualda_topk(
                h,
                q.ctypes.data_as(ctypes.c_void_p),
                ctypes.c_int64(9),
                ctypes.c_int64(ex.dim),
                None,
                ctypes.c_int64(k),
                v.ctypes.data_as(ctypes.c_void_p),
                i.ctypes.data_as(ctypes.c_void_p),
            )
            assert rc == 0
            pv, pi = ex.topk(q, k)
            # The C library may link another BLAS build than the extension: float32 rounding.
            np.testing.assert_array_equal(i, pi)
            np.testing.assert_allclose(v, pv, rtol=0, atol=1e-6 * np.abs(pv).max())
    finally:
        lib.dc_dualda_free(h)
