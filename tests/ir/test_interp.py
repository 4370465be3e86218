"""The reference interpreter against torch eager, one line per case.

Each case builds a one-op function with the dialect's builders, runs it in
the interpreter and compares with the torch function that defines the op's
semantics. Shapes are odd on purpose (1, 3, 5, 33).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import ml_dtypes
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from xdsl.builder import ImplicitBuilder
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import SSAValue

import lpcc
from lpcc.errors import IRError
from lpcc.ir import interp
from lpcc.ir.dialect import ops as lp
from lpcc.ir.dialect import parse_module, tensor_type, verify_module

F32 = lpcc.dtype("f32")
I64 = lpcc.int_(64)
RNG = np.random.default_rng(0)


def _dtype_of(a: np.ndarray) -> lpcc.DType:
    return {
        np.dtype(np.float32): F32,
        np.dtype(np.int64): I64,
        np.dtype(np.bool_): lpcc.uint_(1),
    }[a.dtype]


def run(build: Callable[..., object], *inputs: np.ndarray) -> np.ndarray:
    """Build fn(*inputs) -> build(*args), verify it, run it in the interpreter."""
    types = [tensor_type(_dtype_of(a), a.shape) for a in inputs]
    module = ModuleOp([])
    with ImplicitBuilder(module.body):
        fn = func.FuncOp("main", (types, []))
        with ImplicitBuilder(fn.body) as args:
            out = build(*args)
            value = out if isinstance(out, SSAValue) else out.results[0]
            func.ReturnOp(value)
    fn.function_type = func.FunctionType.from_lists(types, [value.type])
    verify_module(module)
    (result,) = interp.run_module(module, list(inputs))
    return result


def check(
    build: Callable[..., object],
    torch_fn: Callable[..., torch.Tensor],
    *inputs: np.ndarray,
    rtol: float = 1e-6,
) -> None:
    got = run(build, *inputs)
    want = torch_fn(*(torch.from_numpy(np.ascontiguousarray(a)) for a in inputs))
    want = want.numpy()
    assert got.shape == want.shape
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    if want.dtype.kind == "f":
        assert np.array_equal(np.isnan(got), np.isnan(want))
        ok = ~np.isnan(want)
        scale = max(float(np.max(np.abs(want[ok]), initial=0)), 1e-30)
        err = float(np.max(np.abs(got[ok] - want[ok]), initial=0)) / scale
        assert err <= rtol, err
    else:
        assert np.array_equal(got, want)


def randn(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def positive(*shape: int) -> np.ndarray:
    return (RNG.random(shape) + 0.1).astype(np.float32)


def ints(hi: int, *shape: int) -> np.ndarray:
    return RNG.integers(0, hi, shape).astype(np.int64)


BINARY = [
    (lp.AddOp, torch.add),
    (lp.SubOp, torch.sub),
    (lp.MulOp, torch.mul),
    (lp.DivOp, torch.div),
    (lp.MaxOp, torch.maximum),
    (lp.MinOp, torch.minimum),
]


@pytest.mark.parametrize(("op", "fn"), BINARY)
@pytest.mark.parametrize(
    ("a", "b"), [((3, 33), (3, 33)), ((1, 5), (3, 1)), ((1,), (1,))]
)
def test_binary(op: type, fn: Callable, a: Sequence[int], b: Sequence[int]) -> None:
    check(op, fn, randn(*a), positive(*b))


def test_pow() -> None:
    check(lp.PowOp, torch.pow, positive(3, 5), randn(1, 5))


def test_integer_division_rounds_toward_zero() -> None:
    a = np.array([[7, -7, 7, -7, 0]], np.int64)
    b = np.array([[2, 2, -2, -2, 3]], np.int64)
    check(lp.DivOp, lambda x, y: torch.div(x, y, rounding_mode="trunc"), a, b)


def test_integer_division_at_the_storage_minimum() -> None:
    """int8 -128 / 3 truncates to -42 (hand-derived); abs(-128) must not wrap."""
    m = parse_module(
        """
