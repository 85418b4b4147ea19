"""Seeded retraining on subsets of the training data, for the retraining-based metrics.

LDS, coreset selection and adversarial data pruning (DualXDA paper, App. E.3) retrain the
model on subsets of the training data and compare what the retrained models do with what an
attribution method predicted.  :class:`RetrainingHarness` owns that loop for any attribution
method: the user supplies ``train_fn(indices, seed) -> model`` and ``evaluate_fn(model) ->
array`` (e.g. test logits); each (subset, seed) result is cached as one ``.npy`` file written
atomically, so an interrupted run resumes where it stopped and a second method evaluated on
the same subsets pays nothing.  The cache key is the subset, the seed and ``tag``: change
``tag`` whenever the training procedure, the data or the evaluation changes.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from datacredit._io import atomic_save_npy


def random_subsets(n: int, m: int, fraction: float, seed: int = 0) -> np.ndarray:
    """``m`` random subsets of ``range(n)``, each of ``round(fraction * n)`` samples, as
    boolean masks ``(m, n)`` (the LDS protocol's random subsets; seeded, reproducible)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
        raise ValueError(f"m must be a positive integer, got {m!r}")
    if not 0.0 < float(fraction) < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction!r}")
    rng = np.random.default_rng(seed)
    size = max(1, int(round(fraction * n)))
    masks = np.zeros((m, n), bool)
    for j in range(m):
        masks[j, rng.choice(n, size, replace=False)] = True
    return masks


