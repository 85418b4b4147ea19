"""Worker functions for the shard tests (importable by `datacredit shard run` subprocesses)."""

from __future__ import annotations

import os
import signal
import sys
import time

import numpy as np


def square(config: dict, shard: int, rows: tuple[int, int]) -> dict:
    """Rows of a seeded generator, a pure function of (config, shard).

    With DATACREDIT_TEST_HANG=<shard> it announces itself and hangs on that shard (the test
    SIGKILLs it); with DATACREDIT_TEST_SIGKILL=<dir> a process-pool worker kills itself on
    shard 2 the first time (a marker file in <dir> remembers it).
    """
    if os.environ.get("DATACREDIT_TEST_HANG") == str(shard):
        print("hanging", flush=True)
        time.sleep(120)
    flag = os.environ.get("DATACREDIT_TEST_SIGKILL")
    if flag and shard == 2 and not os.path.exists(os.path.join(flag, "killed")):
        open(os.path.join(flag, "killed"), "w").close()
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    b, e = rows
    x = np.random.default_rng([config["seed"], shard]).standard_normal((e - b, 3))
    return {"x": x.astype(np.float32), "ids": np.arange(b, e, dtype=np.int64)}


def square_dies_once(flag_dir: str, config: dict, shard: int, rows: tuple[int, int]) -> dict:
    """As :func:`square`, but the process computing shard 2 SIGKILLs itself the first time."""
    flag = os.path.join(flag_dir, f"killed-{shard}")
    if shard == 2 and not os.path.exists(flag):
        open(flag, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return square(config, shard, rows)


def square_fails(config: dict, shard: int, rows: tuple[int, int]) -> dict:
    """As :func:`square`, but shard 3 raises (an interrupted run)."""
    if shard == 3:
        raise RuntimeError("interrupted at shard 3")
    return square(config, shard, rows)


P = np.random.default_rng(7).standard_normal((16, 24)).astype(np.float32)


def project(batch):
    """A deterministic encoder (fixed random projection 16 -> 24, tanh)."""
    return np.tanh(np.asarray(batch, np.float32) @ P / 4)


def gmv_encoder():
    """Factory of the encoder, for `datacredit shard run` workers."""
    return project


def gmv_train():
    """Factory of the training inputs, for `datacredit shard run` workers."""
    return np.random.default_rng(11).standard_normal((700, 16)).astype(np.float32)


def project_hanging_at(row: int):
    """`project`, but it announces itself and hangs on a batch starting with training row
    ``row`` of :func:`gmv_train` (recognised by content)."""
    marker = gmv_train()[row]

    def encode(batch):
        if len(batch) > 1 and np.array_equal(np.asarray(batch)[0], marker):
            print("hanging", flush=True)
            time.sleep(120)
        return project(batch)

    encode.__name__ = "project"  # the same encoder description as `project`
    return encode


def fail_fast_others_slow(config: dict, shard: int, rows: tuple[int, int]) -> dict:
    """Shard 0 raises at once; the others take 0.6 s before they return (and are written)."""
    if shard == 0:
        raise RuntimeError("interrupted at shard 0")
    time.sleep(0.6)
    return square(config, shard, rows)


def dualda_model():
    """A small seeded torch classifier (the same weights in every process)."""
    import torch

    torch.manual_seed(3)
    model = torch.nn.Sequential(
        torch.nn.Linear(6, 12), torch.nn.ReLU(), torch.nn.Linear(12, 4)
    ).eval()
    return model


def dualda_train():
    """600 labelled rows of four Gaussian blobs: an (X, y) pair."""
    import torch

    g = torch.Generator().manual_seed(11)
    y = torch.randint(0, 4, (600,), generator=g)
    centers = torch.randn(4, 6, generator=g) * 2.0
    return centers[y] + torch.randn(600, 6, generator=g), y
