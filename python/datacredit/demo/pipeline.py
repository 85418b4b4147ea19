"""The demo's stages: models -> SurrogateSHAP -> GMValuator -> DualDA/XDA -> report.

Each stage returns plain results (numbers, arrays) that go into ``results.json`` and
the figures of ``report.html``; :func:`run_demo` times every stage.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from datacredit._io import atomic_write_text
from datacredit.demo import figures
from datacredit.demo.data import N_CLASSES, DigitsSplit, flip_labels, load_split
from datacredit.demo.nets import NULL_CLASS, make_scheduler
from datacredit.demo.report import Section, render
from datacredit.demo.training import load_unet, train_classifier, train_diffusion


@dataclass
class DemoSettings:
    """Sizes of the demo; ``fast()`` is the small variant the tests run."""

    cnn_epochs: int = 30
    n_per_label: int = 100  # sample bank size per digit
    ddim_steps: int = 25
    guidance: float = 2.0
    budget: int = 512  # SurrogateSHAP / KernelSHAP coalitions (of 1,024)
    cv: bool = True  # surrogate chosen by the estimated variance of the values
    gmv_k: int = 20
    gmv_recall: int = 100
    n_explain: int = 4  # test digits shown with proponents/opponents and XDA heatmaps
    label_noise: float = 0.1
    # The CNN on flipped labels trains shorter: once it memorises them, their self-influence
    # stops standing out (measured AUC: 15 epochs 0.945, 30 epochs 0.831).
    noisy_cnn_epochs: int = 15
    seed: int = 0
    retrain_diffusion: bool = False
    diffusion_steps: int = 2000

    @classmethod
    def fast(cls) -> DemoSettings:
        return cls(
            cnn_epochs=6,
            noisy_cnn_epochs=6,
            n_per_label=20,
            ddim_steps=8,
            budget=128,
            cv=True,  # selecting the adjusted estimator's surrogate costs seconds
            n_explain=2,
        )


@dataclass
class DemoRun:
    """Everything a run produced: results.json content and report sections."""

    results: dict[str, Any] = field(default_factory=dict)
    sections: list[Section] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def stage(self, name: str):
        run = self

        class _Timer:
            def __enter__(self):
                self.t0 = time.perf_counter()
                tqdm.write(f"[datacredit demo] {name} ...")

            def __exit__(self, *exc):
                run.timings[name] = round(time.perf_counter() - self.t0, 2)

        return _Timer()


def _cnn_features(cnn):
    def features(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return cnn.features(torch.as_tensor(x)).numpy()

    return features


def _cnn_probs(cnn):
    def probs(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.softmax(cnn(torch.as_tensor(x)), 1).numpy()

    return probs


def _accuracy(cnn, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        return float((cnn(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


# --------------------------------------------------------------------------- stages
def stage_models(run: DemoRun, split: DigitsSplit, s: DemoSettings):
    cnn = train_classifier(split.x_train, split.y_train, epochs=s.cnn_epochs, seed=s.seed)
    if s.retrain_diffusion:
        unet = train_diffusion(split.x_train, split.y_train, steps=s.diffusion_steps, seed=s.seed)
        source = f"trained now ({s.diffusion_steps} steps)"
    else:
        unet = load_unet()
        source = "shipped weights (scripts/train_demo_models.py)"
    acc = _accuracy(cnn, split.x_test, split.y_test)
    run.results["models"] = {"cnn_test_accuracy": acc, "diffusion": source}
    run.sections.append(
        Section(
            "Data and models",
            [
                "scikit-learn's load_digits (1,797 8x8 digits, upsampled to 16x16); each digit class "
                "is one data contributor. A small CNN classifies the digits and provides the "
                "features and class probabilities for FID and Inception Score; a tiny "
                "class-conditional diffusion model (diffusers UNet2DModel) generates digits.",
            ],
            rows=[
                ("training / test images", f"{len(split.y_train)} / {len(split.y_test)}"),
                ("CNN test accuracy", f"{acc:.3f}"),
                ("diffusion model", source),
            ],
        )
    )
    return cnn, unet


def surrogateshap_games(split: DigitsSplit, cnn, unet, s: DemoSettings):
    """The demo's two proxy games over the 10 digit contributors: (bank, FID game, IS game).

    FID is a loss: its game declares ``higher_is_better=False`` (from the utility), so the
    results rank the contributors that lower FID first."""
    from datacredit.models import DiffusersClassConditional
    from datacredit.surrogateshap import ProxyGame, SampleBank
    from datacredit.surrogateshap.utilities import FID, InceptionScore

    generator = DiffusersClassConditional(
        unet,
        make_scheduler(),
        num_inference_steps=s.ddim_steps,
        guidance_scale=s.guidance,
        null_label=NULL_CLASS,
        batch_size=256,
    )
    bank = SampleBank.generate(generator, list(range(N_CLASSES)), s.n_per_label, seed=s.seed)
    contributors = {f"digit {d}": [d] for d in range(N_CLASSES)}
    counts = np.bincount(split.y_train, minlength=N_CLASSES)
    # v(empty): the model trained on no data only produces noise; score noise images.
    noise = np.random.default_rng(s.seed).random((s.n_per_label, 1, 16, 16)).astype(np.float32)
    noise_bank = SampleBank({0: noise})

    features, probs = _cnn_features(cnn), _cnn_probs(cnn)
    reference = features(split.x_test)
    fid_empty = float(FID(features, reference=reference).prepare(noise_bank)(np.ones((1, 1)))[0])
    is_empty = float(InceptionScore(probs).prepare(noise_bank)(np.ones((1, 1)))[0])
    fid_game = ProxyGame(
        bank,
        contributors,
        FID(features, reference=reference),  # declares higher_is_better=False (a loss)
        label_weights=counts,
        empty_value=fid_empty,
    )
    is_game = ProxyGame(
        bank, contributors, InceptionScore(probs), label_weights=counts, empty_value=is_empty
    )
    return bank, fid_game, is_game


def baseline_kernel_shap(game, budget: int, seed: int):
    """The strongest KernelSHAP available for the comparison: shapiq's when it is installed
    (sampling without replacement, border trick), else datacredit's stratified one."""
    from datacredit.shapley import ShapleyValues, evaluate, game_direction, kernel_shap

    try:
        import shapiq
    except ImportError:
        return kernel_shap(game, budget, seed=seed), "KernelSHAP (datacredit)"
    n = len(game.players)
    iv = shapiq.KernelSHAP(n=n, random_state=seed).approximate(
        budget, lambda Z: evaluate(game, np.asarray(Z, dtype=bool))
    )
    values = np.array([iv[(i,)] for i in range(n)], dtype=np.float64)
    ends = evaluate(game, np.array([[False] * n, [True] * n]))
    sv = ShapleyValues(
        values=values,
        players=list(game.players),
        v_empty=float(ends[0]),
        v_full=float(ends[1]),
        method="shapiq.KernelSHAP",
        info={"budget": int(budget)},
        higher_is_better=game_direction(game),
    )
    return sv, "KernelSHAP (shapiq)"


