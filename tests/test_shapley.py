"""Shapley baselines: exact enumeration, KernelSHAP, the coalition sampler, results, games."""

from __future__ import annotations

import itertools
from math import factorial

import numpy as np
import pytest

from datacredit import games, shapley
from datacredit.shapley import ShapleyValues


def _permutation_shapley(game, n):
    """Reference: average marginal contribution over all n! orderings."""
    phi = np.zeros(n)
    for perm in itertools.permutations(range(n)):
        z = np.zeros((n + 1, n), dtype=bool)
        for k, p in enumerate(perm):
            z[k + 1] = z[k]
            z[k + 1, p] = True
        v = game(z)
        for k, p in enumerate(perm):
            phi[p] += v[k + 1] - v[k]
    return phi / factorial(n)


@pytest.mark.parametrize("kind", ["linear", "nonlinear", "interaction"])
def test_exact_matches_permutations(kind):
    g = games.synthetic(kind, n=6, seed=3)
    res = shapley.exact(g)
    np.testing.assert_allclose(res.values, _permutation_shapley(g, 6), atol=1e-12)
    np.testing.assert_allclose(res.values, g.exact_values(), atol=1e-12)
    assert abs(res.efficiency_gap) < 1e-12
    assert res.coalitions.shape == (64, 6)


def test_synthetic_games_equations():
    g = games.synthetic("interaction", n=10, seed=1)
    z = np.zeros((1, 10), dtype=bool)
    z[0, [0, 1, 2, 4]] = True
    w = g.w
    s = 0.25 + w[[0, 1, 2, 4]].sum() + 1.5 + 2.0  # pair (0,1) and triple (0,2,4)
    np.testing.assert_allclose(g(z), [3 * np.tanh(s / 3)])
    lin = games.synthetic("linear", n=10, seed=1)
    np.testing.assert_allclose(lin.exact_values(), shapley.exact(lin).values, atol=1e-12)
    np.testing.assert_allclose(lin.w, np.random.default_rng(1).standard_normal(10))
    with pytest.raises(ValueError, match="kind"):
        games.synthetic("cubic")


def test_sampler_properties():
    n, budget = 12, 600
    Z = shapley.sample_coalitions(n, budget, seed=0)
    assert Z.shape == (budget, n) and Z.dtype == bool
    assert not Z[0].any() and Z[1].all()
    assert len({r.tobytes() for r in Z}) == budget  # de-duplicated
    sizes = Z[2:].sum(1)
    assert sizes.min() >= 1 and sizes.max() <= n - 1
    # iid sizes follow p(s) ∝ (n-1)/(s(n-s))
    iid = shapley.sample_coalitions(n, 40002, seed=1, unique=False)[2:].sum(1)
    freq = np.bincount(iid, minlength=n)[1:n] / len(iid)
    np.testing.assert_allclose(freq, shapley.shapley_size_probs(n), atol=0.01)
    # uniform subset given the size: each player equally often among size-3 coalitions
    s3 = shapley.sample_coalitions(n, 40002, seed=2, unique=False)[2:]
    s3 = s3[s3.sum(1) == 3]
    np.testing.assert_allclose(s3.mean(0), 3 / n, atol=0.02)
    # seeded
    np.testing.assert_array_equal(Z, shapley.sample_coalitions(n, budget, seed=0))
    # enumeration when 2^n <= budget
    E = shapley.sample_coalitions(5, 40, seed=0)
    assert E.shape == (32, 5) and len({r.tobytes() for r in E}) == 32
    # paired sampling: each drawn coalition followed by its complement
    P = shapley.sample_coalitions(10, 202, seed=0, unique=False, paired=True)
    np.testing.assert_array_equal(P[2::2], ~P[3::2])
    Q = shapley.sample_coalitions(10, 200, seed=0, paired=True)  # unique + paired
    assert len({r.tobytes() for r in Q}) == 200
    np.testing.assert_array_equal(Q[2::2], ~Q[3::2])


