"""Pairwise image distances (re-ranking) and image-quality scores (calibration).

Distances: ``dist(a, b) -> np.ndarray (n,)`` float64 for aligned batches ``a[i]``,
``b[i]`` (smaller = more similar): :class:`PixelL2Distance`, :class:`LPIPSDistance`,
:class:`DreamSimDistance`, or any callable.  The built-in adapters take images in the
library's convention (:mod:`datacredit.models.images`) and convert them for their model;
callables get the user's data as it is.  Quality: ``quality(images) -> np.ndarray (n,)`` in [0, 1] (larger =
better): :class:`MANIQAScorer` (pyiqa) or any callable.  :func:`make_distance` and
:func:`make_quality` turn a user specification into one.  The packages (lpips,
dreamsim, pyiqa) are imported only when such a scorer is built; missing packages or
weights raise errors saying what to install or download.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from datacredit.models._data import _is_torch
from datacredit.models.images import resize, to_image_batch, to_pil_images, to_rgb


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
        return _as_scores(out, int(ta.shape[0]), self.name)


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

        from datacredit.models.images import _channels_first

        ta, tb = _to_tensor(a, self.device), _to_tensor(b, self.device)
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
        preprocess: the model's evaluation transform (``load_open_clip``'s second value):
            then inputs are images in the library's convention
            (:mod:`datacredit.models.images`, e.g. a bank of
            :class:`~datacredit.models.DiffusersTextToImage` samples, (n, H, W, 3) in
            [0, 1]), each quantised to 8 bits and passed through it as open_clip documents.
    Inputs: without ``preprocess``, preprocessed image tensors (n, 3, H, W).  Returns
    float64 (n,).
    """

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
                raise _missing("open_clip", "open_clip_torch", "CLIPScore") from exc
            tokenizer = open_clip.get_tokenizer(model_name)
        self.model, self.prompts, self.tokenizer = model, prompts, tokenizer
        self.device = device
        self.preprocess = preprocess

    def _images(self, images: Any) -> Any:
        import torch

        if self.preprocess is not None:
            pil = to_pil_images(images, "images")
            return torch.stack([self.preprocess(im) for im in pil]).to(self.device)
        x = _to_tensor(images, self.device)
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
        return _as_scores(score, int(x.shape[0]), "CLIP score")


def _dreamsim_transform(size: int = 224) -> Any:
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
                raise _missing("dreamsim", "dreamsim", "rerank='dreamsim'") from exc
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
        self.preprocess = preprocess if preprocess is not None else _dreamsim_transform()
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
        return _as_scores(out, out.shape[0], self.name)

    def fingerprint(self) -> str:
        from datacredit.models.fingerprint import fingerprint_model

        return fingerprint_model([self.model, repr(self.preprocess)])


class PixelL2Distance:
    """Euclidean distance between images in pixel space (the paper's App. H re-rank).

    Inputs follow the library's image convention and are compared as float64 in [0, 1];
    when the two batches differ in channels, grayscale is repeated to RGB, and when they
    differ in size the training images are resized to the generated ones' (bilinear,
    antialiased).  ``(n,)`` float64, ``O(n * C * H * W)``.
    """

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


class MANIQAScorer:
    """MANIQA no-reference image quality (Yang et al. 2022) through ``pyiqa``, in [0, 1].

    Inputs follow the library's image convention; each batch is converted to what pyiqa's
    metric takes, a ``(n, 3, H, W)`` RGB float tensor in [0, 1] (grayscale repeated, uint8
    divided by 255) -- the tensor ``pyiqa`` itself reads from an image file.  Sizes are left
    to pyiqa, which scores 224 x 224 crops and upsamples smaller images itself; set
    ``min_size`` to upsample (bicubic, antialiased) to a shorter side of at least that many
    pixels first, for a custom ``model`` that cannot.  Scores are clipped to [0, 1]
    (MANIQA's range).  Pass a loaded ``model`` (any callable ``images -> (n,)``, e.g. a
    ``pyiqa.create_metric("maniqa")``) or let this class create pyiqa's metric.
    """

    def __init__(
        self,
        *,
        model: Any = None,
        device: str = "cpu",
        batch_size: int = 32,
        min_size: int | None = None,
    ) -> None:
        from datacredit._arrays import check_int

        batch_size = check_int(batch_size, "batch_size", 1)
        if min_size is not None:
            min_size = check_int(min_size, "min_size", 1)
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
        self.min_size = min_size

    def convert(self, images: Any) -> Any:
        """Images (library convention) -> ``(n, 3, H', W')`` float in [0, 1] (min side >=
        ``min_size`` when it is set)."""
        t = to_rgb(to_image_batch(images, "images"))
        h, w = t.shape[-2:]
        if self.min_size is not None and min(h, w) < self.min_size:
            f = self.min_size / min(h, w)
            t = resize(
                t, (max(self.min_size, round(h * f)), max(self.min_size, round(w * f))), "bicubic"
            )
        return t

    def __call__(self, images: Any) -> np.ndarray:
        import torch

        t = self.convert(images)
        out = []
        with torch.no_grad():
            for s in range(0, t.shape[0], self.batch_size):
                b = t[s : s + self.batch_size].to(self.device)
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


IMAGE_DISTANCES = ("pixel_l2", "lpips", "dreamsim")


def make_distance(spec: Any, *, device: str = "cpu") -> Any:
    """``"pixel_l2"``, ``"lpips"``, ``"dreamsim"`` or a callable ``fn(a, b) -> (n,)`` → a
    distance."""
    if isinstance(spec, str):
        if spec == "pixel_l2":
            return PixelL2Distance()
        if spec == "lpips":
            return LPIPSDistance(device=device)
        if spec == "dreamsim":
            return DreamSimDistance(device=device)
        raise ValueError(f"unknown image distance {spec!r}; expected one of {IMAGE_DISTANCES}")
    if isinstance(spec, (TorchPairDistance, CallableDistance, DreamSimDistance, PixelL2Distance)):
        return spec
    if hasattr(spec, "embed") and hasattr(spec, "embedding_distance"):  # DreamSim's protocol
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
