"""Regression tests of the kernel defects of issue 11 (reproducers ../shared/repros/r*.py).

Cases that crashed the process (a signal, std::terminate, libgomp's fatal exit) or hung
run in a child process with a timeout, so that a crash is a failed test and not a dead
run; allocation failures are made fast and deterministic with an address-space limit.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from datacredit import _core
from datacredit.kernels import (
    PackedCodes,
    ProductQuantizer,
    TreeEnsemble,
    crammer_singer_fit,
    gram,
    gram_topk,
    kmeans,
    tree_shap_interventional,
)

_PYTHON_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python")


def run_child(
    code: str, timeout: float = 240, *, memory_limited: bool = False
) -> subprocess.CompletedProcess:
    """Runs `code` in a fresh interpreter (same datacredit as this one); fails on a signal.

    ``memory_limited``: the child sets an address-space limit, so the BLAS libraries get
    two threads each (their per-thread buffers would otherwise scale with the machine).
    """
    import datacredit

    env = dict(os.environ)
    if memory_limited:
        env["OPENBLAS_NUM_THREADS"] = "2"
    pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(datacredit.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([pkg_root, env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    assert proc.returncode == 0, (
        f"child exited with {proc.returncode} (negative: killed by signal)\n"
        f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    )
    return proc


# --- r01: PackedCodes with an inconsistent list_blocks ---------------------------------


def _ivf_packed():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 16)).astype(np.float32)
    pq = ProductQuantizer(16, 4, 4, nlist=8, nprobe=2).train(X, n_iter=3)
    return X, pq, pq.pack(pq.encode(X), lists=pq.assign(X))


def test_r01_packed_codes_constructor_refuses_inconsistent_list_blocks():
    X, pq, P = _ivf_packed()
    lb = P.list_blocks.copy()
    lb[3] = 10**12  # interior entry beyond list_blocks[-1]
    with pytest.raises(ValueError, match="list_blocks"):
        PackedCodes(P.data, P.n, P.m, lb, P.ids)
    ids = P.ids.copy()
    ids[ids == 5] = 6  # code 5 lost, code 6 twice
    with pytest.raises(ValueError, match="ids"):
        PackedCodes(P.data, P.n, P.m, P.list_blocks, ids)
    with pytest.raises(ValueError, match="both or neither"):
        PackedCodes(P.data, P.n, P.m, P.list_blocks, None)
    with pytest.raises(ValueError, match="data"):
        PackedCodes(P.data[:, :1], P.n, P.m, P.list_blocks, P.ids)


def test_r01_ivf_search_entry_point_validates_list_blocks():
    """The C++ entry point itself refuses the layout (attributes mutated after construction)."""
    proc = run_child(
        """
        import numpy as np
        from datacredit.kernels import ProductQuantizer
        rng = np.random.default_rng(0)
        X = rng.standard_normal((300, 16)).astype(np.float32)
        pq = ProductQuantizer(16, 4, 4, nlist=8, nprobe=2).train(X, n_iter=3)
        P = pq.pack(pq.encode(X), lists=pq.assign(X))
        P.list_blocks = P.list_blocks.copy()
        P.list_blocks[3] = 10**12
        try:
            pq.search(X[:3], P, 3)
        except ValueError as e:
            print("ValueError", e)
        """
    )
    assert "ValueError" in proc.stdout and "non-decreasing" in proc.stdout


# --- r02, r03: allocation failure inside OpenMP regions --------------------------------


def test_r02_cosine_buffers_sized_to_the_problem_under_memory_limit():
    """cosine used 512*d floats per thread even for 3 keys: 2 GB per thread at d = 2^20."""
    proc = run_child(
        """
        import resource, numpy as np
        from datacredit.kernels import gram_topk
        resource.setrlimit(resource.RLIMIT_AS, (int(1.5 * (1 << 30)),) * 2)
        q = np.ones((2, 2**20), np.float32); k = np.ones((3, 2**20), np.float32)
        k[1] *= -1
        v, i = gram_topk(q, k, 2, metric="cosine", n_threads=2)
        assert np.allclose(v, 1.0, atol=1e-5) and (i == [[0, 2], [0, 2]]).all(), (v, i)
        try:
            q = np.ones((2, 2**25), np.float32); k = np.ones((3, 2**25), np.float32)
            gram_topk(q, k, 2, metric="cosine", n_threads=2)
            print("computed")
        except MemoryError as e:
            print("MemoryError", e)
        """,
        memory_limited=True,
    )
    assert "computed" in proc.stdout or "MemoryError" in proc.stdout


def test_r03_large_k_raises_memory_error():
    proc = run_child(
        """
        import resource, numpy as np
        from datacredit.kernels import gram_topk
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
        q = np.ones((2, 1), np.float32); k = np.ones((50_000_000, 1), np.float32)
        try:
            gram_topk(q, k, 50_000_000, n_threads=2)
            print("computed")
        except MemoryError as e:
            print("MemoryError", e)
        """,
        memory_limited=True,
    )
    assert "MemoryError" in proc.stdout and "not enough memory" in proc.stdout


# --- r04, r05: TreeEnsemble deep chain and DAG -------------------------------------------


def _chain(depth: int) -> TreeEnsemble:
    """Split k (on feature 0, threshold k): left a leaf of value k, right the next split."""
    n = 2 * depth + 1
    left = np.full(n, -1, np.int32)
    right = np.full(n, -1, np.int32)
    inner = np.arange(0, 2 * depth, 2)
    left[inner] = inner + 1
    right[inner] = inner + 2
    threshold = np.zeros(n, np.float32)
    threshold[inner] = np.arange(depth)
    value = np.zeros(n, np.float32)
    value[inner + 1] = np.arange(depth)
    value[-1] = -1.0
    return TreeEnsemble(
        left=left,
        right=right,
        feature=np.zeros(n, np.int32),
        threshold=threshold,
        default_left=np.ones(n, np.uint8),
        value=value,
        roots=np.zeros(1, np.int64),
        base_score=0.5,
        n_features=2,
    )


@pytest.mark.parametrize("n_refs", [2, 6])  # per-pair walk and grouped path
def test_r04_deep_chain_is_exact(n_refs):
    """80k-deep path: was a stack overflow (SIGSEGV); the game has one player, feature 0."""
    proc = run_child(
        f"""
        import numpy as np, sys
        sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
        from test_regressions_kernels import _chain
        from datacredit.kernels import tree_shap_interventional
        ens = _chain(80_000)
        X = np.array([[79_998.5, 3.0], [-5.0, 1.0]], np.float32)
        R = np.column_stack([np.arange({n_refs}), np.zeros({n_refs})]).astype(np.float32)
        phi, base = tree_shap_interventional(ens, X, R)
        fx, fr = ens.predict(X), ens.predict(R)
        assert np.allclose(base, fr.mean(), atol=1e-9)
        assert np.allclose(phi[:, 0], fx - fr.mean(), atol=1e-6), (phi, fx, fr)
        assert (phi[:, 1] == 0).all()
        print("ok")
        """
    )
    assert "ok" in proc.stdout


def test_r05_shared_children_are_refused():
    """A DAG passed validation and made 2^depth paths (never finished)."""
    proc = run_child(
        """
        import numpy as np
        from datacredit.kernels import TreeEnsemble, tree_shap_interventional
        D = 40
        left = np.array(list(range(1, D + 1)) + [-1], np.int32); right = left.copy()
        ens = TreeEnsemble(left=left, right=right, feature=np.zeros(D + 1, np.int32),
                           threshold=np.full(D + 1, 0.5, np.float32),
                           default_left=np.ones(D + 1, np.uint8),
                           value=np.r_[np.zeros(D), 1.0].astype(np.float32),
                           roots=np.zeros(1, np.int64), base_score=0.0, n_features=2)
        X = np.zeros((2, 2), np.float32)
        for call in (lambda: tree_shap_interventional(ens, X, X), lambda: ens.predict(X)):
            try:
                call()
            except ValueError as e:
                print("ValueError", e)
        """,
        timeout=60,
    )
    assert proc.stdout.count("two parents") == 2


def test_r05_root_of_two_trees_is_refused():
    ens = _chain(3)
    twice = TreeEnsemble(**{**ens.__dict__, "roots": np.zeros(2, np.int64)})
    with pytest.raises(ValueError, match="root"):
        twice.predict(np.zeros((1, 2), np.float32))


def test_tree_ensemble_converts_int64_arrays():
    """int64 node arrays went to pybind11 as-is: 'incompatible function arguments'."""
    ens = _chain(5)
    wide = TreeEnsemble(
        left=ens.left.astype(np.int64),
        right=ens.right.astype(np.int64),
        feature=ens.feature.astype(np.int64),
        threshold=ens.threshold.astype(np.float64),
        default_left=ens.default_left.astype(bool),
        value=ens.value.astype(np.float64),
        roots=ens.roots.astype(np.int32),
        base_score=0.5,
        n_features=2,
    )
    X = np.array([[2.5, 0.0], [-1.0, 0.0]], np.float32)
    np.testing.assert_array_equal(wide.predict(X), ens.predict(X))
    with pytest.raises(ValueError, match="left.*outside"):
        TreeEnsemble(**{**ens.__dict__, "left": ens.left.astype(np.int64) + 2**40})
    with pytest.raises(ValueError, match="one entry per node"):
        TreeEnsemble(**{**ens.__dict__, "value": ens.value[:-1]})
    with pytest.raises(TypeError, match="integers"):
        TreeEnsemble(**{**ens.__dict__, "roots": np.array([0.5])})


# --- r06: n_threads bounds ------------------------------------------------------------------


def test_r06_many_threads_under_memory_limit_do_not_kill_the_process():
    proc = run_child(
        """
        import resource, numpy as np
        from datacredit.kernels import gram_topk
        resource.setrlimit(resource.RLIMIT_AS, (int(1.5 * (1 << 30)),) * 2)
        rng = np.random.default_rng(0)
        q = rng.standard_normal((2, 64)).astype(np.float32)
        k = rng.standard_normal((100_000, 64)).astype(np.float32)
        a = gram_topk(q, k, 5, n_threads=512)
        b = gram_topk(q, k, 5, n_threads=1)
        assert all((x == y).all() for x, y in zip(a, b))
        print("ok")
        """,
        memory_limited=True,
    )
    assert "ok" in proc.stdout


@pytest.mark.parametrize("bad", [2**31, 2000, 0, -1, True, 2.0])
def test_r06_n_threads_out_of_range_names_the_argument(bad):
    q = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match="n_threads"):
        gram_topk(q, q, 1, n_threads=bad)
    with pytest.raises(ValueError, match="n_threads"):
        tree_shap_interventional(_chain(3), np.zeros((1, 2)), np.zeros((1, 2)), n_threads=bad)


def test_r06_core_rejects_thread_counts_above_the_limit():
    q = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"n_threads = 2000 must be in \[0, 1024\]"):
        _core.gram_topk(q, q, 1, None, None, "ip", True, 2000)


# --- r07 and raw pybind11 errors: the bindings check shapes and integers --------------------


def test_r07_bindings_check_shapes():
    proc = run_child(
        """
        import numpy as np
        from datacredit import _core
        q = np.ones((3, 64), np.float32); k = np.ones((4, 8), np.float32)
        w4 = np.ones(4, np.float32)
        cases = [
            lambda: _core.gram_dense(q, k, None, None, "ip", 1),
            lambda: _core.gram_topk(q, k, 1, None, None, "ip", True, 1),
            lambda: _core.gram_topk(q, q, 1, np.ones(2, np.float32), None, "ip", True, 1),
            lambda: _core.gram_topk(q, q, 1, np.ones((3, 2), np.float32),
                                    np.zeros(1, np.int64), "ip", True, 1),
            lambda: _core.gram_topk(q, q, 1, np.ones((3, 2), np.float32), None, "ip", True, 1),
            lambda: _core.gram_topk(q, q, 4, None, None, "ip", True, 1),
            lambda: _core.gram_topk(q[0], q, 1, None, None, "ip", True, 1),
            lambda: _core.kmeans(q, 5, 1, 4, 0, 1),
            lambda: _core.kmeans(q, 2, 1, 4, -1, 1),
            lambda: _core.pq_train(q[0], 4, 4, 1, 4, 0, 1),
            lambda: _core.pq_train(q, 4, 9, 1, 4, 0, 1),
            lambda: _core.pq_encode(np.ones((4, 16, 16), np.float32), q[0], 4, 1),
            lambda: _core.crammer_singer_primal(q, np.zeros(3, np.int64),
                                                np.ones((2, 8), np.float64), None, 1.0, 1),
            lambda: _core.tree_ensemble_predict(
                np.array([-1], np.int32), np.array([-1], np.int32), np.array([0], np.int32),
                np.array([0], np.float32), np.array([1], np.uint8), np.array([1.0], np.float32),
                np.zeros(1, np.int64), q[0], 1),
            lambda: _core.tree_shap_interventional(
                np.array([-1], np.int32), np.array([-1], np.int32), np.array([0], np.int32),
                np.array([0], np.float32), np.array([1], np.uint8), np.array([1.0], np.float32),
                np.zeros(1, np.int64), q, k, 1),
            lambda: _core.tree_shap_interventional(
                np.array([-1, 0], np.int32), np.array([-1], np.int32), np.array([0], np.int32),
                np.array([0], np.float32), np.array([1], np.uint8), np.array([1.0], np.float32),
                np.zeros(1, np.int64), q, q, 1),
        ]
        for i, case in enumerate(cases):
            try:
                case()
                print(i, "no error")
            except ValueError as e:
                print(i, "ValueError", e)
        """
    )
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 16 and all("ValueError" in line for line in lines), proc.stdout


def test_seed_and_iteration_counts_out_of_range_name_the_argument():
    x = np.random.default_rng(0).standard_normal((40, 4)).astype(np.float32)
    with pytest.raises(ValueError, match="seed"):
        kmeans(x, 3, seed=-1)
    with pytest.raises(ValueError, match="seed"):
        kmeans(x, 3, seed=2**64)
    with pytest.raises(ValueError, match="n_iter"):
        kmeans(x, 3, n_iter=2**40)
    with pytest.raises(ValueError, match="seed"):
        ProductQuantizer(4, 2, 4, seed=2**63 - 1)
    y = np.arange(40) % 2
    with pytest.raises(ValueError, match="max_iter"):
        crammer_singer_fit(x, y, 1.0, max_iter=2**64)
    with pytest.raises(ValueError, match="seed"):
        crammer_singer_fit(x, y, 1.0, seed=2**64)
    with pytest.raises(ValueError, match="n_classes"):
        crammer_singer_fit(x, y, 1.0, n_classes=2**63)


# --- r08: l2 cancellation ---------------------------------------------------------------------


def _offset_data(n, N, d=64, offset=1000.0, seed=0):
    rng = np.random.default_rng(seed)
    q = (offset + rng.standard_normal((n, d))).astype(np.float32)
    k = (offset + rng.standard_normal((N, d))).astype(np.float32)
    return q, k


def _exact_l2(q, k):
    return ((q[:, None, :].astype(np.float64) - k[None, :, :].astype(np.float64)) ** 2).sum(-1)


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("largest", [False, True])
def test_r08_l2_with_a_large_offset_is_exact(n_threads, largest):
    q, k = _offset_data(9, 1300)
    kk = 20
    d, i = gram_topk(q, k, kk, metric="l2", largest=largest, n_threads=n_threads)
    true = _exact_l2(q, k).astype(np.float32)  # the float32 rounding of the exact value
    order = np.argsort(-true if largest else true, axis=1, kind="stable")[:, :kk]
    np.testing.assert_array_equal(i, order)
    np.testing.assert_array_equal(d, np.take_along_axis(true, order, 1))


def test_r08_self_distance_is_zero_and_near_duplicates_are_resolved():
    q, k = _offset_data(3, 50)
    keys = np.concatenate([q, q + np.float32(1e-3)])
    d, i = gram_topk(q, keys, 2, metric="l2", largest=False)
    np.testing.assert_array_equal(d[:, 0], 0.0)
    np.testing.assert_array_equal(i[:, 0], np.arange(3))
    np.testing.assert_array_equal(i[:, 1], np.arange(3) + 3)
    np.testing.assert_array_equal(
        d[:, 1], _exact_l2(q, q + np.float32(1e-3)).diagonal().astype(np.float32)
    )


def test_r08_l2_distances_that_overflow_float32_rank_as_inf():
    q = np.zeros((1, 4), np.float32)
    keys = np.array([[1e20] * 4, [1.0] * 4, [3e19] * 4, [2.0] * 4], np.float32)
    with np.errstate(over="ignore"):
        true = _exact_l2(q, keys).astype(np.float32)  # [inf, 4, inf, 16]
    d, i = gram_topk(q, keys, 3, metric="l2", largest=True)
    np.testing.assert_array_equal(i, [[0, 2, 3]])
    np.testing.assert_array_equal(d, true[:, [0, 2, 3]])
    d, i = gram_topk(q, keys, 2, metric="l2", largest=False)
    np.testing.assert_array_equal(i, [[1, 3]])
    np.testing.assert_array_equal(d, [[4.0, 16.0]])


def test_r08_weighted_l2_and_dense_gram_are_exact():
    q, k = _offset_data(4, 700, seed=1)
    w = np.random.default_rng(2).uniform(0.5, 2.0, 700).astype(np.float32)
    true = _exact_l2(q, k)
    d, i = gram_topk(q, k, 7, weights=w, metric="l2", largest=False)
    score = (true * w.astype(np.float64)).astype(np.float32)
    order = np.argsort(score, axis=1, kind="stable")[:, :7]
    np.testing.assert_array_equal(i, order)
    np.testing.assert_array_equal(d, np.take_along_axis(score, order, 1))
    np.testing.assert_array_equal(gram(q, k, metric="l2"), true.astype(np.float32))


def test_r08_coarse_assignment_and_kmeans_with_offset():
    """PQ's coarse assignment (l2 gram) and the k-means behind it: translation invariant."""
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((8, 32)) * 3
    X = (centres[rng.integers(0, 8, 4000)] + rng.standard_normal((4000, 32))).astype(np.float32)
    shifted = X + np.float32(1000)
    c0 = kmeans(X, 8, seed=1)
    c1 = kmeans(shifted, 8, seed=1)
    np.testing.assert_allclose(c1 - 1000, c0, atol=2e-3)
    pq = ProductQuantizer(32, 8, 4, nlist=8, nprobe=2).train(shifted, n_iter=5)
    lists = pq.assign(shifted)
    exact = np.argmin(_exact_l2(shifted, pq.coarse_centroids), axis=1)
    np.testing.assert_array_equal(lists, exact)
    # encode: nearest centroid per sub-space, in exact arithmetic
    codes = pq.encode(shifted[:500])
    cent = pq.centroids.astype(np.float64)
    for s in range(pq.m):
        sub = shifted[:500, s * 4 : (s + 1) * 4].astype(np.float64)
        dist = ((sub[:, None, :] - cent[s][None]) ** 2).sum(-1)
        np.testing.assert_array_equal(codes[:, s], np.argmin(dist, axis=1))


