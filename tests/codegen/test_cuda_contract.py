"""The CUDA generator contract: C text helpers, the runner, device selection.

No generator is involved: kernels are written by hand here, so a bug in the
contract cannot hide behind the generators that use it.
"""

from __future__ import annotations

import ast

import numpy as np
import pytest
from lpcc.runtime.kernels import ExecutionError, RuntimeDependencyError
from xdsl.dialects import func

from lpcc import config
from lpcc.codegen.cuda import emu
from lpcc.codegen.cuda.kernel import (
    PRELUDE,
    CudaRequest,
    _c_expr,
    c_dim,
    ctype,
    signature,
)
from lpcc.codegen.cuda.runner import cuda_kernel_fn, gpu_available, resolve_device
from lpcc.errors import IRError, LpccError
from lpcc.ir import dtypes
from lpcc.ir.dialect import parse_module

pytestmark = pytest.mark.skipif(not emu.available(), reason="g++ is not installed")

FN = """
func.func @kernel(%a: tensor<?x3xf32> {lp.dims = "s0,3"},
                  %i: tensor<4x!lp.int<64>>) -> tensor<?x3xf32> {
  %c = lp.neg %a {lp.dims = "s0,3"} : tensor<?x3xf32>
  func.return %c : tensor<?x3xf32>
}
"""


def _request() -> CudaRequest:
    module = parse_module(FN)
    fn = next(op for op in module.ops if isinstance(op, func.FuncOp))
    return CudaRequest(fn, "sm_80", frozenset({1}), "k")


@pytest.mark.parametrize(
    ("name", "c"),
    [
        ("f32", "float"),
        ("f16", "float"),
        ("f8e4m3fn", "float"),
        ("int4", "lp_i8"),
        ("uint3", "lp_u8"),
        ("int64", "lp_i64"),
        ("int32", "lp_i32"),
        ("uint1", "lp_bool"),
    ],
)
def test_ctype_is_the_value_domain(name: str, c: str) -> None:
    assert ctype(dtypes.dtype(name)) == c


def test_signature_follows_the_calling_convention() -> None:
    req = _request()
    assert req.sm == 80
    assert signature(req, ["s0"], scratch=1, repacked=[1]) == (
        "const float* __restrict__ in0, const unsigned char* __restrict__ in1, "
        "float* __restrict__ out0, unsigned char* __restrict__ scratch0, "
        "long long s0, int* __restrict__ status"
    )


@pytest.mark.parametrize(
    ("expr", "env"),
    [
        ("2*s0 + 3", {"s0": 5}),
        ("s0//4", {"s0": 9}),
        ("-s0//4", {"s0": 9}),
        ("s0 % 4", {"s0": 11}),
        ("Max(s0, s1, 7)", {"s0": 3, "s1": 9}),
        ("Min(s0, 2)", {"s0": 3}),
        ("CeilDiv(s0, 128)", {"s0": 129}),
        ("FloorDiv(s0 - 10, 3)", {"s0": 2}),
        ("Mod(s0 - 10, 3)", {"s0": 2}),
    ],
)
def test_c_dim_agrees_with_python(expr: str, env: dict[str, int]) -> None:
    """The C text of a size, compiled and run, equals Python's arithmetic."""
    used: list[str] = []
    text = c_dim(expr, used)
    assert sorted(used) == sorted(env)
    params = ", ".join(f"long long {s}" for s in used)
    src = PRELUDE + (
        f'extern "C" __global__ void f(lp_i64* out, {params}) {{ out[0] = {text}; }}'
    )
    out = np.zeros(1, np.int64)
    emu.emulate(src, "f", 1, 1, [out, *[env[s] for s in used]])
    py = {"Max": max, "Min": min, "CeilDiv": lambda a, b: -(-a // b)}
    py |= {"FloorDiv": lambda a, b: a // b, "Mod": lambda a, b: a % b}
    assert out[0] == eval(expr, py, dict(env))


def test_c_dim_of_an_int_and_a_bad_expression() -> None:
    assert c_dim(12) == "12LL"
    with pytest.raises(LpccError, match=r"s0 \*\* 2"):
        c_dim("s0 ** 2")  # not a size expression
    with pytest.raises(IRError, match="cannot write size expression"):
        _c_expr(ast.parse("s0 / 2", mode="eval").body, [])


SCALE = (
    PRELUDE
    + r"""
extern "C" __global__ void scale(const float* __restrict__ in0,
    float* __restrict__ out0, unsigned char* __restrict__ scratch0, long long s0,
    int* __restrict__ status) {
  long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
  if (scratch0[0] != 0) atomicExch(status, 2);  /* scratch starts zeroed */
  if (i < s0) {
    if (in0[i] < 0) atomicExch(status, 1);
    out0[i] = 2.0f * in0[i];
  }
}
"""
)

META = {
    "launches": [
        {"entry": "scale", "grid": ["CeilDiv(s0, 4)", 1, 1], "block": [4, 1, 1]},
    ],
    "symbols": ["s0"],
    "scratch": [16],
    "errors": {"1": "lp.test: a negative input"},
}


def test_runner_launches_with_symbols_scratch_and_status() -> None:
    run = cuda_kernel_fn("k_scale", SCALE, META, {}, device="emulate")
    x = np.arange(1, 11, dtype=np.float32)
    out = np.zeros(10, np.float32)
    run([x], [out], {"s0": 10})
    np.testing.assert_array_equal(out, 2 * x)
    run([x[:0]], [out[:0]], {"s0": 0})  # an empty grid launches nothing
    x[3] = -1
    with pytest.raises(ExecutionError, match=r"k_scale.*negative input"):
        run([x], [out], {"s0": 10})


def test_runner_rejects_bad_meta() -> None:
    with pytest.raises(ValueError, match="bad CUDA kernel meta"):
        cuda_kernel_fn("k", SCALE, {"symbols": []}, {}, device="emulate")


def test_device_is_chosen_at_the_first_call() -> None:
    """Loading needs nothing; the call reads LPCC_CUDA_DEVICE."""
    run = cuda_kernel_fn("k_scale", SCALE, META, {})
    x = np.ones(3, np.float32)
    out = np.zeros(3, np.float32)
    with config.override(cuda_device="emulate"):
        run([x], [out], {"s0": 3})
    assert out.tolist() == [2.0, 2.0, 2.0]


@pytest.mark.skipif(gpu_available(), reason="this machine has a GPU")
def test_no_gpu_error_names_the_ways_out() -> None:
    with pytest.raises(RuntimeDependencyError, match="LPCC_CUDA_DEVICE=emulate"):
        resolve_device("auto")
    with pytest.raises(RuntimeDependencyError, match=r"cupy|CuPy"):
        resolve_device("gpu")
    assert resolve_device("emulate") == "emulate"
