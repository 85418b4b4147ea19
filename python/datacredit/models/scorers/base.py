"""What every scorer shares: tensors in, float64 scores out (checked), torch pair distances,
and user callables as distances or quality scores."""

from __future__ import annotations

from typing import Any

import numpy as np

from datacredit.direction import check_direction
from datacredit.models._data import _is_torch


def to_tensor(x: Any, device: Any) -> Any:
    """``x`` (array or tensor) as a floating torch tensor on ``device`` (integers -> float32)."""
    import torch

    t = x if _is_torch(x) else torch.as_tensor(np.asarray(x))
    if not t.is_floating_point():
        t = t.float()
    return t.to(device)


def as_scores(out: Any, n: int, name: str) -> np.ndarray:
    """A model output as ``n`` finite float64 scores ``(n,)``; ``ValueError`` naming ``name``."""
    if _is_torch(out):
        out = out.detach().double().cpu().numpy()
    arr = np.asarray(out, dtype=np.float64).reshape(-1)
    if arr.shape[0] != n:
        raise ValueError(f"{name} returned {arr.shape[0]} values for a batch of {n}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} returned NaN or inf")
    return arr


def missing_package(package: str, pip_name: str, what: str) -> ImportError:
    """The ``ImportError`` for an optional package: what needs it and how to install it."""
    return ImportError(f"{what} needs the {package} package: pip install {pip_name}")


class TorchPairDistance:
    """A torch module ``model(a, b) -> (n,)`` (or ``(n,1,1,1)``) as a pairwise distance,
    run without gradients in eval mode on ``device``."""

    higher_is_better = False  # a distance: smaller is more similar

    def __init__(self, model: Any, *, device: str = "cpu", name: str = "distance") -> None:
        import torch

        self.model = model
        self.device = torch.device(device)
        self.name = name

    def _call(self, a: Any, b: Any) -> Any:
        return self.model(a, b)

    def __call__(self, a: Any, b: Any) -> np.ndarray:
        import torch

        n = int(a.shape[0]) if hasattr(a, "shape") else len(a)
        if hasattr(self.model, "eval"):
            self.model.eval()
        if hasattr(self.model, "to"):
            self.model.to(self.device)
        with torch.no_grad():
            out = self._call(to_tensor(a, self.device), to_tensor(b, self.device))
        return as_scores(out, n, self.name)


class CallableDistance:
    """Any ``fn(a, b) -> (n,)`` pairwise score as a re-rank distance, checked for shape and
    finiteness.

    ``higher_is_better``: False (default) when ``fn`` is a distance (smaller = more
    similar); True when it is a similarity (larger = more similar, e.g. a cosine or
    DreamSim-like similarity): it is then negated, so the nearest match still comes first
    and softmax(−d/T) = softmax(similarity/T) (``topk_distances`` hold −similarity).
    """

    higher_is_better = False  # what it returns is always a distance

    def __init__(self, fn: Any, *, higher_is_better: bool = False) -> None:
        if not callable(fn):
            raise TypeError(f"rerank must be callable, got {type(fn).__name__}")
        direction = check_direction(higher_is_better, "CallableDistance(higher_is_better=...)")
        if direction is None:
            raise TypeError("CallableDistance(higher_is_better=...) must be True or False")
        self.fn = fn
        self.similarity = direction

    def __call__(self, a: Any, b: Any) -> np.ndarray:
        n = int(a.shape[0]) if hasattr(a, "shape") else len(a)
        d = as_scores(self.fn(a, b), n, "rerank")
        return -d if self.similarity else d


class CallableQuality:
    """Any ``fn(images) -> (n,)`` quality score; values outside [0, 1] raise."""

    higher_is_better = True  # a quality score: larger is better

    def __init__(self, fn: Any) -> None:
        if not callable(fn):
            raise TypeError(f"quality must be callable, got {type(fn).__name__}")
        self.fn = fn

    def __call__(self, images: Any) -> np.ndarray:
        n = int(images.shape[0]) if hasattr(images, "shape") else len(images)
        return as_scores(self.fn(images), n, "quality")
