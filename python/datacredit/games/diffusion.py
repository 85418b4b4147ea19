"""The retraining game of a contributor-conditioned diffusion model (SurrogateSHAP §5.2–5.5).

The proxy game of SurrogateSHAP scores a coalition S by mixing the *full-data* model's
conditionals p_θ(x | i), i ∈ S; the game it approximates retrains the model on S's data
only.  :class:`DiffusionRetrainingGame` plays that true game on a small class-conditional
diffusers ``UNet2DModel`` whose class embedding is the contributor id (plus a null class
for classifier-free guidance), so a contributor's data shapes both its own conditional and
the parameters every contributor shares:

- ``mode="scratch"``: a fresh UNet trained on the coalition's images (the paper's
  retrain-from-scratch ground truth);
- ``mode="finetune"``: the full-data model fine-tuned on the coalition (the paper's
  sparsified-LoRA-fine-tuning analogue, much cheaper).

A retrained model then generates with the *same* sampler, per-contributor seeds and
initial noise as the full model's sample bank (DDIM, η = 0, so two models' samples of one
contributor are paired image by image) and is scored with the *same* utility objects as
:meth:`DiffusionRetrainingGame.proxy_game`.  Every retraining goes through
:class:`datacredit.metrics.retraining.RetrainingHarness`: cached per (coalition, training
seed, tag) as one ``.npy`` written atomically, so a killed run resumes; the full-data model
and its bank are cached the same way (safetensors / ``.npy``, through the atomic writer).

The training loop is a variant of the demo's (``datacredit.demo.training``): ε-prediction,
AdamW + one-cycle learning rate, null-class dropout for guidance, seeded batches — with the
null class at ``n_contributors`` rather than the demo's fixed 10 classes, and an initial
state for fine-tuning.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datacredit._arrays import check_choice
from datacredit._io import atomic_save_npy, atomic_write_bytes
from datacredit.metrics.retraining import RetrainingHarness
from datacredit.surrogateshap.bank_files import label_seed

#: Columns of :meth:`DiffusionRetrainingGame.run` after the utilities: paired mean absolute
#: pixel error and mean SSIM between the retrained and the full model's samples, then the
#: seconds spent training and sampling + scoring that model (when it was trained).
SAMPLE_METRICS = ("mae", "ssim", "train_s", "sample_s")


@dataclass(frozen=True)
class DiffusionRecipe:
    """How one model is trained and sampled; part of every cache key.

    Attributes:
        steps: optimiser steps from scratch (each one batch of ``batch_size`` images).
        batch_size: images per step (drawn with replacement from the coalition's images).
        lr: peak learning rate of the one-cycle schedule (AdamW, weight decay 1e-4).
        null_dropout: fraction of labels replaced by the null class (guidance training).
        channels: ``block_out_channels`` of the two-level UNet.
        ddim_steps: DDIM inference steps (η = 0: deterministic given the initial noise).
        guidance: classifier-free guidance weight w (1: none).
        n_per_label: samples generated per contributor.
        finetune_steps, finetune_lr: the ``mode="finetune"`` schedule from the full model.
    """

    steps: int = 200
    batch_size: int = 64
    lr: float = 3e-3
    null_dropout: float = 0.1
    channels: tuple[int, int] = (16, 32)
    ddim_steps: int = 10
    guidance: float = 2.0
    n_per_label: int = 32
    finetune_steps: int = 60
    finetune_lr: float = 5e-4

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "ddim_steps", "n_per_label", "finetune_steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.n_per_label < 4:
            raise ValueError(
                f"n_per_label must be >= 4 (FID's split estimator), got {self.n_per_label}"
            )
        for name in ("lr", "finetune_lr"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if not 0.0 <= float(self.null_dropout) < 1.0:
            raise ValueError(f"null_dropout must be in [0, 1), got {self.null_dropout!r}")
        if not float(self.guidance) >= 0:
            raise ValueError(f"guidance must be >= 0, got {self.guidance!r}")
        if len(self.channels) != 2 or any(int(c) % 8 for c in self.channels):
            raise ValueError(f"channels must be two multiples of 8, got {self.channels!r}")

    def key(self) -> str:
        """A stable text form of the recipe (for cache tags)."""
        return json.dumps(asdict(self), sort_keys=True)


def make_conditional_unet(image_size: int, n_labels: int, channels: tuple[int, int] = (16, 32)):
    """A fresh two-level ``diffusers.UNet2DModel`` for ``(1, image_size, image_size)`` images
    with ``n_labels + 1`` class embeddings (the last one is the null class of guidance)."""
    from diffusers import UNet2DModel

    return UNet2DModel(
        sample_size=int(image_size),
        in_channels=1,
        out_channels=1,
        block_out_channels=tuple(int(c) for c in channels),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=8,
        num_class_embeds=int(n_labels) + 1,
        add_attention=False,
    )


def make_scheduler():
    """The noise schedule of training and DDIM sampling (cosine betas, 1,000 steps)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=True
    )


