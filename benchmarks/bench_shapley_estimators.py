"""Shapley estimators side by side: mean relative ℓ2 error ‖φ̂ − φ‖/‖φ‖ to the exact values.

Games (n = 10 players, so all 1,024 coalitions give the exact values):

- ``linear``, ``nonlinear``, ``interaction``: SurrogateSHAP Appendix E (eqs. 31–33), a new
  w ~ N(0, 1) per trial, b = 0.25;
- ``demo_fid``, ``demo_is``: the demo's proxy games (−FID and Inception Score of the tiny
  diffusion model's sample bank, CNN features), tabulated once (``--cache``);
- ``digits_retrain``: the retraining game of :class:`datacredit.games.DigitsRetraining`
  (FID of a PCA-Gaussian generator refitted on each coalition), tabulated once.

Methods (equal budget = game evaluations):

- ``ours``: ``SurrogateSHAP(budget)`` — the default, regression-adjusted Monte Carlo;
- ``paper``: the paper's estimator, ``estimator="paper"``: fixed parameters (depth 5, 900
  trees, lr 0.05), no CV unless ``--paper-cv`` (5-fold CV over Table S.1, slow);
- ``ours.KernelSHAP``: ``shapley.kernel_shap`` (stratified, paired, border trick);
- ``shapiq.KernelSHAP``, ``shapiq.SVARM``, ``shapiq.PermutationSamplingSV`` (shapiq's
  defaults; skipped when shapiq is missing).

Interaction table (``--interactions``): games with pairwise terms, three-way terms and a
non-additive part (n = 8–14), the max error over pairs relative to the largest exact index,
ours (pairwise SII: cross-fitted and GREG candidates, the plan unpaired where its pairs
cannot determine the pair terms) vs shapiq's ``RegressionFSII`` (against the exact FSII, the
index it estimates), ``KernelSHAPIQ`` and ``SVARMIQ`` (index="SII"), exact indices by
enumeration.

Coverage of the default's standard errors (``--coverage``): share of |φ̂ − φ| beyond 2 and
3 reported SEs over ``--trials`` seeds on the four games of
``tests/test_shapley_adjusted.py::_coverage_games`` (n = 10; the tests run the linear
surrogate and the default with a one-tree candidate grid, this the default with its full
candidate list).

Many players (``--large``, the regime of issue 22: 16-24 contributors, budget 256): games
of ``large_games`` at n = 16 and 20 (near-additive, an FID-like mixture, Appendix E's
nonlinear and interaction games), exact values by enumeration (2^20 rows, vectorised),
ours against shapiq's KernelSHAP and, where the installed shapiq has it (≥ 1.5),
RegressionMSR.

Run: python benchmarks/bench_shapley_estimators.py [--trials 5] [--budgets 128 256 512]
     [--methods ours shapiq.KernelSHAP] [--interactions --n 8 12] [--coverage]
     [--large --n 16 20]
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np

N = 10
SYNTHETIC = ("linear", "nonlinear", "interaction")
TABLED = ("demo_fid", "demo_is", "digits_retrain")


class TableGame:
    """A game read from its full table (row k of all_coalitions(n) = bit mask k)."""

    def __init__(self, table: np.ndarray, players):
        self.table = np.asarray(table, dtype=np.float64)
        self.players = list(players)
        self._bits = 1 << np.arange(len(self.players))

    def __call__(self, Z):
        Z = np.asarray(Z, dtype=bool)
        return self.table[(Z * self._bits).sum(1)]


def _utility_defaults_tag() -> str:
    """8 hex digits of the FID and Inception Score constructors' defaults."""
    import hashlib
    import inspect

    from datacredit.surrogateshap.utilities import FID, InceptionScore

    sig = repr([inspect.signature(FID), inspect.signature(InceptionScore)])
    return hashlib.sha256(sig.encode()).hexdigest()[:8]


