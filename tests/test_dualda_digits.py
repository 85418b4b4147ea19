"""Proof on real data: scikit-learn's digits (offline), a small CNN, DualDA's identical-class
score with C=1e-3 and mislabel detection with 10% flipped labels and C=0.1."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from datacredit import DualDA  # noqa: E402
from datacredit.metrics import identical_class, mislabel_detection_auc  # noqa: E402

pytestmark = pytest.mark.slow


class DigitsCNN(nn.Module):
    def __init__(self):
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

    def forward(self, x):
        return self.fc(self.features(x))


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small convolutions: one thread is fastest on a busy machine
    d = load_digits()
    x = torch.tensor(d.images / 16.0, dtype=torch.float32)[:, None]
    y = torch.tensor(d.target, dtype=torch.int64)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    yield x[perm[:1400]], y[perm[:1400]], x[perm[1400:]], y[perm[1400:]]
    torch.set_num_threads(threads)


def train(x, y, epochs=8, seed=0):
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


def test_identical_class_on_digits(digits):
    x, y, xt, yt = digits
    model = train(x, y)
    assert (model(xt).argmax(1) == yt).float().mean() > 0.9
    dd = DualDA(model, (x, y), layer="fc", C=1e-3, max_iter=20000, progress=False).fit()
    vals, idx = dd.attribute(xt, top_k=5)
    pred = model(xt).argmax(1).numpy()
    score = identical_class((vals, idx), y.numpy(), pred, k=5)
    assert score >= 0.95
    # the same from the dense attributions
    assert identical_class(dd.attribute(xt), y.numpy(), pred, k=5) == pytest.approx(score)


def test_mislabel_detection_on_digits(digits):
    x, y, _, _ = digits
    rng = np.random.default_rng(0)
    flip = rng.random(len(y)) < 0.1
    y_noisy = y.clone()
    y_noisy[flip] = (y[flip] + torch.from_numpy(rng.integers(1, 10, int(flip.sum())))) % 10
    assert np.all(y_noisy.numpy()[flip] != y.numpy()[flip])
    model = train(x, y_noisy)  # retrained on the flipped labels
    dd = DualDA(model, (x, y_noisy), layer="fc", C=0.1, max_iter=20000, progress=False).fit()
    assert dd.stats["converged"]
    auc = mislabel_detection_auc(dd.self_influence("lambda_norm2"), flip)
    assert auc >= 0.9
