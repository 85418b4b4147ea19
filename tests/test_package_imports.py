"""`import datacredit` stays light; subpackages are reachable as attributes, lazily."""

from __future__ import annotations

import subprocess
import sys

import datacredit


def test_subpackages_are_lazy_attributes_without_torch():
    code = """
import sys, datacredit
names = datacredit._SUBMODULES
assert not any(f"datacredit.{n}" in sys.modules for n in ("metrics", "utilities", "dualda")), (
    "imported eagerly")
for n in names:
    mod = getattr(datacredit, n)
    assert mod is sys.modules[f"datacredit.{n}"], n
assert callable(datacredit.metrics.identical_class)
assert "torch" not in sys.modules, "torch imported"
"""
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_attribute_and_dir():
    try:
        datacredit.nope  # noqa: B018
    except AttributeError as exc:
        assert "nope" in str(exc)
    else:
        raise AssertionError("no AttributeError")
    assert {"metrics", "utilities", "DualDA"} <= set(dir(datacredit))
