"""Penultimate-layer features of a torch model through a forward hook, and batch iteration.

``FeatureExtractor(model, layer)`` captures the *input* of the module named ``layer``
(usually the final ``nn.Linear``) on every forward pass, so features and the model's
outputs come from one and the same pass.  ``iterate_batches`` walks a torch ``Dataset``,
a ``DataLoader``, a Hugging Face ``datasets.Dataset`` or an ``(X, y)`` pair in a fixed
order.  A batch is a tensor or a dict of tensors (Hugging Face style: the model is called
as ``model(**batch)``); a model output with ``.logits`` (a ``ModelOutput``) is reduced to
its logits.
"""

from __future__ import annotations

import difflib
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from datacredit.models._data import INPUT_KEYS, LABEL_KEYS, hf_torch_view, is_hf_dataset


def _torch():
    import torch

    return torch


_MODEL_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(model: Any) -> threading.RLock:
    """The one re-entrant lock of ``model``: held while a hook is on it and while its
    train/eval mode is switched, so threads sharing a model never see each other's hooks
    or modes (their forward passes take turns; everything after them runs in parallel)."""
    with _LOCKS_GUARD:
        lock = _MODEL_LOCKS.get(model)
        if lock is None:
            lock = _MODEL_LOCKS[model] = threading.RLock()
        return lock


@contextmanager
def eval_mode(model: Any) -> Iterator[None]:
    """Run the block with ``model`` in eval mode, holding :func:`model_lock`; the previous
    mode is restored afterwards (also on error)."""
    with model_lock(model):
        was_training = model.training
        model.eval()
        try:
            yield
        finally:
            model.train(was_training)


# INPUT_KEYS and LABEL_KEYS (the dict keys of inputs and labels) live in models._data.


def batch_len(batch: Any) -> int:
    """Number of samples in a tensor/array batch or a dict of them."""
    if batch is None or not (isinstance(batch, dict) or hasattr(batch, "shape")):
        raise TypeError(f"inputs must be a tensor, an array or a dict of them, got {batch!r:.80}")
    if isinstance(batch, dict):
        if not batch:
            raise ValueError("the batch is an empty dict")
        return int(next(iter(batch.values())).shape[0])
    return int(batch.shape[0])


def slice_batch(batch: Any, start: int, stop: int) -> Any:
    """Samples ``start:stop`` of a tensor/array batch or of every value of a dict batch."""
    if isinstance(batch, dict):
        return {k: v[start:stop] for k, v in batch.items()}
    return batch[start:stop]


def batch_to(batch: Any, device: Any) -> Any:
    """A tensor batch (or every tensor of a dict batch) moved to ``device``."""
    torch = _torch()
    if isinstance(batch, dict):
        return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
    return batch.to(device) if isinstance(batch, torch.Tensor) else batch


def model_logits(outputs: Any) -> Any:
    """The logits of a model output: the tensor itself, ``.logits`` of a Hugging Face
    ``ModelOutput``, or ``["logits"]`` of a dict."""
    logits = getattr(outputs, "logits", None)
    if logits is None and isinstance(outputs, dict):
        logits = outputs.get("logits")
    return outputs if logits is None else logits


def _split_dict_batch(batch: dict) -> tuple[Any, Any]:
    """``(inputs, labels)`` of a dict batch: one input key, or every other tensor key as
    keyword inputs."""
    torch = _torch()
    labels = next((batch[k] for k in LABEL_KEYS if k in batch), None)
    key = next((k for k in INPUT_KEYS if k in batch), None)
    if key is not None:
        return batch[key], labels
    inputs = {k: v for k, v in batch.items() if k not in LABEL_KEYS and isinstance(v, torch.Tensor)}
    if not inputs:
        raise ValueError(f"the dict batch has no tensor inputs (keys: {', '.join(batch)})")
    return inputs, labels


def resolve_layer(model: Any, layer: str) -> Any:
    """The submodule of ``model`` named ``layer`` (as in ``model.named_modules()``).

    Raises:
        ValueError: unknown name (the message suggests the closest names).
        TypeError: ``layer`` is not a string.
    """
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a module name (str), got {type(layer).__name__}")
    modules = dict(model.named_modules())
    if layer not in modules or layer == "":
        close = difflib.get_close_matches(layer, [n for n in modules if n], n=3)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        names = [n for n in modules if n]
        raise ValueError(
            f"layer {layer!r} is not a submodule of the model{hint} "
            f"(available: {', '.join(names[:20])}{' ...' if len(names) > 20 else ''})"
        )
    return modules[layer]


