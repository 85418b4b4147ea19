"""Evaluation metrics, one module per area (``shapley`` for SurrogateSHAP's)."""

from datacredit.metrics.shapley import counterfactual_ranking, lds_coalitions, lds_groups

__all__ = ["counterfactual_ranking", "lds_coalitions", "lds_groups"]
