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


def retrain(game, Z: np.ndarray, shard: tuple[int, int], desc: str) -> np.ndarray | None:
    """Retrain the coalitions of this shard (all when unsharded); the full table when unsharded."""
    k, K = shard
    if K > 1:
        rows = [j for j in range(len(Z)) if j % K == k]
        if rows:
            game.run(Z[rows], desc=desc)
        return None
    return game.run(Z, desc=desc)


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
    keys, by = val.value(gen).by_group(data["owner"], agg="sum")
    out = np.zeros(len(data["names"]))
    out[np.asarray(keys, int)] = by
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
    ap.add_argument("--only-coalition", type=int, default=None)
    ap.add_argument("--utility", choices=UTILITIES, default="fid")
    ap.add_argument("--seed", type=int, default=0, help="training seed of --only-coalition")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--no-page", action="store_true", help="write no page / plot")
    args = ap.parse_args()
    if args.quick:
        args.steps, args.n_per_label = min(args.steps, 20), min(args.n_per_label, 8)
        args.cache = args.cache.with_name(args.cache.name + "-quick")
    k, K = map(int, args.shard.split("/"))
    phases = set(filter(None, args.phases.split(","))) - set(args.skip.split(","))
    if phases - set(PHASES):
        raise SystemExit(f"unknown phases {sorted(phases - set(PHASES))}; known: {PHASES}")
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
        for u, rows in cf_rows.items():
            retrain(game, np.array([z for *_, z in rows]), shard, f"counterfactual {u}")
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
    summarise(res)
    out = args.out or (
        RESULTS.with_name("surrogateshap_retraining_quick.json") if args.quick else RESULTS
    )
    from datacredit._io import atomic_write_text

    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(res, indent=1))
    print(f"wrote {out}")
    if not args.quick and not args.no_page:
        scatter(res, DOC_PNG)
        write_page(res)


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
        if "v_retrain_finetune" in r:
            Zf = np.array(r["lds_coalitions_all"], bool)[r["finetune_lds_index"]]
            r["lds_vs_finetune"] = lds_table(r["values"], Zf, np.array(r["v_retrain_finetune"]))
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
               + (" | —" * len(U) if ft else "") + " |")  # fmt: skip
    for m in res["utilities"][U[0]]["lds"]:
        cells = [LABELS.get(m, m)]
        for key in ("lds", "lds_vs_finetune") if ft else ("lds",):
            for u in U:
                d = res["utilities"][u][key].get(m)
                cells.append("—" if d is None else
                             f"{100 * d['lds']:.1f} [{100 * d['ci_low']:.1f}, {100 * d['ci_high']:.1f}]")  # fmt: skip
        out.append("| " + " | ".join(cells) + " |")
    if res.get("counterfactual"):
        out += ["", "**Counterfactual** (retrained without the removed contributors; relative "
                "change of the utility vs the full model, negative = worse):", "",
                "| utility | method | removed | k | relative change | removed contributors |",
                "|---|---|---|---|---|---|"]  # fmt: skip
        for u, rows in res["counterfactual"].items():
            for r in rows:
                out.append(f"| {u} | {r['method']} | {r['removed']} | {int(100 * r['k_frac'])} % | "
                           f"{100 * r['relative_change']:+.1f} % | {', '.join(r['players'])} |")  # fmt: skip
    out += ["", "**Values** (−FID):", "",
            "| contributor | " + " | ".join(res["utilities"][U[0]]["values"]) + " |",
            "|---" * (1 + len(res["utilities"][U[0]]["values"])) + "|"]  # fmt: skip
    vals = res["utilities"][U[0]]["values"]
    for i, name in enumerate(res["contributors"]):
        out.append(f"| {name} | " + " | ".join(f"{vals[m][i]:.3g}" for m in vals) + " |")
    return "\n".join(out) + "\n"


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
