"""The result of every Shapley estimator: :class:`ShapleyValues`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from datacredit._io import atomic_save_npz, atomic_write_text
from datacredit.direction import check_direction, describe, improvement


def _plain(x: Any, where: str) -> Any:
    """``x`` as plain JSON types (numpy scalars/arrays converted); TypeError naming ``where``."""
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x)
    if x is None or isinstance(x, str):
        return x
    if isinstance(x, np.ndarray):
        return [_plain(e, f"{where}[{i}]") for i, e in enumerate(x.tolist())]
    if isinstance(x, (list, tuple)):
        return [_plain(e, f"{where}[{i}]") for i, e in enumerate(x)]
    if isinstance(x, dict):
        out = {}
        for k, e in x.items():
            if not isinstance(k, (str, int, np.integer)):
                raise TypeError(f"{where} has a key of type {type(k).__name__}; use str keys")
            out[str(k)] = _plain(e, f"{where}[{k!r}]")
        return out
    raise TypeError(
        f"{where} holds a {type(x).__name__}, which cannot be saved; use numbers, strings, "
        "lists and dicts"
    )


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
        cv_score: model-selection score of the surrogate (SurrogateSHAP), else None.
        method: name of the estimator.
        info: extra details (chosen hyper-parameters, budget, ...); converted to plain JSON
            types on construction (numpy scalars and arrays become numbers and lists), and
            anything that cannot be saved raises TypeError here, not at :meth:`save`.
        stderr: float64 (n,), standard error of each value (None when the estimator gives
            none; 0 for exact values).
        interactions: float64 (n × n) symmetric pairwise Shapley interaction index (None
            unless asked for): > 0 complementary contributors, < 0 redundant ones.
        higher_is_better: the direction of the game's utility (True: larger = better
            model; False: a loss such as FID), taken from the game; None when the game
            declared none.  ``values`` are always in the utility's own units and sign;
            :attr:`improvement`, :meth:`ranking`, :meth:`to_frame`, :meth:`plot`,
            :meth:`summary` and the saved files orient them so that the most helpful
            contributor comes first, and ask for the direction when it is None.
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
    stderr: np.ndarray | None = None
    interactions: np.ndarray | None = None
    higher_is_better: bool | None = None

    def __post_init__(self) -> None:
        self.higher_is_better = check_direction(self.higher_is_better)
        self.values = np.asarray(self.values, dtype=np.float64)
        self.players = list(self.players)
        if self.values.shape != (len(self.players),):
            raise ValueError(
                f"values has shape {self.values.shape} but there are {len(self.players)} players"
            )
        if not isinstance(self.info, dict):
            raise TypeError(f"info must be a dict, got {type(self.info).__name__}")
        self.info = _plain(self.info, "info")
        self.players = [
            _plain(p, "players") if isinstance(p, (np.generic, int, float, str)) else str(p)
            for p in self.players
        ]
        if self.stderr is not None:
            self.stderr = np.asarray(self.stderr, dtype=np.float64)
            if self.stderr.shape != self.values.shape:
                raise ValueError(
                    f"stderr has shape {self.stderr.shape}, expected {self.values.shape}"
                )
        if self.interactions is not None:
            n = len(self.players)
            self.interactions = np.asarray(self.interactions, dtype=np.float64)
            if self.interactions.shape != (n, n):
                raise ValueError(
                    f"interactions has shape {self.interactions.shape}, expected {(n, n)}"
                )
            # symmetric by definition; average away float rounding
            self.interactions = (self.interactions + self.interactions.T) / 2

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

    def _direction(self, what: str) -> bool:
        hib = check_direction(self.higher_is_better)
        if hib is None:
            raise ValueError(
                f"{what} needs the direction of the game's utility, which it did not declare: "
                "set higher_is_better=True if larger utilities mean a better model, False for "
                "a loss (e.g. FunctionGame(fn, players, higher_is_better=...), "
                "ProxyGame(..., higher_is_better=...), or sv.higher_is_better = ...)"
            )
        return hib

    @property
    def improvement(self) -> np.ndarray:
        """float64 (n,): the values oriented so that positive = makes the model better
        (``values`` for a higher-is-better utility, ``-values`` for a loss)."""
        return improvement(self.values, self._direction("improvement"))

    @property
    def direction(self) -> str:
        """One line saying which way ``values`` point."""
        return describe(self.higher_is_better)

    def ranking(self, descending: bool = True) -> list:
        """Players most helpful first (largest :attr:`improvement`; ties keep the players'
        order); ``descending=False``: most harmful first."""
        imp = improvement(self.values, self._direction("ranking"))
        order = np.argsort(-imp if descending else imp, kind="stable")
        return [self.players[i] for i in order]

    def to_frame(self):
        """A pandas DataFrame (player, value[, stderr], improvement, rank), most helpful
        first: ``value`` in the utility's units and sign, ``improvement`` oriented so that
        positive = makes the model better, ``rank`` 1 = most helpful.  ``frame.attrs``
        holds ``higher_is_better`` and the ``direction`` in words."""
        import pandas as pd

        imp = improvement(self.values, self._direction("to_frame"))
        df = pd.DataFrame({"player": self.players, "value": self.values})
        if self.stderr is not None:
            df["stderr"] = self.stderr
        df["improvement"] = imp
        rank = np.empty(len(self), np.int64)
        rank[np.argsort(-imp, kind="stable")] = np.arange(1, len(self) + 1)
        df["rank"] = rank
        df = df.sort_values("rank").reset_index(drop=True)
        df.attrs.update(higher_is_better=self.higher_is_better, direction=self.direction)
        return df

    def summary(self) -> dict[str, Any]:
        """Plain JSON types for a results file: the values in player order, their
        :attr:`improvement`, the direction and the ``ranking`` (most helpful first)."""
        hib = self._direction("summary")
        out: dict[str, Any] = {
            "players": [_plain(p, "players") for p in self.players],
            "values": self.values.tolist(),
            "higher_is_better": hib,
            "direction": self.direction,
            "improvement": improvement(self.values, hib).tolist(),
            "ranking": [_plain(p, "players") for p in self.ranking()],
            "v_empty": float(self.v_empty),
            "v_full": float(self.v_full),
            "efficiency_gap": self.efficiency_gap,
        }
        if self.stderr is not None:
            out["stderr"] = self.stderr.tolist()
        return out

    def interactions_frame(self):
        """The pairwise interactions as a pandas DataFrame (players × players)."""
        import pandas as pd

        if self.interactions is None:
            raise ValueError("no interactions: use explain(game, interactions=True)")
        names = [str(p) for p in self.players]
        return pd.DataFrame(self.interactions, index=names, columns=names)

    def plot_interactions(self, ax=None):
        """Heat map of the pairwise interactions (diverging colours, 0 = white); the Axes."""
        import matplotlib.pyplot as plt

        df = self.interactions_frame()
        if ax is None:
            _, ax = plt.subplots(figsize=(0.4 * len(df) + 2, 0.4 * len(df) + 1.5))
        lim = float(np.abs(df.values).max()) or 1.0
        im = ax.imshow(df.values, cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax.set_xticks(range(len(df)), df.columns, rotation=90)
        ax.set_yticks(range(len(df)), df.index)
        ax.figure.colorbar(im, ax=ax, label="Shapley interaction")
        ax.set_title("pairwise interactions")
        return ax

    def plot(self, ax=None, *, top: int | None = None, sort: bool = True):
        """Horizontal bar chart of :attr:`improvement` (matplotlib), most helpful at the
        top: green bars make the model better, red ones worse; the axis label says which
        way the utility points.  Returns the Axes."""
        import matplotlib.pyplot as plt

        hib = self._direction("plot")
        imp = improvement(self.values, hib)
        order = np.argsort(-imp, kind="stable") if sort else np.arange(len(self))
        if top is not None:
            order = order[:top]
        if ax is None:
            _, ax = plt.subplots(figsize=(6, 0.3 * len(order) + 1))
        vals = imp[order]
        colors = ["tab:green" if v > 0 else "tab:red" for v in vals]
        err = None
        if self.stderr is not None and np.isfinite(self.stderr).all():
            err = self.stderr[order][::-1]  # one standard error either side
        ax.barh(
            [str(self.players[i]) for i in order][::-1],
            vals[::-1],
            color=colors[::-1],
            xerr=err,
            ecolor="k",
            capsize=2,
        )
        ax.axvline(0, color="k", lw=0.5)
        if hib:
            ax.set_xlabel("Shapley value (positive = makes the model better)")
        else:
            ax.set_xlabel("−Shapley value of the loss (positive = makes the model better)")
        ax.set_title(self.method or "Shapley values")
        return ax

    # ------------------------------------------------------------------ persistence
    def _meta(self) -> dict[str, Any]:
        return {
            "players": self.players,
            "v_empty": float(self.v_empty),
            "v_full": float(self.v_full),
            "cv_score": None if self.cv_score is None else float(self.cv_score),
            "method": self.method,
            "info": self.info,
            "higher_is_better": self.higher_is_better,
        }

    def save(self, path: str | Path, *, format: str | None = None) -> None:
        """Write to exactly ``path``, atomically (temp file, fsync, rename).

        The file holds ``higher_is_better`` and, when it is declared, the ``ranking``
        (most helpful first) and the ``improvement`` of each player, so a reader of the
        file ranks the players the same way as :meth:`to_frame`.

        ``format``: ``"json"`` (everything as lists) or ``"npz"`` (arrays binary, metadata
        as JSON); None picks it from the suffix, ``.npz`` for any other name.
        """
        path = Path(path)
        fmt = format or ("json" if path.suffix == ".json" else "npz")
        if fmt not in ("json", "npz"):
            raise ValueError(f"unknown format {format!r}; expected 'json' or 'npz'")
        meta = self._meta()
        if self.higher_is_better is not None:
            meta["ranking"] = self.ranking()
            meta["improvement"] = self.improvement.tolist()
        if fmt == "json":
            meta["values"] = self.values.tolist()
            if self.stderr is not None:
                meta["stderr"] = self.stderr.tolist()
            if self.interactions is not None:
                meta["interactions"] = self.interactions.tolist()
            if self.coalitions is not None:
                meta["coalitions"] = self.coalitions.astype(int).tolist()
                meta["utilities"] = np.asarray(self.utilities).tolist()
            atomic_write_text(path, json.dumps(meta, indent=1))
            return
        arrays = {"values": self.values, "meta": np.array(json.dumps(meta))}
        if self.stderr is not None:
            arrays["stderr"] = self.stderr
        if self.interactions is not None:
            arrays["interactions"] = self.interactions
        if self.coalitions is not None:
            arrays["coalitions"] = np.asarray(self.coalitions, dtype=bool)
            arrays["utilities"] = np.asarray(self.utilities, dtype=np.float64)
        atomic_save_npz(path, arrays)

    @classmethod
    def load(cls, path: str | Path) -> ShapleyValues:
        """Load what :meth:`save` wrote (format from the file's first bytes)."""
        path = Path(path)
        with open(path, "rb") as f:
            head = f.read(2)
        if head != b"PK":
            meta = json.loads(path.read_text())
            meta.pop("ranking", None)  # derived: recomputed from values and direction
            meta.pop("improvement", None)
            coal = meta.pop("coalitions", None)
            util = meta.pop("utilities", None)
            values = meta.pop("values")
            se = meta.pop("stderr", None)
            inter = meta.pop("interactions", None)
            return cls(
                interactions=None if inter is None else np.asarray(inter, dtype=np.float64),
                values=np.asarray(values),
                coalitions=None if coal is None else np.asarray(coal, dtype=bool),
                utilities=None if util is None else np.asarray(util, dtype=np.float64),
                stderr=None if se is None else np.asarray(se, dtype=np.float64),
                **meta,
            )
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f["meta"]))
            meta.pop("ranking", None)
            meta.pop("improvement", None)
            return cls(
                values=f["values"],
                coalitions=f["coalitions"] if "coalitions" in f else None,
                utilities=f["utilities"] if "utilities" in f else None,
                stderr=f["stderr"] if "stderr" in f else None,
                interactions=f["interactions"] if "interactions" in f else None,
                **meta,
            )
