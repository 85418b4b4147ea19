"""Progress output a person can follow: labelled bars with a total, each ending its line."""

from __future__ import annotations

import numpy as np
import pytest


def _last_frame(err: str, label: str) -> str:
    """The final state of the bar called ``label`` (tqdm redraws with carriage returns)."""
    lines = [seg for line in err.split("\n") for seg in line.split("\r") if label in seg]
    assert lines, f"no bar labelled {label!r} in {err!r}"
    return lines[-1]


def test_count_batches_matches_iterate_batches():
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader, TensorDataset

    from datacredit.models.features import count_batches, iterate_batches

    x = np.zeros((10, 3), np.float32)
    y = np.zeros(10, np.int64)
    ds = TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    for data in ((x, y), (x,), x, torch.from_numpy(x), ds, DataLoader(ds, batch_size=3)):
        n = sum(1 for _ in iterate_batches(data, 3, with_labels=False))
        assert count_batches(data, 3) == n == 4


def test_dualda_feature_bar_has_a_total_and_ends_its_line(capsys):
    torch = pytest.importorskip("torch")
    from datacredit import DualDA

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 4)).astype(np.float32)
    y = rng.integers(0, 3, 50)
    DualDA(model.eval(), (x, y), layer="2", C=0.1, batch_size=16, progress=True).fit()
    err = capsys.readouterr().err
    frame = _last_frame(err, "DualDA: features of the training data")
    assert "4/4" in frame  # 50 samples in batches of 16: a total, not "0it"
    assert err.endswith("\n")  # the next print starts on its own line


def test_gmvaluator_embedding_bars_say_what_they_embed(capsys):
    pytest.importorskip("torch")
    from datacredit import GMValuator

    rng = np.random.default_rng(0)
    train = rng.standard_normal((40, 6)).astype(np.float32)
    gen = rng.standard_normal((9, 6)).astype(np.float32)
    gmv = GMValuator(encoder=lambda b: b, k=3, recall=10, index="exact", progress=True)
    gmv.fit(train).value(gen)
    err = capsys.readouterr().err
    assert "embedding:" not in err
    assert _last_frame(err, "embedding training set")
    assert _last_frame(err, "embedding generated")
    assert err.endswith("\n")


def test_progress_game_counts_coalitions_and_keeps_the_direction(capsys):
    from datacredit.shapley import FunctionGame, ProgressGame, exact

    game = FunctionGame(lambda Z: Z.sum(1).astype(float), 3, higher_is_better=True)
    counted = ProgressGame(game, total=10, desc="coalitions of the test game")
    sv = exact(counted, batch_size=3)
    counted.close()
    assert sv.higher_is_better is True and sv.players == game.players
    frame = _last_frame(capsys.readouterr().err, "coalitions of the test game")
    assert "8/8" in frame  # the total is corrected to the 2^3 coalitions evaluated


def test_cli_surrogateshap_shows_the_coalition_bar(tmp_path, monkeypatch, capsys):
    pytest.importorskip("xgboost")
    import textwrap

    from datacredit.cli import main

    monkeypatch.syspath_prepend(str(tmp_path.parent))
    cfg = tmp_path / "ss.yaml"
    cfg.write_text(
        textwrap.dedent(
            f"""
            generator: tests.test_cli:label_generator
            contributors: {{a: [1], b: [2], c: [3, 4]}}
            utility: tests.test_cli:mean_first_feature
            n_per_label: 4
            label_weights: uniform
            empty_value: 0.0
            budget: 8
            cv: false
            out: {tmp_path / "ss"}
            """
        )
    )
    assert main(["surrogateshap", "--config", str(cfg)]) == 0
    frame = _last_frame(capsys.readouterr().err, "SurrogateSHAP: utilities of the coalitions")
    assert "8/8" in frame
