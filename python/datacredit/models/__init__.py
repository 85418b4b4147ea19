"""Model plumbing shared by the methods: feature extraction (forward hooks), encoders
(embeddings), scorers (distances, image quality) and generators.  Nothing here imports
torch at import time."""

from datacredit.models.encoders import (
    CallableEncoder,
    OpenCLIPEncoder,
    PixelEncoder,
    PrecomputedEncoder,
    TorchEncoder,
    make_encoder,
)
from datacredit.models.features import FeatureExtractor, iterate_batches, resolve_layer
from datacredit.models.generators import (
    DiffusersClassConditional,
    DiffusersTextToImage,
    as_generator,
)
from datacredit.models.images import resize, to_image_batch, to_pil_images, to_rgb
from datacredit.models.inception import InceptionPool3
from datacredit.models.scorers import (
    CallableDistance,
    CallableQuality,
    CLIPScore,
    DreamSimDistance,
    LAIONAestheticScorer,
    LPIPSDistance,
    MANIQAScorer,
    MSSSIMDistance,
    PairedToReference,
    PixelL2Distance,
    make_distance,
    make_quality,
)

__all__ = [
    "CallableDistance",
    "CallableEncoder",
    "CallableQuality",
    "CLIPScore",
    "DiffusersClassConditional",
    "DiffusersTextToImage",
    "DreamSimDistance",
    "FeatureExtractor",
    "InceptionPool3",
    "LAIONAestheticScorer",
    "LPIPSDistance",
    "MANIQAScorer",
    "MSSSIMDistance",
    "PairedToReference",
    "OpenCLIPEncoder",
    "PixelL2Distance",
    "PixelEncoder",
    "PrecomputedEncoder",
    "TorchEncoder",
    "as_generator",
    "iterate_batches",
    "make_distance",
    "make_encoder",
    "make_quality",
    "resize",
    "resolve_layer",
    "to_image_batch",
    "to_pil_images",
    "to_rgb",
]
