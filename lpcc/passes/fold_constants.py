"""The `fold-constants` pass: evaluate at compile time what only reads constants.

Rewrite, for an lp op `f` whose operands are all `lp.constant`s c_1..c_n:

    %y = f(%c_1, ..., %c_n)   ==>   %y = lp.constant <f(c_1, ..., c_n)>

with the value computed by the reference interpreter (`lpcc.ir.interp.run_op`
on the constants' value-domain arrays, exactly as `run_function` feeds them),
so folding never changes what the program computes. The new constant has
the op's result type unchanged (element type, shape, layout); an operand
constant that loses its last use is erased.

The rule that decides *whether* to fold: never widen a weight. A narrow
weight is a constant on purpose; `lp.dequantize` of a 4-bit weight would
store it as f32 (8x the bytes), which undoes quantization. So an op folds
only if the packed size of its result, `dtype.nbytes(numel)`, is at most
the largest operand constant's stored payload plus `max_growth` bytes
(default 0). Hence `lp.bitplanes` of a constant weight (the same bits,
regrouped) folds, as do `lp.reshape` / `lp.permute` of a constant and
small shape arithmetic, while `lp.dequantize` of a packed weight stays.
One exception: when every operand is a splat and the result is a splat
(elementwise ops, broadcast, reshape, permute, slice of splats, computed
on one element; or another op that happens to give one, such as a sum of a
splat, evaluated if it has at most 2^20 elements), the op folds whatever
its size, since a splat constant stores one element.

Not folded: ops with regions (`lp.fused`), ops with several results, ops
whose result has a dynamic (`?`) size, `lp.iota` (no operands: it would
only grow), and ops the interpreter rejects on these values (an integer
division by zero stays and fails at run time, where the user sees it).

Names: the folded constant is named after the first operand constant that
has an `lp.name`, with the op's mnemonic appended: `lp.bitplanes` of
"fc1.weight" is "fc1.weight.bitplanes", `lp.reshape` of that is
"fc1.weight.bitplanes.reshape". A folded op with no named operand gives an
unnamed constant. The SSA name hint of the op's result is kept.

Python: `fold_constants(module, max_growth=0) -> int` (ops folded).
Command line: `lpcc opt -p 'fold-constants{max_growth=64}'`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp, StringAttr, TensorType
from xdsl.ir import Operation
from xdsl.passes import ModulePass

from lpcc.errors import IRError, LpccError
from lpcc.ir.dialect import ops as lp
from lpcc.ir.dialect import to_dtype, verify_module
from lpcc.ir.dialect.ops import NAME_ATTR
from lpcc.ir.dialect.types import DYNAMIC
from lpcc.ir.dtypes import DType
from lpcc.ir.interp import run_op
from lpcc.passes.fuse_elementwise import ELEMENTWISE_MATH
from lpcc.passes.rewrite import erase_if_unused, replace_op

__all__ = ["FoldConstants", "fold_constants"]

# Ops whose result is a splat whenever every operand is one: they can be
# evaluated on one element of each operand (the elementwise math, and these).
_MOVES_DATA = (lp.BroadcastOp, lp.ReshapeOp, lp.PermuteOp, lp.SliceOp)
# Other ops on splats (a reduction, a matmul) are evaluated, to see whether
# the result is a splat, only up to this many elements.
_EVAL_CAP = 1 << 20


def _foldable(op: Operation) -> list[lp.ConstantOp] | None:
    """The operand constants of `op` if it may fold (by kind), else None."""
    if (
        not op.name.startswith("lp.")
        or isinstance(op, lp.ConstantOp | lp.IotaOp)
        or op.regions
        or len(op.results) != 1
        or not op.operands
    ):
        return None
    t = op.results[0].type
    if not isinstance(t, TensorType) or DYNAMIC in t.get_shape():
        return None
    consts = [v.owner for v in op.operands]
    if not all(isinstance(c, lp.ConstantOp) for c in consts):
        return None
    return consts  # type: ignore[return-value]


def _shape(op: Operation) -> tuple[int, ...]:
    return lp.value_shape(op.results[0])


def _first(c: lp.ConstantOp) -> np.ndarray:
    """The first code of a splat constant, shaped [1, ..., 1] (no full copy)."""
    return np.asarray(c.codes()[tuple(slice(0, 1) for _ in _shape(c))])


def _splat_payload(code: np.ndarray, dt: DType, numel: int) -> bytes:
    """The payload of a constant whose `numel` elements all hold `code`.

    One packed element, unless the dense stream is as short as that (then
    the payload must be dense; see `directives.is_splat_payload`).
    """
    one = np.asarray(code).reshape(1)
    if numel > 1 and dt.nbytes(numel) == dt.nbytes(1):
        return dt.pack(np.repeat(one, numel)).tobytes()
    return dt.pack(one).tobytes()


def _evaluate(
    op: Operation, consts: list[lp.ConstantOp], dt: DType, limit: int
) -> bytes | None:
    """The payload of `op`'s folded result, or None if it must not fold."""
    numel = math.prod(_shape(op))
    all_splat = all(c.is_splat for c in consts)
    if all_splat and numel and isinstance(op, ELEMENTWISE_MATH + _MOVES_DATA):
        # One element of each operand gives the one element of the result.
        firsts = [_first(c) for c in consts]
        if isinstance(op, _MOVES_DATA):  # same element type, same code
            return _splat_payload(firsts[0], dt, numel)
        args = [c.dtype.values(code) for c, code in zip(consts, firsts, strict=True)]
        return _splat_payload(dt.encode(run_op(op, args)), dt, numel)
    if dt.nbytes(numel) > limit and (
        not all_splat or max(numel, *(math.prod(_shape(c)) for c in consts)) > _EVAL_CAP
    ):
        return None  # would widen: the rule of this pass
    values = {c: run_op(c, []) for c in consts}
    result = run_op(op, [values[c] for c in consts])  # type: ignore[index]
    codes = np.asarray(dt.encode(result)).reshape(-1)
    if codes.size > 1 and np.all(codes == codes[0]):
        return _splat_payload(codes[:1], dt, numel)
    if dt.nbytes(numel) > limit:
        return None  # splat operands, but not a splat result
    return dt.pack(codes).tobytes()


