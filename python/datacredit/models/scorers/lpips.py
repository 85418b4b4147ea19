"""LPIPS (Zhang et al.) as a pairwise image distance (smaller = more similar)."""

from __future__ import annotations

from typing import Any

import numpy as np

from datacredit.models.images import resize, to_image_batch, to_rgb
from datacredit.models.scorers.base import TorchPairDistance, as_scores, missing_package


class LPIPSDistance(TorchPairDistance):
    """LPIPS perceptual distance (Zhang et al. 2018) through the ``lpips`` package.

    Inputs follow the library's image convention (:mod:`datacredit.models.images`).  Both
    batches are converted to RGB, resized to ``size`` x ``size`` (default 64: LPIPS was
    calibrated on 64 x 64 patches; ``None`` keeps the native size, which must then agree
    between the two batches) and passed in [0, 1] with ``normalize=True``, the way lpips
    documents [0, 1] inputs.  Pass a loaded ``model`` or let ``lpips.LPIPS(net=net)`` load
    one (its backbone weights come from torchvision and must be in the torch hub cache when
    there is no network).
    """

    def __init__(
        self,
        net: str = "alex",
        *,
        model: Any = None,
        size: int | None = 64,
        device: str = "cpu",
        pretrained: bool = True,
    ) -> None:
        if model is None:
            try:
                import lpips
            except ImportError as exc:
                raise missing_package("lpips", "lpips", "rerank='lpips'") from exc
            try:
                model = lpips.LPIPS(net=net, pretrained=pretrained, verbose=False)
            except Exception as exc:
                raise RuntimeError(
                    f"could not load the LPIPS '{net}' network ({type(exc).__name__}: {exc}). "
                    f"Its ImageNet backbone comes from torchvision: download the '{net}' weights "
                    "on a machine with network access into the torch hub cache "
                    "($TORCH_HOME/hub/checkpoints), or pass model=lpips.LPIPS(...) yourself."
                ) from exc
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise ValueError(f"size must be a positive integer or None, got {size!r}")
        self.size = size
        super().__init__(model, device=device, name="lpips")

    def convert(self, images: Any, name: str = "images") -> Any:
        """Images (library convention) -> what the LPIPS network gets: ``(n, 3, s, s)`` in
        [0, 1] (scaled to [-1, 1] by lpips itself with ``normalize=True``)."""
        t = to_rgb(to_image_batch(images, name))
        return t if self.size is None else resize(t, (self.size, self.size))

    def __call__(self, a: Any, b: Any) -> np.ndarray:
        import torch

        ta, tb = self.convert(a, "the generated images"), self.convert(b, "the training images")
        if ta.shape != tb.shape:
            raise ValueError(
                f"LPIPS needs images of one size: got {tuple(ta.shape)} and {tuple(tb.shape)} "
                "(set size=... to resize both)"
            )
        if hasattr(self.model, "eval"):
            self.model.eval()
        if hasattr(self.model, "to"):
            self.model.to(self.device)
        with torch.no_grad():
            ta, tb = ta.to(self.device), tb.to(self.device)
            try:
                out = self.model(ta, tb, normalize=True)
            except TypeError:  # a plain module without the normalize keyword: [-1, 1]
                out = self.model(ta * 2 - 1, tb * 2 - 1)
        return as_scores(out, int(ta.shape[0]), self.name)
