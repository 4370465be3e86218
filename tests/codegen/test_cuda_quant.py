"""lp.quantize / lp.dequantize CUDA kernels under the host emulator.

Both compute in f64 exactly as the interpreter, so results are compared bit
for bit; the inputs include ties (x / s = k + 0.5), values past the type's
range, NaN, a zero point, a short last block and a dynamic row count.
"""

from __future__ import annotations

import numpy as np
import pytest
from xdsl.dialects import func

from lpcc.codegen.cuda import emu, nvcc
from lpcc.codegen.cuda.lower import lower_kernel, run_cuda
from lpcc.ir import interp
from lpcc.ir.dialect import parse_module

pytestmark = pytest.mark.skipif(not emu.available(), reason="g++ is not installed")

QUANT = """
func.func @kernel(%x: tensor<?x40xf32> {lp.dims = "s0,40"},
                  %s: tensor<?x2xf32> {lp.dims = "s0,2"}) -> tensor<?x40x!lp.int<8>> {
  %q = lp.quantize %x scale %s block [1, 32] {lp.dims = "s0,40"}
    : (tensor<?x40xf32>, tensor<?x2xf32>) -> tensor<?x40x!lp.int<8>>
  func.return %q : tensor<?x40x!lp.int<8>>
}
"""

QUANT_ZERO = """
func.func @kernel(%x: tensor<3x20xf32>, %s: tensor<3x3xf16>,
                  %z: tensor<3x3x!lp.uint<4>>) -> tensor<3x20x!lp.uint<4>> {
  %q = lp.quantize %x scale %s zero %z block [1, 8]
    : (tensor<3x20xf32>, tensor<3x3xf16>, tensor<3x3x!lp.uint<4>>)
    -> tensor<3x20x!lp.uint<4>>
  func.return %q : tensor<3x20x!lp.uint<4>>
}
"""

DEQUANT = """
func.func @kernel(%q: tensor<5x24x!lp.int<3>>, %s: tensor<5x3xf16>,
                  %z: tensor<5x3x!lp.int<3>>) -> tensor<5x24xf32> {
  %w = lp.dequantize %q scale %s zero %z block [1, 8]
    : (tensor<5x24x!lp.int<3>>, tensor<5x3xf16>, tensor<5x3x!lp.int<3>>)
    -> tensor<5x24xf32>
  func.return %w : tensor<5x24xf32>
}
"""


def _fn(text: str) -> func.FuncOp:
    return next(op for op in parse_module(text).ops if isinstance(op, func.FuncOp))


def _same(fn: func.FuncOp, xs: list[np.ndarray]) -> None:
    (want,) = interp.run_function(fn, xs)
    got = run_cuda(fn, xs, device="emulate")
    assert got is not None, "no CUDA generator took the op"
    assert got[0].dtype == want.dtype
    np.testing.assert_array_equal(got[0], want)


@pytest.mark.parametrize("rows", [1, 3])
def test_quantize_rounds_ties_to_even_saturates_and_zeroes_nan(rows: int) -> None:
    rng = np.random.default_rng(rows)
    s = rng.uniform(0.01, 0.1, (rows, 2)).astype(np.float32)
    x = (rng.standard_normal((rows, 40)) * 4).astype(np.float32)
    x[0, :4] = [2.5 * s[0, 0], -3.5 * s[0, 0], 1e6, -1e6]  # ties, saturation
    x[0, 5] = np.nan
    x[0, 39] = 0.5 * s[0, 1]  # the short last block's tie
    _same(_fn(QUANT), [x, s])


def test_quantize_with_a_zero_point() -> None:
    rng = np.random.default_rng(7)
    x = rng.uniform(-1, 1, (3, 20)).astype(np.float32)
    s = np.float16(rng.uniform(0.05, 0.2, (3, 3))).astype(np.float32)
    z = rng.integers(0, 16, (3, 3)).astype(np.uint8)
    _same(_fn(QUANT_ZERO), [x, s, z])


def test_dequantize_with_a_zero_point() -> None:
    rng = np.random.default_rng(8)
    q = rng.integers(-4, 4, (5, 24)).astype(np.int8)
    s = np.float16(rng.uniform(0.05, 0.2, (5, 3))).astype(np.float32)
    z = rng.integers(-4, 4, (5, 3)).astype(np.int8)
    _same(_fn(DEQUANT), [q, s, z])


def test_quant_kernels_compile_with_nvcc() -> None:
    for text in (QUANT, QUANT_ZERO, DEQUANT):
        ck = lower_kernel(_fn(text), "sm_80")
        assert ck is not None
        for arch in ("sm_80", "sm_90"):
            assert nvcc.compile_cuda(ck.source, arch)
