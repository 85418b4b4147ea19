"""One-off check of DualDAExplainer against real quanda (run in a throw-away venv, never the
project's: quanda pins numpy<2).

    python3 -m venv /tmp/qvenv
    /tmp/qvenv/bin/pip install torch==2.14.1 torchvision==0.29.1 quanda \
        "datasets==4.8.4" "pyarrow==21.*" omegaconf   # quanda 0.5.0's own resolve breaks
    PYTHONPATH=python /tmp/qvenv/bin/python scripts/check_quanda_wrapper.py

quanda's MislabelingDetectionMetric builds the explainer from ``explainer_cls`` and
``expl_kwargs`` and ranks by its ``self_influence()``; ClassDetectionMetric consumes
``explain()``'s output.  Both are checked against the same quantities computed directly.
"""

import numpy as np
import quanda
import torch
from quanda.metrics.downstream_eval import ClassDetectionMetric, MislabelingDetectionMetric
from torch import nn
from torch.utils.data import Dataset

from datacredit.dualda import DualDAExplainer

print(
    "quanda",
    quanda.__version__ if hasattr(quanda, "__version__") else "?",
    "numpy",
    np.__version__,
    "torch",
    torch.__version__,
)


class Pairs(Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


g = torch.Generator().manual_seed(0)
y = torch.arange(300) % 3
x = torch.randn(300, 5, generator=g) + 2.5 * nn.functional.one_hot(y, 5).float()
noisy = y.clone()
mis = torch.arange(0, 300, 10)
noisy[mis] = (y[mis] + 1) % 3
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 3))
opt = torch.optim.Adam(model.parameters(), lr=0.03)
for _ in range(300):
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), noisy).backward()
    opt.step()
model.eval()
ds = Pairs(x, noisy)
metric = MislabelingDetectionMetric(
    model=model,
    train_dataset=ds,
    mislabeling_indices=mis.tolist(),
    explainer_cls=DualDAExplainer,
    expl_kwargs={"layer": "2", "C": 0.1},
)
score = metric.compute()["score"]
# independent: our explainer's self-influence, quanda's ranking formula written out
expl = DualDAExplainer(model, ds, layer="2", C=0.1)

order = torch.argsort(
    expl.self_influence() + torch.arange(300, dtype=torch.float32) * 1e-4,
    descending=True,
    stable=True,
)
succ = torch.tensor([int(i) in set(mis.tolist()) for i in order]).float()
ref = (torch.trapezoid(torch.cumsum(succ, 0) / len(mis)) / 300).item()
print("quanda MislabelingDetectionMetric score", score, "independent", ref)
assert abs(score - ref) < 1e-9
cd = ClassDetectionMetric(model=model, train_dataset=ds)
xt = x[:30] + 0.05
pred = model(xt).argmax(1)
cd.update(expl.explain(test_data=xt, targets=pred), test_targets=pred)
res = cd.compute()
print("quanda ClassDetectionMetric", res)
top = expl.explain(xt, pred).topk(1, dim=1).indices[:, 0]
print("independent top-1 identical class", (noisy[top] == pred).float().mean().item())
