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


def pytest_collection_modifyitems(config: object, items: list) -> None:
    """Skip `gpu` tests, with the reason shown, where no GPU and CuPy are."""
    import pytest

    gpu = [item for item in items if "gpu" in item.keywords]
    if not gpu:
        return
    from lpcc.codegen.cuda.runner import gpu_available

    if gpu_available():
        return
    skip = pytest.mark.skip(reason="gpu tier: no NVIDIA GPU with CuPy on this machine")
    for item in gpu:
        item.add_marker(skip)
