"""DualDA (SVM-surrogate data attribution) and XDA (its LRP heatmaps)."""

from datacredit.dualda.dualda import DualDA
from datacredit.dualda.xda import XDA

__all__ = ["DualDA", "XDA"]
