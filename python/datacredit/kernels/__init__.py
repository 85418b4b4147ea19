"""The public low-level API: arrays in, arrays out.

Each kernel runs in the compiled core (``datacredit._core``), multi-threaded with
the GIL released.  Inputs may be numpy arrays or CPU torch tensors; float32 is
used as is, other real dtypes are converted once.
"""

from datacredit.kernels.crammer_singer import CSResult, crammer_singer_fit, crammer_singer_objective
from datacredit.kernels.gram import gram, gram_topk
from datacredit.kernels.ivf import (
    InvertedLists,
    build_inverted_lists,
    ivf_exact_topk,
    ivf_flat_search,
)
from datacredit.kernels.kmeans import kmeans
from datacredit.kernels.pq import ProductQuantizer
from datacredit.kernels.pq_packed import PackedCodes
from datacredit.kernels.treeshap import TreeEnsemble, from_xgboost, tree_shap_interventional

__all__ = [
    "CSResult",
    "InvertedLists",
    "PackedCodes",
    "ProductQuantizer",
    "TreeEnsemble",
    "build_inverted_lists",
    "crammer_singer_fit",
    "crammer_singer_objective",
    "from_xgboost",
    "gram",
    "gram_topk",
    "ivf_exact_topk",
    "ivf_flat_search",
    "kmeans",
    "tree_shap_interventional",
]
