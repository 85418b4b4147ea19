"""FID estimators on a finite bank against the analytic FID of Gaussian mixtures (issue 23).

Construction: ``--labels`` labels, label l ~ N(m_l, diag(10/k · lognormal(0, 0.5))),
m_l ~ N(0, diag(4/k)), k = 1..d; the reference is the exact mean and covariance of the
whole mixture; contributors own two labels; two random coalitions of each size 1..9
contributors.  The analytic FID of a coalition's mixture uses its exact moments.

Estimators: ``default`` (jackknife, ``n_splits="auto"``: K = 4 below d = 1024, else 2),
``split2`` (K = 2), ``split4`` (K = 4), ``plugin``; and the bracket (``FID.bracket``).  Reports the median / single-contributor / max relative error, the
Spearman correlation over coalitions and CPU seconds per coalition (process time, so that the
shared machine's load does not count).

Run: python benchmarks/bench_fid_estimators.py --d 32 256 --per-label 50 100 300
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np


def mixture(d: int, n_labels: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    k = np.arange(1, d + 1)
    lam = np.array([10.0 / k * rng.lognormal(0, 0.5, d) for _ in range(n_labels)])
    mus = rng.normal(size=(n_labels, d)) * np.sqrt(4.0 / k)
    return mus, lam


def moments(mus, lam, pi):
    mu = pi @ mus
    return mu, np.diag(pi @ lam) + (mus.T * pi) @ mus - np.outer(mu, mu)


def run(d: int, per_label: int, n_labels: int, bracket: bool) -> None:
    from datacredit.metrics.correlation import spearman
    from datacredit.surrogateshap import SampleBank
    from datacredit.surrogateshap.utilities import FID

    mus, lam = mixture(d, n_labels)
    mu_r, C_r = moments(mus, lam, np.full(n_labels, 1 / n_labels))
    w, V = np.linalg.eigh(C_r)
    S = (V * np.sqrt(w)) @ V.T
    rng = np.random.default_rng(1)
    bank = SampleBank(
        {
            lab: mus[lab] + rng.standard_normal((per_label, d)) * np.sqrt(lam[lab])
            for lab in range(n_labels)
        }
    )
    r2 = np.random.default_rng(2)
    W, exact = [], []
    n_contrib = n_labels // 2
    for size in range(1, n_contrib):
        for _ in range(2):
            c = r2.choice(n_contrib, size, replace=False)
            pi = np.zeros(n_labels)
            pi[np.concatenate([[2 * i, 2 * i + 1] for i in c])] = 1 / (2 * size)
            mu, C = moments(mus, lam, pi)
            ev = np.linalg.eigvalsh(S @ C @ S)
            W.append(pi)
            exact.append(
                ((mu - mu_r) ** 2).sum()
                + np.trace(C)
                + np.trace(C_r)
                - 2 * np.sqrt(np.clip(ev, 0, None)).sum()
            )
    W, exact = np.array(W), np.array(exact)
    variants = {
        "default": {},  # n_splits="auto": K = 4 below d = 1024, K = 2 from there
        "split2": {"n_splits": 2},
        "split4": {"n_splits": 4},
        "plugin": {"estimator": "plugin"},
    }
    for name, kw in variants.items():
        f = FID(None, (mu_r, C_r), **kw).prepare(bank)
        t0 = time.process_time()
        est = f.evaluate(W)
        sec = (time.process_time() - t0) / len(W)
        rel = np.abs(est - exact) / exact
        print(
            f"d={d:<5} n/label={per_label:<5} {name:<7} median {np.median(rel):.3f} "
            f"1-contributor {np.mean(rel[:2]):.3f} max {rel.max():.3f} "
            f"spearman {spearman(est, exact):.3f} cpu/coalition {sec:.2f}s",
            flush=True,
        )
        if bracket and name == "default":
            br = f.bracket(W)
            inside = np.mean((br[:, 0] <= exact) & (exact <= br[:, 1]))
            width = np.median((br[:, 1] - br[:, 0]) / exact)
            print(f"{'':22}bracket holds the truth {inside:.2f}, median width {width:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--d", type=int, nargs="+", default=[32, 256])
    ap.add_argument("--per-label", type=int, nargs="+", default=[50, 100, 300, 1000])
    ap.add_argument("--labels", type=int, default=20)
    ap.add_argument("--bracket", action="store_true")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    for d in args.d:
        for n in args.per_label:
            run(d, n, args.labels, args.bracket)


if __name__ == "__main__":
    main()
