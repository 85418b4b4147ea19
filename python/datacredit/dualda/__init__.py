"""DualDA (SVM-surrogate data attribution), XDA (its LRP heatmaps) and a quanda-compatible
explainer wrapper."""

from datacredit.dualda.dualda import DualDA
from datacredit.dualda.quanda import DualDAExplainer
from datacredit.dualda.xda import XDA

__all__ = ["DualDA", "DualDAExplainer", "XDA"]
