"""Coalition utilities for SurrogateSHAP's proxy game, evaluated from per-label statistics.

Every utility follows one protocol: ``prepare(bank)`` computes per-label statistics once
from a :class:`~datacredit.surrogateshap.SampleBank` (running the feature / score
callables over the stored samples), then ``evaluate(weights)`` maps mixture weights
(m × L, one row per coalition, rows summing to 1 over the bank's labels) to m utilities
without touching the samples again.  The mixture is the proxy distribution
Σ_y π_S(y) p_θ(x | y) of eq. 5, with each label's conditional represented by its samples
in the bank.

- :class:`FID` (a loss: lower is better) — Fréchet distance from exact mixture mean/covariance, bias-corrected for
  the bank's finite size by default (a jackknife over fixed groups of each label's samples).
- :class:`InceptionScore` — exp(E KL(p(y|x) ‖ p(y))) from per-label moments.
- :class:`MeanScore` — mixture mean of any per-sample score (aesthetics, LPIPS, CLIP...).
- :class:`PairwiseDiversity` — expected pair score of two independent mixture draws.
- :class:`SampledPairDiversity` — the same from random distinct pairs (1 − MS-SSIM, LPIPS).
- :class:`Resampled` / :class:`ProbeCorrelation` — any statistic of a resampled mixture set,
  with common random numbers across coalitions.

Modules: ``base`` (the protocol), ``distribution`` (FID, IS), ``scores`` (mean scores),
``diversity`` (pair diversities), ``resampled`` (resampled statistics).
"""

from datacredit.metrics.correlation import spearman
from datacredit.surrogateshap.utilities.base import Utility
from datacredit.surrogateshap.utilities.distribution import FID, InceptionScore
from datacredit.surrogateshap.utilities.diversity import PairwiseDiversity, SampledPairDiversity
from datacredit.surrogateshap.utilities.resampled import ProbeCorrelation, Resampled
from datacredit.surrogateshap.utilities.scores import MeanScore

__all__ = [
    "FID",
    "InceptionScore",
    "MeanScore",
    "PairwiseDiversity",
    "ProbeCorrelation",
    "Resampled",
    "SampledPairDiversity",
    "Utility",
    "spearman",
]