func.func @kernel(%a: tensor<3x!lp.int<8>>, %b: tensor<3x!lp.int<8>>)
    -> tensor<3x!lp.int<8>> {
  %c = lp.div %a, %b : tensor<3x!lp.int<8>>
  func.return %c : tensor<3x!lp.int<8>>
}"""
    )
    fn = next(op for op in m.ops if isinstance(op, func.FuncOp))
    a = np.array([-128, -128, 127], np.int8)
    b = np.array([3, 127, -2], np.int8)
    (got,) = interp.run_function(fn, [a, b])
    assert got.tolist() == [-42, -1, -63]


def test_max_propagates_nan() -> None:
    a = np.array([np.nan, 1.0, 2.0], np.float32)
    check(lp.MaxOp, torch.maximum, a, np.array([0.0, np.nan, 3.0], np.float32))


@pytest.mark.parametrize("pred", ["eq", "ne", "lt", "le", "gt", "ge"])
def test_cmp(pred: str) -> None:
    a, b = ints(3, 3, 5), ints(3, 1, 5)
    fn = {"eq": torch.eq, "ne": torch.ne, "lt": torch.lt}.get(pred) or getattr(
        torch, pred
    )
    check(lambda x, y: lp.CmpOp(pred, x, y), fn, a, b)


UNARY = [
    (lp.NegOp, torch.neg, randn),
    (lp.AbsOp, torch.abs, randn),
    (lp.ExpOp, torch.exp, randn),
    (lp.LogOp, torch.log, positive),
    (lp.SqrtOp, torch.sqrt, positive),
    (lp.RsqrtOp, torch.rsqrt, positive),
    (lp.TanhOp, torch.tanh, randn),
    (lp.SigmoidOp, torch.sigmoid, randn),
    (lp.ErfOp, torch.erf, randn),
    (lp.CosOp, torch.cos, randn),
    (lp.SinOp, torch.sin, randn),
]


@pytest.mark.parametrize(("op", "fn", "gen"), UNARY)
@pytest.mark.parametrize("shape", [(1,), (3, 33)])
def test_unary(op: type, fn: Callable, gen: Callable, shape: Sequence[int]) -> None:
    check(op, fn, gen(*shape), rtol=2e-6)


def test_select() -> None:
    cond = RNG.random((3, 1)) > 0.5
    check(lp.SelectOp, torch.where, cond, randn(3, 5), randn(1, 5))


@pytest.mark.parametrize("to", ["f16", "bf16"])
def test_cast_rounds_like_torch(to: str) -> None:
    x = randn(5, 33) * 1000
    torch_dtype = {"f16": torch.float16, "bf16": torch.bfloat16}[to]
    got = run(lambda v: lp.CastOp(v, lpcc.dtype(to)), x)
    want = torch.from_numpy(x).to(torch_dtype).float().numpy()
    assert np.array_equal(got, want)


def test_cast_float_to_int_matches_ml_dtypes_rounding() -> None:
    x = np.array([0.5, 1.5, 2.5, -0.5, 7.9, -9.0, 100.0], np.float32)
    got = run(lambda v: lp.CastOp(v, lpcc.dtype("int4")), x)
    # int4: round half to even, saturate to [-8, 7] (hand-derived)
    assert got.tolist() == [0, 2, 2, 0, 7, -8, 7]
    got = run(lambda v: lp.CastOp(v, lpcc.dtype("f8e4m3fn")), x)
    assert np.array_equal(got, x.astype(ml_dtypes.float8_e4m3fn).astype(np.float32))


def test_dequantize_then_quantize_round_trips() -> None:
    codes = RNG.integers(-8, 8, (3, 10)).astype(np.float32)
    scale = positive(3, 3)
    zero = RNG.integers(-2, 2, (3, 3)).astype(np.float32)
    i4 = lpcc.dtype("int4")

    def build(q: SSAValue, s: SSAValue, z: SSAValue) -> SSAValue:
        q4 = lp.CastOp(q, i4).result
        z4 = lp.CastOp(z, i4).result
        w = lp.DequantizeOp(q4, s, z4, [1, 4], F32).result
        back = lp.QuantizeOp(w, s, z4, [1, 4], i4).result
        return lp.CastOp(back, F32).result

    assert np.array_equal(run(build, codes, scale, zero), codes)
    # dequantize alone, against the formula W = s * (Q - z) written out here
    want = np.repeat(scale, 4, 1)[:, :10] * (codes - np.repeat(zero, 4, 1)[:, :10])

    def deq(q: SSAValue, s: SSAValue, z: SSAValue) -> SSAValue:
        q4, z4 = lp.CastOp(q, i4).result, lp.CastOp(z, i4).result
        return lp.DequantizeOp(q4, s, z4, [1, 4], F32).result

    np.testing.assert_allclose(run(deq, codes, scale, zero), want, rtol=1e-6)


@pytest.mark.parametrize(
    ("a", "b", "tb"),
    [((3, 33), (33, 5), False), ((2, 1, 3, 4), (5, 4), True), ((1, 1), (1, 1), False)],
)
def test_matmul(a: Sequence[int], b: Sequence[int], tb: bool) -> None:
    fn = (lambda x, y: x @ y.transpose(-1, -2)) if tb else torch.matmul
    check(lambda x, y: lp.MatmulOp(x, y, tb), fn, randn(*a), randn(*b), rtol=1e-5)


def test_integer_matmul_is_exact() -> None:
    a, b = ints(100, 3, 33), ints(100, 33, 5)
    check(lp.MatmulOp, lambda x, y: (x @ y).to(torch.int32), a, b)


REDUCE = [
    (lp.ReduceSumOp, torch.sum),
    (lp.ReduceMeanOp, torch.mean),
    (lp.ReduceMaxOp, torch.amax),
    (lp.ReduceMinOp, torch.amin),
]


@pytest.mark.parametrize(("op", "fn"), REDUCE)
@pytest.mark.parametrize(("dims", "keep"), [([1], True), ([0, 2], False), ([2], False)])
def test_reduce(op: type, fn: Callable, dims: list[int], keep: bool) -> None:
    check(
        lambda x: op(x, dims, keep),
        lambda x: fn(x, dim=dims, keepdim=keep),
        randn(3, 5, 33),
        rtol=1e-6,
    )


def test_reduce_max_of_bools_is_any() -> None:
    mask = RNG.random((3, 5)) > 0.8
    check(lambda x: lp.ReduceMaxOp(x, [1], True), lambda x: x.any(1, True), mask)


@pytest.mark.parametrize(
    ("op", "fn"),
    [
        (lp.SoftmaxOp, torch.softmax),
        (lp.LogSoftmaxOp, torch.log_softmax),
        (lp.CumsumOp, torch.cumsum),
    ],
)
@pytest.mark.parametrize("dim", [0, 1])
def test_along_dim(op: type, fn: Callable, dim: int) -> None:
    check(lambda x: op(x, dim), lambda x: fn(x, dim), randn(3, 33) * 4, rtol=1e-6)


def test_softmax_of_fully_masked_row_is_nan_like_torch() -> None:
    x = np.array([[-np.inf, -np.inf], [0.0, -np.inf]], np.float32)
    check(lambda v: lp.SoftmaxOp(v, 1), lambda v: torch.softmax(v, 1), x)


def test_data_movement() -> None:
    x = randn(3, 1, 5)
    check(lambda v: lp.ReshapeOp(v, [5, 3]), lambda v: v.reshape(5, 3), x)
    check(lambda v: lp.PermuteOp(v, [2, 0, 1]), lambda v: v.permute(2, 0, 1), x)
    check(lambda v: lp.BroadcastOp(v, [2, 3, 4, 5]), lambda v: v.expand(2, 3, 4, 5), x)
    check(
        lambda v: lp.SliceOp(v, [1, 0, 1], [2, 1, 2], [1, 1, 3]),
        lambda v: v[1:3, 0:1, 1::3],
        x,
    )
    check(
        lambda a, b: lp.ConcatOp([a, b, a], 1),
        lambda a, b: torch.cat([a, b, a], 1),
        x,
        randn(3, 4, 5),
    )


def test_take_and_gather() -> None:
    table, ids = randn(33, 5), ints(33, 3, 7)
    check(lambda t, i: lp.TakeOp(t, i, 0), lambda t, i: F.embedding(i, t), table, ids)
    x, idx = randn(3, 5), ints(5, 3, 2)
    check(lambda v, i: lp.GatherOp(v, i, 1), lambda v, i: torch.gather(v, 1, i), x, idx)


def test_take_out_of_range_names_the_op() -> None:
    with pytest.raises(IRError, match=r"lp\.take: index 9 out of range"):
        run(lambda t, i: lp.TakeOp(t, i, 0), randn(4, 2), np.array([1, 9], np.int64))


def test_iota() -> None:
    got = run(lambda x: lp.AddOp(x, lp.IotaOp(I64, [3, 4], 1).result), ints(1, 3, 4))
    assert np.array_equal(got, np.broadcast_to(np.arange(4), (3, 4)))


@pytest.mark.parametrize(
    ("stride", "padding", "dilation", "groups"),
    [
        ((1, 1), (0, 0), (1, 1), 1),
        ((2, 1), (1, 2), (1, 1), 2),
        ((1, 2), (1, 1), (2, 1), 1),
    ],
)
def test_conv2d(stride, padding, dilation, groups) -> None:
    x, w, b = randn(2, 4, 9, 7), randn(6, 4 // groups, 3, 2), randn(6)
    check(
        lambda v, k, c: lp.Conv2dOp(v, k, c, stride, padding, dilation, groups),
        lambda v, k, c: F.conv2d(v, k, c, stride, padding, dilation, groups),
        x,
        w,
        b,
        rtol=1e-5,
    )


@pytest.mark.parametrize("ceil", [False, True])
@pytest.mark.parametrize(
    ("k", "s", "p"), [((3, 3), (2, 2), (1, 1)), ((2, 3), (2, 1), (0, 1))]
)
def test_pools(ceil: bool, k, s, p) -> None:
    x = randn(2, 3, 9, 8)
    check(
        lambda v: lp.MaxPool2dOp(v, k, s, p, ceil_mode=ceil),
        lambda v: F.max_pool2d(v, k, s, p, ceil_mode=ceil),
        x,
    )
    for include in (True, False):
        check(
            lambda v, i=include: lp.AvgPool2dOp(v, k, s, p, ceil, i),
            lambda v, i=include: F.avg_pool2d(v, k, s, p, ceil, i),
            x,
        )


def test_dilated_max_pool() -> None:
    check(
        lambda v: lp.MaxPool2dOp(v, [2, 2], [1, 1], [1, 1], [2, 2]),
        lambda v: F.max_pool2d(v, 2, 1, 1, dilation=2),
        randn(1, 2, 7, 7),
    )


def test_f16_results_are_rounded_once() -> None:
    text = """