# --- r10: Crammer–Singer with a huge C or huge features ----------------------------------------


@pytest.mark.parametrize("C,scale", [(1e15, 1.0), (0.1, 1e8)])
def test_r10_ill_conditioned_solve_says_what_to_do(C, scale):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 5)).astype(np.float32)
    y = np.arange(60) % 3
    X[np.arange(60), y] += 2
    with pytest.warns(RuntimeWarning, match="scale the features .* or lower C"):
        r = crammer_singer_fit(X * np.float32(scale), y, C, max_iter=300)
    assert not r.converged
    assert np.any(r.dual_coef != 0)  # the solver moved (it returned all zeros before)
    assert "lower C" in r.extras["advice"]
    # well-conditioned: no warning, no advice
    good = crammer_singer_fit(X, y, 0.1, max_iter=2000)
    assert good.converged and "advice" not in good.extras


# --- r13: one owner of the BLAS thread count -----------------------------------------------------


def test_r13_blas_thread_count_survives_threadpoolctl_interleaving():
    pytest.importorskip("threadpoolctl")
    if _core.blas != "scipy-openblas32":
        pytest.skip("the thread count is OpenBLAS's")
    proc = run_child(
        """
        import numpy as np, threading, time
        from threadpoolctl import threadpool_info, threadpool_limits
        from datacredit.kernels import gram_topk
        def count():
            return [i["num_threads"] for i in threadpool_info()
                    if "libscipy_openblas" in i["filepath"]]
        threadpool_limits(2, user_api="blas")  # a known start, > 1 even on one core
        before = count()
        rng = np.random.default_rng(0)
        Q = rng.standard_normal((2000, 128)).astype(np.float32)
        K = rng.standard_normal((40000, 128)).astype(np.float32)
        ref = gram_topk(Q, K, 5, metric="l2", largest=False, n_threads=2)
        for delay in (0.0, 0.05, 0.2):
            lim = threadpool_limits(1, user_api="blas")
            out = []
            ts = [threading.Thread(target=lambda: out.append(gram_topk(Q, K, 5, metric="l2", largest=False, n_threads=2)))
                  for _ in range(2)]
            for t in ts: t.start()
            time.sleep(delay)
            lim.restore_original_limits()
            for t in ts: t.join()
            assert all((a == b).all() for o in out for a, b in zip(o, ref))
        print("before", before, "after", count())
        """
    )
    assert "Detect OpenMP Loop" not in proc.stderr, proc.stderr[-2000:]
    before, after = proc.stdout.split("after")
    assert before.split("before")[1].strip() == after.strip(), proc.stdout
