"""The command line for a newcomer: --version, factories next to the config, one-line
errors for data that do not fit the model (before the fit), required keys in --help, and
the example configs of examples/configs/ run as shipped."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import datacredit
from datacredit.cli import DUALDA_SCHEMA, GMVALUATOR_SCHEMA, SURROGATESHAP_SCHEMA, main
from datacredit.config import REQUIRED

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "examples" / "configs").glob("*.yaml"))


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"datacredit {datacredit.__version__}"


@pytest.mark.parametrize(
    "name, schema",
    [
        ("dualda", DUALDA_SCHEMA),
        ("gmvaluator", GMVALUATOR_SCHEMA),
        ("surrogateshap", SURROGATESHAP_SCHEMA),
    ],
)
def test_help_marks_every_required_key(name, schema, capsys):
    with pytest.raises(SystemExit):
        main([name, "--help"])
    lines = {
        ln.split()[0]: ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("  ")
    }
    for key, opt in schema.items():
        line = next(v for k, v in lines.items() if k == key)
        assert line.rstrip().endswith("(required)") == (opt.default is REQUIRED), line
    if name == "surrogateshap":
        assert lines["empty_value"].rstrip().endswith("(required)")


def test_missing_empty_value_is_a_config_error(tmp_path, capsys):
    cfg = tmp_path / "ss.yaml"
    cfg.write_text("generator: a:b\ncontributors: {a: [1]}\nutility: a:b\nlabel_weights: uniform\n")
    assert main(["surrogateshap", "--config", str(cfg)]) == 2
    assert "key 'empty_value' is required" in capsys.readouterr().err


_FACTORIES = """
import numpy as np

def model():
    import torch
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))

def train():
    rng = np.random.default_rng(1)
    return rng.standard_normal((40, 4)).astype(np.float32), rng.integers(0, 3, 40)

def test_ok():
    return np.random.default_rng(2).standard_normal((5, 4)).astype(np.float32)

def test_wide():
    return np.random.default_rng(2).standard_normal((5, 6)).astype(np.float32)

def test_float64():
    return np.random.default_rng(2).standard_normal((5, 4))

def images():
    return np.random.default_rng(3).random((30, 1, 8, 8)).astype(np.float32)

def images_bigger():
    return np.random.default_rng(4).random((6, 1, 9, 9)).astype(np.float32)

def images_same():
    return np.random.default_rng(4).random((6, 1, 8, 8)).astype(np.float32)
"""


@pytest.fixture()
def config_dir(tmp_path):
    # A module beside the config, named by its bare name: no PYTHONPATH needed.
    name = f"mymod_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(_FACTORIES)
    yield tmp_path, name
    sys.modules.pop(name, None)


def _dualda_config(directory, mod, test):
    cfg = directory / "dualda.yaml"
    cfg.write_text(
        f"model: {mod}:model\ntrain_data: {mod}:train\ntest_data: {mod}:{test}\n"
        f"layer: '2'\nC: 0.1\ntop_k: 3\nout: {directory / 'out'}\n"
    )
    return cfg


def test_factories_next_to_the_config_import(config_dir):
    directory, mod = config_dir
    assert mod not in sys.modules
    assert main(["dualda", "--config", str(_dualda_config(directory, mod, "test_ok"))]) == 0
    res = json.loads((directory / "out" / "results.json").read_text())
    assert np.asarray(res["top_indices"]).shape == (5, 3)


@pytest.mark.parametrize(
    "test, message",
    [
        ("test_wide", "test_data: the model fails on its first samples (float32 tensor (2, 6))"),
        ("test_float64", "test_data: the model fails on its first samples (float64 tensor (2, 4))"),
    ],
)
def test_dualda_test_data_that_do_not_fit_the_model(config_dir, capsys, monkeypatch, test, message):
    import datacredit.dualda.dualda as dualda_module

    directory, mod = config_dir
    fitted = []
    real_fit = dualda_module.DualDA.fit
    monkeypatch.setattr(
        dualda_module.DualDA,
        "fit",
        lambda self, *a, **k: fitted.append(1) or real_fit(self, *a, **k),
    )
    assert main(["dualda", "--config", str(_dualda_config(directory, mod, test))]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"datacredit dualda: error: {message}"), err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not fitted, "the check must come before the SVM fit"
    assert not (directory / "out").exists()


def _gmv_config(directory, mod, generated, rerank="l2"):
    cfg = directory / "gmv.yaml"
    cfg.write_text(
        f"encoder: pixels\ntrain_data: {mod}:images\ngenerated: {mod}:{generated}\n"
        f"k: 3\nrecall: 10\nindex: exact\nrerank: {rerank}\nout: {directory / 'gout'}\n"
    )
    return cfg


def test_gmvaluator_generated_that_do_not_fit(config_dir, capsys):
    directory, mod = config_dir
    assert main(["gmvaluator", "--config", str(_gmv_config(directory, mod, "images_bigger"))]) == 1
    err = capsys.readouterr().err
    assert err.startswith(
        "datacredit gmvaluator: error: generated: its embeddings have 81 dimensions, the "
        "training samples' 64"
    ), err
    assert err.count("\n") == 1 and not (directory / "gout").exists()
    cfg = _gmv_config(directory, mod, "images_same", rerank="pixel_l2")
    assert main(["gmvaluator", "--config", str(cfg)]) == 0


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
def test_example_configs_run(config, tmp_path):
    # Run as a user would, from another directory: the config names its factories beside it.
    text = config.read_text()
    assert "out:" in text
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "datacredit.cli",
            config.stem.split("_")[0],
            "--config",
            str(config),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out_line = proc.stdout.strip().splitlines()[-1]
    assert out_line.startswith("wrote ") and out_line.endswith("results.json")
    results = json.loads((tmp_path / out_line.split()[1]).read_text())
    assert results["method"] == config.stem.split("_")[0]


def test_every_method_has_an_example_config():
    assert {c.stem.split("_")[0] for c in CONFIGS} == {"dualda", "gmvaluator", "surrogateshap"}
