"""The shared scalar-argument checks (``datacredit._arrays``) and the answers of entry
points whose validation was tightened with them (issue 11: no bool or string passes as a
number, every range is named)."""

from __future__ import annotations

from fractions import Fraction
from math import comb

import numpy as np
import pytest

from datacredit._arrays import check_flag, check_float, check_int, positive_float


@pytest.mark.parametrize("value", [True, np.bool_(False), 2.0, "3", None, [2]])
def test_check_int_refuses_non_integers(value):
    with pytest.raises(TypeError, match="batch_size"):
        check_int(value, "batch_size", 1)


def test_check_int_range_and_numpy_integers():
    assert check_int(np.int64(7), "n", 1, 7) == 7 and type(check_int(np.uint8(3), "n")) is int
    with pytest.raises(ValueError, match=r"n = 8 .* in \[1, 7\]"):
        check_int(8, "n", 1, 7)
    with pytest.raises(ValueError, match=r"n = 0 .* >= 1"):
        check_int(0, "n", 1)


@pytest.mark.parametrize("value", [True, "1.0", None, 1j, np.ones(2)])
def test_check_float_refuses_non_reals(value):
    with pytest.raises(TypeError, match="tol"):
        check_float(value, "tol", 0.0, lo_open=True)


def test_check_float_bounds():
    assert check_float(np.float32(0.5), "a", 0.0, 1.0, lo_open=True, hi_open=True) == 0.5
    assert check_float(3, "a") == 3.0
    for bad in (0.0, 1.0, float("nan")):
        with pytest.raises(ValueError, match=r"a must be a finite number > 0 and < 1"):
            check_float(bad, "a", 0.0, 1.0, lo_open=True, hi_open=True)
    with pytest.raises(ValueError, match="finite"):
        check_float(float("inf"), "a")
    assert check_float(float("inf"), "a", allow_inf=True) == float("inf")
    with pytest.raises(ValueError, match="nan"):
        check_float(float("nan"), "a", allow_inf=True)
    assert positive_float(2, "C") == 2.0


def test_check_flag():
    assert check_flag(np.bool_(True), "largest") is True
    for bad in ("no", 0, None):
        with pytest.raises(TypeError, match="largest must be True or False"):
            check_flag(bad, "largest")


def test_kernel_weights_exact_and_fast_for_large_n():
    # Reference: exact rational arithmetic of (n-1) / (C(n,s) s (n-s)).
    from datacredit.shapley import kernel_weights

    n = 12
    sizes = np.array([[1, 6], [11, 3]])
    want = np.array(
        [[float(Fraction(n - 1, comb(n, s) * s * (n - s))) for s in row] for row in sizes]
    )
    np.testing.assert_array_equal(kernel_weights(n, sizes), want)
    # 2**31 - 1 players: one binomial per distinct size, not n of them (this used to hang);
    # C(n, 1) = n gives the closed form (n-1)/(n (n-1)) = 1/n.
    big = 2**31 - 1
    np.testing.assert_allclose(kernel_weights(big, [1, 1]), [1 / big, 1 / big], rtol=1e-15)
    # a weight below the float64 range underflows to 0 instead of raising
    assert kernel_weights(5000, [2500])[0] == 0.0


def test_shapley_from_table_names_n_and_v():
    from datacredit.shapley import shapley_from_table

    with pytest.raises(ValueError, match=r"n = 63"):
        shapley_from_table(np.zeros(8), 63)
    with pytest.raises(ValueError, match="v contains NaN"):
        shapley_from_table(np.r_[np.nan, np.zeros(7)], 3)


def test_function_game_players():
    from datacredit.shapley import FunctionGame

    with pytest.raises(TypeError, match="players"):
        FunctionGame(lambda Z: Z.sum(1), True)
    with pytest.raises(ValueError, match="'a' appears more than once"):
        FunctionGame(lambda Z: Z.sum(1), ["a", "b", "a"])
    assert FunctionGame(lambda Z: Z.sum(1), np.int32(3)).players == ["0", "1", "2"]


def test_kmeans_huge_points_per_centroid_is_refused_by_name():
    from datacredit.kernels import kmeans

    x = np.random.default_rng(0).standard_normal((50, 3)).astype(np.float32)
    with pytest.raises(ValueError, match=r"max_points_per_centroid .* \[1, 2147483647\]"):
        kmeans(x, 4, max_points_per_centroid=2**31)
    # the largest allowed value samples every row: the same centroids as max = n
    np.testing.assert_array_equal(
        kmeans(x, 4, max_points_per_centroid=2**31 - 1), kmeans(x, 4, max_points_per_centroid=50)
    )


def test_identical_class_ratio_refuses_fractional_labels():
    from datacredit.metrics import identical_class_ratio

    top = np.tile(np.arange(3), (4, 1))
    labels = np.arange(10) % 3
    with pytest.raises(TypeError, match="gen_labels"):
        identical_class_ratio(top, labels, np.full(4, 0.5))
    # whole-number floats are labels; the ratio is the brute-force count of matches
    gen = np.array([0.0, 1.0, 2.0, 0.0])
    want = np.mean(labels[top] == gen[:, None].astype(int))
    assert identical_class_ratio(top, labels, gen) == want
