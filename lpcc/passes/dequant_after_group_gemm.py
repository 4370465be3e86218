"""The `dequant-after-group-gemm` pass: scale once per group, never per weight.

MixPE's rewrite (../shared/notes/lut_gemm.md section 4). The quantize pass
leaves every quantized linear layer as

    %wd = lp.dequantize %q scale %s (zero %z)? block [1, G]     // q [N, K]
    %y  = lp.matmul %x, %wd transpose_b                         // x [..., M, K]

that is W[n, k] = s[n, g] (q[n, k] - z[n, g]) with g = k // G, and

    y[m, n] = sum_k x[m, k] W[n, k]
            = sum_g s[n, g] (P[m, n, g] - z[n, g] S[m, g])
    P[m, n, g] = sum_{k in g} x[m, k] q[n, k]      (lp.group_matmul)
    S[m, g]    = sum_{k in g} x[m, k]              (lp.group_sum)

which this pass emits:

    %p = lp.group_matmul %x, %q group G
    %S = lp.group_sum %x group G                   // only with a zero point
    %y = lp.group_dequant_reduce %p scale %s (zero %z sums %S)? -> <y's type>

Why: the dequantize-then-GEMM path multiplies every weight by its scale
(N*K multiplies, and a widened copy of W); here the inner sums run on the
narrow codes and the scale and zero terms cost 2*N*K/G multiplies per token.
S depends only on x, so one `lp.group_sum` per (x, G) serves every matmul
reading x (Q, K and V; gate and up): an existing one is reused.

Option `act="int8"` (W4A8-style, ggml's Q8_1 / Q8_K): activations are
quantized per group, x ~ a X with a[m, g] = max(absmax_{k in g} |x|, tiny)
/ 127 and X = rint(x / a) int8, built from ordinary ops (reshape, abs,
reduce_max, max, div, lp.quantize). Then P = group_matmul(X, q) and
S = group_sum(X) are exact int32 and

    y = sum_g s[n, g] a[m, g] (P - z[n, g] S)      (act_scale %a)

The only error is the activation rounding, |x - a X| <= a / 2 per element.
One quantization of x per group size serves every matmul reading x. Only
int/uint weights take this path; float weight types (f4e2m1, f8e4m3fn, ...)
stay on float activations, and so do matmuls tagged `lp.kernel = "lut"`
(lut-gemm then replaces their group_matmul; it builds its own, possibly
int8, tables from float x).

Conditions (anything else is left unchanged): block [1, G] with K static
(when G does not divide K the last group is shorter, as the scales are;
int8 activations then fall back to float, since their per-group absmax
needs whole groups); the dequantize's result is the matmul's rhs with transpose_b;
x and the matmul's result are float tensors; the matmul does not carry
`lp.kernel = "dense"` (see `select-kernels`). The new group_matmul takes the
matmul's (else the weight constant's) `lp.name` and the matmul's
`lp.kernel`, so later passes (lut-gemm) and dumps see them. A dequantize
that has no other users is erased.

Numerics: with float activations the result differs from dequantize-then-
matmul by f32 reassociation only (the f32 sums now run over G terms, then an
f64 epilogue); a dequantize to a narrower float type than f32 rounded each
weight, which the rewrite no longer does.

Python: `rewrite_matmul(op, act)` (used by lut-gemm too) and
`group_sum_for(x, G, before)`. Command line:
`lpcc opt -p 'dequant-after-group-gemm{act="int8"}'`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp, StringAttr, TensorType
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass

from lpcc.errors import LpccError
from lpcc.ir.dialect import lowp, verify_module
from lpcc.ir.dialect import ops as lp
from lpcc.ir.dialect.ops import KERNEL_ATTR, NAME_ATTR
from lpcc.ir.dialect.types import DYNAMIC
from lpcc.ir.dtypes import FloatType, IntType, dtype
from lpcc.ir.symbolic import Dim
from lpcc.passes.rewrite import erase_if_unused, replace_op

__all__ = [
    "ACTS",
    "ACT_TINY",
    "DequantAfterGroupGemm",
    "GroupGemmError",
    "group_sum_for",
    "quantize_activations",
    "rewrite_matmul",
]

ACTS = ("float", "int8")
# Lower bound of a group's absmax before dividing by 127: an all-zero group
# gets a = 2**-100 / 127 (a normal f32, so no backend flushes it to zero and
# divides by it) and X = 0. Any |x| below it still quantizes to nearest.
ACT_TINY = 2.0**-100
INT8_MAX = 127

F32 = dtype("f32")
INT8 = dtype("int8")


class GroupGemmError(LpccError, ValueError):
    """A bad option of the dequant-after-group-gemm rewrite."""


def _check_act(act: str) -> None:
    if act not in ACTS:
        raise GroupGemmError(
            f"pass dequant-after-group-gemm, option act: {act!r} is not one of "
            f"{', '.join(repr(a) for a in ACTS)} ('float': f32 group sums; "
            "'int8': activations quantized per group, exact int32 sums)"
        )


# -- small IR helpers ---------------------------------------------------------------


def _hint(v: SSAValue, default: str) -> str:
    return v.name_hint or default


def _same_block_before(op: Operation, before: Operation) -> bool:
    return op.parent_block() is before.parent_block() and op.is_before_in_block(before)


def _hoist(op: Operation, before: Operation) -> None:
    """Move `op` (and what it needs from after `before`) to just before it.

    Used when a shared value (group sums, quantized activations) exists but
    sits after the op that now needs it. Its operands come from x, which
    dominates `before`, or from ops that get hoisted with it; all are pure.
    """
    if op is before or _same_block_before(op, before):
        return
    for operand in op.operands:
        owner = operand.owner
        if isinstance(owner, Operation) and owner.parent_block() is (
            before.parent_block()
        ):
            _hoist(owner, before)
    block = before.parent_block()
    assert block is not None
    op.detach()
    block.insert_op_before(op, before)


def _users(v: SSAValue, before: Operation) -> list[Operation]:
    """Users of v in `before`'s block, in block order."""
    block = before.parent_block()
    found = {use.operation for use in v.uses if use.operation.parent_block() is block}
    assert block is not None
    return [op for op in block.ops if op in found]


