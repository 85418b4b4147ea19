"""The bad-input cases: every public entry point of datacredit, and issue 11's reproducers.

Case ids are ``<entry point>.<argument>.<bad value>`` for the generated tables and
``repro.rNN...`` for the reproducers of ``shared/repros/`` (each with the outcome its header
asks for).  Inputs are tiny and seeded: a case checks validation, not numerics at scale.
Importing this module builds the table only; nothing runs until a case is called.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile

import numpy as np

from harness import values as V
from harness.registry import CASES, case, mutations

__all__ = ["CASES"]

GiB = 1 << 30
RNG = np.random.default_rng


def _X(n: int = 40, d: int = 8, seed: int = 0) -> np.ndarray:
    return RNG(seed).standard_normal((n, d)).astype(np.float32)


def _tmp() -> str:
    return tempfile.mkdtemp(prefix="dc-harness-")


# ============================================================================ kernels: gram


def _gram_topk(**kw):
    from datacredit.kernels import gram_topk

    return gram_topk(**kw)


def _gram(**kw):
    from datacredit.kernels import gram

    return gram(**kw)


def _gram_base():
    return dict(queries=_X(5, 8, 1), keys=_X(30, 8, 2), k=3)


mutations(
    "gram_topk",
    _gram_topk,
    _gram_base,
    {
        "queries": V.matrix("queries", empty_rows="either", extra_col="raises"),
        "keys": V.matrix("keys"),
        "k": V.positive_int(none="raises", huge="raises")
        + [("above_n", lambda kw: 31, "raises"), ("equal_n", lambda kw: 30, "returns")],
        "metric": V.choice("ip"),
        "n_threads": V.n_threads(),
        "largest": V.flag(),
        "weights": [
            (
                "matrix_without_classes",
                lambda kw: np.ones((30, 3), np.float32),
                "raises",
                "weight|classes",
            ),
            ("wrong_rows", lambda kw: np.ones((29, 3), np.float32), "raises"),
            ("3d", lambda kw: np.ones((30, 3, 1), np.float32), "raises"),
        ],
        "classes": [
            ("without_weights", lambda kw: np.zeros(5, np.int64), "raises"),
        ],
    },
)


def _gram_weighted_base():
    return dict(
        queries=_X(5, 8, 1),
        keys=_X(30, 8, 2),
        k=3,
        weights=RNG(3).standard_normal((30, 4)).astype(np.float32),
        classes=np.array([0, 1, 2, 3, 0]),
    )


mutations(
    "gram_topk[classes]",
    _gram_topk,
    _gram_weighted_base,
    {
        "classes": V.labels("classes", n_classes=4),
        "weights": [
            ("nan", lambda kw: np.where(np.eye(30, 4) > 0, np.nan, kw["weights"]), "raises"),
            ("one_column_short", lambda kw: kw["weights"][:, :3], "raises", "weights|classes"),
        ],
    },
)


def _gram_vecw_base():
    return dict(
        queries=_X(5, 8, 1),
        keys=_X(30, 8, 2),
        k=3,
        weights=np.linspace(0.1, 2, 30, dtype=np.float32),
    )


mutations("gram_topk[weights]", _gram_topk, _gram_vecw_base, {"weights": V.vector("weights")})


mutations(
    "gram",
    _gram,
    lambda: dict(queries=_X(5, 8, 1), keys=_X(30, 8, 2)),
    {
        "queries": V.matrix("queries", empty_rows="either"),
        "keys": V.matrix("keys", empty_rows="either"),
        "metric": V.choice("l2"),
        "n_threads": V.n_threads(),
    },
)


@case("gram_topk.metric.each_valid", "returns")
def _gram_metrics_agree_with_numpy():
    # Not bad input: the three metrics on well-scaled data, against numpy (guards the
    # harness' "returns" cases from passing on garbage).
    from datacredit.kernels import gram_topk

    q, k = _X(4, 8, 1).astype(np.float64), _X(20, 8, 2).astype(np.float64)
    ref = {
        "ip": q @ k.T,
        "l2": ((q[:, None] - k[None]) ** 2).sum(-1),
        "cosine": (q / np.linalg.norm(q, axis=1, keepdims=True))
        @ (k / np.linalg.norm(k, axis=1, keepdims=True)).T,
    }
    for metric, s in ref.items():
        largest = metric != "l2"
        v, i = gram_topk(q, k, 3, metric=metric, largest=largest)
        want = np.sort(s, axis=1)[:, ::-1][:, :3] if largest else np.sort(s, axis=1)[:, :3]
        np.testing.assert_allclose(v, want, rtol=1e-4, atol=1e-4 * np.abs(s).max())
        np.testing.assert_allclose(
            np.take_along_axis(s, i, 1), want, rtol=1e-4, atol=1e-4 * np.abs(s).max()
        )


@case("gram_topk.huge.queries_times_k", timeout=120, address_space=3 * GiB)
def _gram_huge_output():
    # n * k results do not fit in the address space: MemoryError, not an abort.
    from datacredit.kernels import gram_topk

    q = np.broadcast_to(np.ones((1, 1), np.float32), (200_000, 1))
    k = np.broadcast_to(np.ones((1, 1), np.float32), (100_000, 1))
    gram_topk(q, k, 100_000)


@case("gram.huge.dense_output", timeout=120, address_space=3 * GiB)
def _gram_huge_dense():
    from datacredit.kernels import gram

    q = np.broadcast_to(np.ones((1, 1), np.float32), (100_000, 1))
    gram(q, q)


# ===================================================================== kernels: Crammer-Singer


def _cs_data():
    X = _X(60, 5, 0)
    y = np.arange(60) % 3
    X[np.arange(60), y] += 2
    return X, y


def _cs_fit(**kw):
    from datacredit.kernels import crammer_singer_fit

    return crammer_singer_fit(**kw)


def _cs_base():
    X, y = _cs_data()
    return dict(X=X, y=y, C=0.1, max_iter=200, n_classes=3)


mutations(
    "crammer_singer_fit",
    _cs_fit,
    _cs_base,
    {
        "X": V.matrix("X", extra_col=None)
        + [("one_row_short", lambda kw: kw["X"][:-1], "raises", "X|y")],
        "y": V.labels("y"),
        "C": V.positive_float(),
        "tol": V.positive_float(),
        "max_iter": V.positive_int(),
        "seed": V.seed(),
        "n_threads": V.n_threads(),
        "fit_bias": V.flag(),
        "n_classes": V.positive_int(none="returns")
        + [("too_few", lambda kw: 2, "raises"), ("huge", lambda kw: 2**40, "raises")],
        "sample_weight": [
            ("nan", lambda kw: np.r_[np.nan, np.ones(59)], "raises"),
            ("negative", lambda kw: -np.ones(60), "raises"),
            ("short", lambda kw: np.ones(59), "raises"),
            ("inf", lambda kw: np.r_[np.inf, np.ones(59)], "raises"),
            ("all_zero", lambda kw: np.zeros(60), "either"),
            ("matrix", lambda kw: np.ones((60, 1)), "raises"),
            ("string", lambda kw: "w", "raises"),
        ],
        "shrink_factor": [
            ("zero", lambda kw: 0.0, "raises"),
            ("above_one", lambda kw: 2.0, "raises"),
            ("nan", lambda kw: float("nan"), "raises"),
            ("string", lambda kw: "x", "raises"),
        ],
    },
)


@case("crammer_singer_fit.y.single_class", "either")
def _cs_single_class():
    X, _ = _cs_data()
    _cs_fit(X=X, y=np.zeros(60, np.int64), C=0.1)


@case("crammer_singer_fit.huge.rows_times_classes", "either", timeout=120, address_space=3 * GiB)
def _cs_huge_classes():
    # A dense N x K float64 dual (1.6 GB for lambda, as much for alpha) does not fit in
    # 3 GiB; the sparse dual does, even here where identical features make every class
    # active (nnz ~ N * K / 4).  It returns, or fails with a clear MemoryError: no crash.
    # (2e5 x 1e5 is no longer refused at allocation: one pass is O(N K log K), hours.)
    X = np.broadcast_to(np.ones((1, 1), np.float32), (20_000, 1))
    y = np.arange(20_000) % 10_000
    _cs_fit(X=X, y=y, C=0.1, max_iter=1)


def _cs_objective(**kw):
    from datacredit.kernels import crammer_singer_objective

    return crammer_singer_objective(**kw)


def _cs_obj_base():
    X, y = _cs_data()
    return dict(X=X, y=y, coef=np.zeros((3, 5)), bias=np.zeros(3), C=0.1)


mutations(
    "crammer_singer_objective",
    _cs_objective,
    _cs_obj_base,
    {
        "X": V.matrix("X", extra_col="raises"),
        "y": V.labels("y", n_classes=3),
        "coef": [
            ("wrong_shape", lambda kw: np.zeros((3, 4)), "raises"),
            ("vector", lambda kw: np.zeros(5), "raises"),
            ("nan", lambda kw: np.full((3, 5), np.nan), "raises"),
            ("none", lambda kw: None, "raises"),
        ],
        "bias": [
            ("wrong_shape", lambda kw: np.zeros(2), "raises"),
            ("nan", lambda kw: np.full(3, np.nan), "raises"),
            ("none", lambda kw: None, "returns"),
        ],
        "C": V.positive_float(zero="either"),  # C = 0: just the regulariser
    },
)


# ================================================================================ kernels: PQ


@functools.cache
def _pq(nbits: int = 8, nlist: int | None = None, metric: str = "l2"):
    from datacredit.kernels import ProductQuantizer

    pq = ProductQuantizer(16, 4, nbits, nlist=nlist, nprobe=2 if nlist else 1, metric=metric)
    return pq.train(_X(600, 16, 5), n_iter=3)


def _pq_new(**kw):
    from datacredit.kernels import ProductQuantizer

    return ProductQuantizer(**kw)


mutations(
    "ProductQuantizer",
    _pq_new,
    lambda: dict(d=16, m=4, nbits=8, nlist=4, nprobe=1),
    {
        # Construction allocates nothing: 2**31 may be accepted, 2**63 must not be.
        "d": V.positive_int(huge="either") + [("not_multiple", lambda kw: 15, "raises")],
        "m": V.positive_int(huge="either") + [("above_d", lambda kw: 32, "raises")],
        "nbits": V.positive_int() + [("nine", lambda kw: 9, "raises")],
        "metric": V.choice("l2"),
        "nlist": V.positive_int(none="returns", huge="either"),
        "nprobe": V.positive_int(huge="either"),
        "seed": V.seed(),
        "n_threads": V.n_threads(),
    },
)


def _pq_train(pq_args=None, **kw):
    from datacredit.kernels import ProductQuantizer

    return ProductQuantizer(16, 4, 8, nlist=4, **(pq_args or {})).train(**kw)


mutations(
    "ProductQuantizer.train",
    _pq_train,
    lambda: dict(x=_X(300, 16, 5), n_iter=2, max_points_per_centroid=256, coarse_iter=10),
    {
        "x": V.matrix("x", extra_col="raises")
        + [("fewer_rows_than_centroids", lambda kw: kw["x"][:10], "either")],
        "n_iter": V.positive_int(),
        "max_points_per_centroid": V.positive_int(),
        "coarse_iter": V.positive_int(),
    },
)


def _pq_call(method: str, pq_kw: dict | None = None):
    def call(**kw):
        pq = _pq(**(pq_kw or {}))
        return getattr(pq, method)(**kw)

    return call


mutations(
    "ProductQuantizer.encode",
    _pq_call("encode"),
    lambda: dict(x=_X(20, 16, 6)),
    {"x": V.matrix("x", empty_rows="either")},
)
mutations(
    "ProductQuantizer.assign",
    _pq_call("assign", dict(nlist=8)),
    lambda: dict(x=_X(20, 16, 6)),
    {"x": V.matrix("x", empty_rows="either")},
)
mutations(
    "ProductQuantizer.compute_tables",
    _pq_call("compute_tables"),
    lambda: dict(queries=_X(3, 16, 6)),
    {"queries": V.matrix("queries", empty_rows="either")},
)


def _codes(n: int = 20, nbits: int = 8) -> np.ndarray:
    return RNG(7).integers(0, 2**nbits, (n, 4)).astype(np.uint8)


mutations(
    "ProductQuantizer.decode",
    _pq_call("decode"),
    lambda: dict(codes=_codes()),
    {
        "codes": [
            ("float", lambda kw: kw["codes"].astype(np.float32) + 0.5, "raises"),
            ("int64_out_of_range", lambda kw: kw["codes"].astype(np.int64) + 256, "raises"),
            ("negative", lambda kw: kw["codes"].astype(np.int64) - 300, "raises"),
            ("wrong_m", lambda kw: kw["codes"][:, :3], "raises"),
            ("vector", lambda kw: kw["codes"][0], "raises"),
            ("none", lambda kw: None, "raises"),
            ("int64", lambda kw: kw["codes"].astype(np.int64), "either"),
            ("bool", lambda kw: kw["codes"] > 3, "either"),
        ]
    },
)


def _search_base():
    return dict(queries=_X(3, 16, 8), codes=_pq().encode(_X(50, 16, 9)), k=5)


mutations(
    "ProductQuantizer.search",
    _pq_call("search"),
    _search_base,
    {
        "queries": V.matrix("queries", empty_rows="either"),
        "codes": [
            ("wrong_m", lambda kw: kw["codes"][:, :3], "raises"),
            ("float", lambda kw: kw["codes"].astype(np.float32), "either"),
            ("none", lambda kw: None, "raises"),
            ("empty", lambda kw: kw["codes"][:0], "raises"),
            ("string", lambda kw: "codes", "raises"),
        ],
        "k": V.positive_int(huge="raises") + [("above_n", lambda kw: 51, "raises")],
        "rerank": [
            ("negative", lambda kw: -1, "raises"),
            ("bool", lambda kw: True, "raises"),
            ("string", lambda kw: "l2", "raises"),
            ("float", lambda kw: 1.5, "raises"),
            ("without_vectors", lambda kw: 10, "either"),
        ],
        "lists": [("without_nlist", lambda kw: np.zeros(50, np.int64), "raises")],
    },
)


def _ivf_search_base():
    pq = _pq(nlist=8)
    X = _X(120, 16, 9)
    return dict(queries=_X(3, 16, 8), codes=pq.encode(X), k=5, lists=pq.assign(X), nprobe=2)


mutations(
    "ProductQuantizer.search[ivf]",
    _pq_call("search", dict(nlist=8)),
    _ivf_search_base,
    {
        "lists": V.labels("lists", n_classes=8),
        "nprobe": V.positive_int(none="returns") + [("above_nlist", lambda kw: 9, "raises")],
    },
)


def _pack_base():
    return dict(codes=_codes(50, 4))


mutations(
    "ProductQuantizer.pack",
    _pq_call("pack", dict(nbits=4)),
    _pack_base,
    {
        "codes": [
            ("above_15", lambda kw: kw["codes"] + 16, "raises"),
            ("wrong_m", lambda kw: kw["codes"][:, :3], "raises"),
            ("negative", lambda kw: kw["codes"].astype(np.int64) - 1, "raises"),
            ("none", lambda kw: None, "raises"),
            ("empty", lambda kw: kw["codes"][:0], "either"),
            ("float", lambda kw: kw["codes"] + 0.25, "raises"),
        ],
        "lists": [("without_nlist", lambda kw: np.zeros(50, np.int64), "raises")],
    },
)


@case("ProductQuantizer.pack.nbits8")
def _pack_nbits8():
    _pq().pack(_codes(50, 8))


def _packed_ivf():
    pq = _pq(4, 8)
    X = _X(300, 16, 0)
    return pq, X, pq.pack(pq.encode(X), lists=pq.assign(X))


def _packed_codes(**kw):
    from datacredit.kernels import PackedCodes

    pq, X, P = _packed_ivf()
    codes = PackedCodes(**kw)
    return pq.search(X[:3], codes, 3)


def _packed_base():
    _, _, P = _packed_ivf()
    return dict(data=P.data, n=P.n, m=P.m, list_blocks=P.list_blocks, ids=P.ids)


def _lb(kw, pos, val):
    lb = np.array(kw["list_blocks"])
    lb[pos] = val
    return lb


mutations(
    "PackedCodes",
    _packed_codes,
    _packed_base,
    {
        "list_blocks": [
            ("interior_beyond_end", lambda kw: _lb(kw, 3, 10**12), "raises"),  # r01
            ("decreasing", lambda kw: _lb(kw, 2, kw["list_blocks"][4] + 1), "raises"),
            ("negative", lambda kw: _lb(kw, 1, -5), "raises"),
            ("last_beyond_data", lambda kw: _lb(kw, -1, kw["list_blocks"][-1] + 1), "raises"),
            ("first_nonzero", lambda kw: _lb(kw, 0, 1), "raises"),
            ("short", lambda kw: kw["list_blocks"][:-2], "raises"),
            ("float", lambda kw: kw["list_blocks"].astype(np.float64) + 0.5, "raises"),
            ("none_with_ids", lambda kw: None, "raises"),
        ],
        "ids": [
            ("out_of_range", lambda kw: np.where(kw["ids"] >= 0, kw["ids"] + 10**9, -1), "raises"),
            ("short", lambda kw: kw["ids"][:-32], "raises"),
            ("none_with_lists", lambda kw: None, "raises"),
            ("below_minus_one", lambda kw: np.where(kw["ids"] >= 0, kw["ids"], -7), "raises"),
        ],
        "n": [
            ("larger_than_data", lambda kw: kw["n"] + 10**6, "raises"),
            ("negative", lambda kw: -1, "raises"),
            ("float", lambda kw: 2.5, "raises"),
            ("huge", lambda kw: 2**63, "raises"),
        ],
        "m": [
            ("wrong", lambda kw: 6, "raises"),
            ("zero", lambda kw: 0, "raises"),
            ("huge", lambda kw: 2**40, "raises"),
        ],
        "data": [
            ("wrong_dtype", lambda kw: kw["data"].astype(np.int64), "raises"),
            ("truncated", lambda kw: kw["data"][:1], "raises"),
            ("2d", lambda kw: kw["data"].reshape(kw["data"].shape[0], -1), "raises"),
            ("none", lambda kw: None, "raises"),
            ("noncontiguous", lambda kw: kw["data"][:, :, ::-1], "either"),
        ],
    },
)


@case("PackedCodes.flat.n_larger_than_data")
def _packed_flat_n():
    from datacredit.kernels import PackedCodes

    pq = _pq(4)
    P = pq.pack(pq.encode(_X(40, 16, 0)))
    pq.search(_X(2, 16, 1), PackedCodes(P.data, P.n + 10**6, P.m), 3)


@case("PackedCodes.load.missing_file")
def _packed_load_missing():
    from datacredit.kernels import PackedCodes

    PackedCodes.load(os.path.join(_tmp(), "absent.npz"))


@case("PackedCodes.load.truncated")
def _packed_load_truncated():
    from datacredit.kernels import PackedCodes

    _, _, P = _packed_ivf()
    p = os.path.join(_tmp(), "codes.npz")
    P.save(p)
    with open(p, "rb") as f:
        b = f.read()
    with open(p, "wb") as f:
        f.write(b[: len(b) // 2])
    PackedCodes.load(p)


@case("PackedCodes.load.inconsistent_arrays")
def _packed_load_inconsistent():
    from datacredit.kernels import PackedCodes

    _, _, P = _packed_ivf()
    p = os.path.join(_tmp(), "codes.npz")
    lb = P.list_blocks.copy()
    lb[3] = 10**12
    np.savez(p, data=P.data, n=P.n, m=P.m, list_blocks=lb, ids=P.ids)
    PackedCodes.load(p)


@case("ProductQuantizer.load.not_a_pq")
def _pq_load_garbage():
    from datacredit.kernels import ProductQuantizer

    p = os.path.join(_tmp(), "pq.npz")
    np.savez(p, centroids=np.ones(3))
    ProductQuantizer.load(p)


@case("ProductQuantizer.load.pickle_refused")
def _pq_load_pickle():
    from datacredit.kernels import ProductQuantizer

    p = os.path.join(_tmp(), "pq.npz")
    np.savez(p, centroids=np.array([object()], dtype=object))
    ProductQuantizer.load(p)


@case("ProductQuantizer.untrained.encode")
def _pq_untrained():
    from datacredit.kernels import ProductQuantizer

    ProductQuantizer(16, 4).encode(_X(3, 16))


def _kmeans(**kw):
    from datacredit.kernels import kmeans

    return kmeans(**kw)


mutations(
    "kmeans",
    _kmeans,
    lambda: dict(x=_X(100, 4, 3), k=5, n_iter=3, max_points_per_centroid=64),
    {
        "x": V.matrix("x", extra_col=None),
        "k": V.positive_int() + [("above_n", lambda kw: 101, "raises")],
        "n_iter": V.positive_int(),
        "max_points_per_centroid": V.positive_int(),
        "seed": V.seed(),
    },
)


# ========================================================================== kernels: TreeSHAP


def _stump_arrays():
    # One tree: x0 < 0.5 -> 1.0 else 2.0; a second tree on x1.
    return dict(
        left=np.array([1, -1, -1, 4, -1, -1], np.int32),
        right=np.array([2, -1, -1, 5, -1, -1], np.int32),
        feature=np.array([0, 0, 0, 1, 0, 0], np.int32),
        threshold=np.array([0.5, 0, 0, 0.0, 0, 0], np.float32),
        default_left=np.ones(6, np.uint8),
        value=np.array([0, 1.0, 2.0, 0, -1.0, 3.0], np.float32),
        roots=np.array([0, 3], np.int64),
        base_score=0.25,
        n_features=2,
    )


def _ens_shap(**kw):
    from datacredit.kernels import TreeEnsemble, tree_shap_interventional

    ens = TreeEnsemble(**kw)
    X = RNG(0).standard_normal((4, 2)).astype(np.float32)
    phi, base = tree_shap_interventional(ens, X, X)
    # additivity is the kernel's contract: check it whenever it returns
    np.testing.assert_allclose(phi.sum(1) + base, ens.predict(X), atol=1e-5)


def _setidx(name, i, val, dtype=None):
    def make(kw):
        a = np.array(kw[name], dtype=dtype or np.asarray(kw[name]).dtype)
        a[i] = val
        return a

    return make


mutations(
    "TreeEnsemble",
    _ens_shap,
    _stump_arrays,
    {
        "left": [
            ("child_out_of_range", _setidx("left", 0, 99), "raises"),
            ("child_before_parent", _setidx("left", 3, 1), "raises"),
            ("self_loop", _setidx("left", 0, 0), "raises"),
            ("short", lambda kw: kw["left"][:-1], "raises"),
            ("int64", lambda kw: kw["left"].astype(np.int64), "returns"),
            ("float", lambda kw: kw["left"].astype(np.float32), "either"),
            ("huge_int64", lambda kw: kw["left"].astype(np.int64) + 2**40, "raises"),
            ("leaf_mismatch", _setidx("right", 0, -1), "raises"),
        ],
        "right": [
            ("child_out_of_range", _setidx("right", 0, 99), "raises"),
            ("shared_child", _setidx("right", 0, 1), "raises"),  # r05: a DAG
            ("into_other_tree", _setidx("right", 0, 4), "raises"),
        ],
        "feature": [
            ("out_of_range", _setidx("feature", 0, 7), "raises"),
            ("negative", _setidx("feature", 0, -1), "raises"),
            ("short", lambda kw: kw["feature"][:2], "raises"),
        ],
        "threshold": [
            ("nan", _setidx("threshold", 0, np.nan), "raises"),
            ("short", lambda kw: kw["threshold"][:2], "raises"),
            ("inf", _setidx("threshold", 0, np.inf), "either"),
        ],
        "value": [
            ("nan", _setidx("value", 1, np.nan), "raises"),
            ("inf", _setidx("value", 1, np.inf), "raises"),
            ("short", lambda kw: kw["value"][:3], "raises"),
        ],
        "default_left": [
            ("short", lambda kw: kw["default_left"][:1], "raises"),
            ("values_above_one", lambda kw: kw["default_left"] * 7, "either"),
        ],
        "roots": [
            ("out_of_range", lambda kw: np.array([0, 60], np.int64), "raises"),
            ("negative", lambda kw: np.array([0, -1], np.int64), "raises"),
            ("not_a_root", lambda kw: np.array([0, 1], np.int64), "raises"),
            ("empty", lambda kw: np.zeros(0, np.int64), "raises"),
            ("same_tree_twice", lambda kw: np.array([0, 0], np.int64), "either"),
            ("unsorted", lambda kw: np.array([3, 0], np.int64), "either"),
        ],
        "base_score": [
            ("nan", lambda kw: float("nan"), "raises"),
            ("string", lambda kw: "0", "raises"),
            ("array", lambda kw: np.zeros(2), "raises"),
        ],
        "n_features": [
            ("zero", lambda kw: 0, "raises"),
            ("too_few", lambda kw: 1, "raises"),
            ("huge", lambda kw: 2**31, "raises"),
            ("bool", lambda kw: True, "raises"),
        ],
    },
)


def _tsi(**kw):
    from datacredit.kernels import TreeEnsemble, tree_shap_interventional

    ens = TreeEnsemble(**_stump_arrays())
    phi, base = tree_shap_interventional(ens, **kw)
    X = np.asarray(kw["X"], dtype=np.float32)
    np.testing.assert_allclose(phi.sum(1) + base, ens.predict(X), atol=1e-5)


def _inf_ok(entry):
    if entry[0] in ("inf", "neg_inf", "float64_overflow"):
        return (entry[0], entry[1], "either")
    return entry


mutations(
    "tree_shap_interventional",
    _tsi,
    lambda: dict(X=_X(4, 2, 0), references=_X(6, 2, 1)),
    {
        # NaN means missing and +-inf is a value a tree routes: exact values or a clear error
        "X": [_inf_ok(e) for e in V.matrix("X") if e[0] != "nan"]
        + [("nan_is_missing", lambda kw: np.full((2, 2), np.nan, np.float32), "returns")],
        "references": [_inf_ok(e) for e in V.matrix("references") if e[0] != "nan"],
        "n_threads": V.n_threads(),
    },
)


@case("tree_shap_interventional.model.not_a_model")
def _tsi_bad_model():
    from datacredit.kernels import tree_shap_interventional

    tree_shap_interventional(object(), _X(2, 2), _X(2, 2))


@case("from_xgboost.model.string")
def _fx_string():
    from datacredit.kernels import from_xgboost

    from_xgboost("model.json")


@case("TreeEnsemble.predict.X.wrong_columns")
def _ens_predict_cols():
    from datacredit.kernels import TreeEnsemble

    TreeEnsemble(**_stump_arrays()).predict(_X(3, 5))


@case("TreeEnsemble.predict.n_threads.negative")
def _ens_predict_threads():
    from datacredit.kernels import TreeEnsemble

    TreeEnsemble(**_stump_arrays()).predict(_X(3, 2), n_threads=-3)


# =========================================================================== shapley estimators


def _game(n: int = 4):
    from datacredit.shapley import FunctionGame

    return FunctionGame(lambda Z: Z.astype(float) @ np.arange(1.0, n + 1), n)


def _exact(**kw):
    from datacredit.shapley import exact

    return exact(**kw)


mutations(
    "shapley.exact",
    _exact,
    lambda: dict(game=_game(), batch_size=65536),
    {
        "game": [
            ("none", lambda kw: None, "raises"),
            ("not_callable", lambda kw: 42, "raises"),
            ("too_many_players", lambda kw: _game(40), "raises"),
            ("returns_nan", lambda kw: _fgame(lambda Z: np.full(len(Z), np.nan)), "raises"),
            ("returns_wrong_length", lambda kw: _fgame(lambda Z: np.zeros(len(Z) + 1)), "raises"),
            ("returns_string", lambda kw: _fgame(lambda Z: "v"), "raises"),
            ("returns_matrix", lambda kw: _fgame(lambda Z: np.zeros((len(Z), 2))), "raises"),
        ],
        "batch_size": V.positive_int(none="returns"),
    },
)


def _fgame(fn, n=4):
    from datacredit.shapley import FunctionGame

    return FunctionGame(fn, n)


def _kernel_shap(**kw):
    from datacredit.shapley import kernel_shap

    return kernel_shap(**kw)


mutations(
    "shapley.kernel_shap",
    _kernel_shap,
    lambda: dict(game=_game(), budget=12),
    {
        "budget": V.positive_int() + [("below_n_plus_2", lambda kw: 3, "raises")],
        "seed": [("negative", lambda kw: -1, "raises"), ("string", lambda kw: "0", "raises")],
        "game": [("plain_callable_without_n", lambda kw: lambda Z: Z.sum(1), "raises")],
    },
)


def _sample_coalitions(**kw):
    from datacredit.shapley import sample_coalitions

    return sample_coalitions(**kw)


mutations(
    "shapley.sample_coalitions",
    _sample_coalitions,
    lambda: dict(n=5, budget=10),
    {
        "n": V.positive_int(huge="raises"),
        # unique=True: a budget above 2**n - 2 is capped at every coalition
        "budget": V.positive_int(huge="either", overflow="either")
        + [("above_2_pow_n_unique", lambda kw: 10**6, "either")],
        "seed": [("negative", lambda kw: -1, "raises"), ("string", lambda kw: "x", "raises")],
    },
)


def _sfunc(name):
    def call(**kw):
        import datacredit.shapley as S

        return getattr(S, name)(**kw)

    return call


mutations(
    "shapley.all_coalitions", _sfunc("all_coalitions"), lambda: dict(n=3), {"n": V.positive_int()}
)
mutations(
    "shapley.shapley_size_probs",
    _sfunc("shapley_size_probs"),
    lambda: dict(n=3),
    {"n": V.positive_int()},
)
mutations(
    "shapley.shapley_from_table",
    _sfunc("shapley_from_table"),
    lambda: dict(v=np.arange(8.0), n=3),
    {
        "v": [
            ("wrong_length", lambda kw: np.arange(7.0), "raises"),
            ("nan", lambda kw: np.r_[np.nan, np.arange(7.0)], "raises"),
            ("matrix", lambda kw: np.zeros((8, 1)), "raises"),
        ],
        "n": V.positive_int(),
    },
)
mutations(
    "shapley.kernel_weights",
    _sfunc("kernel_weights"),
    lambda: dict(n=4, sizes=np.array([1, 2, 3])),
    {
        "sizes": [
            ("zero", lambda kw: np.array([0, 1]), "either"),
            ("above_n", lambda kw: np.array([5]), "raises"),
            ("negative", lambda kw: np.array([-1]), "raises"),
            ("float", lambda kw: np.array([1.5]), "raises"),
        ],
        "n": V.positive_int(),
    },
)


@case("shapley.FunctionGame.players.zero")
def _fg_zero():
    _fgame(lambda Z: Z.sum(1), 0)


@case("shapley.FunctionGame.players.bool")
def _fg_bool():
    _fgame(lambda Z: Z.sum(1), True)


@case("shapley.FunctionGame.fn.not_callable")
def _fg_not_callable():
    _fgame(42, 3)


@case("shapley.FunctionGame.players.duplicates")
def _fg_dups():
    from datacredit.shapley import FunctionGame

    FunctionGame(lambda Z: Z.sum(1), ["a", "a"])


@case("shapley.ShapleyValues.load.not_json")
def _sv_load_garbage():
    from datacredit.shapley import ShapleyValues

    p = os.path.join(_tmp(), "sv.json")
    with open(p, "w") as f:
        f.write("{not json")
    ShapleyValues.load(p)


@case("shapley.ShapleyValues.load.wrong_fields")
def _sv_load_fields():
    from datacredit.shapley import ShapleyValues

    p = os.path.join(_tmp(), "sv.json")
    with open(p, "w") as f:
        json.dump({"values": [1, 2], "players": ["a"]}, f)
    ShapleyValues.load(p)


# =============================================================================== SurrogateSHAP


def _sshap(budget=16, **kw):
    from datacredit import SurrogateSHAP

    kw.setdefault("cv", False)
    return SurrogateSHAP(budget, **kw).explain(_game())


mutations(
    "SurrogateSHAP",
    _sshap,
    lambda: dict(budget=16),
    {
        "budget": V.positive_int(huge="either", overflow="either")
        + [("below_n_plus_2", lambda kw: 5, "raises")],
        "seed": [("negative", lambda kw: -1, "raises"), ("string", lambda kw: "0", "raises")],
        "n_jobs": [("zero", lambda kw: 0, "raises"), ("string", lambda kw: "2", "raises")],
        "n_folds": [("one", lambda kw: 1, "raises"), ("zero", lambda kw: 0, "raises")],
        "efficiency": V.choice("boundary", none="returns"),
        "param_grid": [
            ("not_a_dict", lambda kw: [1, 2], "raises"),
            ("empty_values", lambda kw: dict(max_depth=[]), "raises"),
            ("unknown_param", lambda kw: dict(no_such_param=[1]), "either"),
        ],
        "xgb_params": [("not_a_dict", lambda kw: 3, "raises")],
        "batch_size": [("zero", lambda kw: 0, "raises"), ("negative", lambda kw: -4, "raises")],
    },
)


def _sshap_coal(**kw):
    from datacredit import SurrogateSHAP

    return SurrogateSHAP(16, cv=False).explain_coalitions(**kw)


def _coal_base():
    from datacredit.shapley import sample_coalitions

    Z = sample_coalitions(4, 16, 0)
    return dict(Z=Z, v=Z.astype(float) @ np.arange(1.0, 5.0))


mutations(
    "SurrogateSHAP.explain_coalitions",
    _sshap_coal,
    _coal_base,
    {
        "Z": [
            ("no_empty_or_full", lambda kw: kw["Z"][1:-1], "raises", None),
            ("values_2", lambda kw: kw["Z"].astype(int) * 2, "raises"),
            ("float_fraction", lambda kw: kw["Z"] * 0.5, "raises"),
            ("vector", lambda kw: kw["Z"][:, 0], "raises"),
        ],
        "v": [
            ("nan", lambda kw: np.r_[np.nan, kw["v"][1:]], "raises"),
            ("short", lambda kw: kw["v"][:-1], "raises"),
            ("string", lambda kw: "v", "raises"),
        ],
        "players": [("wrong_length", lambda kw: ["a", "b"], "raises")],
    },
)


def _bank(d: int = 2, labels=(0, 1, 2)):
    from datacredit.surrogateshap import SampleBank

    return SampleBank({lab: RNG(lab).standard_normal((12, d)) + lab for lab in labels})


def _mean_score():
    from datacredit.surrogateshap.utilities import MeanScore

    return MeanScore(lambda x: x[:, 0], higher_is_better=True)


def _proxy(**kw):
    from datacredit.surrogateshap import ProxyGame

    g = ProxyGame(**kw)
    g(np.ones((2, g.n_players), bool))
    return g


mutations(
    "ProxyGame",
    _proxy,
    lambda: dict(
        bank=_bank(),
        contributors={"a": [0], "b": [1, 2]},
        utility=_mean_score(),
        label_weights="uniform",  # required (paper eq. 4): counts or an explicit 'uniform'
    ),
    {
        "contributors": [
            ("empty", lambda kw: {}, "raises"),
            ("unknown_label", lambda kw: {"a": [0], "b": [9]}, "raises", "label"),
            ("no_labels", lambda kw: {"a": [0], "b": []}, "raises", None),
            ("list", lambda kw: [[0], [1]], "raises"),
        ],
        "label_weights": [
            # r11's label_weights=1e308: only ratios matter, ProxyGame scales them (see the
            # case ProxyGame.label_weights.huge_is_uniform)
            ("huge", lambda kw: [1e308, 1e308, 1e308], "returns"),
            ("negative", lambda kw: [1.0, -1.0, 1.0], "raises"),
            ("nan", lambda kw: [1.0, np.nan, 1.0], "raises"),
            ("wrong_length", lambda kw: [1.0, 1.0], "raises"),
            ("zero_for_used_label", lambda kw: [1.0, 0.0, 1.0], "raises", None),
            ("bool", lambda kw: [True, True, True], "either"),
            ("string", lambda kw: "proportional", "raises"),
            ("uniform", lambda kw: "uniform", "returns"),
        ],
        "utility": [
            ("none", lambda kw: None, "raises"),
            ("not_a_utility", lambda kw: 42, "raises"),
        ],
        "empty_value": [
            ("nan", lambda kw: float("nan"), "raises"),
            ("string", lambda kw: "x", "raises"),
        ],
        "bank": [("not_a_bank", lambda kw: {0: np.ones((3, 2))}, "raises")],
    },
)


@case("ProxyGame.label_weights.huge_is_uniform", "returns")
def _proxy_huge_weights():
    # r11: 1e308 per label summed to inf and made every coalition "empty"; equal counts of
    # any size are the uniform mixture.
    from datacredit.surrogateshap import ProxyGame

    Z = np.array([[1, 0], [0, 1], [1, 1]], bool)
    args = (_bank(), {"a": [0], "b": [1, 2]}, _mean_score())
    huge = ProxyGame(*args, label_weights=[1e308] * 3, empty_value=0.0)
    ones = ProxyGame(*args, label_weights=[1.0] * 3, empty_value=0.0)
    np.testing.assert_array_equal(huge.weights(Z), ones.weights(Z))
    np.testing.assert_array_equal(huge(Z), ones(Z))


@case("ProxyGame.call.wrong_width")
def _proxy_call_width():
    from datacredit.surrogateshap import ProxyGame

    g = ProxyGame(_bank(), {"a": [0], "b": [1, 2]}, _mean_score(), label_weights="uniform")
    g(np.ones((2, 5), bool))


@case("ProxyGame.call.non_boolean")
def _proxy_call_values():
    from datacredit.surrogateshap import ProxyGame

    g = ProxyGame(_bank(), {"a": [0], "b": [1, 2]}, _mean_score(), label_weights="uniform")
    g(np.full((2, 2), 3))


def _samplebank(**kw):
    from datacredit.surrogateshap import SampleBank

    return SampleBank(**kw)


mutations(
    "SampleBank",
    _samplebank,
    lambda: dict(data={0: np.ones((3, 2)), 1: np.zeros((3, 2))}),
    {
        "data": [
            ("empty", lambda kw: {}, "raises"),
            ("list", lambda kw: [np.ones((3, 2))], "raises"),
            ("empty_samples", lambda kw: {0: np.ones((0, 2))}, "raises"),
            ("scalar_samples", lambda kw: {0: np.float64(1.0)}, "raises"),
            ("float_label", lambda kw: {0.5: np.ones((3, 2))}, "raises"),
            ("none_label", lambda kw: {None: np.ones((3, 2))}, "raises"),
            ("mixed_widths", lambda kw: {0: np.ones((3, 2)), 1: np.ones((3, 5))}, "either"),
        ]
    },
)


def _generate(**kw):
    from datacredit.surrogateshap import SampleBank

    kw.setdefault("progress", False)
    return SampleBank.generate(**kw)


mutations(
    "SampleBank.generate",
    _generate,
    lambda: dict(
        generator=lambda lab, n, s: np.full((n, 2), float(lab)), labels=[0, 1], n_per_label=4
    ),
    {
        "generator": [
            ("not_callable", lambda kw: 42, "raises"),
            ("returns_wrong_count", lambda kw: lambda lab, n, s: np.ones((n + 1, 2)), "raises"),
            ("returns_scalar", lambda kw: lambda lab, n, s: 1.0, "raises"),
            ("returns_none", lambda kw: lambda lab, n, s: None, "raises"),
        ],
        "labels": [
            ("empty", lambda kw: [], "raises"),
            ("duplicates", lambda kw: [0, 0], "raises"),
            ("float", lambda kw: [0.5], "raises"),
        ],
        "n_per_label": V.positive_int(huge="either"),
        "batch_size": [("zero", lambda kw: 0, "raises"), ("string", lambda kw: "4", "raises")],
        "seed": [("negative", lambda kw: -1, "raises")],
    },
)


@case("SampleBank.load.missing_manifest")
def _bank_load_missing():
    from datacredit.surrogateshap import SampleBank

    SampleBank.load(_tmp())


@case("SampleBank.load.corrupt_manifest")
def _bank_load_corrupt():
    from datacredit.surrogateshap import SampleBank

    d = os.path.join(_tmp(), "bank")
    SampleBank({0: np.ones((3, 2))}, path=d)
    for name in os.listdir(d):
        if name.endswith(".json"):
            with open(os.path.join(d, name), "w") as f:
                f.write("{")
    SampleBank.load(d)


# =================================================================================== utilities


def _util_prepare(make):
    def call(**kw):
        u = make(**kw)
        u.prepare(_bank())
        u.evaluate(np.array([[0.5, 0.25, 0.25]]))
        return u

    return call


def _fid(**kw):
    from datacredit.surrogateshap.utilities import FID

    return FID(**kw)


mutations(
    "utilities.FID",
    _util_prepare(_fid),
    lambda: dict(features=None, reference=RNG(0).standard_normal((30, 2))),
    {
        "reference": [
            ("nan", lambda kw: np.full((30, 2), np.nan), "raises"),
            ("wrong_width", lambda kw: np.ones((30, 3)), "raises"),
            ("vector", lambda kw: np.ones(30), "raises"),
            ("none", lambda kw: None, "raises"),
            ("bad_tuple", lambda kw: (np.zeros(2), np.ones((3, 3))), "raises"),
            ("one_row", lambda kw: np.ones((1, 2)), "either"),
        ],
        "features": [("not_callable", lambda kw: 42, "raises")],
    },
)


@case("utilities.FID.evaluate.weights_wrong_width")
def _fid_eval_width():
    from datacredit.surrogateshap.utilities import FID

    FID(None, RNG(0).standard_normal((30, 2))).prepare(_bank()).evaluate(np.ones((1, 5)))


@case("utilities.FID.evaluate.weights_negative")
def _fid_eval_neg():
    from datacredit.surrogateshap.utilities import FID

    FID(None, RNG(0).standard_normal((30, 2))).prepare(_bank()).evaluate(np.array([[-1.0, 1, 1]]))


@case("utilities.FID.evaluate.weights_nan")
def _fid_eval_nan():
    from datacredit.surrogateshap.utilities import FID

    FID(None, RNG(0).standard_normal((30, 2))).prepare(_bank()).evaluate(np.array([[np.nan, 1, 1]]))


@case("utilities.FID.evaluate.before_prepare")
def _fid_unprepared():
    from datacredit.surrogateshap.utilities import FID

    FID(None, RNG(0).standard_normal((30, 2))).evaluate(np.ones((1, 3)))


@case("utilities.MeanScore.score.returns_nan")
def _ms_nan():
    from datacredit.surrogateshap.utilities import MeanScore

    MeanScore(lambda x: np.full(len(x), np.nan)).prepare(_bank())


@case("utilities.MeanScore.score.wrong_length")
def _ms_len():
    from datacredit.surrogateshap.utilities import MeanScore

    MeanScore(lambda x: np.ones(len(x) + 1)).prepare(_bank())


@case("utilities.MeanScore.score.not_callable")
def _ms_not_callable():
    from datacredit.surrogateshap.utilities import MeanScore

    MeanScore(42).prepare(_bank())


@case("utilities.PairwiseDiversity.pair_score.not_callable")
def _pd_not_callable():
    from datacredit.surrogateshap.utilities import PairwiseDiversity

    PairwiseDiversity(42)


@case("utilities.PairwiseDiversity.pair_score.returns_nan")
def _pd_nan():
    from datacredit.surrogateshap.utilities import PairwiseDiversity

    u = PairwiseDiversity(lambda a, b: np.full(len(a), np.nan)).prepare(_bank())
    u.evaluate(np.array([[0.5, 0.25, 0.25]]))


# ===================================================================================== metrics


def _metric(name):
    def call(**kw):
        import datacredit.metrics as M

        out = getattr(M, name)(**kw)
        if np.ndim(out) == 0 and not np.isfinite(out):
            raise AssertionError(f"{name} returned {out} without an error")
        return out

    return call


def _attr(n=4, N=10):
    return RNG(0).standard_normal((n, N))


mutations(
    "metrics.identical_class",
    _metric("identical_class"),
    lambda: dict(
        attributions_or_topk=_attr(),
        train_labels=np.arange(10) % 3,
        test_predictions=np.arange(4) % 3,
        k=3,
    ),
    {
        "attributions_or_topk": [
            ("nan", lambda kw: np.full((4, 10), np.nan), "raises"),
            ("vector", lambda kw: np.ones(10), "raises"),
            ("negative_indices", lambda kw: -np.ones((4, 3), np.int64), "raises"),
            ("indices_too_large", lambda kw: np.full((4, 3), 10), "raises"),
        ],
        "train_labels": [
            ("fractional", lambda kw: np.arange(10) % 3 + 0.5, "raises"),
            ("short", lambda kw: np.arange(9) % 3, "raises"),
        ],
        "test_predictions": [
            ("fractional", lambda kw: np.arange(4) % 3 + 0.5, "raises"),
            ("short", lambda kw: np.arange(3), "raises"),
        ],
        "k": V.positive_int() + [("above_n", lambda kw: 11, "raises")],
    },
)

mutations(
    "metrics.identical_subclass",
    _metric("identical_subclass"),
    lambda: dict(
        attributions_or_topk=_attr(),
        train_subclasses=np.arange(10) % 3,
        test_subclasses=np.arange(4) % 3,
        k=3,
    ),
    {
        "train_subclasses": [("fractional", lambda kw: np.arange(10) % 3 + 0.5, "raises")],
        "test_subclasses": [("short", lambda kw: np.arange(3), "raises")],
        "k": [("zero", lambda kw: 0, "raises"), ("bool", lambda kw: True, "raises")],
    },
)

for _name, _a, _b in [
    ("mislabel_detection_auc", "self_influence", "is_mislabeled"),
    ("shortcut_detection_auprc", "attributions", "is_shortcut"),
]:

    def _base(_name=_name, _a=_a, _b=_b):
        s = RNG(1).standard_normal(10) if _name.startswith("mis") else _attr()
        return {_a: s, _b: np.arange(10) % 2 == 0}

    mutations(
        f"metrics.{_name}",
        _metric(_name),
        _base,
        {
            _a: [
                (
                    "nan",
                    lambda kw, _a=_a: np.full_like(np.asarray(kw[_a], float), np.nan),
                    "raises",
                ),
                ("string", lambda kw: "x", "raises"),
            ],
            _b: [
                ("short", lambda kw: np.arange(9) % 2 == 0, "raises"),
                ("all_false", lambda kw: np.zeros(10, bool), "raises"),
                ("all_true", lambda kw: np.ones(10, bool), "raises"),
                ("values_2", lambda kw: np.arange(10) % 3, "raises"),
                ("fractional", lambda kw: np.full(10, 0.5), "raises"),
            ],
        },
    )


def _lds_base():
    rng = RNG(2)
    return dict(
        scores=rng.standard_normal((3, 10)),
        subsets=rng.random((6, 10)) < 0.5,
        subset_outputs=rng.standard_normal((6, 3)),
    )


mutations(
    "metrics.lds",
    _metric("lds"),
    _lds_base,
    {
        "scores": [
            ("nan", lambda kw: np.full((3, 10), np.nan), "raises"),  # r11: NaN scores
            ("inf", lambda kw: np.where(np.eye(3, 10) > 0, np.inf, kw["scores"]), "raises"),
            ("vector", lambda kw: kw["scores"][0], "raises"),
        ],
        "subsets": [
            ("negative_index", lambda kw: [np.array([-1, 0])] * 6, "raises"),  # wraps
            ("index_too_large", lambda kw: [np.array([10])] * 6, "raises"),
            ("fractional_index", lambda kw: [np.array([0.5, 1.7])] * 6, "raises"),
            ("wrong_width", lambda kw: np.ones((6, 9), bool), "raises"),
            ("values_2", lambda kw: kw["subsets"].astype(int) * 2, "raises"),
            ("too_few", lambda kw: kw["subsets"][:2], "raises", None),
        ],
        "subset_outputs": [
            ("nan", lambda kw: np.full((6, 3), np.nan), "raises"),  # r11: NaN outputs
            ("wrong_shape", lambda kw: np.ones((3, 6)), "raises"),
        ],
    },
)

mutations(
    "metrics.coreset_indices",
    _metric("coreset_indices"),
    lambda: dict(attributions=_attr(), fraction=0.3),
    {
        "attributions": [
            ("nan", lambda kw: np.full((4, 10), np.nan), "raises"),
            ("vector", lambda kw: np.ones(10), "either"),
        ],
        "fraction": [
            ("zero", lambda kw: 0.0, "raises"),
            ("above_one", lambda kw: 1.5, "raises"),
            ("nan", lambda kw: float("nan"), "raises"),
            ("negative", lambda kw: -0.1, "raises"),
            ("string", lambda kw: "0.5", "raises"),
        ],
    },
)

mutations(
    "metrics.coreset_ranking",
    _metric("coreset_ranking"),
    lambda: dict(attributions=_attr()),
    {
        "attributions": [
            ("nan", lambda kw: np.full((4, 10), np.nan), "raises"),
            ("string", lambda kw: "a", "raises"),
        ]
    },
)

mutations(
    "metrics.matthews_corrcoef",
    _metric("matthews_corrcoef"),
    lambda: dict(a=np.arange(10) % 2, b=(np.arange(10) // 2) % 2),
    {
        "a": [
            ("fractional", lambda kw: np.full(10, 0.5), "raises"),  # r11: truncated to 0
            ("short", lambda kw: np.arange(9) % 2, "raises"),
            ("nan", lambda kw: np.r_[np.nan, np.zeros(9)], "raises"),
            ("values_2", lambda kw: np.arange(10) % 3, "either"),
        ],
        "b": [("fractional", lambda kw: np.arange(10) % 2 + 0.7, "raises")],
    },
)

mutations(
    "metrics.identical_class_ratio",
    _metric("identical_class_ratio"),
    lambda: dict(
        topk_indices=np.tile(np.arange(3), (4, 1)),
        train_labels=np.arange(10) % 3,
        gen_labels=np.arange(4) % 3,
    ),
    {
        "topk_indices": [
            ("negative", lambda kw: -np.ones((4, 3), np.int64), "raises"),
            ("too_large", lambda kw: np.full((4, 3), 10), "raises"),
            ("fractional", lambda kw: np.full((4, 3), 0.5), "raises"),
            ("vector", lambda kw: np.arange(3), "raises"),
        ],
        "gen_labels": [
            ("short", lambda kw: np.arange(3), "raises"),
            ("fractional", lambda kw: np.full(4, 0.5), "raises"),
        ],
        "k": [("above_given", lambda kw: 4, "raises"), ("zero", lambda kw: 0, "raises")],
    },
)

mutations(
    "metrics.ood_rank",
    _metric("ood_rank"),
    lambda: dict(values=RNG(0).standard_normal(10), is_noisy=np.arange(10) % 4 == 0),
    {
        "values": [
            ("nan", lambda kw: np.r_[np.nan, np.zeros(9)], "raises"),
            ("matrix", lambda kw: np.ones((2, 5)), "raises"),
        ],
        "is_noisy": [
            ("short", lambda kw: np.zeros(9, bool), "raises"),
            ("none_noisy", lambda kw: np.zeros(10, bool), "raises"),
            ("fractional", lambda kw: np.full(10, 0.5), "raises"),
        ],
        "ties": V.choice("average"),
    },
)


def _lds_groups_base():
    rng = RNG(3)
    return dict(
        values=rng.standard_normal(5),
        coalitions=rng.random((8, 5)) < 0.5,
        utilities=rng.standard_normal(8),
    )


mutations(
    "metrics.lds_groups",
    _metric("lds_groups"),
    _lds_groups_base,
    {
        "values": [
            ("nan", lambda kw: np.r_[np.nan, np.zeros(4)], "raises"),
            ("short", lambda kw: np.zeros(4), "raises"),
        ],
        "coalitions": [
            ("wrong_width", lambda kw: np.ones((8, 4), bool), "raises"),
            ("values_2", lambda kw: kw["coalitions"] * 2, "raises"),
        ],
        "utilities": [
            ("nan", lambda kw: np.r_[np.nan, np.zeros(7)], "raises"),
            ("short", lambda kw: np.zeros(7), "raises"),
        ],
    },
)

mutations(
    "metrics.lds_coalitions",
    _metric("lds_coalitions"),
    lambda: dict(n=5, m=100),
    {
        "n": V.positive_int(huge="either"),
        "alpha": [
            ("zero", lambda kw: 0.0, "raises"),
            ("one", lambda kw: 1.0, "either"),
            ("above_one", lambda kw: 1.5, "raises"),
            ("nan", lambda kw: float("nan"), "raises"),
        ],
        "m": V.positive_int(huge="either"),
        "seed": [("negative", lambda kw: -1, "raises")],
    },
)

mutations(
    "metrics.counterfactual_ranking",
    _metric("counterfactual_ranking"),
    lambda: dict(values=RNG(0).standard_normal(20)),
    {
        "values": [
            ("nan", lambda kw: np.r_[np.nan, np.zeros(19)], "raises"),
            ("empty", lambda kw: np.zeros(0), "raises"),
        ],
        "k_fracs": [
            ("above_one", lambda kw: (1.5,), "raises"),
            ("negative", lambda kw: (-0.1,), "raises"),
            ("string", lambda kw: "0.1", "raises"),
        ],
        "players": [("wrong_length", lambda kw: ["a"], "raises")],
    },
)


# ================================================================================= GMValuator


def _gmv(init=None, fit=None, value=None):
    from datacredit import GMValuator

    g = GMValuator(**{"k": 3, "recall": 6, "index": "exact", **(init or {})})
    g.fit(**{"train_data": _X(60, 8, 0), **(fit or {})})
    res = g.value(**{"generated": _X(7, 8, 1), **(value or {})})
    if not np.isfinite(res.values).all():
        raise AssertionError("GMValuator returned non-finite values without an error")
    return res


mutations(
    "GMValuator",
    lambda **kw: _gmv(init=kw),
    lambda: dict(k=3, batch_size=256),
    {
        "k": V.positive_int(huge="raises"),
        "recall": [
            ("below_k", lambda kw: 2, "raises"),
            ("zero", lambda kw: 0, "raises"),
            ("bool", lambda kw: True, "raises"),
            ("above_n", lambda kw: 10**6, "either"),
        ],
        "index": V.choice("exact") + [("hnsw", lambda kw: "hnsw", "raises")],
        "temperature": V.positive_float()
        + [("subnormal", lambda kw: 1e-320, "either"), ("tiny", lambda kw: 1e-30, "either")],  # r17
        "rerank": [
            ("unknown", lambda kw: "no-such-distance", "raises"),
            ("int", lambda kw: 3, "raises"),
        ],
        "batch_size": V.positive_int(huge="either", overflow="either"),
        "seed": [("negative", lambda kw: -1, "either"), ("string", lambda kw: "0", "raises")],
        "n_threads": V.n_threads(),
        "pq_m": [("zero", lambda kw: 0, "raises"), ("bool", lambda kw: True, "raises")],
        "diagnostics_sample": [
            ("negative", lambda kw: -1, "raises"),
            ("string", lambda kw: "x", "raises"),
        ],
        "device": [("unknown", lambda kw: "tpu:9", "either")],  # unused by the pixel encoder
    },
)

mutations(
    "GMValuator.fit",
    lambda **kw: _gmv(fit=kw),
    lambda: dict(train_data=_X(60, 8, 0)),
    {
        "train_data": [
            e
            for e in V.matrix("train_data", extra_col="raises")
            if e[0] not in ("empty_cols", "vector", "3d", "col_strided")
        ]
        + [("fewer_than_k", lambda kw: kw["train_data"][:2], "raises", None)],
        "cache": [
            ("directory", lambda kw: _tmp(), "raises"),
            ("int", lambda kw: 3, "raises"),
        ],
    },
)

mutations(
    "GMValuator.value",
    lambda **kw: _gmv(value=kw),
    lambda: dict(generated=_X(7, 8, 1)),
    {
        "generated": [
            e for e in V.matrix("generated", empty_rows="raises") if e[0] not in ("col_strided",)
        ],
        "quality_scores": [
            ("nan", lambda kw: np.r_[np.nan, np.ones(6)], "raises"),
            ("negative", lambda kw: -np.ones(7), "raises"),
            ("above_one", lambda kw: np.full(7, 2.0), "raises"),
            ("short", lambda kw: np.ones(6), "raises"),
            ("string", lambda kw: "q", "raises"),
        ],
    },
)


@case("GMValuator.value.before_fit")
def _gmv_unfitted():
    from datacredit import GMValuator

    GMValuator(k=3, recall=6).value(_X(3, 8))


@case("GMValuation.by_group.groups.short")
def _gmv_groups_short():
    _gmv().by_group(np.arange(59) % 3)


@case("GMValuation.by_group.agg.unknown")
def _gmv_groups_agg():
    _gmv().by_group(np.arange(60) % 3, agg="median-of-means")


@case("GMValuation.load.truncated")
def _gmv_load_truncated():
    from datacredit.gmvaluator import GMValuation

    p = os.path.join(_tmp(), "val.npz")
    _gmv().save(p)
    with open(p, "rb") as f:
        b = f.read()
    with open(p, "wb") as f:
        f.write(b[: len(b) // 2])
    GMValuation.load(p)


@case("GMValuation.save.roundtrip_exact_path", "returns")
def _gmv_save_path():
    from datacredit.gmvaluator import GMValuation

    p = os.path.join(_tmp(), "val")  # no extension: save("x") writes x
    res = _gmv()
    res.save(p)
    assert os.path.exists(p), os.listdir(os.path.dirname(p))
    np.testing.assert_array_equal(GMValuation.load(p).values, res.values)


# ============================================================================ DualDA and XDA


@functools.cache
def _torch_setup():
    import torch

    torch.manual_seed(0)
    X = torch.randn(60, 4)
    y = (X[:, 0] > 0).long() + (X[:, 1] > 0).long()
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)
    ).eval()
    return model, X, y


def _dualda(init=None, attr=None):
    from datacredit import DualDA

    model, X, y = _torch_setup()
    kw = {"layer": "2", "progress": False, "C": 0.1, **(init or {})}
    train = kw.pop("train_data", (X, y))
    d = DualDA(kw.pop("model", model), train, **kw).fit()
    return d.attribute(**{"inputs": X[:3], **(attr or {})})


mutations(
    "DualDA",
    lambda **kw: _dualda(init=kw),
    lambda: dict(C=0.1, batch_size=256),
    {
        "C": V.positive_float(),
        "layer": [
            ("unknown", lambda kw: "no.such.layer", "raises"),
            ("int", lambda kw: 2, "either"),
            ("none", lambda kw: None, "raises"),
        ],
        "batch_size": V.positive_int(huge="either", overflow="either"),
        "tol": [("zero", lambda kw: 0.0, "raises"), ("nan", lambda kw: float("nan"), "raises")],
        "max_iter": [("zero", lambda kw: 0, "raises"), ("bool", lambda kw: True, "raises")],
        "seed": [("negative", lambda kw: -1, "raises"), ("string", lambda kw: "0", "raises")],
        "n_threads": [("zero", lambda kw: 0, "raises"), ("huge", lambda kw: 2**31, "either")],
        "device": [("unknown", lambda kw: "tpu:9", "raises")],
        "model": [
            ("not_a_module", lambda kw: lambda x: x, "raises"),
            ("none", lambda kw: None, "raises"),
        ],
        "train_data": [
            (
                "labels_fractional",
                lambda kw: (_torch_setup()[1], _torch_setup()[2].double() + 0.5),
                "raises",
            ),
            ("labels_short", lambda kw: (_torch_setup()[1], _torch_setup()[2][:-1]), "raises"),
            (
                "inputs_nan",
                lambda kw: (_torch_setup()[1] * float("nan"), _torch_setup()[2]),
                "raises",
            ),
            (
                "wrong_input_width",
                lambda kw: (_torch_setup()[1][:, :3], _torch_setup()[2]),
                "raises",
                None,
            ),
            ("labels_negative", lambda kw: (_torch_setup()[1], _torch_setup()[2] - 1), "raises"),
            ("none", lambda kw: None, "raises"),
            ("empty", lambda kw: (_torch_setup()[1][:0], _torch_setup()[2][:0]), "raises", None),
        ],
        "cache_dir": [("is_a_file", lambda kw: __file__, "raises")],
    },
)

mutations(
    "DualDA.attribute",
    lambda **kw: _dualda(attr=kw),
    lambda: dict(inputs=_torch_setup()[1][:3]),
    {
        "inputs": [
            ("wrong_width", lambda kw: _torch_setup()[1][:3, :2], "raises", None),
            ("none", lambda kw: None, "raises"),
            ("nan", lambda kw: _torch_setup()[1][:3] * float("nan"), "raises"),
        ],
        "targets": [
            ("fractional", lambda kw: 1.7, "raises"),  # r11: targets=1.7 -> 1
            ("out_of_range", lambda kw: 3, "raises"),
            ("negative", lambda kw: -1, "raises"),
            ("short", lambda kw: np.array([0, 1]), "raises"),
            ("bool", lambda kw: True, "either"),
        ],
        "top_k": [
            ("zero", lambda kw: 0, "raises"),
            ("above_n", lambda kw: 61, "raises"),
            ("bool", lambda kw: True, "raises"),
            ("float", lambda kw: 2.5, "raises"),
        ],
    },
)


@case("DualDA.self_influence.kind.unknown")
def _dualda_self_influence():
    from datacredit import DualDA

    model, X, y = _torch_setup()
    DualDA(model, (X, y), layer="2", progress=False, C=0.1).fit().self_influence("nope")


@case("DualDA.attribute.before_fit")
def _dualda_unfitted():
    from datacredit import DualDA

    model, X, y = _torch_setup()
    DualDA(model, (X, y), layer="2", progress=False).attribute(X[:2])


def _xda(init=None, explain=None):
    from datacredit import XDA, DualDA

    torch_model, X, y = _torch_setup()
    d = DualDA(torch_model, (X, y), layer="2", progress=False, C=0.1).fit()
    x = XDA(d, **(init or {}))
    return x.explain(**{"test_input": X[0], "train_indices": np.array([0, 1]), **(explain or {})})


mutations(
    "XDA",
    lambda **kw: _xda(init=kw),
    lambda: dict(batch_size=4),
    {
        "composite": [
            ("unknown", lambda kw: "NoSuchComposite", "raises"),
            ("int", lambda kw: 3, "raises"),
        ],
        "batch_size": [("zero", lambda kw: 0, "raises"), ("string", lambda kw: "4", "raises")],
    },
)
mutations(
    "XDA.explain",
    lambda **kw: _xda(explain=kw),
    lambda: dict(test_input=_torch_setup()[1][0]),
    {
        "train_indices": [
            ("out_of_range", lambda kw: np.array([60]), "raises"),
            ("negative", lambda kw: np.array([-1]), "raises"),
            ("fractional", lambda kw: np.array([0.5]), "raises"),
        ],
        "target": [
            ("out_of_range", lambda kw: 3, "raises"),
            ("fractional", lambda kw: 1.5, "raises"),
        ],
        "test_input": [("batch_of_two", lambda kw: _torch_setup()[1][:2], "raises", None)],
    },
)


@case("XDA.dualda.not_a_dualda")
def _xda_not_dualda():
    from datacredit import XDA

    XDA(object())


# ========================================================================================== CLI


def _cli(cfg: dict, method: str = "gmvaluator", fmt: str = "yaml", data_key: str = "") -> None:
    """Run the CLI on ``cfg``; a bad value must end in 'config error' and exit status 2, or,
    with ``data_key``, a value wrong only for the loaded data in one line
    'error: <data_key>: ...' and exit status 1."""
    import contextlib
    import io

    from datacredit.cli import main

    d = _tmp()
    cfg = {"out": os.path.join(d, "out"), **cfg}
    path = os.path.join(d, f"c.{fmt}")
    with open(path, "w") as f:
        if fmt == "yaml":
            import yaml

            yaml.safe_dump(cfg, f)
        else:
            f.write(cfg.pop("_raw"))
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main([method, "--config", path])
    if data_key:
        # after the progress bars: each ends its own line (its last frame precedes the
        # error), so the error is the one line after the last bar
        lines = err.getvalue().rsplit("\r", 1)[-1].splitlines()
        lines = lines[1:] if len(lines) == 2 and "|" in lines[0] else lines
        if rc != 1 or len(lines) != 1 or f": error: {data_key}" not in lines[0]:
            raise AssertionError(
                f"exit status {rc}, stderr {err.getvalue()[-300:]!r}: not a one-line data "
                f"error naming {data_key!r}"
            )
        return
    if rc != 2 or "config error" not in err.getvalue():
        raise AssertionError(
            f"exit status {rc}, stderr {err.getvalue()[-300:]!r}: not a config error"
        )


_GMV_CFG = dict(
    encoder="pixels",
    train_data="harness.factories:train_data",
    generated="harness.factories:generated",
    k=5,
    recall=20,
    index="exact",
)
_SSHAP_CFG = dict(
    generator="harness.factories:generator",
    contributors={"a": [0], "b": [1], "c": [2]},
    utility="harness.factories:utility",
    n_per_label=8,
    budget=16,
    cv=False,
    label_weights="uniform",
    empty_value=0.0,  # SurrogateSHAP evaluates the empty coalition: the config must give v(∅)
)
_DUALDA_CFG = dict(
    model="harness.factories:tiny_classifier",
    train_data="harness.factories:tiny_train",
    test_data="harness.factories:tiny_test",
    layer="2",
)

_CLI_BAD = {
    "gmvaluator": (
        _GMV_CFG,
        {
            "temperature.true": ("temperature", True),  # r11
            "temperature.zero": ("temperature", 0),
            "temperature.string": ("temperature", "hot"),
            "k.zero": ("k", 0),
            "k.true": ("k", True),
            "k.float": ("k", 2.5),
            "k.above_recall": ("k", 50),
            "recall.negative": ("recall", -3),
            "index.hnsw": ("index", "hnsw"),
            "rerank.unknown": ("rerank", "manhattan"),
            "batch_size.zero": ("batch_size", 0),
            "train_data.not_a_factory": ("train_data", "no_such_module:fn"),
            "train_data.not_callable": ("train_data", "harness.factories:not_callable"),
            "train_data.raises": ("train_data", "harness.factories:boom"),
            "encoder.unknown": ("encoder", "no-such-encoder"),
            "unknown_key": ("no_such_key", 1),
            "out.is_a_file": ("out", __file__),
        },
    ),
    "surrogateshap": (
        _SSHAP_CFG,
        {
            "budget.two": ("budget", 2),
            "budget.true": ("budget", True),
            "n_per_label.zero": ("n_per_label", 0),
            "cv.string": ("cv", "yes"),
            "contributors.empty": ("contributors", {}),
            # label 7 has no training count in label_weights (the generator would make it)
            "contributors.unknown_label": (
                {"contributors": {"a": [0], "b": [7]}, "label_weights": {0: 1.0, 1: 1.0, 2: 1.0}},
                None,
            ),
            "empty_value.missing": ("empty_value", None),
            "label_weights.unknown_word": ("label_weights", "proportional"),
            "label_weights.negative": ("label_weights", [1.0, -1.0, 1.0]),
            "empty_value.string": ("empty_value", "none"),
            "utility.not_a_utility": ("utility", "harness.factories:not_callable"),
            "seed.negative": ("seed", -1),
        },
    ),
    "dualda": (
        _DUALDA_CFG,
        {
            "C.zero": ("C", 0),
            "C.true": ("C", True),
            "top_k.zero": ("top_k", 0),
            "layer.unknown": ("layer", "no.such.layer"),
            "batch_size.negative": ("batch_size", -1),
            "use_predictions.string": ("use_predictions", "yes"),
            "seed.negative": ("seed", -1),
        },
    ),
}

for _method, (_good, _bad) in _CLI_BAD.items():
    for _label, (_key, _val) in _bad.items():

        def _fn(_method=_method, _good=_good, _key=_key, _val=_val):
            # _key: one key set to _val, or a dict of several keys' values
            _cli({**_good, **(_key if isinstance(_key, dict) else {_key: _val})}, _method)

        case(f"cli.{_method}.{_label}", "returns")(_fn)

# Values valid in the file but wrong for what the factories returned: exit status 1 (r11).
_CLI_DATA_BAD = {
    "gmvaluator": (
        _GMV_CFG,
        {
            "k.above_n": ({"k": 10**6, "recall": 10**6}, "k"),
            "recall.above_n": ({"recall": 10**6}, "recall"),
        },
    ),
    "dualda": (_DUALDA_CFG, {"top_k.huge": ({"top_k": 10**6}, "top_k")}),
    "surrogateshap": (
        _SSHAP_CFG,
        {
            "budget.below_factory_players": (
                {"contributors": "harness.factories:contributors", "budget": 4},
                "budget",
            )
        },
    ),
}
for _method, (_good, _bad) in _CLI_DATA_BAD.items():
    for _label, (_vals, _key) in _bad.items():

        def _fn(_method=_method, _good=_good, _vals=_vals, _key=_key):
            _cli({**_good, **_vals}, _method, data_key=_key)

        case(f"cli.{_method}.{_label}", "returns")(_fn)


@case("cli.gmvaluator.config.not_yaml", "returns")
def _cli_garbage():
    d = _tmp()
    p = os.path.join(d, "c.yaml")
    with open(p, "w") as f:
        f.write("k: [unclosed\n")
    import contextlib
    import io

    from datacredit.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(["gmvaluator", "--config", p])
    assert rc == 2 and "config error" in err.getvalue(), (rc, err.getvalue()[-300:])


@case("cli.gmvaluator.config.missing_file", "returns")
def _cli_missing():
    import contextlib
    import io

    from datacredit.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(["gmvaluator", "--config", os.path.join(_tmp(), "absent.yaml")])
    assert rc == 2 and "config error" in err.getvalue(), (rc, err.getvalue()[-300:])


@case("cli.gmvaluator.valid", "returns", timeout=120)
def _cli_valid():
    # The valid config must run (so the bad-value cases above fail for the right reason).
    import contextlib
    import io

    from datacredit.cli import main

    d = _tmp()
    p = os.path.join(d, "c.yaml")
    import yaml

    with open(p, "w") as f:
        yaml.safe_dump({**_GMV_CFG, "out": os.path.join(d, "out")}, f)
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["gmvaluator", "--config", p]) == 0
    assert os.path.exists(os.path.join(d, "out", "results.json"))


@case("cli.surrogateshap.valid", "returns", timeout=120)
def _cli_sshap_valid():
    # The base config of the surrogateshap cases runs, and its values are efficient.
    import contextlib
    import io

    import yaml

    from datacredit.cli import main

    d = _tmp()
    p = os.path.join(d, "c.yaml")
    with open(p, "w") as f:
        yaml.safe_dump({**_SSHAP_CFG, "out": os.path.join(d, "out")}, f)
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["surrogateshap", "--config", p]) == 0
    with open(os.path.join(d, "out", "results.json")) as f:
        res = json.load(f)
    gap = sum(res["values"]) - (res["v_full"] - res["v_empty"])
    assert abs(gap) < 1e-9 * max(1.0, abs(res["v_full"] - res["v_empty"])), res


# Register the reproducer cases of issue 11 and the store/readers/servers cases of issue 26.
from harness import reliability, repros  # noqa: E402,F401