def stage_surrogateshap(run: DemoRun, split: DigitsSplit, cnn, unet, s: DemoSettings):
    from datacredit import SurrogateSHAP
    from datacredit.shapley import exact

    bank, fid_game, is_game = surrogateshap_games(split, cnn, unet, s)
    out = {}
    ks_name = "KernelSHAP"
    estimators = tqdm(
        total=6, desc="SurrogateSHAP: fit + KernelSHAP + exact, FID and IS", unit="estimate"
    )
    for name, game in (("fid", fid_game), ("inception_score", is_game)):
        sv = SurrogateSHAP(budget=s.budget, cv=s.cv, seed=s.seed).explain(game)
        estimators.update()
        ks, ks_name = baseline_kernel_shap(game, s.budget, s.seed)
        estimators.update()
        # 10 players: all 1,024 coalitions are cheap on the sample bank, so the exact
        # values are there to check both estimators against.
        ex = exact(game)
        estimators.update()
        out[name] = (sv, ks, ex)
    estimators.close()
    sv, ks, ex = out["fid"]
    sv_is, ks_is, ex_is = out["inception_score"]
    run.results["surrogateshap"] = {
        "utility": "FID (CNN features, test split as reference), a loss: lower is better",
        # players, values (in FID units: negative = lowers FID), higher_is_better,
        # improvement (positive = lowers FID), ranking (most helpful first), v_empty, ...
        **sv.summary(),
        "kernelshap_method": ks_name,
        "kernelshap_values": _floats(ks.values),
        "exact_values": _floats(ex.values),
        "relative_error": _rel_err(sv.values, ex.values),
        "kernelshap_relative_error": _rel_err(ks.values, ex.values),
        "surrogate_cv_score": _maybe_float(getattr(sv, "cv_score", None)),
        "inception_score": {
            **sv_is.summary(),
            "kernelshap_values": _floats(ks_is.values),
            "exact_values": _floats(ex_is.values),
            "relative_error": _rel_err(sv_is.values, ex_is.values),
            "kernelshap_relative_error": _rel_err(ks_is.values, ex_is.values),
        },
        "n_per_label": s.n_per_label,
        "budget": s.budget,
    }
    samples = {d: bank.samples_for(d)[:4] for d in range(N_CLASSES)}
    run.sections.append(
        Section(
            "SurrogateSHAP: which contributors make the generator good",
            [
                f"A sample bank of {s.n_per_label} generated digits per label (DDIM, "
                f"{s.ddim_steps} steps) stands in for every coalition's model: a coalition is a "
                "mixture of its labels' conditionals weighted by their training counts, so no "
                "coalition is ever regenerated or retrained. On "
                f"{s.budget} coalitions (border sizes enumerated, the rest in complement pairs) "
                "a linear + XGBoost surrogate gives exact Shapley values through TreeSHAP, and "
                "an unbiased Monte-Carlo estimate of the surrogate's residual from held-out "
                f"coalitions corrects them (regression-adjusted Monte Carlo). {ks_name} on the "
                "same budget is shown beside them, and with 10 contributors the exact values "
                "(all 1,024 coalitions) as the reference.",
                "Efficiency check: the values sum to v(full) - v(empty) up to the gap shown "
                "(float32 rounding of the trees); each value carries a standard error.",
                "FID is a loss (lower is better): a contributor's FID value is negative when "
                "it lowers FID. The figure and the rankings flip its sign, so for both "
                "utilities a bar to the right means the contributor makes the generator "
                "better, and the most helpful contributor is on top.",
            ],
            rows=[
                ("FID: v(empty) (noise) / v(full)", f"{sv.v_empty:.3f} / {sv.v_full:.3f}"),
                ("FID: efficiency gap", f"{sv.efficiency_gap:.2e}"),
                ("most helpful contributors, FID", ", ".join(map(str, sv.ranking()[:3]))),
                ("most helpful contributors, IS", ", ".join(map(str, sv_is.ranking()[:3]))),
                ("IS: v(empty) / v(full)", f"{sv_is.v_empty:.3f} / {sv_is.v_full:.3f}"),
                ("IS: efficiency gap", f"{sv_is.efficiency_gap:.2e}"),
                (
                    f"relative l2 error vs exact, FID: SurrogateSHAP / {ks_name}",
                    f"{_rel_err(sv.values, ex.values):.3f} / {_rel_err(ks.values, ex.values):.3f}",
                ),
                (
                    f"relative l2 error vs exact, IS: SurrogateSHAP / {ks_name}",
                    f"{_rel_err(sv_is.values, ex_is.values):.3f} / "
                    f"{_rel_err(ks_is.values, ex_is.values):.3f}",
                ),
            ],
            figures=[
                (
                    "Contributor Shapley values for FID, sign flipped so that right = lowers "
                    "FID (left), and for the Inception Score (right): SurrogateSHAP, "
                    f"{ks_name} and exact values, with generated samples of each contributor",
                    figures.shapley_bars(
                        list(sv.players),
                        {"SurrogateSHAP": sv, ks_name: ks, "exact": ex},
                        {"SurrogateSHAP": sv_is, ks_name: ks_is, "exact": ex_is},
                        samples,
                    ),
                )
            ],
        )
    )
    return bank


