"""The result of every Shapley estimator: :class:`ShapleyValues`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class ShapleyValues:
    """Shapley values of a game's players plus what was used to get them.

    Attributes:
        values: float64 (n,), the value of each player.
        players: the n player names.
        v_empty: utility of the empty coalition, v(∅).
        v_full: utility of the grand coalition, v(N).
        coalitions: bool (m × n) coalitions evaluated (None when not kept).
        utilities: float64 (m,) their utilities (None when not kept).
        cv_score: cross-validated surrogate MSE (SurrogateSHAP), else None.
        method: name of the estimator.
        info: extra details (chosen hyper-parameters, budget, ...), JSON-serialisable.
    """

    values: np.ndarray
    players: list
    v_empty: float
    v_full: float
    coalitions: np.ndarray | None = None
    utilities: np.ndarray | None = None
    cv_score: float | None = None
    method: str = ""
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float64)
        self.players = list(self.players)
        if self.values.shape != (len(self.players),):
            raise ValueError(
                f"values has shape {self.values.shape} but there are {len(self.players)} players"
            )

    @property
    def efficiency_gap(self) -> float:
        """Σ φ_i − (v(N) − v(∅)); zero for an efficient estimator."""
        return float(self.values.sum() - (self.v_full - self.v_empty))

    def __len__(self) -> int:
        return len(self.players)

    def __repr__(self) -> str:
        return (
            f"ShapleyValues(method={self.method!r}, n_players={len(self.players)}, "
            f"v_empty={self.v_empty:.6g}, v_full={self.v_full:.6g}, "
            f"efficiency_gap={self.efficiency_gap:.3g})"
        )

    def ranking(self, descending: bool = True) -> list:
        """Players ordered by value (largest first by default)."""
        order = np.argsort(-self.values if descending else self.values, kind="stable")
        return [self.players[i] for i in order]

    def to_frame(self):
        """A pandas DataFrame (player, value, rank), sorted by decreasing value."""
        import pandas as pd

        df = pd.DataFrame({"player": self.players, "value": self.values})
        df["rank"] = df["value"].rank(ascending=False, method="first").astype(int)
        return df.sort_values("rank").reset_index(drop=True)

    def plot(self, ax=None, *, top: int | None = None, sort: bool = True):
        """Horizontal bar chart of the values (matplotlib); returns the Axes."""
        import matplotlib.pyplot as plt

        order = np.argsort(-self.values, kind="stable") if sort else np.arange(len(self))
        if top is not None:
            order = order[:top]
        if ax is None:
            _, ax = plt.subplots(figsize=(6, 0.3 * len(order) + 1))
        vals = self.values[order]
        colors = ["tab:red" if v > 0 else "tab:blue" for v in vals]
        ax.barh([str(self.players[i]) for i in order][::-1], vals[::-1], color=colors[::-1])
        ax.axvline(0, color="k", lw=0.5)
        ax.set_xlabel("Shapley value")
        ax.set_title(self.method or "Shapley values")
        return ax

    # ------------------------------------------------------------------ persistence
    def _meta(self) -> dict[str, Any]:
        return {
            "players": [p if isinstance(p, (str, int, float)) else str(p) for p in self.players],
            "v_empty": float(self.v_empty),
            "v_full": float(self.v_full),
            "cv_score": None if self.cv_score is None else float(self.cv_score),
            "method": self.method,
            "info": self.info,
        }

    def save(self, path: str | Path) -> None:
        """Save to ``.json`` (everything as lists) or ``.npz`` (arrays binary, metadata JSON)."""
        path = Path(path)
        meta = self._meta()
        if path.suffix == ".json":
            meta["values"] = self.values.tolist()
            if self.coalitions is not None:
                meta["coalitions"] = self.coalitions.astype(int).tolist()
                meta["utilities"] = np.asarray(self.utilities).tolist()
            path.write_text(json.dumps(meta, indent=1))
        elif path.suffix == ".npz":
            arrays = {"values": self.values, "meta": np.array(json.dumps(meta))}
            if self.coalitions is not None:
                arrays["coalitions"] = self.coalitions
                arrays["utilities"] = np.asarray(self.utilities)
            np.savez(path, **arrays)
        else:
            raise ValueError(f"path must end in .json or .npz, got {path.name!r}")

    @classmethod
    def load(cls, path: str | Path) -> ShapleyValues:
        """Load what :meth:`save` wrote."""
        path = Path(path)
        if path.suffix == ".json":
            meta = json.loads(path.read_text())
            coal = meta.pop("coalitions", None)
            util = meta.pop("utilities", None)
            values = meta.pop("values")
            return cls(
                values=np.asarray(values),
                coalitions=None if coal is None else np.asarray(coal, dtype=bool),
                utilities=None if util is None else np.asarray(util, dtype=np.float64),
                **meta,
            )
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as f:
                meta = json.loads(str(f["meta"]))
                return cls(
                    values=f["values"],
                    coalitions=f["coalitions"] if "coalitions" in f else None,
                    utilities=f["utilities"] if "utilities" in f else None,
                    **meta,
                )
        raise ValueError(f"path must end in .json or .npz, got {path.name!r}")
