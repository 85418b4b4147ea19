"""kill -9 fault injection (issue 26): a chain of SIGKILLs at seeded random moments of
``run_stage``, ``RetrainingHarness.run``, ``SampleBank.generate`` and DualDA's feature store +
surrogate cache, each followed by a resume, ends with exactly the result of an uninterrupted
run: nothing lost, nothing stale, no temporary left.

One child process runs the four resumable workloads in sequence and prints a digest of every
result. The parent runs it once uninterrupted (the reference, and each workload's duration),
then, in a second directory, starts it, waits until it begins a given workload, kills it after
a delay drawn from a fixed seed (uniform over that workload's duration), restarts it, and so
on (every workload at least once), then lets the last run finish. The kill points fall anywhere in the
workloads (inside a write, between a shard file and its marker, in the solver...).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import numpy as np

WORKLOADS = textwrap.dedent(
    r"""
    import hashlib, os, sys, time
    import numpy as np
    root = sys.argv[1]
    print("go", flush=True)

    def digest(*arrays):
        h = hashlib.sha256()
        for a in arrays:
            a = np.ascontiguousarray(a)
            h.update(f"{a.dtype.str}{a.shape}".encode() + a.tobytes())
        return h.hexdigest()[:16]

    out = {}
    print("begin run_stage", flush=True)
    # 1. run_stage: 16 shards of seeded data, each a little slow.
    from datacredit.store import ShardStore
    from datacredit.distributed.executor import run_stage

    def shard_fn(s, r):
        time.sleep(0.01)
        rng = np.random.default_rng([7, s])
        return {"x": rng.standard_normal((r[1] - r[0], 256)).astype(np.float32)}

    st = ShardStore.create(f"{root}/stage", method="fi", stage="s", config={"v": 1},
                           n_rows=1600, shard_rows=100)
    run_stage(st, shard_fn)
    st.verify()
    out["run_stage"] = digest(st.concat("x"))

    print("begin retraining", flush=True)
    # 2. RetrainingHarness.run: least squares on 24 subsets, cached per subset.
    from datacredit.metrics.retraining import RetrainingHarness, random_subsets
    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((300, 20)), rng.standard_normal(300)

    def train(idx, seed):
        time.sleep(0.03)
        return np.linalg.lstsq(X[idx], y[idx], rcond=None)[0]

    h = RetrainingHarness(train, lambda w: X @ w, cache_dir=f"{root}/retrain", progress=False)
    out["retraining"] = digest(h.run(random_subsets(300, 24, 0.5, seed=1), seeds=5))

    print("begin sample_bank", flush=True)
    # 3. SampleBank.generate: 4 labels x 3 chunks, seeded generator.
    from datacredit.surrogateshap.bank import SampleBank

    def gen(label, n, seed):
        time.sleep(0.01)
        return np.random.default_rng(seed).standard_normal((n, 64, 64)).astype(np.float32)

    bank = SampleBank.generate(gen, [0, 1, 2, 3], 30, seed=2, path=f"{root}/bank",
                               batch_size=10, progress=False)
    bank = SampleBank.load(f"{root}/bank")
    out["sample_bank"] = digest(*[np.asarray(bank.samples(lab)) for lab in bank.labels])

    print("begin dualda", flush=True)
    # 4. DualDA: features through a resumable store, the surrogate through its cache.
    import torch
    from torch import nn
    from datacredit import DualDA
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(3, 6, generator=g) * 2
    yy = torch.randint(0, 3, (768,), generator=g)
    xx = centers[yy] + torch.randn(768, 6, generator=g)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    dd = DualDA(model, (xx, yy), layer="2", C=0.1, batch_size=4, progress=False, tol=1e-4,
                cache_dir=f"{root}/dualda-cache")
    dd.fit(store=f"{root}/dualda-features")
    out["dualda"] = digest(dd.support, dd.support_dual_coef, dd.coef)

    leftovers = [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs
                 if f.endswith(".tmp")]
    print("result", sorted(out.items()), "tmp", leftovers, flush=True)
    """
)

ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(sys.path),
    "OMP_NUM_THREADS": "1",
    "PYTHONWARNINGS": "ignore",
}
STAGES = ("run_stage", "retraining", "sample_bank", "dualda")
# (workload, seed of the moment inside it), chained in one directory: every workload once,
# the shard store (the most write-heavy) twice.
KILLS = [(w, 0) for w in STAGES] + [("run_stage", 1)]


def _start(root):
    p = subprocess.Popen(
        [sys.executable, "-c", WORKLOADS, str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    assert p.stdout.readline().strip() == "go", p.stderr.read()
    return p


def _wait_for(p, line):
    while True:
        got = p.stdout.readline()
        if not got or got.strip() == line:
            return bool(got)


def test_kill9_at_random_points_then_resume_gives_the_uninterrupted_result(tmp_path):
    # The uninterrupted run: its result and how long each workload takes.
    p = _start(tmp_path / "reference")
    marks = {}
    for line in p.stdout:
        marks[line.split()[1] if line.startswith("begin") else "end"] = time.monotonic()
        if line.startswith("result"):
            reference = line.strip()
            break
    assert p.wait(timeout=120) == 0, p.stderr.read()
    assert reference.endswith("tmp []"), reference
    ends = [marks[w] for w in STAGES[1:]] + [marks["end"]]
    length = {w: e - marks[w] for w, e in zip(STAGES, ends)}
    root = tmp_path / "killed"
    for workload, seed in KILLS:
        p = _start(root)
        if _wait_for(p, f"begin {workload}"):
            time.sleep(np.random.default_rng(seed).uniform(0.0, length[workload]))
            p.kill()  # SIGKILL: no cleanup of any kind runs
        p.communicate(timeout=60)
    p = _start(root)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err[-3000:]
    (resumed,) = [x.strip() for x in out.splitlines() if x.startswith("result")]
    assert resumed == reference  # the same digests, and no temporary left anywhere
