"""Utilities of a resampled mixture set (common random numbers across coalitions): any
statistic of the drawn features, and the probe correlation."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from datacredit._arrays import to_numpy
from datacredit.metrics.correlation import spearman
from datacredit.surrogateshap.utilities.base import (
    Utility,
    check_weights,
    direction_arg,
    features_per_label,
)


class Resampled(Utility):
    """Any statistic of a sample set drawn from the mixture, with common random numbers.

    Direction: that of the statistic.

    For each coalition, ``n_samples`` draws: label k by inverting the CDF of π at a fixed
    uniform u_k, then a stored sample of that label at a fixed uniform u'_k.  The same
    (u, u') serve every coalition, which lowers the variance of utility differences.

    Args:
        statistic: callable from the drawn per-sample features (n_samples × p) to a float.
        features: callable from bank samples to per-sample features (n, p); None when the
            bank already stores them.
        n_samples: draws per coalition.  seed: seeds the common random numbers.
        higher_is_better: whether a larger statistic means a better model; no default
            (the statistic is yours), so a game ranking contributors by it asks for it.
    Per coalition: O(n_samples · (log L + p)) + the statistic.
    """

    def __init__(
        self,
        statistic: Callable[[np.ndarray], float],
        features: Callable | None = None,
        *,
        n_samples: int = 2048,
        seed: int = 0,
        batch_size: int | None = None,
        higher_is_better: bool | None = None,
    ):
        if not callable(statistic):
            raise TypeError("statistic must be callable")
        self.higher_is_better = direction_arg(higher_is_better, None, type(self).__name__)
        if n_samples < 2:
            raise ValueError(f"n_samples must be ≥ 2, got {n_samples}")
        self.statistic = statistic
        self.features = features
        self.n_samples = int(n_samples)
        self.seed = seed
        self.batch_size = batch_size
        self._ready = False

    def prepare(self, bank: Any) -> Resampled:
        feats = features_per_label(bank, self.features, self.batch_size, "features")
        self.n_labels = len(feats)
        self._feats = feats
        rng = np.random.default_rng(self.seed)
        self._u = rng.random(self.n_samples)
        self._u2 = rng.random(self.n_samples)
        self._counts = np.array([f.shape[0] for f in feats])
        self._ready = True
        return self

    def draw(self, pi: np.ndarray) -> np.ndarray:
        """The resampled feature set (n_samples × p) for mixture weights π (L,)."""
        cdf = np.cumsum(pi)
        cdf[-1] = 1.0
        lab = np.minimum(np.searchsorted(cdf, self._u, side="right"), self.n_labels - 1)
        idx = np.minimum((self._u2 * self._counts[lab]).astype(np.int64), self._counts[lab] - 1)
        out = np.empty((self.n_samples, self._feats[0].shape[1]))
        for lval in np.unique(lab):
            sel = lab == lval
            out[sel] = self._feats[lval][idx[sel]]
        return out

    def evaluate(self, weights: Any) -> np.ndarray:
        self._require()
        W = check_weights(weights, self.n_labels)
        return np.array([float(self.statistic(self.draw(pi))) for pi in W])


class ProbeCorrelation(Resampled):
    """Spearman correlation between two probes (e.g. sex and melanoma classifiers, §6) on
    a resampled mixture set, with common random numbers across coalitions.

    Direction: the correlation itself: a contributor that raises it gets a positive value
    (negate the values to credit contributors that lower a spurious correlation).

    Args:
        f1, f2: callables from bank samples to one number per sample; with both None the
            bank must store two columns (probe 1, probe 2).
        higher_is_better: no default: a correlation is the harm to rank by (a spurious
            correlation: pass False) or the goal (pass True).
    """

    def __init__(
        self,
        f1: Callable | None = None,
        f2: Callable | None = None,
        *,
        n_samples: int = 2048,
        seed: int = 0,
        batch_size: int | None = None,
        higher_is_better: bool | None = None,
    ):
        if (f1 is None) != (f2 is None):
            raise ValueError("give both probes f1 and f2, or neither (bank stores two columns)")
        feats = None
        if f1 is not None:

            def feats(x):
                a = np.asarray(to_numpy(f1(x), "f1 output"), float).reshape(-1)
                b = np.asarray(to_numpy(f2(x), "f2 output"), float).reshape(-1)
                return np.stack([a, b], 1)

        super().__init__(
            lambda z: spearman(z[:, 0], z[:, 1]),
            feats,
            n_samples=n_samples,
            seed=seed,
            batch_size=batch_size,
            higher_is_better=higher_is_better,
        )

    def prepare(self, bank: Any) -> ProbeCorrelation:
        super().prepare(bank)
        if self._feats[0].shape[1] != 2:
            raise ValueError(f"probe features must have 2 columns, got {self._feats[0].shape[1]}")
        return self
