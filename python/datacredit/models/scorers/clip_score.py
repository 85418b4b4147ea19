"""CLIP score of images against their prompts (higher = better), and scores paired to a
reference."""

from __future__ import annotations

from typing import Any

import numpy as np

from datacredit.models._data import _is_torch
from datacredit.models.images import to_pil_images
from datacredit.models.scorers.base import as_scores, missing_package, to_tensor


class PairedToReference:
    """A label-seeing score: the distance of each generated sample to the reference image
    of its label or prompt (the paper's paired LPIPS "to the training image of the sampled
    prompt").  Use with ``MeanScore(PairedToReference(...), sees_label=True)``.

    Args:
        distance: ``dist(a, b) -> (n,)`` for aligned batches, e.g. :class:`LPIPSDistance`.
        references: mapping label → reference image (one sample, same layout as the bank's).
    """

    def __init__(self, distance: Any, references: Any) -> None:
        if not callable(distance):
            raise TypeError("distance must be callable")
        if not hasattr(references, "__getitem__") or not hasattr(references, "__contains__"):
            raise TypeError("references must be a mapping label -> reference image")
        self.distance = distance
        self.references = references

    def __call__(self, samples: Any, label: Any) -> np.ndarray:
        if label not in self.references:
            raise KeyError(f"no reference image for label {label!r}")
        x = np.asarray(samples) if not _is_torch(samples) else samples
        ref = np.asarray(self.references[label])
        if tuple(ref.shape) != tuple(x.shape[1:]):
            raise ValueError(
                f"reference of label {label!r} has shape {ref.shape}, samples {tuple(x.shape[1:])}"
            )
        n = int(x.shape[0])
        return as_scores(self.distance(x, np.broadcast_to(ref, (n, *ref.shape))), n, "distance")


class CLIPScore:
    """CLIP score of generated images to the prompt of their label: 100·max(cos(e_img,
    e_text), 0) (torchmetrics' convention), a label-seeing score for
    ``MeanScore(CLIPScore(...), sees_label=True)``.

    Args:
        model: an open_clip CLIP model (``encode_image``, ``encode_text``), e.g. from
            :func:`~datacredit.models.encoders.load_open_clip` with local weights.
        prompts: mapping label → prompt text, or a callable label → text.
        tokenizer: callable list[str] → token tensor (default
            ``open_clip.get_tokenizer(model_name)``).
        model_name: for the default tokenizer.  device: torch device.
        preprocess: the model's evaluation transform (``load_open_clip``'s second value):
            then inputs are images in the library's convention
            (:mod:`datacredit.models.images`, e.g. a bank of
            :class:`~datacredit.models.DiffusersTextToImage` samples, (n, H, W, 3) in
            [0, 1]), each quantised to 8 bits and passed through it as open_clip documents.
    Inputs: without ``preprocess``, preprocessed image tensors (n, 3, H, W).  Returns
    float64 (n,).
    """

    higher_is_better = True  # image-prompt agreement: larger is better

    def __init__(
        self,
        model: Any,
        prompts: Any,
        *,
        tokenizer: Any = None,
        model_name: str = "ViT-L-14",
        device: str = "cpu",
        preprocess: Any = None,
    ) -> None:
        if preprocess is not None and not callable(preprocess):
            raise TypeError("preprocess must be callable (open_clip's evaluation transform)")
        if not (hasattr(model, "encode_image") and hasattr(model, "encode_text")):
            raise TypeError("model must have encode_image and encode_text (an open_clip model)")
        if not (callable(prompts) or hasattr(prompts, "__getitem__")):
            raise TypeError("prompts must be a mapping label -> prompt or a callable")
        if tokenizer is None:
            try:
                import open_clip
            except ImportError as exc:
                raise missing_package("open_clip", "open_clip_torch", "CLIPScore") from exc
            tokenizer = open_clip.get_tokenizer(model_name)
        self.model, self.prompts, self.tokenizer = model, prompts, tokenizer
        self.device = device
        self.preprocess = preprocess

    def _images(self, images: Any) -> Any:
        import torch

        if self.preprocess is not None:
            pil = to_pil_images(images, "images")
            return torch.stack([self.preprocess(im) for im in pil]).to(self.device)
        x = to_tensor(images, self.device)
        if x.ndim != 4 or x.shape[1] != 3:
            # e.g. a bank of diffusers samples (n, H, W, 3): used to fail inside the model
            raise ValueError(
                f"images have shape {tuple(x.shape)}: CLIPScore without preprocess takes "
                "preprocessed (n, 3, H, W) tensors; pass preprocess=... (open_clip's "
                "evaluation transform) to score images such as DiffusersTextToImage samples"
            )
        return x

    def _prompt(self, label: Any) -> str:
        if callable(self.prompts):
            return str(self.prompts(label))
        if label not in self.prompts:
            raise KeyError(f"no prompt for label {label!r}")
        return str(self.prompts[label])

    def __call__(self, images: Any, label: Any) -> np.ndarray:
        import torch

        x = self._images(images)
        if hasattr(self.model, "eval"):
            self.model.eval()
        with torch.no_grad():
            ei = self.model.encode_image(x).double()
            et = self.model.encode_text(self.tokenizer([self._prompt(label)]).to(self.device))
            et = et.double()
            ei = ei / ei.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            et = et / et.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            score = 100.0 * (ei @ et[0]).clamp_min(0)
        return as_scores(score, int(x.shape[0]), "CLIP score")
