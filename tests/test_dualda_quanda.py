"""The quanda explainer contract of DualDAExplainer, without importing quanda: the
constructor quanda's benchmarks call, explain(test_data, targets) -> (n_test, n_train)
tensor, self_influence(batch_size) -> (n_train,) tensor, checkpoint loading."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from datacredit import DualDA  # noqa: E402
from datacredit.dualda import DualDAExplainer  # noqa: E402


class Pairs(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    y = torch.arange(120) % 3
    x = torch.randn(120, 5, generator=g) + 2.0 * nn.functional.one_hot(y, 5)[:, :5].float()
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    return model, Pairs(x, y), x, y


def test_contract_matches_dualda(setup):
    model, ds, x, y = setup
    # the keyword call quanda's benchmarks make
    expl = DualDAExplainer(
        model=model,
        train_dataset=ds,
        task="image_classification",
        checkpoints=None,
        layer="2",
        C=0.05,
    )
    ref = DualDA(model, (x, y), layer="2", C=0.05, progress=False).fit()
    test = x[:7] + 0.1
    scores = expl.explain(test_data=test, targets=[0, 1, 2, 0, 1, 2, 0])
    assert isinstance(scores, torch.Tensor) and scores.shape == (7, 120)
    assert scores.dtype == torch.float32 and scores.device == expl.device
    np.testing.assert_allclose(
        scores.numpy(), ref.attribute(test, targets=torch.tensor([0, 1, 2, 0, 1, 2, 0])), rtol=1e-6
    )
    np.testing.assert_allclose(
        expl.explain(test, torch.tensor([2] * 7)).numpy(), ref.attribute(test, targets=2), rtol=1e-6
    )
    si = expl.self_influence(batch_size=16)
    assert isinstance(si, torch.Tensor) and si.shape == (120,)
    np.testing.assert_allclose(si.numpy(), ref.self_influence().astype(np.float32), rtol=1e-6)
    # quanda's generic self-influence (explain the training set, take the diagonal) agrees
    diag = torch.cat(
        [expl.explain(x[i : i + 30], y[i : i + 30]).diagonal(i) for i in range(0, 120, 30)]
    )
    np.testing.assert_allclose(
        si.numpy(), diag.numpy(), rtol=1e-4, atol=1e-6 * si.abs().max().item()
    )


def test_checkpoints_and_errors(setup, tmp_path):
    model, ds, x, y = setup
    from safetensors.torch import save_file

    other = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    path = tmp_path / "ckpt.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    expl = DualDAExplainer(other, ds, checkpoints=[str(path)], layer="2", C=0.05)
    for a, b in zip(other.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)
    assert expl.checkpoints == [str(path)]
    with pytest.raises(ValueError, match="safetensors"):
        DualDAExplainer(other, ds, checkpoints=str(tmp_path / "m.pt"), layer="2")
    calls = []
    DualDAExplainer(
        other,
        ds,
        checkpoints="x.bin",
        checkpoints_load_func=lambda m, p: calls.append(p),
        layer="2",
    )
    assert calls == ["x.bin"]
    with pytest.raises(ValueError, match="task"):
        DualDAExplainer(model, ds, task="causal_lm", layer="2")
    with pytest.raises(ValueError, match="self_influence_kind"):
        DualDAExplainer(model, ds, layer="2", self_influence_kind="nope")
