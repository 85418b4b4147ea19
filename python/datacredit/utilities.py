"""Coalition utilities for SurrogateSHAP's proxy game, evaluated from per-label statistics.

Every utility follows one protocol: ``prepare(bank)`` computes per-label statistics once
from a :class:`~datacredit.surrogateshap.SampleBank` (running the feature / score
callables over the stored samples), then ``evaluate(weights)`` maps mixture weights
(m × L, one row per coalition, rows summing to 1 over the bank's labels) to m utilities
without touching the samples again.  The mixture is the proxy distribution
Σ_y π_S(y) p_θ(x | y) of eq. 5, with each label's conditional represented by its samples
in the bank.

- :class:`FID` — Fréchet distance from exact mixture mean/covariance (one symmetric
  eigen-decomposition per coalition).
- :class:`InceptionScore` — exp(E KL(p(y|x) ‖ p(y))) from per-label moments.
- :class:`MeanScore` — mixture mean of any per-sample score (aesthetics, LPIPS, CLIP...).
- :class:`PairwiseDiversity` — expected pair score of two independent mixture draws.
- :class:`Resampled` / :class:`ProbeCorrelation` — any statistic of a resampled mixture set,
  with common random numbers across coalitions.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from datacredit._arrays import to_numpy


def _apply(fn: Callable | None, x: np.ndarray, batch_size: int | None, name: str) -> np.ndarray:
    if fn is None:
        return np.asarray(x, dtype=np.float64)
    bs = x.shape[0] if batch_size is None else int(batch_size)
    outs = [
        np.asarray(to_numpy(fn(np.asarray(x[s : s + bs])), f"{name} output"), dtype=np.float64)
        for s in range(0, x.shape[0], bs)
    ]
    return np.concatenate(outs) if len(outs) > 1 else outs[0]


def _blas_limit(dim: int, threads: int | None = None):
    """One BLAS thread for small matrices: multi-threaded BLAS on tiny operands is slower
    (and pathological on a loaded machine); large ones keep all threads unless ``threads``."""
    import contextlib

    if threads is None and dim >= 256:
        return contextlib.nullcontext()
    if threads is None:
        threads = 1
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        return contextlib.nullcontext()
    return threadpool_limits(int(threads), user_api="blas")


def _check_weights(weights: Any, n_labels: int) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim == 1:
        w = w[None]
    if w.ndim != 2 or w.shape[1] != n_labels:
        raise ValueError(f"weights must have shape (m, {n_labels}), got {np.shape(weights)}")
    if (w < 0).any() or not np.allclose(w.sum(1), 1.0, atol=1e-8):
        raise ValueError("every row of weights must be non-negative and sum to 1")
    return w


class Utility:
    """Base class: ``prepare(bank)`` once, then ``evaluate(weights (m × L)) -> (m,)``."""

    n_labels: int = 0

    def prepare(self, bank: Any) -> Utility:  # pragma: no cover - interface
        raise NotImplementedError

    def evaluate(self, weights: Any) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def _require(self) -> None:
        if not getattr(self, "_ready", False):
            raise RuntimeError(f"{type(self).__name__}.prepare(bank) must be called first")

    def __call__(self, weights: Any) -> np.ndarray:
        return self.evaluate(weights)


def _features_per_label(bank: Any, fn: Callable | None, batch_size: int | None, name: str):
    feats = []
    for label in bank.labels:
        f = _apply(fn, bank.samples(label), batch_size, name)
        if f.ndim == 1:
            f = f[:, None]
        if f.ndim != 2 or f.shape[0] != bank.n_samples(label):
            raise ValueError(
                f"{name} must return one row per sample; got shape {f.shape} for label {label!r}"
            )
        if not np.isfinite(f).all():
            raise ValueError(f"{name} returned NaN or inf for label {label!r}")
        feats.append(f)
    return feats


def _eigvalsh(M: np.ndarray) -> np.ndarray:
    """Eigenvalues of a symmetric matrix (divide and conquer, LAPACK ?syevd); M is overwritten."""
    try:
        from scipy.linalg import eigh
    except ImportError:  # pragma: no cover
        return np.linalg.eigvalsh(M)
    return eigh(
        M, eigvals_only=True, driver="evd", check_finite=False, overwrite_a=True, lower=True
    )


def _sqrtm_psd(C: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh((C + C.T) / 2)
    return (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T


class FID(Utility):
    """Fréchet Inception Distance of the coalition's mixture to a reference set.

    FID = ‖μ − μ_r‖² + tr Σ + tr Σ_r − 2 tr (Σ_r^{1/2} Σ Σ_r^{1/2})^{1/2}, with μ, Σ the exact
    mean and covariance of the mixture of the bank's per-label empirical distributions
    (Σ = Σ_y π_y E_y[f fᵀ] − μμᵀ, population form, i.e. ddof = 0) — no resampling.

    Args:
        features: callable from bank samples (n, ...) to feature vectors (n, d), e.g. an
            Inception pool3 extractor; None when the bank already stores features.
        reference: reference features (n_r × d), or a tuple (mean (d,), covariance (d × d)).
        batch_size: samples per ``features`` call.

    Per coalition: O(L·d²) to form Σ_r^{1/2} Σ Σ_r^{1/2} from precomputed per-label
    matrices (or O(N_S²) from a sample Gram matrix when the coalition holds fewer samples
    N_S than d) plus one symmetric eigenvalue decomposition, O(min(d, N_S)³).
    Memory: L·d² values for the per-label matrices (or N² for the Gram matrix).

    ``eig_dtype``: precision of the per-coalition matrices and eigen-decomposition;
    "auto" = "float64".  "float32" is about twice as fast at d = 2048 but the square roots
    amplify float32 noise in near-zero eigenvalues: on a rank-64 covariance at d = 2048 it
    moved FID by 0.05 %, so use it only for full-rank, well-conditioned features.
    ``blas_threads``: BLAS threads for this
    utility (None: unchanged for d ≥ 256, one thread for smaller matrices).
    """

    def __init__(
        self,
        features: Callable | None,
        reference: Any,
        *,
        batch_size: int | None = None,
        gram_limit: int = 6000,
        eig_dtype: str = "auto",
        blas_threads: int | None = None,
    ):
        if eig_dtype not in ("auto", "float32", "float64"):
            raise ValueError(
                f"unknown eig_dtype {eig_dtype!r}; expected 'auto', 'float32' or 'float64'"
            )
        self.eig_dtype = eig_dtype
        self.blas_threads = blas_threads
        self.features = features
        self.batch_size = batch_size
        self.gram_limit = int(gram_limit)
        if isinstance(reference, tuple):
            if len(reference) != 2:
                raise ValueError("reference as a tuple must be (mean, covariance)")
            mu_r = np.asarray(reference[0], dtype=np.float64).ravel()
            cov_r = np.asarray(reference[1], dtype=np.float64)
            if cov_r.shape != (mu_r.size, mu_r.size):
                raise ValueError(
                    f"reference covariance must be ({mu_r.size}, {mu_r.size}), got {cov_r.shape}"
                )
        else:
            R = np.asarray(to_numpy(reference, "reference"), dtype=np.float64)
            if R.ndim != 2 or R.shape[0] < 2:
                raise ValueError(f"reference must be (n_r ≥ 2, d) features, got shape {R.shape}")
            mu_r = R.mean(0)
            cov_r = np.cov(R, rowvar=False, ddof=0)
        if not (np.isfinite(mu_r).all() and np.isfinite(cov_r).all()):
            raise ValueError("reference contains NaN or inf")
        self.mu_r, self.cov_r = mu_r, cov_r
        self._ready = False

    def prepare(self, bank: Any) -> FID:
        with _blas_limit(self.mu_r.size, self.blas_threads):
            return self._prepare(bank)

    def _prepare(self, bank: Any) -> FID:
        feats = _features_per_label(bank, self.features, self.batch_size, "features")
        d = self.mu_r.size
        for f in feats:
            if f.shape[1] != d:
                raise ValueError(f"features have dimension {f.shape[1]}, the reference {d}")
        S = _sqrtm_psd(self.cov_r)
        self.n_labels = len(feats)
        self._counts = np.array([f.shape[0] for f in feats])
        self._mu = np.stack([f.mean(0) for f in feats])  # L × d
        self._sq = np.array([np.einsum("ij,ij->", f, f) / f.shape[0] for f in feats])  # E‖f‖²
        self._dt = np.float64
        if self.eig_dtype == "float32":
            self._dt = np.float32
        Y = [f @ S for f in feats]
        self._c = np.stack([y.mean(0) for y in Y])  # S μ_l
        self._tr_r = float(np.trace(self.cov_r))
        N = int(self._counts.sum())
        self._offsets = np.concatenate([[0], np.cumsum(self._counts)])
        self._gram = None
        if N <= self.gram_limit and N < d:
            Yall = np.concatenate(Y)
            self._gram = Yall @ Yall.T
        self._A = None
        if self._gram is None or N >= d:
            self._A = np.stack([(y.T @ y / y.shape[0]).astype(self._dt) for y in Y])  # L × d × d
        self._ready = True
        return self

    def _trace_sqrt(self, pi: np.ndarray) -> float:
        active = np.flatnonzero(pi > 0)
        n_active = int(self._counts[active].sum())
        d = self.mu_r.size
        if self._gram is not None and (n_active < d or self._A is None):
            idx = np.concatenate(
                [np.arange(self._offsets[i], self._offsets[i + 1]) for i in active]
            )
            w = np.repeat(pi[active] / self._counts[active], self._counts[active])
            u = np.sqrt(w)
            H = self._gram[np.ix_(idx, idx)] * u[:, None] * u[None, :]
            Hu = H @ u
            uHu = float(u @ Hu)
            M = H - np.outer(u, Hu) - np.outer(Hu, u) + uHu * np.outer(u, u)
        else:
            M = np.einsum("l,lij->ij", pi[active].astype(self._dt), self._A[active])
            c = (pi[active] @ self._c[active]).astype(self._dt)
            M -= np.outer(c, c)
        vals = _eigvalsh(M.astype(self._dt, copy=False))
        return float(np.sqrt(np.clip(vals, 0, None)).sum())

    def evaluate(self, weights: Any) -> np.ndarray:
        self._require()
        W = _check_weights(weights, self.n_labels)
        with _blas_limit(self.mu_r.size, self.blas_threads):
            return self._evaluate(W)

    def _evaluate(self, W: np.ndarray) -> np.ndarray:
        out = np.empty(W.shape[0])
        for k, pi in enumerate(W):
            mu = pi @ self._mu
            tr = float(pi @ self._sq - mu @ mu)
            diff = mu - self.mu_r
            out[k] = float(diff @ diff) + tr + self._tr_r - 2.0 * self._trace_sqrt(pi)
        return out


class InceptionScore(Utility):
    """Inception Score exp(E_x KL(p(y|x) ‖ p̄(y))) of the mixture (one split).

    Computed exactly from per-label statistics m_l = E[p(y|x)] and
    h_l = E[Σ_y p log p]: IS = exp(Σ_l π_l h_l − Σ_y p̄_y log p̄_y), p̄ = Σ_l π_l m_l.

    Args:
        class_probs: callable from bank samples to class probabilities (n × K); None when
            the bank already stores probabilities.
    Per coalition: O(L·K).
    """

    def __init__(self, class_probs: Callable | None = None, *, batch_size: int | None = None):
        self.class_probs = class_probs
        self.batch_size = batch_size
        self._ready = False

    def prepare(self, bank: Any) -> InceptionScore:
        probs = _features_per_label(bank, self.class_probs, self.batch_size, "class_probs")
        for p in probs:
            if (p < 0).any() or not np.allclose(p.sum(1), 1.0, atol=1e-4):
                raise ValueError("class_probs must return probabilities (rows ≥ 0 summing to 1)")
        self.n_labels = len(probs)
        self._m = np.stack([p.mean(0) for p in probs])
        self._h = np.array(
            [
                np.mean(np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0), 1))
                for p in probs
            ]
        )
        self._ready = True
        return self

    def evaluate(self, weights: Any) -> np.ndarray:
        self._require()
        W = _check_weights(weights, self.n_labels)
        pbar = W @ self._m
        ent = np.sum(np.where(pbar > 0, pbar * np.log(np.where(pbar > 0, pbar, 1)), 0), 1)
        return np.exp(W @ self._h - ent)


class MeanScore(Utility):
    """Mixture mean of a per-sample score: Σ_l π_l · mean_l(score).

    Args:
        score: callable from bank samples to one number per sample (n,) — an aesthetic
            predictor, LPIPS to a reference, CLIP score, any scorer; None when the bank
            already stores scores.
    Per coalition: O(L).
    """

    def __init__(self, score: Callable | None = None, *, batch_size: int | None = None):
        self.score = score
        self.batch_size = batch_size
        self._ready = False

    def prepare(self, bank: Any) -> MeanScore:
        vals = _features_per_label(bank, self.score, self.batch_size, "score")
        for v in vals:
            if v.shape[1] != 1:
                raise ValueError(f"score must return one number per sample, got {v.shape}")
        self.n_labels = len(vals)
        self._means = np.array([v.mean() for v in vals])
        self._ready = True
        return self

    def evaluate(self, weights: Any) -> np.ndarray:
        self._require()
        return _check_weights(weights, self.n_labels) @ self._means


class PairwiseDiversity(Utility):
    """Expected pair score of two independent draws from the mixture: πᵀ D π.

    D[l, l'] is the mean of ``pair_score`` over sample pairs of labels l and l' (distinct
    samples within a label), e.g. 1 − MS-SSIM or an LPIPS distance.

    Args:
        pair_score: callable (A (n_a, ...), B (n_b, ...)) → (n_a × n_b) scores.
    Preparation: L(L+1)/2 calls; per coalition: O(L²).
    """

    def __init__(self, pair_score: Callable[[np.ndarray, np.ndarray], Any]):
        if not callable(pair_score):
            raise TypeError("pair_score must be callable")
        self.pair_score = pair_score
        self._ready = False

    def prepare(self, bank: Any) -> PairwiseDiversity:
        labels = bank.labels
        L = len(labels)
        D = np.zeros((L, L))
        xs = [np.asarray(bank.samples(lab)) for lab in labels]
        for i in range(L):
            for j in range(i, L):
                s = np.asarray(
                    to_numpy(self.pair_score(xs[i], xs[j]), "pair_score output"), dtype=np.float64
                )
                if s.shape != (len(xs[i]), len(xs[j])):
                    raise ValueError(
                        f"pair_score returned shape {s.shape}, expected {(len(xs[i]), len(xs[j]))}"
                    )
                if i == j:
                    n = len(xs[i])
                    if n < 2:
                        raise ValueError(f"label {labels[i]!r} needs at least 2 samples for pairs")
                    D[i, i] = (s.sum() - np.trace(s)) / (n * (n - 1))
                else:
                    D[i, j] = D[j, i] = s.mean()
        self.n_labels = L
        self.D = D
        self._ready = True
        return self

    def evaluate(self, weights: Any) -> np.ndarray:
        self._require()
        W = _check_weights(weights, self.n_labels)
        return np.einsum("ml,lk,mk->m", W, self.D, W)


def _rank(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    ranks = np.empty(len(x))
    # average ranks of ties
    boundaries = np.flatnonzero(np.diff(xs) != 0) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(x)]])
    avg = (starts + ends - 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties); NaN-free inputs, O(n log n)."""
    ra, rb = _rank(np.asarray(a, float)), _rank(np.asarray(b, float))
    ra -= ra.mean()
    rb -= rb.mean()
    den = np.sqrt((ra @ ra) * (rb @ rb))
    return float(ra @ rb / den) if den > 0 else 0.0


class Resampled(Utility):
    """Any statistic of a sample set drawn from the mixture, with common random numbers.

    For each coalition, ``n_samples`` draws: label k by inverting the CDF of π at a fixed
    uniform u_k, then a stored sample of that label at a fixed uniform u'_k.  The same
    (u, u') serve every coalition, which lowers the variance of utility differences.

    Args:
        statistic: callable from the drawn per-sample features (n_samples × p) to a float.
        features: callable from bank samples to per-sample features (n, p); None when the
            bank already stores them.
        n_samples: draws per coalition.  seed: seeds the common random numbers.
    Per coalition: O(n_samples · (log L + p)) + the statistic.
    """

    def __init__(
        self,
        statistic: Callable[[np.ndarray], float],
        features: Callable | None = None,
        *,
        n_samples: int = 2048,
        seed: int = 0,
        batch_size: int | None = None,
    ):
        if not callable(statistic):
            raise TypeError("statistic must be callable")
        if n_samples < 2:
            raise ValueError(f"n_samples must be ≥ 2, got {n_samples}")
        self.statistic = statistic
        self.features = features
        self.n_samples = int(n_samples)
        self.seed = seed
        self.batch_size = batch_size
        self._ready = False

    def prepare(self, bank: Any) -> Resampled:
        feats = _features_per_label(bank, self.features, self.batch_size, "features")
        self.n_labels = len(feats)
        self._feats = feats
        rng = np.random.default_rng(self.seed)
        self._u = rng.random(self.n_samples)
        self._u2 = rng.random(self.n_samples)
        self._counts = np.array([f.shape[0] for f in feats])
        self._ready = True
        return self

    def draw(self, pi: np.ndarray) -> np.ndarray:
        """The resampled feature set (n_samples × p) for mixture weights π (L,)."""
        cdf = np.cumsum(pi)
        cdf[-1] = 1.0
        lab = np.minimum(np.searchsorted(cdf, self._u, side="right"), self.n_labels - 1)
        idx = np.minimum((self._u2 * self._counts[lab]).astype(np.int64), self._counts[lab] - 1)
        out = np.empty((self.n_samples, self._feats[0].shape[1]))
        for lval in np.unique(lab):
            sel = lab == lval
            out[sel] = self._feats[lval][idx[sel]]
        return out

    def evaluate(self, weights: Any) -> np.ndarray:
        self._require()
        W = _check_weights(weights, self.n_labels)
        return np.array([float(self.statistic(self.draw(pi))) for pi in W])


class ProbeCorrelation(Resampled):
    """Spearman correlation between two probes (e.g. sex and melanoma classifiers, §6) on
    a resampled mixture set, with common random numbers across coalitions.

    Args:
        f1, f2: callables from bank samples to one number per sample; with both None the
            bank must store two columns (probe 1, probe 2).
    """

    def __init__(
        self,
        f1: Callable | None = None,
        f2: Callable | None = None,
        *,
        n_samples: int = 2048,
        seed: int = 0,
        batch_size: int | None = None,
    ):
        if (f1 is None) != (f2 is None):
            raise ValueError("give both probes f1 and f2, or neither (bank stores two columns)")
        feats = None
        if f1 is not None:

            def feats(x):
                a = np.asarray(to_numpy(f1(x), "f1 output"), float).reshape(-1)
                b = np.asarray(to_numpy(f2(x), "f2 output"), float).reshape(-1)
                return np.stack([a, b], 1)

        super().__init__(
            lambda z: spearman(z[:, 0], z[:, 1]),
            feats,
            n_samples=n_samples,
            seed=seed,
            batch_size=batch_size,
        )

    def prepare(self, bank: Any) -> ProbeCorrelation:
        super().prepare(bank)
        if self._feats[0].shape[1] != 2:
            raise ValueError(f"probe features must have 2 columns, got {self._feats[0].shape[1]}")
        return self


__all__ = [
    "FID",
    "InceptionScore",
    "MeanScore",
    "PairwiseDiversity",
    "ProbeCorrelation",
    "Resampled",
    "Utility",
    "spearman",
]
