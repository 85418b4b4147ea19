"""Factories for CLI config probes."""

import numpy as np

_RNG = np.random.default_rng(0)
TRAIN = _RNG.standard_normal((300, 8)).astype(np.float32)
GEN = TRAIN[:20] + 0.01 * _RNG.standard_normal((20, 8)).astype(np.float32)


def train_data():
    return TRAIN


def generated():
    return GEN


def tiny_classifier():
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).eval()


def tiny_train():
    rng = np.random.default_rng(1)
    return rng.standard_normal((60, 4)).astype(np.float32), rng.integers(0, 3, 60)


def tiny_test():
    return np.random.default_rng(2).standard_normal((5, 4)).astype(np.float32)


def generator():
    def generate(label, n, seed):
        rng = np.random.default_rng(seed)
        return np.stack([np.full(n, float(label)), rng.standard_normal(n)], 1)

    return generate


def utility():
    from datacredit.surrogateshap.utilities import MeanScore

    return MeanScore(lambda x: x[:, 0], higher_is_better=True)


def not_callable():
    return 42


def boom():
    raise RuntimeError("factory failed")


def contributors():
    return {"a": [1], "b": [2], "c": [3]}
