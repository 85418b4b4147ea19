"""Recall calibration of GMValuator's approximate indexes: search parameters chosen so that
recall@k against exact search meets ``target_recall``.

Which queries, and why it transfers: the calibration queries are a seeded sample of the
generated batch being valued (``CALIBRATION_QUERIES`` of them), so they come from the very
distribution the index is about to answer; training samples plus noise would need a noise
scale matching the (unknown) generated-to-training distances.  In core the first batch of a
fit calibrates and later batches reuse the setting (batches of one generator share its
distribution), each checked on its held-out diagnostics rows; out of core every ``value``
call calibrates.  Their exact top-k is
computed by exact search; the recall of every candidate setting follows from it without
searching again:

* inverted file (exact l2 inside the probed lists): a true neighbour is found iff its list
  is among the ``nprobe`` lists nearest to the query, so recall@k for *every* nprobe is read
  off the rank of each neighbour's list in the query's coarse ranking (one ``(C, nlist)``
  coarse ranking).  Exact, not estimated, on the calibration queries.
* product quantizer (ADC candidates, exact re-rank): a true neighbour survives iff it is
  among the ``recall`` ADC candidates, so one ADC search with a generous candidate count per
  nprobe gives recall@k for every candidate count up to it.

The chosen setting is the cheapest whose calibration recall minus ``CALIBRATION_Z``
standard errors (of the mean of the per-query recalls) reaches the target: a one-sided
95 % lower confidence bound, so the recall of the whole batch (measured on a disjoint
diagnostics sample) lands at the target or above with about 95 % probability.

Cost: one exact search of ``C`` queries (``C * N * d``) plus ``C * nlist * d`` for the
coarse ranking (IVF) or a few ADC searches of ``C`` queries (PQ).  At 600,000 x 64 and 2,000
generated samples that is about 0.12 s, a quarter of the first IVF ``value`` call (an exact
row costs about 1 / scanned-fraction IVF rows) and 7 % at 10,000; reusing calls pay nothing
(docs/gmvaluator.md).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

# Generated samples per value call used to calibrate (seeded sample of the batch).
CALIBRATION_QUERIES = 64
# Standard errors of margin of a chosen setting: a one-sided 95 % lower confidence bound.
CALIBRATION_Z = 1.645
# index="auto" keeps the inverted file only when its scanned rows (coarse centroids
# included), weighted by this cost per row relative to a row of exact search, stay below
# the N rows of exact search; above it falls back to exact.  Measured with the batched
# list kernel (benchmarks/bench_gmvaluator.py --row-cost: 200k x 64, 2,000 queries, k = 20,
# 2 threads, shared machine, IVF and exact timed alternately): where 30-88 % of the rows
# are scanned (the fallback's neighbourhood) a scanned row costs 0.90-1.45x (median 1.27)
# a row of exact top-k search, and 0.70-1.04x a row of the exact top-`recall` (200) search
# the fallback actually runs; at 7-10 % scanned 2.5x (coarse ranking and per-list
# overheads), where the inverted file wins anyway.  Was 2.0, from the per-list kernel.
IVF_ROW_COST = 1.25
# Candidates recalled per generated sample for index="pq" are searched up to this multiple
# of the starting ``recall`` while calibrating.
PQ_MAX_RECALL_FACTOR = 8


def check_target_recall(value: Any) -> float | None:
    """``target_recall`` as a float in (0, 1], or ``None`` (calibration off); raises
    ``ValueError`` naming the argument otherwise."""
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not np.isfinite(value)
        or not 0 < value <= 1
    ):
        raise ValueError(f"target_recall must be a number in (0, 1] or None, got {value!r}")
    return float(value)


def calibration_rows(n_gen: int, n: int = CALIBRATION_QUERIES) -> np.ndarray:
    """Sorted seeded sample of ``min(n_gen, n)`` generated rows used to calibrate."""
    rows = np.random.default_rng(12345).choice(n_gen, min(n_gen, n), replace=False)
    rows.sort()
    return rows


def diagnostic_rows(n_gen: int, n: int, exclude: np.ndarray | None) -> np.ndarray:
    """Sorted seeded sample of ``min(n, rest)`` generated rows outside ``exclude`` (the
    calibration rows), so the reported recall is measured on held-out queries; all rows
    when every row was used to calibrate."""
    pool = np.arange(n_gen)
    if exclude is not None and exclude.size < n_gen:
        pool = np.setdiff1d(pool, exclude)
    rows = np.random.default_rng(0).choice(pool, min(len(pool), n), replace=False)
    rows.sort()
    return rows


def recall_with_error(hits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean recall and its standard error over queries; ``hits`` ``(C, ...)`` counts the
    true neighbours found per query (of ``k``)."""
    per_query = hits / k
    mean = per_query.mean(0)
    se = per_query.std(0) / np.sqrt(max(1, per_query.shape[0] - 1))
    return mean, se


