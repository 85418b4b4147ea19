"""Embedding encoders: adapters from images (or any samples) to float32 feature rows.

Every encoder has ``encode(data, *, progress=False) -> np.ndarray`` of shape ``(n, d)``
(``progress``: a bool, or the label of the bar, e.g. ``"embedding generated"``),
float32, in the order of ``data`` (an array, a tensor, a sequence or a torch dataset;
dataset items ``(x, label)`` use ``x``).  :func:`make_encoder` turns a user
specification into one:

* ``None`` / ``"precomputed"`` — the data already are embeddings ``(n, d)``;
* ``"pixels"`` — raw pixels flattened to ``(n, C*H*W)``;
* ``"open_clip"`` or ``"open_clip:MODEL/PRETRAINED"`` — an open_clip image tower;
* a ``torch.nn.Module`` — its forward pass, batched, in eval mode without gradients;
* any object with ``.encode`` — used as is;  any other callable — called per batch.

torch and open_clip are imported only when such an encoder is built.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from datacredit.models._data import _is_torch, batches, data_len, progress, to_float_rows


class PrecomputedEncoder:
    """The data already are embeddings: returns them as a float32 matrix ``(n, d)``."""

    def encode(self, data: Any, *, progress: bool | str = False) -> np.ndarray:
        """Embeddings of ``data`` (``N`` samples): float32 ``(N, d)``, in the data's order."""
        from datacredit._arrays import as_float_matrix

        return as_float_matrix(data, "embeddings", check_finite=False)

    def __repr__(self) -> str:
        return "PrecomputedEncoder()"


class PixelEncoder:
    """Raw pixels as features: each sample flattened to one float32 row.

    Args:
        scale: optional factor applied to the values (e.g. ``1/255`` for uint8 images).
    """

    def __init__(self, scale: float | None = None, batch_size: int = 1024) -> None:
        self.scale = scale
        self.batch_size = batch_size

    def encode(self, data: Any, *, progress: bool | str = False) -> np.ndarray:
        """Embeddings of ``data`` (``N`` samples): float32 ``(N, d)``, in the data's order."""
        n = data_len(data, "data")
        if n == 0:
            raise ValueError("data is empty")
        rows = [
            to_float_rows(_pil_as_nchw(b), "data") for b in batches(data, self.batch_size, "data")
        ]
        out = np.concatenate(rows)
        if self.scale is not None:
            out *= np.float32(self.scale)
        return out

    def __repr__(self) -> str:
        return f"PixelEncoder(scale={self.scale})"


def _pil_as_nchw(batch: Any) -> Any:
    """A list of PIL images as one uint8 ``(N, C, H, W)`` array (the layout of array images,
    so PIL and array inputs flatten alike); anything else unchanged."""
    if isinstance(batch, list) and batch and type(batch[0]).__module__.startswith("PIL."):
        from datacredit.models.images import _stack_items

        return _stack_items(batch, "data")
    return batch


class CallableEncoder:
    """Any callable mapping a batch of samples to features ``(b, ...)`` (flattened)."""

    def __init__(self, fn: Any, batch_size: int = 256) -> None:
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.batch_size = batch_size

    def encode(self, data: Any, *, progress: bool | str = False) -> np.ndarray:
        """Embeddings of ``data`` (``N`` samples): float32 ``(N, d)``, in the data's order."""
        n = data_len(data, "data")
        if n == 0:
            raise ValueError("data is empty")
        it = batches(data, self.batch_size, "data")
        nb = (n + self.batch_size - 1) // self.batch_size
        rows = [to_float_rows(self.fn(b), "encoder output") for b in _progress(it, progress, nb)]
        return np.concatenate(rows)

    def __repr__(self) -> str:
        return f"CallableEncoder({getattr(self.fn, '__name__', type(self.fn).__name__)})"


def _progress(it: Any, enabled: bool | str, total: int) -> Any:
    # ``progress`` may be the bar's label ("embedding training set"), so that two bars in a
    # row say which data they embed
    return progress(it, bool(enabled), total, enabled if isinstance(enabled, str) else "embedding")


class TorchEncoder:
    """A ``torch.nn.Module`` as encoder: eval mode, ``torch.no_grad``, batches moved to
    ``device``, outputs flattened to float32 rows.  The module's own mode is restored."""

    def __init__(self, module: Any, *, device: str = "cpu", batch_size: int = 256) -> None:
        import torch

        if not isinstance(module, torch.nn.Module):
            raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
        self.module = module
        self.device = torch.device(device)
        self.batch_size = batch_size

    def _forward(self, batch: Any) -> Any:
        return self.module(batch)

    def _to_input(self, batch: Any) -> Any:
        """One batch of the user's data -> the float tensor ``_forward`` takes."""
        import torch

        t = batch if _is_torch(batch) else torch.as_tensor(np.asarray(batch))
        return t if t.is_floating_point() else t.float()

    def encode(self, data: Any, *, progress: bool | str = False) -> np.ndarray:
        """Embeddings of ``data`` (``N`` samples): float32 ``(N, d)``, in the data's order."""
        import torch

        n = data_len(data, "data")
        if n == 0:
            raise ValueError("data is empty")
        was_training = self.module.training
        self.module.eval()
        self.module.to(self.device)
        rows = []
        nb = (n + self.batch_size - 1) // self.batch_size
        try:
            with torch.no_grad():
                for b in _progress(batches(data, self.batch_size, "data"), progress, nb):
                    x = self._to_input(b).to(self.device)
                    rows.append(to_float_rows(self._forward(x), "encoder output"))
        finally:
            self.module.train(was_training)
        return np.concatenate(rows)

    def __repr__(self) -> str:
        return f"TorchEncoder({type(self.module).__name__}, device={self.device})"