def test_kernel_shap():
    g = games.synthetic("interaction", n=8, seed=0)
    exact = g.exact_values()
    full = shapley.kernel_shap(g, 256, seed=0, unique=True)  # 2^8 = 256: enumeration
    np.testing.assert_allclose(full.values, exact, atol=1e-10)
    lin = games.synthetic("linear", n=10, seed=0)
    np.testing.assert_allclose(shapley.kernel_shap(lin, 64, seed=0).values, lin.w, atol=1e-10)
    est = shapley.kernel_shap(g, 200, seed=1)
    assert abs(est.efficiency_gap) < 1e-10
    assert np.linalg.norm(est.values - exact) / np.linalg.norm(exact) < 0.5
    with pytest.raises(ValueError, match="budget"):
        shapley.kernel_shap(g, 9)


def test_bad_games():
    def nan_game(Z):
        out = Z.sum(1).astype(float)
        out[-1] = np.nan
        return out

    with pytest.raises(ValueError, match="non-finite"):
        shapley.exact(shapley.FunctionGame(nan_game, 4))
    with pytest.raises(ValueError, match="shape"):
        shapley.exact(shapley.FunctionGame(lambda Z: np.zeros(3), 4))
    with pytest.raises(TypeError, match="n_players"):
        shapley.exact(lambda Z: Z.sum(1))
    res = shapley.exact(lambda Z: Z.sum(1) ** 2, n_players=3)
    np.testing.assert_allclose(res.values, [3, 3, 3])


def test_result_roundtrip(tmp_path):
    g = games.synthetic("nonlinear", n=5, seed=0)
    res = shapley.exact(g)
    for name in ("r.json", "r.npz"):
        res.save(tmp_path / name)
        back = ShapleyValues.load(tmp_path / name)
        np.testing.assert_allclose(back.values, res.values)
        np.testing.assert_array_equal(back.coalitions, res.coalitions)
        assert back.players == res.players and back.method == "exact"
        assert back.v_full == res.v_full
    # save("x") writes exactly x (npz unless the suffix says json), atomically
    res.save(tmp_path / "plain")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain", "r.json", "r.npz"]
    np.testing.assert_allclose(ShapleyValues.load(tmp_path / "plain").values, res.values)
    res.save(tmp_path / "as_json.dat", format="json")
    assert ShapleyValues.load(tmp_path / "as_json.dat").players == res.players
    with pytest.raises(ValueError, match="format"):
        res.save(tmp_path / "r.txt", format="pickle")
    df = res.to_frame()
    assert list(df["player"]) == res.ranking()
    import matplotlib

    matplotlib.use("Agg")
    ax = res.plot()
    assert len(ax.patches) == 5


def test_r14_numpy_scalars_in_info_are_converted_early(tmp_path):
    """r14: numpy ints in info / param_grid made save fail after the whole run."""
    from datacredit import SurrogateSHAP

    g = shapley.FunctionGame(lambda Z: Z[:, 0] * 3.0 + Z[:, 1], 4)
    grid = dict(max_depth=np.array([2, 3]), n_estimators=[np.int64(5)])
    for est in ("adjusted", "paper"):
        r = SurrogateSHAP(32, estimator=est, param_grid=grid).explain(g)
        r.save(tmp_path / f"{est}.json")
        back = ShapleyValues.load(tmp_path / f"{est}.json")
        assert back.info == r.info
    res = ShapleyValues(
        values=[1.0, 2.0],
        players=["a", "b"],
        v_empty=0.0,
        v_full=3.0,
        info={"k": np.int64(3), "a": np.arange(2), "f": np.float32(0.5), "t": (1, 2)},
        stderr=[0.1, 0.2],
    )
    assert res.info == {"k": 3, "a": [0, 1], "f": 0.5, "t": [1, 2]}
    for name in ("s.json", "s.npz"):
        res.save(tmp_path / name)
        np.testing.assert_allclose(ShapleyValues.load(tmp_path / name).stderr, [0.1, 0.2])
    # what cannot be saved is refused at construction, naming the entry
    with pytest.raises(TypeError, match=r"info\['fn'\]"):
        ShapleyValues(values=[1.0], players=["a"], v_empty=0, v_full=1, info={"fn": print})
    with pytest.raises(ValueError, match="stderr"):
        ShapleyValues(values=[1.0], players=["a"], v_empty=0, v_full=1, stderr=[1.0, 2.0])
