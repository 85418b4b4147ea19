"""Training loops for the demo's models (seeded; a few seconds to minutes on 2 cores)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from datacredit.demo.nets import NULL_CLASS, DigitsCNN, make_scheduler, make_unet

WEIGHTS_DIR = Path(__file__).parent / "weights"
UNET_WEIGHTS = WEIGHTS_DIR / "digits_unet.safetensors"


def train_classifier(
    x: np.ndarray, y: np.ndarray, *, epochs: int = 30, seed: int = 0, progress: bool = True
) -> DigitsCNN:
    """Train :class:`DigitsCNN` on ``x`` ``(N, 1, 16, 16)`` float32, ``y`` ``(N,)`` int64.

    Adam, batch 64, cross-entropy; returns the model in eval mode.  O(epochs * N).
    """
    torch.manual_seed(seed)
    model = DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3, weight_decay=1e-4)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(seed)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in tqdm(
        range(epochs), desc="train CNN (epochs)", unit="epoch", disable=not progress, leave=True
    ):
        for idx in torch.randperm(len(xt), generator=gen).split(64):
            opt.zero_grad()
            loss_fn(model(xt[idx]), yt[idx]).backward()
            opt.step()
    return model.eval()


def train_diffusion(
    x: np.ndarray,
    y: np.ndarray,
    *,
    steps: int = 4000,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = True,
    unet: nn.Module | None = None,
    max_lr: float = 2e-3,
    ema_decay: float | None = None,
):
    """Train a class-conditional UNet (epsilon prediction, 10% null-class dropout).

    ``x``: ``(N, 1, H, W)`` float32 in [0, 1]; ``y``: ``(N,)`` labels.  ``unet``: a freshly
    initialised ``UNet2DModel`` with ``NULL_CLASS + 1`` class embeddings (default: the demo's
    tiny one, :func:`make_unet`).  ``ema_decay``: when set, the returned weights are the
    exponential moving average of the iterates (what diffusion models are usually sampled
    with).  Returns the UNet in eval mode.  O(steps * batch_size).
    """
    torch.manual_seed(seed)
    unet = make_unet() if unet is None else unet
    sched = make_scheduler()
    opt = torch.optim.AdamW(unet.parameters(), lr=max_lr, weight_decay=1e-4)
    lr = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lr, total_steps=steps, pct_start=0.05)
    ema = None
    if ema_decay is not None:
        if not 0.0 < ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {ema_decay!r}")
        ema = [p.detach().clone() for p in unet.parameters()]
    xt = torch.from_numpy(x) * 2 - 1
    yt = torch.from_numpy(y)
    gen = torch.Generator().manual_seed(seed)
    unet.train()
    bar = tqdm(
        range(steps), desc="train diffusion (steps)", unit="step", disable=not progress, leave=True
    )
    for _ in bar:
        idx = torch.randint(0, len(xt), (batch_size,), generator=gen)
        clean, labels = xt[idx], yt[idx].clone()
        labels[torch.rand(batch_size, generator=gen) < 0.1] = NULL_CLASS
        noise = torch.randn(clean.shape, generator=gen)
        t = torch.randint(0, sched.config.num_train_timesteps, (batch_size,), generator=gen)
        noisy = sched.add_noise(clean, noise, t)
        loss = nn.functional.mse_loss(unet(noisy, t, class_labels=labels).sample, noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
        lr.step()
        if ema is not None:
            with torch.no_grad():
                for e, p in zip(ema, unet.parameters()):
                    e.lerp_(p.detach(), 1.0 - ema_decay)
        bar.set_postfix(loss=f"{loss.item():.3f}")
    if ema is not None:
        with torch.no_grad():
            for e, p in zip(ema, unet.parameters()):
                p.copy_(e)
    return unet.eval()


def save_unet(unet, path: Path = UNET_WEIGHTS) -> None:
    """Store the UNet's weights as safetensors (no pickle)."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in unet.state_dict().items()}, str(path))


def load_unet(path: Path = UNET_WEIGHTS):
    """The tiny UNet with the weights shipped in the package (see scripts/train_demo_models.py)."""
    from safetensors.torch import load_file

    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: run `python scripts/train_demo_models.py` to produce it, "
            "or `datacredit demo --retrain`"
        )
    unet = make_unet()
    unet.load_state_dict(load_file(str(path)))
    return unet.eval()