func.func @main(%x: tensor<4xf16>, %y: tensor<4xf16>) -> tensor<4xf16> {
  %z = lp.add %x, %y : (tensor<4xf16>, tensor<4xf16>) -> tensor<4xf16>
  func.return %z : tensor<4xf16>
}
"""
    x = np.array([1, 2048, 0.1, 65504], np.float16)
    y = np.array([2**-11, 1, 0.2, 65504], np.float16)
    (got,) = interp.run_module(parse_module(text), [x, y])
    assert got.dtype == np.float32
    want = (torch.from_numpy(x) + torch.from_numpy(y)).float().numpy()
    assert np.array_equal(got, want)


def test_dynamic_sizes_bind_from_inputs() -> None:
    text = """
func.func @main(%x: tensor<?x4xf32> {lp.dims = "s0,4"}) -> tensor<?xf32> {
  %r = lp.reshape %x {lp.dims = "4*s0"} : (tensor<?x4xf32>) -> tensor<?xf32>
  func.return %r : tensor<?xf32>
}
"""
    module = parse_module(text)
    for n in (1, 3):
        (got,) = interp.run_module(module, [randn(n, 4)])
        assert got.shape == (4 * n,)
    with pytest.raises(IRError, match="input #0"):
        interp.run_module(module, [randn(2, 5)])


def test_every_op_has_an_implementation() -> None:
    assert interp.missing_impls() == []
