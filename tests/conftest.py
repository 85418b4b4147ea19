"""Shared test fixtures and markers."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# Hypothesis profiles.  "dev" (default) is hypothesis' usual randomized search; "ci" is
# derandomized (the examples are a pure function of the test, no example database), so a
# CI run is reproducible and never flaky; "nightly" searches much harder, by hand:
#   HYPOTHESIS_PROFILE=nightly pytest tests/
# CI=true (set by .ci/run) selects "ci"; HYPOTHESIS_PROFILE overrides either.
# A test's own @settings(max_examples=...) still wins over the profile's count: a test that
# wants more than the default takes max_examples=_hypothesis_counts.at_least(n) instead.
settings.register_profile("dev", deadline=None)
settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=50,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "nightly",
    max_examples=2000,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(
    os.environ.get(
        "HYPOTHESIS_PROFILE",
        "ci" if os.environ.get("CI", "").lower() in ("1", "true", "yes") else "dev",
    )
)


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config, items):
    if _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)
