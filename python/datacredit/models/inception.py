"""Inception-v3 pool3 features and class probabilities for FID / IS, as pytorch-fid computes
them, with pytorch-fid's weights loaded from a local file (nothing is downloaded).

pytorch-fid's ``InceptionV3`` fetches ``pt_inception-2015-12-05-6726825d.pth`` from the
network.  Here its own architecture is built with the state dict read from a local
``.safetensors`` file instead (convert the ``.pth`` once where torch can read it:
``sd = torch.load(path, weights_only=True)``, then
``datacredit.safetensors_io.save_safetensors(out, {k: v.numpy() for k, v in sd.items()})``;
datacredit itself never unpickles).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

_PATCH_LOCK = threading.Lock()


def _load_state_dict(weights: Any) -> dict:
    import torch

    if isinstance(weights, dict):
        return {k: torch.as_tensor(np.asarray(v)) for k, v in weights.items()}
    path = Path(weights)
    if not path.exists():
        raise FileNotFoundError(
            f"Inception weights {str(path)!r} not found: download pytorch-fid's "
            "pt_inception-2015-12-05-6726825d.pth on a machine with network access and "
            "convert it to .safetensors (see datacredit.models.inception)"
        )
    if path.suffix != ".safetensors":
        raise ValueError(
            f"weights must be a .safetensors file, got {path.name!r} (datacredit does not "
            "unpickle .pth files; convert it once)"
        )
    from datacredit.safetensors_io import load_safetensors

    tensors, _ = load_safetensors(path, mmap=False)
    return {k: torch.from_numpy(np.array(v)) for k, v in tensors.items()}


@contextmanager
def _local_weights(state_dict: dict):
    """pytorch-fid's builder with its URL loader answering from ``state_dict``."""
    try:
        import pytorch_fid.inception as pfi
    except ImportError as exc:
        raise ImportError(
            "InceptionPool3 needs the pytorch-fid package: pip install pytorch-fid"
        ) from exc
    with _PATCH_LOCK:
        original = pfi.load_state_dict_from_url
        pfi.load_state_dict_from_url = lambda *args, **kwargs: state_dict
        try:
            yield pfi
        finally:
            pfi.load_state_dict_from_url = original


class InceptionPool3:
    """pytorch-fid's Inception-v3: ``features(images)`` → pool3 (n, 2048) for FID,
    ``class_probs(images)`` → softmax of the 1008-way logits for the Inception Score.

    Args:
        weights: path to the ``.safetensors`` state dict of pytorch-fid's FID Inception (or a
            dict name → array).
        device: torch device.  batch_size: images per forward pass.
        resize_input, normalize_input: as pytorch-fid (bilinear resize to 299², [0, 1] →
            [−1, 1]); inputs are float images (n, 3, H, W) in [0, 1].

    Use as ``FID(InceptionPool3(w).features, reference)`` and
    ``InceptionScore(InceptionPool3(w).class_probs)``.  Cost: one Inception forward per image.
    """

    def __init__(
        self,
        weights: Any,
        *,
        device: str = "cpu",
        batch_size: int = 64,
        resize_input: bool = True,
        normalize_input: bool = True,
    ) -> None:
        import torch

        state = _load_state_dict(weights)
        with _local_weights(state) as pfi:
            self.model = pfi.InceptionV3(
                [3], resize_input=resize_input, normalize_input=normalize_input
            )
            self.fc = pfi.fid_inception_v3().fc
        self.device = torch.device(device)
        self.model.eval().to(self.device)
        self.fc.eval().to(self.device)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.batch_size = batch_size

    def _pool3(self, images: Any) -> Any:
        import torch

        from datacredit.models.scorers.base import to_tensor as _to_tensor

        x = _to_tensor(images, self.device)
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"images must be (n, 3, H, W), got {tuple(x.shape)}")
        outs = []
        with torch.no_grad():
            for s in range(0, x.shape[0], self.batch_size):
                outs.append(self.model(x[s : s + self.batch_size])[0].flatten(1))
        return torch.cat(outs)

    def features(self, images: Any) -> np.ndarray:
        """pool3 features, float64 (n, 2048)."""
        return self._pool3(images).double().cpu().numpy()

    def class_probs(self, images: Any) -> np.ndarray:
        """Softmax of the network's 1008 logits (the TF Inception head), float64 (n, 1008)."""
        import torch

        with torch.no_grad():
            logits = self.fc(self._pool3(images))
            return torch.softmax(logits.double(), 1).cpu().numpy()
