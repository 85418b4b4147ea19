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
        ("encoder: pixels\ntrain_data: a:b\ngenerated: a:b\nk: five\n", "key 'k' must be int"),
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
