"""Pairwise image distances (re-ranking) and image-quality scores (calibration).

Distances: ``dist(a, b) -> np.ndarray (n,)`` float64 for aligned batches ``a[i]``,
``b[i]`` (smaller = more similar): :class:`LPIPSDistance`, :class:`DreamSimDistance`,
or any callable.  Quality: ``quality(images) -> np.ndarray (n,)`` in [0, 1] (larger =
better): :class:`MANIQAScorer` (pyiqa) or any callable.  :func:`make_distance` and
:func:`make_quality` turn a user specification into one.  The packages (lpips,
dreamsim, pyiqa) are imported only when such a scorer is built; missing packages or
weights raise errors saying what to install or download.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from datacredit.models._data import _is_torch


def _to_tensor(x: Any, device: Any) -> Any:
    import torch

    t = x if _is_torch(x) else torch.as_tensor(np.asarray(x))
    if not t.is_floating_point():
        t = t.float()
    return t.to(device)


def _as_scores(out: Any, n: int, name: str) -> np.ndarray:
    if _is_torch(out):
        out = out.detach().double().cpu().numpy()
    arr = np.asarray(out, dtype=np.float64).reshape(-1)
    if arr.shape[0] != n:
        raise ValueError(f"{name} returned {arr.shape[0]} values for a batch of {n}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} returned NaN or inf")
    return arr


def _missing(package: str, pip_name: str, what: str) -> ImportError:
    return ImportError(f"{what} needs the {package} package: pip install {pip_name}")


class TorchPairDistance:
    """A torch module ``model(a, b) -> (n,)`` (or ``(n,1,1,1)``) as a pairwise distance,
    run without gradients in eval mode on ``device``."""

    def __init__(self, model: Any, *, device: str = "cpu", name: str = "distance") -> None:
        import torch

        self.model = model
        self.device = torch.device(device)
        self.name = name

    def _call(self, a: Any, b: Any) -> Any:
        return self.model(a, b)

    def __call__(self, a: Any, b: Any) -> np.ndarray:
        import torch

        n = int(a.shape[0]) if hasattr(a, "shape") else len(a)
        if hasattr(self.model, "eval"):
            self.model.eval()
        if hasattr(self.model, "to"):
            self.model.to(self.device)
        with torch.no_grad():
            out = self._call(_to_tensor(a, self.device), _to_tensor(b, self.device))
        return _as_scores(out, n, self.name)


class LPIPSDistance(TorchPairDistance):
    """LPIPS perceptual distance (Zhang et al. 2018) through the ``lpips`` package.

    Inputs: image tensors ``(n, 3, H, W)``; in [-1, 1], or in [0, 1] with
    ``normalize=True``.  Pass a loaded ``model`` or let ``lpips.LPIPS(net=net)`` load one
    (its backbone weights come from torchvision and must be in the torch hub cache
    when there is no network).
    """

    def __init__(
        self,
        net: str = "alex",
        *,
        model: Any = None,
        normalize: bool = False,
        device: str = "cpu",
        pretrained: bool = True,
    ) -> None:
        if model is None:
            try:
                import lpips
            except ImportError as exc:
                raise _missing("lpips", "lpips", "rerank='lpips'") from exc
            try:
                model = lpips.LPIPS(net=net, pretrained=pretrained, verbose=False)
            except Exception as exc:
                raise RuntimeError(
                    f"could not load the LPIPS '{net}' network ({type(exc).__name__}: {exc}). "
                    f"Its ImageNet backbone comes from torchvision: download the '{net}' weights "
                    "on a machine with network access into the torch hub cache "
                    "($TORCH_HOME/hub/checkpoints), or pass model=lpips.LPIPS(...) yourself."
                ) from exc
        self.normalize = normalize
        super().__init__(model, device=device, name="lpips")

    def _call(self, a: Any, b: Any) -> Any:
        try:
            return self.model(a, b, normalize=self.normalize)
        except TypeError:  # a plain module without the normalize keyword
            if self.normalize:
                a, b = a * 2 - 1, b * 2 - 1
            return self.model(a, b)


class MSSSIMDistance:
    """1 − MS-SSIM (Wang et al. 2003) of aligned image pairs through ``pytorch-msssim``.

    Inputs: ``(n, C, H, W)`` images with values in ``[0, data_range]``; pytorch-msssim
    requires min(H, W) > (win_size − 1)·16 whatever the number of scales (``weights``, one
    per scale; default the five of Wang et al.), so small images need a smaller
    ``win_size``.  Returns float64 (n,), 0 for identical images.
    """

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
            raise _missing("pytorch-msssim", "pytorch-msssim", "MSSSIMDistance") from exc
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

        ta, tb = _to_tensor(a, self.device), _to_tensor(b, self.device)
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
        return _as_scores(1.0 - sim, int(ta.shape[0]), "1 - MS-SSIM")


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
        return _as_scores(e @ self.weight + self.bias, e.shape[0], "aesthetic score")


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
        return _as_scores(self.distance(x, np.broadcast_to(ref, (n, *ref.shape))), n, "distance")


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
    Inputs: preprocessed image tensors (n, 3, H, W).  Returns float64 (n,).
    """

    def __init__(
        self,
        model: Any,
        prompts: Any,
        *,
        tokenizer: Any = None,
        model_name: str = "ViT-L-14",
        device: str = "cpu",
    ) -> None:
        if not (hasattr(model, "encode_image") and hasattr(model, "encode_text")):
            raise TypeError("model must have encode_image and encode_text (an open_clip model)")
        if not (callable(prompts) or hasattr(prompts, "__getitem__")):
            raise TypeError("prompts must be a mapping label -> prompt or a callable")
        if tokenizer is None:
            try:
                import open_clip
            except ImportError as exc:
                raise _missing("open_clip", "open_clip_torch", "CLIPScore") from exc
            tokenizer = open_clip.get_tokenizer(model_name)
        self.model, self.prompts, self.tokenizer = model, prompts, tokenizer
        self.device = device

    def _prompt(self, label: Any) -> str:
        if callable(self.prompts):
            return str(self.prompts(label))
        if label not in self.prompts:
            raise KeyError(f"no prompt for label {label!r}")
        return str(self.prompts[label])

    def __call__(self, images: Any, label: Any) -> np.ndarray:
        import torch

        x = _to_tensor(images, self.device)
        if hasattr(self.model, "eval"):
            self.model.eval()
        with torch.no_grad():
            ei = self.model.encode_image(x).double()
            et = self.model.encode_text(self.tokenizer([self._prompt(label)]).to(self.device))
            et = et.double()
            ei = ei / ei.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            et = et / et.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            score = 100.0 * (ei @ et[0]).clamp_min(0)
        return _as_scores(score, int(x.shape[0]), "CLIP score")


