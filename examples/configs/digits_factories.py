"""Factories named by the example configs of this directory (scikit-learn's digits, offline).

The CLI puts the config's directory on the import path, so ``digits_factories:train_images``
finds this file wherever the command runs. Each factory is called with no arguments.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=1)
def _split():
    from datacredit.demo.data import load_split

    return load_split()  # (N, 1, 16, 16) float32 in [0, 1], labels 0..9


# ----------------------------------------------------------------------------- DualDA
def classifier():
    """The demo's small CNN, trained for one epoch (seconds): its last Linear is "classifier"."""
    import torch

    from datacredit.demo.training import train_classifier

    torch.set_num_threads(1)
    split = _split()
    return train_classifier(split.x_train, split.y_train, epochs=1, progress=False)


def train_pairs():
    """Training data as an ``(X, y)`` pair."""
    split = _split()
    return split.x_train, split.y_train


def test_images():
    """The first 20 test images ``(20, 1, 16, 16)``."""
    return _split().x_test[:20]


# ----------------------------------------------------------------------------- GMValuator
def train_images():
    return _split().x_train


def generated_images():
    """Stand-in for generated images: noisy copies of 40 test digits, in [0, 1]."""
    rng = np.random.default_rng(0)
    x = _split().x_test[:40]
    return np.clip(x + 0.1 * rng.standard_normal(x.shape), 0, 1).astype(np.float32)


def digit_of_each_training_image():
    """Contributor id per training image (here: its digit)."""
    return _split().y_train


# ----------------------------------------------------------------------------- SurrogateSHAP
def generator():
    """``generate(label, n, seed)``: stand-in for a class-conditional generator (noisy
    training digits of the label, as 256-d pixel vectors)."""
    split = _split()
    x, y = split.x_train.reshape(-1, 256), split.y_train

    def generate(label, n, seed):
        rng = np.random.default_rng(seed)
        pool = x[y == label]
        return pool[rng.integers(0, len(pool), n)] + 0.05 * rng.standard_normal((n, 256))

    return generate


def fid_to_test_digits():
    """FID (a loss: lower is better) of the coalition's samples to the test digits, on raw
    pixels (the bank holds the features). A helpful contributor gets a negative Shapley
    value for FID (a positive one for -FID)."""
    from datacredit.surrogateshap.utilities import FID

    return FID(None, reference=_split().x_test.reshape(-1, 256))


def fid_of_noise() -> float:
    """The empty coalition's FID written in surrogateshap_digits.yaml: uniform noise images
    (what a model trained on no data draws) against the same reference."""
    from datacredit.surrogateshap import SampleBank

    noise = SampleBank({0: np.random.default_rng(1).random((60, 256))})
    return float(fid_to_test_digits().prepare(noise).evaluate(np.ones((1, 1)))[0])


if __name__ == "__main__":
    print(f"fid_of_noise() = {fid_of_noise():.3f}")
