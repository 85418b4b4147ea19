"""SurrogateSHAP against retraining on a real conditional diffusion model (paper §5.2, §5.4, §5.5).

Data: scikit-learn's digits (8x8, 1,797 images; 75 % train, stratified, seed 0).  Each digit
class is split into two contributors by ink mass (below / above the class median of the
pixel sum: "thin" and "thick" strokes), so n = 20 contributors of ~67 images.  Four of them
are made harmful: their images are replaced by noisy (additive Gaussian, σ = 0.3), blurred
(Gaussian, σ = 1 px), faded (×0.35) and inverted (1 − x) versions.

Model: a contributor-conditioned diffusers ``UNet2DModel`` (0.16 M parameters, class
embedding = contributor id + a null class), trained with
:class:`datacredit.games.diffusion.DiffusionRetrainingGame` (``--steps`` AdamW steps of
64 images, one thread); samples: DDIM 10 steps, guidance 2, 40 per contributor, contributor
i seeded like the proxy's sample bank.  The full-data model is trained with the same recipe.

Utilities (both higher = better): **−FID** (negated, so that a positive value helps) on the
32-d penultimate features of a small MLP classifier (64-128-32-10, Adam, 60 epochs) trained on
the clean training digits with their true labels, against the held-out test digits; and the
**Inception Score** under that classifier's softmax.

Reported, for each utility: proxy fidelity over 32 coalitions drawn from the Shapley
distribution (paired sample MAE / SSIM, utility NRMSE / NMAE, cost per coalition); LDS
(eq. 12, α = 0.5, 64 held-out coalitions, bootstrap 95 % intervals over coalitions) of
SurrogateSHAP (default estimator, 256 proxy queries), KernelSHAP on the proxy (ours and
shapiq's, same budget), exact proxy Shapley (all 2^20 coalitions), LOO on retraining,
GMValuator summed per contributor, Monte-Carlo (permutation) Shapley on retraining; the
counterfactual removal of the top / bottom 10 % and 20 % by each method's values.

Run (resumable: every retraining is cached under ``--cache``):
  python benchmarks/bench_surrogateshap_retraining.py [--quick] [--shard k/K]
  python benchmarks/bench_surrogateshap_retraining.py --only-coalition I --utility fid
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "surrogateshap_retraining.json"
DOC_PNG = ROOT / "docs" / "img" / "surrogateshap_retraining_scatter.png"
SHAPIQ_PY = Path(os.environ.get("SHAPIQ_PYTHON", "/work/helpers/venv-shapiq/bin/python"))
UTILITIES = ("fid", "is")
PHASES = ("loo", "lds", "fidelity", "noise", "counterfactual", "finetune", "mc")
HARMFUL = {3: "noisy", 9: "blurred", 12: "faded", 17: "inverted"}  # contributor -> corruption


# --------------------------------------------------------------------------- data + models
def contributors(seed: int = 0):
    """Train/test digits and the 20 contributors: (x_train, owner, clean_x, y_train, x_test,
    names).  Contributor 2c is digit c's thin half, 2c + 1 its thick half."""
    from scipy.ndimage import gaussian_filter
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    xtr, xte, ytr, _ = train_test_split(
        x, d.target, test_size=0.25, random_state=seed, stratify=d.target
    )
    ink = xtr.reshape(len(xtr), -1).sum(1)
    owner = np.empty(len(xtr), np.int64)
    for c in range(10):
        m = ytr == c
        owner[m] = 2 * c + (ink[m] > np.median(ink[m]))
    names = [f"{c}-{'thick' if j else 'thin'}" for c in range(10) for j in (0, 1)]
    rng = np.random.default_rng(seed + 1)
    xc = xtr.copy()
    for i, kind in HARMFUL.items():
        m = owner == i
        if kind == "noisy":
            xc[m] = np.clip(xc[m] + rng.normal(0, 0.3, xc[m].shape), 0, 1)
        elif kind == "blurred":
            xc[m] = gaussian_filter(xc[m], sigma=(0, 0, 1, 1))
        elif kind == "faded":
            xc[m] = 0.35 * xc[m]
        else:
            xc[m] = 1.0 - xc[m]
        names[i] += f" ({kind})"
    return xc.astype(np.float32), owner, xtr, ytr.astype(np.int64), xte, names


def train_classifier(x: np.ndarray, y: np.ndarray, seed: int = 0):
    """The small MLP whose features (32-d) and softmax define FID and IS."""
    import torch

    torch.manual_seed(seed)
    nn = torch.nn
    net = nn.Sequential(
        nn.Flatten(),
        nn.Linear(64, 128),
        nn.ReLU(),
        nn.Linear(128, 32),
        nn.ReLU(),
        nn.Linear(32, 10),
    )
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    X, Y = torch.from_numpy(x), torch.from_numpy(y)
    g = torch.Generator().manual_seed(seed)
    for _ in range(60):
        for idx in torch.randperm(len(X), generator=g).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(net(X[idx]), Y[idx]).backward()
            opt.step()
    return net.eval()


class NegatedFID:
    """−FID as a utility (higher = better); wraps :class:`FID` without changing it."""

    higher_is_better = True  # the proxy game ranks contributors by it (FID itself: False)

    def __init__(self, fid) -> None:
        self.fid = fid

    def prepare(self, bank):
        import copy

        self.fid = copy.copy(self.fid)
        self.fid.prepare(bank)
        return self

    def evaluate(self, weights):
        return -np.asarray(self.fid.evaluate(weights), dtype=np.float64)


def build(args):
    """The retraining game (scratch or finetune), the classifier and the data."""
    import torch

    from datacredit.games.diffusion import DiffusionRecipe, DiffusionRetrainingGame
    from datacredit.surrogateshap.utilities import FID, InceptionScore

    torch.set_num_threads(1)
    xc, owner, xclean, ytr, xte, names = contributors()
    net = train_classifier(xclean, ytr)

    def feats(a):
        with torch.no_grad():
            return net[:5](torch.as_tensor(np.asarray(a, np.float32))).numpy()

    def probs(a):
        with torch.no_grad():
            return torch.softmax(net(torch.as_tensor(np.asarray(a, np.float32))), 1).numpy()

    utilities = {"fid": NegatedFID(FID(feats, feats(xte))), "is": InceptionScore(probs)}
    recipe = DiffusionRecipe(steps=args.steps, n_per_label=args.n_per_label)
    games = {
        mode: DiffusionRetrainingGame(
            xc,
            owner,
            utilities,
            recipe,
            mode=mode,
            cache_dir=args.cache,
            tag="mlp-v1",
            players=names,
        )  # fmt: skip
        for mode in ("scratch", "finetune")
    }
    return games, dict(x=xc, owner=owner, feats=feats, names=names)


