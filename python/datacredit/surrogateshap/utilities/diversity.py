"""Diversity of the coalition's mixture: the expected score of two independent draws, exactly
from per-label-pair means or from sampled distinct pairs."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from datacredit._arrays import to_numpy
from datacredit.surrogateshap.utilities.base import Utility, check_weights, direction_arg


class PairwiseDiversity(Utility):
    """Expected pair score of two independent draws from the mixture: πᵀ D π.

    Direction: that of ``pair_score``; for a distance, higher = more diverse.

    D[l, l'] is the mean of ``pair_score`` over sample pairs of labels l and l' (distinct
    samples within a label), e.g. 1 − MS-SSIM or an LPIPS distance.

    Args:
        pair_score: callable (A (n_a, ...), B (n_b, ...)) → (n_a × n_b) scores.
        higher_is_better: True (default: more diverse is better); False when the pair
            score is a similarity, or when diversity is what should go down.
    Preparation: L(L+1)/2 calls; per coalition: O(L²).
    """

    def __init__(
        self,
        pair_score: Callable[[np.ndarray, np.ndarray], Any],
        *,
        higher_is_better: bool | None = None,
    ):
        if not callable(pair_score):
            raise TypeError("pair_score must be callable")
        self.higher_is_better = direction_arg(higher_is_better, True, "PairwiseDiversity")
        self.pair_score = pair_score
        self._ready = False

    def prepare(self, bank: Any) -> PairwiseDiversity:
        labels = bank.labels
        L = len(labels)
        D = np.zeros((L, L))
        xs = [np.asarray(bank.samples_for(lab)) for lab in labels]
        for i in range(L):
            for j in range(i, L):
                s = np.asarray(
                    to_numpy(self.pair_score(xs[i], xs[j]), "pair_score output"), dtype=np.float64
                )
                if s.shape != (len(xs[i]), len(xs[j])):
                    raise ValueError(
                        f"pair_score returned shape {s.shape}, expected {(len(xs[i]), len(xs[j]))}"
                    )
                if i == j:
                    n = len(xs[i])
                    if n < 2:
                        raise ValueError(f"label {labels[i]!r} needs at least 2 samples for pairs")
                    D[i, i] = (s.sum() - np.trace(s)) / (n * (n - 1))
                else:
                    D[i, j] = D[j, i] = s.mean()
        self.n_labels = L
        self.D = D
        self._ready = True
        return self

    def evaluate(self, weights: Any) -> np.ndarray:
        self._require()
        W = check_weights(weights, self.n_labels)
        return np.einsum("ml,lk,mk->m", W, self.D, W)


class SampledPairDiversity(Utility):
    """Expected distance of two independent mixture draws, from random distinct pairs:
    πᵀ D π with D[l, l'] the mean of ``distance`` over ``n_pairs`` random pairs of one
    sample of label l and one of label l' (two distinct samples when l = l').

    Direction: higher = more diverse (a contributor adding variety gets a positive value).

    For costly pair scores such as 1 − MS-SSIM
    (:class:`~datacredit.models.MSSSIMDistance`) or LPIPS, where
    :class:`PairwiseDiversity`'s all-pairs matrices are too expensive.

    Args:
        distance: callable (A (k, ...), B (k, ...)) → (k,) distances of aligned pairs.
        n_pairs: pairs per label pair.  seed: seeds the pairs.  batch_size: pairs per call.
        higher_is_better: True (default: more diverse is better); False to rank
            contributors by how much they lower the diversity.
    Preparation: L(L+1)/2 · n_pairs distance evaluations; per coalition: O(L²).
    """

    def __init__(
        self,
        distance: Callable[[np.ndarray, np.ndarray], Any],
        *,
        n_pairs: int = 256,
        seed: int = 0,
        batch_size: int | None = 64,
        higher_is_better: bool | None = None,
    ):
        if not callable(distance):
            raise TypeError("distance must be callable")
        self.higher_is_better = direction_arg(higher_is_better, True, "SampledPairDiversity")
        if isinstance(n_pairs, bool) or not isinstance(n_pairs, (int, np.integer)) or n_pairs < 1:
            raise ValueError(f"n_pairs must be a positive integer, got {n_pairs!r}")
        self.distance = distance
        self.n_pairs = int(n_pairs)
        self.seed = int(seed)
        self.batch_size = batch_size
        self._ready = False

    def _mean_distance(self, A: np.ndarray, B: np.ndarray) -> float:
        k = len(A)
        bs = k if self.batch_size is None else int(self.batch_size)
        out = []
        for s in range(0, k, bs):
            d = np.asarray(
                to_numpy(self.distance(A[s : s + bs], B[s : s + bs]), "distance output"),
                dtype=np.float64,
            ).reshape(-1)
            if d.shape != (min(bs, k - s),) or not np.isfinite(d).all():
                raise ValueError("distance must return one finite value per pair")
            out.append(d)
        return float(np.concatenate(out).mean())

    def prepare(self, bank: Any) -> SampledPairDiversity:
        labels = bank.labels
        L = len(labels)
        rng = np.random.default_rng(self.seed)
        xs = [bank.samples_for(lab) for lab in labels]
        D = np.zeros((L, L))
        for i in range(L):
            ni = len(xs[i])
            for j in range(i, L):
                nj = len(xs[j])
                a = rng.integers(ni, size=self.n_pairs)
                if i == j:
                    if ni < 2:
                        raise ValueError(f"label {labels[i]!r} needs at least 2 samples for pairs")
                    b = (a + rng.integers(1, ni, size=self.n_pairs)) % ni  # b ≠ a, uniform
                else:
                    b = rng.integers(nj, size=self.n_pairs)
                D[i, j] = D[j, i] = self._mean_distance(np.asarray(xs[i])[a], np.asarray(xs[j])[b])
        self.n_labels = L
        self.D = D
        self._ready = True
        return self

    def evaluate(self, weights: Any) -> np.ndarray:
        self._require()
        W = check_weights(weights, self.n_labels)
        return np.einsum("ml,lk,mk->m", W, self.D, W)