def _tables(cache: Path, kinds, seed: int = 0) -> dict[str, np.ndarray]:
    """Full utility tables (1,024,) of the demo games and the digits retraining game, cached
    in ``cache`` (the demo's sample bank takes minutes on a CPU)."""
    from datacredit._io import atomic_save_npz
    from datacredit.shapley import all_coalitions

    cache.mkdir(parents=True, exist_ok=True)
    out: dict[str, np.ndarray] = {}
    Z = all_coalitions(N)
    if {"demo_fid", "demo_is"} & set(kinds):
        # the file name carries the FID / IS defaults: a table of another estimator (e.g.
        # the plug-in IS before issue 23) is never read back as this one's
        path = cache / f"demo_tables_seed{seed}_{_utility_defaults_tag()}.npz"
        if not path.exists():
            from datacredit.demo.data import load_split
            from datacredit.demo.pipeline import DemoSettings, surrogateshap_games
            from datacredit.demo.training import load_unet, train_classifier

            t0 = time.perf_counter()
            s = DemoSettings(seed=seed)
            split = load_split(seed=seed)
            cnn = train_classifier(split.x_train, split.y_train, epochs=s.cnn_epochs, seed=seed)
            _, fid_game, is_game = surrogateshap_games(split, cnn, load_unet(), s)
            # the demo's game is FID itself (a loss) now; the table stays −FID, as cached
            atomic_save_npz(path, {"demo_fid": -fid_game(Z), "demo_is": is_game(Z)})
            print(f"tabulated the demo games in {time.perf_counter() - t0:.0f} s")
        with np.load(path) as f:
            out.update({k: f[k] for k in f.files})
    if "digits_retrain" in kinds:
        path = cache / f"digits_retrain_seed{seed}.npz"
        if not path.exists():
            from datacredit.games import DigitsRetraining

            # utility −FID, so that larger is better as in the demo
            table = -DigitsRetraining(utility="fid", seed=seed).retraining_game(Z)
            atomic_save_npz(path, {"digits_retrain": table})
        with np.load(path) as f:
            out["digits_retrain"] = f["digits_retrain"]
    return out


def _game(kind: str, trial: int, tables):
    from datacredit import games

    if kind in SYNTHETIC:
        g = games.synthetic(kind, n=N, seed=10_000 + trial)
        return g, g.exact_values()
    from datacredit.shapley import shapley_from_table

    g = TableGame(tables[kind], [str(i) for i in range(N)])
    return g, shapley_from_table(g.table, N)


def _shapiq(name, g, budget, seed):
    import shapiq

    cls = getattr(shapiq, name)
    iv = cls(n=N, random_state=seed).approximate(
        budget, lambda Z: g(np.atleast_2d(np.asarray(Z, bool)))
    )
    return np.array([iv[(i,)] for i in range(N)], dtype=np.float64)


def run(kind, budget, trial, methods, tables, paper_cv):
    from datacredit import SurrogateSHAP, shapley

    g, exact = _game(kind, trial, tables)
    out = {}
    for m in methods:
        t0 = time.perf_counter()
        if m == "ours":
            phi = SurrogateSHAP(budget, seed=trial).explain(g).values
        elif m == "paper":
            phi = (
                SurrogateSHAP(budget, estimator="paper", cv=paper_cv, seed=trial).explain(g).values
            )
        elif m == "ours.KernelSHAP":
            phi = shapley.kernel_shap(g, budget, seed=trial).values
        else:
            phi = _shapiq(m.split(".", 1)[1], g, budget, trial)
        err = float(np.linalg.norm(phi - exact) / np.linalg.norm(exact))
        out[m] = (err, time.perf_counter() - t0)
    return out


