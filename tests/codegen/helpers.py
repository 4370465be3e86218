"""Builders and comparisons the kernel tests of both backends share.

A kernel test builds `func.func @kernel` (what `program.kernel_function`
makes: one op, or one `lp.fused` region, returning its results in order),
runs it in the interpreter and in a backend, and compares.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from xdsl.dialects import func
from xdsl.dialects.builtin import ArrayAttr, DictionaryAttr, StringAttr
from xdsl.ir import Block, Operation, Region, SSAValue

import lpcc
from lpcc.ir.dialect import ops as lp
from lpcc.ir.dialect import tensor_type
from lpcc.ir.dialect.fused import FusedOp, make_fused
from lpcc.ir.symbolic import DIMS_ATTR, Dim, format_dims


def _dyn(dims: Sequence[Dim]) -> bool:
    return any(isinstance(d, str) for d in dims)


def _function(
    args: Sequence[tuple[str, Sequence[Dim]]], block: Block, outs: Sequence[SSAValue]
) -> func.FuncOp:
    types = list(block.arg_types)
    attrs = ArrayAttr(
        [
            DictionaryAttr({DIMS_ATTR: StringAttr(format_dims(d))} if _dyn(d) else {})
            for _, d in args
        ]
    )
    fn = func.FuncOp(
        "kernel",
        (types, [v.type for v in outs]),
        Region(block),
        arg_attrs=attrs if any(_dyn(d) for _, d in args) else None,
    )
    fn.verify()
    return fn


def _block(args: Sequence[tuple[str, Sequence[Dim]]]) -> Block:
    return Block(
        arg_types=[
            tensor_type(lpcc.dtype(dt), [-1 if isinstance(d, str) else d for d in dims])
            for dt, dims in args
        ]
    )


class Body:
    """Collects the ops a test function builds (`b(op)` adds one)."""

    def __init__(self) -> None:
        self.ops: list[Operation] = []

    def __call__(self, op: Operation, dims: Sequence[Dim] | None = None) -> SSAValue:
        if dims is not None:
            lp.set_dims(op, dims)
        self.ops.append(op)
        return op.results[0]

    def const(self, value: float, dt: str, rank: int) -> SSAValue:
        arr = np.full((1,) * rank, value, lpcc.dtype(dt).value_dtype)
        return self(lp.ConstantOp.from_array(arr, lpcc.dtype(dt)))


def body_fn(
    args: Sequence[tuple[str, Sequence[Dim]]],
    build: Callable[..., Sequence[SSAValue]],
    fuse: bool = False,
) -> func.FuncOp:
    """`func.func @kernel` returning `build(body, *args)`; with `fuse`, the
    ops become one `lp.fused elementwise` region (as fuse-elementwise makes),
    returning its results in order."""
    block = _block(args)
    body = Body()
    outs = list(build(body, *block.args))
    block.add_ops(body.ops)
    block.add_op(func.ReturnOp(*outs))
    if fuse:
        fused = make_fused("elementwise", body.ops)
        assert isinstance(fused, FusedOp)
        ret = block.last_op
        assert ret is not None
        block.erase_op(ret)
        outs = list(fused.results)
        block.add_op(func.ReturnOp(*outs))
    return _function(args, block, outs)


def op_fn(
    args: Sequence[tuple[str, Sequence[Dim]]],
    build: Callable[..., Operation],
    out_dims: Sequence[Dim] | None = None,
) -> func.FuncOp:
    """`func.func @kernel` whose body is the one op `build(*args)`."""
    block = _block(args)
    op = build(*block.args)
    if out_dims is not None:
        lp.set_dims(op, out_dims)
    block.add_ops([op, func.ReturnOp(op.results[0])])
    return _function(args, block, [op.results[0]])


def same_values(got: np.ndarray, want: np.ndarray, what: str = "") -> None:
    """Equal dtype, shape and values; NaN by position, zeros by sign."""
    assert got.dtype == want.dtype, (what, got.dtype, want.dtype)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    np.testing.assert_array_equal(got, want, err_msg=what)
    if got.dtype.kind == "f":
        zero = want == 0
        assert np.array_equal(np.signbit(got[zero]), np.signbit(want[zero])), what


def same_bits(got: np.ndarray, want: np.ndarray) -> None:
    """Equal dtype, shape and bytes (NaN payloads and -0.0 included)."""
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    assert got.shape == want.shape, (got.shape, want.shape)
    if got.tobytes() != want.tobytes():
        np.testing.assert_array_equal(got, want)
        raise AssertionError("equal values, different bits")


def rand(dt_name: str, shape: Sequence[int], seed: int = 0) -> np.ndarray:
    """Random values of `dt_name` in its value domain (all codes reachable)."""
    dt = lpcc.dtype(dt_name)
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 1 << min(dt.bits, 16), size=tuple(shape))
    if dt.bits > 16:  # f32 / int64: spread over the whole range
        if dt.kind == "float":
            return rng.standard_normal(tuple(shape)).astype(np.float32) * 100
        lo, hi = max(dt.min, -(2**62)), min(dt.max, 2**62)
        return rng.integers(lo, hi, size=tuple(shape)).astype(dt.value_dtype)
    return dt.values(codes.astype(dt.code_dtype))
