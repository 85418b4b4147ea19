"""`datacredit shard run/status` and resumability: workers and the driver SIGKILLed mid-stage,
rerun computes only the missing shards, the result equals an uninterrupted run."""

from __future__ import annotations

import concurrent.futures as cf
import os
import subprocess
import sys
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from datacredit.distributed import run_stage
from datacredit.store import ShardStore

sys.path.insert(0, str(Path(__file__).parent))
import _shard_workers  # noqa: E402

TESTS = str(Path(__file__).parent)
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([TESTS, *sys.path])}


def _create(path, worker="_shard_workers:square"):
    return ShardStore.create(
        path,
        method="test",
        stage="square",
        config={"seed": 5},
        n_rows=18,
        shard_rows=4,
        worker=worker,
    )


def _cli(*args, env=ENV, **kw):
    return subprocess.run(
        [sys.executable, "-m", "datacredit.cli", "shard", *args],
        env=env,
        capture_output=True,
        text=True,
        **kw,
    )


def _uninterrupted(tmp_path):
    ref = _create(tmp_path / "ref")
    run_stage(ref, partial(_shard_workers.square, {"seed": 5}))
    return ref


def _files_equal(a: Path, b: Path, n: int) -> None:
    for i in range(n):
        name = f"shard-{i:05d}.safetensors"
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_shard_run_killed_worker_resumes(tmp_path):
    store = _create(tmp_path / "s")
    for i in (0, 1, 3, 4):
        r = _cli("run", "--store", str(tmp_path / "s"), "--stage", "square", "--shard", str(i))
        assert r.returncode == 0, r.stderr
        assert f"shard {i} of" in r.stdout and "done" in r.stdout
    # The array task of shard 2 is SIGKILLed while computing.
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "datacredit.cli",
            "shard",
            "run",
            "--store",
            str(tmp_path / "s"),
            "--stage",
            "square",
            "--shard",
            "2",
        ],
        env={**ENV, "DATACREDIT_TEST_HANG": "2"},
        stdout=subprocess.PIPE,
    )
    assert proc.stdout.readline().strip() == b"hanging"
    proc.kill()
    proc.wait()
    r = _cli("status", str(tmp_path / "s"))
    assert r.returncode == 0 and "4/5 shards done" in r.stdout and "pending: 2" in r.stdout
    assert store.missing() == [2]
    r = _cli("run", "--store", str(tmp_path / "s"), "--stage", "square", "--shard", "2")
    assert r.returncode == 0, r.stderr
    r = _cli("run", "--store", str(tmp_path / "s"), "--stage", "square", "--shard", "2")
    assert "already done" in r.stdout

    def never(shard, rows):
        raise AssertionError(f"shard {shard} recomputed")

    run_stage(store, never)  # the driver only folds the markers into the manifest
    assert [s["status"] for s in store.manifest["shards"]] == ["done"] * 5
    ref = _uninterrupted(tmp_path)
    np.testing.assert_array_equal(store.concat("x"), ref.concat("x"))
    _files_equal(tmp_path / "s", tmp_path / "ref", 5)
    assert "5/5 shards done" in _cli("status", str(tmp_path)).stdout  # a directory of stores


def test_process_pool_worker_sigkilled_mid_stage(tmp_path):
    os.environ["DATACREDIT_TEST_SIGKILL"] = str(tmp_path)
    try:
        store = _create(tmp_path / "s")
        fn = partial(_shard_workers.square, {"seed": 5})
        with pytest.raises(BrokenProcessPool):
            with cf.ProcessPoolExecutor(1) as ex:
                run_stage(store, fn, executor=ex)
        assert 2 in store.missing() and 0 not in store.missing()
        done_before = set(range(5)) - set(store.missing())
        calls = []

        def counting(shard, rows):
            calls.append(shard)
            return fn(shard, rows)

        run_stage(store, counting)
        assert set(calls) == set(range(5)) - done_before and 2 in calls
    finally:
        del os.environ["DATACREDIT_TEST_SIGKILL"]
    ref = _uninterrupted(tmp_path)
    _files_equal(tmp_path / "s", tmp_path / "ref", 5)
    np.testing.assert_array_equal(store.concat("ids"), np.arange(18))
    assert ref.complete


def test_shard_cli_errors(tmp_path):
    _create(tmp_path / "s")
    r = _cli("run", "--store", str(tmp_path / "s"), "--stage", "other", "--shard", "0")
    assert r.returncode == 2 and "holds stage 'square', not 'other'" in r.stderr
    r = _cli("run", "--store", str(tmp_path / "s"), "--stage", "square", "--shard", "9")
    assert r.returncode == 2 and "out of range" in r.stderr
    r = _cli("status", str(tmp_path / "none"))
    assert r.returncode == 2 and "no shard store" in r.stderr
    ShardStore.create(tmp_path / "p", method="t", stage="square", config={}, n_rows=4, shard_rows=4)
    r = _cli("run", "--store", str(tmp_path / "p"), "--stage", "square", "--shard", "0")
    assert r.returncode == 2 and "names no worker" in r.stderr
    with pytest.raises(ValueError, match="worker: store has"):
        _create(tmp_path / "s", worker="_shard_workers:other")