def _insert(ops: Sequence[Operation], before: Operation) -> None:
    block = before.parent_block()
    assert block is not None
    block.insert_ops_before(list(ops), before)


def _static(dims: Sequence[Dim]) -> tuple[int, ...]:
    return tuple(d if isinstance(d, int) else DYNAMIC for d in dims)


def _splat(value: float, rank: int, hint: str) -> lp.ConstantOp:
    op = lp.ConstantOp.from_array(np.full((1,) * rank, value, np.float32), F32)
    op.result.name_hint = hint
    return op


# -- shared values of x -------------------------------------------------------------


def group_sum_for(x: SSAValue, group: int, before: Operation) -> SSAValue:
    """`lp.group_sum %x group G`, one per (x, G): an existing one is reused.

    The returned value dominates `before` (an existing one that comes later
    in the block is moved up; it only reads x).
    """
    for op in _users(x, before):
        if isinstance(op, lowp.GroupSumOp) and op.group.data == group:
            _hoist(op, before)
            return op.result
    op = lowp.GroupSumOp(x, group)
    hint = _hint(x, "x")
    tail = "" if hint.endswith(f"_g{group}") else f"_g{group}"
    op.result.name_hint = f"{hint}_sum{tail}"
    _insert([op], before)
    return op.result


def _f32_of(x: SSAValue, before: Operation) -> SSAValue:
    """x as f32 (an existing lp.cast to f32 is reused)."""
    if lp.value_elem(x) == F32:
        return x
    for op in _users(x, before):
        if isinstance(op, lp.CastOp) and lp.value_elem(op.result) == F32:
            _hoist(op, before)
            return op.result
    cast = lp.CastOp(x, F32)
    lp.set_dims(cast, lp.value_dims(x))
    cast.result.name_hint = f"{_hint(x, 'x')}_f32"
    _insert([cast], before)
    return cast.result


def _act_block(rank: int, group: int) -> tuple[int, ...]:
    return (*([1] * (rank - 1)), group)


