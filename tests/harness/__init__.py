"""Crash-isolating bad-input harness: every case runs in a child process.

- :mod:`harness.registry` — the :class:`Case` record and the ``case`` / ``mutations``
  helpers that build the case table.
- :mod:`harness.cases` — the cases: every public entry point with wrong dtypes, shapes,
  NaN/inf, empty and huge inputs, out-of-range and wrong-type arguments, and the
  reproducers of issue 11.
- :mod:`harness.runner` — runs cases in child processes (a crash, abort or hang becomes
  an outcome of the case that caused it, not a dead test run).

``tests/test_bad_inputs.py`` turns each case into one pytest test.
"""
