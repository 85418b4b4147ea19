"""The training-free proxy game (eq. 5): v̂(S) = F(Σ_{y ∈ Y_S} π_S(y) p_θ(x | y))."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


class ProxyGame:
    """A game over contributors whose coalition utility is a utility of the label mixture.

    Args:
        bank: a :class:`SampleBank` holding each label's samples (or features).
        contributors: mapping player → its labels (a label or a list of labels); a label
            may belong to several players.  Y_S is the union of the coalition's labels.
        utility: a :mod:`datacredit.utilities` object (``prepare(bank)`` /
            ``evaluate(weights)``); it is prepared here, once.
        label_weights: training counts per label (a mapping label → count or a sequence
            aligned with ``bank.labels``): π_S(y) ∝ count(y) on Y_S (eq. 4).  None: the
            bank's :attr:`~SampleBank.label_counts` (set when it was built from a labelled
            dataset, ``train_labels=``); a bank without them needs this argument.
            ``"uniform"``: π_S uniform over Y_S.  Only ratios matter (the counts are scaled
            by their maximum, so any finite positive magnitude is exact).
        empty_value: v(∅); querying the empty coalition without it raises.

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
    ):
        if not isinstance(contributors, Mapping) or not contributors:
            raise ValueError("contributors must be a non-empty mapping player -> labels")
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
        self.empty_value = None if empty_value is None else float(empty_value)
        self.bank = bank
        self.utility = utility
        utility.prepare(bank)

    @property
    def n_players(self) -> int:
        return len(self.players)

    def weights(self, Z: Any) -> np.ndarray:
        """Mixture weights π_S (m × L) of coalitions Z (m × n_players); empty rows are zero."""
        Z = np.asarray(Z)
        if Z.ndim != 2 or Z.shape[1] != self.n_players:
            raise ValueError(f"Z must have shape (m, {self.n_players}), got {Z.shape}")
        has = (Z.astype(bool).astype(np.int64) @ self.membership.astype(np.int64)) > 0
        W = has * self.label_weights[None, :]
        tot = W.sum(1, keepdims=True)
        return np.divide(W, tot, out=np.zeros_like(W), where=tot > 0)

    def __call__(self, Z: Any) -> np.ndarray:
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
