"""Interventional TreeSHAP vs shap's TreeExplainer and vs brute-force Shapley enumeration."""

from __future__ import annotations

from math import comb

import numpy as np
import pytest

xgb = pytest.importorskip("xgboost")

from datacredit.kernels import TreeEnsemble, from_xgboost, tree_shap_interventional  # noqa: E402


def _data(rng, n=200, d=6, missing=0.0):
    X = rng.normal(size=(n, d)).astype(np.float32)
    y = 2 * X[:, 0] + X[:, 1] * X[:, 2] - np.abs(X[:, 3]) + 0.1 * rng.normal(size=n)
    if missing:
        X[rng.random(X.shape) < missing] = np.nan
    return X, y


def _brute_force(ens: TreeEnsemble, x: np.ndarray, R: np.ndarray) -> np.ndarray:
    """Mean over references of exact Shapley values of S -> f(x_S, r_rest), by enumeration."""
    d = x.shape[0]
    masks = ((np.arange(1 << d)[:, None] >> np.arange(d)) & 1).astype(bool)
    phi = np.zeros(d)
    for r in R:
        v = ens.predict(np.where(masks, x, r))
        size = masks.sum(1)
        for j in range(d):
            without = ~masks[:, j]
            idx = np.flatnonzero(without)
            w = 1.0 / (d * np.array([comb(d - 1, s) for s in size[idx]]))
            phi[j] += np.dot(w, v[idx | (1 << j)] - v[idx]) / len(R)
    return phi


@pytest.mark.parametrize("objective", ["reg:squarederror", "reg:logistic", "count:poisson"])
def test_matches_brute_force_and_prediction(rng, objective):
    X, y = _data(rng, missing=0.05)
    if objective == "reg:logistic":
        y = (y > 0).astype(float)
    elif objective == "count:poisson":
        y = np.exp(np.clip(y, -3, 3) / 2)
    model = xgb.XGBRegressor(
        n_estimators=12, max_depth=4, objective=objective, nthread=1, base_score=None
    ).fit(X, y)
    ens = from_xgboost(model)
    margin = model.get_booster().predict(xgb.DMatrix(X), output_margin=True)
    np.testing.assert_allclose(ens.predict(X), margin, atol=1e-5)
    Xe, R = X[:5], X[100:104]
    phi, base = tree_shap_interventional(model, Xe, R, n_threads=2)
    np.testing.assert_allclose(base, ens.predict(R).mean(), atol=1e-9)
    np.testing.assert_allclose(phi.sum(1), ens.predict(Xe) - base, atol=1e-9)
    for i in range(len(Xe)):
        np.testing.assert_allclose(phi[i], _brute_force(ens, Xe[i], R), atol=1e-6)


def test_matches_shap_interventional(rng):
    shap = pytest.importorskip("shap")
    X, y = _data(rng, n=400, d=8, missing=0.03)
    model = xgb.XGBRegressor(n_estimators=40, max_depth=6, nthread=1, base_score=0.7).fit(X, y)
    R, Xe = X[:50], X[50:120]
    phi, base = tree_shap_interventional(model, Xe, R)
    explainer = shap.TreeExplainer(model, data=R, feature_perturbation="interventional")
    sv = explainer.shap_values(Xe)
    assert np.abs(phi - sv).max() <= 1e-5
    assert abs(base[0] - float(np.ravel(explainer.expected_value)[0])) <= 1e-5


def test_binary_inputs_grouping_many_references(rng):
    """Many references sharing paths: grouped computation equals per-reference averaging."""
    Z = (rng.random((300, 7)) < 0.5).astype(np.float32)
    y = Z @ rng.normal(size=7) + 3 * Z[:, 0] * Z[:, 1]
    model = xgb.XGBRegressor(n_estimators=20, max_depth=5, nthread=1).fit(Z, y)
    X, R = Z[:6], Z[6:70]
    phi, _ = tree_shap_interventional(model, X, R)
    per_ref = np.mean([tree_shap_interventional(model, X, R[k : k + 1])[0] for k in range(64)], 0)
    np.testing.assert_allclose(phi, per_ref, atol=1e-9)


def test_torch_input_and_input_untouched(rng):
    torch = pytest.importorskip("torch")
    X, y = _data(rng)
    model = xgb.XGBRegressor(n_estimators=5, max_depth=3, nthread=1).fit(X, y)
    Xt = torch.from_numpy(X[:4].astype(np.float64))
    before = Xt.clone()
    phi_t, _ = tree_shap_interventional(model, Xt, X[10:12])
    phi_n, _ = tree_shap_interventional(model.get_booster(), X[:4], X[10:12])
    np.testing.assert_allclose(phi_t, phi_n, atol=1e-12)
    assert torch.equal(Xt, before)


def test_errors(rng):
    X, y = _data(rng)
    model = xgb.XGBRegressor(n_estimators=3, max_depth=2, nthread=1).fit(X, y)
    with pytest.raises(ValueError, match="columns"):
        tree_shap_interventional(model, X[:, :3], X[:2])
    with pytest.raises(ValueError, match="references"):
        tree_shap_interventional(model, X[:2], X[:2, :3])
    with pytest.raises(TypeError, match="Booster"):
        tree_shap_interventional(object(), X[:2], X[:2])
    vector_leaf = xgb.XGBRegressor(
        n_estimators=2, max_depth=2, nthread=1, tree_method="hist", multi_strategy="multi_output_tree"
    ).fit(X, np.c_[y, -y])
    with pytest.raises(ValueError, match="vector-leaf"):
        from_xgboost(vector_leaf)
    Xc = np.column_stack([rng.integers(0, 4, 200), X[:, 0]]).astype(np.float32)
    import pandas as pd

    df = pd.DataFrame({"c": pd.Categorical(Xc[:, 0].astype(int)), "x": Xc[:, 1]})
    cat = xgb.XGBRegressor(
        n_estimators=3,
        max_depth=3,
        enable_categorical=True,
        tree_method="hist",
        nthread=1,
        max_cat_to_onehot=1,
    ).fit(df, 5.0 * np.isin(Xc[:, 0], [1, 3]) + X[:, 0])
    with pytest.raises(ValueError, match="categorical"):
        from_xgboost(cat)
