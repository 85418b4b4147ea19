"""ShardStore: manifest, atomic shards and done markers, configuration mismatch, resume,
memory-mapped reads, checksums; the executor protocol (serial = threads = processes)."""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import subprocess
import sys
import textwrap
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from datacredit.distributed import map_shards, run_stage
from datacredit.store import ShardStore, config_hash, write_shard

CFG = {"seed": 3, "d": 4}


def _square_shard(seed: int, shard: int, rows: tuple[int, int]) -> dict:
    """A pure function of (config, shard): rows of a seeded generator."""
    b, e = rows
    x = np.random.default_rng([seed, shard]).standard_normal((e - b, 4)).astype(np.float32)
    return {"x": x, "ids": np.arange(b, e, dtype=np.int64)}


def _make(path, n_rows=10, shard_rows=4, config=CFG) -> ShardStore:
    return ShardStore.create(
        path, method="test", stage="square", config=config, n_rows=n_rows, shard_rows=shard_rows
    )


def _reference(n_rows=10, shard_rows=4):
    return np.concatenate(
        [
            _square_shard(3, s, (s * shard_rows, min(n_rows, (s + 1) * shard_rows)))["x"]
            for s in range(-(-n_rows // shard_rows))
        ]
    )


def test_manifest_and_shards(tmp_path):
    store = _make(tmp_path / "s")
    assert store.n_shards == 3 and store.missing() == [0, 1, 2]
    assert [store.rows(i) for i in range(3)] == [(0, 4), (4, 8), (8, 10)]
    run_stage(store, partial(_square_shard, 3))
    m = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert m["format_version"] == 1 and m["method"] == "test" and m["stage"] == "square"
    assert m["config"] == CFG and m["config_hash"] == config_hash(CFG)
    assert m["datacredit_version"]
    assert [s["status"] for s in m["shards"]] == ["done"] * 3
    assert [s["rows"] for s in m["shards"]] == [[0, 4], [4, 8], [8, 10]]
    assert m["tensors"] == {
        "x": {"dtype": "<f4", "row_shape": [4]},
        "ids": {"dtype": "<i8", "row_shape": []},
    }
    np.testing.assert_array_equal(store.concat("x"), _reference())
    np.testing.assert_array_equal(store.concat("ids"), np.arange(10))
    # Memory-mapped, read-only views.
    x0 = store.shard(0)["x"]
    assert isinstance(x0.base, np.memmap) or isinstance(x0.base.base, np.memmap)
    assert not x0.flags.writeable
    idx = np.array([[9, 0], [4, 5]])
    np.testing.assert_array_equal(store.take("x", idx), _reference()[idx])
    store.verify()
    assert "3/3 shards done" in repr(ShardStore(tmp_path / "s"))


def test_other_configuration_is_an_error_naming_the_difference(tmp_path):
    _make(tmp_path / "s")
    with pytest.raises(ValueError, match=r"config\['seed'\]: store has 3, requested 4"):
        _make(tmp_path / "s", config={"seed": 4, "d": 4})
    with pytest.raises(ValueError, match="n_rows: store has 10, requested 11"):
        _make(tmp_path / "s", n_rows=11)
    with pytest.raises(ValueError, match="shard_rows"):
        _make(tmp_path / "s", shard_rows=5)
    with pytest.raises(ValueError, match="stage"):
        ShardStore.create(
            tmp_path / "s", method="test", stage="other", config=CFG, n_rows=10, shard_rows=4
        )
    _make(tmp_path / "s")  # same configuration: reopened


def test_resume_computes_only_missing_shards(tmp_path):
    store = _make(tmp_path / "s")
    calls = []

    def fn(shard, rows):
        calls.append(shard)
        return _square_shard(3, shard, rows)

    # A run that dies after shard 0 (an exception here; a SIGKILL in the CLI test).
    def dying(shard, rows):
        if shard == 1:
            raise RuntimeError("killed")
        return fn(shard, rows)

    with pytest.raises(RuntimeError, match="killed"):
        run_stage(store, dying)
    assert store.missing() == [1, 2]
    assert json.loads((tmp_path / "s" / "manifest.json").read_text())["shards"][0]["status"] == (
        "done"
    )
    calls.clear()
    run_stage(store, fn)
    assert calls == [1, 2]
    np.testing.assert_array_equal(store.concat("x"), _reference())


def test_corruption_and_bad_input(tmp_path):
    store = _make(tmp_path / "s")
    run_stage(store, partial(_square_shard, 3))
    f = tmp_path / "s" / "shard-00001.safetensors"
    raw = bytearray(f.read_bytes())
    raw[-1] ^= 0xFF
    f.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="checksum mismatch"):
        ShardStore(tmp_path / "s").verify()
    f.write_bytes(bytes(raw[:20]))
    with pytest.raises(ValueError, match="checksum mismatch.*recomputes this shard"):
        ShardStore(tmp_path / "s").shard(1)
    with pytest.raises(ValueError, match="out of range"):
        store.shard(3)
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        ShardStore(tmp_path / "nothing")
    with pytest.raises(TypeError, match="JSON"):
        _make(tmp_path / "t", config={"f": object()})
    with pytest.raises(ValueError, match="shard_rows"):
        _make(tmp_path / "t", shard_rows=0)
    with pytest.raises(KeyError, match="no tensor 'y'"):
        store.take("y", [0])
    with pytest.raises(TypeError, match="must return a non-empty dict"):
        write_shard(tmp_path / "s", 0, (0, 4), np.zeros(4))
    with pytest.raises(ValueError, match="expected 4 rows"):
        write_shard(tmp_path / "s", 0, (0, 4), {"x": np.zeros(3)})
    (tmp_path / "s" / "manifest.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        ShardStore(tmp_path / "s")


def test_shards_of_another_configuration_are_never_adopted(tmp_path):
    run_stage(_make(tmp_path / "s"), partial(_square_shard, 3))
    (tmp_path / "s" / "manifest.json").unlink()  # shards left behind, manifest lost
    with pytest.raises(ValueError, match="written by another configuration"):
        _make(tmp_path / "s", config={"seed": 4, "d": 4})
    again = _make(tmp_path / "s")  # the same configuration adopts them
    assert again.complete
    np.testing.assert_array_equal(again.concat("x"), _reference())


def test_inconsistent_shards_are_refused(tmp_path):
    store = _make(tmp_path / "s")

    def fn(shard, rows):
        out = _square_shard(3, shard, rows)
        if shard == 2:
            out["x"] = out["x"].astype(np.float64)
        return out

    with pytest.raises(ValueError, match="shard 2 holds tensors"):
        run_stage(store, fn)


def test_results_identical_whatever_the_executor(tmp_path):
    ref = _make(tmp_path / "serial", n_rows=50, shard_rows=7)
    run_stage(ref, partial(_square_shard, 3))
    with cf.ThreadPoolExecutor(2) as ex:
        s = run_stage(
            _make(tmp_path / "threads", n_rows=50, shard_rows=7),
            partial(_square_shard, 3),
            executor=ex,
        )
        np.testing.assert_array_equal(s.concat("x"), ref.concat("x"))
        assert map_shards(lambda i: i * i, 5, executor=ex) == [0, 1, 4, 9, 16]
    with cf.ProcessPoolExecutor(2) as ex:
        s = run_stage(
            _make(tmp_path / "procs", n_rows=50, shard_rows=7),
            partial(_square_shard, 3),
            executor=ex,
        )
        np.testing.assert_array_equal(s.concat("x"), ref.concat("x"))
    for i in range(ref.n_shards):
        a = (tmp_path / "serial" / f"shard-{i:05d}.safetensors").read_bytes()
        assert a == (tmp_path / "procs" / f"shard-{i:05d}.safetensors").read_bytes()
    with pytest.raises(TypeError, match="executor must be"):
        map_shards(lambda i: i, 2, executor="ray")


_SLOW_STAGE = textwrap.dedent(
    """
    import sys, time
    from functools import partial
    sys.path.insert(0, {tests!r})
    from test_store import _make, _square_shard
    from datacredit.distributed import run_stage

    def fn(shard, rows):
        if shard == 2:
            print("at-shard-2", flush=True)
            time.sleep(60)  # killed here
        return _square_shard(3, shard, rows)

    run_stage(_make({path!r}, n_rows=20, shard_rows=4), fn)
    """
)


def test_driver_killed_mid_stage_resumes(tmp_path):
    """SIGKILL of the process running the stage: the rerun computes only the missing shards."""
    path = str(tmp_path / "s")
    script = _SLOW_STAGE.format(tests=str(Path(__file__).parent), path=path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env)
    line = proc.stdout.readline()
    assert line.strip() == b"at-shard-2"
    proc.kill()  # SIGKILL
    proc.wait()
    store = ShardStore(path)
    assert store.missing() == [2, 3, 4]
    calls = []

    def fn(shard, rows):
        calls.append(shard)
        return _square_shard(3, shard, rows)

    run_stage(store, fn)
    assert calls == [2, 3, 4]
    np.testing.assert_array_equal(store.concat("x"), _reference(20, 4))
    assert not [p for p in os.listdir(path) if p.endswith(".tmp")]


def test_ray_executor_without_ray_says_how_to_install(monkeypatch):
    from datacredit.distributed import RayExecutor

    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(ImportError, match=r"pip install 'datacredit\[ray\]'"):
        RayExecutor()
