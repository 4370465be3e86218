"""Shared test setup: Hypothesis profiles.

`ci` (the default) is derandomized so a red CI run reproduces locally; set
HYPOTHESIS_PROFILE=dev for fresh random examples while developing.
"""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    max_examples=150,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None, max_examples=500)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
