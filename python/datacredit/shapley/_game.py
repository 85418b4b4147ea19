"""The game protocol: a callable from coalitions to utilities, plus player names.

A *game* is any callable ``game(Z) -> utilities`` where ``Z`` is a boolean matrix
(m × n_players), row m the indicator of coalition m, and the result a float vector (m,).
It should carry a ``players`` attribute (a sequence of names); plain callables are
accepted together with an explicit ``n_players``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Callable

import numpy as np

from datacredit._arrays import check_int
from datacredit.direction import check_direction, declared_direction


class FunctionGame:
    """Wrap ``fn(Z) -> (m,)`` as a game with named players.

    Args:
        fn: callable taking a bool matrix (m × n) and returning m utilities.
        players: distinct player names (length n), or an int n >= 1 (names
            ``"0".."n-1"``).  A bool is neither.
        higher_is_better: True when a larger utility means a better model, False for a
            loss.  None leaves it undeclared: the values are still computed, but ranking
            them (``ShapleyValues.ranking``, ``to_frame``, ``plot``) asks for it.
    """

    def __init__(
        self,
        fn: Callable[[np.ndarray], Any],
        players: Sequence[Any] | int,
        *,
        higher_is_better: bool | None = None,
    ):
        self.higher_is_better = check_direction(higher_is_better)
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        if isinstance(players, (bool, np.bool_, int, np.integer)):
            players = [str(i) for i in range(check_int(players, "players", 1))]
        self.players = list(players)
        if not self.players:
            raise ValueError("players is empty")
        _check_distinct(self.players)
        self._fn = fn

    def __call__(self, Z: np.ndarray) -> np.ndarray:
        return np.asarray(self._fn(Z), dtype=np.float64)


class ProgressGame:
    """``game`` with a labelled tqdm bar counting the coalitions evaluated (the players and
    the direction are the game's).  Use with an estimator's ``batch_size`` so that the bar
    moves; :meth:`close` ends the bar on its own line.

    Args:
        game: the game.  total: coalitions expected (the bar's total; corrected at
            :meth:`close` when the estimator evaluated another number).  desc: the label.
    """

    def __init__(self, game: Any, total: int, desc: str = "evaluating coalitions") -> None:
        from tqdm.auto import tqdm

        self.game = game
        self.players = game_players(game)
        self.higher_is_better = declared_direction(game, "game.higher_is_better")
        self.bar = tqdm(total=int(total), desc=desc, unit="coalition", leave=True)

    def __call__(self, Z: np.ndarray) -> np.ndarray:
        out = self.game(Z)
        self.bar.update(len(Z))
        return out

    def close(self) -> None:
        if self.bar.n != self.bar.total:
            self.bar.total = self.bar.n
            self.bar.refresh()
        self.bar.close()


def _check_distinct(players: list) -> None:
    try:
        distinct = len(set(players))
    except TypeError:  # unhashable names: nothing to compare cheaply
        return
    if distinct != len(players):
        seen: set = set()
        dup = next(p for p in players if p in seen or seen.add(p))
        raise ValueError(f"players must be distinct, {dup!r} appears more than once")


def game_players(game: Any, n_players: int | None = None) -> list:
    """Player names of ``game`` (its ``players`` attribute, or ``range(n_players)``)."""
    players = getattr(game, "players", None)
    if players is not None:
        players = list(players)
        if n_players is not None and len(players) != n_players:
            raise ValueError(
                f"n_players={n_players} disagrees with the game's {len(players)} players"
            )
        if not players:
            raise ValueError("game.players is empty")
        return players
    if not callable(game):
        raise TypeError(f"game must be callable, got {type(game).__name__}")
    if n_players is None:
        raise TypeError("game has no 'players' attribute: pass n_players")
    return [str(i) for i in range(check_int(n_players, "n_players", 1))]


def game_direction(game: Any) -> bool | None:
    """The ``higher_is_better`` that ``game`` declares, or None (TypeError for a non-bool)."""
    return declared_direction(game, "game.higher_is_better")


def evaluate(game: Any, Z: np.ndarray, *, batch_size: int | None = None) -> np.ndarray:
    """Evaluate ``game`` on the coalitions ``Z`` (m × n bool), in batches; returns float64 (m,).

    ``batch_size``: coalitions per call, an integer in ``[1, 2**31 - 1]`` (``None``: one call).
    Raises a ValueError when the game returns the wrong shape or a non-finite value.
    """
    if not callable(game):
        raise TypeError(f"game must be callable, got {type(game).__name__}")
    Z = np.asarray(Z, dtype=bool)
    m = Z.shape[0]
    if batch_size is not None:
        batch_size = check_int(batch_size, "batch_size", 1, 2**31 - 1)
    bs = max(1, m) if batch_size is None else batch_size
    out = np.empty(m, dtype=np.float64)
    for start in range(0, m, bs):
        chunk = Z[start : start + bs]
        vals = np.asarray(game(chunk.copy()), dtype=np.float64)
        if vals.ndim == 2 and vals.shape[1] == 1:
            vals = vals[:, 0]
        if vals.shape != (chunk.shape[0],):
            raise ValueError(
                f"the game returned shape {vals.shape} for {chunk.shape[0]} coalitions; "
                f"expected ({chunk.shape[0]},)"
            )
        if not np.isfinite(vals).all():
            bad = np.flatnonzero(~np.isfinite(vals))[0]
            raise ValueError(
                f"the game returned a non-finite utility ({vals[bad]}) for coalition "
                f"{np.flatnonzero(chunk[bad]).tolist()}"
            )
        out[start : start + bs] = vals
    return out