def cross_entropy_loss(logits: Any, labels: Any) -> float:
    """Mean cross-entropy of ``logits (n, K)`` against integer ``labels (n,)`` (float64,
    log-sum-exp stabilised); the coreset / pruning metrics report it."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if z.ndim != 2 or y.shape != (z.shape[0],):
        raise ValueError(f"logits must be (n, K) and labels (n,), got {z.shape} and {y.shape}")
    zmax = z.max(1, keepdims=True)
    lse = np.log(np.exp(z - zmax).sum(1)) + zmax[:, 0]
    return float(np.mean(lse - z[np.arange(z.shape[0]), y]))


def _subset_indices(subset: Any, name: str) -> np.ndarray:
    """A training subset as int64 indices: a boolean mask's True positions, else the
    integers themselves (``name`` is the argument in error messages)."""
    if hasattr(subset, "detach"):  # a torch tensor
        subset = subset.detach().cpu().numpy()
    arr = np.asarray(subset)
    if arr.dtype == bool:
        if arr.ndim != 1:
            raise ValueError(f"{name}: a boolean mask must be 1-d, got shape {arr.shape}")
        return np.flatnonzero(arr)
    if arr.size and arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer indices or booleans, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


class RetrainingHarness:
    """Retrain on subsets (seeded), evaluate, cache each result; resumable.

    Args:
        train_fn: ``train_fn(indices, seed) -> model``: trains from scratch on the training
            samples ``indices`` (int64, ascending) with the given seed.
        evaluate_fn: ``evaluate_fn(model) -> array``: what the metrics need from a
            retrained model (e.g. test logits ``(n_test, K)``); must have the same shape
            for every subset.
        cache_dir: directory of the per-run ``.npy`` files; ``None``: no cache.
        tag: identifies the training procedure/data/evaluation in the cache key.
        progress: a progress bar over the runs (tqdm).

    Complexity: one ``train_fn`` + ``evaluate_fn`` call per uncached (subset, seed).
    """

    def __init__(
        self,
        train_fn: Callable[[np.ndarray, int], Any],
        evaluate_fn: Callable[[Any], Any],
        *,
        cache_dir: str | os.PathLike | None = None,
        tag: str = "default",
        progress: bool = True,
    ) -> None:
        if not callable(train_fn) or not callable(evaluate_fn):
            raise TypeError("train_fn and evaluate_fn must be callables")
        if not isinstance(tag, str) or not tag:
            raise ValueError(f"tag must be a non-empty string, got {tag!r}")
        self.train_fn = train_fn
        self.evaluate_fn = evaluate_fn
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.tag = tag
        self.progress = progress
        self.n_trained = 0  # runs actually trained (not read from the cache) by this object

    def _path(self, indices: np.ndarray, seed: int) -> Path:
        assert self.cache_dir is not None
        h = hashlib.sha256()
        h.update(b"retrain-v1\0" + self.tag.encode() + b"\0" + str(int(seed)).encode() + b"\0")
        h.update(np.ascontiguousarray(indices, dtype=np.int64).tobytes())
        return self.cache_dir / f"retrain-{h.hexdigest()[:40]}.npy"

    def is_cached(self, indices: Any, seed: int = 0) -> bool:
        """Whether the result of (``indices``, ``seed``) is in the cache (False without one);
        lets a caller report on finished runs without training the others.  O(1) file check."""
        if self.cache_dir is None:
            return False
        idx = np.unique(np.asarray(indices, dtype=np.int64).reshape(-1))
        return self._path(idx, seed).exists()

    def run_one(self, indices: Any, seed: int = 0) -> np.ndarray:
        """Train on ``indices`` (integers, or a boolean mask) with ``seed`` (or read the
        cached result) and evaluate."""
        idx = np.unique(_subset_indices(indices, "indices").reshape(-1))
        if idx.size == 0:
            raise ValueError("the training subset is empty")
        path = None if self.cache_dir is None else self._path(idx, seed)
        if path is not None and path.exists():
            try:
                # Memory-mapped first: a header claiming more data than the file holds is
                # refused by the map (ValueError) before anything that size is allocated.
                cached = np.load(path, mmap_mode="r", allow_pickle=False)
                if not isinstance(cached, np.ndarray):
                    raise ValueError("not a .npy array")
                return np.array(cached)
            except (OSError, ValueError, EOFError, zipfile.BadZipFile):
                # A corrupt file (zero bytes after a crash, a truncated header, another
                # format): retrain and overwrite it.
                pass
        out = np.asarray(self.evaluate_fn(self.train_fn(idx, int(seed))))
        if out.dtype == object:
            raise TypeError("evaluate_fn must return a numeric array")
        self.n_trained += 1
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_save_npy(path, out)
        return out

    def run(
        self, subsets: Any, seeds: Sequence[int] | int = 0, *, desc: str = "retrain"
    ) -> np.ndarray:
        """Results of every subset, stacked ``(m, *result_shape)``.

        Args:
            subsets: ``(m, N)`` boolean masks, or ``m`` subsets each given as an index array
                or as a boolean mask (a list of bools, a bool array or tensor): a mask's
                ``True`` positions are the subset.
            seeds: one seed for all runs, or one per subset.
        """
        if isinstance(subsets, np.ndarray) and subsets.dtype == bool:
            if subsets.ndim != 2:
                raise ValueError(f"subset masks must be (m, N), got {subsets.shape}")
            index_sets = [np.flatnonzero(row) for row in subsets]
        else:
            # Each subset on its own: a boolean mask (list of bools, bool array or tensor)
            # is its True positions, never the indices {0, 1}.
            index_sets = [_subset_indices(s, f"subsets[{j}]") for j, s in enumerate(subsets)]
        m = len(index_sets)
        seed_list = [int(seeds)] * m if np.ndim(seeds) == 0 else [int(s) for s in seeds]
        if len(seed_list) != m:
            raise ValueError(f"got {len(seed_list)} seeds for {m} subsets")
        runs: Any = range(m)
        if self.progress:
            from tqdm.auto import tqdm

            runs = tqdm(runs, desc=desc, leave=False)
        results = [self.run_one(index_sets[j], seed_list[j]) for j in runs]
        shapes = {r.shape for r in results}
        if len(shapes) != 1:
            raise ValueError(f"evaluate_fn returned different shapes: {sorted(shapes)}")
        return np.stack(results)
