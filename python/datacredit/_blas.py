"""BLAS thread limits for the small matrices of the Python layer."""

from __future__ import annotations

import contextlib
from typing import Any


def blas_limit(dim: int, threads: int | None = None) -> Any:
    """One BLAS thread for small matrices: multi-threaded BLAS on tiny operands is slower
    (and pathological on a loaded machine); large ones keep all threads unless ``threads``."""
    if threads is None and dim >= 256:
        return contextlib.nullcontext()
    if threads is None:
        threads = 1
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        return contextlib.nullcontext()
    return threadpool_limits(int(threads), user_api="blas")