class OpenCLIPEncoder(TorchEncoder):
    """Image embeddings from an open_clip model (``model.encode_image``), l2-normalised.

    Either pass a loaded ``model`` (any module with ``encode_image``) with its evaluation
    ``preprocess`` transform, or a ``model_name`` and ``pretrained`` tag / checkpoint path,
    loaded with ``open_clip.create_model_and_transforms``.  Inputs follow the library's image
    convention (:mod:`datacredit.models.images`: uint8 or [0, 1] float arrays/tensors, NCHW
    or NHWC, 1 or 3 channels, or PIL images).  Every image goes through open_clip's own
    ``preprocess`` on a PIL image, exactly as open_clip documents
    (``model.encode_image(preprocess(pil)[None])``): resize, centre crop, grayscale -> RGB,
    CLIP normalisation.  Float images are quantised to 8 bits first (as when saved to PNG).
    Without ``preprocess``, open_clip's ``image_transform`` is built from the model's
    ``visual.image_size`` / ``image_mean`` / ``image_std``.

    Raises:
        ImportError: open_clip is not installed (``pip install open_clip_torch``).
        RuntimeError: the weights could not be loaded (e.g. no network): the message says
            which checkpoint to download and how to pass its path.
        ValueError: images outside the convention (e.g. already CLIP-normalised tensors).
    """

    def __init__(
        self,
        model_name: str = "ViT-B-32",
        pretrained: str | None = "laion2b_s34b_b79k",
        *,
        model: Any = None,
        preprocess: Any = None,
        device: str = "cpu",
        batch_size: int = 128,
        normalize: bool = True,
    ) -> None:
        if model is None:
            model, preprocess = load_open_clip(model_name, pretrained, device=device)
        if not hasattr(model, "encode_image"):
            raise TypeError("model must have an encode_image method (an open_clip CLIP model)")
        super().__init__(model, device=device, batch_size=batch_size)
        self.preprocess = preprocess if preprocess is not None else _default_clip_transform(model)
        self.normalize = normalize
        self.model_name, self.pretrained = model_name, pretrained

    def _forward(self, batch: Any) -> Any:
        out = self.module.encode_image(batch)
        if self.normalize:
            out = out / out.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return out

    def _to_input(self, batch: Any) -> Any:
        """Images (library convention) -> open_clip's ``preprocess`` of each, stacked."""
        import torch

        from datacredit.models.images import to_pil_images

        return torch.stack([self.preprocess(img) for img in to_pil_images(batch, "images")])

    def fingerprint(self) -> str:
        """Content fingerprint of the model, preprocessing and normalisation (cache keys)."""
        from datacredit.models.fingerprint import fingerprint_model

        return fingerprint_model([self.module, repr(self.preprocess), self.normalize])

    def __repr__(self) -> str:
        return f"OpenCLIPEncoder({self.model_name!r}, pretrained={self.pretrained!r})"


def _default_clip_transform(model: Any) -> Any:
    """open_clip's evaluation transform for a model passed without its ``preprocess``."""
    import open_clip

    visual = getattr(model, "visual", None)
    size = getattr(visual, "image_size", None)
    if size is None:
        raise ValueError("pass preprocess=... (the model has no visual.image_size)")
    return open_clip.image_transform(
        size,
        is_train=False,
        mean=getattr(visual, "image_mean", None),
        std=getattr(visual, "image_std", None),
    )


def load_open_clip(model_name: str, pretrained: str | None, *, device: str = "cpu"):
    """``open_clip.create_model_and_transforms`` with actionable errors.

    Returns ``(model, preprocess)`` (the evaluation transform).
    """
    try:
        import open_clip
    except ImportError as exc:
        raise ImportError(
            "the open_clip encoder needs the open_clip package: pip install open_clip_torch"
        ) from exc
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            model_name, pretrained=pretrained, device=device
        )
    except Exception as exc:  # download / file / config errors
        raise RuntimeError(
            f"could not load open_clip model {model_name!r} with pretrained={pretrained!r} "
            f"({type(exc).__name__}: {exc}). Weights cannot be downloaded here: fetch the "
            f"checkpoint for {model_name}/{pretrained} (see open_clip.list_pretrained()) on a "
            "machine with network access and pass pretrained='/path/to/checkpoint.bin'."
        ) from exc
    return model, preprocess


def _is_torch_module(obj: Any) -> bool:
    # Only modules already imported by the user can be torch modules: no torch import here.
    import sys

    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


def make_encoder(spec: Any, *, device: str = "cpu", batch_size: int = 256) -> Any:
    """Turn an encoder specification (see the module docstring) into an encoder object."""
    if spec is None or (isinstance(spec, str) and spec == "precomputed"):
        return PrecomputedEncoder()
    if isinstance(spec, str):
        if spec == "pixels":
            return PixelEncoder(batch_size=max(batch_size, 1))
        if spec == "open_clip" or spec.startswith("open_clip:"):
            name, _, rest = spec.partition(":")
            model_name, _, pretrained = (rest or "ViT-B-32/laion2b_s34b_b79k").partition("/")
            return OpenCLIPEncoder(
                model_name, pretrained or None, device=device, batch_size=batch_size
            )
        raise ValueError(
            f"unknown encoder {spec!r}; expected None, 'precomputed', 'pixels', 'open_clip', "
            "'open_clip:MODEL/PRETRAINED', a torch module, an object with .encode or a callable"
        )
    if hasattr(spec, "encode") and callable(spec.encode):
        return spec
    if _is_torch_module(spec):
        return TorchEncoder(spec, device=device, batch_size=batch_size)
    if callable(spec):
        return CallableEncoder(spec, batch_size=batch_size)
    raise TypeError(f"encoder must be a string, a module, an encoder or a callable, got {spec!r}")
