#!/usr/bin/env python
"""Produces the demo's shipped diffusion weights (python/datacredit/demo/weights/).

Trains the tiny class-conditional UNet on the demo's training split of
``load_digits`` (seeded) and writes ``digits_unet.safetensors`` plus a preview grid
``digits_unet_preview.png`` (10 DDIM samples per digit).  The CNN is not shipped: the
demo trains it in seconds.

Run: python scripts/train_demo_models.py [--steps 4000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from datacredit.demo.data import load_split
from datacredit.demo.nets import NULL_CLASS, make_scheduler
from datacredit.demo.training import UNET_WEIGHTS, save_unet, train_diffusion


@torch.no_grad()
def preview(unet, path, n_per_class: int = 10, steps: int = 25, guidance: float = 2.0) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sched = make_scheduler()
    sched.set_timesteps(steps)
    labels = torch.arange(10).repeat_interleave(n_per_class)
    x = torch.randn((len(labels), 1, 16, 16), generator=torch.Generator().manual_seed(0))
    null = torch.full_like(labels, NULL_CLASS)
    for t in sched.timesteps:
        eps = unet(torch.cat([x, x]), t, class_labels=torch.cat([labels, null])).sample
        cond, uncond = eps.chunk(2)
        x = sched.step(uncond + guidance * (cond - uncond), t, x).prev_sample
    imgs = ((x.clamp(-1, 1) + 1) / 2).numpy()[:, 0]
    grid = imgs.reshape(10, n_per_class, 16, 16).transpose(0, 2, 1, 3).reshape(160, -1)
    plt.imsave(path, grid, cmap="gray")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    split = load_split()
    t0 = time.time()
    unet = train_diffusion(split.x_train, split.y_train, steps=args.steps, seed=args.seed)
    print(f"trained {args.steps} steps in {time.time() - t0:.0f} s")
    save_unet(unet)
    preview(unet, UNET_WEIGHTS.with_name("digits_unet_preview.png"))
    print("wrote", UNET_WEIGHTS, np.round(UNET_WEIGHTS.stat().st_size / 2**20, 2), "MiB")


if __name__ == "__main__":
    main()
