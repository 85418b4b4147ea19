"""The training-free proxy game (eq. 5): v̂(S) = F(Σ_{y ∈ Y_S} π_S(y) p_θ(x | y))."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from datacredit._arrays import as_mask, check_float
from datacredit.direction import resolve_direction
from datacredit.surrogateshap import stages


@dataclass
class SufficiencyReport:
    """Is the bank large enough?  See :meth:`ProxyGame.sufficiency`.

    Attributes:
        singleton_values: (n,) v({i}) on the full bank.
        half_values: (2, n) v({i}) on each half of the bank.
        movement: mean over players of |v_half1({i}) − v_half2({i})|.
        spread: standard deviation of v({i}) over the players.
        ratio: movement / spread; the smallest coalitions' utilities move this much (in
            units of the contributors' spread) when the bank is replaced by another of half
            the size — about 2× the noise of the full bank for a mean-like utility.
        sufficient: ratio ≤ the threshold.
    """

    singleton_values: np.ndarray
    half_values: np.ndarray
    movement: float
    spread: float
    ratio: float
    sufficient: bool


class ProxyGame:
    """A game over contributors whose coalition utility is a utility of the label mixture.

    Args:
        bank: a :class:`SampleBank` holding each label's samples (or features).
        contributors: mapping player → its labels (a label or a list of labels); a label
            may belong to several players.  Y_S is the union of the coalition's labels.
        utility: a :mod:`datacredit.surrogateshap.utilities` object (``prepare(bank)`` /
            ``evaluate(weights)``); it is prepared here, once.
        label_weights: training counts per label (a mapping label → count or a sequence
            aligned with ``bank.labels``): π_S(y) ∝ count(y) on Y_S (eq. 4).  None: the
            bank's :attr:`~SampleBank.label_counts` (set when it was built from a labelled
            dataset, ``train_labels=``); a bank without them needs this argument.
            ``"uniform"``: π_S uniform over Y_S.  Only ratios matter (the counts are scaled
            by their maximum, so any finite positive magnitude is exact).
        empty_value: v(∅); querying the empty coalition without it raises.
        higher_is_better: the utility's direction (True: larger = better model; False: a
            loss such as FID).  None takes what ``utility`` declares; a utility that
            declares none (a user's statistic) needs it here, and one that contradicts
            the utility's own declaration raises.  Results rank contributors most helpful
            first by it (:attr:`ShapleyValues.improvement`).

    Call with a bool matrix Z (m × n_players); returns float64 (m,).  Cost per coalition:
    O(n_players · L) for the weights + the utility's per-coalition cost.
    """

    def __init__(
        self,
        bank: Any,
        contributors: Mapping[Any, Any],
        utility: Any,
        *,
        label_weights: Mapping[Any, float] | Sequence[float] | str | None = None,
        empty_value: float | None = None,
        higher_is_better: bool | None = None,
    ):
        if not isinstance(contributors, Mapping) or not contributors:
            raise ValueError("contributors must be a non-empty mapping player -> labels")
        if not hasattr(bank, "labels"):
            raise TypeError(f"bank must be a SampleBank, got {type(bank).__name__}")
        labels = bank.labels
        index = {lab: i for i, lab in enumerate(labels)}
        self.players = list(contributors)
        B = np.zeros((len(self.players), len(labels)), dtype=bool)
        missing = []
        for p, (player, labs) in enumerate(contributors.items()):
            if isinstance(labs, (str, int, np.integer)):
                labs = [labs]
            labs = list(labs)
            if not labs:
                raise ValueError(f"player {player!r} has no labels")
            for lab in labs:
                lab = int(lab) if isinstance(lab, np.integer) else lab
                if lab not in index:
                    missing.append(lab)
                else:
                    B[p, index[lab]] = True
        if missing:
            raise ValueError(f"labels missing from the sample bank: {missing[:10]}")
        self.membership = B
        if label_weights is None:
            label_weights = getattr(bank, "label_counts", None)
            if label_weights is None:
                raise ValueError(
                    "label_weights is required: pass the training count of each label (paper "
                    "eq. 4), build the bank with train_labels=..., or pass 'uniform'"
                )
        if isinstance(label_weights, str):
            if label_weights != "uniform":
                raise ValueError(
                    f"label_weights must be counts or 'uniform', got {label_weights!r}"
                )
            base = np.ones(len(labels))
        elif isinstance(label_weights, Mapping):
            absent = [lab for lab in labels if lab not in label_weights and B[:, index[lab]].any()]
            if absent:
                raise ValueError(f"label_weights has no count for labels {absent[:10]}")
            base = np.array([float(label_weights.get(lab, 0.0)) for lab in labels])
        else:
            base = np.asarray(label_weights, dtype=np.float64).ravel()
            if base.shape != (len(labels),):
                raise ValueError(
                    f"label_weights must have one count per bank label ({len(labels)}), got {base.shape}"
                )
        if not np.isfinite(base).all() or (base < 0).any():
            raise ValueError("label_weights must be finite and non-negative")
        used = B.any(0)
        if (base[used] <= 0).any():
            raise ValueError("every label of a player needs a positive weight")
        # only ratios matter; scaling by the maximum keeps sums finite (1e308 counts used to
        # overflow to inf and turn every mixture into the empty one)
        self.label_weights = base / base.max()
        self.empty_value = None if empty_value is None else check_float(empty_value, "empty_value")
        if not (
            callable(getattr(utility, "prepare", None))
            and callable(getattr(utility, "evaluate", None))
        ):
            raise TypeError(
                "utility must be a datacredit.surrogateshap.utilities object (prepare(bank), "
                f"evaluate(weights)), got {type(utility).__name__}"
            )
        self.higher_is_better = resolve_direction(higher_is_better, utility, "the utility")
        self.bank = bank
        self.utility = utility
        utility.prepare(bank)
        self.bank_warning: str | None = None
        check = getattr(utility, "bank_warning", None)
        if callable(check):
            # the utility knows when its finite-bank estimate cannot be trusted (e.g. FID
            # with fewer samples than feature dimensions): say so once, unasked
            self.bank_warning = check(self.weights(np.eye(self.n_players, dtype=bool)))
            if self.bank_warning:
                warnings.warn(self.bank_warning, UserWarning, stacklevel=2)

    @property
    def n_players(self) -> int:
        return len(self.players)

    def sufficiency(
        self, *, threshold: float = 0.5, seed: int = 0, warn: bool = True
    ) -> SufficiencyReport:
        """Split every label's samples into two fixed halves, re-prepare the utility on each
        half (on copies; this game is unchanged) and compare the singleton coalitions'
        utilities; warns (UserWarning) when their movement exceeds ``threshold`` times the
        spread between contributors — then the values depend on which samples the bank
        happens to hold: generate more per label.

        Cost: two ``utility.prepare`` calls on half banks + 3·n_players evaluations.
        """
        from datacredit.surrogateshap.bank import SampleBank

        rng = np.random.default_rng(seed)
        halves: list[dict] = [{}, {}]
        for lab in self.bank.labels:
            x = np.asarray(self.bank.samples_for(lab))
            if len(x) < 2:
                raise ValueError(f"label {lab!r} has {len(x)} sample; the halves need >= 2")
            order = rng.permutation(len(x))
            a, b = np.array_split(order, 2)
            halves[0][lab], halves[1][lab] = x[np.sort(a)], x[np.sort(b)]
        Z = np.eye(self.n_players, dtype=bool)
        full = self(Z)
        half_vals = []
        for h in halves:
            u = copy.copy(self.utility)
            u.prepare(SampleBank(h))
            half_vals.append(u.evaluate(self.weights(Z)))
        half_vals = np.array(half_vals)
        movement = float(np.mean(np.abs(half_vals[0] - half_vals[1])))
        spread = float(np.std(full)) if self.n_players > 1 else 0.0
        ratio = movement / spread if spread > 0 else float("inf")
        ok = bool(ratio <= threshold)
        if warn and not ok:
            warnings.warn(
                f"sample bank may be too small for {type(self.utility).__name__}: the "
                f"single-contributor utilities move by {movement:.3g} between two halves of "
                f"the bank, {ratio:.2f}x the spread between contributors ({spread:.3g}); "
                "generate more samples per label",
                UserWarning,
                stacklevel=2,
            )
        return SufficiencyReport(full, half_vals, movement, spread, ratio, ok)

    def bias_bracket(self, Z: Any) -> np.ndarray:
        """Per-coalition bounds (m, 2) on the expected utility, from the utility's
        ``bracket`` (FID: lower, upper); NaN where the utility has none."""
        Z = np.asarray(Z, dtype=bool)
        out = np.full((Z.shape[0], 2), np.nan)
        br = getattr(self.utility, "bracket", None)
        nonempty = Z.any(1)
        if callable(br) and nonempty.any():
            out[nonempty] = br(self.weights(Z[nonempty]))
        return out

    def report(self, Z: Any) -> dict[str, np.ndarray] | None:
        """Per-coalition diagnostics of the utility's finite-bank estimate for coalitions Z
        (m × n_players), from the utility's ``report`` (FID: ``n_samples``, ``reliable``,
        ``plugin_bias``, ``stderr``; see :meth:`FID.report`); None when the utility has
        none.  The empty coalition (not estimated from the bank) gets 0 samples, False and
        NaN.  Coalitions already evaluated cost nothing more."""
        rep = getattr(self.utility, "report", None)
        if not callable(rep):
            return None
        Z = np.asarray(Z, dtype=bool)
        nonempty = Z.any(1)
        out: dict[str, np.ndarray] | None = None
        if nonempty.any():
            got = rep(self.weights(Z[nonempty]))
            out = {}
            for key, col in got.items():
                col = np.asarray(col)
                fill = (
                    False
                    if col.dtype == bool
                    else (0 if np.issubdtype(col.dtype, np.integer) else np.nan)
                )
                full = np.full(Z.shape[0], fill, dtype=col.dtype)
                full[nonempty] = col
                out[key] = full
        return out

    def weights(self, Z: Any) -> np.ndarray:
        """Mixture weights π_S (m × L) of coalitions Z (m × n_players); empty rows are zero."""
        Z = as_mask(Z, "Z")  # a 3 or 0.5 is no membership
        if Z.ndim != 2 or Z.shape[1] != self.n_players:
            raise ValueError(f"Z must have shape (m, {self.n_players}), got {Z.shape}")
        has = (Z.astype(bool).astype(np.int64) @ self.membership.astype(np.int64)) > 0
        W = has * self.label_weights[None, :]
        tot = W.sum(1, keepdims=True)
        return np.divide(W, tot, out=np.zeros_like(W), where=tot > 0)

    def __call__(
        self, Z: Any, *, executor: Any = None, batch_size: int | None = None
    ) -> np.ndarray:
        """Utilities float64 ``(m,)`` of coalitions ``Z``; with ``executor`` in batches of
        ``batch_size`` coalitions (``datacredit.surrogateshap.stages``)."""
        if executor is not None:
            return stages.utilities(self, Z, executor=executor, batch_size=batch_size)
        W = self.weights(Z)
        empty = ~np.asarray(Z, dtype=bool).any(1)
        if not np.allclose(W[~empty].sum(1), 1.0):  # pragma: no cover - guarded above
            raise RuntimeError("mixture weights do not sum to 1")
        out = np.empty(W.shape[0])
        if empty.any():
            if self.empty_value is None:
                raise ValueError(
                    "the empty coalition was queried but ProxyGame has no empty_value; "
                    "pass empty_value=v(∅) (e.g. the utility of an untrained model)"
                )
            out[empty] = self.empty_value
        if (~empty).any():
            out[~empty] = self.utility.evaluate(W[~empty])
        return out
