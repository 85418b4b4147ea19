"""Generator adapters for :meth:`SampleBank.generate`: ``generator(label, n, seed) -> samples``.

- :class:`DiffusersClassConditional` — a class-conditional diffusers ``UNet2DModel`` (class
  embeddings) + a scheduler (DDIM, DDPM, ...), with classifier-free guidance.
- :class:`DiffusersTextToImage` — any diffusers text-to-image pipeline (Stable Diffusion,
  FLUX, ...) with one prompt per label.
- :func:`as_generator` — any callable ``generate(label, n, seed)``.

torch and diffusers are imported only when a generator runs.  All adapters are
deterministic given the seed (a CPU ``torch.Generator`` seeds the initial noise).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, Callable

import numpy as np


def as_generator(fn: Callable[[Any, int, int], Any]) -> Callable[[Any, int, int], np.ndarray]:
    """Wrap a plain callable ``fn(label, n, seed)``; checks it accepts three arguments."""
    if not callable(fn):
        raise TypeError(f"generator must be callable, got {type(fn).__name__}")
    try:
        inspect.signature(fn).bind(0, 1, 0)
    except TypeError as exc:
        raise TypeError(f"generator must accept (label, n, seed): {exc}") from None
    except ValueError:  # builtins without a signature
        pass

    def generate(label: Any, n: int, seed: int) -> np.ndarray:
        out = fn(label, n, seed)
        if hasattr(out, "detach"):
            out = out.detach().cpu().numpy()
        return np.asarray(out)

    return generate


def _step_kwargs(scheduler: Any, eta: float, generator: Any) -> dict:
    params = inspect.signature(scheduler.step).parameters
    kw = {}
    if "eta" in params:
        kw["eta"] = eta
    if "generator" in params:
        kw["generator"] = generator
    return kw


class DiffusersClassConditional:
    """Sample a class-conditional diffusers ``UNet2DModel`` with a scheduler.

    Args:
        unet: ``UNet2DModel`` built with class embeddings (``num_class_embeds``).
        scheduler: a diffusers scheduler (e.g. ``DDIMScheduler``).
        num_inference_steps: denoising steps (50 for the paper's DDIM sampler).
        guidance_scale: classifier-free guidance weight w: ε = ε_∅ + w (ε_y − ε_∅); 1 (or
            ``null_label=None``) disables guidance.
        null_label: the class index of the unconditional embedding (required for w ≠ 1).
        label_map: optional mapping from bank labels to class indices (default int(label)).
        eta: DDIM η.  device, dtype: where the UNet runs (default: its own).
        output: ``"unit"`` maps the model's [−1, 1] output to [0, 1]; ``"raw"`` keeps it.
        batch_size: images per UNet forward (None: all n at once).

    Returns from ``__call__(label, n, seed)``: float32 (n, C, H, W).
    Cost: n · num_inference_steps UNet evaluations (×2 with guidance).
    """

    def __init__(
        self,
        unet: Any,
        scheduler: Any,
        *,
        num_inference_steps: int = 50,
        guidance_scale: float = 1.0,
        null_label: int | None = None,
        label_map: Mapping[Any, int] | None = None,
        eta: float = 0.0,
        device: Any = None,
        dtype: Any = None,
        output: str = "unit",
        batch_size: int | None = None,
    ):
        if output not in ("unit", "raw"):
            raise ValueError(f"unknown output {output!r}; expected 'unit' or 'raw'")
        if guidance_scale != 1.0 and null_label is None:
            raise ValueError("guidance_scale != 1 needs null_label (the unconditional class index)")
        n_cls = getattr(unet.config, "num_class_embeds", None)
        if not n_cls and getattr(unet.config, "class_embed_type", None) is None:
            raise ValueError("unet has no class embeddings (num_class_embeds is not set)")
        self.unet, self.scheduler = unet, scheduler
        self.num_inference_steps = int(num_inference_steps)
        self.guidance_scale = float(guidance_scale)
        self.null_label = null_label
        self.label_map = label_map
        self.eta = float(eta)
        self.device = device
        self.dtype = dtype
        self.output = output
        self.batch_size = batch_size
        self.n_classes = n_cls

    def _class_index(self, label: Any) -> int:
        idx = self.label_map[label] if self.label_map is not None else int(label)
        if self.n_classes and not 0 <= idx < self.n_classes:
            raise ValueError(f"label {label!r} maps to class {idx}, outside [0, {self.n_classes})")
        return idx

    def __call__(self, label: Any, n: int, seed: int) -> np.ndarray:
        import torch

        cls = self._class_index(label)
        bs = n if self.batch_size is None else int(self.batch_size)
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        outs = [self._sample(cls, min(bs, n - s), gen) for s in range(0, n, bs)]
        return np.concatenate(outs)

    def _sample(self, cls: int, n: int, gen: Any) -> np.ndarray:
        import torch

        unet, sched = self.unet, self.scheduler
        device = self.device or next(unet.parameters()).device
        dtype = self.dtype or next(unet.parameters()).dtype
        cfg = unet.config
        size = (
            cfg.sample_size
            if isinstance(cfg.sample_size, (tuple, list))
            else (cfg.sample_size,) * 2
        )
        x = torch.randn((n, cfg.in_channels, *size), generator=gen, dtype=torch.float32)
        x = (x * sched.init_noise_sigma).to(device=device, dtype=dtype)
        sched.set_timesteps(self.num_inference_steps)
        guided = self.guidance_scale != 1.0
        y = torch.full((n,), cls, dtype=torch.long, device=device)
        if guided:
            y = torch.cat(
                [y, torch.full((n,), int(self.null_label), dtype=torch.long, device=device)]
            )
        kw = _step_kwargs(sched, self.eta, gen)
        with torch.no_grad():
            for t in sched.timesteps:
                inp = sched.scale_model_input(x, t)
                if guided:
                    inp = torch.cat([inp, inp])
                eps = unet(inp, t, class_labels=y).sample
                if guided:
                    ec, eu = eps.chunk(2)
                    eps = eu + self.guidance_scale * (ec - eu)
                x = sched.step(eps, t, x, **kw).prev_sample
        x = x.float().cpu()
        if self.output == "unit":
            x = (x.clamp(-1, 1) + 1) / 2
        return x.numpy().astype(np.float32)


class DiffusersTextToImage:
    """Sample a diffusers text-to-image pipeline with one prompt per label.

    Args:
        pipeline: a diffusers pipeline called as ``pipeline(prompt=..., num_images_per_prompt=n,
            generator=..., num_inference_steps=..., guidance_scale=..., output_type="np")``
            (Stable Diffusion, SDXL, FLUX, ...).
        prompts: mapping label → prompt, or a callable label → prompt
            (e.g. ``"a Post-Impressionist painting by {artist}"``).
        num_inference_steps, guidance_scale: passed to the pipeline; 50 steps as in the
            paper (App. D: ArtBench / Fashion-Product inference); the paper gives no guidance
            scale, 7.5 is Stable Diffusion's usual default.
        batch_size: images per pipeline call (None: all n at once).
        **kwargs: more pipeline arguments (height, width, negative_prompt, ...); the paper
            generates at ``height=256, width=256``.

    The full-data model of the paper is a LoRA fine-tune: load the base pipeline, then
    ``pipeline.load_lora_weights("path/to/lora")`` (diffusers) before wrapping it here.

    Returns from ``__call__(label, n, seed)``: float32 (n, H, W, C) in [0, 1].
    """

    def __init__(
        self,
        pipeline: Any,
        prompts: Mapping[Any, str] | Callable[[Any], str],
        *,
        num_inference_steps: int = 50,
        guidance_scale: float = 7.5,
        batch_size: int | None = None,
        generator_device: str = "cpu",
        **kwargs: Any,
    ):
        if not callable(pipeline):
            raise TypeError("pipeline must be a callable diffusers pipeline")
        if not (callable(prompts) or isinstance(prompts, Mapping)):
            raise TypeError("prompts must be a mapping label -> prompt or a callable")
        self.pipeline = pipeline
        self.prompts = prompts
        self.num_inference_steps = int(num_inference_steps)
        self.guidance_scale = float(guidance_scale)
        self.batch_size = batch_size
        self.generator_device = generator_device
        self.kwargs = kwargs

    def prompt(self, label: Any) -> str:
        """The prompt of ``label`` (from the mapping or callable ``prompts``)."""
        if callable(self.prompts):
            return str(self.prompts(label))
        if label not in self.prompts:
            raise KeyError(f"no prompt for label {label!r}")
        return self.prompts[label]

    def __call__(self, label: Any, n: int, seed: int) -> np.ndarray:
        import torch

        prompt = self.prompt(label)
        bs = n if self.batch_size is None else int(self.batch_size)
        gen = torch.Generator(device=self.generator_device).manual_seed(int(seed))
        outs = []
        for s in range(0, n, bs):
            k = min(bs, n - s)
            res = self.pipeline(
                prompt=prompt,
                num_images_per_prompt=k,
                generator=gen,
                num_inference_steps=self.num_inference_steps,
                guidance_scale=self.guidance_scale,
                output_type="np",
                **self.kwargs,
            )
            imgs = res.images if hasattr(res, "images") else res[0]
            if hasattr(imgs, "detach"):
                imgs = imgs.detach().cpu().numpy()
            outs.append(np.asarray(imgs, dtype=np.float32))
        return np.concatenate(outs)