def stage_gmvaluator(run: DemoRun, split: DigitsSplit, cnn, bank, s: DemoSettings):
    from datacredit import GMValuator
    from datacredit.metrics import identical_class_ratio

    gen = np.concatenate([bank.samples_for(d) for d in range(N_CLASSES)])
    gen_labels = np.repeat(np.arange(N_CLASSES), [bank.n_samples_for(d) for d in range(N_CLASSES)])
    valuator = GMValuator(
        encoder=_cnn_features(cnn), k=s.gmv_k, recall=s.gmv_recall, index="exact", rerank="l2"
    )
    valuator.fit(split.x_train)
    val = valuator.value(gen)
    by_group = val.group_values(split.y_train, agg="sum")  # digit -> summed value
    icr = float(identical_class_ratio(val.topk_indices, split.y_train, gen_labels, s.gmv_k))
    run.results["gmvaluator"] = {
        "values_by_contributor": {f"digit {g}": v for g, v in by_group.items()},
        "total_quality": float(np.sum(val.values)),
        "n_generated": len(gen),
        "identical_class_ratio": icr,
        "k": s.gmv_k,
    }
    picks = [int(np.flatnonzero(gen_labels == d)[0]) for d in range(0, N_CLASSES, 2)]
    run.sections.append(
        Section(
            "GMValuator: which training images the generated digits come from",
            [
                f"Every generated digit ({len(gen)}) is matched to its {s.gmv_k} nearest training "
                "images in the CNN's feature space (exact recall, Euclidean re-rank); each match "
                "gets a softmax(-distance) share of that sample's quality, summed per training image.",
            ],
            rows=[
                ("generated samples", str(len(gen))),
                (f"identical-class ratio of top-{s.gmv_k}", f"{icr:.3f}"),
            ],
            figures=[
                (
                    "Generated digits (left column) and their top training contributors with weights",
                    figures.topk_grid(
                        gen[picks], split.x_train, val.topk_indices[picks], val.topk_weights[picks]
                    ),
                ),
                (
                    "Value per contributor (sum over its training images)",
                    figures.bars(
                        [f"digit {g}" for g in by_group],
                        list(by_group.values()),
                        "GMValuator value (higher = contributed more)",
                    ),
                ),
            ],
        )
    )