def layer_out_features(module: Any) -> int | None:
    """Number of outputs of a Linear-like module (``out_features`` or ``weight.shape[0]``)."""
    if hasattr(module, "out_features"):
        return int(module.out_features)
    weight = getattr(module, "weight", None)
    if weight is not None and getattr(weight, "ndim", 0) == 2:
        return int(weight.shape[0])
    return None


class FeatureExtractor:
    """Captures the input of a named layer during forward passes of ``model``.

    Calling the extractor on a batch runs ``model`` once (``torch.no_grad``, eval mode
    expected) and returns ``(features, outputs)``: features ``(n, d)`` float32, flattened
    per sample, detached; outputs are the model's own outputs ``(n, K)``.

    Thread-safe: each call captures into its own list and holds the model's lock
    (:func:`model_lock`) from placing the hook to removing it, so calls from several
    threads on one model run their forward passes one at a time.

    Args:
        model: a ``torch.nn.Module``.
        layer: name of the module whose input is the feature (``model.named_modules()``).

    Raises:
        ValueError: unknown ``layer``.
    """

    def __init__(self, model: Any, layer: str) -> None:
        self.model = model
        self.layer = layer
        self.module = resolve_layer(model, layer)

    def __call__(self, batch: Any, *, grad: bool = False) -> tuple[Any, Any]:
        """Features ``(n, d)`` float32 and outputs of one forward pass on ``batch``.

        With ``grad=True`` the pass keeps the autograd graph (features are not detached).
        """
        torch = _torch()
        captured: list[Any] = []  # this call's own: a shared list mixed threads' features

        def hook(_module: Any, inputs: tuple) -> None:
            captured.append(inputs[0])

        if isinstance(batch, dict):
            call = lambda: self.model(**batch)  # noqa: E731
        else:
            call = lambda: self.model(batch)  # noqa: E731
        with model_lock(self.model):
            # A pre-hook placed first sees the layer's input before any other hook rewrites
            # it (e.g. zennit's LRP wrappers, which XDA must bypass for the layer itself).
            handle = self.module.register_forward_pre_hook(hook, prepend=True)
            try:
                if grad:
                    outputs = call()
                else:
                    with torch.no_grad():
                        outputs = call()
            finally:
                handle.remove()
        if len(captured) != 1:
            raise RuntimeError(
                f"layer {self.layer!r} ran {len(captured)} times in one forward pass; "
                "name a module that is called exactly once"
            )
        feats = captured[0]
        feats = feats.reshape(feats.shape[0], -1)
        if not grad:
            feats = feats.detach()
        return feats.float(), model_logits(outputs)


def split_batch(batch: Any) -> tuple[Any, Any]:
    """``(inputs, labels)`` of one batch: an ``(inputs, labels, ...)`` tuple, a dict (see
    :func:`iterate_batches`) or bare inputs (``labels`` ``None``)."""
    if isinstance(batch, (tuple, list)):
        return batch[0], (batch[1] if len(batch) > 1 else None)
    if isinstance(batch, dict):
        return _split_dict_batch(batch)
    return batch, None


def select_inputs(data: Any, indices: Any) -> Any:
    """The model inputs of the samples at positions ``indices`` ``(M,)`` of ``data``, as
    one batch of the form :func:`iterate_batches` yields for it (a tensor, or a dict of
    keyword tensors); labels are dropped.  ``data`` is any form iterate_batches walks.

    Samples are taken with ``dataset[i]`` and collated as a batch of the data's own loader
    (the DataLoader's ``collate_fn``; torch's default for a Dataset), so sample ``i`` is the
    same tensor as in the batches the features were extracted from.

    Complexity: ``M`` item reads (an ``(X, y)`` pair or a tensor is indexed directly).

    Raises:
        ValueError: a DataLoader whose order is not ``dataset[0], dataset[1], ...`` (a
            sampler other than ``SequentialSampler``, or ``batch_size=None``).
        TypeError: unsupported data type.
    """
    torch = _torch()
    from torch.utils.data import DataLoader, Dataset, SequentialSampler
    from torch.utils.data._utils.collate import default_collate

    idx = [int(i) for i in np.asarray(indices).reshape(-1)]
    if isinstance(data, DataLoader):
        if not isinstance(data.sampler, SequentialSampler) or data.batch_size is None:
            raise ValueError(
                "the DataLoader must yield dataset[0], dataset[1], ... in order (a "
                "SequentialSampler, i.e. shuffle=False, and a batch_size) so that position i "
                "is dataset[i]"
            )
        return split_batch(data.collate_fn([data.dataset[i] for i in idx]))[0]
    if isinstance(data, Dataset):
        return split_batch(default_collate([data[i] for i in idx]))[0]
    if is_hf_dataset(data):
        return _split_dict_batch(dict(hf_torch_view(data)[idx]))[0]
    if isinstance(data, (tuple, list)) and len(data) in (1, 2) and not isinstance(data[0], int):
        data = data[0]
    if isinstance(data, (torch.Tensor, np.ndarray)):
        x = data if isinstance(data, torch.Tensor) else torch.as_tensor(np.asarray(data))
        return x[torch.as_tensor(idx, dtype=torch.long)]
    raise TypeError(
        "data must be a torch Dataset, a DataLoader, an (X, y) pair or a tensor, "
        f"got {type(data).__name__}"
    )


