"""Families of bad values for the harness, as ``(label, make, expect[, match])`` entries.

``make(kwargs)`` receives the valid keyword arguments of the call and returns the bad
value, so shape-dependent values (one column too many, one label short) follow the valid
input.  Every function here returns a list of entries for :func:`harness.registry.mutations`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.registry import from_valid


def _nan(a: np.ndarray) -> np.ndarray:
    out = np.array(a, dtype=np.float32 if a.dtype.kind != "f" else a.dtype)
    out.flat[out.size // 2] = np.nan
    return out


def _inf(a: np.ndarray, sign: float = 1.0) -> np.ndarray:
    out = np.array(a, dtype=np.float32 if a.dtype.kind != "f" else a.dtype)
    out.flat[0] = sign * np.inf
    return out


def matrix(arg: str, *, empty_rows: str = "raises", extra_col: str | None = "raises") -> list:
    """A real ``(n, d)`` matrix argument (float32 expected; other real dtypes converted)."""
    v = lambda kw: np.asarray(kw[arg])  # noqa: E731
    out = [
        ("none", lambda kw: None, "raises"),
        ("string", lambda kw: "not an array", "raises"),
        ("ragged", lambda kw: [[1.0, 2.0], [3.0]], "raises", None),
        ("complex", lambda kw: v(kw).astype(np.complex64), "raises"),
        ("bool", lambda kw: v(kw) > 0, "raises"),
        ("object", lambda kw: v(kw).astype(object), "raises"),
        ("str_dtype", lambda kw: v(kw).astype(str), "raises"),
        ("nan", lambda kw: _nan(v(kw)), "raises"),
        ("inf", lambda kw: _inf(v(kw)), "raises"),
        ("neg_inf", lambda kw: _inf(v(kw), -1.0), "raises"),
        ("empty_rows", lambda kw: v(kw)[:0], empty_rows),
        ("empty_cols", lambda kw: v(kw)[:, :0], "raises"),
        ("vector", lambda kw: v(kw)[0], "raises"),
        ("3d", lambda kw: v(kw)[None], "raises"),
        ("scalar", lambda kw: np.float32(1.0), "raises"),
        ("float64", lambda kw: v(kw).astype(np.float64), "returns"),
        ("float16", lambda kw: v(kw).astype(np.float16), "returns"),
        ("int32", lambda kw: np.round(v(kw)).astype(np.int32), "returns"),
        ("fortran", lambda kw: np.asfortranarray(v(kw)), "returns"),
        ("readonly", lambda kw: _readonly(v(kw)), "returns"),
        ("col_strided", lambda kw: np.repeat(v(kw), 2, axis=1)[:, ::2], "returns"),
        ("huge_values", lambda kw: v(kw) * np.float32(1e30), "either"),
        ("float64_overflow", lambda kw: v(kw).astype(np.float64) * 1e300, "raises"),
        ("list", lambda kw: v(kw).tolist(), "returns"),
    ]
    if extra_col is not None:
        out.append(("extra_col", lambda kw: np.hstack([v(kw), v(kw)[:, :1]]), extra_col, None))
    return out


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.array(a)
    a.flags.writeable = False
    return a


def positive_int(
    *, none: str = "raises", huge: str = "raises", overflow: str = "raises", one: str = "returns"
) -> list:
    """An integer argument that must be >= 1 (``huge``: 2**31, ``overflow``: 2**63)."""
    return [
        ("zero", lambda kw: 0, "raises"),
        ("negative", lambda kw: -1, "raises"),
        ("int32_overflow", lambda kw: 2**31, huge),
        ("int64_overflow", lambda kw: 2**63, overflow),
        ("very_negative", lambda kw: -(2**63) - 1, "raises"),
        ("bool", lambda kw: True, "raises"),
        ("float", lambda kw: 2.5, "raises"),
        ("float_integral", lambda kw: 2.0, "either"),
        ("nan", lambda kw: float("nan"), "raises"),
        ("string", lambda kw: "3", "raises"),
        ("none", lambda kw: None, none),
        ("list", lambda kw: [2], "raises"),
        ("numpy_int", from_valid(lambda valid: np.int64(valid)), one),
    ]


def n_threads() -> list:
    """``n_threads``: None (all cores) or a positive integer, with a sane upper bound."""
    return [
        ("zero", lambda kw: 0, "raises"),
        ("negative", lambda kw: -1, "raises"),
        # Above a sane limit: clamped or rejected (issue 11, r06), never a dead process.
        ("huge", lambda kw: 2**31, "either"),
        ("absurd", lambda kw: 100_000, "either"),
        ("bool", lambda kw: True, "raises"),
        ("float", lambda kw: 1.5, "raises"),
        ("string", lambda kw: "2", "raises"),
        ("one", lambda kw: 1, "returns"),
        ("numpy_int", lambda kw: np.int32(2), "returns"),
    ]


def seed() -> list:
    """A seed: a non-negative integer."""
    return [
        ("negative", lambda kw: -1, "raises"),
        ("huge", lambda kw: 2**64, "raises"),
        ("bool", lambda kw: True, "raises"),
        ("float", lambda kw: 0.5, "raises"),
        ("string", lambda kw: "0", "raises"),
        ("numpy_int", lambda kw: np.uint32(7), "returns"),
    ]


def positive_float(*, zero: str = "raises") -> list:
    """A finite number > 0."""
    return [
        ("zero", lambda kw: 0.0, zero),
        ("negative", lambda kw: -1.0, "raises"),
        ("nan", lambda kw: float("nan"), "raises"),
        ("inf", lambda kw: float("inf"), "raises"),
        ("bool", lambda kw: True, "raises"),
        ("string", lambda kw: "1.0", "raises"),
        ("none", lambda kw: None, "raises"),
        ("complex", lambda kw: 1j, "raises"),
        ("array", lambda kw: np.ones(2), "raises"),
    ]


def choice(valid: Any, *, none: str = "raises") -> list:
    """A string choice (metric, index, ...)."""
    return [
        ("unknown", lambda kw: "no-such-choice", "raises"),
        ("none", lambda kw: None, none),
        ("int", lambda kw: 1, "raises"),
        ("bytes", lambda kw: str(valid).encode(), "raises"),
        ("upper", lambda kw: str(valid).upper(), "either"),
    ]


def flag() -> list:
    """A boolean flag: only real booleans (a string "no" is not False)."""
    return [
        ("string", lambda kw: "no", "raises"),
        ("none", lambda kw: None, "either"),
        ("numpy_bool", lambda kw: np.bool_(True), "returns"),
    ]


def labels(arg: str, *, n_classes: int | None = None) -> list:
    """An integer label vector ``(N,)`` with values in [0, n_classes)."""
    v = lambda kw: np.asarray(kw[arg])  # noqa: E731
    out = [
        ("none", lambda kw: None, "raises"),
        ("fractional", lambda kw: v(kw).astype(np.float64) + 0.5, "raises"),
        ("float_integral", lambda kw: v(kw).astype(np.float64), "either"),
        ("nan", lambda kw: _nan(v(kw).astype(np.float64)), "raises"),
        ("negative", lambda kw: np.where(np.arange(v(kw).size) == 0, -1, v(kw)), "raises"),
        ("short", lambda kw: v(kw)[:-1], "raises"),
        ("matrix", lambda kw: v(kw)[:, None], "either"),
        ("complex", lambda kw: v(kw).astype(np.complex128), "raises"),
        ("string", lambda kw: "labels", "raises"),
        ("huge_label", lambda kw: np.where(np.arange(v(kw).size) == 0, 2**40, v(kw)), "raises"),
        ("int32", lambda kw: v(kw).astype(np.int32), "returns"),
        ("uint8", lambda kw: v(kw).astype(np.uint8), "returns"),
    ]
    if n_classes is not None:
        out.append(
            (
                "out_of_range",
                lambda kw: np.where(np.arange(v(kw).size) == 0, n_classes, v(kw)),
                "raises",
            )
        )
    return out


def vector(arg: str, *, nonneg: bool = False) -> list:
    """A real vector ``(N,)`` argument (weights, scores)."""
    v = lambda kw: np.asarray(kw[arg], dtype=np.float64)  # noqa: E731
    out = [
        ("nan", lambda kw: _nan(v(kw)), "raises"),
        ("inf", lambda kw: _inf(v(kw)), "raises"),
        ("short", lambda kw: v(kw)[:-1], "raises"),
        ("matrix", lambda kw: v(kw)[None, :], "raises"),
        ("string", lambda kw: "weights", "raises"),
        ("complex", lambda kw: v(kw).astype(np.complex128), "raises"),
        ("float32", lambda kw: v(kw).astype(np.float32), "returns"),
    ]
    if nonneg:
        out.append(("negative", lambda kw: -v(kw) - 1.0, "raises"))
    return out
