"""Write the artifact fixtures of this release: tests/fixtures/v<version>/.

Run once per release (never rewrite an existing version's directory: later versions prove
that they still read these files).  Files:

- ``dualda_explainer.safetensors``: ``DualDA.save_explainer`` of a tiny random-weight MLP
  fitted on 60 blobs (d = 8, K = 3; some samples are not support vectors).
- ``pq.safetensors``: a 4-bit ``ProductQuantizer`` (d = 16, m = 4, nlist = 4, nprobe = 2).
- ``packed_ivf.safetensors``: ``PackedCodes`` of 300 codes packed with inverted lists.
- ``expected.safetensors``: queries and independent references: the explainer's top-10
  proponents and opponents by dense float64 brute force, and the raw codes and lists.

    PYTHONPATH=python python scripts/make_fixtures.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

import datacredit
from datacredit import DualDA
from datacredit.dualda.explainer import DualDAExplainer
from datacredit.kernels.pq import ProductQuantizer
from datacredit.safetensors_io import save_safetensors


def brute_topk(ex: DualDAExplainer, f: np.ndarray, t: np.ndarray, k: int, opponents: bool):
    """Dense float64 tau over all training samples, sorted with ties to the lower index."""
    dense = np.zeros((f.shape[0], ex.n_train))
    scores = f.astype(np.float64) @ ex.features.astype(np.float64).T  # (n, n_sv)
    lam = ex.dual_coef.astype(np.float64)[:, t].T  # (n, n_sv)
    dense[:, ex.support] = lam * scores
    idx = np.arange(ex.n_train)
    out_v, out_i = [], []
    for row in dense:
        order = np.lexsort((idx, row if opponents else -row))[:k]
        out_v.append(row[order])
        out_i.append(order)
    return np.array(out_v), np.array(out_i, np.int64)


def main() -> None:
    out = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / f"v{datacredit.__version__}"
    if out.exists() and "--force" not in sys.argv:
        raise SystemExit(f"{out} exists: fixtures of a release are never rewritten")
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(3, 5, generator=g) * 2.0
    y = torch.randint(0, 3, (60,), generator=g)
    x = centers[y] + torch.randn(60, 5, generator=g)
    model = torch.nn.Sequential(
        torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8), torch.nn.Linear(8, 3)
    )
    dda = DualDA(model, (x, y), layer="3", C=0.05, progress=False, max_iter=5000)
    dda.fit()
    assert 0 < dda.n_support < 60, dda.n_support
    dda.save_explainer(out / "dualda_explainer.safetensors")
    ex = DualDAExplainer(out / "dualda_explainer.safetensors")
    rng = np.random.default_rng(0)
    q = dda.extract((x[:6], y[:6]), desc="q")[0] + rng.normal(0, 0.1, (6, 8)).astype(np.float32)
    q = q.astype(np.float32)
    targets = np.array([-1, 0, 1, 2, -1, 1], np.int32)
    t = np.where(targets < 0, ex.predict(q), targets)
    pro_v, pro_i = brute_topk(ex, q, t, 10, False)
    opp_v, opp_i = brute_topk(ex, q, t, 10, True)

    pq = ProductQuantizer(16, 4, 4, nlist=4, nprobe=2, seed=0)
    data = rng.normal(size=(300, 16)).astype(np.float32)
    pq.train(data)
    codes = pq.encode(data)
    lists = pq.assign(data)
    pq.save(out / "pq.safetensors")
    pq.pack(codes, lists=lists).save(out / "packed_ivf.safetensors")
    save_safetensors(
        out / "expected.safetensors",
        {
            "dualda_queries": q,
            "dualda_targets": targets,
            "dualda_classes": t,
            "proponent_values": pro_v,
            "proponent_indices": pro_i,
            "opponent_values": opp_v,
            "opponent_indices": opp_i,
            "pq_queries": rng.normal(size=(5, 16)).astype(np.float32),
            "pq_data": data,
            "pq_codes": codes,
            "pq_lists": lists,
        },
        {"datacredit_version": datacredit.__version__},
    )
    print("wrote", out)


if __name__ == "__main__":
    main()