def count_batches(data: Any, batch_size: int) -> int | None:
    """How many batches :func:`iterate_batches` yields for ``data`` (None when the data
    has no length, e.g. an iterable DataLoader); for progress bars with a total.  O(1)."""
    from math import ceil

    try:
        if hasattr(data, "batch_sampler") and hasattr(data, "dataset"):  # a DataLoader
            return len(data)
        if isinstance(data, (tuple, list)) and len(data) in (1, 2) and not isinstance(data[0], int):
            return ceil(len(data[0]) / batch_size)
        n = int(data.shape[0]) if hasattr(data, "shape") else len(data)
        return ceil(n / batch_size)
    except TypeError:
        return None


def iterate_batches(
    data: Any, batch_size: int, *, with_labels: bool = True
) -> Iterator[tuple[Any, Any]]:
    """Yield ``(inputs, labels)`` batches from a Dataset, a DataLoader or an ``(X, y)`` pair.

    Order is the data's own (a DataLoader with a random sampler is rejected: attributions
    index training samples by position).  Dict batches (Hugging Face style) give ``inputs``
    as the value of one of :data:`INPUT_KEYS` or, else, the dict of every other tensor
    column (passed as ``model(**inputs)``); labels come from :data:`LABEL_KEYS`.  ``labels`` is ``None`` when the data has none
    and ``with_labels`` is False.

    Raises:
        ValueError: shuffling DataLoader, mismatched ``(X, y)`` lengths, empty data.
        TypeError: unsupported data type.
    """
    torch = _torch()
    from torch.utils.data import DataLoader, Dataset, RandomSampler

    if isinstance(data, DataLoader):
        if isinstance(data.sampler, RandomSampler):
            raise ValueError(
                "the DataLoader shuffles (RandomSampler); pass one with shuffle=False so that "
                "training indices are stable"
            )
        loader = data
    elif isinstance(data, Dataset):
        loader = DataLoader(data, batch_size=batch_size, shuffle=False)
    elif is_hf_dataset(data):
        hf = hf_torch_view(data)  # keeps a format or transform the user set
        if len(hf) == 0:
            raise ValueError("the data is empty")
        for start in range(0, len(hf), batch_size):
            inputs, labels = _split_dict_batch(dict(hf[start : start + batch_size]))
            if labels is None and with_labels:
                raise ValueError("the dataset has no label column ('label' or 'labels')")
            yield inputs, labels
        return
    elif isinstance(data, (tuple, list)) and len(data) in (1, 2) and not isinstance(data[0], int):
        x = data[0]
        y = data[1] if len(data) == 2 else None
        x = torch.as_tensor(np.asarray(x)) if not isinstance(x, torch.Tensor) else x
        if y is not None:
            y = torch.as_tensor(np.asarray(y)) if not isinstance(y, torch.Tensor) else y
            if y.shape[0] != x.shape[0]:
                raise ValueError(f"the (X, y) pair has {x.shape[0]} inputs but {y.shape[0]} labels")
        if x.shape[0] == 0:
            raise ValueError("the data is empty")
        for start in range(0, x.shape[0], batch_size):
            yield (
                x[start : start + batch_size],
                (None if y is None else y[start : start + batch_size]),
            )
        return
    elif isinstance(data, torch.Tensor) or isinstance(data, np.ndarray):
        x = torch.as_tensor(data)
        for start in range(0, x.shape[0], batch_size):
            yield x[start : start + batch_size], None
        return
    else:
        raise TypeError(
            "data must be a torch Dataset, a DataLoader, an (X, y) pair or a tensor, "
            f"got {type(data).__name__}"
        )
    for batch in loader:
        inputs, labels = split_batch(batch)
        if labels is not None and not isinstance(labels, torch.Tensor):
            labels = torch.as_tensor(labels)
        if labels is None and with_labels:
            raise ValueError("the training data yields no labels; pass (inputs, labels) batches")
        yield inputs, labels
