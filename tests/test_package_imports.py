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


def test_moved_modules_keep_their_old_paths_for_one_release():
    """`datacredit.utilities` moved into `datacredit.surrogateshap.utilities`: the old path
    still gives the same classes, with a DeprecationWarning naming the new home."""
    code = """
import warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import datacredit.utilities as old
import datacredit.surrogateshap.utilities as new
assert old.FID is new.FID and old.InceptionScore is new.InceptionScore
assert set(old.__all__) == set(new.__all__)
msgs = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
assert any("datacredit.surrogateshap.utilities" in m for m in msgs), msgs
"""
    subprocess.run([sys.executable, "-c", code], check=True)


def test_stores_naming_the_old_embed_worker_still_run():
    from datacredit.config import load_object
    from datacredit.distributed.shard_cli import MOVED_WORKERS

    for old, new in MOVED_WORKERS.items():
        assert old.startswith("datacredit.distributed.")
        assert callable(load_object(new, "worker"))
