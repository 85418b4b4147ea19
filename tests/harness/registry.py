"""The case table of the bad-input harness.

A case is a zero-argument callable plus what it must do:

- ``"raises"``: raise a clear error: an exception of an accepted type (see
  :data:`ACCEPTED`) with a message (matching ``match`` when given), never pybind11's raw
  "incompatible function arguments" dump;
- ``"returns"``: return normally (the callable itself asserts the answer when there is
  one to check);
- ``"either"``: either of the two, as long as the process survives.

A crash (signal, abort, ``exit``) or a hang (past ``timeout`` seconds) fails every case.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable

# Exceptions that count as a clear error (RuntimeError: wrong object state, e.g. "call
# .train(x) first").  numpy's LinAlgError is a ValueError but says
# nothing about the caller's argument (r18), zipfile.BadZipFile leaks an implementation
# detail (r15): both are rejected by name in :func:`judge`.
ACCEPTED = {"ValueError", "TypeError", "MemoryError", "OSError", "RuntimeError"}
REJECTED_NAMES = {"LinAlgError", "BadZipFile"}
PYBIND_DUMP = "incompatible function arguments"


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    fn: Callable[[], Any]
    expect: str = "raises"  # "raises" | "returns" | "either"
    match: str | None = None  # regex the error message must contain (re.search, case-insensitive)
    timeout: float = 20.0  # seconds before the case counts as hung
    alone: bool = False  # run in a fresh process of its own (address-space limits, big RSS)
    address_space: int | None = None  # RLIMIT_AS (bytes) while the case runs, e.g. 3 GiB


CASES: dict[str, Case] = {}


def case(
    id: str,
    expect: str = "raises",
    *,
    match: str | None = None,
    timeout: float = 20.0,
    alone: bool = False,
    address_space: int | None = None,
) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
    """Decorator registering ``fn`` as case ``id``."""

    def register(fn: Callable[[], Any]) -> Callable[[], Any]:
        add(Case(id, fn, expect, match, timeout, alone or address_space is not None, address_space))
        return fn

    return register


def add(c: Case) -> None:
    if c.expect not in ("raises", "returns", "either"):
        raise ValueError(f"case {c.id}: unknown expect {c.expect!r}")
    if c.id in CASES:
        raise ValueError(f"duplicate case id {c.id}")
    CASES[c.id] = c


def mutations(
    prefix: str,
    call: Callable[..., Any],
    base: Callable[[], dict[str, Any]],
    table: dict[str, list[tuple]],
    *,
    match_arg: bool = False,
) -> None:
    """Register one case per (argument, bad value): ``call(**kwargs)`` with ``base()``'s
    valid keyword arguments and one of them replaced.

    ``table[arg]`` lists ``(label, make, expect)`` or ``(label, make, expect, match)``;
    ``make(kwargs)`` builds the bad value from the valid arguments (so shapes can be
    derived from them).  With ``match_arg`` a "raises" case requires the message to name
    the argument unless the entry gives its own ``match`` (``None``: any message).
    """
    for arg, entries in table.items():
        for entry in entries:
            label, make, expect = entry[:3]

            def fn(arg=arg, make=make):
                kwargs = base()
                if getattr(make, "from_valid", False):
                    kwargs[arg] = make(kwargs[arg])
                else:
                    kwargs[arg] = make(kwargs)
                return call(**kwargs)

            if len(entry) > 3:
                match = entry[3]
            else:
                match = _arg_regex(arg) if (match_arg and expect == "raises") else None
            add(Case(f"{prefix}.{arg}.{label}", fn, expect, match))


def from_valid(make: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Mark ``make`` as a function of the argument's valid value (see :func:`mutations`)."""
    make.from_valid = True
    return make


def _arg_regex(arg: str) -> str:
    return arg.replace("_", "[_ ]")


def judge(c: Case, outcome: dict) -> str | None:
    """``None`` when ``outcome`` (from :func:`harness.runner.run_cases`) is what ``c``
    expects, else the reason it is not."""
    kind = outcome["kind"]
    if kind in ("crashed", "hung"):
        return f"{kind}: {outcome.get('detail', '')}"
    if kind == "returned":
        return (
            None if c.expect in ("returns", "either") else "returned, but must raise a clear error"
        )
    name, msg = outcome["type"], outcome["message"]
    shown = f"raised {outcome['module']}.{name}: {msg}"
    if c.expect == "returns":
        return f"must return, but {shown}\n{outcome.get('detail', '')}"
    if name in REJECTED_NAMES or not ACCEPTED.intersection(outcome["mro"]):
        return f"not a clear error: {shown}\n{outcome.get('detail', '')}"
    if PYBIND_DUMP in msg:
        return f"raw pybind11 argument dump instead of a message naming the argument: {shown}"
    if not msg.strip():
        return f"an error without a message: {shown}"
    if c.match is not None and not re.search(c.match, msg, re.IGNORECASE):
        return f"the message does not name {c.match!r}: {shown}"
    return None
