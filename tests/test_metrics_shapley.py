"""LDS and counterfactual removal sets; the digits fidelity check on a small scale."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from datacredit import SurrogateSHAP, shapley
from datacredit.metrics import counterfactual_ranking, lds_coalitions, lds_groups


def test_lds_matches_scipy(rng):
    tau = rng.normal(size=8)
    Z = lds_coalitions(8, 0.5, 40, seed=3)
    assert (Z.sum(1) == 4).all()
    v = Z @ tau + 0.3 * rng.normal(size=40)
    ref = stats.spearmanr(Z @ tau, v)[0]
    assert lds_groups(tau, Z, v) == pytest.approx(ref, abs=1e-12)
    res = shapley.ShapleyValues(tau, [str(i) for i in range(8)], 0.0, 1.0)
    assert lds_groups(res, Z, v) == pytest.approx(ref, abs=1e-12)
    assert lds_groups(tau, Z, Z @ tau) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="coalitions"):
        lds_groups(tau, Z[:, :3], v)
    with pytest.raises(ValueError, match="NaN"):
        lds_groups(tau, Z, np.full(40, np.nan))


def test_counterfactual_ranking():
    vals = np.array([0.5, -1.0, 2.0, 0.1, 0.0, 3.0, -0.2, 1.0, 0.7, -3.0])
    out = counterfactual_ranking(vals, (0.1, 0.2), players=list("abcdefghij"))
    assert out[0]["top"] == ["f"] and out[0]["bottom"] == ["j"]
    assert out[1]["top"] == ["f", "c"] and out[1]["bottom"] == ["j", "b"]
    assert out[1]["keep_without_top"].sum() == 8 and not out[1]["keep_without_top"][[5, 2]].any()
    with pytest.raises(ValueError, match="k_frac"):
        counterfactual_ranking(vals, (1.5,))


def test_digits_proxy_tracks_retraining():
    """Small-scale §5.2 check: proxy vs retraining utilities and LDS of SurrogateSHAP."""
    pytest.importorskip("sklearn")
    from datacredit.games import DigitsRetraining

    D = DigitsRetraining(utility="is", n_per_label=80, seed=0)
    Z = shapley.sample_coalitions(10, 40, seed=1)[2:]
    vr, vp = D.retraining_game(Z), D.proxy_game(Z)
    assert np.corrcoef(vr, vp)[0, 1] > 0.9
    res = SurrogateSHAP(128, cv=False, xgb_params={"n_estimators": 300}, seed=0).explain(
        D.proxy_game
    )
    T = lds_coalitions(10, 0.5, 30, seed=2)
    assert lds_groups(res, T, D.retraining_game(T)) > 0.5
