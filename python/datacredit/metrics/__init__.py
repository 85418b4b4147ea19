"""Evaluation metrics, one module per area: ``attribution`` (DualDA and other data
attribution), ``shapley`` (SurrogateSHAP and contributor values) and ``generative``
(GMValuator's criteria C1-C3); ``retraining`` (the seeded, cached retraining loop behind
LDS, coreset selection and data pruning)."""

from datacredit.metrics.attribution import (
    coreset_indices,
    coreset_ranking,
    identical_class,
    identical_subclass,
    lds,
    matthews_corrcoef,
    mislabel_detection_auc,
    shortcut_detection_auprc,
)
from datacredit.metrics.generative import identical_class_ratio, ood_rank
from datacredit.metrics.retraining import RetrainingHarness, cross_entropy_loss, random_subsets
from datacredit.metrics.shapley import counterfactual_ranking, lds_coalitions, lds_groups

__all__ = [
    "RetrainingHarness",
    "cross_entropy_loss",
    "random_subsets",
    "coreset_indices",
    "coreset_ranking",
    "counterfactual_ranking",
    "identical_class",
    "identical_class_ratio",
    "identical_subclass",
    "lds",
    "lds_coalitions",
    "lds_groups",
    "matthews_corrcoef",
    "mislabel_detection_auc",
    "ood_rank",
    "shortcut_detection_auprc",
]
