"""Mean scores: the mixture mean of any per-sample score (aesthetics, LPIPS, CLIP score...)."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from datacredit.direction import declared_direction
from datacredit.surrogateshap.utilities.base import (
    Utility,
    check_weights,
    direction_arg,
    features_per_label,
)


class OneLabel:
    """A view of one label of a bank (for per-label callables)."""

    def __init__(self, bank: Any, label: Any):
        self._bank, self.labels = bank, [label]

    def samples_for(self, label: Any) -> np.ndarray:
        """What is stored for ``label`` (the wrapped bank's samples)."""
        return self._bank.samples_for(label)

    def n_samples_for(self, label: Any) -> int:
        """Number of samples stored for ``label``."""
        return self._bank.n_samples_for(label)


class MeanScore(Utility):
    """Mixture mean of a per-sample score: Σ_l π_l · mean_l(score).

    Direction: that of the score (higher is better for aesthetic and CLIP scores; a
    distance to a reference, e.g. LPIPS, is a loss).

    Args:
        score: callable from bank samples to one number per sample (n,) — an aesthetic
            predictor, LPIPS to a reference, CLIP score, any scorer; None when the bank
            already stores scores.
        sees_label: call ``score(samples, label)`` instead, for scorers that need the
            label or prompt the samples were generated for (paired LPIPS to the training
            image of the prompt, :class:`~datacredit.models.PairedToReference`; CLIP score
            to the prompt text).
        higher_is_better: True when a larger score means a better model; None takes what
            ``score`` declares (the library's scorers do: aesthetic, CLIP and quality
            scores are higher-is-better).  A score that declares nothing (a plain
            function, a distance to a reference) leaves it None, and ranking contributors
            by it then needs it (:class:`~datacredit.surrogateshap.ProxyGame` says so).
    Per coalition: O(L).
    """

    def __init__(
        self,
        score: Callable | None = None,
        *,
        batch_size: int | None = None,
        sees_label: bool = False,
        higher_is_better: bool | None = None,
    ):
        if sees_label and score is None:
            raise ValueError("sees_label=True needs a score callable")
        self.score = score
        self.batch_size = batch_size
        self.sees_label = bool(sees_label)
        declared = None if score is None else declared_direction(score)
        self.higher_is_better = direction_arg(higher_is_better, declared, "MeanScore")
        if declared is not None and self.higher_is_better != declared:
            raise ValueError(
                f"higher_is_better={self.higher_is_better} contradicts the score "
                f"({type(score).__name__}), which declares higher_is_better={declared}"
            )
        self._ready = False

    def prepare(self, bank: Any) -> MeanScore:
        if self.sees_label:
            vals = []
            for label in bank.labels:
                fn = self.score

                def with_label(x, fn=fn, label=label):
                    return fn(x, label)

                lab_bank = OneLabel(bank, label)
                vals.extend(features_per_label(lab_bank, with_label, self.batch_size, "score"))
        else:
            vals = features_per_label(bank, self.score, self.batch_size, "score")
        for v in vals:
            if v.shape[1] != 1:
                raise ValueError(f"score must return one number per sample, got {v.shape}")
        self.n_labels = len(vals)
        self._means = np.array([v.mean() for v in vals])
        self._ready = True
        return self

    def evaluate(self, weights: Any) -> np.ndarray:
        self._require()
        return check_weights(weights, self.n_labels) @ self._means