class DreamSimDistance(TorchPairDistance):
    """DreamSim perceptual distance (Fu et al. 2023) through the ``dreamsim`` package.

    Inputs: images preprocessed by DreamSim's transform, ``(n, 3, 224, 224)`` in [0, 1].
    """

    def __init__(
        self, *, model: Any = None, device: str = "cpu", cache_dir: str = "./models"
    ) -> None:
        if model is None:
            try:
                from dreamsim import dreamsim
            except ImportError as exc:
                raise _missing("dreamsim", "dreamsim", "rerank='dreamsim'") from exc
            try:
                model, _ = dreamsim(pretrained=True, device=device, cache_dir=cache_dir)
            except Exception as exc:
                raise RuntimeError(
                    f"could not load the DreamSim weights ({type(exc).__name__}: {exc}). "
                    "Download the DreamSim checkpoints (dreamsim's GitHub release) on a machine "
                    f"with network access into cache_dir={cache_dir!r}, or pass model=..."
                ) from exc
        super().__init__(model, device=device, name="dreamsim")


class MANIQAScorer:
    """MANIQA no-reference image quality (Yang et al. 2022) through ``pyiqa``, in [0, 1].

    Inputs: image tensors ``(n, 3, H, W)`` in [0, 1].  Scores are clipped to [0, 1]
    (MANIQA's range).  Pass a loaded ``model`` (any callable ``images -> (n,)``) or let
    ``pyiqa.create_metric("maniqa")`` load one.
    """

    def __init__(self, *, model: Any = None, device: str = "cpu", batch_size: int = 32) -> None:
        if model is None:
            try:
                import pyiqa
            except ImportError as exc:
                raise _missing("pyiqa", "pyiqa", "quality='maniqa'") from exc
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

    def __call__(self, images: Any) -> np.ndarray:
        import torch

        n = int(images.shape[0]) if hasattr(images, "shape") else len(images)
        out = []
        with torch.no_grad():
            for s in range(0, n, self.batch_size):
                b = _to_tensor(images[s : s + self.batch_size], self.device)
                out.append(_as_scores(self.model(b), int(b.shape[0]), "maniqa"))
        return np.clip(np.concatenate(out), 0.0, 1.0)


class CallableDistance:
    """Any ``fn(a, b) -> (n,)`` pairwise distance, checked for shape and finiteness."""

    def __init__(self, fn: Any) -> None:
        if not callable(fn):
            raise TypeError(f"rerank must be callable, got {type(fn).__name__}")
        self.fn = fn

    def __call__(self, a: Any, b: Any) -> np.ndarray:
        n = int(a.shape[0]) if hasattr(a, "shape") else len(a)
        return _as_scores(self.fn(a, b), n, "rerank")


class CallableQuality:
    """Any ``fn(images) -> (n,)`` quality score; values outside [0, 1] raise."""

    def __init__(self, fn: Any) -> None:
        if not callable(fn):
            raise TypeError(f"quality must be callable, got {type(fn).__name__}")
        self.fn = fn

    def __call__(self, images: Any) -> np.ndarray:
        n = int(images.shape[0]) if hasattr(images, "shape") else len(images)
        return _as_scores(self.fn(images), n, "quality")


def make_distance(spec: Any, *, device: str = "cpu") -> Any:
    """``"lpips"``, ``"dreamsim"`` or a callable ``fn(a, b) -> (n,)`` → a distance."""
    if isinstance(spec, str):
        if spec == "lpips":
            return LPIPSDistance(device=device)
        if spec == "dreamsim":
            return DreamSimDistance(device=device)
        raise ValueError(f"unknown image distance {spec!r}; expected 'lpips' or 'dreamsim'")
    if isinstance(spec, (TorchPairDistance, CallableDistance)):
        return spec
    return CallableDistance(spec)


def make_quality(spec: Any, *, device: str = "cpu") -> Any:
    """``None``, ``"maniqa"`` or a callable ``fn(images) -> (n,)`` in [0, 1]."""
    if spec is None:
        return None
    if isinstance(spec, str):
        if spec == "maniqa":
            return MANIQAScorer(device=device)
        raise ValueError(f"unknown quality model {spec!r}; expected None, 'maniqa' or a callable")
    if isinstance(spec, (MANIQAScorer, CallableQuality)):
        return spec
    return CallableQuality(spec)
