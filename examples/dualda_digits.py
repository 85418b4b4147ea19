"""DualDA and XDA on scikit-learn's digits (ships offline): a small CNN, its SVM surrogate,
identical-class, mislabel detection and an XDA heatmap pair.

    python examples/dualda_digits.py [--epochs 8] [--out xda_digits.png]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

from datacredit import XDA, DualDA
from datacredit.metrics import identical_class, mislabel_detection_auc


class DigitsCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * 4 * 4, 64),
            nn.ReLU(),
        )
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def load(seed: int = 0):
    digits = load_digits()
    x = torch.tensor(digits.images / 16.0, dtype=torch.float32)[:, None]
    y = torch.tensor(digits.target, dtype=torch.int64)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    tr, te = perm[:1400], perm[1400:]
    return x[tr], y[tr], x[te], y[te]


def train(x, y, epochs: int, seed: int = 0) -> DigitsCNN:
    torch.manual_seed(seed)
    model = DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        perm = torch.randperm(len(y))
        for start in range(0, len(y), 64):
            b = perm[start : start + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[b]), y[b]).backward()
            opt.step()
    return model.eval()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (tiny convolutions)")
    ap.add_argument("--out", default=None, help="save an XDA figure here (needs matplotlib)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x, y, xt, yt = load()

    t0 = time.perf_counter()
    model = train(x, y, args.epochs)
    acc = (model(xt).argmax(1) == yt).float().mean().item()
    print(f"clean CNN: test accuracy {acc:.3f} ({time.perf_counter() - t0:.1f} s)")

    t0 = time.perf_counter()
    dd = DualDA(model, (x, y), layer="fc", C=1e-3, max_iter=20000, progress=False).fit()
    print(
        f"DualDA C=1e-3: {dd.n_support} support vectors of {dd.n_train}, "
        f"{dd.stats['n_iter']} epochs ({time.perf_counter() - t0:.2f} s)"
    )
    vals, idx = dd.attribute(xt, top_k=5)
    pred = model(xt).argmax(1).numpy()
    print(f"identical-class (top-5): {identical_class((vals, idx), y.numpy(), pred, k=5):.3f}")
    print(
        "surrogate fidelity:", {k: round(v, 3) for k, v in dd.surrogate_fidelity((xt, yt)).items()}
    )

    # mislabel detection: flip 10% of the training labels, retrain, rank by self-influence
    rng = np.random.default_rng(0)
    flip = rng.random(len(y)) < 0.1
    y_noisy = y.clone()
    y_noisy[flip] = (y[flip] + torch.from_numpy(rng.integers(1, 10, flip.sum()))) % 10
    noisy = train(x, y_noisy, args.epochs)
    dd_noisy = DualDA(noisy, (x, y_noisy), layer="fc", C=0.1, max_iter=20000, progress=False).fit()
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