def quantize_activations(
    x: SSAValue, group: int, before: Operation
) -> tuple[SSAValue, SSAValue]:
    """(X int8 [..., K], a f32 [..., K/G]) with x ~ a * X per group of G.

    a = max(absmax over the group, ACT_TINY) / 127 and X = lp.quantize(x, a):
    round to nearest, so |x - a X| <= a / 2. One per (x, G): an existing
    per-group int8 `lp.quantize` of x is reused.
    """
    xf = _f32_of(x, before)
    rank = len(lp.value_shape(xf))
    block = _act_block(rank, group)
    for op in _users(xf, before):
        if (
            isinstance(op, lp.QuantizeOp)
            and op.input is xf
            and op.zero is None
            and tuple(lp._array(op.block)) == block
            and lp.value_elem(op.result) == INT8
            and lp.value_elem(op.scale) == F32
        ):
            _hoist(op, before)
            return op.result, op.scale
    name = _hint(x, "x")
    dims = lp.value_dims(xf)
    lead, k = dims[:-1], dims[-1]
    assert isinstance(k, int)
    gdims = (*lead, k // group)
    shaped = lp.ReshapeOp(xf, _static((*gdims, group)))
    lp.set_dims(shaped, (*gdims, group))
    ab = lp.AbsOp(shaped.result)
    amax = lp.ReduceMaxOp(ab.result, [-1])
    tiny = _splat(ACT_TINY, rank, f"{name}_tiny_g{group}")
    floor = lp.MaxOp(amax.result, tiny.result)
    qmax = _splat(float(INT8_MAX), rank, f"{name}_qmax_g{group}")
    scale = lp.DivOp(floor.result, qmax.result)
    for op, what in (
        (shaped, "groups"),
        (ab, "abs"),
        (amax, "absmax"),
        (floor, "absmax_floor"),
        (scale, "a"),
    ):
        op.result.name_hint = f"{name}_{what}_g{group}"
    lp.set_dims(ab, (*gdims, group))
    for op in (amax, floor, scale):
        lp.set_dims(op, gdims)
    quant = lp.QuantizeOp(xf, scale.result, None, block, INT8)
    lp.set_dims(quant, dims)
    quant.result.name_hint = f"{name}_i8_g{group}"
    _insert([shaped, ab, amax, tiny, floor, qmax, scale, quant], before)
    return quant.result, scale.result


# -- the rewrite --------------------------------------------------------------------


@dataclass(frozen=True)
class _Match:
    matmul: lp.MatmulOp
    dequant: lp.DequantizeOp
    x: SSAValue
    group: int


def _match(op: lp.MatmulOp) -> _Match | None:
    """The dequantize-then-matmul this pass rewrites, or None."""
    kernel = op.attributes.get(KERNEL_ATTR)
    if isinstance(kernel, StringAttr) and kernel.data == "dense":
        return None
    if op.transpose_b is None or not isinstance(op.rhs.owner, lp.DequantizeOp):
        return None
    dq = op.rhs.owner
    q = dq.input
    if not isinstance(q.type, TensorType) or not isinstance(op.lhs.type, TensorType):
        return None
    qshape = lp.value_shape(q)
    block = tuple(lp._array(dq.block))
    if len(qshape) != 2 or len(block) != 2 or block[0] != 1:
        return None
    n, k = qshape
    g = block[1]
    if DYNAMIC in (n, k) or g < 1:
        return None
    xshape = lp.value_shape(op.lhs)
    if len(xshape) < 2 or xshape[-1] != k:
        return None
    if not isinstance(lp.value_elem(op.lhs), FloatType):
        return None
    if not isinstance(lp.value_elem(op.result), FloatType):
        return None
    if not isinstance(lp.value_elem(q), IntType | FloatType):
        return None
    return _Match(op, dq, op.lhs, g)


def _copy_tags(m: _Match, gm: lowp.GroupMatmulOp) -> None:
    name = m.matmul.attributes.get(NAME_ATTR)
    if not isinstance(name, StringAttr) and isinstance(
        m.dequant.input.owner, lp.ConstantOp
    ):
        name = m.dequant.input.owner.attributes.get(NAME_ATTR)
    if isinstance(name, StringAttr):
        gm.attributes[NAME_ATTR] = name
    kernel = m.matmul.attributes.get(KERNEL_ATTR)
    if isinstance(kernel, StringAttr):
        gm.attributes[KERNEL_ATTR] = kernel


def rewrite_matmul(op: lp.MatmulOp, act: str = "float") -> lowp.GroupMatmulOp | None:
    """Rewrite one `matmul(x, dequantize(q, s, z))` in place (module docstring).

    Returns the new `lp.group_matmul`, or None (IR untouched) when `op` does
    not match. With act="int8", float weight types and matmuls tagged
    `lp.kernel = "lut"` take the float path (int8 activations need integer
    codes; the LUT kernel builds its own tables from float x).
    """
    _check_act(act)
    m = _match(op)
    if m is None:
        return None
    dq, g = m.dequant, m.group
    q = dq.input
    kernel = op.attributes.get(KERNEL_ATTR)
    lut = isinstance(kernel, StringAttr) and kernel.data == "lut"
    # int8 activations need whole groups to take their absmax (reshape).
    whole = lp.value_shape(q)[1] % g == 0
    int8 = act == "int8" and isinstance(lp.value_elem(q), IntType) and not lut and whole
    a: SSAValue | None = None
    if int8:
        xin, a = quantize_activations(m.x, g, op)
    else:
        xin = m.x
    gm = lowp.GroupMatmulOp(xin, q, g)
    hint = _hint(op.result, "y")
    gm.result.name_hint = f"{hint}_p"
    _copy_tags(m, gm)
    _insert([gm], op)
    sums = group_sum_for(xin, g, op) if dq.zero is not None else None
    red = lowp.GroupDequantReduceOp(
        gm.result, dq.scale, dq.zero, sums, a, lp.value_elem(op.result)
    )
    replace_op(op, red, keep=())  # the tags went to gm (_copy_tags)
    erase_if_unused(dq)
    return gm


def _matmuls(module: ModuleOp) -> list[lp.MatmulOp]:
    return [op for op in module.walk() if isinstance(op, lp.MatmulOp)]


@dataclass(frozen=True)
class DequantAfterGroupGemm(ModulePass):
    """matmul(x, dequantize(q, s, z)) -> sum_g s (group_matmul - z group_sum).

    `act`: "float" (f32 inner sums) or "int8" (activations quantized per
    group, exact int32 inner sums; int/uint weights only).
    """

    name = "dequant-after-group-gemm"

    act: str = "float"

    def __post_init__(self) -> None:
        _check_act(self.act)  # a bad option fails when the pipeline is built

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        for matmul in _matmuls(op):
            rewrite_matmul(matmul, self.act)
        verify_module(op, "the module after dequant-after-group-gemm")
