"""Evaluation metrics, one module per area (attribution: DualDA and other data attribution)."""

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

__all__ = [
    "coreset_indices",
    "coreset_ranking",
    "identical_class",
    "identical_subclass",
    "lds",
    "matthews_corrcoef",
    "mislabel_detection_auc",
    "shortcut_detection_auprc",
]
