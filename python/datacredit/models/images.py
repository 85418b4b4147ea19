"""The one image convention of the API, and the conversions the model adapters build on.

**Convention.** Wherever datacredit takes images (``GMValuator.fit`` / ``value`` with an
image encoder, re-rank or quality model), a batch of images is any of:

* a numpy array or torch tensor ``(N, C, H, W)`` or ``(N, H, W, C)`` with ``C`` = 1
  (grayscale) or 3 (RGB), or ``(N, H, W)`` (grayscale); dtype ``uint8`` (0..255) or float
  with values in [0, 1];
* a sequence of PIL images (any mode; converted to ``L`` or ``RGB``), or of single images
  in one of the array layouts above (``(C, H, W)``, ``(H, W, C)``, ``(H, W)``).

Anything else (float images in [-1, 1] or [0, 255], other integer dtypes, 2 or 4 channels,
a layout where both axis 1 and the last axis could be the channels) raises ``ValueError``
naming the argument.  Each adapter converts from this convention to what its model needs
(size, grayscale -> RGB, value range, normalisation); see ``docs/gmvaluator.md``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from datacredit.models._data import _is_torch

CHANNELS = (1, 3)


def _is_pil(x: Any) -> bool:
    return type(x).__module__.startswith("PIL.") and hasattr(x, "convert")


def _pil_array(img: Any) -> np.ndarray:
    if img.mode not in ("L", "RGB"):
        img = img.convert("L" if img.mode in ("1", "I", "I;16", "F") else "RGB")
    a = np.asarray(img)
    return a[None] if a.ndim == 2 else np.moveaxis(a, -1, 0)  # (C, H, W) uint8


def _channels_first(a: Any, name: str) -> Any:
    """``(N, C, H, W)`` view of a 3- or 4-d batch (numpy array or torch tensor)."""
    if a.ndim == 3:
        return a[:, None]
    if a.ndim != 4:
        raise ValueError(
            f"{name} must be images (N, C, H, W), (N, H, W, C) or (N, H, W), got shape "
            f"{tuple(a.shape)}"
        )
    first, last = a.shape[1] in CHANNELS, a.shape[3] in CHANNELS
    if first and last:
        raise ValueError(
            f"{name} has shape {tuple(a.shape)}: both axis 1 and the last axis could hold the "
            "channels; pass the images as (N, C, H, W) with H, W not in (1, 3)"
        )
    if first:
        return a
    if last:
        return a.permute(0, 3, 1, 2) if _is_torch(a) else np.moveaxis(a, -1, 1)
    raise ValueError(
        f"{name} has shape {tuple(a.shape)}: images need 1 (grayscale) or 3 (RGB) channels on "
        "axis 1 or on the last axis"
    )


def _stack_items(items: list[Any], name: str) -> np.ndarray:
    arrs = []
    for it in items:
        if isinstance(it, (tuple, list)) and it:  # (image, label) dataset items
            it = it[0]
        if _is_pil(it):
            arrs.append(_pil_array(it))
            continue
        a = it.detach().cpu().numpy() if _is_torch(it) else np.asarray(it)
        arrs.append(_channels_first(a[None], name)[0])
    shapes = {a.shape for a in arrs}
    dtypes = {a.dtype for a in arrs}
    if len(shapes) != 1 or len(dtypes) != 1:
        raise ValueError(
            f"{name}: the images of one batch must share size, channels and dtype, got "
            f"{sorted(shapes)} / {sorted(map(str, dtypes))}"
        )
    return np.stack(arrs)


def to_image_batch(images: Any, name: str = "images") -> Any:
    """Images in the convention above -> float32 torch tensor ``(N, C, H, W)`` in [0, 1].

    ``C`` stays 1 or 3 (see :func:`to_rgb`).  The input is never modified (a new tensor is
    returned).  O(N * C * H * W).
    """
    import torch

    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError(f"{name} is empty")
        images = _stack_items(list(images), name)
    if _is_torch(images):
        t = images.detach().cpu()
    elif isinstance(images, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(images))
    else:
        raise TypeError(
            f"{name} must be an array, a tensor or a sequence of images, got "
            f"{type(images).__name__}"
        )
    t = _channels_first(t, name)
    if t.dtype == torch.uint8:
        return t.float().div_(255.0).contiguous()
    if not t.is_floating_point():
        raise ValueError(
            f"{name} has dtype {t.dtype}: images must be uint8 (0..255) or float in [0, 1]"
        )
    t = t.float()
    if t.numel():
        lo, hi = float(t.min()), float(t.max())
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"{name} has values in [{lo:.4g}, {hi:.4g}]: float images must lie in [0, 1] "
                "(map [-1, 1] images with (x + 1) / 2, 0..255 floats with x / 255, and pass "
                "raw images rather than model-normalised tensors)"
            )
    return t.clone().contiguous()


def to_rgb(t: Any) -> Any:
    """``(N, 1|3, H, W)`` -> ``(N, 3, H, W)`` (grayscale repeated on the three channels)."""
    return t.expand(-1, 3, -1, -1).contiguous() if t.shape[1] == 1 else t


def resize(t: Any, size: tuple[int, int], mode: str = "bilinear") -> Any:
    """``(N, C, H, W)`` -> ``(N, C, *size)`` with antialiasing (identity if already there)."""
    import torch

    if tuple(t.shape[-2:]) == tuple(size):
        return t
    return torch.nn.functional.interpolate(
        t, size=tuple(size), mode=mode, antialias=True, align_corners=False
    ).clamp_(0.0, 1.0)


def to_pil_images(images: Any, name: str = "images") -> list[Any]:
    """Images in the convention above -> list of PIL images (``L`` or ``RGB``, 8-bit).

    PIL inputs pass through (converted to ``L``/``RGB``); arrays are quantised to 8 bits
    (round half to even of ``255 * x``), as when an image is saved to PNG.
    """
    import torch
    from PIL import Image

    if isinstance(images, (list, tuple)) and images and all(_is_pil(i) for i in images):
        return [i if i.mode in ("L", "RGB") else i.convert("RGB") for i in images]
    t = to_image_batch(images, name)
    u8 = t.mul(255.0).round_().clamp_(0, 255).to(torch.uint8).numpy()
    if u8.shape[1] == 1:
        return [Image.fromarray(x[0]) for x in u8]  # 2-d uint8 -> mode "L"
    return [Image.fromarray(np.ascontiguousarray(np.moveaxis(x, 0, -1))) for x in u8]  # RGB
