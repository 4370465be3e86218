"""Generated CUDA C compiles with NVRTC (lpcc's run-time compiler on a GPU).

Needs libnvrtc and cuda_fp16.h (the `nvidia-cuda-nvrtc` and
`nvidia-cuda-runtime` CUDA 13 wheels, or a toolkit); no GPU, no cupy.
"""

from __future__ import annotations

import pytest

from lpcc.codegen.cuda import nvrtc
from lpcc.codegen.cuda.kernel import PRELUDE
from lpcc.codegen.cuda.kernels import gemv
from lpcc.codegen.cuda.nvcc import CudaCompileError

_WHY = nvrtc.available()
pytestmark = pytest.mark.skipif(_WHY is not None, reason=f"NVRTC: {_WHY}")


@pytest.mark.parametrize(
    ("bits", "signed", "zero", "act"),
    [(4, True, False, "f16"), (3, False, True, "bf16"), (8, True, False, "f16")],
)
def test_gemv_compiles(bits: int, signed: bool, zero: bool, act: str) -> None:
    src, name, _ = gemv.gemv_source(bits, signed, 32, zero, act, 64, 8, ms=(1, 3))
    for arch in ("sm_80", "sm_90"):
        ptx = nvrtc.compile_ptx(src, arch)
        assert f".target {arch}" in ptx
        for m in (1, 3):
            assert f".entry {name}_m{m}(" in ptx


def test_prelude_kernel_compiles() -> None:
    src = PRELUDE + (
        'extern "C" __global__ void k(const float* __restrict__ in0, float* out0,'
        " long long s0, int* status) {\n"
        "  long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;\n"
        "  if (i < s0) out0[i] = __half2float(__float2half(in0[i]));\n"
        "}\n"
    )
    assert ".entry k(" in nvrtc.compile_ptx(src, "sm_80")


def test_error_has_log() -> None:
    src = 'extern "C" __global__ void k(int* y) { y[0] = undeclared_thing; }'
    with pytest.raises(CudaCompileError, match=r"(?s)k\.cu.*undeclared_thing"):
        nvrtc.compile_ptx(src, "sm_80", name="k.cu")
    with pytest.raises(CudaCompileError, match=r"arch='80'"):
        nvrtc.compile_ptx(src, "80")
