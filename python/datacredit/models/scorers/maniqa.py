"""MANIQA (pyiqa) as an image-quality score in [0, 1] (higher = better)."""

from __future__ import annotations

from typing import Any

import numpy as np

from datacredit.models.images import resize, to_image_batch, to_rgb
from datacredit.models.scorers.base import as_scores, missing_package


class MANIQAScorer:
    """MANIQA no-reference image quality (Yang et al. 2022) through ``pyiqa``, in [0, 1].

    Inputs follow the library's image convention; each batch is converted to what pyiqa's
    metric takes, a ``(n, 3, H, W)`` RGB float tensor in [0, 1] (grayscale repeated, uint8
    divided by 255) -- the tensor ``pyiqa`` itself reads from an image file.  Sizes are left
    to pyiqa, which scores 224 x 224 crops and upsamples smaller images itself; set
    ``min_size`` to upsample (bicubic, antialiased) to a shorter side of at least that many
    pixels first, for a custom ``model`` that cannot.  Scores are clipped to [0, 1]
    (MANIQA's range).  Pass a loaded ``model`` (any callable ``images -> (n,)``, e.g. a
    ``pyiqa.create_metric("maniqa")``) or let this class create pyiqa's metric.
    """

    higher_is_better = True  # a quality score: larger is better

    def __init__(
        self,
        *,
        model: Any = None,
        device: str = "cpu",
        batch_size: int = 32,
        min_size: int | None = None,
    ) -> None:
        from datacredit._arrays import check_int

        batch_size = check_int(batch_size, "batch_size", 1)
        if min_size is not None:
            min_size = check_int(min_size, "min_size", 1)
        if model is None:
            try:
                import pyiqa
            except ImportError as exc:
                raise missing_package("pyiqa", "pyiqa", "quality='maniqa'") from exc
            try:
                model = pyiqa.create_metric("maniqa", device=device, as_loss=False)
            except Exception as exc:
                raise RuntimeError(
                    f"could not load pyiqa's MANIQA weights ({type(exc).__name__}: {exc}). "
                    "On a machine with network access, fetch the MANIQA checkpoint (pyiqa's "
                    "model zoo, cached in $HOME/.cache/torch/hub/pyiqa) and its timm ViT "
                    "backbone (Hugging Face hub cache, $HF_HOME), e.g. by calling "
                    "pyiqa.create_metric('maniqa') once there, then copy both caches here; "
                    "or pass model=..."
                ) from exc
        self.model = model
        self.device = device
        self.batch_size = batch_size
        self.min_size = min_size

    def convert(self, images: Any) -> Any:
        """Images (library convention) -> ``(n, 3, H', W')`` float in [0, 1] (min side >=
        ``min_size`` when it is set)."""
        t = to_rgb(to_image_batch(images, "images"))
        h, w = t.shape[-2:]
        if self.min_size is not None and min(h, w) < self.min_size:
            f = self.min_size / min(h, w)
            t = resize(
                t, (max(self.min_size, round(h * f)), max(self.min_size, round(w * f))), "bicubic"
            )
        return t

    def __call__(self, images: Any) -> np.ndarray:
        import torch

        t = self.convert(images)
        out = []
        with torch.no_grad():
            for s in range(0, t.shape[0], self.batch_size):
                b = t[s : s + self.batch_size].to(self.device)
                out.append(as_scores(self.model(b), int(b.shape[0]), "maniqa"))
        return np.clip(np.concatenate(out), 0.0, 1.0)
