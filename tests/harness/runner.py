"""Runs harness cases in child processes, so that a crash or a hang is an outcome.

Parent side: :func:`run_cases` splits the cases over ``jobs`` children (a fresh Python
each, never a fork: forking a process that already ran OpenMP or BLAS threads can
deadlock).  A child runs its cases one after the other and reports each on a private
pipe: ``S id`` before and ``R {json}`` after.  When the child dies or a case runs past its
timeout, the case that was started and not reported is the culprit: it gets the crash or
hang outcome, the child is replaced, and the rest of the batch goes on in the new child.
Cases marked ``alone`` get a child of their own.

Child side (``python runner.py --child MODULE ID...``): imports ``MODULE`` (which
registers the cases, :mod:`harness.cases` by default) and runs the given ids.  Everything the library prints goes to stderr; the protocol uses a duplicate
of the original stdout.
"""

from __future__ import annotations

import importlib
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # `harness` importable in the child too
from harness.registry import CASES  # noqa: E402

# One outcome per case: {"kind": "returned" | "raised" | "crashed" | "hung",
#  "type": exception class, "module": its module, "message": str, "detail": str}


def run_cases(
    ids: list[str], *, jobs: int = 2, batch: int = 120, module: str = "harness.cases"
) -> dict[str, dict]:
    """Outcome of every case in ``ids`` (in child processes; ``jobs`` at a time).

    Batches of ``batch`` consecutive cases (one entry point's cases share imports) are
    handed to whichever child is free, the ``alone`` cases (the slow ones) first.
    ``module`` is the module whose import registers the cases.
    """
    importlib.import_module(module)

    alone = [i for i in ids if CASES[i].alone]
    shared = [i for i in ids if not CASES[i].alone]
    batches = [[i] for i in alone]
    batches += [shared[j : j + batch] for j in range(0, len(shared), batch)]
    timeouts = {i: CASES[i].timeout for i in ids}
    results: dict[str, dict] = {}
    lock = threading.Lock()
    queue = list(batches)

    def worker() -> None:
        while True:
            with lock:
                if not queue:
                    return
                batch = queue.pop(0)
            out = _run_batch(batch, timeouts, module)
            with lock:
                results.update(out)

    threads = [threading.Thread(target=worker) for _ in range(max(1, jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def _run_batch(batch: list[str], timeouts: dict[str, float], module: str) -> dict[str, dict]:
    results: dict[str, dict] = {}
    pending = list(batch)
    while pending:
        results.update(_run_child(pending, timeouts, module))
        pending = [i for i in pending if i not in results]
    return results


def _run_child(ids: list[str], timeouts: dict[str, float], module: str) -> dict[str, dict]:
    """Run ``ids`` in one child until it finishes, dies or hangs; returns the outcomes
    known (the culprit of a death or hang included)."""
    env = dict(os.environ, PYTHONFAULTHANDLER="1")
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "runner.py"), "--child", module, *ids],
            stdout=subprocess.PIPE,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        results: dict[str, dict] = {}
        current, started = None, time.monotonic()
        buf = b""
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        eof = False
        any_started = False
        while not eof:
            limit = timeouts[current] if current else 600.0  # import time is bounded too
            wait = started + limit - time.monotonic()
            if wait <= 0:
                _kill(proc)
                if current is None:  # stuck before the first case: blame the first one
                    current = next(i for i in ids if i not in results)
                results[current] = {
                    "kind": "hung",
                    "detail": f"no result after {limit:.0f} s\n" + _tail(err),
                }
                return results
            if not sel.select(timeout=min(wait, 1.0)):
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                eof = True
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                tag, _, rest = line.decode("utf-8", "replace").partition(" ")
                if tag == "S":
                    current, started = rest, time.monotonic()
                    any_started = True
                elif tag == "R":
                    out = json.loads(rest)
                    results[out.pop("id")] = out
                    current, started = None, time.monotonic()
        sel.close()
        rc = proc.wait()
        missing = [i for i in ids if i not in results]
        if missing and not any_started:
            # died before its first case (an import failed): blame the batch, not one
            # case at a time, which would restart a child per case
            detail = f"child process {_describe(rc)} before running any case\n" + _tail(err)
            return {i: {"kind": "crashed", "detail": detail} for i in missing}
        if missing:
            culprit = current if current in missing else missing[0]
            results[culprit] = {
                "kind": "crashed",
                "detail": f"child process {_describe(rc)} while running this case\n" + _tail(err),
            }
        return results


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _describe(rc: int) -> str:
    if rc < 0:
        try:
            return f"died of {signal.Signals(-rc).name}"
        except ValueError:
            return f"died of signal {-rc}"
    return f"exited with status {rc}"


def _tail(f, n: int = 3000) -> str:
    f.flush()
    f.seek(0)
    text = f.read().decode("utf-8", "replace")
    return text[-n:]


# ----------------------------------------------------------------------------- child side


def _child(module: str, ids: list[str]) -> None:
    import resource
    import traceback
    import warnings

    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # library output goes to stderr
    sys.stdout = sys.stderr
    warnings.simplefilter("ignore")
    importlib.import_module(module)

    # A runaway allocation must not take the (shared) machine down: cap the child's
    # address space (torch and friends map about 4 GiB).  A case may lower it further.
    cap = int(float(os.environ.get("DATACREDIT_HARNESS_AS_GIB", "8")) * (1 << 30))
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY or soft > cap:
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    for cid in ids:
        c = CASES[cid]
        proto.write(f"S {cid}\n")
        old = resource.getrlimit(resource.RLIMIT_AS)
        if c.address_space is not None:
            resource.setrlimit(resource.RLIMIT_AS, (c.address_space, old[1]))
        t0 = time.perf_counter()
        try:
            c.fn()
            out = {"kind": "returned"}
        except BaseException as exc:  # noqa: BLE001 - every outcome is reported
            out = {
                "kind": "raised",
                "type": type(exc).__name__,
                "module": type(exc).__module__,
                "mro": [k.__name__ for k in type(exc).__mro__],
                "message": str(exc),
                "detail": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[
                    -3000:
                ],
            }
        finally:
            if c.address_space is not None:
                resource.setrlimit(resource.RLIMIT_AS, old)
        out["id"] = cid
        out["seconds"] = round(time.perf_counter() - t0, 3)
        proto.write("R " + json.dumps(out) + "\n")
    proto.close()


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] != "--child":
        sys.exit("usage: runner.py --child MODULE CASE_ID...")
    _child(sys.argv[2], sys.argv[3:])
