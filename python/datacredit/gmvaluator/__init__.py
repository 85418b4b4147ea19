"""GMValuator: training-data valuation for generative models by similarity matching."""

from datacredit.gmvaluator.result import GMValuation
from datacredit.gmvaluator.valuator import GMValuator, softmax_weights

__all__ = ["GMValuation", "GMValuator", "softmax_weights"]