def overlap_recall(exact: np.ndarray, found: np.ndarray) -> float:
    """Mean over rows of ``|exact_i ∩ found_i| / k``; ``found`` slots < 0 count as misses."""
    k = exact.shape[1]
    return float(
        np.mean([len(np.intersect1d(e, f[f >= 0])) / k for e, f in zip(exact, found)])
        if len(exact)
        else np.nan
    )


@dataclass
class Calibration:
    """Outcome of one calibration; ``diagnostics()`` is what ``GMValuation.diagnostics``
    reports (``calibration_*`` keys)."""

    target: float
    n_queries: int
    nprobe: int | None
    recall: int | None  # candidates per generated sample (PQ); None: unchanged
    measured: float  # recall@k at the chosen setting on the calibration queries
    reaches_target: bool
    suggestion: dict = field(default_factory=dict)  # a setting that reaches the target
    fallback_exact: str | None = None  # why index="auto" searched exactly instead
    scanned_fraction: float | None = None  # IVF: rows scanned / N at the chosen nprobe

    def diagnostics(self) -> dict:
        """What the calibration measured, for ``GMValuation.diagnostics``: the target, the
        number of queries, the recall reached and the parameters chosen."""
        out = {
            "target_recall": self.target,
            "calibration_queries": self.n_queries,
            "calibration_recall_at_k": self.measured,
        }
        if self.nprobe is not None:
            out["calibrated_nprobe"] = self.nprobe
        if self.recall is not None:
            out["calibrated_recall"] = self.recall
        if self.scanned_fraction is not None:
            out["calibration_scanned_fraction"] = self.scanned_fraction
        if self.fallback_exact is not None:
            out["auto_fallback"] = self.fallback_exact
        return out


def calibrate_ivf(
    queries: np.ndarray,
    exact_idx: np.ndarray,
    coarse: np.ndarray,
    list_of: Callable[[np.ndarray], np.ndarray],
    list_sizes: np.ndarray,
    n_train: int,
    target: float,
    pinned_nprobe: int | None,
    auto: bool,
    n_threads: Any = None,
) -> Calibration:
    """nprobe of an inverted file (exact l2 inside the probed lists) for ``target``.

    Args:
        queries: ``(C, d)`` float32 calibration queries in the search space.
        exact_idx: ``(C, k)`` int64 their exact top-k training rows.
        coarse: ``(nlist, d)`` float32 coarse centroids.
        list_of: maps training rows ``(C, k)`` to their list ids ``(C, k)``.
        list_sizes: ``(nlist,)`` rows per list.
        n_train: N.
        target: recall@k to reach.
        pinned_nprobe: the user's nprobe (measured, not changed), or None (chosen).
        auto: ``index="auto"``: fall back to exact when the chosen nprobe scans more than
            exact search costs (``IVF_ROW_COST``).

    Recall for every nprobe from one ``(C, nlist)`` ranking: ``O(C * nlist * (d + log))``.
    """
    from datacredit.kernels import gram_topk

    nlist = coarse.shape[0]
    c, k = exact_idx.shape
    _, ranking = gram_topk(queries, coarse, nlist, metric="l2", largest=False, n_threads=n_threads)
    rank = np.empty_like(ranking)
    rank[np.arange(c)[:, None], ranking] = np.arange(nlist)[None, :]
    nb_rank = np.take_along_axis(rank, np.asarray(list_of(exact_idx), np.int64), 1)
    hist = np.zeros((c, nlist), np.int64)
    np.add.at(hist, (np.repeat(np.arange(c), k), nb_rank.ravel()), 1)
    mean, se = recall_with_error(np.cumsum(hist, 1), k)  # index p-1: recall at nprobe p
    scanned = np.cumsum(np.asarray(list_sizes, np.float64)[ranking], 1).mean(0)
    ok = np.flatnonzero(mean - CALIBRATION_Z * se >= target)
    reach = int(ok[0]) + 1 if ok.size else nlist
    nprobe = pinned_nprobe or reach
    # A chosen nprobe keeps CALIBRATION_Z standard errors of margin (or probes every list);
    # a pinned one is judged on its measured recall.
    reaches = mean[nprobe - 1] >= target if pinned_nprobe else True
    cal = Calibration(
        target=target,
        n_queries=c,
        nprobe=nprobe,
        recall=None,
        measured=float(mean[nprobe - 1]),
        reaches_target=bool(reaches),
        suggestion={"pq_nprobe": reach},
        scanned_fraction=float(scanned[nprobe - 1] / n_train),
    )
    cost = IVF_ROW_COST * (nlist + scanned[nprobe - 1])
    if auto and pinned_nprobe is None and cost >= n_train:
        cal.fallback_exact = (
            f"the inverted file needs nprobe = {nprobe} of {nlist} lists for recall@{k} >= "
            f"{target} on {c} calibration queries, scanning {cal.scanned_fraction:.0%} of the "
            "training set: no cheaper than exact search, which index='auto' used instead"
        )
    return cal


