"""XDA conservation with the default composite and canonizers on the networks people use.

Each test heatmap and each train heatmap must sum to tau_c(x, i) = lambda_ic f_i . f_x
(computed independently by DualDA.attribute) within 1% of max |tau|.  Random weights, with
BatchNorm statistics and biases made non-trivial (zero biases would hide the bias leak).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("zennit")
torchvision = pytest.importorskip("torchvision")
nn = torch.nn

from datacredit import XDA, DualDA  # noqa: E402
from datacredit.dualda.xda import default_canonizers  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:the SVM solver stopped:RuntimeWarning")


def _randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics/affine parameters and nonzero biases, eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + 1.5 * torch.rand(m.running_var.shape, generator=g))
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
            elif isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
    return model.eval()


class BiasCNN(nn.Module):
    """Plain CNN + MLP head, every layer with a bias, max- and average-pooling."""

    def __init__(self, k: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 8, 3, padding=1),
            nn.ReLU(),
            nn.AvgPool2d(2),
            nn.Flatten(),
            nn.Linear(8 * 4 * 4, 16),
            nn.ReLU(),
            nn.Linear(16, 12),
            nn.ReLU(),
        )
        self.head = nn.Linear(12, k)

    def forward(self, x):
        return self.head(self.features(x))


class ResidualCNN(nn.Module):
    """A residual addition that no zennit canonizer knows about."""

    def __init__(self, k: int = 3) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.branch = nn.Sequential(nn.Conv2d(6, 6, 3, padding=1), nn.ReLU())
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(6, k)

    def forward(self, x):
        h = self.relu(self.stem(x))
        h = self.relu(h + self.branch(h))
        return self.head(self.pool(h).flatten(1))


def _residual_canonizer():
    """User-supplied canonizer: routes the ResidualCNN addition through zennit's Sum."""
    from zennit.canonizers import AttributeCanonizer
    from zennit.layer import Sum

    def forward(self, x):
        h = self.relu(self.stem(x))
        h = self.relu(self.canonizer_sum(torch.stack([h, self.branch(h)], dim=-1)))
        return self.head(self.pool(h).flatten(1))

    def attribute_map(name, module):
        if isinstance(module, ResidualCNN):
            return {"forward": forward.__get__(module), "canonizer_sum": Sum()}
        return None

    return AttributeCanonizer(attribute_map)


def _fit(model, layer, n=24, px=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, px, px, generator=g)
    y = torch.arange(n) % 3
    dd = DualDA(model, (x, y), layer=layer, C=1.0, progress=False, max_iter=200)
    return dd.fit(), x


def _assert_conserves(xda, dd, test, n_pairs=4):
    idx = dd.support[:n_pairs]
    assert idx.size >= 2
    for target in (0, 1):
        test_maps, train_maps = xda.explain(test, idx, target=target)
        tau = dd.attribute(test[None], targets=target)[0, idx].astype(np.float64)
        scale = np.abs(tau).max()
        assert scale > 0
        for maps in (test_maps, train_maps):
            sums = maps.double().sum((1, 2, 3)).numpy()
            np.testing.assert_allclose(sums, tau, rtol=0, atol=0.01 * scale)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize(
    ("arch", "layer", "canonizer"),
    [
        ("resnet18", "fc", "ResNetCanonizer"),
        ("resnet50", "fc", "ResNetCanonizer"),
        ("vgg11_bn", "classifier.6", "VGGCanonizer"),
        ("vgg11", "classifier.6", None),
    ],
)
def test_torchvision_defaults_conserve(arch, layer, canonizer):
    torch.manual_seed(0)
    model = _randomize(getattr(torchvision.models, arch)(num_classes=3))
    names = [type(c).__name__ for c in default_canonizers(model)]
    assert names == ([] if canonizer is None else [canonizer])
    n = 12 if arch == "resnet50" else 24
    dd, x = _fit(model, layer, n=n)
    xda = XDA(dd, batch_size=4)
    _assert_conserves(xda, dd, torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(1)))


def test_cnn_with_biases_conserves_and_bias_rules_would_not():
    torch.manual_seed(0)
    model = _randomize(BiasCNN())
    assert default_canonizers(model) == []
    dd, x = _fit(model, "head", px=16)
    test = torch.randn(3, 16, 16, generator=torch.Generator().manual_seed(1))
    _assert_conserves(XDA(dd), dd, test)
    _assert_conserves(XDA(dd, composite="EpsilonPlus"), dd, test)
    _assert_conserves(XDA(dd, composite="EpsilonAlpha2Beta1Flat"), dd, test)
    # keeping the biases in the rules leaks relevance: the check catches it
    with pytest.raises(AssertionError):
        _assert_conserves(XDA(dd, zero_bias=False, conservation_rtol=None), dd, test)
    with pytest.raises(RuntimeError, match="do not conserve tau"):
        XDA(dd, zero_bias=False, conservation_rtol=0.005).explain(test, dd.support[:4], target=0)


def test_flat_layers_option_paper_vgg_setting():
    """The flat rule on the first n linear layers: maps depend on the input only through
    the layers above them, and conservation holds."""
    from zennit.rules import Flat

    torch.manual_seed(0)
    model = _randomize(torchvision.models.vgg11(num_classes=3))
    dd, x = _fit(model, "classifier.6")
    xda = XDA(dd, flat_layers=3)
    test = torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(1))
    _assert_conserves(xda, dd, test)
    # the first three conv layers carry the Flat rule, the fourth z-plus
    seen = {}
    with xda.composite.context(model):
        for name, m in model.named_modules():
            hooks = [h for h in getattr(m, "_forward_hooks", {}).values()]
            seen[name] = any(isinstance(getattr(h, "__self__", None), Flat) for h in hooks)
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert [seen[n] for n in convs[:4]] == [True, True, True, False]
    with pytest.raises(ValueError, match="flat_layers"):
        XDA(dd, flat_layers=0)


def test_unhandled_residual_raises_and_user_canonizer_fixes_it():
    torch.manual_seed(0)
    model = _randomize(ResidualCNN())
    dd, x = _fit(model, "head", px=8)
    with pytest.raises(ValueError, match="outside a zennit Sum"):
        XDA(dd)
    xda = XDA(dd, canonizers=[_residual_canonizer()])
    _assert_conserves(xda, dd, torch.randn(3, 8, 8, generator=torch.Generator().manual_seed(1)))


def test_resnet_without_its_canonizer_raises():
    """What the old default did (BatchNorm merging only) is refused, not a 98x map."""
    from zennit.canonizers import SequentialMergeBatchNorm

    torch.manual_seed(0)
    model = _randomize(torchvision.models.resnet18(num_classes=3))
    dd, _ = _fit(model, "fc", n=12)
    with pytest.raises(ValueError, match="outside a zennit Sum"):
        XDA(dd, canonizers=[SequentialMergeBatchNorm()])
