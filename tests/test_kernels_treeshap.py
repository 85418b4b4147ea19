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
        n_estimators=2,
        max_depth=2,
        nthread=1,
        tree_method="hist",
        multi_strategy="multi_output_tree",
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


# --- r20: real XGBoost models: the trees, missing value and outputs predict uses ----------


def _margin(model, X, **kw):
    return model.get_booster().predict(
        xgb.DMatrix(X, missing=getattr(model, "missing", np.nan)), output_margin=True, **kw
    )


def test_r20_early_stopped_model_uses_best_iteration():
    from sklearn.datasets import load_diabetes

    X, y = load_diabetes(return_X_y=True)
    X = X.astype(np.float32)
    m = xgb.XGBRegressor(
        n_estimators=1000, learning_rate=0.3, early_stopping_rounds=2, nthread=1
    ).fit(X[:300], y[:300], eval_set=[(X[300:], y[300:])], verbose=False)
    assert m.best_iteration + 1 < m.get_booster().num_boosted_rounds()
    Xe, R = X[:5], X[:20]
    phi, base = tree_shap_interventional(m, Xe, R)
    pred = _margin(m, Xe, iteration_range=(0, m.best_iteration + 1))
    np.testing.assert_allclose(phi.sum(1) + base, pred, atol=1e-3)
    np.testing.assert_allclose(from_xgboost(m).predict(Xe), m.predict(Xe), atol=1e-3)
    # explicit range: all rounds, like the Booster's own predict
    ens_all = from_xgboost(m, iteration_range=(0, 0))
    np.testing.assert_allclose(
        ens_all.predict(Xe), _margin(m, Xe, iteration_range=(0, 0)), atol=1e-3
    )
    with pytest.raises(ValueError, match="iteration_range"):
        from_xgboost(m, iteration_range=(0, 10**6))


def test_r20_missing_sentinel_is_routed_as_missing(rng):
    from sklearn.datasets import load_diabetes

    X, y = load_diabetes(return_X_y=True)
    X = X.astype(np.float32)
    Xm = X.copy()
    Xm[np.random.default_rng(0).random(X.shape) < 0.3] = 1e-8
    m = xgb.XGBRegressor(n_estimators=50, missing=1e-8, nthread=1).fit(Xm, y)
    Xe, R = Xm[:5], Xm[:20]
    before = Xe.copy()
    phi, base = tree_shap_interventional(m, Xe, R)
    np.testing.assert_array_equal(Xe, before)  # the input is not modified
    np.testing.assert_allclose(phi.sum(1) + base, _margin(m, Xe), atol=1e-3)
    np.testing.assert_allclose(from_xgboost(m).predict(Xe), m.predict(Xe), atol=1e-3)
    ens = from_xgboost(m)
    shap = pytest.importorskip("shap")  # the same game with the sentinel as NaN
    sv = shap.TreeExplainer(
        m, data=np.where(R == np.float32(1e-8), np.nan, R), feature_perturbation="interventional"
    ).shap_values(np.where(Xe == np.float32(1e-8), np.nan, Xe))
    np.testing.assert_allclose(phi, sv, atol=1e-4 * (1 + np.abs(sv).max()))
    assert ens.missing == np.float32(1e-8)


def test_r20_infinity_on_the_grouped_path(rng):
    from sklearn.datasets import load_diabetes

    X, y = load_diabetes(return_X_y=True)
    X = X.astype(np.float32)
    m = xgb.XGBRegressor(n_estimators=50, nthread=1).fit(X, y)
    Xi = X[:5].copy()
    Xi[0, 2] = np.inf
    Xi[1, 3] = -np.inf
    ens = from_xgboost(m)  # (XGBoost's own predict refuses inf unless missing=inf)
    for R in (X[:3], X[:20]):  # per-pair (<= 4 references) and grouped paths
        phi, base = tree_shap_interventional(m, Xi, R)
        np.testing.assert_allclose(phi.sum(1) + base, ens.predict(Xi), atol=1e-9)
        for i in range(2):
            np.testing.assert_allclose(phi[i], _brute_force_wide(ens, Xi[i], R), atol=1e-6)


def _brute_force_wide(ens, x, R):
    """Exact Shapley values over the features the explained row differs in (others: 0)."""
    diff = [j for j in range(x.shape[0]) if any(x[j] != r[j] for r in R)]
    phi = np.zeros(x.shape[0])
    for r in R:
        d = len(diff)
        masks = ((np.arange(1 << d)[:, None] >> np.arange(d)) & 1).astype(bool)
        Z = np.tile(r, (1 << d, 1))
        Z[:, diff] = np.where(masks, x[diff], r[diff])
        v = ens.predict(Z)
        size = masks.sum(1)
        for a, j in enumerate(diff):
            idx = np.flatnonzero(~masks[:, a])
            w = 1.0 / (d * np.array([comb(d - 1, s) for s in size[idx]]))
            phi[j] += np.dot(w, v[idx | (1 << a)] - v[idx]) / len(R)
    return phi


@pytest.mark.parametrize("kind", ["softprob", "multi_target"])
def test_multi_output_models_per_output_like_shap(rng, kind):
    shap = pytest.importorskip("shap")
    X = rng.normal(size=(300, 5)).astype(np.float32)
    if kind == "softprob":
        y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5)
        m = xgb.XGBClassifier(n_estimators=10, max_depth=3, objective="multi:softprob", nthread=1)
        m.fit(X, y)
        n_out = 3
    else:
        m = xgb.XGBRegressor(n_estimators=10, max_depth=3, nthread=1)
        m.fit(X, np.c_[X[:, 0], X[:, 1] * X[:, 2]])
        n_out = 2
    Xe, R = X[:7], X[100:130]
    ens = from_xgboost(m)
    assert ens.n_outputs == n_out
    margin = _margin(m, Xe)
    np.testing.assert_allclose(ens.predict(Xe), margin, atol=1e-5)
    phi, base = tree_shap_interventional(m, Xe, R)
    assert phi.shape == (7, 5, n_out) and base.shape == (7, n_out)
    np.testing.assert_allclose(phi.sum(1) + base, margin, atol=1e-5)  # additivity per output
    np.testing.assert_allclose(base, np.broadcast_to(ens.predict(R).mean(0), base.shape), atol=1e-9)
    sv = np.asarray(
        shap.TreeExplainer(m, data=R, feature_perturbation="interventional").shap_values(Xe)
    )
    np.testing.assert_allclose(phi, sv, atol=1e-5)
    for o in range(n_out):  # each output is the one-output game of its own trees
        single = TreeEnsemble(
            **{
                **ens.__dict__,
                "roots": ens.roots[ens.tree_output == o],
                "tree_output": None,
                "base_score": float(ens.base_score[o]),
            }
        )
        p1, b1 = tree_shap_interventional(single, Xe, R[:3])
        p3, b3 = tree_shap_interventional(m, Xe, R[:3])
        np.testing.assert_allclose(p3[:, :, o], p1, atol=1e-12)
        np.testing.assert_allclose(b3[:, o], b1, atol=1e-12)
