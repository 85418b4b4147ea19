"""MS-SSIM as a distance: 1 − MS-SSIM (smaller = more similar)."""

from __future__ import annotations

from typing import Any

import numpy as np

from datacredit.models.scorers.base import as_scores, missing_package, to_tensor


class MSSSIMDistance:
    """1 − MS-SSIM (Wang et al. 2003) of aligned image pairs through ``pytorch-msssim``.

    Inputs: ``(n, C, H, W)`` or ``(n, H, W, C)`` images (C = 1 or 3, the library's layouts,
    :mod:`datacredit.models.images`; channels-last batches such as
    :class:`~datacredit.models.DiffusersTextToImage`'s are moved to channels-first, an
    ambiguous layout raises) with values in ``[0, data_range]``; pytorch-msssim
    requires min(H, W) > (win_size − 1)·16 whatever the number of scales (``weights``, one
    per scale; default the five of Wang et al.), so small images need a smaller
    ``win_size``.  Returns float64 (n,), 0 for identical images.
    """

    higher_is_better = False  # a distance: smaller is more similar

    def __init__(
        self,
        *,
        data_range: float = 1.0,
        win_size: int = 11,
        weights: list[float] | None = None,
        device: str = "cpu",
    ) -> None:
        try:
            import pytorch_msssim  # noqa: F401
        except ImportError as exc:
            raise missing_package("pytorch-msssim", "pytorch-msssim", "MSSSIMDistance") from exc
        if not data_range > 0:
            raise ValueError(f"data_range must be > 0, got {data_range!r}")
        if isinstance(win_size, bool) or not isinstance(win_size, int) or win_size % 2 == 0:
            raise ValueError(f"win_size must be an odd integer, got {win_size!r}")
        self.data_range = float(data_range)
        self.win_size = int(win_size)
        self.weights = None if weights is None else [float(w) for w in weights]
        self.device = device

    def __call__(self, a: Any, b: Any) -> np.ndarray:
        import torch
        from pytorch_msssim import ms_ssim

        from datacredit.models.images import _channels_first

        ta, tb = to_tensor(a, self.device), to_tensor(b, self.device)
        if ta.ndim == 4 and tb.ndim == 4:
            # NHWC images (diffusers' output_type="np") used to be read as NCHW, with W = 3:
            # a "too small" error that no win_size > 1 could cure
            ta, tb = _channels_first(ta, "a"), _channels_first(tb, "b")
        if ta.ndim != 4 or ta.shape != tb.shape:
            raise ValueError(
                f"MSSSIMDistance needs two (n, C, H, W) batches of one shape, got "
                f"{tuple(ta.shape)} and {tuple(tb.shape)}"
            )
        need = (self.win_size - 1) * 16  # pytorch-msssim's own bound (4 downsamplings)
        if min(ta.shape[-2:]) <= need:
            raise ValueError(
                f"images of {tuple(ta.shape[-2:])} are too small for MS-SSIM with "
                f"win_size={self.win_size} (need > {need} pixels): pass a smaller win_size"
            )
        with torch.no_grad():
            sim = ms_ssim(
                ta.double(),
                tb.double(),
                data_range=self.data_range,
                size_average=False,
                win_size=self.win_size,
                weights=self.weights,
            )
        return as_scores(1.0 - sim, int(ta.shape[0]), "1 - MS-SSIM")
