"""Directions of utilities (``higher_is_better``) and rankings "most helpful first".

The central check: the same game built as a loss (FID, ``higher_is_better=False``) and as
its negation (−FID, ``higher_is_better=True``) gives identical rankings through every
output a user sees — ``ranking``, ``to_frame``, ``plot``, ``summary``, the saved files,
the CLI's results.json and shapley.json, and the demo report's bars.
"""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest

from datacredit.direction import check_direction, improvement, resolve_direction
from datacredit.shapley import FunctionGame, ShapleyValues, exact, kernel_shap
from datacredit.surrogateshap import ProxyGame, SampleBank
from datacredit.surrogateshap.utilities import (
    FID,
    InceptionScore,
    MeanScore,
    PairwiseDiversity,
    ProbeCorrelation,
    Resampled,
    SampledPairDiversity,
)

LOCS = {0: 0.0, 1: 0.4, 2: 2.5, 3: -1.0, 4: 0.9}  # distance from the reference: FID order


def _bank() -> SampleBank:
    rng = np.random.default_rng(0)
    return SampleBank({lab: rng.normal(loc, 1.0, size=(24, 3)) for lab, loc in LOCS.items()})


def _reference() -> np.ndarray:
    return np.random.default_rng(1).normal(0.0, 1.0, size=(400, 3))


class NegatedFID:
    """A user's utility: −FID, declared higher-is-better."""

    higher_is_better = True

    def __init__(self) -> None:
        self.fid = FID(None, _reference(), estimator="plugin")

    def prepare(self, bank):
        self.fid.prepare(bank)
        return self

    def evaluate(self, weights):
        return -self.fid.evaluate(weights)


EMPTY_FID = 40.0
CONTRIBUTORS = {f"p{lab}": [lab] for lab in LOCS}


def _games() -> tuple[ProxyGame, ProxyGame]:
    bank = _bank()
    loss = ProxyGame(
        bank,
        CONTRIBUTORS,
        FID(None, _reference(), estimator="plugin"),
        label_weights="uniform",
        empty_value=EMPTY_FID,
    )
    gain = ProxyGame(
        bank, CONTRIBUTORS, NegatedFID(), label_weights="uniform", empty_value=-EMPTY_FID
    )
    return loss, gain


def _plot_order(sv: ShapleyValues) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ax = sv.plot()
    labels = [t.get_text() for t in ax.get_yticklabels()][::-1]  # barh draws bottom-up
    plt.close(ax.figure)
    return labels


def _estimators():
    from datacredit import SurrogateSHAP

    return {
        "exact": exact,
        "kernel_shap": lambda g: kernel_shap(g, 24, seed=0),
        "surrogateshap": lambda g: SurrogateSHAP(budget=24, cv=False, seed=0).explain(g),
    }