def stage_dualda(run: DemoRun, split: DigitsSplit, cnn, s: DemoSettings):
    from datacredit import XDA, DualDA
    from datacredit.metrics import identical_class, mislabel_detection_auc

    dualda = DualDA(
        cnn, (split.x_train, split.y_train), layer="classifier", C=1e-3, seed=s.seed
    ).fit()
    with torch.no_grad():
        preds = cnn(torch.from_numpy(split.x_test)).argmax(1).numpy()
    top_vals, top_idx = dualda.attribute(split.x_test, top_k=5)
    ic = float(identical_class(top_idx, split.y_train, preds, k=5))

    xda = XDA(dualda)
    examples = []
    for i in range(s.n_explain):
        dense = dualda.attribute(split.x_test[i : i + 1])[0]
        pro = np.argsort(-dense, kind="stable")[:3]
        con = np.argsort(dense, kind="stable")[:3]
        idx = np.concatenate([pro, con])
        test_maps, train_maps = xda.explain(split.x_test[i : i + 1], idx)
        examples.append(
            (split.x_test[i], _np(test_maps)[0], split.x_train[idx], dense[idx], _np(train_maps))
        )

    # Mislabel detection: retrain on labels with planted noise, rank by self-influence.
    noisy, flipped = flip_labels(split.y_train, s.label_noise, s.seed)
    cnn_noisy = train_classifier(split.x_train, noisy, epochs=s.noisy_cnn_epochs, seed=s.seed)
    dd_noisy = DualDA(
        cnn_noisy, (split.x_train, noisy), layer="classifier", C=0.1, seed=s.seed
    ).fit()
    si = np.asarray(dd_noisy.self_influence())
    auc = float(mislabel_detection_auc(si, flipped))
    run.results["dualda"] = {
        "identical_class": ic,
        "mislabel_auc": auc,
        "n_support": int(len(dualda.support)),
        "n_support_noisy": int(len(dd_noisy.support)),
        "label_noise": s.label_noise,
    }
    run.sections.append(
        Section(
            "DualDA and XDA: which training digits a prediction rests on",
            [
                "A Crammer-Singer SVM fitted on the CNN's penultimate features reproduces its last "
                "layer; its dual coefficients turn every prediction into a sparse sum over support "
                "vectors. Proponents push the predicted class up, opponents down; XDA pushes each "
                "attribution back to the pixels of the test and training image with LRP.",
            ],
            rows=[
                ("identical class of the top-5 proponents", f"{ic:.3f}"),
                ("support vectors (C=1e-3)", f"{len(dualda.support)} of {len(split.y_train)}"),
                (
                    f"mislabel detection AUC ({int(s.label_noise * 100)}% flipped, C=0.1)",
                    f"{auc:.3f}",
                ),
            ],
            figures=[
                (
                    "Test digit, its XDA heatmap, 3 proponents and 3 opponents with their heatmaps",
                    figures.xda_grid(examples),
                ),
                (
                    "Mislabel detection: fraction of flipped labels found vs fraction of data checked",
                    figures.mislabel_curve(si, flipped),
                ),
            ],
        )
    )


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def _floats(x) -> list[float]:
    return [float(v) for v in np.asarray(x).ravel()]


