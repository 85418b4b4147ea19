"""Interventional TreeSHAP: datacredit vs shap's TreeExplainer on the same inputs.

XGBRegressor, 300 trees of depth 5 on 100 binary features; explain 1,000 points against
R references (R = 1, 10, 100).  Prints both timings side by side and the ratio, plus the
largest absolute difference between the two results.

Run: flock /tmp/bench.lock python benchmarks/bench_treeshap.py [--threads N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import best_time  # noqa: E402


def main() -> None:
    import shap
    import xgboost as xgb
    from _common import at_least

    from datacredit.kernels import from_xgboost, tree_shap_interventional

    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--threads", type=at_least(1), default=None, help="datacredit threads (None: all)"
    )
    ap.add_argument("--n-explain", type=at_least(1), default=1000)
    ap.add_argument("--refs", type=at_least(1), nargs="+", default=[1, 10, 100])
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    n_train, d = 4000, 100
    Xtr = (rng.random((n_train, d)) < 0.5).astype(np.float32)
    w = rng.normal(size=d)
    y = Xtr @ w + 2.0 * Xtr[:, 0] * Xtr[:, 1] - 1.5 * Xtr[:, 2] * Xtr[:, 3] * Xtr[:, 4]
    y += 0.1 * rng.normal(size=n_train)
    model = xgb.XGBRegressor(n_estimators=300, max_depth=5, learning_rate=0.1, nthread=2)
    model.fit(Xtr, y)
    X = (rng.random((args.n_explain, d)) < 0.5).astype(np.float32)
    t0 = time.perf_counter()
    ens = from_xgboost(model)
    t_parse = time.perf_counter() - t0
    print(f"model: 300 trees, depth 5, {d} binary features; JSON flattening {t_parse * 1e3:.1f} ms")
    print(
        f"{'refs':>5} {'n_x':>6} {'shap (s)':>10} {'datacredit (s)':>15} {'ratio':>8} {'max|diff|':>10}"
    )
    for n_refs in args.refs:
        R = (rng.random((n_refs, d)) < 0.5).astype(np.float32)
        explainer = shap.TreeExplainer(model, data=R, feature_perturbation="interventional")
        t_shap, sv = best_time(lambda e=explainer: e.shap_values(X, check_additivity=False), 1)
        t_dc, (phi, _) = best_time(
            lambda R=R: tree_shap_interventional(ens, X, R, n_threads=args.threads), 3
        )
        diff = float(np.abs(phi - sv).max())
        print(
            f"{n_refs:>5} {len(X):>6} {t_shap:>10.3f} {t_dc:>15.4f} {t_shap / t_dc:>7.1f}x {diff:>10.2e}"
        )


if __name__ == "__main__":
    main()
