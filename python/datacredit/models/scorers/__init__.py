"""Pairwise image distances (re-ranking) and image-quality scores (calibration).

Distances: ``dist(a, b) -> np.ndarray (n,)`` float64 for aligned batches ``a[i]``,
``b[i]`` (smaller = more similar): :class:`PixelL2Distance`, :class:`LPIPSDistance`,
:class:`DreamSimDistance`, or any callable.  The built-in adapters take images in the
library's convention (:mod:`datacredit.models.images`) and convert them for their model;
callables get the user's data as it is.  Quality: ``quality(images) -> np.ndarray (n,)`` in [0, 1] (larger =
better): :class:`MANIQAScorer` (pyiqa) or any callable.  :func:`make_distance` and
:func:`make_quality` turn a user specification into one.  The packages (lpips,
dreamsim, pyiqa) are imported only when such a scorer is built; missing packages or
weights raise errors saying what to install or download.

One module per scorer family: ``base`` (shared pieces, callables), ``lpips``, ``msssim``,
``aesthetic``, ``clip_score``, ``dreamsim``, ``pixel``, ``maniqa``.
"""

from __future__ import annotations

from typing import Any

from datacredit.models.scorers.aesthetic import LAIONAestheticScorer
from datacredit.models.scorers.base import CallableDistance, CallableQuality, TorchPairDistance
from datacredit.models.scorers.clip_score import CLIPScore, PairedToReference
from datacredit.models.scorers.dreamsim import DreamSimDistance
from datacredit.models.scorers.lpips import LPIPSDistance
from datacredit.models.scorers.maniqa import MANIQAScorer
from datacredit.models.scorers.msssim import MSSSIMDistance
from datacredit.models.scorers.pixel import PixelL2Distance

IMAGE_DISTANCES = ("pixel_l2", "lpips", "dreamsim")


def make_distance(spec: Any, *, device: str = "cpu") -> Any:
    """``"pixel_l2"``, ``"lpips"``, ``"dreamsim"`` or a callable ``fn(a, b) -> (n,)`` → a
    distance."""
    if isinstance(spec, str):
        if spec == "pixel_l2":
            return PixelL2Distance()
        if spec == "lpips":
            return LPIPSDistance(device=device)
        if spec == "dreamsim":
            return DreamSimDistance(device=device)
        raise ValueError(f"unknown image distance {spec!r}; expected one of {IMAGE_DISTANCES}")
    if isinstance(spec, (TorchPairDistance, CallableDistance, DreamSimDistance, PixelL2Distance)):
        return spec
    if hasattr(spec, "embed") and hasattr(spec, "embedding_distance"):  # DreamSim's protocol
        return spec
    return CallableDistance(spec)


def make_quality(spec: Any, *, device: str = "cpu") -> Any:
    """``None``, ``"maniqa"`` or a callable ``fn(images) -> (n,)`` in [0, 1]."""
    if spec is None:
        return None
    if isinstance(spec, str):
        if spec == "maniqa":
            return MANIQAScorer(device=device)
        raise ValueError(f"unknown quality model {spec!r}; expected None, 'maniqa' or a callable")
    if isinstance(spec, (MANIQAScorer, CallableQuality)):
        return spec
    return CallableQuality(spec)


__all__ = [
    "IMAGE_DISTANCES",
    "CLIPScore",
    "CallableDistance",
    "CallableQuality",
    "DreamSimDistance",
    "LAIONAestheticScorer",
    "LPIPSDistance",
    "MANIQAScorer",
    "MSSSIMDistance",
    "PairedToReference",
    "PixelL2Distance",
    "TorchPairDistance",
    "make_distance",
    "make_quality",
]
