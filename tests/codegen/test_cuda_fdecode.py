"""Shift-mask-multiply float decode (kernels/fdecode.py) against DType.decode.

Every code of every format, run under the host emulator and compared bit for
bit with the codec (NaN with NaN); the formats whose special codes the
trick gets wrong show that the generated selects fix exactly those.
"""

from __future__ import annotations

import numpy as np
import pytest

import lpcc
from lpcc.codegen.cuda import emu, nvcc
from lpcc.codegen.cuda.kernel import PRELUDE
from lpcc.codegen.cuda.kernels.fdecode import float_decode

pytestmark = pytest.mark.skipif(not emu.available(), reason="g++ is not installed")

FORMATS = [
    "f4e2m1",
    "f6e2m3",
    "f6e3m2",
    "f8e4m3fn",
    "f8e5m2",
    "f8e4m3fnuz",
    "f8e5m2fnuz",
    "f16",
    "bf16",
    "float<3,0,fn>",
    "float<1,2,finite>",
]


def _source(names: list[str]) -> str:
    body = []
    for i, name in enumerate(names):
        expr = float_decode(lpcc.dtype(name), "c")
        assert expr is not None, name
        body.append(f"  if (which == {i}) out[c] = {expr};")
    return PRELUDE + (
        'extern "C" __global__ void decode(float* out, int which, int n) {\n'
        "  const unsigned c = blockIdx.x * blockDim.x + threadIdx.x;\n"
        "  if ((int)c >= n) return;\n" + "\n".join(body) + "\n}\n"
    )


SOURCE = _source(FORMATS)


@pytest.mark.parametrize("name", FORMATS)
def test_every_code_decodes_as_the_codec(name: str) -> None:
    dt = lpcc.dtype(name)
    n = 1 << dt.bits
    out = np.full(n, 12345.0, np.float32)
    emu.emulate(SOURCE, "decode", -(-n // 256), 256, [out, FORMATS.index(name), n])
    want = dt.decode(np.arange(n).astype(dt.code_dtype)).astype(np.float32)
    same = (out.view(np.uint32) == want.view(np.uint32)) | (
        np.isnan(out) & np.isnan(want)
    )
    assert same.all(), (name, np.flatnonzero(~same)[:8])


def test_specials_are_selected_and_wide_formats_declined() -> None:
    # f8e4m3fn: +-NaN at 0x7f/0xff, which the trick reads as +-480
    assert float_decode(lpcc.dtype("f8e4m3fn"), "c").count("==") == 2
    # f6e2m3 ("finite"): no special code, the bare trick
    assert "==" not in float_decode(lpcc.dtype("f6e2m3"), "c")
    assert float_decode(lpcc.dtype("f32"), "c") is None  # 32-bit codes
    assert float_decode(lpcc.dtype("int4"), "c") is None


def test_decode_compiles_with_nvcc() -> None:
    assert nvcc.compile_cuda(SOURCE, "sm_80")
