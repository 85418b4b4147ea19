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

from datacredit.demo.data import load_split
from datacredit.demo.nets import NULL_CLASS, make_scheduler
from datacredit.demo.training import UNET_WEIGHTS, save_unet, train_diffusion
from datacredit.models import DiffusersClassConditional


def preview(unet, path, n_per_class: int = 10) -> None:
    """A grid of DDIM samples, one row per digit, to eyeball the trained model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gen = DiffusersClassConditional(
        unet, make_scheduler(), num_inference_steps=25, guidance_scale=2.0, null_label=NULL_CLASS
    )
    rows = [np.concatenate(list(gen(d, n_per_class, seed=d)[:, 0]), axis=1) for d in range(10)]
    plt.imsave(path, np.concatenate(rows, axis=0), cmap="gray")


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
