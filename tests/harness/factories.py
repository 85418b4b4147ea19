"""Factories that the harness' CLI configs name (``harness.factories:NAME``): the CLI tests'
own factories (``tests/_clifac.py``; ``tests/`` is on the path of the harness' children)."""

from __future__ import annotations

from _clifac import (  # noqa: F401  (re-exported by name for the configs)
    GEN,
    TRAIN,
    boom,
    contributors,
    generated,
    generator,
    not_callable,
    tiny_classifier,
    tiny_test,
    tiny_train,
    train_data,
    utility,
)