def interaction_game(kind: str, n: int, seed: int):
    """z·w + 4 pairwise terms (``pair``), + 3 three-way terms (``three``), + a sine of z·w
    and a square root of |z| (``nonadd``): callable bool (m × n) → (m,)."""
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 1, n)
    pairs = [tuple(rng.choice(n, 2, replace=False)) for _ in range(4)]
    pc = rng.normal(0, 1.5, 4)
    trip = [tuple(rng.choice(n, 3, replace=False)) for _ in range(3)]
    tc = rng.normal(0, 1.5, 3)

    def g(Z):
        Z = np.atleast_2d(np.asarray(Z, bool)).astype(np.float64)
        out = Z @ w
        for (i, j), c in zip(pairs, pc):
            out += c * Z[:, i] * Z[:, j]
        if kind in ("three", "nonadd"):
            for (i, j, k), c in zip(trip, tc):
                out += c * Z[:, i] * Z[:, j] * Z[:, k]
        if kind == "nonadd":
            out += 2 * np.sin(Z @ w) + 0.5 * np.sqrt(Z.sum(1))
        return out

    return g


def interaction_table(ns, budgets, trials):
    """Prints the interaction table (see the module docstring)."""
    import shapiq

    from datacredit import SurrogateSHAP
    from datacredit.shapley import all_coalitions
    from datacredit.shapley.interactions import interactions_from_table, pairwise_regression_solve
    from datacredit.shapley.kernel import kernel_weights

    peers = (
        ("RegFSII", shapiq.RegressionFSII, None),
        ("KSHAPIQ", shapiq.KernelSHAPIQ, "SII"),
        ("SVARMIQ", shapiq.SVARMIQ, "SII"),
    )
    print("max |error| over pairs / max |exact index|, mean over seeds; ours: pairwise SII")
    print(f"{'game':<8}{'n':>3}{'budget':>7}{'ours':>9}{'RegFSII':>9}{'KSHAPIQ':>9}{'SVARMIQ':>9}")
    for n in ns:
        Z = all_coalitions(n)
        s = Z.sum(1)
        inner = (s > 0) & (s < n)
        iu = np.triu_indices(n, 1)
        for kind in ("pair", "three", "nonadd"):
            for b in budgets:
                if b >= 2**n:
                    continue
                errs = {k: [] for k in ("ours", "RegFSII", "KSHAPIQ", "SVARMIQ")}
                for t in range(trials):
                    g = interaction_game(kind, n, 100 + t)
                    v = g(Z)
                    sii = interactions_from_table(v, n)
                    _, fsii = pairwise_regression_solve(
                        Z[inner], v[inner], v[0], v[-1], kernel_weights(n, s[inner]), ridge=0.0
                    )

                    def err(E, ref, iu=iu):
                        return float(np.abs(E[iu] - ref[iu]).max() / np.abs(ref[iu]).max())

                    r = SurrogateSHAP(b, seed=t).explain(g, n_players=n, interactions=True)
                    errs["ours"].append(err(r.interactions, sii))
                    for name, cls, index in peers:
                        kw = {"n": n, "max_order": 2, "random_state": t}
                        if index:
                            kw["index"] = index
                        iv = cls(**kw).approximate(b, g)
                        E = np.zeros((n, n))
                        for i, j in zip(*iu):
                            E[i, j] = E[j, i] = iv[(int(i), int(j))]
                        errs[name].append(err(E, fsii if index is None else sii))
                row = "".join(f"{np.mean(errs[k]):>9.4f}" for k in errs)
                print(f"{kind:<8}{n:>3}{b:>7}{row}", flush=True)


def coverage_games(n: int):
    """The four non-additive games of the coverage test (same construction)."""
    from datacredit import games
    from datacredit.shapley import all_coalitions

    rng = np.random.default_rng(5)
    table = rng.normal(0, 0.3, 2**n) + all_coalitions(n) @ rng.normal(size=n)
    w = np.abs(rng.normal(size=n))

    def noisy(Z):
        return table[(np.asarray(Z, bool) * (1 << np.arange(n))).sum(1)]

    def concave(Z):
        Zf = np.asarray(Z, np.float64)
        return np.sqrt(Zf @ w) + 0.3 * Zf[:, 0] * Zf[:, 1]

    return {
        "nonlinear": games.synthetic("nonlinear", n=n, seed=0),
        "interaction": games.synthetic("interaction", n=n, seed=0),
        "noisy_table": noisy,
        "concave": concave,
    }


