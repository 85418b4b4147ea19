"""GMValuation: the values of a GMValuator run and the per-generated-sample matches."""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from datacredit._io import atomic_save_npz, to_jsonable

_FORMAT = "datacredit.GMValuation/1"
AGGREGATIONS = ("sum", "mean", "max")


@dataclass
class GMValuation:
    """Result of :meth:`GMValuator.value`.

    Attributes:
        values: ``(N,)`` float64, value of each training sample (eq. 5): the sum over
            generated samples j that rank it among their top k of
            ``q_j * softmax(-d_j / T)`` (eq. 6).
        topk_indices: ``(n_gen, k)`` int64 training indices per generated sample, nearest
            first.
        topk_weights: ``(n_gen, k)`` float64 contributions ``q_j * softmax(-d_j / T)``;
            each row sums to ``q_j``.
        topk_distances: ``(n_gen, k)`` float64 re-ranking distances.
        quality: ``(n_gen,)`` float64 quality scores ``q_j`` in [0, 1].
        diagnostics: timings, index parameters and (for approximate indexes) recall@k of
            the recall stage against exact search on a sample of generated points.
    """

    values: np.ndarray
    topk_indices: np.ndarray
    topk_weights: np.ndarray
    topk_distances: np.ndarray
    quality: np.ndarray
    diagnostics: dict[str, Any] = field(default_factory=dict)

    @property
    def n_train(self) -> int:
        return int(self.values.shape[0])

    def ranking(self) -> np.ndarray:
        """Training indices by decreasing value (ties to the lower index)."""
        return np.lexsort((np.arange(self.n_train), -self.values))

    def _aggregate(self, groups: Any, agg: str) -> tuple[np.ndarray, np.ndarray]:
        if agg not in AGGREGATIONS:
            raise ValueError(f"unknown agg {agg!r}; expected one of {AGGREGATIONS}")
        g = np.asarray(groups.detach().cpu().numpy() if hasattr(groups, "detach") else groups)
        if g.ndim != 1 or g.shape[0] != self.n_train:
            raise ValueError(f"groups must have shape ({self.n_train},), got {g.shape}")
        labels, inv = np.unique(g, return_inverse=True)
        sums = np.bincount(inv, weights=self.values, minlength=len(labels))
        if agg == "sum":
            return labels, sums
        if agg == "mean":
            return labels, sums / np.bincount(inv, minlength=len(labels))
        out = np.full(len(labels), -np.inf)
        np.maximum.at(out, inv, self.values)
        return labels, out

    def group_values(self, groups: Any, agg: str = "sum") -> dict[Any, float]:
        """Contributor-level values: a dict group label → aggregated value, in sorted label
        order (labels as plain Python scalars; higher = contributed more).

        Args:
            groups: ``(N,)`` group label of each training sample (any sortable dtype).
            agg: ``"sum"``, ``"mean"`` or ``"max"`` of the member values.

        ``O(N log N)``.
        """
        labels, vals = self._aggregate(groups, agg)
        return {
            lab.item() if isinstance(lab, np.generic) else lab: float(v)
            for lab, v in zip(labels, vals)
        }

    def by_group(self, groups: Any, agg: str = "sum") -> tuple[np.ndarray, np.ndarray]:
        """Deprecated (removed in the next release): the ``(labels, values)`` arrays of
        :meth:`group_values`, which returns a mapping label → value."""
        import warnings

        warnings.warn(
            "GMValuation.by_group returns a (labels, values) tuple and will be removed in the "
            "next release; use GMValuation.group_values, a dict label -> value",
            DeprecationWarning,
            stacklevel=2,
        )
        return self._aggregate(groups, agg)

    def to_frame(self) -> Any:
        """A pandas DataFrame, one row per training sample: index, value, rank (1 = best),
        and how many generated samples matched it."""
        try:
            import pandas as pd
        except ImportError as exc:  # pragma: no cover
            raise ImportError("to_frame needs pandas: pip install pandas") from exc
        rank = np.empty(self.n_train, np.int64)
        rank[self.ranking()] = np.arange(1, self.n_train + 1)
        matches = np.bincount(self.topk_indices.ravel(), minlength=self.n_train)
        return pd.DataFrame(
            {
                "index": np.arange(self.n_train),
                "value": self.values,
                "rank": rank,
                "n_matches": matches,
            }
        )

    def save(self, path: str | os.PathLike) -> None:
        """Write an ``.npz`` of plain arrays at exactly ``path`` (no suffix added),
        atomically (diagnostics as a JSON string; nothing pickled)."""
        atomic_save_npz(
            path,
            {
                "format": np.array(_FORMAT),
                "values": self.values,
                "topk_indices": self.topk_indices,
                "topk_weights": self.topk_weights,
                "topk_distances": self.topk_distances,
                "quality": self.quality,
                "diagnostics": np.array(json.dumps(self.diagnostics, default=to_jsonable)),
            },
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> GMValuation:
        """Read a file written by :meth:`save` (``allow_pickle=False``); shapes, dtypes and
        indices are validated, so a damaged or foreign file raises ``ValueError``."""
        bad = f"{path} is not a datacredit GMValuation file"
        # a truncated or bit-flipped file fails inside zipfile (BadZipFile is no ValueError)
        damaged = (ValueError, OSError, EOFError, zipfile.BadZipFile)
        try:
            f = np.load(path, allow_pickle=False)
        except damaged as exc:
            raise ValueError(bad) from exc
        if not isinstance(f, np.lib.npyio.NpzFile):
            raise ValueError(bad)
        try:
            with f:
                need = {"format", "values", "topk_indices", "topk_weights", "topk_distances"}
                need |= {"quality", "diagnostics"}
                if not need <= set(f.files) or str(f["format"]) != _FORMAT:
                    raise ValueError(bad)
                arrays = {name: f[name] for name in need - {"format", "diagnostics"}}
                diag_text = str(f["diagnostics"])
        except damaged as exc:
            raise ValueError(f"{bad}: {exc}") from exc
        values, idx = arrays["values"], arrays["topk_indices"]
        if values.ndim != 1 or values.dtype.kind != "f":
            raise ValueError(f"{bad}: values has shape {values.shape}, dtype {values.dtype}")
        if idx.ndim != 2 or idx.dtype.kind not in "iu":
            raise ValueError(f"{bad}: topk_indices has shape {idx.shape}, dtype {idx.dtype}")
        for name in ("topk_weights", "topk_distances"):
            if arrays[name].shape != idx.shape or arrays[name].dtype.kind != "f":
                raise ValueError(f"{bad}: {name} has shape {arrays[name].shape}, not {idx.shape}")
        if arrays["quality"].shape != (idx.shape[0],):
            raise ValueError(f"{bad}: quality has shape {arrays['quality'].shape}")
        if idx.size and (idx.min() < 0 or idx.max() >= values.shape[0]):
            raise ValueError(f"{bad}: topk_indices outside [0, {values.shape[0]})")
        try:
            diagnostics = json.loads(diag_text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{bad}: diagnostics is not JSON") from exc
        return cls(
            values=values,
            topk_indices=idx.astype(np.int64, copy=False),
            topk_weights=arrays["topk_weights"],
            topk_distances=arrays["topk_distances"],
            quality=arrays["quality"],
            diagnostics=diagnostics,
        )
