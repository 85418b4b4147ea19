"""Every sharded stage gives the serial result: DualDA features and attribution, SampleBank
generation and transform, ProxyGame utilities (threads and processes vs serial)."""

from __future__ import annotations

import concurrent.futures as cf
import json

import numpy as np
import pytest

from datacredit.dualda import stages as dualda_stages
from datacredit.store import ShardStore
from datacredit.surrogateshap import ProxyGame, SampleBank
from datacredit.surrogateshap import utilities as U

torch = pytest.importorskip("torch")
nn = torch.nn


def _gen(label, n, seed):
    rng = np.random.default_rng(seed)
    return rng.normal(loc=float(label), size=(n, 3)).astype(np.float32)


class _Counting:
    """``_gen`` that records the labels it is called with."""

    def __init__(self):
        self.calls = []

    def __call__(self, label, n, seed):
        self.calls.append(label)
        return _gen(label, n, seed)


def _square(x):
    return np.asarray(x) ** 2


@pytest.fixture(scope="module")
def pool():
    with cf.ThreadPoolExecutor(2) as ex:
        yield ex


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU())
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(self.body(x))


@pytest.fixture(scope="module")
def dualda_setup():
    from datacredit import DualDA

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(3, 6, generator=g) * 2
    y = torch.randint(0, 3, (200,), generator=g)
    x = centers[y] + torch.randn(200, 6, generator=g)
    xt = centers[torch.randint(0, 3, (37,), generator=g)] + torch.randn(37, 6, generator=g)
    model = MLP().eval()

    def make():
        return DualDA(model, (x, y), layer="fc", C=0.1, batch_size=16, progress=False, tol=1e-5)

    return make, x, y, xt


def test_dualda_features_sharded_equal_serial(dualda_setup, pool, tmp_path):
    make, x, y, _ = dualda_setup
    dd = make()
    ref = dd.extract((x, y), desc="train")
    for kw in (
        {"executor": pool},
        {"store": tmp_path / "f"},
        {"store": tmp_path / "g", "executor": pool},
    ):
        got = dualda_stages.extract_features(dd, (x, y), shard_rows=48, **kw)
        for a, b in zip(got, ref):
            np.testing.assert_array_equal(a, b)
    st = ShardStore(tmp_path / "f")
    assert st.n_shards == 5 and st.complete and st.manifest["stage"] == "features-train"
    # Same store, other model weights: refused, naming the fingerprint.
    other = make()
    other.model = MLP().eval()
    with pytest.raises(ValueError, match="fingerprint"):
        dualda_stages.extract_features(other, (x, y), shard_rows=48, store=tmp_path / "f")
    with pytest.raises(ValueError, match="multiple of batch_size"):
        dualda_stages.extract_features(dd, (x, y), shard_rows=20)


@pytest.mark.filterwarnings("ignore:the SVM solver stopped:RuntimeWarning")
def test_dualda_fit_and_attribute_through_executor(dualda_setup, pool, tmp_path):
    make, _, _, xt = dualda_setup
    serial = make().fit()
    sharded = make().fit(executor=pool, store=tmp_path / "f")
    np.testing.assert_array_equal(sharded.support, serial.support)
    np.testing.assert_array_equal(sharded.support_dual_coef, serial.support_dual_coef)
    dense = serial.attribute(xt, shard_rows=8)  # the serial executor, same shards
    np.testing.assert_array_equal(serial.attribute(xt, executor=pool, shard_rows=8), dense)
    # One unsharded call: the forward pass sees another batch size (float32 rounding only).
    whole = serial.attribute(xt)
    eps = np.finfo(np.float32).eps
    np.testing.assert_allclose(dense, whole, rtol=0, atol=64 * eps * np.abs(whole).max())
    vals, idx = serial.attribute(xt, top_k=5, shard_rows=8)
    v2, i2 = serial.attribute(xt, top_k=5, executor=pool, shard_rows=8)
    np.testing.assert_array_equal(v2, vals)
    np.testing.assert_array_equal(i2, idx)
    np.testing.assert_allclose(
        vals, np.take_along_axis(dense, idx, 1), rtol=0, atol=64 * eps * np.abs(whole).max()
    )
    t = np.arange(37) % 3
    np.testing.assert_array_equal(
        serial.attribute(xt, t, executor=pool, shard_rows=8), serial.attribute(xt, t, shard_rows=8)
    )
    with pytest.raises(ValueError, match="targets must be 37"):
        serial.attribute(xt, t[:5], executor=pool)