def coverage_table(budgets, trials, n: int = 10):
    """Prints the coverage of the default's standard errors (see the module docstring)."""
    from datacredit import SurrogateSHAP
    from datacredit.shapley import all_coalitions, shapley_from_table

    print(f"share of errors beyond 2 / 3 SE, default estimator, n={n}, {trials} seeds")
    for name, g in coverage_games(n).items():
        exact = shapley_from_table(g(all_coalitions(n)), n)
        for b in budgets:
            z, nan = [], 0
            for seed in range(trials):
                r = SurrogateSHAP(b, seed=seed).explain(g, n_players=n)
                if np.isnan(r.stderr).any():
                    nan += 1
                    continue
                z.append(np.abs(r.values - exact) / r.stderr)
            z = np.concatenate(z) if z else np.array([np.nan])
            print(
                f"{name:<12}{b:>6}  >2SE {np.mean(z > 2):.3f}  >3SE {np.mean(z > 3):.4f}"
                f"  NaN-SE runs {nan}",
                flush=True,
            )


def large_game_table(kind: str, n: int, seed: int) -> np.ndarray:
    """The full table (2^n,) of a many-player game (row k = bit mask k):

    - ``nearadd``: z·w + 8 pairwise and 3 three-way terms (coefficients 0.3·N(0, 1)) + ½√|z|;
    - ``mixture``: FID-like, −(‖μ_S − r‖² + 0.2·spread_S) of the count-weighted mixture of
      the contributors' means a_i ∈ R⁸ (r: the mean of all), v(∅) = −20;
    - ``nonlinear``, ``interaction``: Appendix E at n players.
    """
    from datacredit import games
    from datacredit.shapley import all_coalitions

    Z = all_coalitions(n)
    Zf = Z.astype(np.float64)
    rng = np.random.default_rng(seed)
    if kind in ("nonlinear", "interaction"):
        g = games.synthetic(kind, n=n, seed=seed)
        return np.concatenate([g(Z[i : i + 65536]) for i in range(0, len(Z), 65536)])
    w = rng.normal(0, 1, n)
    if kind == "nearadd":
        v = Zf @ w
        for _ in range(8):
            i, j = rng.choice(n, 2, replace=False)
            v += 0.3 * rng.normal() * Zf[:, i] * Zf[:, j]
        for _ in range(3):
            i, j, k = rng.choice(n, 3, replace=False)
            v += 0.3 * rng.normal() * Zf[:, i] * Zf[:, j] * Zf[:, k]
        return v + 0.5 * np.sqrt(Zf.sum(1))
    if kind == "mixture":
        a = rng.normal(0, 1, (n, 8)) + 0.3 * rng.normal(0, 1, 8)
        W = Zf * rng.integers(50, 150, n).astype(np.float64)
        tot = W.sum(1)
        mu = (W @ a) / np.maximum(tot, 1)[:, None]
        second = (W @ (a * a).sum(1)) / np.maximum(tot, 1)
        v = -(((mu - a.mean(0)) ** 2).sum(1) + 0.2 * (second - (mu * mu).sum(1)))
        v[tot == 0] = -20.0
        return v
    raise ValueError(f"unknown large game {kind!r}")


