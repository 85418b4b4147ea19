"""Writes what the consumer checks: a DualDA explainer fitted in Python, queries and the
Python top-k (``DualDAExplainer.topk``, the surrogate's predicted classes).

    python cpp/examples/consumer/make_reference.py OUTDIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from datacredit import DualDA
from datacredit.dualda.explainer import DualDAExplainer


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (400,), generator=g)
    x = torch.randn(4, 10, generator=g)[y] * 2 + torch.randn(400, 10, generator=g)
    model = torch.nn.Sequential(torch.nn.Linear(10, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    dda = DualDA(model, (x, y), layer="2", C=0.01, progress=False, max_iter=2000).fit()
    dda.save_explainer(out / "explainer.safetensors")
    ex = DualDAExplainer(out / "explainer.safetensors")
    q = dda.extract((x[:50], y[:50]), desc="queries")[0]
    k = 20
    v, i = ex.topk(q, k)
    with open(out / "queries.txt", "w") as f:
        f.write(f"{q.shape[0]} {q.shape[1]} {k}\n")
        np.savetxt(f, q, fmt="%.9g")
    with open(out / "expected.txt", "w") as f:
        for a, b in zip(i.ravel(), v.ravel()):
            f.write(f"{a} {b:.9g}\n")
    print(f"wrote {out}: {ex.n_support} support vectors of {ex.n_train}, d = {ex.dim}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
