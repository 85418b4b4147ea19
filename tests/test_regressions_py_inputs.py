"""Regressions of issue 11 on the Python side: CLI config values (r11), damaged DualDA
caches (r15), DualDA from several threads, and labels / scores / indices that were
silently truncated, wrapped or NaN in DualDA and the metrics.  Each test failed before
its fix."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import textwrap
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest

import datacredit
from datacredit import metrics
from datacredit.cli import (
    _RULES,
    DUALDA_SCHEMA,
    GMV_INDEXES,
    GMVALUATOR_SCHEMA,
    SURROGATESHAP_SCHEMA,
    main,
)
from datacredit.config import REQUIRED, ConfigError, validate

REPO = Path(__file__).resolve().parents[1]

# ----------------------------------------------------------------------------- r11: CLI
GMV_BASE = {"encoder": "pixels", "train_data": "a:b", "generated": "a:b"}
DD_BASE = {"model": "a:b", "train_data": "a:b", "test_data": "a:b", "layer": "fc"}
SS_BASE = {
    "generator": "a:b",
    "contributors": {"a": [1], "b": [2]},
    "utility": "a:b",
    "label_weights": "uniform",
    "empty_value": 0.0,  # required: SurrogateSHAP evaluates v(∅)
}

# (method, key, a value that must be refused); every key of every schema appears.
BAD_VALUES = [
    ("dualda", "model", "no_colon"),
    ("dualda", "train_data", 3),
    ("dualda", "test_data", ":fn"),
    ("dualda", "layer", ""),
    ("dualda", "C", 0),
    ("dualda", "C", True),
    ("dualda", "C", float("inf")),
    ("dualda", "top_k", 0),
    ("dualda", "top_k", True),
    ("dualda", "device", "gpu7"),
    ("dualda", "batch_size", 2.0),
    ("dualda", "cache_dir", " "),
    ("dualda", "use_predictions", 1),
    ("dualda", "seed", -1),
    ("dualda", "seed", 2**32),
    ("dualda", "out", ""),
    ("gmvaluator", "encoder", "clip"),
    ("gmvaluator", "train_data", "x"),
    ("gmvaluator", "generated", None),
    ("gmvaluator", "groups", "x"),
    ("gmvaluator", "quality_scores", 1.5),
    ("gmvaluator", "k", 0),
    ("gmvaluator", "k", False),
    ("gmvaluator", "recall", -3),
    ("gmvaluator", "index", "hnsw"),
    ("gmvaluator", "rerank", "l1"),
    ("gmvaluator", "group_agg", "median"),
    ("gmvaluator", "quality", "nima"),
    ("gmvaluator", "temperature", True),
    ("gmvaluator", "temperature", 0.0),
    ("gmvaluator", "temperature", float("nan")),
    ("gmvaluator", "device", "tpu:x"),
    ("gmvaluator", "batch_size", 0),
    ("gmvaluator", "out", 5),
    ("surrogateshap", "generator", "gen"),
    ("surrogateshap", "contributors", {}),
    ("surrogateshap", "contributors", {"a": [0.5]}),
    ("surrogateshap", "contributors", {"a": []}),
    ("surrogateshap", "utility", "u"),
    ("surrogateshap", "n_per_label", 0),
    ("surrogateshap", "bank_path", ""),
    ("surrogateshap", "label_weights", [1, -2]),
    ("surrogateshap", "label_weights", {"1": True}),
    ("surrogateshap", "empty_value", float("nan")),
    ("surrogateshap", "empty_value", False),
    ("surrogateshap", "budget", 2),
    ("surrogateshap", "budget", True),
    ("surrogateshap", "cv", "yes"),
    ("surrogateshap", "higher_is_better", 1),
    ("surrogateshap", "higher_is_better", "false"),
    ("surrogateshap", "seed", -5),
    ("surrogateshap", "out", ""),
]
SCHEMAS = {
    "dualda": (DUALDA_SCHEMA, DD_BASE),
    "gmvaluator": (GMVALUATOR_SCHEMA, GMV_BASE),
    "surrogateshap": (SURROGATESHAP_SCHEMA, SS_BASE),
}


def test_every_key_has_a_bad_value_case_and_a_check():
    for method, (schema, _) in SCHEMAS.items():
        tested = {key for m, key, _ in BAD_VALUES if m == method}
        assert tested == set(schema), (method, set(schema) - tested)
        for key, opt in schema.items():
            assert opt.check is not None or opt.type is bool, (method, key)
            if opt.default not in (None, REQUIRED) and opt.check is not None:
                assert opt.check(opt.default) is None, (method, key)  # defaults are allowed


@pytest.mark.parametrize("method,key,value", BAD_VALUES)
def test_bad_config_value_names_the_key(method, key, value):
    schema, base = SCHEMAS[method]
    with pytest.raises(ConfigError, match=rf"^{key}: must be "):
        validate({**base, key: value}, schema, "c.yaml", _RULES.get(method, ()))


def test_good_configs_pass():
    for method, (schema, base) in SCHEMAS.items():
        cfg = validate(dict(base), schema, "c.yaml", _RULES.get(method, ()))
        assert set(cfg) == set(schema)
    cfg = validate({**GMV_BASE, "temperature": 2, "k": 5, "recall": 5}, GMVALUATOR_SCHEMA, "c")
    assert cfg["temperature"] == 2 and cfg["recall"] == 5


def test_cross_key_rules():
    with pytest.raises(ConfigError, match=r"^recall: must be an integer >= k = 10, got int 5"):
        validate({**GMV_BASE, "k": 10, "recall": 5}, GMVALUATOR_SCHEMA, "c", _RULES["gmvaluator"])
    three = {"a": [1], "b": [2], "c": 3}
    with pytest.raises(ConfigError, match=r"^budget: must be an integer >= n_players \+ 2 = 5"):
        validate(
            {**SS_BASE, "contributors": three, "budget": 4},
            SURROGATESHAP_SCHEMA,
            "c",
            _RULES["surrogateshap"],
        )


def test_cli_choices_are_the_methods_own():
    from datacredit.gmvaluator.valuator import INDEXES

    assert GMV_INDEXES == INDEXES


def _gmv_config(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(
        textwrap.dedent(
            f"""
            encoder: pixels
            train_data: clifac:train_data
            generated: clifac:generated
            k: 5
            recall: 20
            index: exact
            out: {tmp_path / "out"}
            """
        )
        + extra
        + "\n"
    )
    return path


def test_r11_yaml_bool_temperature_is_a_config_error(tmp_path):
    # The reproducer as it was run: the console entry point in a child process.
    (tmp_path / "clifac.py").write_text((REPO / "tests" / "_clifac.py").read_text())
    cfg = _gmv_config(tmp_path, "temperature: true")
    env = dict(
        os.environ,
        # the datacredit under test (installed or in-tree), as this process imported it
        PYTHONPATH=os.pathsep.join([str(tmp_path), str(Path(datacredit.__file__).parents[1])]),
        OMP_NUM_THREADS="1",
    )
    p = subprocess.run(
        [sys.executable, "-m", "datacredit.cli", "gmvaluator", "--config", str(cfg)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert p.returncode == 2, p.stderr
    assert "config error: temperature: must be a number, got bool True" in p.stderr
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "out").exists()  # nothing ran


@pytest.mark.parametrize(
    "extra,message",
    [
        ("temperature: true", "config error: temperature: must be a number"),
        ("k: 0", "config error: k: must be an integer >= 1, got int 0"),
        ("index: hnsw", "config error: index: must be one of 'auto', 'ivf'"),
        ("recall: 3", "config error: recall: must be an integer >= k = 5"),
        ("k: null", "config error: k: must be an integer"),
    ],
)
def test_cli_value_errors_exit_2(tmp_path, capsys, extra, message):
    cfg = _gmv_config(tmp_path, extra)
    assert main(["gmvaluator", "--config", str(cfg)]) == 2
    assert message in capsys.readouterr().err


def test_cli_budget_below_players_from_a_factory_exits_1(tmp_path, capsys, monkeypatch):
    # Only the players the factory returned make budget 4 too small: a data error (exit 1),
    # as k > N for GMValuator; the same budget against players written in the file exits 2.
    monkeypatch.syspath_prepend(str(REPO / "tests"))
    cfg = tmp_path / "ss.yaml"
    cfg.write_text(
        "generator: _clifac:generator\ncontributors: _clifac:contributors\n"
        "utility: _clifac:utility\nbudget: 4\nlabel_weights: uniform\nempty_value: 0.0\n"
    )
    assert main(["surrogateshap", "--config", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("datacredit surrogateshap: error: budget: must be an integer >= ")
    assert "n_players + 2 = 5 (3 players" in err and err.count("\n") == 1
    cfg.write_text(cfg.read_text().replace("_clifac:contributors", "{a: [1], b: [2], c: [3]}"))
    assert main(["surrogateshap", "--config", str(cfg)]) == 2
    assert "config error: budget: must be an integer >= n_players + 2 = 5" in (
        capsys.readouterr().err
    )


def test_cli_library_value_error_is_one_line_exit_1(tmp_path, capsys, monkeypatch):
    # k = 400 > N = 300 training samples: known only once the data is loaded.
    monkeypatch.syspath_prepend(str(REPO / "tests"))
    cfg = _gmv_config(tmp_path, "")
    cfg.write_text(
        cfg.read_text()
        .replace("clifac:", "_clifac:")
        .replace("k: 5", "k: 400")
        .replace("recall: 20", "recall: 400")
    )
    assert main(["gmvaluator", "--config", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("datacredit gmvaluator: error: ") and "400" in err


# ----------------------------------------------------------------------------- DualDA
@pytest.fixture(scope="module")
def tiny():
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x = torch.randn(200, 4)
    y = (x[:, 0] > 0).long()
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    yield model.eval(), x, y
    torch.set_num_threads(threads)


def _dualda(model, x, y, cache_dir=None):
    from datacredit import DualDA

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "the SVM solver stopped", RuntimeWarning)
        return DualDA(model, (x, y), layer="2", cache_dir=cache_dir, progress=False).fit()


def _cache_file(d: Path) -> Path:
    (p,) = glob.glob(str(d / "dualda-*.npz"))
    return Path(p)


def _refits_with_warning(model, x, y, d: Path, reference) -> None:
    with pytest.warns(RuntimeWarning, match="DualDA cache .* is damaged"):
        dd = _dualda(model, x, y, d)
    assert not dd.loaded_from_cache
    np.testing.assert_array_equal(dd.attribute(x[:7]), reference.attribute(x[:7]))
    again = _dualda(model, x, y, d)  # the refit rewrote a good cache
    assert again.loaded_from_cache


def test_r15_truncated_cache_refits(tiny, tmp_path):
    model, x, y = tiny
    ref = _dualda(model, x, y, tmp_path)
    p = _cache_file(tmp_path)
    b = p.read_bytes()
    p.write_bytes(b[: len(b) // 2])  # zipfile.BadZipFile before the fix
    _refits_with_warning(model, x, y, tmp_path, ref)


def test_r15_bit_flipped_cache_refits(tiny, tmp_path):
    model, x, y = tiny
    ref = _dualda(model, x, y, tmp_path)
    p = _cache_file(tmp_path)
    with np.load(p) as z:
        feats = z["features"]
    b = bytearray(p.read_bytes())
    at = bytes(b).find(feats.tobytes()) + feats.nbytes // 2
    b[at] ^= 0x10
    p.write_bytes(bytes(b))
    _refits_with_warning(model, x, y, tmp_path, ref)


def _rewrite_cache(p: Path, **changes) -> None:
    from datacredit._io import atomic_save_npz
    from datacredit.dualda.cache import CACHE_ARRAYS, arrays_digest

    with np.load(p) as z:
        arrays = {k: z[k] for k in CACHE_ARRAYS}
        meta = json.loads(str(z["meta"]))
    arrays.update(changes)
    meta["digest"] = arrays_digest(arrays)  # a self-consistent file, but wrong content
    atomic_save_npz(p, {**arrays, "meta": np.array(json.dumps(meta))})


@pytest.mark.parametrize(
    "change",
    ["features_cols", "features_rows", "labels_len", "labels_range", "coef", "dtype", "support"],
)
def test_r15_inconsistent_cache_arrays_refit(tiny, tmp_path, change):
    model, x, y = tiny
    ref = _dualda(model, x, y, tmp_path)
    p = _cache_file(tmp_path)
    with np.load(p) as z:
        f, lab, coef, sup = z["features"], z["train_labels"], z["coef"], z["support"]
    changes = {
        "features_cols": dict(features=np.hstack([f, f[:, :1]])),
        "features_rows": dict(features=f[:-1]),
        "labels_len": dict(train_labels=lab[:-1]),
        "labels_range": dict(train_labels=np.where(np.arange(len(lab)) == 3, 7, lab)),
        "coef": dict(coef=coef * 1.01),
        "dtype": dict(features=f.astype(np.float64)),
        "support": dict(support=sup[::-1].copy()),
    }[change]
    _rewrite_cache(p, **changes)
    _refits_with_warning(model, x, y, tmp_path, ref)


def test_r15_good_cache_still_loads(tiny, tmp_path):
    model, x, y = tiny
    ref = _dualda(model, x, y, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no damage warning
        dd = _dualda(model, x, y, tmp_path)
    assert dd.loaded_from_cache
    np.testing.assert_array_equal(dd.attribute(x[:7]), ref.attribute(x[:7]))
    np.testing.assert_array_equal(dd.self_influence(), ref.self_influence())


def test_attribute_from_4_threads_matches_serial(tiny):
    # Before: the hook list was shared, and 369 of 400 calls failed ("layer '2' ran 2 times").
    model, x, y = tiny
    dd = _dualda(model, x, y)
    batches = [x[i : i + 5] for i in range(0, 100, 5)]
    serial = [dd.attribute(b, top_k=3) for b in batches]
    results: dict[tuple[int, int], tuple] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def work(t: int) -> None:
        start.wait()
        try:
            for r in range(5):
                for i, b in enumerate(batches):
                    results[(t, r * len(batches) + i)] = dd.attribute(b, top_k=3)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors[:3]
    assert len(results) == 4 * 5 * len(batches)
    for (_t, j), (vals, idx) in results.items():
        np.testing.assert_array_equal(vals, serial[j % len(batches)][0])
        np.testing.assert_array_equal(idx, serial[j % len(batches)][1])
    assert not model.training  # the mode every call restored


def test_dualda_float_labels_refused(tiny):
    model, x, y = tiny
    half = y.float()
    half[0] = 0.5  # became class 0 before
    with pytest.raises(TypeError, match="labels must hold integers, got 0.5"):
        _dualda(model, x, half)
    # whole-number floats are class indices, and give the same fit as the ints
    a, b = _dualda(model, x, y.double()), _dualda(model, x, y)
    np.testing.assert_array_equal(a.attribute(x[:5]), b.attribute(x[:5]))


def test_dualda_float_targets_refused(tiny):
    model, x, y = tiny
    dd = _dualda(model, x, y)
    with pytest.raises(TypeError, match="targets must hold integers, got 1.7"):
        dd.attribute(x[:3], targets=1.7)  # was class 1
    with pytest.raises(TypeError, match="targets must hold integers"):
        dd.attribute(x[:3], targets=np.array([0, 1.5, 1]))
    with pytest.raises(TypeError, match="bool"):
        dd.attribute(x[:3], targets=True)
    np.testing.assert_array_equal(
        dd.attribute(x[:3], targets=np.array([0.0, 1.0, 1.0])),
        dd.attribute(x[:3], targets=np.array([0, 1, 1])),
    )


# ----------------------------------------------------------------------------- metrics
def test_matthews_corrcoef_labels():
    from sklearn.metrics import matthews_corrcoef as sk_mcc

    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 4, 50), rng.integers(0, 4, 50)
    assert metrics.matthews_corrcoef(a, b) == pytest.approx(sk_mcc(a, b), abs=1e-12)
    assert metrics.matthews_corrcoef(a.astype(float), b) == pytest.approx(sk_mcc(a, b), abs=1e-12)
    with pytest.raises(TypeError, match="got 0.5"):
        metrics.matthews_corrcoef([0.5, 1.0, 0.0], [0, 1, 0])  # 0.5 was class 0: MCC 1
    with pytest.raises(ValueError, match=">= 0"):
        metrics.matthews_corrcoef([-1, 1, 0], [2, 1, 0])  # -1 wrapped to the last class


def _lds_reference(tau, mask, out):
    from scipy.stats import spearmanr

    pred = tau @ mask.T.astype(float)
    rhos = [spearmanr(pred[i], out[:, i]).statistic for i in range(tau.shape[0])]
    return float(np.nanmean(rhos))


def test_lds_refuses_nan_and_wrapping_indices():
    rng = np.random.default_rng(1)
    tau = rng.standard_normal((4, 12))
    subsets = [rng.choice(12, 6, replace=False) for _ in range(8)]
    mask = np.zeros((8, 12), bool)
    for j, s in enumerate(subsets):
        mask[j, s] = True
    out = rng.standard_normal((8, 4))
    want = _lds_reference(tau, mask, out)
    assert metrics.lds(tau, subsets, out) == pytest.approx(want, abs=1e-12)
    assert metrics.lds(tau, mask.astype(np.int8), out) == pytest.approx(want, abs=1e-12)
    bad = tau.copy()
    bad[1, 3] = np.nan
    with pytest.raises(ValueError, match="scores contain NaN"):
        metrics.lds(bad, subsets, out)
    bad_out = out.copy()
    bad_out[2, 0] = np.nan
    with pytest.raises(ValueError, match="subset_outputs contain NaN"):
        metrics.lds(tau, subsets, bad_out)
    with pytest.raises(ValueError, match=r"subsets\[2\] holds index -1"):
        metrics.lds(tau, subsets[:2] + [np.array([0, -1])] + subsets[3:], out)
    with pytest.raises(ValueError, match=r"subsets\[0\] holds index 12"):
        metrics.lds(tau, [np.array([12])] + subsets[1:], out)
    with pytest.raises(TypeError, match=r"subsets\[0\] must hold integers"):
        metrics.lds(tau, [np.array([1.5, 2.0])] + subsets[1:], out)
    with pytest.raises(TypeError, match="subsets must be a boolean mask"):
        metrics.lds(tau, mask * 0.5, out)


def test_attribution_metrics_refuse_truncation_and_wrapping():
    labels = np.array([0, 1, 0, 1, 2])
    pred = np.array([0, 1])
    idx = np.array([[0, 2], [1, 3]])
    vals = np.ones((2, 2))
    assert metrics.identical_class((vals, idx), labels, pred, k=2) == 1.0
    with pytest.raises(ValueError, match="indices must be >= 0, got -1"):
        metrics.identical_class((vals, np.array([[0, -1], [1, 3]])), labels, pred, k=2)
    with pytest.raises(TypeError, match="indices must hold integers, got 2.5"):
        metrics.identical_class((vals, np.array([[0.0, 2.5], [1.0, 3.0]])), labels, pred, k=2)
    with pytest.raises(TypeError, match="train_labels must hold integers, got 0.5"):
        metrics.identical_class((vals, idx), labels * 0.5, pred, k=2)
    with pytest.raises(TypeError, match="test_predictions must hold integers"):
        metrics.identical_class((vals, idx), labels, np.array([0.2, 1.0]), k=2)
    si = np.array([3.0, 2.0, 1.0, 0.5])
    assert metrics.mislabel_detection_auc(si, np.array([1, 0, 0, 0])) == 1.0
    with pytest.raises(TypeError, match="is_mislabeled must be a boolean mask"):
        metrics.mislabel_detection_auc(si, np.array([0.5, 0, 0, 0]))
    with pytest.raises(TypeError, match="is_shortcut must be a boolean mask"):
        metrics.shortcut_detection_auprc(np.ones((1, 4)), np.array([2, 0, 0, 0]))
    with pytest.raises(ValueError, match="attributions contain NaN"):
        metrics.coreset_ranking(np.array([[1.0, np.nan]]))
    with pytest.raises(TypeError, match="coalitions must be a boolean mask"):
        metrics.lds_groups(np.ones(2), np.full((3, 2), 0.5), np.arange(3.0))


@pytest.mark.parametrize("seed", ["-1", "4294967296", "x"])
def test_demo_seed_out_of_range_exits_2(capsys, seed):
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--seed", seed])
    assert exc.value.code == 2
    assert "--seed: must be" in capsys.readouterr().err


def test_yaml_exponent_without_dot_gets_a_hint(tmp_path):
    from datacredit.config import read_config

    path = tmp_path / "c.yaml"
    path.write_text("encoder: pixels\ntrain_data: a:b\ngenerated: a:b\ntemperature: 1e-3\n")
    with pytest.raises(
        ConfigError, match=r"temperature: must be a number, got str '1e-3'.*1\.0e-3"
    ):
        validate(read_config(path), GMVALUATOR_SCHEMA, str(path))


def test_cache_with_forged_array_header_refits_before_allocating(tiny, tmp_path, monkeypatch):
    """A cache member whose .npy header claims far more than the member holds (a forged or
    corrupted shape) is refused from the headers alone: np.load never allocates it."""
    model, x, y = tiny
    ref = _dualda(model, x, y, tmp_path)
    p = _cache_file(tmp_path)
    b = bytearray(p.read_bytes())
    with np.load(p) as z:
        shape = z["features"].shape
    old = f"'shape': ({shape[0]}, {shape[1]}), }}".encode()
    at = bytes(b).find(old)
    assert at > 0
    new = f"'shape': ({shape[0] * 100}, {shape[1]})}}".encode()  # 100x the rows it holds
    assert len(new) == len(old)  # the same header length, so the zip stays valid
    b[at : at + len(old)] = new
    p.write_bytes(bytes(b))
    allocated = []
    real = np.lib.format.read_array

    def spy(*a, **k):
        allocated.append(1)
        return real(*a, **k)

    monkeypatch.setattr(np.lib.format, "read_array", spy)
    with pytest.warns(RuntimeWarning, match=r"damaged.*claims float32"):
        dd = _dualda(model, x, y, tmp_path)
    assert not dd.loaded_from_cache and not allocated
    monkeypatch.undo()
    np.testing.assert_array_equal(dd.attribute(x[:7]), ref.attribute(x[:7]))