def test_gmvaluator_embeddings_from_the_command_line(tmp_path):
    from datacredit.gmvaluator import GMValuator
    from datacredit.gmvaluator.stages import create_embedding_store

    st = create_embedding_store(
        tmp_path / "g",
        encoder="_shard_workers:gmv_encoder",
        train_data="_shard_workers:gmv_train",
        shard_rows=256,
    )
    assert st.n_shards == 3 and st.manifest["worker"].endswith(":embed_worker")
    for i in range(3):  # three SLURM array tasks
        r = _cli("run", "--store", str(tmp_path / "g"), "--stage", "embeddings", "--shard", str(i))
        assert r.returncode == 0, r.stderr
    shards = sorted((tmp_path / "g" / "embeddings").glob("shard-*"))
    stamps = {p.name: p.stat().st_mtime_ns for p in shards}
    train = _shard_workers.gmv_train()
    gen = train[:20] + 0.1
    kw = dict(encoder=_shard_workers.project, k=5, recall=20, index="exact")
    got = GMValuator(**kw).fit(train, store=tmp_path / "g", shard_rows=256).value(gen)
    # Nothing was re-encoded: no shard file rewritten (the driver only updated the manifest).
    assert {p.name: p.stat().st_mtime_ns for p in shards} == stamps
    assert ShardStore(tmp_path / "g" / "embeddings").manifest["shards"][2]["status"] == "done"
    ref = GMValuator(**kw).fit(train, store=tmp_path / "ref", shard_rows=256).value(gen)
    np.testing.assert_array_equal(got.values, ref.values)
    np.testing.assert_array_equal(got.topk_indices, ref.topk_indices)


_GMV_DRIVER = """
import sys
sys.path.insert(0, {tests!r})
import _shard_workers as w
from datacredit.gmvaluator import GMValuator
train = w.gmv_train()
gmv = GMValuator(encoder=w.project_hanging_at(512), k=5, recall=20, index="exact", batch_size=256)
gmv.fit(train, store={path!r}, shard_rows=256)
"""


def test_gmvaluator_fit_killed_mid_stage_resumes(tmp_path):
    """SIGKILL of the driver while GMValuator.fit(store=) encodes shard 2 of 3: the rerun
    encodes only shard 2, and the values equal an uninterrupted run's."""
    from datacredit.gmvaluator import GMValuator

    script = _GMV_DRIVER.format(tests=TESTS, path=str(tmp_path / "g"))
    proc = subprocess.Popen([sys.executable, "-c", script], env=ENV, stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"hanging"
    proc.kill()
    proc.wait()
    assert ShardStore(tmp_path / "g" / "embeddings").missing() == [2]
    seen = []

    def project(batch):
        seen.append(len(batch))
        return _shard_workers.project(batch)

    train = _shard_workers.gmv_train()
    gen = train[:15] + 0.05
    kw = dict(k=5, recall=20, index="exact", batch_size=256)
    got = GMValuator(encoder=project, **kw).fit(train, store=tmp_path / "g", shard_rows=256)
    assert sum(seen) == 3 + (700 - 512)  # the fingerprint's three samples + shard 2
    ref = GMValuator(encoder=_shard_workers.project, **kw).fit(train).value(gen)
    res = got.value(gen)
    np.testing.assert_array_equal(res.values, ref.values)
    np.testing.assert_array_equal(res.topk_indices, ref.topk_indices)


def test_dualda_features_from_the_command_line(tmp_path):
    """DualDA's training features computed by `datacredit shard run` workers (one per shard,
    as SLURM array tasks) are found done by fit(store=...): nothing re-extracted, the same
    fit as a serial in-memory one, and the features read from one memory-mapped file."""
    from datacredit.dualda import DualDA
    from datacredit.dualda.feature_store import FEATURES_STAGE, create_feature_store

    st = create_feature_store(
        tmp_path / "f",
        model="_shard_workers:dualda_model",
        train_data="_shard_workers:dualda_train",
        layer="2",
        batch_size=32,
        shard_rows=256,
    )
    assert st.n_shards == 3 and st.manifest["worker"].endswith(":features_worker")
    r = _cli("status", str(tmp_path / "f"))
    assert r.returncode == 0 and "0/3 shards done" in r.stdout, r.stdout + r.stderr
    for i in range(3):
        r = _cli(
            "run", "--store", str(tmp_path / "f"), "--stage", FEATURES_STAGE, "--shard", str(i)
        )
        assert r.returncode == 0, r.stderr
    shards = sorted((tmp_path / "f").glob("shard-*"))
    stamps = {p.name: p.stat().st_mtime_ns for p in shards}
    model, data = _shard_workers.dualda_model(), _shard_workers.dualda_train()
    kw = dict(layer="2", C=0.1, batch_size=32, progress=False)
    got = DualDA(model, data, **kw).fit(store=tmp_path / "f")
    assert {p.name: p.stat().st_mtime_ns for p in shards} == stamps  # nothing re-extracted
    feats = np.load(tmp_path / "f" / "features.npy", mmap_mode="r")
    ref = DualDA(model, data, **kw).fit()
    np.testing.assert_array_equal(feats, ref.extract(data)[0])
    np.testing.assert_array_equal(got.support, ref.support)
    np.testing.assert_array_equal(got.coef, ref.coef)
    q = data[0][:7]
    np.testing.assert_array_equal(got.attribute(q, top_k=5)[1], ref.attribute(q, top_k=5)[1])
    # Another model's fit on the same store is refused by name, never mixed in.
    other = _shard_workers.dualda_model()
    with torch_no_grad():
        other[2].weight.mul_(2.0)
    with pytest.raises(ValueError, match="another configuration"):
        DualDA(other, data, **kw).fit(store=tmp_path / "f")


def torch_no_grad():
    import torch

    return torch.no_grad()