def calibrate_pq(
    exact_idx: np.ndarray,
    search: Callable[[int, int | None], np.ndarray],
    n_train: int,
    start_recall: int,
    pinned_recall: bool,
    nlist: int | None,
    start_nprobe: int,
    pinned_nprobe: bool,
    target: float,
) -> Calibration:
    """nprobe (with a coarse IVF) and candidate count ``recall`` of the PQ index.

    ``search(r, nprobe)`` returns the ADC candidates ``(C, r)`` of the calibration queries
    (``nprobe`` None without IVF).  nprobe doubles from ``start_nprobe`` up to ``nlist``;
    per nprobe one ADC search with ``r_cap = min(N, PQ_MAX_RECALL_FACTOR * start_recall)``
    candidates gives the recall of every candidate count up to ``r_cap`` at once.  The first
    setting (fewest lists, then fewest candidates, never below ``start_recall``) meeting the
    target within the pinned parameters is kept; when none does, the start setting (pinned)
    or the largest searched is kept, and the first setting of the whole grid that reaches the
    target is suggested.  Cost: ``O(C * N * m)`` per nprobe searched.
    """
    c, k = exact_idx.shape
    r_cap = min(n_train, max(start_recall, PQ_MAX_RECALL_FACTOR * start_recall))
    grid: list[int | None] = [None]
    if nlist:
        grid = [start_nprobe]
        while grid[-1] < nlist:
            grid.append(min(nlist, grid[-1] * 2))
    curves: dict = {}

    def curve(nprobe: int | None) -> tuple[np.ndarray, np.ndarray]:
        if nprobe not in curves:
            cand = search(r_cap, nprobe)
            # position of each true neighbour among the ADC candidates (r_cap when absent)
            pos = np.full((c, k), r_cap, np.int64)
            for q in range(c):
                where = {int(t): j for j, t in enumerate(cand[q]) if t >= 0}
                pos[q] = [where.get(int(t), r_cap) for t in exact_idx[q]]
            hist = np.zeros((c, r_cap + 1), np.int64)
            np.add.at(hist, (np.repeat(np.arange(c), k), pos.ravel()), 1)
            curves[nprobe] = recall_with_error(np.cumsum(hist[:, :r_cap], 1), k)
        return curves[nprobe]

    def first_reaching(probes: list, fixed_r: bool) -> tuple | None:
        # A chosen setting keeps CALIBRATION_Z standard errors of margin; a fully pinned one
        # is judged on its measured recall.
        pinned = fixed_r and len(probes) == 1 and (pinned_nprobe or not nlist)
        margin = 0.0 if pinned else CALIBRATION_Z
        for nprobe in probes:
            mean, se = curve(nprobe)
            lower = mean[start_recall - 1 :] - margin * se[start_recall - 1 :]
            ok = np.flatnonzero(lower >= target)
            if fixed_r:
                ok = ok[:1] if ok.size and ok[0] == 0 else ok[:0]
            if ok.size:
                r = start_recall + int(ok[0])
                return nprobe, r, float(mean[r - 1])
        return None

    allowed = grid[:1] if pinned_nprobe else grid
    chosen = first_reaching(allowed, pinned_recall)
    if chosen is not None:
        nprobe, r, measured = chosen
        suggestion = {}
    else:
        if pinned_nprobe or pinned_recall:
            nprobe, r = grid[0], start_recall
            if not pinned_recall:
                r = r_cap
            if not pinned_nprobe:
                nprobe = grid[-1]
        else:
            nprobe, r = grid[-1], r_cap
        measured = float(curve(nprobe)[0][r - 1])
        best = first_reaching(grid, False)
        suggestion = {} if best is None else {"recall": best[1]}
        if best is not None and nlist:
            suggestion["pq_nprobe"] = best[0]
    return Calibration(
        target=target,
        n_queries=c,
        nprobe=nprobe,
        recall=r,
        measured=measured,
        reaches_target=chosen is not None,
        suggestion=suggestion,
    )


