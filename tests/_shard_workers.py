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
