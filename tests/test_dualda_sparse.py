"""DualDA from the sparse dual (issue 25): per-class column attributions against a dense
float64 brute force, the CSR explainer (format 2) against format 1, in Python and the C API."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import numpy as np
import pytest

from datacredit.dualda.explainer import DualDAExplainer, upgrade_explainer
from datacredit.dualda.sparse_attribution import column_dense, column_topk
from datacredit.kernels.sparse_dual import SparseDual
from datacredit.safetensors_io import load_safetensors, save_safetensors

FIXTURE = Path(__file__).parent / "fixtures" / "v0.1.0" / "dualda_explainer.safetensors"


def random_dual(n_rows: int, k: int, seed: int) -> SparseDual:
    """A Crammer–Singer-shaped dual: 0-3 nonzero classes per row, a few empty rows."""
    rng = np.random.default_rng(seed)
    dense = np.zeros((n_rows, k))
    for r in range(n_rows):
        cls = rng.choice(k, rng.integers(0, 4), replace=False)
        dense[r, cls] = rng.normal(size=cls.size)
    return SparseDual.from_dense(dense)


def brute(queries, keys, dense_lam, targets, key_index, n_train):
    out = np.zeros((queries.shape[0], n_train))
    out[:, key_index] = dense_lam[:, targets].T * (queries.astype(np.float64) @ keys.T)
    return out


@pytest.mark.parametrize("opponents", [False, True])
@pytest.mark.parametrize("k", [1, 7, 40])
def test_column_topk_matches_dense_brute_force(opponents, k):
    rng = np.random.default_rng(0)
    n_rows, n_train, kc, d = 25, 40, 6, 5
    dual = random_dual(n_rows, kc, 1)
    keys = rng.normal(size=(n_rows, d)).astype(np.float32)
    key_index = np.sort(rng.choice(n_train, n_rows, replace=False)).astype(np.int64)
    q = rng.normal(size=(30, d)).astype(np.float32)
    t = rng.integers(0, kc, 30)
    v, i = column_topk(q, keys, dual.columns(), t, k, key_index, n_train, largest=not opponents)
    ref = brute(q, keys.astype(np.float64), dual.toarray(), t, key_index, n_train)
    idx = np.arange(n_train)
    for r in range(30):
        order = np.lexsort((idx, ref[r] if opponents else -ref[r]))[:k]
        np.testing.assert_array_equal(i[r], order)
        np.testing.assert_allclose(v[r], ref[r, order], atol=1e-5 * np.abs(ref).max())
    dense = column_dense(q, keys, dual.columns(), t, key_index, n_train)
    np.testing.assert_allclose(dense, ref, atol=1e-5 * np.abs(ref).max())


def _c_library():
    for cand in (os.environ.get("DATACREDIT_C_LIB"), "build/dev/libdatacredit.so"):
        if cand and Path(cand).exists():
            return ctypes.CDLL(str(Path(cand).resolve()))
    pytest.skip("libdatacredit.so not built (scripts/dev-build builds it)")


def test_upgraded_explainer_answers_as_format_1(tmp_path):
    new = tmp_path / "ex2.safetensors"
    upgrade_explainer(FIXTURE, new)
    tensors, meta = load_safetensors(new)
    assert meta["format_version"] == "2" and "dual_coef" not in tensors
    old_ex, new_ex = DualDAExplainer(FIXTURE), DualDAExplainer(new)
    assert old_ex.format_version == "1" and new_ex.format_version == "2"
    np.testing.assert_array_equal(new_ex.dual_coef, old_ex.dual_coef)
    rng = np.random.default_rng(3)
    q = rng.normal(size=(11, old_ex.dim)).astype(np.float32)
    t = rng.integers(-1, old_ex.n_classes, 11)
    for opp in (False, True):
        for k in (1, 10, old_ex.n_train):
            a, b = old_ex.topk(q, k, t, opponents=opp), new_ex.topk(q, k, t, opponents=opp)
            np.testing.assert_array_equal(a[1], b[1])
            np.testing.assert_array_equal(a[0], b[0])


def test_c_api_reads_format_2(tmp_path):
    lib = _c_library()
    new = tmp_path / "ex2.safetensors"
    upgrade_explainer(FIXTURE, new)
    ex = DualDAExplainer(new)
    h = ctypes.c_void_p()
    assert lib.dc_dualda_load(str(new).encode(), ctypes.byref(h)) == 0
    try:
        rng = np.random.default_rng(5)
        q = rng.normal(size=(9, ex.dim)).astype(np.float32)
        t = rng.integers(-1, ex.n_classes, 9).astype(np.int32)
        for flags, opp in ((0, False), (1, True)):
            for k in (1, 10, ex.n_train):
                v = np.zeros((9, k), np.float32)
                i = np.zeros((9, k), np.int64)
                rc = lib.dc_dualda_topk_ex(
                    h,
                    q.ctypes.data_as(ctypes.c_void_p),
                    ctypes.c_int64(9),
                    ctypes.c_int64(ex.dim),
                    t.ctypes.data_as(ctypes.c_void_p),
                    ctypes.c_int64(k),
                    ctypes.c_int(flags),
                    ctypes.c_int(1),
                    v.ctypes.data_as(ctypes.c_void_p),
                    i.ctypes.data_as(ctypes.c_void_p),
                )
                assert rc == 0
                pv, pi = ex.topk(q, k, t, opponents=opp)
                np.testing.assert_array_equal(i, pi)
                np.testing.assert_allclose(v, pv, rtol=0, atol=1e-6 * np.abs(pv).max())
    finally:
        lib.dc_dualda_free(h)


def test_unknown_or_broken_format_refused(tmp_path):
    tensors, meta = load_safetensors(FIXTURE)
    bad = tmp_path / "v3.safetensors"
    save_safetensors(bad, dict(tensors), {**meta, "format_version": "3"})
    with pytest.raises(ValueError, match="save_explainer"):
        DualDAExplainer(bad)
    new = tmp_path / "ex2.safetensors"
    upgrade_explainer(FIXTURE, new)
    t2, m2 = load_safetensors(new)
    t2 = dict(t2)
    t2["dual_indices"] = np.full_like(t2["dual_indices"], int(m2["n_classes"]))
    broken = tmp_path / "broken.safetensors"
    save_safetensors(broken, t2, m2)
    with pytest.raises(ValueError, match="class indices outside"):
        DualDAExplainer(broken)
    lib = _c_library()
    h = ctypes.c_void_p()
    assert lib.dc_dualda_load(str(broken).encode(), ctypes.byref(h)) != 0
    lib.dc_last_error.restype = ctypes.c_char_p
    assert b"dual_indices outside" in lib.dc_last_error()
