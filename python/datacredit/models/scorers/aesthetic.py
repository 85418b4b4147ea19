"""The LAION aesthetic predictor (a linear head on CLIP image embeddings; higher = better)."""

from __future__ import annotations

from typing import Any

import numpy as np

from datacredit.models.scorers.base import as_scores


class LAIONAestheticScorer:
    """The LAION aesthetic predictor: a linear head on l2-normalised CLIP image embeddings
    (OpenCLIP ViT-L/14 in the paper), score = w·e + b per image.

    Args:
        encoder: an image encoder with ``encode(images) -> (n, d)``, e.g.
            ``OpenCLIPEncoder("ViT-L-14", pretrained="/path/to/openai-vit-l-14.bin")``;
            its embeddings are l2-normalised here whatever the encoder does.
        head: path to the head's weights as ``.safetensors`` or ``.npz`` with ``weight``
            (1 × d or d) and ``bias`` (1,) — LAION's ``sa_0_4_vit_l_14_linear.pth`` converted
            once (datacredit never unpickles: ``w = torch.load(p, weights_only=True)``, then
            ``datacredit.safetensors_io.save_safetensors(out, {k: v.numpy() for k, v in
            w.items()})``) — or a tuple ``(weight, bias)`` of arrays.
    Returns float64 (n,) scores (LAION's scale, about 1–10 with the real weights).
    """

    higher_is_better = True  # a quality score: larger is better

    def __init__(self, encoder: Any, head: Any) -> None:
        if not hasattr(encoder, "encode"):
            raise TypeError("encoder must have an encode(images) method")
        if isinstance(head, tuple):
            if len(head) != 2:
                raise ValueError("head as a tuple must be (weight, bias)")
            w, b = head
        else:
            from pathlib import Path

            path = Path(head)
            if not path.exists():
                raise FileNotFoundError(
                    f"aesthetic head weights {str(path)!r} not found (download LAION's "
                    "sa_0_4_vit_l_14_linear.pth elsewhere and convert it to .safetensors)"
                )
            if path.suffix == ".safetensors":
                from datacredit.safetensors_io import load_safetensors

                tensors, _ = load_safetensors(path, mmap=False)
            elif path.suffix == ".npz":
                with np.load(path, allow_pickle=False) as f:
                    tensors = {k: f[k] for k in f.files}
            else:
                raise ValueError(
                    f"head must be a .safetensors or .npz file, got {path.name!r} (datacredit "
                    "does not unpickle .pth files; convert it once)"
                )
            if "weight" not in tensors or "bias" not in tensors:
                raise ValueError(
                    f"{path}: needs tensors 'weight' and 'bias', has {sorted(tensors)}"
                )
            w, b = tensors["weight"], tensors["bias"]
        self.weight = np.asarray(w, dtype=np.float64).reshape(-1)
        self.bias = float(np.asarray(b, dtype=np.float64).reshape(-1)[0])
        if np.asarray(b).size != 1 or not np.isfinite(self.weight).all():
            raise ValueError("head: weight must be finite (d,) and bias one number")
        self.encoder = encoder

    def __call__(self, images: Any) -> np.ndarray:
        e = np.asarray(self.encoder.encode(images), dtype=np.float64)
        if e.ndim != 2 or e.shape[1] != self.weight.size:
            raise ValueError(
                f"embeddings have shape {e.shape}; the head expects dimension {self.weight.size}"
            )
        e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
        return as_scores(e @ self.weight + self.bias, e.shape[0], "aesthetic score")
