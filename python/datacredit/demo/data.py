"""scikit-learn's digits as 16x16 single-channel images in [0, 1], split once, seeded."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IMAGE_SIZE = 16
N_CLASSES = 10


@dataclass(frozen=True)
class DigitsSplit:
    """Train/test split of the digits.

    Attributes:
        x_train: ``(N, 1, 16, 16)`` float32 images in [0, 1].
        y_train: ``(N,)`` int64 labels 0..9 (also the contributor of each image).
        x_test, y_test: the held-out split, same layout.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def upsample(images8: np.ndarray) -> np.ndarray:
    """``(n, 8, 8)`` digit images (0..16) -> ``(n, 1, 16, 16)`` float32 in [0, 1] (bilinear)."""
    x = images8.astype(np.float32) / 16.0
    # Bilinear 2x upsampling with edge clamping, done in numpy so no torch is needed here.
    idx = (np.arange(IMAGE_SIZE) + 0.5) / 2 - 0.5
    lo = np.clip(np.floor(idx).astype(int), 0, 7)
    hi = np.clip(lo + 1, 0, 7)
    frac = np.clip(idx - lo, 0, 1).astype(np.float32)
    rows = x[:, lo, :] * (1 - frac)[None, :, None] + x[:, hi, :] * frac[None, :, None]
    out = rows[:, :, lo] * (1 - frac)[None, None, :] + rows[:, :, hi] * frac[None, None, :]
    return out[:, None].astype(np.float32)


def load_split(test_fraction: float = 0.25, seed: int = 0) -> DigitsSplit:
    """Stratified, seeded split of ``sklearn.datasets.load_digits`` (1,797 images)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = upsample(digits.images)
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    return DigitsSplit(x_tr, y_tr, x_te, y_te)


def flip_labels(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Copy of ``y`` with ``fraction`` of labels changed to a different random class.

    Returns ``(noisy_labels, is_flipped)``; ``y`` itself is not modified.
    """
    rng = np.random.default_rng(seed)
    noisy = y.copy()
    flipped = np.zeros(len(y), dtype=bool)
    idx = rng.choice(len(y), size=int(round(fraction * len(y))), replace=False)
    noisy[idx] = (y[idx] + rng.integers(1, N_CLASSES, size=len(idx))) % N_CLASSES
    flipped[idx] = True
    return noisy, flipped