# --------------------------------------------------------------------------- coalitions
def plan(args, n: int) -> dict:
    """Every coalition set of the benchmark (deterministic)."""
    from datacredit.metrics import lds_coalitions
    from datacredit.shapley import sample_coalitions

    q = args.quick
    m_lds, m_fid, n_perm = (6, 4, 0) if q else (64, 32, args.mc_permutations)
    lds = lds_coalitions(n, 0.5, m_lds, seed=2026)
    fid = sample_coalitions(n, m_fid + 2, seed=7)[2:]
    full = np.ones((1, n), bool)
    loo = ~np.eye(n, dtype=bool)
    rng = np.random.default_rng(11)
    perms = [rng.permutation(n) for _ in range(n_perm // 2)]
    perms = [p for q_ in perms for p in (q_, q_[::-1])]  # antithetic pairs
    mc = []
    for p in perms:
        for k in range(1, n + 1):
            z = np.zeros(n, bool)
            z[p[:k]] = True
            mc.append(z)
    return dict(
        full=full,
        lds=lds,
        loo=loo,
        fidelity=fid,
        mc=np.array(mc, bool).reshape(-1, n),
        perms=perms,
    )


def retrain(
    game, Z: np.ndarray, shard: tuple[int, int], desc: str, seed: int | None = None
) -> np.ndarray | None:
    """Retrain the coalitions of this shard (all when unsharded) with training ``seed`` (None:
    the game's); the full table when unsharded."""
    k, K = shard
    if K > 1:
        rows = [j for j in range(len(Z)) if j % K == k]
        if rows:
            game.run(Z[rows], seed, desc=desc)
        return None
    return game.run(Z, seed, desc=desc)


# --------------------------------------------------------------------------- estimators
def shapiq_kernelshap(game, budget: int, seed: int) -> np.ndarray | None:
    """shapiq's KernelSHAP (python3.12 venv, ``SHAPIQ_PYTHON``) on ``game``: the child process
    asks for coalition values over a pipe (one JSON line per batch), this process answers."""
    if not SHAPIQ_PY.exists():
        print(f"shapiq interpreter {SHAPIQ_PY} missing: shapiq's KernelSHAP skipped")
        return None
    child = (
        "import sys, json, numpy as np, shapiq\n"
        "n, budget, seed = map(int, sys.argv[1:4])\n"
        "def game(Z):\n"
        "    Z = np.atleast_2d(np.asarray(Z, bool))\n"
        "    print(json.dumps({'Z': Z.astype(int).tolist()}), flush=True)\n"
        "    return np.asarray(json.loads(sys.stdin.readline())['v'], float)\n"
        "iv = shapiq.KernelSHAP(n=n, random_state=seed).approximate(budget, game)\n"
        "print(json.dumps({'values': [float(iv[(i,)]) for i in range(n)],"
        " 'version': shapiq.__version__}), flush=True)\n"
    )
    n = game.n_players
    proc = subprocess.Popen(
        [str(SHAPIQ_PY), "-c", child, str(n), str(budget), str(seed)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ""},
    )
    try:
        for line in proc.stdout:
            msg = json.loads(line)
            if "values" in msg:
                return np.array(msg["values"])
            v = game(np.array(msg["Z"], bool))
            proc.stdin.write(json.dumps({"v": v.tolist()}) + "\n")
            proc.stdin.flush()
    finally:
        proc.wait(timeout=60)
    raise RuntimeError("shapiq child ended without values")


def exact_proxy_shapley(game, n: int, max_seconds: float = 120.0) -> tuple[np.ndarray, str]:
    """Shapley values of the proxy game: exact (all 2^n coalitions, in chunks) when that costs
    under ``max_seconds`` at the measured speed, else converged: the mean of two KernelSHAP
    runs of 8,192 coalitions (their relative l2 difference is reported in the label)."""
    from datacredit.shapley import kernel_shap, shapley_from_table

    N = 1 << n
    bits = lambda lo, hi: ((np.arange(lo, hi)[:, None] >> np.arange(n)) & 1).astype(bool)  # noqa: E731
    t0 = time.perf_counter()
    game(bits(0, 1024))
    if (time.perf_counter() - t0) / 1024 * N <= max_seconds:
        v = np.empty(N)
        for s in range(0, N, 1 << 15):
            v[s : s + (1 << 15)] = game(bits(s, min(N, s + (1 << 15))))
        return shapley_from_table(v, n), "exact (2^n coalitions)"
    a, b = (kernel_shap(game, 8192, seed=s).values for s in (0, 1))
    rel = float(np.linalg.norm(a - b) / np.linalg.norm((a + b) / 2))
    return (a + b) / 2, f"converged: mean of 2 KernelSHAP runs of 8192 (rel. l2 diff {rel:.3f})"


def mc_values(perms, vmc, v_empty, n) -> np.ndarray:
    """Permutation-sampling Shapley from the retrained prefixes of each permutation."""
    phi = np.zeros(n)
    for j, p in enumerate(perms):
        vals = np.concatenate([[v_empty], vmc[j * n : (j + 1) * n]])
        phi[p] += np.diff(vals)
    return phi / max(1, len(perms))


def gmvaluator_values(data, bank_samples) -> np.ndarray:
    """GMValuator (k = 20 nearest training images of each generated one, classifier features,
    exact l2) summed per contributor."""
    from datacredit import GMValuator

    gen = bank_samples.reshape(-1, *bank_samples.shape[2:])
    val = GMValuator(encoder=data["feats"], k=20, recall=100, index="exact", rerank="l2")
    val.fit(data["x"])
    out = np.zeros(len(data["names"]))
    for i, v in val.value(gen).group_values(data["owner"], agg="sum").items():
        out[int(i)] = v
    return out


def method_values(game, data, bank, v_full, v_loo, budget: int) -> dict:
    """SurrogateSHAP (default estimator, ``budget`` proxy queries), LOO on retraining and
    GMValuator per utility (what the counterfactual sets need)."""
    from datacredit import SurrogateSHAP

    gmv = gmvaluator_values(data, bank)
    out = {}
    for u_i, u in enumerate(game.utility_names):
        proxy = game.proxy_game(u)
        tq = time.perf_counter()
        sur = SurrogateSHAP(budget, seed=0).explain(proxy).values
        out[u] = {
            "surrogateshap": sur,
            **({} if v_loo is None else {"loo": v_full[u_i] - v_loo[:, u_i]}),
            "gmvaluator": gmv,
            "_seconds": time.perf_counter() - tq,
        }
    return out


def counterfactual_plan(values: dict, n: int) -> dict:
    """Per utility: (method, fraction, side, kept mask) for the top / bottom 10 % and 20 %
    removals of SurrogateSHAP, LOO and GMValuator, and a random removal of the same sizes."""
    from datacredit.metrics import counterfactual_ranking

    out = {}
    for u, vals in values.items():
        rng = np.random.default_rng(5)
        rows = []
        for method in ("surrogateshap", "loo", "gmvaluator", "random"):
            phi = rng.permutation(n).astype(float) if method == "random" else vals[method]
            for r in counterfactual_ranking(phi, (0.10, 0.20), players=list(range(n))):
                for side in ("top", "bottom"):
                    if method == "random" and side == "bottom":
                        continue
                    rows.append((method, r["k_frac"], side, r[f"keep_without_{side}"]))
        # most telling first (a partial run has these): 20 % before 10 %, top before bottom
        order = {"surrogateshap": 0, "random": 1, "loo": 2, "gmvaluator": 3}
        rows.sort(key=lambda r: (-r[1], r[2] != "top", order[r[0]]))
        out[u] = rows
    return out


def bootstrap_lds(phi, Z, v, B: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """LDS and its 95 % percentile interval by resampling the held-out coalitions."""
    from datacredit.metrics import lds_groups

    rng = np.random.default_rng(seed)
    point = lds_groups(phi, Z, v)
    bs = []
    for _ in range(B):
        r = rng.integers(0, len(v), len(v))
        if np.ptp(v[r]) > 0:
            bs.append(lds_groups(phi, Z[r], v[r]))
    lo, hi = np.percentile(bs, [2.5, 97.5])
    return float(point), float(lo), float(hi)


def bootstrap_lds_difference(
    phi_a, phi_b, Z, v, B: int = 1000, seed: int = 0
) -> tuple[float, float, float]:
    """LDS(a) − LDS(b) and its 95 % interval, both on the same resampled coalitions (paired)."""
    from datacredit.metrics import lds_groups

    rng = np.random.default_rng(seed)
    point = lds_groups(phi_a, Z, v) - lds_groups(phi_b, Z, v)
    bs = []
    for _ in range(B):
        r = rng.integers(0, len(v), len(v))
        if np.ptp(v[r]) > 0:
            bs.append(lds_groups(phi_a, Z[r], v[r]) - lds_groups(phi_b, Z[r], v[r]))
    lo, hi = np.percentile(bs, [2.5, 97.5])
    return float(point), float(lo), float(hi)


STUDY_BUDGETS = (128, 256, 512, 1024, 2048)


def study_estimators(proxy) -> dict:
    """The estimators of the budget study: name -> (budget, seed) -> ShapleyValues.

    SurrogateSHAP's default (``"adjusted"``) and our stratified KernelSHAP always draw
    coalitions in complement pairs; the classic kernel-sampled KernelSHAP and the paper's
    SurrogateSHAP estimator take ``paired`` as an option, so both settings are measured."""
    from datacredit import SurrogateSHAP, shapley

    return {
        "surrogateshap": lambda b, s: SurrogateSHAP(b, seed=s).explain(proxy),
        "surrogateshap_paper": lambda b, s: SurrogateSHAP(b, seed=s, estimator="paper").explain(
            proxy
        ),
        "surrogateshap_paper_paired": lambda b, s: SurrogateSHAP(
            b, seed=s, estimator="paper", paired=True
        ).explain(proxy),
        "kernelshap_proxy": lambda b, s: shapley.kernel_shap(proxy, b, seed=s),
        "kernelshap_proxy_kernel": lambda b, s: shapley.kernel_shap(
            proxy, b, seed=s, sampling="kernel"
        ),
        "kernelshap_proxy_kernel_paired": lambda b, s: shapley.kernel_shap(
            proxy, b, seed=s, sampling="kernel", paired=True
        ),
    }


def estimator_study(
    proxy, Z, v, converged, loo, names, n_seeds: int = 10, curve_seeds: int = 5
) -> dict:
    """How much of SurrogateSHAP's LDS is estimator noise: LDS over ``n_seeds`` estimator seeds
    at budget 256, LDS against the budget (``curve_seeds`` seeds each; the paper estimator,
    at ~25 s a run, at 256 only with 3 seeds), and the seed-0 256-query values' error against
    the converged proxy values.  Everything runs on the proxy (no retraining): a few minutes.

    Z, v: the held-out coalitions (m × n bool) and their retrained utilities (m,);
    converged, loo: (n,) reference values."""
    from datacredit.metrics import lds_groups
    from datacredit.metrics.correlation import spearman

    est = study_estimators(proxy)
    runs = {}  # (name, budget) -> list of (seed, lds, rel_err, seconds)
    seed0 = None
    for name, f in est.items():
        paper = name.startswith("surrogateshap_paper")
        for b in (256,) if paper else STUDY_BUDGETS:
            seeds = range(3 if paper else n_seeds if b == 256 else curve_seeds)
            for sd in seeds:
                t = time.perf_counter()
                sv = f(b, sd)
                dt = time.perf_counter() - t
                phi = np.asarray(sv.values, float)
                rel = float(np.linalg.norm(phi - converged) / np.linalg.norm(converged))
                runs.setdefault((name, b), []).append(
                    (sd, float(lds_groups(phi, Z, v)), rel, dt, phi.tolist())
                )
                if name == "surrogateshap" and b == 256 and sd == 0:
                    seed0 = sv
            print(f"  study {name:32s} budget {b:5d}: LDS "
                  + " ".join(f"{100 * r[1]:.1f}" for r in runs[(name, b)]), flush=True)  # fmt: skip

    def summary(rows):
        lds = np.array([r[1] for r in rows])
        return dict(
            seeds=[r[0] for r in rows],
            lds_by_seed=lds.tolist(),
            lds_mean=float(lds.mean()),
            lds_sd=float(lds.std(ddof=1)) if len(lds) > 1 else float("nan"),
            lds_min=float(lds.min()),
            lds_max=float(lds.max()),
            rel_l2_error_mean=float(np.mean([r[2] for r in rows])),
            seconds_mean=float(np.mean([r[3] for r in rows])),
        )

    spread = {name: summary(runs[(name, 256)]) for name in est}
    spread["surrogateshap"]["values_by_seed"] = [r[4] for r in runs[("surrogateshap", 256)]]
    curve = {
        name: {str(b): summary(runs[(name, b)]) for b in STUDY_BUDGETS if (name, b) in runs}
        for name in est
    }
    phi0 = np.asarray(seed0.values, float)
    err = phi0 - converged
    se = None if seed0.stderr is None else np.asarray(seed0.stderr, float)
    order = np.argsort(-np.abs(err))
    error_seed0 = dict(
        values=phi0.tolist(),
        converged=np.asarray(converged, float).tolist(),
        error=err.tolist(),
        stderr=None if se is None else se.tolist(),
        z=None if se is None else (err / np.where(se > 0, se, np.nan)).tolist(),
        rel_l2_error=float(np.linalg.norm(err) / np.linalg.norm(converged)),
        rmse=float(np.sqrt(np.mean(err**2))),
        spearman_with_converged=float(spearman(phi0, np.asarray(converged, float))),
        largest_errors=[
            dict(
                contributor=names[i],
                error=float(err[i]),
                value=float(phi0[i]),
                converged=float(converged[i]),
                stderr=None if se is None else float(se[i]),
            )
            for i in order[:5]
        ],  # fmt: skip
        lds=float(lds_groups(phi0, Z, v)),
        lds_converged=float(lds_groups(converged, Z, v)),
        lds_loo=float(lds_groups(loo, Z, v)),
    )
    return dict(
        budgets=list(STUDY_BUDGETS),
        n_seeds=n_seeds,
        curve_seeds=curve_seeds,
        lds_loo=float(lds_groups(loo, Z, v)),
        lds_converged=float(lds_groups(converged, Z, v)),
        spread_256=spread,
        lds_vs_budget=curve,
        error_seed0=error_seed0,
    )


# --------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="the whole pipeline on few coalitions")
    ap.add_argument("--steps", type=int, default=200, help="training steps from scratch")
    ap.add_argument("--n-per-label", type=int, default=32)
    ap.add_argument("--budget", type=int, default=256, help="proxy queries of the estimators")
    ap.add_argument("--mc-permutations", type=int, default=2)
    ap.add_argument(
        "--cache", type=Path, default=ROOT / ".bench-cache" / "surrogateshap_retraining"
    )
    ap.add_argument("--shard", default="0/1", help="k/K: retrain only every K-th coalition")
    ap.add_argument("--skip", default="", help=f"comma list of phases to skip, of {PHASES}")
    ap.add_argument("--phases", default=",".join(PHASES), help="retrain only these phases")
    ap.add_argument("--partial", action="store_true", help="report on the cached retrainings only")
    ap.add_argument(
        "--values-only",
        action="store_true",
        help="retrain nothing: recompute every method's values on the proxy game and the LDS "
        "from the cached retrainings (implies --partial; ~4 minutes on the shared machine)",
    )
    ap.add_argument(
        "--render-only",
        action="store_true",
        help="recompute no value: re-derive the figures of the JSON, rewrite it, the page and plot",
    )
    ap.add_argument(
        "--estimator-study",
        action="store_true",
        help="also measure SurrogateSHAP's LDS over estimator seeds and budgets (proxy only; "
        "minutes); without it a study in the previous JSON is kept if its inputs match",
    )
    ap.add_argument(
        "--cf-seeds", default="0,1,2", help="training seeds of the counterfactual retrainings"
    )
    ap.add_argument("--only-coalition", type=int, default=None)
    ap.add_argument("--utility", choices=UTILITIES, default="fid")
    ap.add_argument("--seed", type=int, default=0, help="training seed of --only-coalition")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--no-page", action="store_true", help="write no page / plot")
    args = ap.parse_args()
    if args.quick:
        args.steps, args.n_per_label = min(args.steps, 20), min(args.n_per_label, 8)
        args.cache = args.cache.with_name(args.cache.name + "-quick")
    if args.values_only:
        if args.only_coalition is not None:
            raise SystemExit("--values-only retrains nothing; it cannot take --only-coalition")
        args.partial = True
    k, K = map(int, args.shard.split("/"))
    phases = set(filter(None, args.phases.split(","))) - set(args.skip.split(","))
    cf_seeds = sorted({0, *map(int, filter(None, args.cf_seeds.split(",")))})
    if phases - set(PHASES):
        raise SystemExit(f"unknown phases {sorted(phases - set(PHASES))}; known: {PHASES}")
    if args.render_only:
        render_only(args.out or RESULTS)
        return
    games, data = build(args)
    game = games["scratch"]
    n = game.n_players
    P = plan(args, n)
    t0 = time.perf_counter()
    bank = game.bank_samples()  # trains the full model first (cached)
    print(f"full model + bank ready ({time.perf_counter() - t0:.1f} s)", flush=True)

    if args.only_coalition is not None:
        i = args.only_coalition
        if not 0 <= i < len(P["lds"]):
            raise SystemExit(f"--only-coalition must be in [0, {len(P['lds'])})")
        u = game.utility_names.index(args.utility)
        row = game.retrain(np.flatnonzero(P["lds"][i]), seed=args.seed)
        print(f"held-out coalition {i}: {args.utility} = {row[u]:.4f} (retrained now, seed "
              f"{args.seed}; {row[-2]:.1f} s training)")  # fmt: skip
        if RESULTS.exists():
            ref = json.loads(RESULTS.read_text())
            r = ref["utilities"][args.utility]
            if i not in r["lds_index"]:
                raise SystemExit(f"coalition {i} is not in the JSON (partial run)")
            vj = r["v_retrain"][r["lds_index"].index(i)]
            sd = ref["noise"][args.utility]["sd_full"]
            print(f"JSON: {vj:.4f}; difference {row[u] - vj:+.4f}, run-to-run sd {sd:.4f}")
        return

    # retrainings, in order of importance (a kill resumes from the cache); LOO first so that
    # every shard has the LOO values when it reaches the counterfactual sets
    shard = (k, K)
    worker = K > 1 or phases != set(PHASES)
    noise_Z = np.concatenate([P["full"], P["lds"][:1]])
    if not args.partial:
        for name in ("loo", "lds", "fidelity"):
            if name in phases:
                retrain(game, P[name], shard, name)
        if "noise" in phases:
            jobs = [(j, s) for j in range(len(noise_Z)) for s in (1, 2)]  # full first
            for r, (j, s) in enumerate(jobs):
                if r % K == k:
                    game.run(noise_Z[j : j + 1], seed=s, desc=f"noise seed {s}")
    v_full = game.run(P["full"])[0]
    base_values = None
    if not worker or "counterfactual" in phases:
        loo_done = not args.partial or game.is_cached(P["loo"]).all()
        v_loo = game.run(P["loo"]) if loo_done else None
        base_values = method_values(game, data, bank, v_full, v_loo, args.budget)
    cf_rows = {}
    if "counterfactual" in phases and v_loo is not None:
        cf_rows = counterfactual_plan(base_values, n)
    if not args.partial:
        for s in cf_seeds:  # the full model of each seed (shard 0's)
            if s != game.train_seed and k == 0:
                game.run(P["full"], s, desc=f"full seed {s}")
        for u, rows in cf_rows.items():  # a utility's every seed before the next utility
            Zc = np.array([z for *_, z in rows])
            for s in cf_seeds:  # seed 0 first
                retrain(game, Zc, shard, f"counterfactual {u} seed {s}", s)
        if "finetune" in phases:
            retrain(games["finetune"], P["lds"], shard, "finetune lds")
        if "mc" in phases and len(P["mc"]):
            retrain(game, P["mc"], shard, "mc")
    if worker:
        print(f"worker {args.shard} {sorted(phases)} done", flush=True)
        return

    # ------------------------------------------------------------- values
    def done(g, Z, seed=None):
        """Rows of Z to report: all (retraining the missing), or only the cached (--partial)."""
        return np.flatnonzero(g.is_cached(Z, seed)) if args.partial else np.arange(len(Z))

    from datacredit import shapley

    lds_rows = done(game, P["lds"])
    v_lds = game.run(P["lds"][lds_rows])
    res = {"utilities": {}}
    empty = game.empty_values()
    values_all = {}
    mc_ok = []
    if "mc" in phases and len(P["mc"]):
        for j in range(len(P["perms"])):  # complete permutations only
            if len(done(game, P["mc"][j * n : (j + 1) * n])) == n:
                mc_ok.append(j)
    ft_rows = done(games["finetune"], P["lds"]) if "finetune" in phases else np.array([], int)
    for u_i, u in enumerate(game.utility_names):
        proxy = game.proxy_game(u)
        vals = {m: v for m, v in base_values[u].items() if not m.startswith("_")}
        vals["kernelshap_proxy"] = shapley.kernel_shap(proxy, args.budget, seed=0).values
        sq = shapiq_kernelshap(proxy, args.budget, 0)
        if sq is not None:
            vals["kernelshap_proxy_shapiq"] = sq
        tq = time.perf_counter()
        vals["exact_proxy"], exact_kind = exact_proxy_shapley(proxy, n)
        t_exact = time.perf_counter() - tq
        if mc_ok:
            rows = np.concatenate([np.arange(j * n, (j + 1) * n) for j in mc_ok])
            vmc = game.run(P["mc"][rows])[:, u_i]
            vals["retraining_mc"] = mc_values([P["perms"][j] for j in mc_ok], vmc, empty[u], n)
        values_all[u] = vals
        res["utilities"][u] = {
            "lds_coalitions": P["lds"][lds_rows].astype(int).tolist(),
            "lds_index": lds_rows.tolist(),
            "lds_coalitions_all": P["lds"].astype(int).tolist(),
            "v_retrain": v_lds[:, u_i].tolist(),
            # the proxy's own utilities of the held-out coalitions: how well v̂ ranks them
            # bounds what any value computed on the proxy can reach (proxy drift vs estimator)
            "v_proxy": proxy(P["lds"][lds_rows]).tolist() if len(lds_rows) else [],
            "values": {m: np.asarray(v, float).tolist() for m, v in vals.items()},
            "surrogateshap_seconds": base_values[u]["_seconds"],
            "exact_proxy_seconds": t_exact,
            "exact_proxy_kind": exact_kind,
            "v_full": float(v_full[u_i]),
            "v_empty": float(empty[u]),
        }
        if args.estimator_study and "loo" in vals and len(lds_rows) >= 3:
            print(f"estimator study ({u}):", flush=True)
            res["utilities"][u]["estimator_study"] = estimator_study(
                proxy, P["lds"][lds_rows], v_lds[:, u_i], np.asarray(vals["exact_proxy"]),
                np.asarray(vals["loo"]), data["names"],
            )  # fmt: skip
        if len(ft_rows) >= 3:
            ft = games["finetune"].run(P["lds"][ft_rows])[:, u_i]
            res["utilities"][u]["finetune_lds_index"] = ft_rows.tolist()
            res["utilities"][u]["v_retrain_finetune"] = ft.tolist()
    # fidelity
    fid_rows = done(game, P["fidelity"])
    vr = game.run(P["fidelity"][fid_rows])
    for u_i, u in enumerate(game.utility_names):
        proxy = game.proxy_game(u)
        tq = time.perf_counter()
        vp = proxy(P["fidelity"][fid_rows])
        t_proxy = (time.perf_counter() - tq) / max(1, len(vp))
        res["utilities"][u].update(
            fidelity_coalitions=P["fidelity"][fid_rows].astype(int).tolist(),
            fidelity_v_retrain=vr[:, u_i].tolist(),
            fidelity_v_proxy=vp.tolist(),
            fidelity_sample_mae=vr[:, -4].tolist(),
            fidelity_sample_ssim=vr[:, -3].tolist(),
            proxy_seconds_per_coalition=t_proxy,
        )
    # counterfactual
    cf = {}
    for u_i, u in enumerate(game.utility_names):
        rows = cf_rows.get(u, [])
        Zc = np.array([z for *_, z in rows]).reshape(-1, n)
        keep = done(game, Zc) if len(Zc) else []
        if len(keep) == 0:
            continue
        vc = game.run(Zc[keep], desc=f"counterfactual {u}")
        cf[u] = [
            dict(method=rows[j][0], k_frac=rows[j][1], removed=rows[j][2],
                 players=[data["names"][i] for i in np.flatnonzero(~rows[j][3])],
                 utility=float(vc[r, u_i]),
                 relative_change=float((vc[r, u_i] - v_full[u_i]) / abs(v_full[u_i])))
            for r, j in enumerate(keep)
        ]  # fmt: skip
        # the other training seeds: each set against the full model of the same seed (the
        # seed-0 columns above are kept as they were); seeds with every set cached only
        by_seed = {0: (vc[:, u_i], float(v_full[u_i]))}
        for s in cf_seeds:
            full_s = P["full"] if s != game.train_seed else None
            if full_s is None or not game.is_cached(full_s, s).all():
                continue
            if game.is_cached(Zc[keep], s).all():
                vfs = float(game.run(full_s, s)[0, u_i])
                by_seed[s] = (game.run(Zc[keep], s)[:, u_i], vfs)
        for r, row in enumerate(cf[u]):
            rel = [float((vs[r] - vf) / abs(vf)) for vs, vf in by_seed.values()]
            row.update(
                seeds=list(by_seed),
                utility_by_seed=[float(vs[r]) for vs, _ in by_seed.values()],
                v_full_by_seed=[vf for _, vf in by_seed.values()],
                relative_change_by_seed=rel,
                relative_change_mean=float(np.mean(rel)),
                relative_change_sd=float(np.std(rel, ddof=1)) if len(rel) > 1 else float("nan"),
            )
    # noise: the same coalition retrained with other training seeds
    noise = {}
    by_seed = {}
    for j, key in enumerate(("full", "lds0")):
        seeds = [s for s in (0, 1, 2) if len(done(game, noise_Z[j : j + 1], s)) == 1]
        by_seed[key] = (seeds, np.array([game.run(noise_Z[j : j + 1], seed=s)[0] for s in seeds]))
    for u_i, u in enumerate(game.utility_names):
        sd = lambda a: float(np.std(a, ddof=1)) if len(a) > 1 else float("nan")  # noqa: E731
        col = {k: (v[:, u_i] if len(v) else np.array([])) for k, (_, v) in by_seed.items()}
        noise[u] = {
            "seeds": by_seed["full"][0],
            "seeds_lds0": by_seed["lds0"][0],
            "v_full_by_seed": col["full"].tolist(),
            "v_lds0_by_seed": col["lds0"].tolist(),
            "sd_full": sd(col["full"]),
            "sd_lds0": sd(col["lds0"]),
            "sd_across_lds_coalitions": sd(v_lds[:, u_i]),
        }
    sec = v_lds[:, -2] + v_lds[:, -1]
    if v_loo is not None:
        sec = np.concatenate([sec, v_loo[:, -2] + v_loo[:, -1]])
    res.update(
        n_contributors=n,
        contributors=data["names"],
        harmful={data["names"][i]: kind for i, kind in HARMFUL.items()},
        training_steps=args.steps,
        finetune_steps=game.recipe.finetune_steps,
        batch_size=game.recipe.batch_size,
        recipe=json.loads(game.recipe.key()),
        seconds_per_retraining=float(np.median(sec)),
        seconds_per_retraining_mean=float(np.mean(sec)),
        budget=args.budget,
        mc_permutations=len(P["perms"]),
        mc_permutations_done=len(mc_ok),
        mc_retrainings=int(len(np.unique(P["mc"], axis=0))) if len(P["mc"]) else 0,
        counterfactual=cf,
        noise=noise,
        quick=bool(args.quick),
        utility_direction={"fid": "negated FID (higher is better)", "is": "Inception Score"},
        machine="2 shared cores (7 agents), torch 1 thread per process",
    )
    out = args.out or (
        RESULTS.with_name("surrogateshap_retraining_quick.json") if args.quick else RESULTS
    )
    if not args.estimator_study:
        keep_study(res, out)
    if out == RESULTS:
        res["steps_sweep"] = steps_sweep(res, out)
    summarise(res)
    from datacredit._io import atomic_write_text

    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(res, indent=1))
    print(f"wrote {out}")
    if not args.quick and not args.no_page:
        scatter(res, DOC_PNG)
        write_page(res)


SWEEP_METHODS = ("surrogateshap", "kernelshap_proxy", "exact_proxy", "loo", "gmvaluator")


def steps_sweep(res: dict, out: Path) -> list[dict]:
    """The runs at other training steps, beside this one on the same held-out coalitions.

    Each is a JSON next to ``out`` named ``<stem>_steps<S>.json``, written by
    ``--steps S --values-only --no-page --out …`` after retraining a subset (``--steps S
    --phases loo`` and ``--steps S --phases lds --shard 0/4``): every method's values come
    from that recipe's own full model, proxy and LOO."""
    from datacredit.metrics import lds_groups
    from datacredit.metrics.correlation import spearman

    rows = []
    for path in sorted(out.parent.glob(out.stem + "_steps*.json")):
        o = json.loads(path.read_text())
        if o.get("training_steps") == res["training_steps"] or o.get("quick"):
            continue
        entry = dict(file=path.name, steps=o["training_steps"], utilities={},
                     seconds_per_retraining=o["seconds_per_retraining"])  # fmt: skip
        for u, r in res["utilities"].items():
            ou = o["utilities"][u]
            pos = {j: p for p, j in enumerate(r["lds_index"])}
            common = [j for j in ou["lds_index"] if j in pos]
            if len(common) < 3:
                continue
            Z = np.array(r["lds_coalitions_all"], bool)[common]
            v_this = np.array(r["v_retrain"])[[pos[j] for j in common]]
            at = [ou["lds_index"].index(j) for j in common]
            v_other = np.array(ou["v_retrain"])[at]
            ms = [m for m in SWEEP_METHODS if m in ou["values"] and m in r["values"]]
            entry["utilities"][u] = dict(
                lds_index=common,
                v_full=ou["v_full"],
                v_full_this=r["v_full"],
                lds={m: float(lds_groups(np.array(ou["values"][m]), Z, v_other)) for m in ms},
                lds_this={m: float(lds_groups(np.array(r["values"][m]), Z, v_this)) for m in ms},
                spearman_proxy=float(spearman(np.array(ou["v_proxy"])[at], v_other)),
                spearman_proxy_this=float(
                    spearman(np.array(r["v_proxy"])[[pos[j] for j in common]], v_this)
                ),
                spearman_between_steps=float(spearman(v_this, v_other)),
                sd_across_coalitions=float(np.std(v_other, ddof=1)),
                sd_across_coalitions_this=float(np.std(v_this, ddof=1)),
            )
        rows.append(entry)
    return rows


def render_only(path: Path) -> None:
    """Re-derive the summary figures of the result JSON at ``path`` (bootstrap intervals,
    fidelity errors, the steps sweep), and rewrite it, the page and the plot: seconds."""
    from datacredit._io import atomic_write_text

    res = json.loads(path.read_text())
    if path == RESULTS:
        res["steps_sweep"] = steps_sweep(res, path)
    summarise(res)
    atomic_write_text(path, json.dumps(res, indent=1))
    print(f"wrote {path}")
    if not res.get("quick"):
        scatter(res, DOC_PNG)
        write_page(res)


def keep_study(res: dict, previous: Path) -> None:
    """Carry the estimator study over from the previous JSON at ``previous`` when its inputs
    are unchanged: the same recipe, held-out coalitions, retrained utilities and converged
    proxy values (the study is deterministic in them)."""
    if not previous.exists():
        return
    old = json.loads(previous.read_text())
    if old.get("recipe") != res["recipe"]:
        return
    for u, r in res["utilities"].items():
        o = old.get("utilities", {}).get(u, {})

        def close(a, b, rtol):
            return len(a) == len(b) and np.allclose(a, b, rtol=rtol, atol=1e-12)

        same = (
            "estimator_study" in o
            and o.get("lds_coalitions") == r["lds_coalitions"]
            and close(o.get("v_retrain", []), r["v_retrain"], 0)
            and close(o["values"].get("exact_proxy", []), r["values"]["exact_proxy"], 1e-6)
        )
        if same:
            r["estimator_study"] = o["estimator_study"]
            print(f"estimator study ({u}) kept from {previous.name} (inputs unchanged)")
        elif "estimator_study" in o:
            print(f"estimator study ({u}) of {previous.name} dropped: its inputs changed")


def summarise(res: dict) -> None:
    """Add the derived figures (LDS with intervals, fidelity errors) and print them."""
    nan = {"lds": float("nan"), "ci_low": float("nan"), "ci_high": float("nan")}

    def lds_table(values, Z, v):
        if len(v) < 3:
            return {m: dict(nan) for m in values}
        return {
            m: dict(zip(("lds", "ci_low", "ci_high"), bootstrap_lds(np.array(phi), Z, v)))
            for m, phi in values.items()
        }

    for u, r in res["utilities"].items():
        Z, v = np.array(r["lds_coalitions"], bool), np.array(r["v_retrain"])
        r["lds"] = lds_table(r["values"], Z, v)
        if len(v) >= 3:
            from datacredit.metrics.correlation import spearman

            r["spearman_proxy_vs_retrain_lds"] = float(spearman(np.array(r["v_proxy"]), v))
        if len(v) >= 3 and "loo" in r["values"]:
            loo = np.array(r["values"]["loo"])
            r["lds_difference_vs_loo"] = {
                m: dict(zip(("diff", "ci_low", "ci_high"),
                            bootstrap_lds_difference(np.array(phi), loo, Z, v)))
                for m, phi in r["values"].items() if m != "loo"
            }  # fmt: skip
        st = r.get("estimator_study")
        if st is not None:  # how often one estimator seed beats LOO's LDS at 256 queries
            for d in st["spread_256"].values():
                d["seeds_above_loo"] = int(np.sum(np.array(d["lds_by_seed"]) > st["lds_loo"]))
        if "v_retrain_finetune" in r:
            Zf = np.array(r["lds_coalitions_all"], bool)[r["finetune_lds_index"]]
            vf = np.array(r["v_retrain_finetune"])
            r["lds_vs_finetune"] = lds_table(r["values"], Zf, vf)
            pos = {j: p for p, j in enumerate(r["lds_index"])}
            at = [pos[j] for j in r["finetune_lds_index"] if j in pos]
            if len(at) == len(vf) >= 3:
                from datacredit.metrics.correlation import spearman

                vp_ = np.array(r["v_proxy"])[at]
                r["spearman_proxy_vs_finetune_lds"] = float(spearman(vp_, vf))
                r["spearman_retrain_vs_finetune_lds"] = float(spearman(np.array(v)[at], vf))
            if st is not None and len(vf) >= 3:  # the seed spread against fine-tuned utilities
                from datacredit.metrics import lds_groups

                d = st["spread_256"]["surrogateshap"]
                d["lds_vs_finetune_by_seed"] = [
                    float(lds_groups(np.array(phi), Zf, vf)) for phi in d["values_by_seed"]
                ]
                d["lds_vs_finetune_loo"] = float(lds_groups(np.array(r["values"]["loo"]), Zf, vf))
        vr, vp = np.array(r["fidelity_v_retrain"]), np.array(r["fidelity_v_proxy"])
        if len(vr) >= 2 and np.ptp(vr) > 0:
            rng_ = np.ptp(vr)
            r["fidelity"] = dict(
                n_coalitions=len(vr),
                nrmse=float(np.sqrt(np.mean((vr - vp) ** 2)) / rng_),
                nmae=float(np.mean(np.abs(vr - vp)) / rng_),
                pearson=float(np.corrcoef(vr, vp)[0, 1]),
                sample_mae=float(np.mean(r["fidelity_sample_mae"])),
                sample_ssim=float(np.mean(r["fidelity_sample_ssim"])),
            )
        else:
            r["fidelity"] = dict(n_coalitions=len(vr), nrmse=float("nan"), nmae=float("nan"),
                                 pearson=float("nan"), sample_mae=float("nan"),
                                 sample_ssim=float("nan"))  # fmt: skip
        print(f"\n== {u} ==  fidelity {r['fidelity']}")
        for m, d in r["lds"].items():
            print(f"  LDS {m:26s} {100 * d['lds']:6.1f}  [{100 * d['ci_low']:.1f}, "
                  f"{100 * d['ci_high']:.1f}]")  # fmt: skip


DOC = ROOT / "docs" / "surrogateshap_retraining.md"
BEGIN, END = (
    "<!-- tables: generated by bench_surrogateshap_retraining.py -->",
    "<!-- end tables -->",
)
LABELS = {
    "surrogateshap": "SurrogateSHAP (256 proxy queries)",
    "kernelshap_proxy": "KernelSHAP on the proxy, ours (256)",
    "kernelshap_proxy_shapiq": "KernelSHAP on the proxy, shapiq (256)",
    "exact_proxy": "proxy Shapley, exact / converged",
    "loo": "LOO on retraining (n retrainings)",
    "gmvaluator": "GMValuator (sum per contributor)",
    "retraining_mc": "Monte-Carlo Shapley on retraining",
}


def render_tables(res: dict) -> str:
    """The page's tables (markdown) from a result dict."""
    U = list(res["utilities"])
    fid_ = res["utilities"][U[0]]
    out = [
        f"n = {res['n_contributors']} contributors; {res['training_steps']} training steps "
        f"(batch {res['batch_size']}) from scratch, {res['finetune_steps']} for fine-tuning; "
        f"median {res['seconds_per_retraining']:.1f} s per retraining (training + sampling + "
        f"scoring) on {res['machine']}; proxy query {1e3 * fid_['proxy_seconds_per_coalition']:.2f} ms "
        f"(−FID).  Retrainings done: {len(fid_['v_retrain'])} LDS coalitions, "
        f"{len(fid_['fidelity_v_retrain'])} fidelity coalitions, {res['n_contributors']} LOO, "
        f"{res['mc_permutations_done']} complete Monte-Carlo permutations (of "
        f"{res['mc_permutations']} planned); fine-tuned retrainings of "
        f"{len(fid_.get('v_retrain_finetune', []))} LDS coalitions"
        + (
            " (too few for an LDS column)"
            if 0 < len(fid_.get("v_retrain_finetune", [])) < 8
            else ""
        )
        + ".",
        "",
        "**Run-to-run noise** (same coalition, training seeds "
        + str(res["noise"][U[0]]["seeds"])
        + "):",
        "",
        "| utility | v(full) by seed | sd | v(LDS coalition 0) by seed | sd | sd across LDS coalitions |",
        "|---|---|---|---|---|---|",
    ]
    for u in U:
        z = res["noise"][u]
        f = lambda a: ", ".join(f"{x:.3f}" for x in a)  # noqa: E731
        out.append(f"| {u} | {f(z['v_full_by_seed'])} | {z['sd_full']:.3f} | "
                   f"{f(z['v_lds0_by_seed'])} | {z['sd_lds0']:.3f} | {z['sd_across_lds_coalitions']:.3f} |")  # fmt: skip
    out += ["", "**Proxy fidelity** (coalitions from the Shapley distribution; utility errors "
            "normalised by the range of the retrained utilities):", "",
            "| utility | NRMSE | NMAE | Pearson | paired sample MAE | paired SSIM |",
            "|---|---|---|---|---|---|"]  # fmt: skip
    for u in U:
        q = res["utilities"][u]["fidelity"]
        out.append(f"| {u} ({q['n_coalitions']}) | {q['nrmse']:.3f} | {q['nmae']:.3f} | {q['pearson']:.3f} | "
                   f"{q['sample_mae']:.3f} | {q['sample_ssim']:.3f} |")  # fmt: skip
    ft = len(res["utilities"][U[0]].get("v_retrain_finetune", [])) >= 8
    head = "| method | " + " | ".join(f"LDS {u} (retrained from scratch)" for u in U)
    head += (" | " + " | ".join(f"LDS {u} (fine-tuned)" for u in U)) if ft else ""
    out += ["", "**LDS** (eq. 12, α = 0.5, ×100, 95 % bootstrap interval over coalitions):", "",
            head + " |", "|---" * (1 + len(U) * (2 if ft else 1)) + "|"]  # fmt: skip
    out.append("| Spearman of the proxy's own v̂(S) with the retrained v(S) (ceiling of proxy values) | "
               + " | ".join(f"{100 * res['utilities'][u].get('spearman_proxy_vs_retrain_lds', float('nan')):.1f}" for u in U)
               + ("".join(f" | {100 * res['utilities'][u].get('spearman_proxy_vs_finetune_lds', float('nan')):.1f}" for u in U) if ft else "")
               + " |")  # fmt: skip
    if ft:
        out.append("| Spearman of the retrained-from-scratch v(S) with the fine-tuned v(S) "
                   + "| — " * len(U)
                   + "".join(f"| {100 * res['utilities'][u].get('spearman_retrain_vs_finetune_lds', float('nan')):.1f} " for u in U)
                   + "|")  # fmt: skip
    for m in res["utilities"][U[0]]["lds"]:
        cells = [LABELS.get(m, m)]
        for key in ("lds", "lds_vs_finetune") if ft else ("lds",):
            for u in U:
                d = res["utilities"][u][key].get(m)
                cells.append("—" if d is None else
                             f"{100 * d['lds']:.1f} [{100 * d['ci_low']:.1f}, {100 * d['ci_high']:.1f}]")  # fmt: skip
        out.append("| " + " | ".join(cells) + " |")
    if all("lds_difference_vs_loo" in res["utilities"][u] for u in U):
        out += ["", "**LDS minus LOO's LDS** (×100, paired: both on the same bootstrap "
                "resamples of the held-out coalitions, 95 % interval):", "",
                "| method | " + " | ".join(u for u in U) + " |", "|---" * (1 + len(U)) + "|"]  # fmt: skip
        for m in res["utilities"][U[0]]["lds_difference_vs_loo"]:
            cells = [LABELS.get(m, m)]
            for u in U:
                d = res["utilities"][u]["lds_difference_vs_loo"][m]
                cells.append(
                    f"{100 * d['diff']:+.1f} [{100 * d['ci_low']:+.1f}, {100 * d['ci_high']:+.1f}]"
                )
            out.append("| " + " | ".join(cells) + " |")
    if all("estimator_study" in res["utilities"][u] for u in U):
        out += render_study(res, U)
    for e in res.get("steps_sweep", []):
        out += ["", f"**Training steps: {res['training_steps']} against {e['steps']}** (the "
                f"{e['steps']}-step run retrained LOO and a quarter of the held-out coalitions, "
                f"{e['seconds_per_retraining']:.1f} s per retraining; every method's values "
                "from its own recipe's full model and proxy; LDS ×100 on the same coalitions):",
                "", f"| utility | coalitions | v(full) {res['training_steps']} → {e['steps']} | "
                "sd across coalitions | proxy ceiling | Spearman of v(S) between the two | "
                + " | ".join(LABELS.get(m, m).split(" (")[0] for m in SWEEP_METHODS) + " |",
                "|---" * (6 + len(SWEEP_METHODS)) + "|"]  # fmt: skip
        for u, d in e["utilities"].items():
            cells = [u, str(len(d["lds_index"])), f"{d['v_full_this']:.3g} → {d['v_full']:.3g}",
                     f"{d['sd_across_coalitions_this']:.3g} → {d['sd_across_coalitions']:.3g}",
                     f"{100 * d['spearman_proxy_this']:.1f} → {100 * d['spearman_proxy']:.1f}",
                     f"{100 * d['spearman_between_steps']:.1f}"]  # fmt: skip
            for m in SWEEP_METHODS:
                cells.append("—" if m not in d["lds"] else
                             f"{100 * d['lds_this'][m]:.1f} → {100 * d['lds'][m]:.1f}")  # fmt: skip
            out.append("| " + " | ".join(cells) + " |")
    if res.get("counterfactual"):
        seeds = "; ".join(f"{u} {rows[0].get('seeds', [0])}"
                          for u, rows in res["counterfactual"].items() if rows)  # fmt: skip
        out += ["", "**Counterfactual** (retrained without the removed contributors; relative "
                "change of the utility vs the full model of the same training seed, negative = "
                f"worse; training seeds: {seeds}):", "",
                "| utility | method | removed | k | relative change, seed 0 | mean over seeds "
                "(sd) | per seed | removed contributors |",
                "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for u, rows in res["counterfactual"].items():
            for r in rows:
                per = r.get("relative_change_by_seed", [r["relative_change"]])
                mean = r.get("relative_change_mean", r["relative_change"])
                sd = r.get("relative_change_sd", float("nan"))
                out.append(f"| {u} | {r['method']} | {r['removed']} | {int(100 * r['k_frac'])} % | "
                           f"{100 * r['relative_change']:+.1f} % | {100 * mean:+.1f} % ({100 * sd:.1f}) | "
                           + ", ".join(f"{100 * x:+.1f}" for x in per)
                           + f" | {', '.join(r['players'])} |")  # fmt: skip
    out += ["", "**Values** (−FID):", "",
            "| contributor | " + " | ".join(res["utilities"][U[0]]["values"]) + " |",
            "|---" * (1 + len(res["utilities"][U[0]]["values"])) + "|"]  # fmt: skip
    vals = res["utilities"][U[0]]["values"]
    for i, name in enumerate(res["contributors"]):
        out.append(f"| {name} | " + " | ".join(f"{vals[m][i]:.3g}" for m in vals) + " |")
    return "\n".join(out) + "\n"


STUDY_LABELS = {
    "surrogateshap": "SurrogateSHAP, default (adjusted; pairs by construction)",
    "surrogateshap_paper": "SurrogateSHAP, paper estimator (unpaired)",
    "surrogateshap_paper_paired": "SurrogateSHAP, paper estimator, paired=True",
    "kernelshap_proxy": "KernelSHAP ours, stratified (pairs by construction)",
    "kernelshap_proxy_kernel": "KernelSHAP ours, kernel sampling (unpaired)",
    "kernelshap_proxy_kernel_paired": "KernelSHAP ours, kernel sampling, paired=True",
}


def render_study(res: dict, U: list) -> list[str]:
    """The estimator study's tables: LDS over estimator seeds at 256, LDS against the budget,
    and the seed-0 256-query values' error against the converged values."""
    st0 = res["utilities"][U[0]]["estimator_study"]
    out = ["", "**Estimator noise at 256 proxy queries** (LDS ×100 over estimator seeds, the "
           "retrained utilities fixed; LOO and the converged proxy values for reference):", "",
           "| method | " + " | ".join(f"{u}: mean ± sd [min, max] (seeds above LOO / seeds)"
                                     for u in U) + " |",
           "|---" * (1 + len(U)) + "|"]  # fmt: skip
    for m in st0["spread_256"]:
        cells = [STUDY_LABELS.get(m, m)]
        for u in U:
            d = res["utilities"][u]["estimator_study"]["spread_256"][m]
            cells.append(f"{100 * d['lds_mean']:.1f} ± {100 * d['lds_sd']:.1f} "
                         f"[{100 * d['lds_min']:.1f}, {100 * d['lds_max']:.1f}] "
                         f"({d.get('seeds_above_loo', '?')} / {len(d['seeds'])})")  # fmt: skip
        out.append("| " + " | ".join(cells) + " |")
    if all("lds_vs_finetune_by_seed" in res["utilities"][u]["estimator_study"]["spread_256"]
           ["surrogateshap"] for u in U):  # fmt: skip
        cells = ["SurrogateSHAP, default, against the fine-tuned utilities (LOO's LDS there)"]
        for u in U:
            d = res["utilities"][u]["estimator_study"]["spread_256"]["surrogateshap"]
            a = np.array(d["lds_vs_finetune_by_seed"])
            cells.append(f"{100 * a.mean():.1f} ± {100 * a.std(ddof=1):.1f} [{100 * a.min():.1f}, "
                         f"{100 * a.max():.1f}] ({int(np.sum(a > d['lds_vs_finetune_loo']))} / "
                         f"{len(a)}; LOO {100 * d['lds_vs_finetune_loo']:.1f})")  # fmt: skip
        out.append("| " + " | ".join(cells) + " |")
    for key, label in (
        ("lds_loo", "LOO on retraining"),
        ("lds_converged", "converged proxy Shapley"),
    ):
        out.append(f"| {label} | " + " | ".join(
            f"{100 * res['utilities'][u]['estimator_study'][key]:.1f}" for u in U) + " |")  # fmt: skip
    B = st0["budgets"]
    for u in U:
        st = res["utilities"][u]["estimator_study"]
        out += ["", f"**LDS against the budget ({u})** (×100, mean [min, max] over "
                f"{st['curve_seeds']} estimator seeds, {st['n_seeds']} at 256; after the slash: "
                "the mean relative l2 error of the values against the converged ones):", "",
                "| method | " + " | ".join(str(b) for b in B) + " |", "|---" * (1 + len(B)) + "|"]  # fmt: skip
        for m, by_b in st["lds_vs_budget"].items():
            if len(by_b) < 2:
                continue
            cells = [STUDY_LABELS.get(m, m)]
            for b in B:
                d = by_b.get(str(b))
                cells.append("—" if d is None else
                             f"{100 * d['lds_mean']:.1f} [{100 * d['lds_min']:.1f}, "
                             f"{100 * d['lds_max']:.1f}] / {d['rel_l2_error_mean']:.2f}")  # fmt: skip
            out.append("| " + " | ".join(cells) + " |")
    out += ["", "**SurrogateSHAP's seed-0 values at 256 queries against the converged proxy "
            "values** (the five largest errors; z = error / the estimator's own standard error):",
            "", "| utility | rel. l2 error | Spearman with converged | LDS 256 / converged / LOO | "
            "contributor: value − converged (z) |", "|---|---|---|---|---|"]  # fmt: skip
    for u in U:
        e = res["utilities"][u]["estimator_study"]["error_seed0"]
        worst = "; ".join(
            f"{w['contributor']}: {w['value']:.3g} − {w['converged']:.3g} = {w['error']:+.3g}"
            + ("" if not w["stderr"] else f" ({w['error'] / w['stderr']:+.1f})")
            for w in e["largest_errors"]
        )
        out.append(f"| {u} | {e['rel_l2_error']:.3f} | {e['spearman_with_converged']:.3f} | "
                   f"{100 * e['lds']:.1f} / {100 * e['lds_converged']:.1f} / {100 * e['lds_loo']:.1f} | {worst} |")  # fmt: skip
    return out


def write_page(res: dict, path: Path = DOC) -> None:
    """Replace the generated region of the page (the prose around it is kept)."""
    from datacredit._io import atomic_write_text

    text = (
        path.read_text() if path.exists() else f"# SurrogateSHAP vs retraining\n\n{BEGIN}\n{END}\n"
    )
    a, b = text.index(BEGIN) + len(BEGIN), text.index(END)
    atomic_write_text(path, text[:a] + "\n" + render_tables(res) + text[b:])


def scatter(res: dict, path: Path) -> None:
    """Proxy vs retrained utility over the fidelity coalitions (one panel per utility)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(res["utilities"]), figsize=(9, 4))
    for ax, (u, r) in zip(np.atleast_1d(axes), res["utilities"].items()):
        vr, vp = np.array(r["fidelity_v_retrain"]), np.array(r["fidelity_v_proxy"])
        ax.scatter(vr, vp, s=14)
        lo, hi = min(vr.min(), vp.min()), max(vr.max(), vp.max())
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_xlabel(f"retrained {'−FID' if u == 'fid' else 'IS'}")
        ax.set_ylabel(f"proxy {'−FID' if u == 'fid' else 'IS'}")
        ax.set_title(f"{u.upper()}: NRMSE {r['fidelity']['nrmse']:.3f}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    from datacredit._io import atomic_open

    with atomic_open(path) as f:
        fig.savefig(f, format="png", dpi=110)


if __name__ == "__main__":
    sys.exit(main())