def large_table(ns, budgets, trials):
    """Prints ours vs shapiq on the many-player games (see the module docstring)."""
    from datacredit import SurrogateSHAP
    from datacredit.shapley import shapley_from_table

    try:
        import shapiq

        peers = [m for m in ("KernelSHAP", "RegressionMSR") if hasattr(shapiq, m)]
    except ImportError:
        shapiq, peers = None, []
    print(f"mean relative l2 error vs exact over {trials} seeds")
    print(f"{'game':<12}{'n':>3}{'budget':>7}{'ours':>9}" + "".join(f"{p:>14}" for p in peers))
    for n in ns:
        for kind in ("nearadd", "mixture", "nonlinear", "interaction"):
            tabs = [large_game_table(kind, n, 1000 + t) for t in range(trials)]
            exact = [shapley_from_table(v, n) for v in tabs]
            for b in budgets:
                errs = {k: [] for k in ["ours", *peers]}
                for t, (v, phi) in enumerate(zip(tabs, exact)):
                    g = TableGame(v, [str(i) for i in range(n)])
                    est = {"ours": SurrogateSHAP(b, seed=t).explain(g).values}
                    for p in peers:
                        kw = {"index": "SV"} if p == "RegressionMSR" else {}
                        iv = getattr(shapiq, p)(n=n, random_state=t, **kw).approximate(
                            b, lambda Z, g=g: g(np.atleast_2d(np.asarray(Z, bool)))
                        )
                        est[p] = np.array([iv[(i,)] for i in range(n)])
                    for k, e in est.items():
                        errs[k].append(float(np.linalg.norm(e - phi) / np.linalg.norm(phi)))
                row = f"{np.mean(errs['ours']):>9.4f}" + "".join(
                    f"{np.mean(errs[p]):>14.4f}" for p in peers
                )
                print(f"{kind:<12}{n:>3}{b:>7}{row}", flush=True)


def main():
    from _common import at_least

    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=at_least(1), default=5)
    ap.add_argument("--budgets", type=at_least(4), nargs="+", default=[128, 256, 512])
    ap.add_argument("--games", nargs="+", default=list(SYNTHETIC + TABLED))
    ap.add_argument("--paper-cv", action="store_true")
    ap.add_argument("--cache", type=Path, default=Path(".bench-cache"))
    ap.add_argument("--methods", nargs="+", default=None)
    ap.add_argument("--interactions", action="store_true")
    ap.add_argument("--n", type=int, nargs="+", default=[8, 10, 12, 14])
    ap.add_argument("--coverage", action="store_true")
    ap.add_argument("--large", action="store_true")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    if args.coverage:
        coverage_table(args.budgets, args.trials)
        return
    if args.interactions:
        interaction_table(args.n, args.budgets, args.trials)
        return
    if args.large:
        large_table(args.n, args.budgets, args.trials)
        return
    methods = ["ours", "paper", "ours.KernelSHAP"]
    try:
        import shapiq  # noqa: F401

        methods += ["shapiq.KernelSHAP", "shapiq.SVARM", "shapiq.PermutationSamplingSV"]
    except ImportError:
        print("shapiq not installed: its estimators are skipped")
    if args.methods:
        methods = [m for m in args.methods if m in methods]
    tables = _tables(args.cache, args.games)
    short = {
        "ours": "ours",
        "paper": "paper",
        "ours.KernelSHAP": "ourKS",
        "shapiq.KernelSHAP": "shapiqKS",
        "shapiq.SVARM": "SVARM",
        "shapiq.PermutationSamplingSV": "PermSV",
    }
    print(
        f"mean relative l2 error vs exact over {args.trials} seeds, n={N}; "
        "last column: shapiq KernelSHAP error / ours"
    )
    head = " ".join(f"{short[m]:>9}" for m in methods)
    print(f"{'game':<15}{'budget':>7} {head} {'KS/ours':>8} {'s/run':>6}")
    for kind in args.games:
        for b in args.budgets:
            res = [run(kind, b, t, methods, tables, args.paper_cv) for t in range(args.trials)]
            err = {m: np.mean([r[m][0] for r in res]) for m in methods}
            sec = np.mean([r["ours"][1] for r in res])
            ks = err.get("shapiq.KernelSHAP", np.nan)
            if "ours" not in err:
                print(f"{kind:<15}{b:>7} " + " ".join(f"{err[m]:>9.4f}" for m in methods))
                continue
            if max(ks, err["ours"]) < 1e-6:
                ratio = "exact"  # both exact up to rounding (additive games)
            else:
                ratio = f"{ks / err['ours']:.2f}" if err["ours"] > 0 else "inf"
            row = " ".join(f"{err[m]:>9.4f}" for m in methods)
            print(f"{kind:<15}{b:>7} {row} {ratio:>8} {sec:>6.1f}", flush=True)


if __name__ == "__main__":
    main()