def test_sample_bank_sharded_equal_serial(pool, tmp_path):
    ref = SampleBank.generate(_gen, [0, 1, 2], 10, seed=3, batch_size=4, progress=False)
    mem = SampleBank.generate(
        _gen, [0, 1, 2], 10, seed=3, batch_size=4, progress=False, executor=pool
    )
    with cf.ProcessPoolExecutor(2) as procs:
        disk = SampleBank.generate(
            _gen, [0, 1, 2], 10, seed=3, batch_size=4, path=tmp_path / "b", executor=procs
        )
    for lab in [0, 1, 2]:
        np.testing.assert_array_equal(mem.samples_for(lab), ref.samples_for(lab))
        np.testing.assert_array_equal(disk.samples_for(lab), ref.samples_for(lab))
    np.testing.assert_array_equal(
        SampleBank.load(tmp_path / "b").samples_for(1), ref.samples_for(1)
    )
    with pytest.raises(ValueError, match="different bank"):
        SampleBank.generate(
            _gen, [0, 1], 10, seed=3, path=tmp_path / "b", batch_size=4, executor=pool
        )
    # Resume: only the chunks without a part file are generated (the same generator class:
    # the manifest names it, and another generator would be refused).
    SampleBank.generate(
        _Counting(), [5, 6], 10, seed=1, batch_size=4, path=tmp_path / "c", executor=pool
    )
    (tmp_path / "c" / "label1.npy").unlink()
    counting = _Counting()
    again = SampleBank.generate(
        counting, [5, 6], 10, seed=1, batch_size=4, path=tmp_path / "c", executor=pool
    )
    assert counting.calls == [5, 6, 6, 6]  # label 5's first chunk, to check it; label 6
    ref2 = SampleBank.generate(_gen, [5, 6], 10, seed=1, batch_size=4, progress=False)
    np.testing.assert_array_equal(again.samples_for(6), ref2.samples_for(6))
    # The feature transform, one shard per label.
    got = ref.map(_square, batch_size=3, executor=pool)
    want = ref.map(_square, batch_size=3)
    for lab in [0, 1, 2]:
        np.testing.assert_array_equal(got.samples_for(lab), want.samples_for(lab))


class _Shifted:
    """``_gen`` + ``shift``: two instances share one name, as two checkpoints of one model."""

    def __init__(self, shift=0.0, fail_after=None, watch=None):
        self.shift, self.fail_after, self.watch, self.calls = shift, fail_after, watch, 0
        self.seen = []  # the manifest's meta as each call found it (None: no manifest yet)

    def __call__(self, label, n, seed):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("worker killed")
        if self.watch is not None:
            man = self.watch / "bank.json"
            self.seen.append(json.loads(man.read_text())["meta"] if man.exists() else None)
        return _gen(label, n, seed) + self.shift


