"""gram_topk / gram against a numpy brute force (full matrix + stable argsort)."""

from __future__ import annotations

import numpy as np
import pytest
from _hypothesis_counts import at_least
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from datacredit.kernels import gram, gram_topk


def reference_scores(q, keys, metric, weights=None, classes=None):
    q = np.asarray(q, dtype=np.float64)
    keys = np.asarray(keys, dtype=np.float64)
    dot = q @ keys.T
    if metric == "ip":
        s = dot
    elif metric == "cosine":
        qn = np.linalg.norm(q, axis=1)
        kn = np.linalg.norm(keys, axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            s = dot / np.outer(qn, kn)
        s[~np.isfinite(s)] = 0.0
    else:  # directly, in float64: no cancellation whatever the offset of the data
        s = ((q[:, None, :] - keys[None, :, :]) ** 2).sum(-1)
    if weights is not None:
        w = np.asarray(weights, dtype=np.float64)
        s = s * (w[None, :] if w.ndim == 1 else w[:, classes].T)
    return s


def reference_topk(scores, k, largest):
    order = np.argsort(-scores if largest else scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), order


def assert_topk_matches(values, indices, scores, k, largest):
    ref_v, ref_i = reference_topk(scores, k, largest)
    assert values.dtype == np.float32 and indices.dtype == np.int64
    assert values.shape == indices.shape == ref_v.shape
    tol = 1e-4 * (1 + np.abs(ref_v).max())
    np.testing.assert_allclose(values, ref_v, atol=tol, rtol=1e-4)
    # The chosen keys must really have the reported scores.
    np.testing.assert_allclose(
        np.take_along_axis(scores, indices, axis=1), ref_v, atol=tol, rtol=1e-4
    )
    # Indices equal the reference wherever the score gap to the neighbours is resolvable.
    same = indices == ref_i
    assert same.mean() > 0.99


SIZES = [  # (n, N, d, k): n=1, N < tile, N not a multiple of the tile, k=1, k=N
    (1, 2000, 8, 10),
    (7, 30, 5, 30),
    (64, 1537, 33, 1),
    (600, 1100, 16, 25),
]


@pytest.mark.parametrize("metric", ["ip", "cosine", "l2"])
@pytest.mark.parametrize("largest", [True, False])
@pytest.mark.parametrize("n,N,d,k", SIZES)
def test_matches_brute_force(rng, metric, largest, n, N, d, k):
    q = rng.standard_normal((n, d)).astype(np.float32)
    keys = rng.standard_normal((N, d)).astype(np.float32)
    values, indices = gram_topk(q, keys, k, metric=metric, largest=largest)
    assert_topk_matches(values, indices, reference_scores(q, keys, metric), k, largest)


@pytest.mark.parametrize("metric", ["ip", "cosine", "l2"])
def test_weight_vector_and_matrix(rng, metric):
    n, N, d, C = 50, 700, 12, 4
    q = rng.standard_normal((n, d)).astype(np.float32)
    keys = rng.standard_normal((N, d)).astype(np.float32)
    w = rng.standard_normal(N).astype(np.float32)
    values, indices = gram_topk(q, keys, 9, weights=w, metric=metric)
    assert_topk_matches(values, indices, reference_scores(q, keys, metric, w), 9, True)

    lam = rng.standard_normal((N, C)).astype(np.float32)
    classes = rng.integers(0, C, n)
    values, indices = gram_topk(q, keys, 9, weights=lam, classes=classes, metric=metric)
    assert_topk_matches(values, indices, reference_scores(q, keys, metric, lam, classes), 9, True)
    dense = gram(q, keys, weights=lam, classes=classes, metric=metric)
    np.testing.assert_allclose(
        dense, reference_scores(q, keys, metric, lam, classes), atol=1e-4, rtol=1e-4
    )


def test_float64_noncontiguous_and_torch_inputs(rng):
    torch = pytest.importorskip("torch")
    base = rng.standard_normal((40, 30))
    q = base[::2, ::3]  # float64, non-contiguous (20 x 10)
    keys = np.asfortranarray(rng.standard_normal((300, 10)))
    before = (q.copy(), keys.copy())
    values, indices = gram_topk(q, keys, 5)
    assert_topk_matches(values, indices, reference_scores(q, keys, "ip"), 5, True)
    np.testing.assert_array_equal(q, before[0])  # nothing modified in place
    np.testing.assert_array_equal(keys, before[1])
    tv, ti = gram_topk(
        torch.from_numpy(q.astype(np.float32)), torch.from_numpy(keys.astype(np.float32)), 5
    )
    np.testing.assert_array_equal(ti, indices)
    t_nc = torch.from_numpy(base.astype(np.float32)).T  # non-contiguous tensor (30 x 40)
    v2, i2 = gram_topk(t_nc, t_nc, 3)
    assert_topk_matches(v2, i2, reference_scores(t_nc.numpy(), t_nc.numpy(), "ip"), 3, True)


def test_ties_go_to_lower_index():
    keys = np.ones((100, 4), dtype=np.float32)
    q = np.ones((3, 4), dtype=np.float32)
    values, indices = gram_topk(q, keys, 7, metric="l2", largest=False)
    np.testing.assert_array_equal(indices, np.tile(np.arange(7), (3, 1)))
    np.testing.assert_array_equal(values, 0.0)


def test_threads_do_not_change_results(rng):
    q = rng.standard_normal((3, 16)).astype(np.float32)
    keys = rng.integers(-2, 3, (5000, 16)).astype(np.float32)  # many exact ties
    one = gram_topk(q, keys, 40, n_threads=1)
    many = gram_topk(q, keys, 40, n_threads=3)
    np.testing.assert_array_equal(one[0], many[0])
    np.testing.assert_array_equal(one[1], many[1])


def test_dense_matches_reference(rng):
    q = rng.standard_normal((17, 9)).astype(np.float32)
    keys = rng.standard_normal((40, 9)).astype(np.float32)
    for metric in ("ip", "cosine", "l2"):
        np.testing.assert_allclose(
            gram(q, keys, metric=metric), reference_scores(q, keys, metric), atol=1e-4
        )


def test_zero_vectors_have_cosine_zero():
    q = np.zeros((1, 3), dtype=np.float32)
    keys = np.eye(3, dtype=np.float32)
    values, _ = gram_topk(q, keys, 3, metric="cosine")
    np.testing.assert_array_equal(values, 0.0)


def rounding_bound(q, keys, metric):
    """Per-entry bound on the float32 error of the kernel's scores (float64 (n, N)).

    ip: the GEMM's dot product, gamma_d * sum_p |q_p k_p| (any summation order), plus the
    final rounding; cosine: the same on unit vectors; l2: one rounding of the exact value.
    """
    d, u = np.shape(q)[1], 2.0**-24
    if metric == "l2":
        return 2 * u * reference_scores(q, keys, "l2") + 1e-30
    if metric == "cosine":
        return np.full((np.shape(q)[0], np.shape(keys)[0]), 4 * (d + 4) * u)
    q_abs = np.abs(np.asarray(q, dtype=np.float64))
    k_abs = np.abs(np.asarray(keys, dtype=np.float64))
    return 2 * (d + 2) * u * (q_abs @ k_abs.T) + 1e-30


@settings(max_examples=at_least(60), deadline=None)  # nightly: the profile's 2000
@given(
    data=st.data(),
    n=st.integers(1, 12),
    N=st.integers(1, 700),
    d=st.integers(1, 9),
    metric=st.sampled_from(["ip", "cosine", "l2"]),
    largest=st.booleans(),
)
def test_property_against_brute_force(data, n, N, d, metric, largest):
    elems = st.floats(-100, 100, width=32, allow_nan=False)
    q = data.draw(arrays(np.float32, (n, d), elements=elems))
    keys = data.draw(arrays(np.float32, (N, d), elements=elems))
    k = data.draw(st.integers(1, N))
    values, indices = gram_topk(q, keys, k, metric=metric, largest=largest)
    scores = reference_scores(q, keys, metric)
    ref_v, _ = reference_topk(scores, k, largest)
    # The tolerance scales with the operands (|q||k| for ip), not with the result, which
    # may cancel to ~0 while each product is ~1e4.
    tol = rounding_bound(q, keys, metric).max(axis=1, keepdims=True)
    err = np.abs(values - ref_v)
    assert (err <= tol).all(), f"max error {err.max():.3g} above the rounding bound"
    # each row's indices are distinct and their true scores are the reported ones
    assert all(len(set(row)) == k for row in indices)
    err = np.abs(np.take_along_axis(scores, indices, 1) - ref_v)
    assert (err <= 2 * tol).all(), f"selected keys off by {err.max():.3g}"


def test_property_count_follows_the_profile():
    # The property test's count, read as this file is imported under each profile: its own
    # 60 where the profile sets no larger count, the nightly profile's 2000 there (a
    # literal @settings(max_examples=60) pinned 60 under every profile).
    import importlib.util

    current = settings.get_current_profile_name()
    counts = {}
    try:
        for profile in ("dev", "ci", "nightly"):
            settings.load_profile(profile)
            spec = importlib.util.spec_from_file_location(f"_gram_{profile}", __file__)
            copy = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(copy)
            inner = copy.test_property_against_brute_force
            counts[profile] = inner._hypothesis_internal_use_settings.max_examples
    finally:
        settings.load_profile(current)
    assert counts == {"dev": 60, "ci": 60, "nightly": 2000}


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(queries=np.ones((2, 3)), keys=np.ones((4, 5)), k=1), ValueError, "feature dimension"),
        (dict(queries=np.ones((2, 3)), keys=np.ones((4, 3)), k=0), ValueError, "k = 0"),
        (dict(queries=np.ones((2, 3)), keys=np.ones((4, 3)), k=5), ValueError, "k = 5"),
        (
            dict(queries=np.ones((2, 3)), keys=np.ones((4, 3)), k=1.5),
            TypeError,
            "k must be an integer",
        ),
        (
            dict(queries=np.ones(3), keys=np.ones((4, 3)), k=1),
            ValueError,
            "queries must be a matrix",
        ),
        (dict(queries=np.ones((2, 3)), keys=np.ones((0, 3)), k=1), ValueError, "keys is empty"),
        (
            dict(queries=np.array([[np.nan, 1, 1]]), keys=np.ones((4, 3)), k=1),
            ValueError,
            "queries contains NaN",
        ),
        (
            dict(queries=np.ones((2, 3)), keys=np.full((4, 3), np.inf), k=1),
            ValueError,
            "keys contains NaN or inf",
        ),
        (
            dict(queries=np.ones((2, 3)), keys=np.ones((4, 3)), k=1, metric="dot"),
            ValueError,
            "unknown metric",
        ),
        (
            dict(
                queries=np.ones((2, 3)),
                keys=np.ones((4, 3)),
                k=1,
                weights=np.ones((4, 2)),
                classes=[0, 2],
            ),
            ValueError,
            "classes holds 2",
        ),
        (
            dict(queries=np.ones((2, 3)), keys=np.ones((4, 3)), k=1, weights=np.ones((4, 2))),
            ValueError,
            "needs classes",
        ),
        (
            dict(queries=np.ones((2, 3)), keys=np.ones((4, 3)), k=1, weights=np.ones(3)),
            ValueError,
            "one row per key",
        ),
        (
            dict(queries=np.ones((2, 3)), keys=np.ones((4, 3)), k=1, weights=[1, 1, np.nan, 1]),
            ValueError,
            "weights contains NaN",
        ),
        (
            dict(queries=np.array([["a", "b"]]), keys=np.ones((4, 2)), k=1),
            TypeError,
            "real numeric dtype",
        ),
    ],
)
def test_bad_input(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        gram_topk(**kwargs)


def test_torch_cuda_tensor_is_rejected_clearly():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    with pytest.raises(ValueError, match="device"):
        gram_topk(torch.ones((2, 3), device="cuda"), np.ones((4, 3)), 1)


def test_import_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, datacredit, datacredit.kernels; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cosine_of_subnormal_vectors():
    # Found by hypothesis: tiny norms must not overflow the normalisation.
    q = np.array([[0.5]], dtype=np.float32)
    keys = np.array([[1e-45]], dtype=np.float32)
    values, indices = gram_topk(q, keys, 1, metric="cosine")
    np.testing.assert_allclose(values, [[1.0]], rtol=1e-6)
    np.testing.assert_array_equal(indices, [[0]])


def test_overflowing_scores_are_ranked_last_not_lost():
    q = np.array([[1e30, 0.0]], dtype=np.float32)
    keys = np.array([[1e30, 0.0], [0.0, 1.0], [1.0, 0.0]], dtype=np.float32)
    values, indices = gram_topk(q, keys, 3, metric="l2", largest=False)
    assert sorted(indices[0].tolist()) == [0, 1, 2]
    assert not np.isnan(values).any()
