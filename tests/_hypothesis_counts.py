"""Example counts of hypothesis tests that want more examples than a profile's default, yet
follow the active profile (the profiles are registered in ``tests/conftest.py``)."""

from __future__ import annotations

from hypothesis import settings


def at_least(floor: int) -> int:
    """``max_examples`` for a test that wants at least ``floor`` examples.

    ``floor`` under a profile that sets no count of its own ("dev": hypothesis' default) or
    a smaller one ("ci": 50; derandomized, so each CI run draws the same ``floor``
    examples); the profile's count where it sets a larger one ("nightly": 2000).  A literal
    ``@settings(max_examples=floor)`` would pin ``floor`` under every profile, nightly
    included.  Read when the test module is imported, after conftest loaded the profile.
    """
    count = settings.get_profile(settings.get_current_profile_name()).max_examples
    if count == settings.get_profile("default").max_examples:
        return floor  # the profile leaves hypothesis' default: no count of its own
    return max(floor, count)