def _name(op: Operation, consts: list[lp.ConstantOp]) -> str | None:
    for c in consts:
        attr = c.attributes.get(NAME_ATTR)
        if isinstance(attr, StringAttr):
            return f"{attr.data}.{op.name.removeprefix('lp.')}"
    return None


def _check_max_growth(max_growth: int) -> None:
    if max_growth < 0:
        raise IRError(
            f"pass fold-constants, option max_growth: expected bytes >= 0, got "
            f"{max_growth}"
        )


def fold_constants(module: ModuleOp, max_growth: int = 0) -> int:
    """Fold, in place, every lp op of `module` that only reads constants and
    whose result is no larger than its largest operand plus `max_growth`
    bytes (splat results always); return how many ops folded."""
    _check_max_growth(max_growth)
    folded = 0
    for op in list(module.walk()):
        if op.parent is None:  # erased earlier in this walk
            continue
        consts = _foldable(op)
        if consts is None:
            continue
        result = op.results[0]
        t = result.type
        assert isinstance(t, TensorType)
        dt = to_dtype(t.element_type)
        limit = max(len(c.data.data) for c in consts) + max_growth
        try:
            payload = _evaluate(op, consts, dt, limit)
        except LpccError:
            continue  # e.g. an integer division by zero: it fails at run time
        if payload is None:
            continue
        new = lp.ConstantOp(payload, t)
        name = _name(op, consts)
        if name is not None:
            new.attributes[NAME_ATTR] = StringAttr(name)
        replace_op(op, new, keep=())  # the constant's name is derived above
        for c in dict.fromkeys(consts):
            erase_if_unused(c)
        folded += 1
    verify_module(module, "the module after the fold-constants pass")
    return folded


@dataclass(frozen=True)
class FoldConstants(ModulePass):
    """Evaluate at compile time every lp op whose operands are all constants,
    unless its result would take more than `max_growth` bytes beyond its
    largest operand (never widen a narrow weight); splats always fold."""

    name = "fold-constants"

    max_growth: int = 0

    def __post_init__(self) -> None:
        _check_max_growth(self.max_growth)  # a bad option fails at pipeline build

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        fold_constants(op, self.max_growth)