def _rel_err(estimate, reference) -> float:
    reference = np.asarray(reference, dtype=float)
    return float(np.linalg.norm(np.asarray(estimate) - reference) / np.linalg.norm(reference))


def _maybe_float(x) -> float | None:
    return None if x is None else float(x)


# --------------------------------------------------------------------------- driver
def run_demo(out_dir: str | Path, settings: DemoSettings | None = None) -> dict[str, Any]:
    """Run every stage, write ``report.html`` and ``results.json`` into ``out_dir``.

    Returns the results dict.  About 5-8 minutes on 2 cores (``DemoSettings.fast()``: < 2).
    """
    s = settings or DemoSettings()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(s.seed)
    run = DemoRun()
    t_all = time.perf_counter()
    with run.stage("data"):
        split = load_split(seed=s.seed)
    with run.stage("models"):
        cnn, unet = stage_models(run, split, s)
    with run.stage("surrogateshap"):
        bank = stage_surrogateshap(run, split, cnn, unet, s)
    with run.stage("gmvaluator"):
        stage_gmvaluator(run, split, cnn, bank, s)
    with run.stage("dualda"):
        stage_dualda(run, split, cnn, s)
    run.timings["total"] = round(time.perf_counter() - t_all, 2)
    run.results["timings"] = dict(run.timings)
    run.sections.append(
        Section(
            "Timings",
            rows=[(k, f"{v:.1f} s") for k, v in run.timings.items()],
            figures=[
                (
                    "Seconds per stage",
                    figures.bars(
                        list(run.timings)[:-1], list(run.timings.values())[:-1], "seconds"
                    ),
                )
            ],
        )
    )
    html = render(
        "datacredit demo: who made these digits?",
        "Three attribution methods on scikit-learn's digits, each digit class a data contributor.",
        run.sections,
    )
    atomic_write_text(out / "report.html", html)
    atomic_write_text(out / "results.json", json.dumps(run.results, indent=2))
    return run.results
