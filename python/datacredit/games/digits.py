"""A real-data fidelity check for the proxy game: scikit-learn digits, cheap to retrain.

The class-conditional generator is "PCA on the training images + one Gaussian per class in
PCA space", decoded back to pixels.  Retraining on a coalition's digits refits the PCA
(the shared representation) and the class Gaussians on those digits only, so the
retrained conditionals differ from the full model's — the proxy game (full-model
conditionals, mixed over the coalition's labels) then approximates the retraining game,
and both can be enumerated over all 2^10 coalitions.

The utility is FID (pixel features) of the generated mixture to the held-out test images,
or the Inception Score under a logistic-regression digit classifier trained on real data;
class priors follow the training counts (eq. 4).  Common random numbers: each class uses
the same latent noise in every model.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class _PCAGaussian:
    def __init__(self, X: np.ndarray, y: np.ndarray, classes, n_components: int, shrink: float):
        self.mean = X.mean(0)
        Xc = X - self.mean
        _, _, vt = np.linalg.svd(Xc, full_matrices=False)
        k = min(n_components, vt.shape[0])
        self.basis = vt[:k]  # k × 64
        self.params = {}
        for c in classes:
            Zc = Xc[y == c] @ self.basis.T
            mu = Zc.mean(0)
            cov = np.cov(Zc, rowvar=False, ddof=1) if len(Zc) > 1 else np.zeros((k, k))
            cov = (1 - shrink) * cov + shrink * np.eye(k) * np.trace(cov) / k + 1e-6 * np.eye(k)
            self.params[c] = (mu, np.linalg.cholesky(cov))

    def sample(self, c: int, noise: np.ndarray) -> np.ndarray:
        mu, chol = self.params[c]
        k = mu.shape[0]
        z = mu + noise[:, :k] @ chol.T
        return self.mean + z @ self.basis


class DigitsRetraining:
    """Both games on ``sklearn.datasets.load_digits`` with the 10 digits as players.

    Attributes after construction:
        retraining_game: callable bool (m × 10) → utility of the retrained generator; v(∅) =
            ``empty_value``, the utility of a model that outputs the mean training image.
        proxy_game: :class:`ProxyGame` on the full model's sample bank (same utility).
        bank: the full model's sample bank (pixels).
        counts: training images per digit.

    Args: utility ("fid" or "is"), n_components (PCA size), n_per_label (samples per class), shrink (covariance
    shrinkage), test_size, seed.  Each retraining query: one SVD of ≤ 1,400 × 64 + sampling
    + a 64-d FID.
    """

    def __init__(
        self,
        *,
        utility: str = "fid",
        n_components: int = 12,
        n_per_label: int = 300,
        shrink: float = 0.1,
        test_size: float = 0.3,
        seed: int = 0,
    ):
        from datacredit._arrays import check_choice
        from datacredit._blas import blas_limit as _blas_limit

        self.utility_kind = check_choice(utility, "utility", ("fid", "is"))
        with _blas_limit(64):
            self._setup(n_components, n_per_label, shrink, test_size, seed)

    def _make_utility(self):
        from datacredit.surrogateshap.utilities import FID, InceptionScore

        if self.utility_kind == "fid":
            return FID(None, self.X_test)
        return InceptionScore(self._clf.predict_proba)

    def _setup(self, n_components, n_per_label, shrink, test_size, seed):
        from sklearn.datasets import load_digits
        from sklearn.linear_model import LogisticRegression

        from datacredit.surrogateshap import ProxyGame, SampleBank

        X, y = load_digits(return_X_y=True)
        X = X.astype(np.float64) / 16.0
        rng = np.random.default_rng(seed)
        perm = rng.permutation(len(X))
        n_test = int(round(test_size * len(X)))
        test, train = perm[:n_test], perm[n_test:]
        self.X_train, self.y_train = X[train], y[train]
        self.X_test = X[test]
        self.classes = list(range(10))
        self.players = [str(c) for c in self.classes]
        self.counts = np.array([(self.y_train == c).sum() for c in self.classes], dtype=np.float64)
        self.n_components, self.shrink = n_components, shrink
        self.noise = {c: rng.standard_normal((n_per_label, 64)) for c in self.classes}
        if self.utility_kind == "is":
            self._clf = LogisticRegression(max_iter=2000).fit(self.X_train, self.y_train)
        self._fid = self._make_utility()
        full = _PCAGaussian(self.X_train, self.y_train, self.classes, n_components, shrink)
        self.bank = SampleBank({c: full.sample(c, self.noise[c]) for c in self.classes})
        # v(∅): FID of the untrained model's output, the mean training image plus tiny noise
        blank = SampleBank(
            {
                0: np.tile(self.X_train.mean(0), (n_per_label, 1))
                + 1e-3 * rng.standard_normal((n_per_label, 64))
            }
        )
        self.empty_value = float(self._make_utility().prepare(blank).evaluate(np.ones((1, 1)))[0])
        self.proxy_game = ProxyGame(
            self.bank,
            {p: [c] for p, c in zip(self.players, self.classes)},
            self._make_utility(),
            label_weights=self.counts,
            empty_value=self.empty_value,
        )
        self._cache: dict[bytes, float] = {}

    def retrain_utility(self, z: np.ndarray) -> float:
        """FID of the generator retrained on the digits in coalition z (10,)."""
        from datacredit._blas import blas_limit as _blas_limit

        with _blas_limit(64):
            return self._retrain_utility(z)

    def _retrain_utility(self, z: np.ndarray) -> float:
        from datacredit.surrogateshap import SampleBank

        z = np.asarray(z, dtype=bool)
        key = z.tobytes()
        if key in self._cache:
            return self._cache[key]
        cls = [c for c in self.classes if z[c]]
        if not cls:
            val = self.empty_value
        else:
            keep = np.isin(self.y_train, cls)
            model = _PCAGaussian(
                self.X_train[keep], self.y_train[keep], cls, self.n_components, self.shrink
            )
            bank = SampleBank({c: model.sample(c, self.noise[c]) for c in cls})
            pi = self.counts[cls] / self.counts[cls].sum()
            val = float(self._fid.prepare(bank).evaluate(pi[None])[0])
        self._cache[key] = val
        return val

    def retraining_game(self, Z: Any) -> np.ndarray:
        """Retrained utilities of coalitions ``Z`` ``(m, 10)`` bool (one column per digit): ``(m,)``."""
        Z = np.asarray(Z, dtype=bool)
        if Z.ndim != 2 or Z.shape[1] != 10:
            raise ValueError(f"Z must have shape (m, 10), got {Z.shape}")
        return np.array([self.retrain_utility(z) for z in Z])
