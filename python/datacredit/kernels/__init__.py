"""The public low-level API: arrays in, arrays out.

Each kernel runs in the compiled core (``datacredit._core``), multi-threaded with
the GIL released.  Inputs may be numpy arrays or CPU torch tensors; float32 is
used as is, other real dtypes are converted once.
"""

from datacredit.kernels.gram import gram, gram_topk
from datacredit.kernels.pq import ProductQuantizer, kmeans

__all__ = ["ProductQuantizer", "gram", "gram_topk", "kmeans"]
