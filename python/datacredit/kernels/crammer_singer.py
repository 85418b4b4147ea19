"""Crammer–Singer multiclass linear SVM, solved in the dual (sequential dual method)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from datacredit import _core
from datacredit._arrays import (
    as_float_matrix,
    check_flag,
    check_float,
    check_int,
    positive_float,
    resolve_threads,
    to_numpy,
)
from datacredit.kernels.sparse_dual import DENSE_SILENT_BYTES, SparseDual, available_memory

# Above this C * max ||x||^2 a solve that did not converge is called ill-conditioned.
_ILL_CONDITIONED = 1e10

#: A sample is a support vector when ``max_c |lambda_ic| > SUPPORT_RTOL * C``.  The solver's
#: float64 updates leave round-off (|lambda| ~ 1e-17 C) on samples it moved off and back to
#: zero; counting those made 24% of the "support vectors" at C=0.1 pure noise.  A sample
#: below the threshold contributes less than 1e-9 of a bound support vector's weight.
SUPPORT_RTOL = 1e-9

#: Bytes one nonzero of lambda costs the solver at its peak: a 16-byte (class, value) entry in
#: its sample's row, whose vector may hold up to twice its size, plus the 12-byte CSR copy
#: handed back (measured: 38 B per nonzero at 190M nonzeros).
BYTES_PER_NONZERO = 40
#: Share of the available memory the solver's lambda may use when ``max_nnz`` is not given.
NONZERO_MEMORY_SHARE = 0.7
#: A fit whose lambda peaked above this share of ``N x K``, above
#: :data:`NEARLY_DENSE_PER_SAMPLE` nonzeros per sample (normal fits keep 2-6, so a small K
#: never trips it) and above 256 MiB was a dense array in disguise: it warns.
NEARLY_DENSE_SHARE = 0.1
NEARLY_DENSE_PER_SAMPLE = 8


def default_max_nnz(n: int, k: int) -> int:
    """Nonzeros of lambda the solver may hold: what :data:`NONZERO_MEMORY_SHARE` of the
    available memory holds at :data:`BYTES_PER_NONZERO` each, never below ``2 N + 2 K``
    (a fit at the hard-margin limit) and at most ``N x K``; ``0`` (no limit) when the available
    memory is unknown."""
    free = available_memory()
    if free is None:
        return 0
    cap = int(NONZERO_MEMORY_SHARE * free / BYTES_PER_NONZERO)
    return int(min(max(cap, 2 * n + 2 * k), n * k))


@dataclass(frozen=True)
class CSResult:
    """A fitted Crammer–Singer SVM and the dual variables behind it.

    Attributes:
        dual: ``lambda`` as a :class:`~datacredit.kernels.sparse_dual.SparseDual` (CSR,
            ``O(nnz)``): ``lambda[i, y_i]`` in ``[0, C]``, ``lambda[i, c] <= 0`` for
            ``c != y_i``, every row sums to 0.  ``W = lambda.T @ X``.
        dual_coef: ``lambda`` as a dense float64 ``(N, K)`` array, built on first access
            through the dense guard (warns above 256 MiB, refuses more than the free memory);
            large problems use ``dual``.
        alpha: the paper's dual variables, float64 ``(N, K)``: ``alpha >= 0``, rows sum to
            ``C``, ``lambda = C * onehot(y) - alpha``.  Dense, built on first access (guarded
            like ``dual_coef``), then kept.
        peak_nnz: the most nonzeros ``lambda`` held during the solve (its working memory).
        coef: ``W``, float64 ``(K, d)``, accumulated in float64 from ``lambda`` and ``X``.
        bias: float64 ``(K,)``; ``bias[c] = sum_i lambda[i, c]`` with ``fit_bias`` (the
            constant-1 feature's weight), zeros otherwise.
        support: int64 indices, ascending, of the samples with ``max_c |lambda_ic| >
            SUPPORT_RTOL * C`` (``1e-9 C``; below it is solver round-off).
        n_iter: solver passes run; each pass visits the samples not yet shrunk away, so
            after the first few it touches far fewer than N (no epoch count).
        converged: whether a full unshrunk float64 pass ended with max KKT violation
            ``< tol`` and the returned ``(lambda, coef, bias)`` satisfies it too (checked
            from scratch after the pass).
        max_violation: when converged, the max KKT violation of the returned model;
            otherwise the one measured during the last pass.
        primal_objective: ``1/2 (||W||^2 + ||bias||^2) + C * sum_i hinge_i`` for ``(coef, bias)``.
        dual_objective: ``sum_i lambda[i, y_i] - 1/2 (||W||^2 + ||bias||^2)`` (<= primal).
        C: the regularization the model was fitted with.
        extras: ``{"advice": str}`` when the solve did not converge because the problem is
            ill-conditioned (``C * max ||x||^2`` huge): what to change instead of max_iter.
    """

    dual: SparseDual
    coef: np.ndarray
    bias: np.ndarray
    support: np.ndarray
    n_iter: int
    converged: bool
    max_violation: float
    primal_objective: float
    dual_objective: float
    C: float
    labels: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]
    box: np.ndarray | None = field(default=None, repr=False)  # per-sample C_i, None: all C
    extras: dict = field(default_factory=dict, repr=False)
    peak_nnz: int = 0

    @cached_property
    def dual_coef(self) -> np.ndarray:
        """``lambda`` dense, float64 ``(N, K)`` (built once, on first access; guarded)."""
        return self.dual.toarray(what="CSResult.dual_coef")

    @cached_property
    def alpha(self) -> np.ndarray:
        """``C_i * onehot(y) - lambda``, float64 ``(N, K)`` (built once, on first access)."""
        alpha = -self.dual.toarray(what="CSResult.alpha")
        rows = np.arange(self.labels.shape[0])
        alpha[rows, self.labels] += self.C if self.box is None else self.box
        return alpha

    @property
    def relative_duality_gap(self) -> float:
        """``(primal - dual) / max(|primal|, 1e-300)``; small (e.g. < 1e-3) at convergence."""
        return self.duality_gap / max(abs(self.primal_objective), 1e-300)

    @property
    def duality_gap(self) -> float:
        """``primal_objective - dual_objective`` (>= 0 up to rounding; 0 at the optimum)."""
        return self.primal_objective - self.dual_objective

    def decision_function(self, X: Any) -> np.ndarray:
        """Surrogate scores ``X @ W.T + bias``, float64 ``(n, K)``."""
        x = as_float_matrix(X, "X").astype(np.float64)
        if x.shape[1] != self.coef.shape[1]:
            raise ValueError(
                f"X has {x.shape[1]} features but the model was fitted on {self.coef.shape[1]}"
            )
        return x @ self.coef.T + self.bias


def _weights(sample_weight: Any, n: int) -> np.ndarray | None:
    if sample_weight is None:
        return None
    w = np.ascontiguousarray(to_numpy(sample_weight, "sample_weight"), dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"sample_weight must have shape ({n},), got {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("sample_weight must be finite and >= 0")
    return w


def _labels(y: Any, n: int, n_classes: int | None) -> tuple[np.ndarray, int]:
    arr = to_numpy(y, "y")
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"y must have shape ({n},) (one label per row of X), got {arr.shape}")
    if arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(np.mod(arr, 1) == 0):
            arr = arr.astype(np.int64)
        else:
            raise TypeError(f"y must hold integer class indices, got dtype {arr.dtype}")
    lab = np.ascontiguousarray(arr, dtype=np.int64)
    if lab.min() < 0:
        raise ValueError(f"y holds {int(lab.min())}; class indices must be >= 0")
    k = int(lab.max()) + 1 if n_classes is None else n_classes
    if n_classes is not None:
        if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)):
            raise TypeError(f"n_classes must be an integer, got {type(n_classes).__name__}")
        if not 2 <= n_classes <= 2**31 - 1:
            raise ValueError(f"n_classes = {n_classes} must be in [2, 2**31 - 1]")
        if lab.max() >= n_classes:
            raise ValueError(f"y holds {int(lab.max())}, outside [0, n_classes = {n_classes})")
    if k < 2:
        raise ValueError(f"at least 2 classes are needed, got n_classes = {k}")
    return lab, int(k)


def crammer_singer_fit(
    X: Any,
    y: Any,
    C: float,
    *,
    tol: float = 1e-4,
    max_iter: int = 1000,
    seed: int = 0,
    fit_bias: bool = True,
    n_threads: int | None = None,
    n_classes: int | None = None,
    sample_weight: Any = None,
    shrink_factor: float = 0.1,
    max_nnz: int | None = None,
) -> CSResult:
    """Fit a Crammer–Singer multiclass linear SVM by dual coordinate descent.

    Solves the dual of
    ``min_W 1/2 ||W||^2 + C * sum_i max_c ([c != y_i] + w_c.x_i - w_{y_i}.x_i)``
    with the sequential dual method of Keerthi et al. (2008): a seeded random permutation
    of the samples per epoch, the closed-form sorted sub-problem per sample, shrinking of
    samples and classes at their bounds with a shrink tolerance that decreases
    geometrically (``shrink_factor``), and a stop when a full unshrunk pass has max KKT
    violation ``< tol`` (confirmed by a float64 pass).  Features stay dense float32 (never
    copied: a float32 C-contiguous ``np.memmap`` is read in place); ``W`` is float64 and
    ``lambda`` float64 sparse (CSR, ``CSResult.dual``) throughout the solve.

    Args:
        X: ``(N, d)`` real features (numpy or CPU torch); float32 is used without a copy.
        y: ``(N,)`` integer class indices in ``[0, K)``.
        C: regularization, ``> 0`` (larger C: fewer support vectors, harder margin).
        tol: bound on the max KKT violation of the final (full) pass.
        max_iter: maximum number of solver passes (see ``n_iter``), in ``[1, 2**31 - 1]`` (``n_iter`` reports the
            true count).
        seed: in ``[0, 2**63 - 1]``; seeds the per-epoch permutation; the result is
            deterministic for a seed.
        fit_bias: append a constant-1 feature (regularized, as LIBLINEAR ``-B 1``), so
            ``bias[c] = sum_i lambda[i, c]``.
        n_threads: threads for the norm, ``W`` and objective passes (``None``: all cores).
        n_classes: number of classes ``K`` (default ``max(y) + 1``); pass it when some class
            has no training sample.
        sample_weight: optional ``(N,)`` non-negative loss weights: sample ``i``'s box is
            ``C_i = C * sample_weight[i]`` (``alpha`` rows then sum to ``C_i``).
        shrink_factor: in ``(0, 1)``; whenever a pass over the shrunk set gets below the
            shrink tolerance, all samples are unshrunk and the tolerance is multiplied by it.
            LIBLINEAR halves it (0.5); the default 0.1 needs fewer full passes and was
            1.2-2x faster than 0.5 at N=60,000 in ``benchmarks/bench_crammer_singer.py``.
            The stopping rule, hence the accuracy guarantee, is the same for any value.
        max_nnz: the most nonzeros ``lambda`` may hold during the solve; ``None``: what 70%
            of the available memory holds at 40 bytes each (:func:`default_max_nnz`), ``0``:
            no limit.  A normal fit has 2-6 nonzeros per sample; features that do not
            separate the classes keep nearly every class active, and ``lambda`` grows
            towards ``N x K / 4`` (7 GB at 40k x 20k): the limit turns that into a
            ``MemoryError`` instead of the machine running out of memory.

    Returns:
        :class:`CSResult`.

    Complexity: ``O(d)`` per class per visited sample; an epoch costs ``O(N_active *
    K_active * d)``, with shrinking removing samples and classes that sit at their bounds.
    Memory ``O(N + nnz(lambda) + K * d)`` besides ``X`` (never a dense ``N x K`` array; the
    working set of a shrunk sample is stored up to 64 classes).  The GIL is released while
    it runs.

    Warns:
        RuntimeWarning: not converged and ``C * max ||x||^2 > 1e10``: the dual is
            ill-conditioned; scale the features or lower C (``extras["advice"]``).

    Warns:
        RuntimeWarning: ``lambda`` peaked above 10% of ``N x K``, 8 nonzeros per sample and
            256 MiB: the sparse dual was nearly dense (the features barely separate the
            classes).

    Raises:
        MemoryError: ``lambda`` outgrew ``max_nnz`` (the message gives the count, the
            memory it needs and the likely cause).
        ValueError: no progress at all (every lambda 0 without convergence: features or
            C far out of range), empty ``X``, NaN/inf, ``C <= 0``, ``tol <= 0``, ``max_iter`` outside
            ``[1, 2**31 - 1]``, labels out of range, fewer than 2 classes, mismatched lengths.
        TypeError: non-numeric ``X``, non-integer ``y``; a bool or a string for ``C``,
            ``tol``, ``max_iter`` or ``seed``; anything but a bool for ``fit_bias``.
    """
    if isinstance(X, np.memmap) and (X.dtype != np.float32 or not X.flags.c_contiguous):
        raise ValueError(
            f"X is a memory-mapped {X.dtype} array of shape {X.shape}"
            f"{'' if X.flags.c_contiguous else ' (not C-contiguous)'}: the solver reads "
            "float32 C-order features in place; converting this one would copy all "
            f"{X.size * 4 / 2**30:.2f} GiB into memory. Write the features as float32 (C order)"
        )
    x = as_float_matrix(X, "X", check_finite=False)
    lab, k = _labels(y, x.shape[0], n_classes)
    c_val = positive_float(C, "C")
    tol = check_float(tol, "tol", 0.0, lo_open=True)
    max_iter = check_int(max_iter, "max_iter", 1, 2**31 - 1)
    shrink_factor = check_float(
        shrink_factor, "shrink_factor", 0.0, 1.0, lo_open=True, hi_open=True
    )
    seed = check_int(seed, "seed", 0, 2**63 - 1)
    fit_bias = check_flag(fit_bias, "fit_bias")
    sw = _weights(sample_weight, x.shape[0])
    n = x.shape[0]
    limit = default_max_nnz(n, k) if max_nnz is None else check_int(max_nnz, "max_nnz", 0)
    try:
        indptr, indices, values, coef, bias, stats = _core.crammer_singer_fit(
            x,
            lab,
            k,
            c_val,
            tol,
            max_iter,
            seed,
            fit_bias,
            resolve_threads(n_threads),
            sw,
            shrink_factor,
            limit,
        )
    except MemoryError as exc:
        if "max_nnz" not in str(exc):
            raise
        free = available_memory()
        raise MemoryError(
            f"{exc}: {limit * BYTES_PER_NONZERO / 2**30:.2f} GiB at {BYTES_PER_NONZERO} B per "
            "nonzero"
            + ("" if free is None else f", of {free / 2**30:.2f} GiB available")
            + ". A Crammer-Singer fit normally keeps 2-6 nonzeros per sample; this many "
            "means the features barely separate the classes (identical or constant rows, "
            "features of the wrong layer?). Check the features, or pass a larger max_nnz "
            "(0: no limit) if the memory is there."
        ) from None
    dual = SparseDual(indptr, indices, values, k)
    peak = int(stats["peak_nnz"])
    if (
        peak * BYTES_PER_NONZERO > DENSE_SILENT_BYTES
        and peak > NEARLY_DENSE_SHARE * n * k
        and peak > NEARLY_DENSE_PER_SAMPLE * n
    ):
        import warnings

        warnings.warn(
            f"crammer_singer_fit: lambda peaked at {peak} nonzeros, {peak / (n * k):.0%} of "
            f"N x K = {n} x {k} (about {peak * BYTES_PER_NONZERO / 2**30:.2f} GiB): the sparse "
            "dual was nearly dense because the features barely separate the classes "
            "(identical or near-identical rows?)",
            RuntimeWarning,
            stacklevel=2,
        )
    extras: dict = {}
    if not stats["converged"]:
        # The dual is invariant under X -> s X, C -> C s^2: what limits coordinate descent is
        # C * max ||x||^2 (the largest diagonal of the scaled kernel); far above 1 it is
        # hopelessly ill-conditioned and more epochs barely help.
        c_max = c_val * (float(sw.max()) if sw is not None else 1.0)
        sq = float(np.max(np.einsum("ij,ij->i", x, x, dtype=np.float64))) + float(bool(fit_bias))
        conditioning = c_max * sq
        if not np.any(values):
            raise ValueError(
                "crammer_singer_fit made no progress (every lambda is still 0): "
                f"C * max ||x||^2 = {conditioning:.3g} is out of the range the solver can "
                "resolve; scale the features (e.g. standardise them) or lower C"
            )
        if conditioning > _ILL_CONDITIONED:
            extras["advice"] = (
                f"C * max ||x||^2 = {conditioning:.3g} makes the dual ill-conditioned, so raising "
                "max_iter hardly helps: scale the features (e.g. standardise them) or lower C"
            )
            import warnings

            warnings.warn(
                f"crammer_singer_fit did not converge in {int(stats['n_iter'])} solver passes "
                f"(max KKT violation {float(stats['max_violation']):.3g} > tol={float(tol):g}); "
                + extras["advice"],
                RuntimeWarning,
                stacklevel=2,
            )
    support = np.flatnonzero(dual.row_max_abs() > SUPPORT_RTOL * c_val).astype(np.int64)
    return CSResult(
        dual=dual,
        peak_nnz=int(stats["peak_nnz"]),
        labels=lab,
        box=None if sw is None else c_val * sw,
        coef=coef,
        bias=bias,
        support=support,
        n_iter=int(stats["n_iter"]),
        converged=bool(stats["converged"]),
        max_violation=float(stats["max_violation"]),
        primal_objective=float(stats["primal_objective"]),
        dual_objective=float(stats["dual_objective"]),
        C=c_val,
        extras=extras,
    )


def crammer_singer_objective(
    X: Any,
    y: Any,
    coef: Any,
    bias: Any,
    C: float,
    *,
    n_threads: int | None = None,
    sample_weight: Any = None,
) -> float:
    """Primal Crammer–Singer objective of any linear model ``(coef, bias)`` on ``(X, y)``.

    ``1/2 (||coef||^2 + ||bias||^2) + C * sum_i w_i max_c ([c != y_i] + s_ic - s_{i,y_i})`` with
    ``s = X @ coef.T + bias``; ``bias=None`` means no bias.  Used to compare solvers on equal
    terms (e.g. LIBLINEAR's ``-s 4 -B 1`` model).  ``O(N * K * d)``, parallel over samples.

    Raises:
        ValueError: wrong shapes, NaN/inf in ``X``, ``coef`` or ``bias``, ``C`` not a
            finite number ``>= 0``, labels outside ``[0, K)``.
        TypeError: non-numeric arrays, non-integer ``y``, a bool or a string for ``C``.
    """
    x = as_float_matrix(X, "X")
    w = np.ascontiguousarray(to_numpy(coef, "coef"), dtype=np.float64)
    if w.ndim != 2 or w.shape[1] != x.shape[1]:
        raise ValueError(f"coef must have shape (K, {x.shape[1]}), got {w.shape}")
    if not np.isfinite(w).all():
        raise ValueError("coef contains NaN or inf")
    lab, _ = _labels(y, x.shape[0], w.shape[0])
    b = None if bias is None else np.ascontiguousarray(to_numpy(bias, "bias"), dtype=np.float64)
    if b is not None and not np.isfinite(b).all():
        raise ValueError("bias contains NaN or inf")
    c_val = check_float(C, "C", 0.0)  # C = 0 is allowed here: just the regulariser
    sw = _weights(sample_weight, x.shape[0])
    return float(_core.crammer_singer_primal(x, lab, w, b, c_val, resolve_threads(n_threads), sw))
