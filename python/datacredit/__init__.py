"""datacredit: which training data, and which data contributors, a model's behaviour comes from.

Importing datacredit is light (numpy only): the method classes below are loaded on
first use, and torch and the other model libraries are imported only by the pieces
that need them.
"""

from __future__ import annotations

import importlib
from typing import Any

from datacredit import kernels

__version__ = "0.1.0"

# Public name -> module that defines it, imported lazily (keeps `import datacredit` light).
_LAZY = {
    "DualDA": "datacredit.dualda",
    "XDA": "datacredit.dualda",
    "SurrogateSHAP": "datacredit.surrogateshap",
    "GMValuator": "datacredit.gmvaluator",
}

# Subpackages reachable as attributes (``datacredit.metrics``), imported on first access as
# scipy does; none of them imports torch at import time.
_SUBMODULES = (
    "config",
    "demo",
    "dualda",
    "games",
    "gmvaluator",
    "metrics",
    "models",
    "safetensors_io",
    "shapley",
    "surrogateshap",
    "utilities",
)

__all__ = ["kernels", "__version__", *_LAZY, *_SUBMODULES]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"datacredit.{name}")
    raise AttributeError(f"module 'datacredit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
