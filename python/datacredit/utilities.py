"""Deprecated alias of :mod:`datacredit.surrogateshap.utilities` (kept for one release)."""

import warnings

from datacredit.surrogateshap.utilities import *  # noqa: F401,F403
from datacredit.surrogateshap.utilities import __all__  # noqa: F401

warnings.warn(
    "datacredit.utilities moved to datacredit.surrogateshap.utilities; the old path will be "
    "removed in the next release",
    DeprecationWarning,
    stacklevel=2,
)