def miss_message(index: str, k: int, cal: Calibration, pinned: str) -> str:
    """The ``UserWarning`` text when the pinned (or largest searched) setting misses."""
    fix = ", ".join(f"{a} = {b}" for a, b in cal.suggestion.items())
    fix = f"; {fix} reaches it" if fix else "; no setting searched reaches it"
    return (
        f"index={index!r} with {pinned}: measured recall@{k} = {cal.measured:.3f} on "
        f"{cal.n_queries} calibration queries against exact search, below target_recall = "
        f"{cal.target}{fix}"
    )


def apply_calibration(gmv: Any, cal: Calibration) -> tuple[str, int, int | None]:
    """(index, recall, nprobe) a GMValuator (in core or out of core) searches with after
    calibration ``cal``; a ``UserWarning`` when the target is missed."""
    if cal.fallback_exact is not None:
        return "exact", gmv.recall, None
    if not cal.reaches_target:
        pinned = []
        if gmv.pq_nprobe is not None:
            pinned.append(f"pq_nprobe = {gmv.pq_nprobe}")
        if gmv._recall_pinned and gmv.index_ in ("pq", "faiss"):
            pinned.append(f"recall = {gmv.recall}")
        what = " and ".join(pinned) if pinned else "the largest setting searched"
        warnings.warn(miss_message(gmv.index_, gmv.k, cal, what), UserWarning, stacklevel=4)
    r = cal.recall if cal.recall is not None else gmv.recall
    return gmv.index_, r, cal.nprobe


def exact_recall_diagnostics() -> dict:
    """Diagnostics of an exact search: recall 1 by construction, no query measured."""
    return {"diagnostics_rows": 0, "recall_stage_recall_at_k": 1.0, "final_recall_at_k": 1.0}


def recall_diagnostics(
    exact: np.ndarray,
    cand: np.ndarray,
    top: np.ndarray,
    rerank: Any,
    cal: Calibration | None,
    k: int,
    index: str,
) -> dict:
    """recall@k of the candidates and of the kept top k against the exact top-k ``exact``
    ``(D, k)`` of ``D`` diagnostics rows (held out from calibration when the batch allows);
    padded slots (-1) count as misses.  Warns when a calibrated setting's held-out recall
    lies more than two standard errors below the target."""
    out = {
        "diagnostics_rows": int(len(exact)),
        "recall_stage_recall_at_k": overlap_recall(exact, cand),
    }
    if rerank in ("l2", None, "cosine"):
        out["final_recall_at_k"] = overlap_recall(exact, top)
    if cal is not None and cal.reaches_target and len(exact) > 1:
        hits = np.array([len(np.intersect1d(e, f[f >= 0])) for e, f in zip(exact, cand)])
        mean, se = recall_with_error(hits[:, None], k)
        out["held_out_below_target"] = bool(mean[0] + 2 * se[0] < cal.target)
        if out["held_out_below_target"]:
            warnings.warn(
                f"index={index!r}: recall@{k} = {mean[0]:.3f} on {len(exact)} held-out "
                f"generated samples, below target_recall = {cal.target} that "
                f"{cal.n_queries} calibration queries reached ({cal.measured:.3f}): the "
                "calibration sample did not represent this batch (a calibration reused from "
                "an earlier batch is redone on the next call); raise calibration_queries",
                UserWarning,
                stacklevel=3,
            )
    return out


def search_diagnostics(
    cal: Calibration | None,
    index: str,
    exact: np.ndarray,
    n_cal: int,
    rows: np.ndarray,
    cand: np.ndarray,
    top: np.ndarray,
    rerank: Any,
    k: int,
) -> dict:
    """The recall part of ``GMValuation.diagnostics``, in core and out of core alike: the
    calibration's figures (when it ran), then recall@k of an exact search (1 by
    construction) or the measured recall of the diagnostics ``rows`` (whose exact top-k are
    ``exact[n_cal:]``) of the candidates ``cand`` and kept ``top``; ``{}`` without rows."""
    out = {} if cal is None else dict(cal.diagnostics())
    if index == "exact":
        out.update(exact_recall_diagnostics())
    elif len(rows):
        out.update(recall_diagnostics(exact[n_cal:], cand[rows], top[rows], rerank, cal, k, index))
    return out
