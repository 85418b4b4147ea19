"""Evaluation metrics, one module per area (``generative`` for GMValuator's criteria)."""

from datacredit.metrics.generative import identical_class_ratio, ood_rank

__all__ = ["identical_class_ratio", "ood_rank"]
