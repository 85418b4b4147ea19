"""XDA heatmaps: conservation, linearity over support vectors, RGB inputs, batching."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("zennit")
nn = torch.nn

from datacredit import XDA, DualDA  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:the SVM solver stopped:RuntimeWarning")


class SmallCNN(nn.Module):
    """Bias-free ReLU CNN (LRP conserves relevance exactly up to epsilon)."""

    def __init__(self, k=3):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1, bias=False),
            nn.ReLU(),
            nn.Conv2d(6, 8, 3, padding=1, bias=False),
            nn.ReLU(),
            nn.AvgPool2d(2),
            nn.Flatten(),
            nn.Linear(8 * 4 * 4, 12, bias=False),
            nn.ReLU(),
        )
        self.head = nn.Linear(12, k)

    def forward(self, x):
        return self.head(self.features(x))


@pytest.fixture(scope="module")
def setup():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model: one thread is fastest, above all on a busy machine
    torch.manual_seed(0)
    n = 90
    x = torch.rand(n, 3, 8, 8)
    y = torch.randint(0, 3, (n,))
    x[torch.arange(n), y] += 0.6  # the class lives in one colour channel
    model = SmallCNN()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    dd = DualDA(model, (x, y), layer="head", C=0.01, progress=False, tol=1e-6).fit()
    yield model, x, y, dd
    torch.set_num_threads(threads)


def test_heatmaps_conserve_tau_on_both_sides(setup):
    model, x, y, dd = setup
    xda = XDA(dd, composite="EpsilonPlus", batch_size=4)
    test = torch.rand(3, 8, 8) + 0.5 * (torch.arange(3) == 1).float()[:, None, None]
    idx = dd.support[:10]
    m = idx.size
    assert m >= 3
    test_maps, train_maps = xda.explain(test, idx, target=1)
    assert test_maps.shape == (m, 3, 8, 8) and train_maps.shape == (m, 3, 8, 8)
    tau = dd.attribute(test[None], targets=1)[0, idx]
    sums_test = test_maps.sum((1, 2, 3)).numpy()
    sums_train = train_maps.sum((1, 2, 3)).numpy()
    scale = np.abs(tau).max()
    np.testing.assert_allclose(sums_test, tau, atol=2e-3 * scale)
    np.testing.assert_allclose(sums_train, tau, atol=2e-3 * scale)
    # every colour channel is explained (not channel 0 only)
    per_channel = test_maps.abs().sum((0, 2, 3))
    assert torch.all(per_channel > 0)


def test_sum_over_support_vectors_is_surrogate_lrp(setup):
    model, x, y, dd = setup
    from zennit.attribution import Gradient
    from zennit.composites import EpsilonPlusFlat

    xda = XDA(dd, batch_size=16)  # EpsilonPlusFlat default
    test = x[5]
    maps, _ = xda.explain(test, dd.support, target=2)
    total = maps.sum(0)
    surrogate = xda.surrogate_heatmap(test, target=2)[0]
    np.testing.assert_allclose(total.numpy(), surrogate.numpy(), rtol=1e-4, atol=1e-6)
    # independent path: zennit's own attributor on the surrogate model (final layer W, no bias)
    sur = SmallCNN()
    sur.load_state_dict(model.state_dict())
    sur.head = nn.Linear(12, 3, bias=False)
    with torch.no_grad():
        sur.head.weight.copy_(torch.from_numpy(dd.coef).float())
    sur.eval()
    with Gradient(model=sur, composite=EpsilonPlusFlat()) as attributor:
        out, rel = attributor(test[None], lambda o: o * torch.eye(3)[[2]])
    np.testing.assert_allclose(
        total.numpy(), rel[0].numpy(), rtol=1e-3, atol=1e-4 * rel.abs().max().item()
    )


def test_batching_does_not_change_results(setup):
    _, x, _, dd = setup
    idx = dd.support[:7]
    a = XDA(dd, batch_size=2).explain(x[0], idx)
    b = XDA(dd, batch_size=7).explain(x[0], idx)
    for u, v in zip(a, b):
        np.testing.assert_allclose(u.numpy(), v.numpy(), rtol=1e-5, atol=1e-7)


def test_xda_errors(setup):
    _, x, _, dd = setup
    with pytest.raises(ValueError, match="unknown composite"):
        XDA(dd, composite="Nope")
    xda = XDA(dd)
    with pytest.raises(ValueError, match="train_indices"):
        xda.explain(x[0], [10_000])
    with pytest.raises(ValueError, match="test_input must have shape"):
        xda.explain(x[:2], [0])
    with pytest.raises(ValueError, match="device"):
        xda.explain(torch.empty(3, 8, 8, device="meta"), [0])
