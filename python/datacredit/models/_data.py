"""Batching and indexing of user data (arrays, tensors, sequences, torch datasets and
Hugging Face ``datasets.Dataset`` objects).

A Hugging Face dataset is read through its sample column (one of :data:`INPUT_KEYS`, e.g.
``"image"``, or its only non-label column) in the format the user set: none (PIL images,
nested lists), ``with_format("torch")``/``"numpy"``, or a ``with_transform(fn)`` whose
output is kept as is.  ``datasets`` is never imported here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

#: Keys of a dict sample or batch (and columns of a Hugging Face dataset) holding labels.
LABEL_KEYS = ("label", "labels", "y", "target")
#: Keys of a dict sample or batch holding the model's single positional input.
INPUT_KEYS = ("input", "x", "image", "pixel_values")


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def is_hf_dataset(data: Any) -> bool:
    """A Hugging Face ``datasets.Dataset`` (checked without importing ``datasets``)."""
    return type(data).__module__.startswith("datasets.") and hasattr(data, "with_format")


def hf_torch_view(data: Any) -> Any:
    """``data.with_format("torch")``, unless it already has the torch format or a transform
    (``with_transform``/``set_transform``): that one is kept, so a preprocessing transform
    is never dropped.  O(1): no data is read."""
    fmt = getattr(data, "format", None) or {}
    return data if fmt.get("type") in ("torch", "custom") else data.with_format("torch")


def hf_input_column(data: Any, name: str = "data") -> str:
    """The column of a Hugging Face dataset that holds the samples: the first of
    :data:`INPUT_KEYS` present, else its only column that is not a label.

    Raises:
        ValueError: no such column, or several candidates (naming them).
    """
    columns = list(data.column_names)
    for key in INPUT_KEYS:
        if key in columns:
            return key
    rest = [c for c in columns if c not in LABEL_KEYS]
    if len(rest) == 1:
        return rest[0]
    raise ValueError(
        f"{name}: a Hugging Face dataset needs a sample column named one of "
        f"{', '.join(map(repr, INPUT_KEYS))} (or a single non-label column); it has "
        f"{', '.join(map(repr, columns)) or 'no columns'}"
    )


def _sample_of(item: Any) -> Any:
    """The sample of one dataset item: the first element of a tuple/list item
    (``(image, label)``), the input value of a dict item (``{"image": ..., "label": ...}``)."""
    if isinstance(item, (tuple, list)):
        return item[0]
    if isinstance(item, dict):
        key = next((k for k in INPUT_KEYS if k in item), None)
        rest = [k for k in item if k not in LABEL_KEYS]
        if key is None and len(rest) == 1:
            key = rest[0]
        if key is None:
            raise ValueError(
                f"a dict sample needs one of the keys {', '.join(map(repr, INPUT_KEYS))} "
                f"(or a single non-label key); it has {', '.join(map(repr, item))}"
            )
        return item[key]
    return item


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
    if isinstance(first, (np.ndarray, np.generic, int, float, list)):
        return np.stack([np.asarray(i) for i in items])
    return items  # e.g. PIL images: the encoder's preprocessing handles lists


def take(data: Any, indices: np.ndarray) -> Any:
    """The samples ``data[indices]`` as one batch (array, tensor, or list of items).

    Dataset items that are tuples/lists (``(image, label)``) contribute their first element,
    dict items their input value (:data:`INPUT_KEYS`); a Hugging Face dataset its sample
    column (:func:`hf_input_column`) in its own format: a list of PIL images without one,
    a tensor with ``with_format("torch")``.  Complexity: ``len(indices)`` item reads.
    """
    if isinstance(data, np.ndarray):
        return data[indices]
    if _is_torch(data):
        import torch

        return data[torch.as_tensor(np.asarray(indices, dtype=np.int64))]
    if is_hf_dataset(data):
        column = hf_input_column(data)
        batch = data[np.asarray(indices, dtype=np.int64).tolist()]
        values = batch[column] if isinstance(batch, dict) else batch
        if isinstance(values, (list, tuple)):
            return _stack(list(values)) if values else np.empty((0,))
        return values
    items = [_sample_of(data[i]) for i in np.asarray(indices).tolist()]
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
