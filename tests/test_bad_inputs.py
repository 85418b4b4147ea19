"""Bad input through every public entry point, each case in a child process.

The cases live in ``tests/harness/cases.py`` (and ``repros.py`` for issue 11's
reproducers); ``tests/harness/runner.py`` runs them two children at a time, so a
segfault, an abort or a hang fails the case that caused it instead of killing pytest.
Run one case with ``pytest tests/test_bad_inputs.py -k 'gram_topk.k.zero'``;
``DATACREDIT_HARNESS_JOBS`` sets the number of children (default 2) and
``DATACREDIT_HARNESS_AS_GIB`` their address-space cap (default 8 GiB).
"""

from __future__ import annotations

import os

import pytest
from harness.cases import CASES
from harness.registry import judge
from harness.runner import run_cases

# Cases that still fail on this branch because their fix lives on another helper's
# branch.  Each is xfail(strict=True): once the fix is merged the case passes and the
# strict xfail turns into a failure, so the lead empties this at merge.
# Value: the branch that fixes it (or "unassigned": no branch fixes it yet).
KNOWN_UNFIXED: dict[str, str] = {}

_results: dict[str, dict] = {}


def _selected(session) -> list[str]:
    return [
        item.callspec.params["case_id"]
        for item in session.items
        if item.originalname == "test_bad_input"
        and item.module.__name__ == __name__
        and hasattr(item, "callspec")
    ]


@pytest.fixture(scope="session")
def outcomes(request):
    """Outcomes of all selected cases, computed once (children run in parallel)."""
    if not _results:
        jobs = int(os.environ.get("DATACREDIT_HARNESS_JOBS", "2"))
        _results.update(run_cases(_selected(request.session), jobs=jobs))
    return _results


def _params():
    for cid in CASES:
        marks = []
        if cid in KNOWN_UNFIXED:
            marks.append(
                pytest.mark.xfail(strict=True, reason=f"fixed on branch {KNOWN_UNFIXED[cid]}")
            )
        yield pytest.param(cid, id=cid, marks=marks)


@pytest.mark.parametrize("case_id", list(_params()))
def test_bad_input(case_id, outcomes):
    problem = judge(CASES[case_id], outcomes[case_id])
    assert problem is None, f"{case_id}: {problem}"


def test_known_unfixed_are_cases():
    assert not set(KNOWN_UNFIXED) - set(CASES), set(KNOWN_UNFIXED) - set(CASES)


def test_runner_isolates_crashes_and_hangs():
    # The runner on cases that crash, abort, exit and hang in one batch: each gets its own
    # outcome and the cases after them still run (in a fresh child).
    from harness import selftest  # noqa: F401  (registers the selftest cases)

    ids = [c for c in CASES if c.startswith("selftest.")]
    out = run_cases(ids, jobs=1, module="harness.selftest")
    kinds = {c: out[c]["kind"] for c in ids}
    assert kinds == {
        "selftest.returns": "returned",
        "selftest.value_error": "raised",
        "selftest.pybind_dump": "raised",
        "selftest.index_error": "raised",
        "selftest.segfault": "crashed",
        "selftest.abort": "crashed",
        "selftest.exit": "crashed",
        "selftest.hang": "hung",
        "selftest.after_the_crashes": "returned",
    }, kinds
    assert "SIGSEGV" in out["selftest.segfault"]["detail"]
    assert "SIGABRT" in out["selftest.abort"]["detail"]
    assert "status 3" in out["selftest.exit"]["detail"]
    verdicts = {c: judge(CASES[c], out[c]) for c in ids}
    assert verdicts["selftest.returns"] is None and verdicts["selftest.value_error"] is None
    assert verdicts["selftest.after_the_crashes"] is None
    for c in ids[2:-1]:  # pybind dump, IndexError, crashes, hang: all failures
        assert verdicts[c] is not None, c
