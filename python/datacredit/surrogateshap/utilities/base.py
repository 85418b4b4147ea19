"""The utility protocol of SurrogateSHAP's proxy game and the helpers every utility shares:
``prepare(bank)`` computes per-label statistics once, ``evaluate(weights)`` maps mixture
weights (m × L) to m utilities."""

from __future__ import annotations

import hashlib
import inspect
from typing import Any, Callable

import numpy as np

from datacredit._arrays import to_numpy
from datacredit.direction import check_direction


def apply_in_batches(
    fn: Callable | None, x: np.ndarray, batch_size: int | None, name: str
) -> np.ndarray:
    """``fn`` over ``x`` in batches of ``batch_size`` rows, as float64 (``x`` when ``fn`` is None)."""
    if fn is None:
        return np.asarray(x, dtype=np.float64)
    bs = x.shape[0] if batch_size is None else int(batch_size)
    outs = [
        np.asarray(to_numpy(fn(np.asarray(x[s : s + bs])), f"{name} output"), dtype=np.float64)
        for s in range(0, x.shape[0], bs)
    ]
    return np.concatenate(outs) if len(outs) > 1 else outs[0]


def check_weights(weights: Any, n_labels: int) -> np.ndarray:
    """Mixture weights as float64 ``(m, n_labels)``: non-negative rows summing to 1."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim == 1:
        w = w[None]
    if w.ndim != 2 or w.shape[1] != n_labels:
        raise ValueError(f"weights must have shape (m, {n_labels}), got {np.shape(weights)}")
    if (w < 0).any() or not np.allclose(w.sum(1), 1.0, atol=1e-8):
        raise ValueError("every row of weights must be non-negative and sum to 1")
    return w


class Utility:
    """Base class: ``prepare(bank)`` once, then ``evaluate(weights (m × L)) -> (m,)``.

    ``higher_is_better``: True when a larger utility means a better model, False for a
    loss (FID); None when the utility cannot know (a user's statistic), and then the
    :class:`~datacredit.surrogateshap.ProxyGame` that ranks contributors by it asks for it.
    """

    n_labels: int = 0
    higher_is_better: bool | None = None

    def prepare(self, bank: Any) -> Utility:  # pragma: no cover - interface
        """Compute the per-label statistics from ``bank`` (a ``SampleBank``) once; returns
        ``self``."""
        raise NotImplementedError

    def evaluate(self, weights: Any) -> np.ndarray:  # pragma: no cover - interface
        """Utilities ``(m,)`` float64 of ``m`` label mixtures, ``weights`` ``(m, L)`` (rows
        sum to 1 over the bank's labels). The direction is the utility's own (FID is a
        loss: lower is better; the scores are higher-is-better)."""
        raise NotImplementedError

    def settings_key(self) -> str:
        """A digest of what this utility computes: its class and the attributes named like
        its constructor's arguments (scalars by value, arrays by content, callables by
        qualified name and code), plus :meth:`_extra_settings`.  Caches of utilities (a retraining
        game's results on disk) key on it, so a changed estimator or reference is never
        read back from another's cache.  O(size of the array settings)."""
        h = hashlib.sha256(f"{type(self).__module__}.{type(self).__qualname__}".encode())
        params = inspect.signature(type(self).__init__).parameters
        items = [(n, getattr(self, n)) for n in params if n != "self" and hasattr(self, n)]
        for name, value in items + sorted(self._extra_settings().items()):
            h.update(b"\0" + name.encode() + b"=")
            if isinstance(value, np.ndarray):
                h.update(str((value.dtype.str, value.shape)).encode())
                h.update(np.ascontiguousarray(value).tobytes())
            elif callable(value):
                # by name and, for Python functions, their code (not the weights a bound
                # model method reads: give such models a fingerprinting tag of their own)
                h.update(getattr(value, "__qualname__", type(value).__qualname__).encode())
                code = getattr(getattr(value, "__func__", value), "__code__", None)
                if code is not None:
                    h.update(code.co_code + repr(code.co_consts).encode())
            else:
                h.update(repr(value).encode())
        return h.hexdigest()[:16]

    def _extra_settings(self) -> dict[str, Any]:
        """Settings stored under other names than the constructor's arguments (e.g. FID's
        reference moments); part of :meth:`settings_key`."""
        return {}

    def _require(self) -> None:
        if not getattr(self, "_ready", False):
            raise RuntimeError(f"{type(self).__name__}.prepare(bank) must be called first")

    def __call__(self, weights: Any) -> np.ndarray:
        return self.evaluate(weights)


def direction_arg(value: Any, default: bool | None, owner: str) -> bool | None:
    """A utility's ``higher_is_better`` argument: ``default`` when None, else a bool
    (TypeError naming ``owner`` otherwise)."""
    value = check_direction(value, f"{owner}(higher_is_better=...)")
    return default if value is None else value


def features_per_label(bank: Any, fn: Callable | None, batch_size: int | None, name: str) -> list:
    """``fn`` over each label's samples: one float64 ``(n_label, p)`` array per label, checked
    for one finite row per sample."""
    feats = []
    for label in bank.labels:
        f = apply_in_batches(fn, bank.samples_for(label), batch_size, name)
        if f.ndim == 1:
            f = f[:, None]
        if f.ndim != 2 or f.shape[0] != bank.n_samples_for(label):
            raise ValueError(
                f"{name} must return one row per sample; got shape {f.shape} for label {label!r}"
            )
        if not np.isfinite(f).all():
            raise ValueError(f"{name} returned NaN or inf for label {label!r}")
        feats.append(f)
    return feats
