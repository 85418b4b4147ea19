"""Batching and indexing of user data (arrays, tensors, sequences, torch datasets)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def data_len(data: Any, name: str) -> int:
    """Number of samples in ``data`` (first axis of an array, ``len()`` otherwise)."""
    if isinstance(data, np.ndarray) or _is_torch(data):
        if data.ndim == 0:
            raise ValueError(f"{name} must have a sample axis, got a scalar")
        return int(data.shape[0])
    try:
        return len(data)
    except TypeError as exc:
        raise TypeError(
            f"{name} must be an array, a tensor, a sequence or a dataset with __len__, "
            f"got {type(data).__name__}"
        ) from exc


def _stack(items: list[Any]) -> Any:
    first = items[0]
    if _is_torch(first):
        import torch

        return torch.stack(items)
    if isinstance(first, (np.ndarray, np.generic, int, float)):
        return np.stack([np.asarray(i) for i in items])
    return items  # e.g. PIL images: the encoder's preprocessing handles lists


def take(data: Any, indices: np.ndarray) -> Any:
    """The samples ``data[indices]`` as one batch (array, tensor, or list of items).

    Dataset items that are tuples/lists (``(image, label)``) contribute their first element.
    """
    if isinstance(data, np.ndarray):
        return data[indices]
    if _is_torch(data):
        import torch

        return data[torch.as_tensor(np.asarray(indices, dtype=np.int64))]
    items = []
    for i in np.asarray(indices).tolist():
        item = data[i]
        if isinstance(item, (tuple, list)):
            item = item[0]
        items.append(item)
    return _stack(items)


def batches(data: Any, batch_size: int, name: str) -> Iterator[Any]:
    """Consecutive batches of ``data`` in its own order."""
    n = data_len(data, name)
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        if isinstance(data, np.ndarray) or _is_torch(data):
            yield data[start:stop]
        else:
            yield take(data, np.arange(start, stop))


def to_float_rows(out: Any, name: str) -> np.ndarray:
    """A model output as a contiguous float32 matrix ``(n, features)`` (flattened)."""
    if _is_torch(out):
        out = out.detach().float().cpu().numpy()
    arr = np.asarray(out, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[:, None]
    return np.ascontiguousarray(arr.reshape(arr.shape[0], -1))


def progress(iterable: Any, enabled: bool, total: int | None, desc: str) -> Any:
    """Wrap ``iterable`` in a tqdm progress bar when enabled and tqdm is installed."""
    if not enabled:
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is optional
        return iterable
    return tqdm(iterable, total=total, desc=desc, leave=True)