@pytest.mark.parametrize("name", ["exact", "kernel_shap", "surrogateshap"])
def test_a_loss_and_its_negation_rank_the_same_everywhere(name, tmp_path):
    pytest.importorskip("pandas")
    if name == "surrogateshap":
        pytest.importorskip("xgboost")
    loss_game, gain_game = _games()
    assert loss_game.higher_is_better is False and gain_game.higher_is_better is True
    est = _estimators()[name]
    loss, gain = est(loss_game), est(gain_game)
    assert loss.higher_is_better is False and gain.higher_is_better is True
    # the raw values point opposite ways; the oriented ones agree
    np.testing.assert_allclose(loss.values, -gain.values, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(loss.improvement, gain.improvement, rtol=1e-9, atol=1e-9)
    expected = loss.ranking()
    # independent reference: the label nearest the reference distribution helps FID most
    if name == "exact":
        assert expected[0] == "p0" and expected[-1] == "p2"
    for sv in (loss, gain):
        assert sv.ranking() == expected
        frame = sv.to_frame()
        assert list(frame["player"]) == expected
        assert list(frame["rank"]) == list(range(1, len(expected) + 1))
        np.testing.assert_allclose(frame["improvement"], np.sort(loss.improvement)[::-1])
        assert frame.attrs["higher_is_better"] is sv.higher_is_better
        assert _plot_order(sv) == expected
        assert sv.summary()["ranking"] == expected
        for suffix in ("json", "npz"):
            path = tmp_path / f"{name}-{sv.higher_is_better}.{suffix}"
            sv.save(path)
            back = ShapleyValues.load(path)
            assert back.higher_is_better is sv.higher_is_better
            assert back.ranking() == expected
        meta = json.loads((tmp_path / f"{name}-{sv.higher_is_better}.json").read_text())
        assert meta["ranking"] == expected
    # the most helpful contributor lowers FID: a negative FID value, positive improvement
    best = loss.players.index(expected[0])
    assert loss.values[best] < 0 < loss.improvement[best]


def test_demo_report_bars_follow_the_direction():
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from datacredit.demo.figures import _paired_bars

    loss_game, gain_game = _games()
    orders = []
    for game in (loss_game, gain_game):
        sv = exact(game)
        fig, ax = plt.subplots()
        _paired_bars(ax, list(sv.players), {"exact": sv}, "t")
        # inverted y axis: tick order is top to bottom
        orders.append([t.get_text() for t in ax.get_yticklabels()])
        widths = [p.get_width() for p in ax.patches]
        np.testing.assert_allclose(widths, np.sort(sv.improvement)[::-1])
        plt.close(fig)
    assert orders[0] == orders[1] == exact(loss_game).ranking()


# ----------------------------------------------------------------------- CLI results files
def tiny_generator():
    def generate(label, n, seed):
        rng = np.random.default_rng(seed)
        return rng.normal(LOCS[int(label)], 1.0, size=(n, 3))

    return generate


def loss_utility():
    return FID(None, _reference(), estimator="plugin")


def gain_utility():
    return NegatedFID()


def undeclared_utility():
    return Resampled(lambda z: float(z.mean()))


def _cli_config(tmp_path, utility: str, empty: float, extra: str = "") -> str:
    cfg = tmp_path / f"{utility}.yaml"
    cfg.write_text(
        textwrap.dedent(
            f"""
            generator: tests.test_directions:tiny_generator
            contributors: {json.dumps({k: v for k, v in CONTRIBUTORS.items()})}
            utility: tests.test_directions:{utility}
            n_per_label: 24
            label_weights: uniform
            empty_value: {empty}
            budget: 32
            cv: false
            out: {tmp_path / utility}
            """
        )
        + extra
    )
    return str(cfg)


def test_cli_results_rank_a_loss_and_its_negation_the_same(tmp_path, monkeypatch):
    pytest.importorskip("xgboost")
    from datacredit.cli import main

    monkeypatch.syspath_prepend(str(tmp_path.parent))
    out = {}
    for utility, empty in (("loss_utility", EMPTY_FID), ("gain_utility", -EMPTY_FID)):
        assert main(["surrogateshap", "--config", _cli_config(tmp_path, utility, empty)]) == 0
        res = json.loads((tmp_path / utility / "results.json").read_text())
        saved = ShapleyValues.load(tmp_path / utility / "shapley.json")
        assert saved.ranking() == res["ranking"]
        out[utility] = res
    loss, gain = out["loss_utility"], out["gain_utility"]
    assert loss["higher_is_better"] is False and gain["higher_is_better"] is True
    assert loss["ranking"] == gain["ranking"]
    np.testing.assert_allclose(loss["improvement"], gain["improvement"], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(loss["values"], -np.asarray(gain["values"]), rtol=1e-6, atol=1e-9)


def test_cli_asks_for_the_direction_before_generating(tmp_path, monkeypatch, capsys):
    from datacredit.cli import main

    monkeypatch.syspath_prepend(str(tmp_path.parent))
    cfg = _cli_config(tmp_path, "undeclared_utility", 0.0)
    assert main(["surrogateshap", "--config", cfg]) == 2
    err = capsys.readouterr().err
    assert "higher_is_better" in err and "unknown" in err
    assert not (tmp_path / "undeclared_utility").exists()
    cfg = _cli_config(tmp_path, "undeclared_utility", 0.0, "higher_is_better: true\n")
    assert main(["surrogateshap", "--config", cfg]) == 0
    assert json.loads((tmp_path / "undeclared_utility" / "results.json").read_text())[
        "higher_is_better"
    ]


# ----------------------------------------------------------------------- declarations
def test_library_utilities_and_scorers_declare_their_direction():
    from datacredit.models import scorers

    assert FID.higher_is_better is False
    assert InceptionScore.higher_is_better is True
    assert PairwiseDiversity(lambda a, b: np.ones((len(a), len(b)))).higher_is_better is True
    assert SampledPairDiversity(lambda a, b: np.ones(len(a))).higher_is_better is True
    for cls in (scorers.LAIONAestheticScorer, scorers.CLIPScore, scorers.MANIQAScorer):
        assert cls.higher_is_better is True, cls
    for cls in (
        scorers.PixelL2Distance,
        scorers.LPIPSDistance,
        scorers.DreamSimDistance,
        scorers.MSSSIMDistance,
    ):
        assert cls.higher_is_better is False, cls
    assert scorers.CallableQuality(lambda x: x).higher_is_better is True


def test_mean_score_takes_the_score_direction_or_asks():
    class Declared:
        higher_is_better = True

        def __call__(self, x):
            return x[:, 0]

    assert MeanScore(Declared()).higher_is_better is True
    assert MeanScore(lambda x: x[:, 0]).higher_is_better is None
    assert MeanScore(lambda x: x[:, 0], higher_is_better=False).higher_is_better is False
    with pytest.raises(ValueError, match="contradicts"):
        MeanScore(Declared(), higher_is_better=False)


def test_a_game_without_a_known_direction_is_refused_with_the_reason():
    bank = _bank()
    for utility in (
        MeanScore(lambda x: x[:, 0]),
        Resampled(lambda z: float(z.mean())),
        ProbeCorrelation(lambda x: x[:, 0], lambda x: x[:, 1], n_samples=50),
    ):
        with pytest.raises(ValueError, match="unknown.*higher_is_better=True"):
            ProxyGame(bank, CONTRIBUTORS, utility, label_weights="uniform")
    game = ProxyGame(
        bank,
        CONTRIBUTORS,
        MeanScore(lambda x: x[:, 0]),
        label_weights="uniform",
        higher_is_better=True,
    )
    assert game.higher_is_better is True
    with pytest.raises(ValueError, match="contradicts"):
        ProxyGame(
            bank, CONTRIBUTORS, loss_utility(), label_weights="uniform", higher_is_better=True
        )


@pytest.mark.parametrize("bad", [1, 0, "yes", np.array([True]), 1.0])
def test_a_direction_that_is_not_a_bool_is_a_clear_error(bad):
    bank = _bank()
    with pytest.raises(TypeError, match="higher_is_better must be True"):
        ProxyGame(
            bank,
            CONTRIBUTORS,
            MeanScore(lambda x: x[:, 0]),
            label_weights="uniform",
            higher_is_better=bad,
        )
    with pytest.raises(TypeError, match="higher_is_better"):
        MeanScore(lambda x: x[:, 0], higher_is_better=bad)
    with pytest.raises(TypeError, match="higher_is_better"):
        FunctionGame(lambda Z: Z.sum(1), 3, higher_is_better=bad)
    with pytest.raises(TypeError, match="higher_is_better"):
        ShapleyValues(np.zeros(2), ["a", "b"], 0.0, 0.0, higher_is_better=bad)
    with pytest.raises(TypeError, match="higher_is_better"):
        check_direction(bad)


def test_ranking_an_undeclared_game_asks_for_its_direction():
    pytest.importorskip("pandas")
    sv = exact(FunctionGame(lambda Z: Z @ np.array([1.0, 3.0, 2.0]), ["a", "b", "c"]))
    assert sv.higher_is_better is None
    np.testing.assert_allclose(sv.values, [1.0, 3.0, 2.0])  # the values are still there
    for call in (sv.ranking, sv.to_frame, sv.plot, sv.summary, lambda: sv.improvement):
        with pytest.raises(ValueError, match="did not declare"):
            call()
    sv.higher_is_better = False  # a loss: the smallest value helps most
    assert sv.ranking() == ["a", "c", "b"]
    declared = exact(
        FunctionGame(
            lambda Z: Z @ np.array([1.0, 3.0, 2.0]), ["a", "b", "c"], higher_is_better=True
        )
    )
    assert declared.ranking() == ["b", "c", "a"]


def test_improvement_and_resolution_helpers():
    np.testing.assert_array_equal(improvement([1.0, -2.0], False), [-1.0, 2.0])
    np.testing.assert_array_equal(improvement([1.0, -2.0], True), [1.0, -2.0])
    assert resolve_direction(None, FID(None, _reference()), "u") is False
    assert resolve_direction(True, object(), "u") is True


def test_callable_rerank_similarity_is_turned_into_a_distance():
    from datacredit.models.scorers import CallableDistance

    a, b = np.ones((3, 2)), np.zeros((3, 2))
    sim = CallableDistance(lambda x, y: np.array([0.9, 0.1, 0.5]), higher_is_better=True)
    np.testing.assert_array_equal(sim(a, b), [-0.9, -0.1, -0.5])
    dist = CallableDistance(lambda x, y: np.array([0.9, 0.1, 0.5]))
    np.testing.assert_array_equal(dist(a, b), [0.9, 0.1, 0.5])
    with pytest.raises(TypeError, match="higher_is_better"):
        CallableDistance(lambda x, y: x, higher_is_better="similarity")
