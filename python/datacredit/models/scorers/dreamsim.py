"""DreamSim (Fu et al.) as a pairwise image distance (smaller = more similar)."""

from __future__ import annotations

from typing import Any

import numpy as np

from datacredit.models.images import to_pil_images
from datacredit.models.scorers.base import as_scores, missing_package


def dreamsim_transform(size: int = 224) -> Any:
    """DreamSim's own preprocessing of a PIL image: RGB, bicubic resize to size x size,
    ToTensor ([0, 1]), with a batch axis -- what ``dreamsim(...)`` returns as ``preprocess``."""
    from torchvision import transforms

    t = transforms.Compose(
        [
            transforms.Resize((size, size), interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.ToTensor(),
        ]
    )
    return lambda img: t(img.convert("RGB")).unsqueeze(0)


class DreamSimDistance:
    """DreamSim perceptual distance (Fu et al. 2023) through the ``dreamsim`` package.

    DreamSim is an embedding model: the distance of two images is ``1 - cos`` of their
    embeddings (``model.embed``).  So the re-rank embeds every training image once
    (:meth:`embed`, cached by ``GMValuator.fit`` with the training embeddings) and compares
    embeddings (:meth:`embedding_distance`), instead of re-embedding every pair.
    Inputs follow the library's image convention; each image goes through DreamSim's
    ``preprocess`` on a PIL image (RGB, 224 x 224 bicubic, [0, 1]) as dreamsim documents.

    Without ``model``, ``dreamsim.dreamsim(pretrained=True, cache_dir=cache_dir,
    dreamsim_type=dreamsim_type)`` loads the checkpoints from ``cache_dir`` (downloading
    them on first use; ``"ensemble"`` is DreamSim's default, ``"open_clip_vitb32"``,
    ``"clip_vitb32"``, ``"dino_vitb16"``, ... are its single-backbone variants).
    """

    higher_is_better = False  # a distance: smaller is more similar

    def __init__(
        self,
        *,
        model: Any = None,
        preprocess: Any = None,
        device: str = "cpu",
        cache_dir: str = "./models",
        batch_size: int = 64,
        dreamsim_type: str = "ensemble",
    ) -> None:
        import torch

        from datacredit._arrays import check_int

        batch_size = check_int(batch_size, "batch_size", 1)
        if model is None:
            try:
                from dreamsim import dreamsim
            except ImportError as exc:
                raise missing_package("dreamsim", "dreamsim", "rerank='dreamsim'") from exc
            try:
                model, preprocess = dreamsim(
                    pretrained=True, device=device, cache_dir=cache_dir, dreamsim_type=dreamsim_type
                )
            except Exception as exc:
                raise RuntimeError(
                    f"could not load the DreamSim weights ({type(exc).__name__}: {exc}). "
                    "Download the DreamSim checkpoints (dreamsim's GitHub release) on a machine "
                    f"with network access into cache_dir={cache_dir!r}, or pass model=..."
                ) from exc
        if not hasattr(model, "embed"):
            raise TypeError("model must have an embed method (a dreamsim model)")
        self.model = model
        self.preprocess = preprocess if preprocess is not None else dreamsim_transform()
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.name = "dreamsim"

    def embed(self, images: Any) -> np.ndarray:
        """DreamSim embeddings ``(n, d)`` float32 of images in the library convention."""
        import torch

        from datacredit.models._data import to_float_rows

        pils = to_pil_images(images, "images")
        if hasattr(self.model, "eval"):
            self.model.eval()
        if hasattr(self.model, "to"):
            self.model.to(self.device)
        rows = []
        with torch.no_grad():
            for s in range(0, len(pils), self.batch_size):
                x = [self.preprocess(p) for p in pils[s : s + self.batch_size]]
                x = torch.cat([t if t.ndim == 4 else t[None] for t in x])
                rows.append(to_float_rows(self.model.embed(x.to(self.device)), "dreamsim embed"))
        return np.concatenate(rows)

    @staticmethod
    def embedding_distance(ea: np.ndarray, eb: np.ndarray) -> np.ndarray:
        """``1 - cos(ea[i], eb[i])`` in float64, ``(n,)`` (DreamSim's distance)."""
        a = np.asarray(ea, np.float64)
        b = np.asarray(eb, np.float64)
        num = np.einsum("...d,...d->...", a, b)
        den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
        return 1.0 - np.divide(num, den, out=np.zeros_like(num), where=den > 0)

    def __call__(self, a: Any, b: Any) -> np.ndarray:
        out = self.embedding_distance(self.embed(a), self.embed(b))
        return as_scores(out, out.shape[0], self.name)

    def fingerprint(self) -> str:
        """Content fingerprint of the DreamSim model and its preprocessing (cache keys)."""
        from datacredit.models.fingerprint import fingerprint_model

        return fingerprint_model([self.model, repr(self.preprocess)])
