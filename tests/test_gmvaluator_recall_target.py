"""GMValuator's recall target (issue 24): approximate indexes calibrate their search
parameters on the generated batch against exact search, so recall@k against brute force
reaches ``target_recall`` by construction; pinned parameters that miss it warn; "auto"
falls back to exact search where the inverted file cannot beat it."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from datacredit.gmvaluator import GMValuator, calibration, valuator
from datacredit.gmvaluator.calibration import calibration_rows


def _gaussian(n=12000, n_gen=300, d=32, seed=0):
    """Unstructured embeddings: an isotropic Gaussian, the inverted file's worst case."""
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((n, d)).astype(np.float32),
        rng.standard_normal((n_gen, d)).astype(np.float32),
    )


def _clustered(n=12000, n_gen=300, d=32, centres=150, seed=0, gen_seed=None):
    """Clustered training and generated samples; ``gen_seed`` draws another generated
    batch around the same centres."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, d)) * 6
    train = (c[rng.integers(0, centres, n)] + rng.standard_normal((n, d))).astype(np.float32)
    if gen_seed is not None:
        rng = np.random.default_rng(gen_seed)
    gen = (c[rng.integers(0, centres, n_gen)] + rng.standard_normal((n_gen, d))).astype(np.float32)
    return train, gen


def _brute_force_recall(train, gen, top, k):
    """recall@k of ``top`` against the float64 brute-force top-k."""
    t, g = train.astype(np.float64), gen.astype(np.float64)
    d2 = (g * g).sum(1)[:, None] + (t * t).sum(1)[None] - 2 * g @ t.T
    ref = np.argsort(d2, axis=1, kind="stable")[:, :k]
    return float(np.mean([len(np.intersect1d(a, b)) / k for a, b in zip(ref, top)]))


def test_unstructured_data_reaches_the_target_where_the_old_default_did_not():
    train, gen = _gaussian()
    k = 10
    kw = dict(k=k, index="ivf", pq_nlist=100, diagnostics_sample=100)
    # Calibration off: the former default nprobe = nlist // 16 misses most neighbours.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        old = GMValuator(target_recall=None, **kw).fit(train).value(gen)
    assert old.diagnostics["pq_nprobe"] == 6
    assert _brute_force_recall(train, gen, old.topk_indices, k) < 0.6
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # meeting the target is silent
        res = GMValuator(**kw).fit(train).value(gen)
    recall = _brute_force_recall(train, gen, res.topk_indices, k)
    assert recall >= 0.95, recall
    diag = res.diagnostics
    assert diag["target_recall"] == 0.95 and diag["calibration_queries"] == 64
    assert diag["calibrated_nprobe"] == diag["pq_nprobe"] > 6
    assert diag["calibration_recall_at_k"] >= 0.95
    # the reported recall is measured on held-out generated samples, and is right
    assert diag["diagnostics_rows"] == 100
    assert diag["final_recall_at_k"] >= 0.9


def test_auto_falls_back_to_exact_where_the_inverted_file_cannot_win(monkeypatch):
    """ "auto" searches exactly where reaching the target needs most of the rows scanned,
    says so in diagnostics, and keeps the inverted file wherever it is cheaper."""
    monkeypatch.setattr(valuator, "AUTO_IVF_MIN_TRAIN", 1000)
    k = 10
    # Ten lists of an isotropic Gaussian: a query's neighbours spread over the lists, so
    # recall@10 >= 0.95 needs 8 of the 10 lists (about 92 % of the rows): exact search is
    # cheaper at any cost per scanned row above about 1.09 (IVF_ROW_COST is 1.25).
    train, gen = _gaussian(d=64)
    gmv = GMValuator(k=k, pq_nlist=10).fit(train)
    assert gmv.index_ == "ivf"
    res = gmv.value(gen)
    diag = res.diagnostics
    assert diag["index"] == "exact"
    assert "no cheaper than exact search" in diag["auto_fallback"]
    assert f"nprobe = {diag['calibrated_nprobe']} of 10 lists" in diag["auto_fallback"]
    assert diag["calibration_queries"] == 64 and diag["calibration_recall_at_k"] >= 0.95
    scanned = diag["calibration_scanned_fraction"] + 10 / len(train)
    assert calibration.IVF_ROW_COST * scanned >= 1.0 and scanned > 0.85
    assert _brute_force_recall(train, gen, res.topk_indices, k) == 1.0
    assert diag["final_recall_at_k"] == 1.0 and diag["diagnostics_rows"] == 0
    again = gmv.value(gen).diagnostics  # the next call reuses the fallback decision
    assert again["calibration_reused"] and again["index"] == "exact"
    assert again["auto_fallback"] == diag["auto_fallback"]

    # The same Gaussian at d = 32 with 100 lists needs about 64 % of the rows: the
    # inverted file is kept (it was not with the former IVF_ROW_COST = 2.0).
    train, gen = _gaussian()
    res = GMValuator(k=k, pq_nlist=100).fit(train).value(gen)
    diag = res.diagnostics
    assert diag["index"] == "ivf" and "auto_fallback" not in diag
    assert calibration.IVF_ROW_COST * diag["calibration_scanned_fraction"] < 1.0
    assert _brute_force_recall(train, gen, res.topk_indices, k) >= 0.95

    train, gen = _clustered()
    res = GMValuator(k=k, pq_nlist=100).fit(train).value(gen)
    assert res.diagnostics["index"] == "ivf" and "auto_fallback" not in res.diagnostics
    assert res.diagnostics["calibration_scanned_fraction"] < 0.3
    assert _brute_force_recall(train, gen, res.topk_indices, k) >= 0.95


def test_pinned_nprobe_that_misses_warns_with_the_figures():
    train, gen = _gaussian()
    gmv = GMValuator(k=10, index="ivf", pq_nlist=100, pq_nprobe=1).fit(train)
    with pytest.warns(UserWarning, match=r"pq_nprobe = 1: measured recall@10 = 0\.\d+ on 64") as w:
        res = gmv.value(gen)
    needed = int(str(w[0].message).split("; pq_nprobe = ")[1].split()[0])
    assert needed > 1
    assert res.diagnostics["pq_nprobe"] == 1  # pinned: kept, and the figure is reported
    measured = res.diagnostics["calibration_recall_at_k"]
    # The calibration rows are answered by their exact top k (recall 1, brute force); the
    # other rows by the pinned inverted file, whose recall the calibration measured.
    cal = calibration_rows(len(gen))
    rest = np.setdiff1d(np.arange(len(gen)), cal)
    assert _brute_force_recall(train, gen[cal], res.topk_indices[cal], 10) == 1.0
    rest_recall = _brute_force_recall(train, gen[rest], res.topk_indices[rest], 10)
    assert abs(measured - rest_recall) < 0.1
    # the suggested nprobe does reach the target
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fixed = GMValuator(k=10, index="ivf", pq_nlist=100, pq_nprobe=needed).fit(train)
        res = fixed.value(gen)
    assert _brute_force_recall(train, gen, res.topk_indices, 10) >= 0.93


def test_pq_calibrates_candidates_and_warns_when_pinned():
    train, gen = _clustered(n=6000, n_gen=150, d=32, centres=60)
    k = 10
    res = GMValuator(k=k, index="pq", pq_m=4).fit(train).value(gen)
    assert _brute_force_recall(train, gen, res.topk_indices, k) >= 0.95
    assert res.diagnostics["calibrated_recall"] == res.diagnostics["recall"] >= 200
    with pytest.warns(UserWarning, match=r"recall = 10: measured recall@10"):
        GMValuator(k=k, recall=10, index="pq", pq_m=4).fit(train).value(gen)


def test_store_path_calibrates_and_warns(tmp_path):
    train, gen = _gaussian(n=6000, n_gen=200, d=16)
    k = 10
    gmv = GMValuator(k=k, index="ivf", pq_nlist=60)
    res = gmv.fit(train, store=tmp_path / "s", shard_rows=2000).value(gen)
    assert _brute_force_recall(train, gen, res.topk_indices, k) >= 0.95
    assert res.diagnostics["calibration_queries"] == 64
    assert res.diagnostics["diagnostics_rows"] == 100
    assert 1 < res.diagnostics["calibrated_nprobe"] < 60
    pinned = GMValuator(k=k, index="ivf", pq_nlist=60, pq_nprobe=1)
    pinned.fit(train, store=tmp_path / "s", shard_rows=2000)
    with pytest.warns(UserWarning, match=r"pq_nprobe = 1: measured recall@10"):
        pinned.value(gen)


@pytest.mark.parametrize("bad", [0, -0.5, 1.5, float("nan"), "0.9", True])
def test_target_recall_outside_the_unit_interval_raises(bad):
    with pytest.raises(ValueError, match="target_recall"):
        GMValuator(target_recall=bad)


def test_bad_calibration_input_raises():
    train, gen = _gaussian(n=30, n_gen=5, d=4)
    with pytest.raises(ValueError, match="k = 50 exceeds the number of training samples 30"):
        GMValuator(k=50).fit(train)
    with pytest.raises(ValueError, match="calibration_queries"):
        GMValuator(calibration_queries=0)
    bad = train.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="training embeddings"):
        GMValuator(k=5).fit(bad)
    gmv = GMValuator(k=5).fit(train)
    gen = gen.copy()
    gen[0, 0] = np.nan
    with pytest.raises(ValueError, match="generated embeddings"):
        gmv.value(gen)
    assert np.isnan(gen[0, 0])  # nothing the user passes is modified


@pytest.mark.parametrize("out_of_core", [False, True])
def test_calibration_once_per_fit_reused_then_redone_when_a_batch_differs(tmp_path, out_of_core):
    """The first value call of a fit calibrates on 64 of its samples; later batches of the
    same distribution reuse the setting (and still reach the target against brute force);
    a batch from another distribution fails its held-out check, warns with the measured
    recall, and the next call calibrates again; a changed setting recalibrates too.  The
    same in core and out of core (fit(store=...))."""
    train, gen = _clustered()

    def fitted(name):
        g = GMValuator(k=10, index="ivf", pq_nlist=100)
        if out_of_core:
            return g.fit(train, store=tmp_path / name, shard_rows=2000)
        return g.fit(train)

    gmv = fitted("a")
    first = gmv.value(gen).diagnostics
    assert first["calibration_reused"] is False and first["calibration_queries"] == 64
    nprobe = first["calibrated_nprobe"]

    _, gen2 = _clustered(gen_seed=1)  # another batch of the same generator
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = gmv.value(gen2)
    diag = res.diagnostics
    assert diag["calibration_reused"] is True and diag["pq_nprobe"] == nprobe
    assert diag["calibration_queries"] == 64  # what the reused calibration measured
    assert diag["diagnostics_rows"] == 100 and diag["held_out_below_target"] is False
    assert _brute_force_recall(train, gen2, res.topk_indices, 10) >= 0.95

    # Unstructured queries between the clusters need many more lists.
    other = (np.random.default_rng(7).standard_normal((300, 32)) * 6).astype(np.float32)
    with pytest.warns(UserWarning, match=r"recall@10 = 0\.\d+ on 100 held-out") as w:
        res = gmv.value(other)
    measured = float(str(w[0].message).split("recall@10 = ")[1].split()[0])
    assert res.diagnostics["held_out_below_target"] is True
    assert abs(measured - _brute_force_recall(train, other, res.topk_indices, 10)) < 0.1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = gmv.value(other)  # calibrates again, on this batch
    assert res.diagnostics["calibration_reused"] is False
    assert res.diagnostics["calibrated_nprobe"] > nprobe
    assert _brute_force_recall(train, other, res.topk_indices, 10) >= 0.95

    gmv.target_recall = 0.99  # a changed setting is never served a stale calibration
    assert gmv.value(other).diagnostics["calibration_reused"] is False
    # a batch smaller than calibration_queries is calibrated on all its rows, not kept
    small = fitted("b")
    assert small.value(gen[:40]).diagnostics["calibration_queries"] == 40
    assert small.value(gen).diagnostics["calibration_reused"] is False
