"""Ray as the executor: every stage equals its serial result bit for bit, a killed actor is
replaced and the stage completes, an interrupted run resumes. One local Ray runtime
(num_cpus=2) for the module; skipped when Ray is not installed."""

from __future__ import annotations

import os
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from datacredit.distributed import RayExecutor, run_stage  # noqa: E402
from datacredit.store import ShardStore  # noqa: E402

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))
import _shard_workers  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def runtime():
    # Workers import datacredit and the tests' helpers from the same paths as this process.
    paths = [str(Path(p).resolve()) for p in sys.path if p and Path(p).is_dir()]
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(paths)}},
    )
    yield
    ray.shutdown()


def _store(path, n_rows=18):
    return ShardStore.create(
        path, method="test", stage="square", config={"seed": 5}, n_rows=n_rows, shard_rows=4
    )


def _same_files(a: Path, b: Path, n: int) -> None:
    for i in range(n):
        name = f"shard-{i:05d}.safetensors"
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_tasks_and_actors_equal_serial(tmp_path):
    fn = partial(_shard_workers.square, {"seed": 5})
    serial = run_stage(_store(tmp_path / "serial"), fn)
    for name, ex in (("tasks", RayExecutor()), ("actors", RayExecutor(actors=2))):
        got = run_stage(_store(tmp_path / name), fn, executor=ex, progress=True)
        np.testing.assert_array_equal(got.concat("x"), serial.concat("x"))
        _same_files(tmp_path / name, tmp_path / "serial", 5)


def test_killed_actor_is_replaced(tmp_path):
    fn = partial(_shard_workers.square_dies_once, str(tmp_path), {"seed": 5})
    store = run_stage(_store(tmp_path / "s"), fn, executor=RayExecutor(actors=2, max_retries=2))
    assert (tmp_path / "killed-2").exists()  # the actor holding shard 2 did die
    serial = run_stage(_store(tmp_path / "serial"), partial(_shard_workers.square, {"seed": 5}))
    np.testing.assert_array_equal(store.concat("x"), serial.concat("x"))


def test_interrupted_run_resumes(tmp_path):
    store = _store(tmp_path / "s")
    with pytest.raises(Exception, match="interrupted at shard 3"):
        run_stage(store, partial(_shard_workers.square_fails, {"seed": 5}), executor=RayExecutor())
    assert 3 in store.missing()
    done = set(range(5)) - set(store.missing())
    calls = []

    def counting(shard, rows):
        calls.append(shard)
        return _shard_workers.square({"seed": 5}, shard, rows)

    run_stage(store, counting)
    assert set(calls) == set(range(5)) - done
    serial = run_stage(_store(tmp_path / "serial"), partial(_shard_workers.square, {"seed": 5}))
    _same_files(tmp_path / "s", tmp_path / "serial", 5)
    assert serial.complete


def test_gmvaluator_on_ray_equals_serial(tmp_path):
    from test_gmvaluator_store import _data, project

    from datacredit.gmvaluator import GMValuator

    train, gen = _data(n=2000, n_gen=40)
    kw = dict(encoder=project, k=8, recall=24, index="ivf", pq_nlist=20, pq_nprobe=5)
    serial = GMValuator(**kw).fit(train, store=tmp_path / "a", shard_rows=500).value(gen)
    ex = RayExecutor()
    got = GMValuator(**kw).fit(train, store=tmp_path / "b", shard_rows=500, executor=ex)
    got = got.value(gen)
    np.testing.assert_array_equal(got.topk_indices, serial.topk_indices)
    np.testing.assert_array_equal(got.values, serial.values)
    for name in ("embeddings", "ivf-nlist20-seed0/lists"):
        _same_files(tmp_path / "a" / name, tmp_path / "b" / name, 4)


def test_surrogateshap_stages_on_ray_equal_serial(tmp_path):
    from test_distributed_stages import _gen, _square

    from datacredit.surrogateshap import ProxyGame, SampleBank
    from datacredit.surrogateshap import utilities as U

    ex = RayExecutor()
    ref = SampleBank.generate(_gen, [0, 1, 2], 10, seed=3, batch_size=4, progress=False)
    got = SampleBank.generate(_gen, [0, 1, 2], 10, seed=3, batch_size=4, executor=ex)
    disk = SampleBank.generate(
        _gen, [0, 1, 2], 10, seed=3, batch_size=4, path=tmp_path / "b", executor=ex
    )
    mapped = ref.map(_square, batch_size=3, executor=ex)
    for lab in [0, 1, 2]:
        np.testing.assert_array_equal(got.samples(lab), ref.samples(lab))
        np.testing.assert_array_equal(disk.samples(lab), ref.samples(lab))
        np.testing.assert_array_equal(
            mapped.samples(lab), ref.map(_square, batch_size=3).samples(lab)
        )
    rng = np.random.default_rng(0)
    R = rng.normal(size=(40, 3))
    game = ProxyGame(
        ref, {p: [p, (p + 1) % 3] for p in range(3)}, U.FID(None, R), label_weights="uniform"
    )
    Z = np.array([[1, 0, 0], [0, 1, 1], [1, 1, 1], [0, 0, 1], [1, 0, 1]], dtype=bool)
    np.testing.assert_array_equal(game(Z, executor=ex, batch_size=2), game(Z))


@pytest.mark.filterwarnings("ignore:the SVM solver stopped:RuntimeWarning")
def test_dualda_stages_on_ray_equal_serial(tmp_path):
    torch = pytest.importorskip("torch")
    from test_distributed_stages import MLP

    from datacredit import DualDA
    from datacredit.dualda import stages as dualda_stages

    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 6, generator=g)
    y = torch.randint(0, 3, (96,), generator=g)
    torch.manual_seed(0)
    dd = DualDA(MLP().eval(), (x, y), layer="fc", C=0.1, batch_size=16, progress=False)
    ex = RayExecutor()
    ref = dd.extract((x, y))
    got = dualda_stages.extract_features(dd, (x, y), shard_rows=32, executor=ex)
    for a, b in zip(got, ref):
        np.testing.assert_array_equal(a, b)
    dd.fit()
    xt = torch.randn(20, 6, generator=g)
    np.testing.assert_array_equal(
        dd.attribute(xt, executor=ex, shard_rows=8), dd.attribute(xt, shard_rows=8)
    )


@pytest.mark.parametrize("actors", [None, 2])
def test_nothing_writes_after_a_failed_run_returns(tmp_path, actors):
    """When a shard fails, the shards still running are cancelled (or finished) before the
    error reaches the caller: the store does not change behind its back afterwards."""
    import time

    store = _store(tmp_path / "s")
    fn = partial(_shard_workers.fail_fast_others_slow, {"seed": 5})
    with pytest.raises(Exception, match="interrupted at shard 0"):
        run_stage(store, fn, executor=RayExecutor(actors=actors))
    seen = sorted(p.name for p in (tmp_path / "s").iterdir())
    time.sleep(1.5)
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == seen
