"""DualDA and XDA on scikit-learn's digits (ships offline): a small CNN, its SVM surrogate,
identical-class, mislabel detection and an XDA heatmap pair.

    python examples/dualda_digits.py [--epochs 15] [--out xda_digits.png]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from datacredit import XDA, DualDA
from datacredit.demo.data import flip_labels, load_split
from datacredit.demo.training import train_classifier
from datacredit.metrics import identical_class, mislabel_detection_auc

# The CNN, the data split and the training loop are the demo's (datacredit.demo); the
# CNN's final Linear is called "classifier".


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (tiny convolutions)")
    ap.add_argument("--out", default=None, help="save an XDA figure here (needs matplotlib)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    split = load_split()
    x, y = torch.from_numpy(split.x_train), torch.from_numpy(split.y_train)
    xt, yt = torch.from_numpy(split.x_test), torch.from_numpy(split.y_test)

    t0 = time.perf_counter()
    model = train_classifier(split.x_train, split.y_train, epochs=args.epochs, progress=False)
    acc = (model(xt).argmax(1) == yt).float().mean().item()
    print(f"clean CNN: test accuracy {acc:.3f} ({time.perf_counter() - t0:.1f} s)")

    t0 = time.perf_counter()
    dd = DualDA(model, (x, y), layer="classifier", C=1e-3, progress=False).fit()
    print(
        f"DualDA C=1e-3: {dd.n_support} support vectors of {dd.n_train}, "
        f"{dd.stats['n_iter']} solver passes ({time.perf_counter() - t0:.2f} s)"
    )
    vals, idx = dd.attribute(xt, top_k=5)
    pred = model(xt).argmax(1).numpy()
    print(f"identical-class (top-5): {identical_class((vals, idx), y.numpy(), pred, k=5):.3f}")
    print(
        "surrogate fidelity:", {k: round(v, 3) for k, v in dd.surrogate_fidelity((xt, yt)).items()}
    )

    # mislabel detection: flip 10% of the training labels, retrain, rank by self-influence
    noisy_labels, flip = flip_labels(split.y_train, 0.1, seed=0)
    y_noisy = torch.from_numpy(noisy_labels)
    noisy = train_classifier(split.x_train, noisy_labels, epochs=args.epochs, progress=False)
    dd_noisy = DualDA(noisy, (x, y_noisy), layer="classifier", C=0.1, progress=False).fit()
    for kind in ("lambda_norm2", "lambda_norm", "lambda"):
        auc = mislabel_detection_auc(dd_noisy.self_influence(kind), flip)
        print(f"mislabel detection AUC (C=0.1, self-influence {kind}): {auc:.3f}")

    if args.out:
        import matplotlib.pyplot as plt

        xda = XDA(dd)
        c = int(pred[0])
        top = idx[0, :4]
        test_maps, train_maps = xda.explain(xt[0], top, target=c)
        fig, axes = plt.subplots(3, 5, figsize=(10, 6))
        axes[0, 0].imshow(xt[0, 0], cmap="gray")
        axes[0, 0].set_title(f"test, pred {c}")
        for j, i in enumerate(top):
            axes[0, j + 1].imshow(x[i, 0], cmap="gray")
            axes[0, j + 1].set_title(f"train {i}, tau={vals[0, j]:.2g}")
            for row, maps in ((1, test_maps), (2, train_maps)):
                m = maps[j].sum(0).numpy()
                lim = np.abs(m).max() + 1e-12
                axes[row, j + 1].imshow(m, cmap="bwr", vmin=-lim, vmax=lim)
        for ax in axes.ravel():
            ax.axis("off")
        fig.savefig(args.out, dpi=100)
        print(f"XDA figure written to {args.out}")


if __name__ == "__main__":
    main()
