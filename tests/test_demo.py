"""The end-to-end demo (`datacredit demo --fast`) and its report."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("zennit")
pytest.importorskip("xgboost")


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory):
    from datacredit.cli import main

    out = tmp_path_factory.mktemp("demo")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["demo", "--fast", "--out", str(out)]) == 0
    _DEMO_WARNINGS[:] = [str(w.message) for w in caught]
    return out


_DEMO_WARNINGS: list[str] = []


@pytest.mark.slow
def test_demo_prints_no_solver_warning(demo_out):
    """The DualDA surrogates of the demo converge with the default max_iter."""
    assert not [m for m in _DEMO_WARNINGS if "SVM solver stopped" in m]


@pytest.mark.slow
def test_demo_results_json(demo_out):
    res = json.loads((demo_out / "results.json").read_text())
    ss = res["surrogateshap"]
    for key in ("players", "values", "v_empty", "v_full", "efficiency_gap", "kernelshap_values"):
        assert key in ss
    assert len(ss["players"]) == len(ss["values"]) == len(ss["kernelshap_values"]) == 10
    # The reported gap is what separates the values' sum from v(full) - v(empty).
    delta = ss["v_full"] - ss["v_empty"]
    assert abs(sum(ss["values"]) - ss["efficiency_gap"] - delta) < 1e-6 * (1 + abs(delta))
    # The exact values (enumeration) are efficient, and the errors are reported against them.
    assert abs(sum(ss["exact_values"]) - delta) < 1e-6 * (1 + abs(delta))
    rel = np.linalg.norm(np.subtract(ss["values"], ss["exact_values"])) / np.linalg.norm(
        ss["exact_values"]
    )
    assert abs(rel - ss["relative_error"]) < 1e-9
    assert np.isfinite(ss["values"]).all()
    gm = res["gmvaluator"]
    assert set(gm) >= {"values_by_contributor", "total_quality", "n_generated"}
    assert len(gm["values_by_contributor"]) == 10
    # q = 1 for every generated sample: total value = number of generated samples
    assert abs(gm["total_quality"] - gm["n_generated"]) < 1e-3 * gm["n_generated"]
    dd = res["dualda"]
    assert set(dd) >= {"identical_class", "mislabel_auc", "n_support"}
    assert 0 <= dd["identical_class"] <= 1 and 0 <= dd["mislabel_auc"] <= 1
    assert dd["n_support"] > 0
    assert set(res["timings"]) >= {"models", "surrogateshap", "gmvaluator", "dualda", "total"}


@pytest.mark.slow
def test_report_is_self_contained(demo_out):
    html = (demo_out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 5
    # no external resources of any kind
    assert not re.search(r"(src|href)\s*=\s*['\"](https?:)?//", html)
    assert "<script" not in html


@pytest.mark.slow
@pytest.mark.browser
def test_report_renders_in_headless_chromium(demo_out, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed")
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1200,3000",
            f"--screenshot={shot}",
            (demo_out / "report.html").as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert img.shape[0] >= 1000
    # a rendered page with figures is far from blank
    assert img.std() > 10


def test_train_diffusion_ema_returns_the_average_of_the_iterates():
    """With ``ema_decay`` the returned weights are the moving average: a decay next to 1
    keeps the initial weights; without it the last iterate is returned."""
    from datacredit.demo.nets import make_unet
    from datacredit.demo.training import train_diffusion

    rng = np.random.default_rng(0)
    x = rng.random((8, 1, 16, 16)).astype(np.float32)
    y = np.arange(8) % 10
    torch.manual_seed(3)
    init = {k: v.clone() for k, v in make_unet().state_dict().items()}
    kept = train_diffusion(x, y, steps=3, batch_size=4, seed=3, progress=False, ema_decay=1 - 1e-12)
    plain = train_diffusion(x, y, steps=3, batch_size=4, seed=3, progress=False)
    moved = 0
    for name, p in kept.named_parameters():
        torch.testing.assert_close(p.detach(), init[name], rtol=0, atol=1e-9)
        moved += int(not torch.equal(dict(plain.named_parameters())[name].detach(), init[name]))
    assert moved > 0
    with pytest.raises(ValueError, match="ema_decay"):
        train_diffusion(x, y, steps=1, progress=False, ema_decay=1.0)
