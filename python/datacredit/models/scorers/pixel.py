"""Pixel-space l2 distance between images (smaller = more similar)."""

from __future__ import annotations

from typing import Any

import numpy as np

from datacredit.models.images import resize, to_image_batch, to_rgb


class PixelL2Distance:
    """Euclidean distance between images in pixel space (the paper's App. H re-rank).

    Inputs follow the library's image convention and are compared as float64 in [0, 1];
    when the two batches differ in channels, grayscale is repeated to RGB, and when they
    differ in size the training images are resized to the generated ones' (bilinear,
    antialiased).  ``(n,)`` float64, ``O(n * C * H * W)``.
    """

    higher_is_better = False  # a distance: smaller is more similar

    name = "pixel_l2"

    def __call__(self, a: Any, b: Any) -> np.ndarray:
        ta = to_image_batch(a, "the generated images")
        tb = to_image_batch(b, "the training images")
        if ta.shape[0] != tb.shape[0]:
            raise ValueError(f"pixel_l2 needs aligned batches, got {ta.shape[0]} and {tb.shape[0]}")
        if ta.shape[1] != tb.shape[1]:
            ta, tb = to_rgb(ta), to_rgb(tb)
        tb = resize(tb, tuple(ta.shape[-2:]))
        diff = ta.double() - tb.double()
        return diff.flatten(1).square().sum(1).sqrt().numpy()

    def __repr__(self) -> str:
        return "PixelL2Distance()"
