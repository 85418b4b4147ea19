"""Input conversion and validation shared by every public function.

User input may be a numpy array, a (CPU) torch tensor, a cupy array or anything
array-like.  These helpers turn it into the contiguous float32 / int64 numpy arrays
the compiled core expects, copying only when dtype or layout require it, and raise
clear ``TypeError`` / ``ValueError`` messages that name the offending argument.
Nothing the user passed is ever modified.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def _is_cupy(x: Any) -> bool:
    return type(x).__module__.startswith("cupy")


def to_numpy(x: Any, name: str) -> np.ndarray:
    """View ``x`` as a numpy array without copying when possible.

    Torch CPU tensors are viewed through ``.numpy()`` (shared memory); CUDA tensors
    and cupy arrays raise, because this build's kernels run on the CPU.
    """
    if isinstance(x, np.ndarray):
        return x
    if _is_torch(x):
        if x.device.type != "cpu":
            raise ValueError(
                f"{name} is a torch tensor on device '{x.device}', but the datacredit kernels "
                "in this build run on the CPU: move it with .cpu() first"
            )
        if x.is_sparse:
            raise TypeError(f"{name} is a sparse torch tensor; pass a dense tensor")
        return x.detach().resolve_conj().resolve_neg().numpy()
    if _is_cupy(x):
        raise ValueError(
            f"{name} is a cupy array (GPU memory), but the datacredit kernels in this build run "
            "on the CPU: pass cupy.asnumpy(...) instead"
        )
    if x is None:
        raise TypeError(f"{name} must be an array, got None")
    try:
        return np.asarray(x)
    except Exception as exc:  # pragma: no cover - numpy's own message is kept
        raise TypeError(f"{name} could not be converted to an array: {exc}") from exc


def as_float_matrix(
    x: Any, name: str, *, ndim: int = 2, allow_empty: bool = False, check_finite: bool = True
) -> np.ndarray:
    """Return ``x`` as a C-contiguous float32 array of the given ``ndim``.

    float32 input in C order is passed through untouched; float64 (and other real
    dtypes) are converted once.  Raises on wrong ndim, complex/bool/object dtype,
    emptiness (unless allowed) and NaN/inf (skipped with ``check_finite=False`` when the
    compiled kernel checks it anyway).
    """
    arr = to_numpy(x, name)
    if arr.ndim != ndim:
        shape_word = {1: "a vector (1-D)", 2: "a matrix (2-D)"}.get(ndim, f"{ndim}-D")
        raise ValueError(f"{name} must be {shape_word}, got shape {arr.shape}")
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name} must have a real numeric dtype, got {arr.dtype}")
    if not allow_empty and arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    out = np.ascontiguousarray(arr, dtype=np.float32)
    if check_finite and out.size and not np.isfinite(out).all():
        raise ValueError(f"{name} contains NaN or inf")
    return out


def as_index_vector(x: Any, name: str, length: int, upper: int) -> np.ndarray:
    """Return ``x`` as a contiguous int64 vector of ``length`` values in [0, upper)."""
    arr = to_numpy(x, name)
    if arr.ndim != 1 or arr.shape[0] != length:
        raise ValueError(f"{name} must have shape ({length},), got {arr.shape}")
    if arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and np.all(np.mod(arr, 1) == 0):
            arr = arr.astype(np.int64)
        else:
            raise TypeError(f"{name} must hold integers, got dtype {arr.dtype}")
    out = np.ascontiguousarray(arr, dtype=np.int64)
    if out.size and (out.min() < 0 or out.max() >= upper):
        bad = int(out[(out < 0) | (out >= upper)][0])
        raise ValueError(f"{name} holds {bad}, outside [0, {upper})")
    return out


def check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    """Raise a ValueError listing the choices unless ``value`` is one of them."""
    if value not in choices:
        raise ValueError(
            f"unknown {name} {value!r}; expected one of {', '.join(map(repr, choices))}"
        )
    return value


# The compiled core's limit (kMaxThreads in cpp/include/datacredit/common.hpp).
MAX_THREADS = 1024


def resolve_threads(n_threads: int | None) -> int:
    """``None`` (all cores) becomes 0 for the core; negative values are rejected."""
    if n_threads is None:
        return 0
    if isinstance(n_threads, bool) or not isinstance(n_threads, (int, np.integer)):
        raise ValueError(f"n_threads must be a positive integer or None, got {n_threads!r}")
    if not 1 <= n_threads <= MAX_THREADS:
        raise ValueError(
            f"n_threads = {n_threads} must be in [1, {MAX_THREADS}] or None (all cores); "
            "counts above the processors available are clamped to them"
        )
    return int(n_threads)


def _is_bool(value: Any) -> bool:
    return isinstance(value, (bool, np.bool_))


def check_int(value: Any, name: str, lo: int | None = None, hi: int | None = None) -> int:
    """``value`` as a Python int in ``[lo, hi]`` (either bound optional).

    Python and numpy integers are accepted; bools (``True`` is not 1 here), floats (even
    ``2.0``), strings and None raise ``TypeError``, an out-of-range value ``ValueError``
    naming ``name`` and the allowed range.
    """
    if _is_bool(value) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer{_range(lo, hi)}, got {value!r}")
    out = int(value)
    if (lo is not None and out < lo) or (hi is not None and out > hi):
        raise ValueError(f"{name} = {out} is out of range: it must be an integer{_range(lo, hi)}")
    return out


def check_float(
    value: Any,
    name: str,
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
    allow_inf: bool = False,
) -> float:
    """``value`` as a Python float in ``[lo, hi]`` (``lo_open``/``hi_open``: exclusive bounds).

    Python and numpy reals are accepted; bools, strings, None, complex numbers and arrays
    raise ``TypeError``; NaN always, infinities unless ``allow_inf``, and values out of
    range raise ``ValueError`` naming ``name`` and the allowed range.
    """
    if _is_bool(value) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    out = float(value)
    lo_bad = lo is not None and (out <= lo if lo_open else out < lo)
    hi_bad = hi is not None and (out >= hi if hi_open else out > hi)
    if np.isnan(out) or (np.isinf(out) and not allow_inf) or lo_bad or hi_bad:
        what = "a number" if allow_inf else "a finite number"
        parts = []
        if lo is not None:
            parts.append(f"{'>' if lo_open else '>='} {lo:g}")
        if hi is not None:
            parts.append(f"{'<' if hi_open else '<='} {hi:g}")
        rng = (" " + " and ".join(parts)) if parts else ""
        raise ValueError(f"{name} must be {what}{rng}, got {value!r}")
    return out


def check_flag(value: Any, name: str) -> bool:
    """``value`` as a bool: only ``True``/``False`` (and numpy bools) are accepted, so a
    string such as ``"no"`` or a number is a ``TypeError`` instead of a truthy guess."""
    if not _is_bool(value):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _range(lo: int | None, hi: int | None) -> str:
    if lo is not None and hi is not None:
        return f" in [{lo}, {hi}]"
    if lo is not None:
        return f" >= {lo}"
    if hi is not None:
        return f" <= {hi}"
    return ""


def positive_float(value: Any, name: str) -> float:
    """``value`` as a finite float > 0 (:func:`check_float`); bools and strings raise."""
    return check_float(value, name, 0.0, lo_open=True)


def as_integer_array(x: Any, name: str) -> np.ndarray:
    """``x`` as int64 (labels, class or sample indices): integer or bool dtype, or floats
    that are all whole numbers.  ``0.5`` or ``1.7`` raise instead of being truncated."""
    arr = to_numpy(x, name)
    if arr.dtype.kind in "biu":
        return arr.astype(np.int64, copy=False)
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr) | (arr != np.round(arr)) | (np.abs(arr) >= 2.0**62)
        if not bad.any():
            return arr.astype(np.int64)
        raise TypeError(
            f"{name} must hold integers, got {arr[bad].flat[0].item()!r} (dtype {arr.dtype}); "
            "float values are not truncated"
        )
    raise TypeError(f"{name} must hold integers, got dtype {arr.dtype}")


def as_mask(x: Any, name: str) -> np.ndarray:
    """``x`` as a bool array: bool dtype, or numbers that are all 0 or 1 (``0.5`` raises)."""
    arr = to_numpy(x, name)
    if arr.dtype == bool:
        return arr
    if arr.dtype.kind in "iuf" and np.isin(arr, (0, 1)).all():
        return arr.astype(bool)
    raise TypeError(f"{name} must be a boolean mask (or hold only 0 and 1), got dtype {arr.dtype}")
