"""The command line: config validation, help texts and the method runners on tiny inputs."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from datacredit.cli import DUALDA_SCHEMA, GMVALUATOR_SCHEMA, SURROGATESHAP_SCHEMA, main
from datacredit.config import ConfigError, load_object, read_config, validate


def test_help_lists_every_config_key(capsys):
    for name, schema in (
        ("dualda", DUALDA_SCHEMA),
        ("gmvaluator", GMVALUATOR_SCHEMA),
        ("surrogateshap", SURROGATESHAP_SCHEMA),
    ):
        with pytest.raises(SystemExit):
            main([name, "--help"])
        out = capsys.readouterr().out
        for key in schema:
            assert key in out, (name, key)


def test_console_script_runs():
    out = subprocess.run(
        [sys.executable, "-m", "datacredit.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "demo" in out.stdout and "surrogateshap" in out.stdout


@pytest.mark.parametrize(
    "text,match",
    [
        ("k: 5\n", "key 'encoder' is required"),
        (
            "encoder: pixels\ntrain_data: a:b\ngenerated: a:b\nk: five\n",
            "k: must be an integer, got str 'five'",
        ),
        ("encoder: pixels\ntrain_data: a:b\ngenerated: a:b\nbogus: 1\n", "unknown key"),
    ],
)
def test_config_errors_name_the_key(tmp_path, text, match):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        validate(read_config(path), GMVALUATOR_SCHEMA, str(path))


def test_config_error_exit_code_and_message(tmp_path, capsys):
    path = tmp_path / "c.toml"
    path.write_text(
        'encoder = "pixels"\ntrain_data = "nonexistent_pkg_xyz:data"\ngenerated = "x:y"\n'
    )
    assert main(["gmvaluator", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "train_data" in err and "nonexistent_pkg_xyz" in err


def test_load_object_errors():
    with pytest.raises(ConfigError, match="expected 'package.module:attribute'"):
        load_object("numpy.mean", "fn")
    with pytest.raises(ConfigError, match="has no attribute"):
        load_object("numpy:no_such_thing", "fn")
    assert load_object("numpy:mean", "fn") is np.mean


# Factories used by the config runs below (referenced as "tests.test_cli:...").
_RNG = np.random.default_rng(0)
TRAIN = _RNG.standard_normal((300, 8)).astype(np.float32)
GEN = TRAIN[:20] + 0.01 * _RNG.standard_normal((20, 8)).astype(np.float32)


def train_data():
    return TRAIN


def generated():
    return GEN


def groups():
    return np.arange(300) % 3


def test_gmvaluator_config_run(tmp_path, monkeypatch):
    import json

    monkeypatch.syspath_prepend(str(tmp_path.parent))
    cfg = tmp_path / "gmv.yaml"
    cfg.write_text(
        textwrap.dedent(
            f"""
            encoder: pixels
            train_data: tests.test_cli:train_data
            generated: tests.test_cli:generated
            groups: tests.test_cli:groups
            k: 5
            recall: 20
            index: exact
            out: {tmp_path / "out"}
            """
        )
    )
    assert main(["gmvaluator", "--config", str(cfg)]) == 0
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["n_train"] == 300
    # every generated sample distributes weight 1 (q = 1) over its top-k
    assert abs(res["total"] - 20) < 1e-4
    assert abs(sum(res["values_by_group"].values()) - 20) < 1e-4


def l1_rerank():
    def l1(a, b):
        return np.abs(np.asarray(a) - np.asarray(b)).reshape(len(a), -1).sum(1)

    return l1


def train_images():
    return np.random.default_rng(3).random((60, 1, 4, 4)).astype(np.float32)


def generated_images():
    return train_images()[:6] * 0.9


@pytest.mark.parametrize(
    ("rerank", "agg"),
    [("pixel_l2", "max"), ("tests.test_cli:l1_rerank", "mean"), ("none", "sum"), ("cosine", "max")],
)
def test_gmvaluator_cli_rerank_and_group_agg(tmp_path, monkeypatch, rerank, agg):
    import json

    from datacredit import GMValuator

    monkeypatch.syspath_prepend(str(tmp_path.parent))
    cfg = tmp_path / "gmv.yaml"
    cfg.write_text(
        textwrap.dedent(
            f"""
            encoder: pixels
            train_data: tests.test_cli:train_images
            generated: tests.test_cli:generated_images
            groups: tests.test_cli:groups60
            group_agg: {agg}
            rerank: {rerank}
            k: 3
            recall: 12
            index: exact
            out: {tmp_path / "out"}
            """
        )
    )
    assert main(["gmvaluator", "--config", str(cfg)]) == 0
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    direct = {"none": None, "tests.test_cli:l1_rerank": l1_rerank()}.get(rerank, rerank)
    val = GMValuator(encoder="pixels", k=3, recall=12, index="exact", rerank=direct)
    val = val.fit(train_images()).value(generated_images())
    by_group = val.group_values(groups60(), agg=agg)
    keys, ref = list(by_group), list(by_group.values())
    assert res["group_agg"] == agg
    np.testing.assert_allclose([res["values_by_group"][str(k)] for k in keys], ref, rtol=1e-12)


def groups60():
    return np.arange(60) % 4


def test_gmvaluator_cli_bad_group_agg(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path.parent))
    cfg = tmp_path / "gmv.yaml"
    cfg.write_text(
        "encoder: pixels\ntrain_data: tests.test_cli:train_data\n"
        "generated: tests.test_cli:generated\ngroup_agg: median\n"
        f"out: {tmp_path / 'out'}\n"
    )
    assert main(["gmvaluator", "--config", str(cfg)]) == 2


# --- DualDA and SurrogateSHAP from configs (tiny models built here, no downloads) ---
def tiny_classifier():
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).eval()


def tiny_train():
    rng = np.random.default_rng(1)
    return rng.standard_normal((60, 4)).astype(np.float32), rng.integers(0, 3, 60)


def tiny_test():
    return np.random.default_rng(2).standard_normal((5, 4)).astype(np.float32)


def label_generator():
    # generate(label, n, seed) -> (n, 2) "samples" whose mean score is the label
    def generate(label, n, seed):
        rng = np.random.default_rng(seed)
        return np.full((n, 2), float(label)) + 0.0 * rng.standard_normal((n, 2))

    return generate


def mean_first_feature():
    from datacredit.surrogateshap.utilities import MeanScore

    return MeanScore(lambda x: x[:, 0], higher_is_better=True)


def test_dualda_config_run(tmp_path, monkeypatch):
    import json

    pytest.importorskip("torch")
    monkeypatch.syspath_prepend(str(tmp_path.parent))
    cfg = tmp_path / "dualda.toml"
    cfg.write_text(
        textwrap.dedent(
            f"""
            model = "tests.test_cli:tiny_classifier"
            train_data = "tests.test_cli:tiny_train"
            test_data = "tests.test_cli:tiny_test"
            layer = "2"
            C = 0.1
            top_k = 4
            out = "{tmp_path / "dd"}"
            """
        )
    )
    assert main(["dualda", "--config", str(cfg)]) == 0
    res = json.loads((tmp_path / "dd" / "results.json").read_text())
    arrays = np.load(tmp_path / "dd" / "attributions.npz")
    assert np.array_equal(arrays["top_indices"], np.asarray(res["top_indices"]))
    assert arrays["top_indices"].shape == (5, 4) and arrays["self_influence"].shape == (60,)
    assert res["n_support"] >= 1
    bad = tmp_path / "bad.toml"
    bad.write_text(cfg.read_text().replace("C = 0.1", "C = -1.0"))
    assert main(["dualda", "--config", str(bad)]) == 2


def test_dualda_cli_top_k_above_n_is_a_data_error(tmp_path, monkeypatch, capsys):
    # top_k = 61 is a valid value that only the 60 loaded training samples make wrong: exit 1
    # with one line naming the key and N, like GMValuator's k (recall) > N; top_k = 0 is
    # wrong whatever the data: config error, exit 2.
    pytest.importorskip("torch")
    monkeypatch.syspath_prepend(str(tmp_path.parent))
    cfg = tmp_path / "dualda.toml"
    text = (
        'model = "tests.test_cli:tiny_classifier"\ntrain_data = "tests.test_cli:tiny_train"\n'
        'test_data = "tests.test_cli:tiny_test"\nlayer = "2"\nC = 0.1\n'
        f'out = "{tmp_path / "dd"}"\n'
    )
    cfg.write_text(text + "top_k = 61\n")
    assert main(["dualda", "--config", str(cfg)]) == 1
    # the progress bar ends its own line; the error is the one line after it
    err = capsys.readouterr().err.rsplit("\r", 1)[-1].split("\n")[-2:]
    assert err[1] == "" and err[0].startswith(
        "datacredit dualda: error: top_k: must be an integer in [1, N = 60]"
    )
    assert "got int 61" in err[0]
    assert not (tmp_path / "dd").exists()
    cfg.write_text(text + "top_k = 0\n")
    assert main(["dualda", "--config", str(cfg)]) == 2
    assert "config error: top_k: must be an integer >= 1" in capsys.readouterr().err
    cfg.write_text(text + "top_k = 60\n")  # N itself is allowed
    assert main(["dualda", "--config", str(cfg)]) == 0


def test_surrogateshap_config_run(tmp_path, monkeypatch):
    import json

    pytest.importorskip("xgboost")
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
    res = json.loads((tmp_path / "ss" / "results.json").read_text())
    assert res["players"] == ["a", "b", "c"]
    # uniform mixture over the coalition's labels; 8 = all coalitions of 3 players: exact
    # enumeration of v is cheap to write down, and the values must be efficient.
    assert abs(sum(res["values"]) - (res["v_full"] - res["v_empty"])) < 1e-9
    assert res["v_full"] == pytest.approx((1 + 2 + 3 + 4) / 4)