def train_conditional_diffusion(
    x: np.ndarray,
    labels: np.ndarray,
    n_labels: int,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    null_dropout: float,
    channels: tuple[int, int] = (16, 32),
    seed: int = 0,
    init_state: Mapping[str, Any] | None = None,
):
    """Train (or, from ``init_state``, fine-tune) a label-conditioned UNet; returns it in eval mode.

    ``x``: ``(N, 1, H, W)`` float32 in [0, 1]; ``labels``: ``(N,)`` int in ``[0, n_labels)``.
    ε-prediction MSE, AdamW + one-cycle schedule, ``null_dropout`` of the labels replaced by
    the null class ``n_labels``.  Deterministic for a given seed on one thread.
    Cost: O(steps · batch_size) UNet forward + backward passes.
    """
    import torch
    from torch import nn

    torch.manual_seed(int(seed))
    unet = make_conditional_unet(x.shape[-1], n_labels, channels)
    if init_state is not None:
        unet.load_state_dict(dict(init_state))
    sched = make_scheduler()
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=1e-4)
    # 5 % warm-up (at least 2 steps: one-cycle divides by the warm-up length minus one);
    # runs of < 4 steps (tests) keep a constant learning rate
    onecycle = None
    if steps >= 4:
        onecycle = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=lr, total_steps=int(steps), pct_start=max(0.05, 2.0 / steps)
        )
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)) * 2 - 1
    yt = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    gen = torch.Generator().manual_seed(int(seed))
    unet.train()
    for _ in range(int(steps)):
        idx = torch.randint(0, len(xt), (batch_size,), generator=gen)
        clean, y = xt[idx], yt[idx].clone()
        y[torch.rand(batch_size, generator=gen) < null_dropout] = n_labels
        noise = torch.randn(clean.shape, generator=gen)
        t = torch.randint(0, sched.config.num_train_timesteps, (batch_size,), generator=gen)
        loss = nn.functional.mse_loss(
            unet(sched.add_noise(clean, noise, t), t, class_labels=y).sample, noise
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        if onecycle is not None:
            onecycle.step()
    return unet.eval()


def paired_ssim(a: np.ndarray, b: np.ndarray, win_size: int = 3) -> np.ndarray:
    """SSIM of aligned ``(n, 1, H, W)`` image pairs in [0, 1] (pytorch-msssim's single-scale
    SSIM, Gaussian window ``win_size``, σ = 1.5); float64 ``(n,)``."""
    import torch
    from pytorch_msssim import ssim

    ta = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    tb = torch.from_numpy(np.ascontiguousarray(b, dtype=np.float32))
    return ssim(ta, tb, data_range=1.0, win_size=win_size, size_average=False).double().numpy()


class DiffusionRetrainingGame:
    """Retraining game over contributors of a contributor-conditioned diffusion model.

    Args:
        images: ``(N, 1, H, W)`` float32 training images in [0, 1] (H = W, a multiple of 2).
        owner: ``(N,)`` int, the contributor ``0..n-1`` of each image (its class label too).
        utilities: name → a :mod:`datacredit.surrogateshap.utilities` object, higher is
            better (wrap a loss such as FID in a negation); each is copied before use, the
            originals are not modified.
        recipe: the :class:`DiffusionRecipe`.
        mode: ``"scratch"`` or ``"finetune"`` (from the full-data model).
        cache_dir: where the full model, its bank and every retraining result are cached
            (None: nothing cached, every query retrains).
        tag: extra text of the cache key (change it when the utilities change: their
            objects cannot be hashed here).
        train_seed: seed of the full model and the default seed of every retraining.
        bank_seed: seed of the samples: contributor ``i`` always draws its initial noise
            from ``label_seed(bank_seed, i, 0)`` (:meth:`SampleBank.generate`'s seeds).
        players: names of the contributors (default ``"0".."n-1"``).

    Cost per retraining: ``recipe.steps`` (or ``finetune_steps``) training steps + |S| ·
    n_per_label · ddim_steps UNet evaluations (×2 with guidance) + the utilities.
    """

    def __init__(
        self,
        images: Any,
        owner: Any,
        utilities: Mapping[str, Any],
        recipe: DiffusionRecipe | None = None,
        *,
        mode: str = "scratch",
        cache_dir: str | Path | None = None,
        tag: str = "",
        train_seed: int = 0,
        bank_seed: int = 0,
        players: list[str] | None = None,
        progress: bool = False,
    ) -> None:
        x = np.asarray(images)
        if x.ndim != 4 or x.shape[1] != 1 or x.shape[2] != x.shape[3] or x.shape[2] % 2:
            raise ValueError(f"images must be (N, 1, H, H) with an even H, got {x.shape}")
        if not np.issubdtype(x.dtype, np.floating) or not np.isfinite(x).all():
            raise ValueError("images must be finite floating-point values")
        if x.min() < 0 or x.max() > 1:
            raise ValueError("images must lie in [0, 1]")
        o = np.asarray(owner)
        if o.shape != (x.shape[0],) or not np.issubdtype(o.dtype, np.integer):
            raise ValueError(f"owner must be ({x.shape[0]},) integers, got {o.shape} {o.dtype}")
        n = int(o.max()) + 1 if o.size else 0
        if o.min() < 0 or n < 2:
            raise ValueError("owner must hold contributor ids 0..n-1 with n >= 2")
        counts = np.bincount(o, minlength=n)
        if (counts == 0).any():
            raise ValueError(f"contributors without images: {np.flatnonzero(counts == 0).tolist()}")
        if not isinstance(utilities, Mapping) or not utilities:
            raise ValueError("utilities must be a non-empty mapping name -> utility")
        for name, u in utilities.items():
            if not (
                callable(getattr(u, "prepare", None)) and callable(getattr(u, "evaluate", None))
            ):
                raise TypeError(f"utility {name!r} has no prepare(bank) / evaluate(weights)")
        self.recipe = DiffusionRecipe() if recipe is None else recipe
        if not isinstance(self.recipe, DiffusionRecipe):
            raise TypeError(f"recipe must be a DiffusionRecipe, got {type(self.recipe).__name__}")
        self.mode = check_choice(mode, "mode", ("scratch", "finetune"))
        if not isinstance(tag, str):
            raise TypeError(f"tag must be a str, got {type(tag).__name__}")
        self.images = x.astype(np.float32)  # a copy: the caller's array is never touched
        self.owner = o.astype(np.int64)
        self.n_players = n
        self.counts = counts.astype(np.float64)
        self.players = [str(i) for i in range(n)] if players is None else [str(p) for p in players]
        if len(self.players) != n:
            raise ValueError(f"{len(self.players)} player names for {n} contributors")
        self.utility_names = list(utilities)
        self._utilities = dict(utilities)
        self.train_seed = int(train_seed)
        self.bank_seed = int(bank_seed)
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        h = hashlib.sha256()
        h.update(b"diffusion-retraining-v2\0" + self.recipe.key().encode() + b"\0")
        h.update(self.images.tobytes() + self.owner.tobytes())
        # each utility's settings too (estimator, reference, ...): results cached with
        # another FID / IS estimator are never read back as this one's (v1 keyed names only)
        settings = [
            u.settings_key() if callable(getattr(u, "settings_key", None)) else type(u).__qualname__
            for u in self._utilities.values()
        ]
        h.update(json.dumps([self.utility_names, settings, tag, self.bank_seed]).encode())
        self._data_key = h.hexdigest()[:16]
        self.tag = f"{self.mode}-{self._data_key}"
        self._full_state: dict | None = None
        self._bank: np.ndarray | None = None
        self._empty: np.ndarray | None = None
        self.harness = RetrainingHarness(
            self._train, self._evaluate, cache_dir=self.cache_dir, tag=self.tag, progress=progress
        )

    # ----------------------------------------------------------------- models
    def _train(self, members: np.ndarray, seed: int):
        t0 = time.perf_counter()
        if members.min() < 0 or members.max() >= self.n_players:
            raise ValueError(f"contributor ids must be in [0, {self.n_players})")
        keep = np.isin(self.owner, members)
        r = self.recipe
        if self.mode == "finetune":
            unet = train_conditional_diffusion(
                self.images[keep], self.owner[keep], self.n_players,
                steps=r.finetune_steps, batch_size=r.batch_size, lr=r.finetune_lr,
                null_dropout=r.null_dropout, channels=r.channels, seed=seed,
                init_state=self.full_state(),
            )  # fmt: skip
        elif keep.all() and seed == self.train_seed:
            unet = self.full_model()  # the very same training run, done once
        else:
            unet = self._train_scratch(keep, seed)
        return members, unet, time.perf_counter() - t0

    def _train_scratch(self, keep: np.ndarray, seed: int):
        r = self.recipe
        return train_conditional_diffusion(
            self.images[keep], self.owner[keep], self.n_players,
            steps=r.steps, batch_size=r.batch_size, lr=r.lr,
            null_dropout=r.null_dropout, channels=r.channels, seed=seed,
        )  # fmt: skip

    def _path(self, name: str) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / f"{name}-{self._data_key}"

    def full_state(self) -> dict:
        """State dict of the full-data model (trained from scratch with ``train_seed``; cached)."""
        if self._full_state is not None:
            return self._full_state
        from safetensors.torch import load, save

        path = self._path("full-model")
        file = None if path is None else path.with_suffix(".safetensors")
        if file is not None and file.exists():
            self._full_state = load(file.read_bytes())
            return self._full_state
        unet = self._train_scratch(np.ones(len(self.owner), bool), self.train_seed)
        state = {k: v.detach().contiguous().clone() for k, v in unet.state_dict().items()}
        if file is not None:
            file.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(file, save(state))
        self._full_state = state
        return state

    def full_model(self):
        """The full-data UNet (eval mode)."""
        unet = make_conditional_unet(self.images.shape[-1], self.n_players, self.recipe.channels)
        unet.load_state_dict(self.full_state())
        return unet.eval()

    def sample(self, unet: Any, members: Any) -> np.ndarray:
        """Samples ``(|members|, n_per_label, 1, H, W)`` float32 in [0, 1] of ``unet`` for the
        given contributors: DDIM (η = 0) with classifier-free guidance, contributor ``i``'s
        initial noise drawn from ``label_seed(bank_seed, i, 0)`` — the same noise for every
        model, so two models' samples of a contributor are paired image by image.  All
        contributors go through the UNet in one batch (the per-contributor noise, not the
        batch, fixes the samples).  Cost: |members| · n_per_label · ddim_steps · 2 UNet rows."""
        import torch

        r = self.recipe
        members = [int(i) for i in members]
        size = unet.config.sample_size
        noise = [
            torch.randn(
                (r.n_per_label, 1, size, size),
                generator=torch.Generator().manual_seed(label_seed(self.bank_seed, i, 0)),
            )
            for i in members
        ]
        sched = make_scheduler()
        x = torch.cat(noise) * sched.init_noise_sigma
        sched.set_timesteps(r.ddim_steps)
        y = torch.repeat_interleave(torch.tensor(members), r.n_per_label)
        guided = r.guidance != 1.0
        if guided:
            y = torch.cat([y, torch.full_like(y, self.n_players)])
        with torch.no_grad():
            for t in sched.timesteps:
                inp = sched.scale_model_input(x, t)
                eps = unet(torch.cat([inp, inp]) if guided else inp, t, class_labels=y).sample
                if guided:
                    ec, eu = eps.chunk(2)
                    eps = eu + r.guidance * (ec - eu)
                x = sched.step(eps, t, x, eta=0.0).prev_sample
        out = ((x.clamp(-1, 1) + 1) / 2).numpy().astype(np.float32)
        return out.reshape(len(members), r.n_per_label, 1, size, size)

    def bank_samples(self) -> np.ndarray:
        """The full model's samples of every contributor ``(n, n_per_label, 1, H, W)`` (cached)."""
        if self._bank is None:
            path = self._path("full-bank")
            file = None if path is None else path.with_suffix(".npy")
            if file is not None and file.exists():
                self._bank = np.load(file, allow_pickle=False)
            else:
                self._bank = self.sample(self.full_model(), range(self.n_players))
                if file is not None:
                    atomic_save_npy(file, self._bank)
        return self._bank

    def sample_bank(self):
        """The full model's :class:`SampleBank` (labels = contributor ids ``0..n-1``)."""
        from datacredit.surrogateshap import SampleBank

        s = self.bank_samples()
        return SampleBank({i: s[i] for i in range(self.n_players)})

    # ----------------------------------------------------------------- scoring
    def _score(self, samples: np.ndarray, members: np.ndarray) -> np.ndarray:
        from datacredit.surrogateshap import SampleBank

        bank = SampleBank({int(i): samples[j] for j, i in enumerate(members)})
        w = self.counts[members] / self.counts[members].sum()
        return np.array(
            [
                float(copy.copy(self._utilities[k]).prepare(bank).evaluate(w[None])[0])
                for k in self.utility_names
            ]
        )

    def _evaluate(self, trained: tuple[np.ndarray, Any, float]) -> np.ndarray:
        members, unet, train_s = trained
        t0 = time.perf_counter()
        samples = self.sample(unet, members)
        ref = self.bank_samples()[members]
        mae = float(np.mean(np.abs(samples - ref)))
        ssim = float(np.mean(paired_ssim(samples.reshape(-1, *samples.shape[2:]),
                                         ref.reshape(-1, *ref.shape[2:]))))  # fmt: skip
        scores = self._score(samples, members)
        return np.concatenate([scores, [mae, ssim, train_s, time.perf_counter() - t0]])

    def retrain(self, members: Any, seed: int | None = None) -> np.ndarray:
        """One retraining on the contributors ``members`` that bypasses the cache (a check of
        the cached figures); the row :meth:`run` would return, float64."""
        m = np.unique(np.asarray(members, dtype=np.int64).reshape(-1))
        if m.size == 0:
            raise ValueError("members is empty")
        seed = self.train_seed if seed is None else int(seed)
        self.bank_samples()
        return np.asarray(self._evaluate(self._train(m, seed)), dtype=np.float64)

    def empty_values(self) -> dict[str, float]:
        """v(∅) of each utility: the samples of the untrained (freshly initialised, seed
        ``train_seed``) UNet for every contributor, mixed with the full training weights."""
        if self._empty is None:
            import torch

            torch.manual_seed(self.train_seed)
            unet = make_conditional_unet(
                self.images.shape[-1], self.n_players, self.recipe.channels
            )
            members = np.arange(self.n_players)
            self._empty = self._score(self.sample(unet.eval(), members), members)
        return dict(zip(self.utility_names, self._empty.tolist()))

    # ----------------------------------------------------------------- games
    def run(self, Z: Any, seed: int | None = None, *, desc: str = "retrain") -> np.ndarray:
        """Retrain on every coalition (cached); float64 ``(m, n_utilities + 4)``: the
        utilities in ``utility_names`` order, then :data:`SAMPLE_METRICS` (paired MAE and
        SSIM against the full model's samples, training and sampling seconds).  ``Z``: bool ``(m, n)``, no empty row."""
        from datacredit._arrays import as_mask

        Z = as_mask(Z, "Z")
        if Z.ndim != 2 or Z.shape[1] != self.n_players:
            raise ValueError(f"Z must have shape (m, {self.n_players}), got {Z.shape}")
        if not Z.any(1).all():
            raise ValueError("Z has an empty coalition: use empty_values() for v(∅)")
        if Z.shape[0] == 0:
            return np.empty((0, len(self.utility_names) + len(SAMPLE_METRICS)))
        seed = self.train_seed if seed is None else int(seed)
        if self.mode == "finetune":
            self.full_state()
        self.bank_samples()
        return np.asarray(self.harness.run(Z, seed, desc=desc), dtype=np.float64)

    def is_cached(self, Z: Any, seed: int | None = None) -> np.ndarray:
        """bool ``(m,)``: which coalitions of ``Z`` already have a cached retraining."""
        seed = self.train_seed if seed is None else int(seed)
        Z = np.asarray(Z, dtype=bool)
        return np.array([self.harness.is_cached(np.flatnonzero(z), seed) for z in Z], bool)

    def utility_game(self, name: str, seed: int | None = None):
        """The retraining game of one utility: a callable ``Z (m, n) -> (m,)`` with
        ``players``; empty rows get :meth:`empty_values`."""
        k = self.utility_names.index(check_choice(name, "name", tuple(self.utility_names)))
        game = self

        class _Game:
            players = game.players
            n_players = game.n_players

            def __call__(self, Z: Any) -> np.ndarray:
                Z = np.asarray(Z, dtype=bool)
                out = np.full(Z.shape[0], game.empty_values()[name])
                ne = Z.any(1)
                if ne.any():
                    out[ne] = game.run(Z[ne], seed)[:, k]
                return out

        return _Game()

    def proxy_game(self, name: str):
        """SurrogateSHAP's :class:`ProxyGame` of one utility on the full model's bank:
        players = contributors, π_S ∝ their image counts, v(∅) from :meth:`empty_values`."""
        from datacredit.surrogateshap import ProxyGame

        check_choice(name, "name", tuple(self.utility_names))
        return ProxyGame(
            self.sample_bank(),
            {p: [i] for i, p in enumerate(self.players)},
            copy.copy(self._utilities[name]),
            label_weights=self.counts,
            empty_value=self.empty_values()[name],
        )


__all__ = [
    "SAMPLE_METRICS",
    "DiffusionRecipe",
    "DiffusionRetrainingGame",
    "make_conditional_unet",
    "make_scheduler",
    "paired_ssim",
    "train_conditional_diffusion",
]
