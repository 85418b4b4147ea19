"""Names that say what things are (with one release of aliases) and errors that name the
real problem: SampleBank accessors, `datacredit shard run --stage`, benchmark arguments,
gram_topk's squared l2, Ray's token-auth noise."""

from __future__ import annotations

import logging
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_sample_bank_accessors_and_their_deprecated_aliases():
    from datacredit.surrogateshap import SampleBank

    x = np.arange(12.0).reshape(4, 3)
    bank = SampleBank({"a": x, "b": x[:2]})
    np.testing.assert_array_equal(bank.samples_for("a"), x)
    assert bank.n_samples_for("b") == 2
    with pytest.warns(DeprecationWarning, match="samples_for"):
        np.testing.assert_array_equal(bank.samples("a"), x)
    with pytest.warns(DeprecationWarning, match="n_samples_for"):
        assert bank.n_samples("b") == 2
    with pytest.raises(KeyError, match="not in the sample bank"):
        bank.samples_for("c")


def test_library_code_uses_no_deprecated_bank_accessor():
    from datacredit.surrogateshap import ProxyGame, SampleBank
    from datacredit.surrogateshap.utilities import MeanScore

    bank = SampleBank({0: np.zeros((4, 2)), 1: np.ones((4, 2))})
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        game = ProxyGame(
            bank,
            {"a": [0], "b": [1]},
            MeanScore(lambda s: s[:, 0], higher_is_better=True),
            label_weights="uniform",
        )
        game.sufficiency(warn=False)
        bank.map(lambda s: s * 2).subset([1])


def _square_store(path: Path):
    from datacredit.store import ShardStore

    return ShardStore.create(path, method="test", stage="square", config={}, n_rows=4, shard_rows=4)


def test_shard_run_with_a_wrong_stage_names_the_stage(tmp_path):
    from datacredit.distributed.shard_cli import run_shard

    _square_store(tmp_path / "root" / "square")  # a method's root: one store per stage
    with pytest.raises(ValueError, match="no store for --stage 'sqaure'; its stages are: square"):
        run_shard(tmp_path / "root", "sqaure", 0)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run_shard(tmp_path / "absent", "square", 0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="is not a shard store"):
        run_shard(tmp_path / "empty", "square", 0)
    _square_store(tmp_path / "single")
    with pytest.raises(ValueError, match="holds stage 'square', not 'other'"):
        run_shard(tmp_path / "single", "other", 0)


def test_bench_dualda_mnist_rejects_too_few_lds_subsets_before_any_work():
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_dualda_mnist.py"), "--lds-subsets", "2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2
    assert "--lds-subsets: must be an integer >= 3, got 2" in r.stderr
    assert r.stdout == ""  # nothing ran
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import importlib.util

        spec = importlib.util.spec_from_file_location(
            "bench_dualda_mnist_args", ROOT / "benchmarks" / "bench_dualda_mnist.py"
        )
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        spec.loader.exec_module(mod)
        with pytest.raises(ValueError, match="lds_subsets must be >= 3"):
            mod.Settings(lds_subsets=2)
        with pytest.raises(ValueError, match="shortcut_class"):
            mod.Settings(shortcut_class=10)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
        sys.modules.pop("bench_dualda_mnist_args", None)


def test_benchmark_argument_types():
    import argparse

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from _common import at_least, fraction, positive
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    assert at_least(3)("3") == 3
    for bad, match in (("2", ">= 3"), ("x", "an integer"), ("2.5", "an integer")):
        with pytest.raises(argparse.ArgumentTypeError, match=match):
            at_least(3)(bad)
    assert fraction("1") == 1.0
    for bad in ("0", "1.5", "nan", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            fraction(bad)
    for bad in ("0", "-1", "inf", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            positive(bad)


def test_gram_topk_l2_values_are_squared_distances():
    from datacredit.kernels import gram_topk

    rng = np.random.default_rng(0)
    q = rng.standard_normal((5, 7)).astype(np.float32)
    k = rng.standard_normal((30, 7)).astype(np.float32)
    dist, idx = gram_topk(q, k, 3, metric="l2", largest=False)
    brute = ((q[:, None, :].astype(np.float64) - k[None].astype(np.float64)) ** 2).sum(-1)
    np.testing.assert_allclose(dist, np.take_along_axis(brute, idx, 1), rtol=1e-5)
    np.testing.assert_array_equal(idx, np.argsort(brute, 1, kind="stable")[:, :3])
    assert "squared" in gram_topk.__doc__.lower()
    readme = (ROOT / "README.md").read_text()
    assert 'metric="l2" returns SQUARED distances' in readme


def test_ray_token_auth_lines_are_dropped_and_explained_once(monkeypatch):
    from datacredit.distributed import executor

    monkeypatch.setattr(executor, "_ray_auth_explained", False)
    logger = logging.getLogger(executor._RAY_AUTH_LOGGER)
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    handler = Keep()
    logger.addHandler(handler)
    try:
        for attempt in range(2):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                with executor.ray_token_auth_explained_once():
                    logger.warning("Token authentication is enabled for this Ray cluster.")
                    logger.warning("something else")
            notes = [w for w in caught if "token authentication" in str(w.message)]
            assert len(notes) == (1 if attempt == 0 else 0)
        logger.warning("Token authentication outside ray.init is not ours to drop")
    finally:
        logger.removeHandler(handler)
    assert seen == [
        "something else",
        "something else",
        "Token authentication outside ray.init is not ours to drop",
    ]
