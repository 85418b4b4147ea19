"""Which way a utility or score points: ``higher_is_better``.

Every utility, score and game of the library declares ``higher_is_better`` (a bool):
``True`` when a larger value means a better model (Inception Score, an aesthetic score, a
quality score, accuracy), ``False`` for a loss or a distance (FID, LPIPS, a re-rank
distance).  A user's callable declares it through an explicit argument of the wrapper that
takes it (``ProxyGame(..., higher_is_better=...)``, ``MeanScore(score, higher_is_better=...)``,
``FunctionGame(fn, players, higher_is_better=...)``); where the direction cannot be
known and a result must be ranked, the library asks for it instead of guessing.

Results carry the direction and rank *most helpful first*: a contributor's
*improvement* is its value oriented so that positive means "makes the model better"
(the value itself for a higher-is-better utility, its negation for a loss).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def check_direction(value: Any, name: str = "higher_is_better") -> bool | None:
    """``value`` as a bool, or None when not declared; anything else is a TypeError naming
    ``name`` (``1``, ``"yes"`` and numpy arrays are no direction)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    raise TypeError(
        f"{name} must be True (larger values mean a better model) or False (a loss or a "
        f"distance: smaller is better), got {type(value).__name__} {value!r:.60}"
    )


def declared_direction(obj: Any, name: str | None = None) -> bool | None:
    """The ``higher_is_better`` that ``obj`` declares (None when it declares none);
    a declared non-bool is a TypeError naming ``obj``'s type."""
    label = name or f"{type(obj).__name__}.higher_is_better"
    return check_direction(getattr(obj, "higher_is_better", None), label)


def resolve_direction(explicit: Any, obj: Any, what: str) -> bool:
    """The direction of ``obj`` (``what`` names it in errors): ``explicit`` when given
    (it must agree with what ``obj`` declares), else ``obj.higher_is_better``; a ValueError
    saying why when neither says it."""
    given = check_direction(explicit)
    declared = declared_direction(obj)
    if given is not None and declared is not None and given != declared:
        raise ValueError(
            f"higher_is_better={given} contradicts {what} ({type(obj).__name__}), which "
            f"declares higher_is_better={declared}"
        )
    if given is not None:
        return given
    if declared is not None:
        return declared
    raise ValueError(
        f"the direction of {what} ({type(obj).__name__}) is unknown and is needed to rank "
        "contributors most helpful first: pass higher_is_better=True if larger values mean "
        "a better model, or higher_is_better=False for a loss or a distance such as FID"
    )


def improvement(values: Any, higher_is_better: bool) -> np.ndarray:
    """``values`` oriented so that positive means "makes the model better": float64, the
    values for a higher-is-better utility, their negation for a loss.  O(n)."""
    v = np.asarray(values, dtype=np.float64)
    return v.copy() if higher_is_better else -v


def describe(higher_is_better: bool | None) -> str:
    """One line saying which way a value points, for tables and figures."""
    if higher_is_better is None:
        return "direction not declared"
    if higher_is_better:
        return "higher is better: a positive value makes the model better"
    return "a loss (lower is better): a negative value makes the model better"
