"""Model plumbing shared by the methods: encoders (embeddings) and scorers (distances,
image quality).  Nothing here imports torch at import time."""

from datacredit.models.encoders import (
    CallableEncoder,
    OpenCLIPEncoder,
    PixelEncoder,
    PrecomputedEncoder,
    TorchEncoder,
    make_encoder,
)
from datacredit.models.scorers import (
    CallableDistance,
    CallableQuality,
    DreamSimDistance,
    LPIPSDistance,
    MANIQAScorer,
    make_distance,
    make_quality,
)

__all__ = [
    "CallableDistance",
    "CallableEncoder",
    "CallableQuality",
    "DreamSimDistance",
    "LPIPSDistance",
    "MANIQAScorer",
    "OpenCLIPEncoder",
    "PixelEncoder",
    "PrecomputedEncoder",
    "TorchEncoder",
    "make_distance",
    "make_encoder",
    "make_quality",
]
