"""The ``datacredit`` command line.

    datacredit demo [--out DIR] [--fast]            the embedded end-to-end demo
    datacredit dualda --config FILE                 DualDA on your model and data
    datacredit gmvaluator --config FILE             GMValuator on your data
    datacredit surrogateshap --config FILE          SurrogateSHAP on your generator
    datacredit shard run --store DIR --stage S --shard I   one shard of a stage (SLURM arrays)
    datacredit shard status DIR                     progress of a shard store

Configs are YAML or TOML; ``datacredit METHOD --help`` lists every key.  Values
written ``"package.module:attribute"`` name Python objects; factories among them
are called with no arguments.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from datacredit._io import atomic_save_npz, atomic_write_text, to_jsonable
from datacredit.config import (
    REQUIRED,
    ConfigError,
    Option,
    config_dir_on_path,
    describe,
    integer,
    load_object,
    non_empty,
    number,
    object_spec,
    one_of,
    read_config,
    torch_device,
    validate,
)

# ----------------------------------------------------------------------------- schemas
# Every key has a type and an allowed range, checked before anything runs (exit code 2).
_SEED = integer(0, 2**32 - 1)  # numpy, XGBoost and the solvers all take 32-bit seeds
_FACTORY = object_spec()
# The methods' own choices (tests check these equal GMValuator's), written out here so that
# `datacredit --help` does not import the kernels.
GMV_INDEXES = ("auto", "ivf", "pq", "exact", "faiss")
GMV_RERANKS = ("l2", "cosine", "pixel_l2", "lpips", "dreamsim", "none")


def _encoder_spec(v: str) -> str | None:
    if v == "pixels" or v == "open_clip" or v.startswith("open_clip:") or _FACTORY(v) is None:
        return None
    return "'pixels', 'open_clip:MODEL/PRETRAINED' or 'package.module:fn'"


def _label(x: Any) -> bool:
    return isinstance(x, (int, str)) and not isinstance(x, bool)


_CONTRIBUTORS = "a non-empty mapping player -> label or list of labels (int or str)"


def _contributors_spec(v: Any) -> str | None:
    if isinstance(v, str):
        return None if _FACTORY(v) is None else f"{_CONTRIBUTORS}, or 'package.module:fn'"
    if not isinstance(v, dict) or not v:
        return _CONTRIBUTORS
    for labs in v.values():
        labs = list(labs) if isinstance(labs, (list, tuple)) else [labs]
        if not labs or not all(_label(x) for x in labs):
            return _CONTRIBUTORS
    return None


def _label_weights_spec(v: Any) -> str | None:
    if isinstance(v, str):
        return None if v == "uniform" else "'uniform', or a mapping or list of counts"
    counts = list(v.values()) if isinstance(v, dict) else v
    ok = bool(counts) and all(
        isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c) and c >= 0
        for c in counts
    )
    return None if ok else ("'uniform', or a non-empty mapping or list of finite counts >= 0")


def _out_dir(v: Any) -> str | None:
    if not v.strip():
        return "a non-empty string"
    if Path(v).exists() and not Path(v).is_dir():
        return "a directory (that path is an existing file)"
    return None


def _contributor_labels(contributors: dict) -> list:
    """The distinct labels of a contributors mapping, in the order the sample bank uses."""
    return sorted(
        {
            lab
            for labs in contributors.values()
            for lab in (labs if isinstance(labs, (list, tuple)) else [labs])
        },
        key=str,
    )


def _label_weights_cover_labels(cfg: dict[str, Any]) -> tuple[str, str] | None:
    # With the contributors written in the file; a factory's are checked by ProxyGame.
    weights, contributors = cfg["label_weights"], cfg["contributors"]
    if not isinstance(contributors, dict) or weights is None or isinstance(weights, str):
        return None
    labels = _contributor_labels(contributors)
    if isinstance(weights, dict):
        absent = [lab for lab in labels if lab not in weights]
        if absent:
            return "label_weights", f"a count for every contributor label (none for {absent[:10]})"
    elif len(weights) != len(labels):
        return "label_weights", f"one count per contributor label ({len(labels)}: {labels[:10]})"
    return None


def _recall_at_least_k(cfg: dict[str, Any]) -> tuple[str, str] | None:
    if cfg["recall"] < cfg["k"]:
        return "recall", f"an integer >= k = {cfg['k']}"
    return None


def _budget_covers_players(cfg: dict[str, Any]) -> tuple[str, str] | None:
    # With the contributors written in the file; a factory's are checked once loaded.
    if isinstance(cfg["contributors"], dict) and cfg["budget"] < len(cfg["contributors"]) + 2:
        return "budget", f"an integer >= n_players + 2 = {len(cfg['contributors']) + 2}"
    return None


DUALDA_SCHEMA = {
    "model": Option(str, REQUIRED, "factory 'pkg.mod:fn' returning the torch classifier", _FACTORY),
    "train_data": Option(
        str, REQUIRED, "factory returning a Dataset, DataLoader or (X, y)", _FACTORY
    ),
    "test_data": Option(
        str, REQUIRED, "factory returning test inputs (tensor/array, Dataset or (X, y))", _FACTORY
    ),
    "layer": Option(
        str, REQUIRED, "name of the module whose input is the penultimate feature", non_empty
    ),
    "C": Option((int, float), 1e-3, "SVM regularisation C > 0", number(0, strict=True)),
    "top_k": Option(int, 10, "proponents/opponents kept per test sample (>= 1)", integer(1)),
    "device": Option(str, "cpu", "torch device", torch_device),
    "batch_size": Option(int, 256, "feature-extraction batch size (>= 1)", integer(1)),
    "cache_dir": Option(str, None, "directory for the support-vector cache", non_empty),
    "use_predictions": Option(bool, False, "fit on model predictions instead of labels"),
    "seed": Option(int, 0, "solver seed (0 .. 2**32-1)", _SEED),
    "out": Option(str, "dualda-out", "output directory", _out_dir),
}

GMVALUATOR_SCHEMA = {
    "encoder": Option(
        str,
        REQUIRED,
        "'pixels', 'open_clip:MODEL/PRETRAINED' or a factory 'pkg.mod:fn'",
        _encoder_spec,
    ),
    "train_data": Option(
        str, REQUIRED, "factory returning the training samples (N, ...)", _FACTORY
    ),
    "generated": Option(
        str, REQUIRED, "factory returning the generated samples (n, ...)", _FACTORY
    ),
    "groups": Option(str, None, "factory returning a contributor id per training sample", _FACTORY),
    "group_agg": Option(
        str,
        "sum",
        "aggregation of member values per group: sum, mean or max",
        one_of("sum", "mean", "max"),
    ),
    "quality_scores": Option(
        str, None, "factory returning q_j in [0, 1] per generated sample", _FACTORY
    ),
    "k": Option(int, 50, "training samples kept per generated sample (>= 1)", integer(1)),
    "recall": Option(int, 200, "candidates recalled before re-ranking (>= k)", integer(1)),
    "index": Option(str, "auto", "'auto', 'ivf', 'pq', 'exact' or 'faiss'", one_of(*GMV_INDEXES)),
    "rerank": Option(
        str,
        "l2",
        "'l2', 'cosine', 'pixel_l2', 'lpips', 'dreamsim', 'none' or a factory 'pkg.mod:fn' "
        "returning fn(generated, train) -> distances",
        object_spec(*GMV_RERANKS),
    ),
    "quality": Option(
        str, None, "None, 'maniqa' or a factory returning fn(images) -> q", object_spec("maniqa")
    ),
    "temperature": Option((int, float), 1.0, "softmax temperature T > 0", number(0, strict=True)),
    "device": Option(str, "cpu", "torch device of encoder and scorers", torch_device),
    "batch_size": Option(int, 256, "encoder batch size (>= 1)", integer(1)),
    "out": Option(str, "gmvaluator-out", "output directory", _out_dir),
}

SURROGATESHAP_SCHEMA = {
    "generator": Option(
        str, REQUIRED, "factory returning generate(label, n, seed) -> samples", _FACTORY
    ),
    "contributors": Option(
        (dict, str),
        REQUIRED,
        "mapping player -> labels, or a factory returning it",
        _contributors_spec,
    ),
    "utility": Option(
        str, REQUIRED, "factory returning a datacredit.surrogateshap.utilities object", _FACTORY
    ),
    "n_per_label": Option(
        int, 100, "generated samples per label in the sample bank (>= 1)", integer(1)
    ),
    "bank_path": Option(str, None, "directory to store the sample bank (resumable)", non_empty),
    "label_weights": Option(
        (dict, list, str),
        REQUIRED,
        "training count per label (paper eq. 4), or 'uniform'",
        _label_weights_spec,
    ),
    "empty_value": Option(
        (int, float), REQUIRED, "utility v(∅) of the empty coalition (untrained model)", number()
    ),
    "higher_is_better": Option(
        bool,
        None,
        "the utility's direction: true if larger = better model, false for a loss such as "
        "FID (needed when the utility declares none)",
    ),
    "budget": Option(int, 512, "coalitions evaluated (>= 4 and >= n_players + 2)", integer(4)),
    "cv": Option(bool, True, "choose the surrogate's hyperparameters by 5-fold CV"),
    "seed": Option(int, 0, "seed of generation and coalition sampling (0 .. 2**32-1)", _SEED),
    "out": Option(str, "surrogateshap-out", "output directory", _out_dir),
}

# Checks across keys, run after each key's own check.
_RULES: dict[str, tuple[Callable[[dict[str, Any]], tuple[str, str] | None], ...]] = {
    "gmvaluator": (_recall_at_least_k,),
    "surrogateshap": (_budget_covers_players, _label_weights_cover_labels),
}


def _load_data(spec: str, key: str) -> Any:
    """Call the data factory ``spec``; what it returns must be data (have a length)."""
    data = load_object(spec, key, call=True)
    if not hasattr(data, "__len__"):
        raise ConfigError(
            f"key '{key}': the factory '{spec}' must return data (an array, a tensor, a "
            f"dataset, a sequence or (X, y)), got {type(data).__name__} {data!r:.100}"
        )
    return data


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def _describe_batch(batch: Any) -> str:
    """``"float64 array (2, 5)"``, ``"dict of input_ids (2, 8), ..."`` — for one-line errors."""
    if isinstance(batch, dict):
        return "dict of " + ", ".join(f"{k} {_describe_batch(v)}" for k, v in batch.items())
    shape = getattr(batch, "shape", None)
    if shape is None:
        return type(batch).__name__
    dtype = str(getattr(batch, "dtype", "")).replace("torch.", "")
    kind = "tensor" if type(batch).__module__.startswith("torch") else "array"
    return f"{dtype} {kind} {tuple(shape)}"


def _probe_dualda(dd: Any, data: Any, key: str) -> tuple[str, int]:
    """Run the model on the first two samples of ``data`` (before any fit): the inputs'
    description and the feature width at ``layer``; a one-line ``ValueError`` naming ``key``
    when the data cannot be read or the model fails on them."""
    from datacredit.models.features import batch_to, eval_mode, iterate_batches, slice_batch

    try:
        if isinstance(data, dict):  # one dict batch of keyword inputs, as attribute() takes
            inputs = slice_batch(data, 0, 2)
        else:
            inputs, _ = next(iterate_batches(data, 2, with_labels=False))
    except StopIteration:
        raise ValueError(f"{key}: the factory returned no samples") from None
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{key}: {_first_line(exc)}") from None
    described = _describe_batch(inputs)
    try:
        with eval_mode(dd.model):
            feats, _ = dd.extractor(batch_to(inputs, dd.device))
    except Exception as exc:  # whatever the model raises: shapes, dtypes, devices
        raise ValueError(
            f"{key}: the model fails on its first samples ({described}): {_first_line(exc)}"
        ) from None
    return described, int(feats.shape[1])


def _check_dualda_data(dd: Any, train: Any, test: Any) -> None:
    """Train and test data both fit the model, with features of one width (before the fit)."""
    train_desc, d_train = _probe_dualda(dd, train, "train_data")
    test_desc, d_test = _probe_dualda(dd, test, "test_data")
    if d_train != d_test:
        raise ValueError(
            f"test_data: its features at layer {dd.extractor.layer!r} have {d_test} dimensions, "
            f"the training data's {d_train} (test {test_desc}, train {train_desc})"
        )


_PIXEL_RERANKS = ("pixel_l2", "lpips", "dreamsim")


def _check_gmvaluator_data(gmv: Any, train: Any, generated: Any, rerank: Any) -> None:
    """Encode the first two training and generated samples (before the fit): the encoder
    takes both and gives embeddings of one width; pixel-space re-ranks need one image shape."""
    from datacredit.models._data import data_len, take

    widths = {}
    for key, data in (("train_data", train), ("generated", generated)):
        n = data_len(data, key)
        if n == 0:
            raise ValueError(f"{key}: the factory returned no samples")
        first = take(data, np.arange(min(2, n)))
        try:
            widths[key] = gmv.encoder.encode(first).shape[1]
        except Exception as exc:  # whatever the encoder raises: shapes, dtypes, channels
            raise ValueError(
                f"{key}: the encoder {gmv.encoder!r} fails on its first samples "
                f"({_describe_batch(first)}): {_first_line(exc)}"
            ) from None
        widths[key + " shape"] = tuple(getattr(first, "shape", ())[1:])
    if widths["train_data"] != widths["generated"]:
        raise ValueError(
            f"generated: its embeddings have {widths['generated']} dimensions, the training "
            f"samples' {widths['train_data']} (sample shapes {widths['generated shape']} and "
            f"{widths['train_data shape']})"
        )
    if (
        rerank in _PIXEL_RERANKS
        and widths["train_data shape"]
        and widths["generated shape"] != widths["train_data shape"]
    ):
        raise ValueError(
            f"generated: rerank {rerank!r} compares images, and the generated samples have "
            f"shape {widths['generated shape']}, the training samples "
            f"{widths['train_data shape']}"
        )


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=2, default=to_jsonable))


def _load_config(path: str, schema: dict[str, Option], method: str) -> dict[str, Any]:
    cfg = validate(read_config(path), schema, str(path), _RULES.get(method, ()))
    config_dir_on_path(path)  # factories in a module next to the config import as named
    return cfg


# ----------------------------------------------------------------------------- runners
def run_dualda(cfg: dict[str, Any]) -> Path:
    """DualDA from a validated config; writes results.json and attributions.npz."""
    from datacredit import DualDA

    model = load_object(cfg["model"], "model", call=True)
    train = _load_data(cfg["train_data"], "train_data")
    test = _load_data(cfg["test_data"], "test_data")
    if isinstance(test, (tuple, list)) and len(test) == 2:
        test = test[0]
    try:
        dd = DualDA(
            model,
            train,
            layer=cfg["layer"],
            C=float(cfg["C"]),
            device=cfg["device"],
            batch_size=cfg["batch_size"],
            cache_dir=cfg["cache_dir"],
            seed=cfg["seed"],
            use_predictions=cfg["use_predictions"],
        )
    except (TypeError, ValueError) as exc:
        # Every argument comes from the config and no data was read yet: the model factory
        # returned no torch module, or `layer` names none of its submodules.
        raise ConfigError(str(exc)) from exc
    _check_dualda_data(dd, train, test)  # one-line errors before the fit, not after it
    dd.fit()
    if cfg["top_k"] > dd.n_train:
        # Valid in the file, wrong only for the data loaded (N): exit 1, as GMValuator's k > N.
        raise ValueError(
            f"top_k: must be an integer in [1, N = {dd.n_train}] (the number of training "
            f"samples), got int {cfg['top_k']}"
        )
    vals, idx = dd.attribute(test, top_k=cfg["top_k"])
    si = np.asarray(dd.self_influence())
    out = Path(cfg["out"])
    out.mkdir(parents=True, exist_ok=True)
    atomic_save_npz(
        out / "attributions.npz", dict(top_values=vals, top_indices=idx, self_influence=si)
    )
    _write_json(
        out / "results.json",
        {
            "method": "dualda",
            "C": cfg["C"],
            "n_support": int(len(dd.support)),
            "top_k": cfg["top_k"],
            "top_indices": idx,
            "top_values": vals,
            # high self-influence = suspicious (likely mislabeled or atypical): check first
            "self_influence_direction": "higher = more suspicious",
            "most_self_influential": np.argsort(-si, kind="stable")[:20],
        },
    )
    return out


def run_gmvaluator(cfg: dict[str, Any]) -> Path:
    """GMValuator from a validated config; writes results.json and values.npz."""
    from datacredit import GMValuator

    enc = cfg["encoder"]
    encoder = (
        load_object(enc, "encoder", call=True)
        if ":" in enc and not enc.startswith("open_clip")
        else enc
    )
    quality = (
        load_object(cfg["quality"], "quality", call=True)
        if cfg["quality"] and ":" in cfg["quality"]
        else cfg["quality"]
    )
    rerank = cfg["rerank"]
    if rerank == "none":
        rerank = None
    elif ":" in rerank:
        rerank = load_object(rerank, "rerank", call=True)
    if cfg["group_agg"] not in ("sum", "mean", "max"):
        raise ConfigError(
            f"key 'group_agg' must be 'sum', 'mean' or 'max', got {cfg['group_agg']!r}"
        )
    gmv = GMValuator(
        encoder=encoder,
        k=cfg["k"],
        recall=cfg["recall"],
        index=cfg["index"],
        rerank=rerank,
        quality=quality,
        temperature=float(cfg["temperature"]),
        device=cfg["device"],
        batch_size=cfg["batch_size"],
        progress=True,
    )
    train = _load_data(cfg["train_data"], "train_data")
    generated = _load_data(cfg["generated"], "generated")
    _check_gmvaluator_data(gmv, train, generated, rerank)  # before the fit, not after it
    gmv.fit(train)
    q = (
        load_object(cfg["quality_scores"], "quality_scores", call=True)
        if cfg["quality_scores"]
        else None
    )
    val = gmv.value(generated, quality_scores=q)
    out = Path(cfg["out"])
    out.mkdir(parents=True, exist_ok=True)
    val.save(out / "valuation.npz")
    result: dict[str, Any] = {
        "method": "gmvaluator",
        "n_train": len(val.values),
        "total": float(val.values.sum()),
    }
    if cfg["groups"]:
        by_group = val.group_values(
            load_object(cfg["groups"], "groups", call=True), agg=cfg["group_agg"]
        )
        result["group_agg"] = cfg["group_agg"]
        result["values_by_group"] = {str(k): v for k, v in by_group.items()}
    result["direction"] = "higher value = contributed more to the generated samples"
    result["top_training_samples"] = val.ranking()[:20]
    _write_json(out / "results.json", result)
    return out


def run_surrogateshap(cfg: dict[str, Any]) -> Path:
    """SurrogateSHAP from a validated config; writes results.json and shapley.json/npz."""
    from datacredit import SurrogateSHAP
    from datacredit.direction import resolve_direction
    from datacredit.shapley import ProgressGame
    from datacredit.surrogateshap import ProxyGame, SampleBank

    generator = load_object(cfg["generator"], "generator", call=True)
    if not callable(generator):
        raise ConfigError(
            "key 'generator': the factory must return a callable generate(label, n, seed)"
        )
    contributors = cfg["contributors"]
    if isinstance(contributors, str):
        contributors = load_object(contributors, "contributors", call=True)
        if not isinstance(contributors, dict) or _contributors_spec(contributors) is not None:
            raise ConfigError(
                f"contributors: the factory must return {_CONTRIBUTORS}, "
                f"got {type(contributors).__name__} {contributors!r:.200}"
            )
        if cfg["budget"] < len(contributors) + 2:
            # Wrong only for the players the factory returned: exit 1, as label_weights
            # that miss one of their labels (checked by ProxyGame).
            raise ValueError(
                f"budget: must be an integer >= n_players + 2 = {len(contributors) + 2} "
                f"({len(contributors)} players from the contributors factory), "
                f"got {cfg['budget']}"
            )
    utility = load_object(cfg["utility"], "utility", call=True)
    if not (
        callable(getattr(utility, "prepare", None)) and callable(getattr(utility, "evaluate", None))
    ):
        raise ConfigError(
            f"key 'utility': the factory '{cfg['utility']}' must return a datacredit.surrogateshap.utilities "
            f"object (with prepare(bank) and evaluate(weights)), got {type(utility).__name__}"
        )
    try:  # before the bank is generated: ranking the contributors needs the direction
        resolve_direction(cfg["higher_is_better"], utility, f"the utility '{cfg['utility']}'")
    except ValueError as exc:
        raise ConfigError(f"higher_is_better: {exc}") from exc
    labels = _contributor_labels(contributors)
    bank = SampleBank.generate(
        generator, labels, cfg["n_per_label"], seed=cfg["seed"], path=cfg["bank_path"]
    )
    game = ProxyGame(
        bank,
        contributors,
        utility,
        label_weights=cfg["label_weights"],
        empty_value=cfg["empty_value"],
        higher_is_better=cfg["higher_is_better"],
    )
    n = game.n_players
    counted = ProgressGame(
        game,
        total=min(cfg["budget"], 2**n) if n < 62 else cfg["budget"],
        desc="SurrogateSHAP: utilities of the coalitions",
    )
    # ~50 game calls, so that the bar moves (the utilities do not depend on the batching)
    batch = max(1, cfg["budget"] // 50)
    try:
        sv = SurrogateSHAP(
            budget=cfg["budget"], cv=cfg["cv"], seed=cfg["seed"], batch_size=batch
        ).explain(counted)
    finally:
        counted.close()
    out = Path(cfg["out"])
    out.mkdir(parents=True, exist_ok=True)
    sv.save(out / "shapley.json")
    _write_json(
        out / "results.json",
        # values in the utility's units; improvement and ranking (most helpful first)
        # oriented by higher_is_better, as ShapleyValues.to_frame and shapley.json
        {"method": "surrogateshap", **sv.summary()},
    )
    return out


# ----------------------------------------------------------------------------- parser
def _method_parser(sub, name: str, schema: dict[str, Option], runner: Callable) -> None:
    p = sub.add_parser(
        name,
        help=f"run {name} from a config file",
        description=f"Run {name} on your own model/data described in a YAML or TOML config.",
        epilog="config keys:\n" + describe(schema),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", required=True, help="YAML (.yaml/.yml) or TOML (.toml) file")
    p.set_defaults(handler=lambda a: runner(_load_config(a.config, schema, name)))


def _run_demo(args: argparse.Namespace) -> Path:
    from datacredit.demo.pipeline import DemoSettings, run_demo

    settings = DemoSettings.fast() if args.fast else DemoSettings()
    settings.retrain_diffusion = args.retrain
    settings.seed = args.seed
    t0 = time.perf_counter()
    results = run_demo(args.out, settings)
    _print_summary(results, time.perf_counter() - t0, Path(args.out))
    return Path(args.out)


def _print_summary(results: dict[str, Any], seconds: float, out: Path) -> None:
    ss, gm, dd = results["surrogateshap"], results["gmvaluator"], results["dualda"]
    best = ss["players"].index(ss["ranking"][0])  # most helpful first, by the direction
    rows = [
        ("CNN test accuracy", f"{results['models']['cnn_test_accuracy']:.3f}"),
        (
            "SurrogateSHAP most helpful contributor (its share of the FID drop)",
            f"{ss['players'][best]} ({ss['improvement'][best]:+.3f})",
        ),
        ("SurrogateSHAP efficiency gap", f"{ss['efficiency_gap']:.2e}"),
        ("GMValuator identical-class ratio", f"{gm['identical_class_ratio']:.3f}"),
        ("DualDA identical class (top-5)", f"{dd['identical_class']:.3f}"),
        ("DualDA mislabel-detection AUC", f"{dd['mislabel_auc']:.3f}"),
    ]
    rows += [(f"time: {k}", f"{v:.1f} s") for k, v in results["timings"].items()]
    width = max(len(k) for k, _ in rows)
    print("\n" + "=" * (width + 24))
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    print("=" * (width + 24))
    print(f"report: {out / 'report.html'}\nresults: {out / 'results.json'}  ({seconds:.0f} s)")


def _seed_arg(text: str) -> int:
    """``--seed``: an integer in [0, 2**32 - 1] (argparse exits 2 with this message)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    allowed = _SEED(value)
    if allowed is not None:
        raise argparse.ArgumentTypeError(f"must be {allowed}, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``datacredit`` argument parser: ``--version``, demo, the three methods, serve, shard."""
    parser = argparse.ArgumentParser(
        prog="datacredit",
        description="Which training data, and which data contributors, a model's behaviour comes from.",
    )
    from datacredit import __version__

    parser.add_argument("--version", action="version", version=f"datacredit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="run the end-to-end demo on scikit-learn's digits",
        description="SurrogateSHAP, GMValuator and DualDA/XDA on load_digits (10 digit classes = "
        "10 contributors); writes DIR/report.html and DIR/results.json.",
    )
    demo.add_argument("--out", default="demo-out", help="output directory (default: demo-out)")
    demo.add_argument(
        "--fast", action="store_true", help="small sizes (< 2 minutes), as in the tests"
    )
    demo.add_argument(
        "--retrain",
        action="store_true",
        help="train the diffusion model instead of loading the shipped weights",
    )
    demo.add_argument(
        "--seed", type=_seed_arg, default=0, help="seed of every random choice (default 0)"
    )
    demo.set_defaults(handler=_run_demo)
    _method_parser(sub, "dualda", DUALDA_SCHEMA, run_dualda)
    _method_parser(sub, "gmvaluator", GMVALUATOR_SCHEMA, run_gmvaluator)
    _method_parser(sub, "surrogateshap", SURROGATESHAP_SCHEMA, run_surrogateshap)
    serve = sub.add_parser(
        "serve",
        help="answer POST /explain from a saved DualDA explainer (loopback HTTP)",
        description="Serve top-k training samples (indices, scores) for posted penultimate "
        "features from DualDA.save_explainer's file; protocol in datacredit/serve.py.",
    )
    serve.add_argument("--explainer", required=True, help="file from DualDA.save_explainer")
    serve.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    serve.set_defaults(handler=_run_serve)
    from datacredit.distributed.shard_cli import add_shard_parser

    add_shard_parser(sub)  # datacredit shard run / status (exits by itself)
    return parser


def _run_serve(args: argparse.Namespace) -> None:
    from datacredit.serve import serve

    try:
        serve(args.explainer, args.host, args.port)
    except (OSError, ValueError) as exc:  # unreadable or invalid explainer, port in use
        print(f"datacredit serve: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    raise SystemExit(0)  # a server has no results file to report


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``datacredit`` console script."""
    args = build_parser().parse_args(argv)
    try:
        out = args.handler(args)
    except ConfigError as exc:
        print(f"datacredit {args.command}: config error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        # The library's own checks of the data the factories returned (k > N, labels out
        # of range...): their messages name the argument; a traceback adds nothing.
        print(f"datacredit {args.command}: error: {exc}", file=sys.stderr)
        return 1
    if args.command != "demo":
        print(f"wrote {out}/results.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
