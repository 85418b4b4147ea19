"""Cases that check the runner itself (``tests/test_bad_inputs.py::test_runner_*``): each
way a case can end, so the harness is shown to turn a dead or stuck child into a failure
of the right case and to go on with the rest of the batch."""

from __future__ import annotations

import ctypes
import os
import sys
import time

from harness.registry import case


@case("selftest.returns", "returns")
def _returns():
    return 1


@case("selftest.value_error")
def _value_error():
    raise ValueError("k must be positive")


@case("selftest.pybind_dump")
def _pybind_dump():
    raise TypeError("f(): incompatible function arguments. The following argument types are")


@case("selftest.index_error")
def _index_error():
    raise IndexError("index 5 is out of bounds")


@case("selftest.segfault")
def _segfault():
    ctypes.string_at(0)


@case("selftest.abort")
def _abort():
    os.abort()


@case("selftest.exit")
def _exit():
    sys.stdout.flush()
    os._exit(3)


@case("selftest.hang", timeout=2.0)
def _hang():
    time.sleep(3600)


@case("selftest.after_the_crashes", "returns")
def _after():
    return 2
