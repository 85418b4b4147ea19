"""datacredit: which training data, and which data contributors, a model's behaviour comes from.

Importing datacredit is light (numpy only); torch and the other model libraries
are imported by the pieces that need them.
"""

from datacredit import kernels

__version__ = "0.1.0"

__all__ = ["kernels", "__version__"]