def _files(d):
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_bank_chunks_on_disk_are_always_attributable(pool, tmp_path):
    """Issue 15: the executor path's workers wrote chunks before any manifest named their
    generator, so a driver killed before its first manifest write left chunks that a resume
    with another generator adopted."""
    from datacredit.surrogateshap.stages import _generate_chunk

    labels, chunks = [0, 1], [(0, 4), (4, 4), (8, 2)]
    kw = dict(seed=3, batch_size=4, progress=False)
    # chunks written with no manifest (the state such a kill left): refused, left as they were
    d = tmp_path / "orphans"
    d.mkdir()
    for shard in (1, 2, 4):
        _generate_chunk(_gen, None, labels, chunks, 3, str(d), shard)
    before = _files(d)
    for executor in (pool, None):
        with pytest.raises(ValueError, match="no manifest bank.json"):
            SampleBank.generate(_Shifted(5.0), labels, 10, path=d, executor=executor, **kw)
    assert _files(d) == before
    # every chunk a worker writes finds the manifest naming its generator on disk (with the
    # first chunk's digest; with a fingerprint, that fingerprint), so none is unattributed
    name = "test_distributed_stages._Shifted"
    for fingerprint, executor in [(None, pool), ("model-v1", pool), (None, None)]:
        d = tmp_path / f"watched-{fingerprint}-{executor is None}"
        gen = _Shifted(watch=d)
        SampleBank.generate(
            gen, labels, 10, path=d, executor=executor, fingerprint=fingerprint, **kw
        )
        first_check = 1 if fingerprint is None else 0  # chunk 0 made to record its digest
        assert gen.calls == 6 and gen.seen[:first_check] == [None] * first_check
        for meta in gen.seen[first_check:]:
            assert meta["generator"] == name and meta["fingerprint"] == fingerprint
            assert fingerprint is not None or len(meta["first_chunk_sha256"]) == 64
    # a run killed mid-way, then resumed with another model under the same name: refused
    # before any worker writes (the first chunk is regenerated and compared first)
    d = tmp_path / "killed"
    with pytest.raises(RuntimeError, match="worker killed"):
        SampleBank.generate(_Shifted(fail_after=3), labels, 10, path=d, executor=pool, **kw)
    before = _files(d)
    assert "bank.json" in before and any(n.startswith("label") for n in before)
    with pytest.raises(ValueError, match="does not reproduce"):
        SampleBank.generate(_Shifted(5.0), labels, 10, path=d, executor=pool, **kw)
    assert _files(d) == before
    # the same model resumes to the serial bank
    got = SampleBank.generate(_Shifted(), labels, 10, path=d, executor=pool, **kw)
    ref = SampleBank.generate(_gen, labels, 10, **kw)
    for lab in labels:
        np.testing.assert_array_equal(got.samples_for(lab), ref.samples_for(lab))


def test_proxy_game_utilities_batched(pool):
    rng = np.random.default_rng(0)
    bank = SampleBank({lab: rng.normal(loc=lab, size=(30, 3)) for lab in range(5)})
    R = rng.normal(size=(40, 3))
    game = ProxyGame(
        bank, {p: [p, (p + 1) % 5] for p in range(5)}, U.FID(None, R), label_weights="uniform"
    )
    Z = rng.random((23, 5)) < 0.5
    Z[Z.sum(1) == 0, 0] = True
    whole = game(Z)
    threads = game(Z, executor=pool, batch_size=4)
    with cf.ProcessPoolExecutor(2) as procs:
        procs_out = game(Z, executor=procs, batch_size=4)
    np.testing.assert_array_equal(threads, procs_out)
    # Each coalition's utility is computed on its own: batching changes nothing.
    np.testing.assert_array_equal(threads, whole)
    with pytest.raises(ValueError, match="Z must have shape"):
        game(Z[:, :3], executor=pool)
    with pytest.raises(ValueError, match="batch_size"):
        game(Z, executor=pool, batch_size=0)


def test_thread_pool_run_waits_for_running_shards_before_raising(tmp_path):
    """concurrent.futures: running shards cannot be cancelled, so the failed run waits for
    them; nothing is written into the store after the error has reached the caller."""
    import time
    from concurrent.futures import ThreadPoolExecutor
    from functools import partial

    import _shard_workers

    from datacredit.distributed import run_stage
    from datacredit.store import ShardStore

    store = ShardStore.create(
        tmp_path / "s", method="test", stage="square", config={"seed": 5}, n_rows=12, shard_rows=4
    )
    fn = partial(_shard_workers.fail_fast_others_slow, {"seed": 5})
    with ThreadPoolExecutor(3) as pool:
        with pytest.raises(RuntimeError, match="interrupted at shard 0"):
            run_stage(store, fn, executor=pool)
        seen = sorted(p.name for p in (tmp_path / "s").iterdir())
        time.sleep(1.0)
        assert sorted(p.name for p in (tmp_path / "s").iterdir()) == seen
    assert 0 in store.missing()  # shards not started yet were cancelled, also fine
