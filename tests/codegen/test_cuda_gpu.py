"""The GPU tier: target="cuda" programs on a real GPU, against the reference.

Marked `gpu`: skipped (and reported as skipped) where there is no NVIDIA GPU
with CuPy; run by a session lent a GPU machine. The same models and bounds
as the emulated tests in test_cuda_target.py, plus the fatbin-vs-NVRTC
choice of the loader.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lpcc
from lpcc import config
from lpcc.models import MLP, TinyLlama

pytestmark = pytest.mark.gpu

REL = 2e-4  # as test_cuda_target.py


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    scale = float(b.abs().max()) or 1.0
    err = float((a - b).abs().max())
    assert err <= REL * scale, f"max error {err:.3g} vs scale {scale:.3g}"


@pytest.mark.parametrize("quant", [None, "int4-g32", "int3-g32", "int2-g32"])
@pytest.mark.parametrize("name", ["mlp", "llama"])
def test_models_on_the_gpu_match_the_reference(name: str, quant: str | None) -> None:
    torch.manual_seed(0)
    if name == "mlp":
        model, xs = MLP(seed=0).eval(), (torch.randn(3, 16),)
    else:
        model, xs = TinyLlama(seed=0).eval(), (torch.randint(0, 60, (2, 20)),)
    cm = lpcc.compile(model, xs, quant=quant, target="cuda")
    ref = lpcc.compile(model, xs, quant=quant, target="reference")
    with torch.no_grad(), config.override(cuda_device="gpu"):
        _close(cm(*xs), ref(*xs))


def test_nvrtc_path_gives_the_same_results() -> None:
    """Without fatbins (cuda_archs none) the loader compiles with NVRTC."""
    model, xs = MLP(seed=0).eval(), (torch.randn(3, 16),)
    with config.override(cuda_archs=()):
        src_only = lpcc.compile(model, xs, quant="int4-g32", target="cuda")
    fat = lpcc.compile(model, xs, quant="int4-g32", target="cuda")
    with torch.no_grad(), config.override(cuda_device="gpu"):
        np.testing.assert_array_equal(src_only(*xs).numpy(), fat(*xs).numpy())
