"""The `fuse-epilogue` pass: what follows a contraction joins its kernel.

For a contraction C (the *anchor*) and elementwise ops e_1 ... e_n applied
to its output, each with its other operands o_i read from outside:

    e_n(... e_1(C(x, w), o_1) ..., o_n)
        ==  fused{ x, w, o_1 .. o_n -> e_n(... e_1(C(x, w), o_1) ..., o_n) }

so a bias add, an activation (silu is `h * sigmoid(h)`: both ops join), a
residual add, a scaling or a cast are applied while the output tile is still
in registers and only the final value is written. The interpreter runs the
same ops in the same order, so the output is bit for bit the same.

Anchors are `lp.matmul` and `lp.group_dequant_reduce`; the group GEMM that
feeds the latter (`lp.group_matmul` or `lp.lut_accumulate`, when it has no
other reader) joins it, since the dequantizing reduction is that GEMM's own
epilogue. From the anchor the group grows greedily over the readers of its
values, earliest first: a reader joins if it is an elementwise op (binary,
unary, select or cast; not a broadcast), its result has the anchor's shape
(the epilogue runs once per output element), and the group stays acyclic
(no operand computed from the group outside it). Then the ops added last
are dropped until the last op's value is the only one read outside the
group: the anchor's own result, or any value in between, is never written
out. So an anchor whose result has a reader that cannot join (a second
matmul, a func.return) is not fused at all, and an epilogue is always one
`lp.fused epilogue` with one result, the anchor (or its group GEMM) its
first op after any cloned constants.

Splat constants read by the epilogue are cloned into the body. Run this
pass BEFORE `fuse-elementwise`, which would otherwise take the bias and
activation into an elementwise group of their own.

Python: `FuseEpilogue().apply(ctx, module)`; command line:
`lpcc opt FILE -p fuse-epilogue`.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Block, Operation, SSAValue
from xdsl.passes import ModulePass

from lpcc.errors import IRError
from lpcc.ir.dialect import ops as lp
from lpcc.ir.dialect import verify_module
from lpcc.ir.dialect.fused import FusedOp, make_fused, would_cycle
from lpcc.passes.fuse_elementwise import ELEMENTWISE_MATH

__all__ = ["ANCHORS", "EPILOGUE_OPS", "FuseEpilogue", "epilogue_group"]

# Matched by name: the low-precision ops live in their own module.
ANCHORS = ("lp.matmul", "lp.group_dequant_reduce")
GROUP_GEMMS = ("lp.group_matmul", "lp.lut_accumulate")
# What may join an epilogue: no broadcast (it runs once per output element).
EPILOGUE_OPS = ELEMENTWISE_MATH


def _dims(v: SSAValue) -> tuple[object, ...] | None:
    try:
        return lp.value_dims(v)
    except IRError:
        return None


def _outputs(group: list[Operation]) -> list[SSAValue]:
    members = set(group)
    return [
        r
        for op in group
        for r in op.results
        if any(use.operation not in members for use in r.uses)
    ]


def epilogue_group(anchor: Operation) -> list[Operation] | None:
    """The ops `fuse-epilogue` fuses for `anchor`, or None if nothing."""
    block = anchor.parent_block()
    if block is None or anchor.name not in ANCHORS:
        return None
    group = [anchor]
    if anchor.name == "lp.group_dequant_reduce":
        p = anchor.operands[0].owner
        if (
            isinstance(p, Operation)
            and p.name in GROUP_GEMMS
            and p.parent_block() is block
            and all(use.operation is anchor for use in p.results[0].uses)
        ):
            group.insert(0, p)
    base = len(group)
    shape = _dims(anchor.results[0])
    pos = {op: i for i, op in enumerate(block.ops)}
    while True:
        members = set(group)
        readers = sorted(
            {u for op in group for u in _users(op) if u not in members},
            key=lambda u: pos.get(u, len(pos)),
        )
        for u in readers:
            if (
                isinstance(u, EPILOGUE_OPS)
                and u.parent_block() is block
                and shape is not None
                and _dims(u.results[0]) == shape
                and not would_cycle([*group, u])
            ):
                group.append(u)
                break
        else:
            break
    while len(group) > base and _outputs(group) != [group[-1].results[0]]:
        group.pop()
    if len(group) < 2 or _outputs(group) != [group[-1].results[0]]:
        return None
    return group


def _users(op: Operation) -> list[Operation]:
    return [use.operation for r in op.results for use in r.uses]


def fuse_block(block: Block) -> int:
    """Fuse the epilogue of every anchor in `block`; return how many were made."""
    count = 0
    for op in list(block.ops):
        if op.name in ANCHORS and not isinstance(op.parent_op(), FusedOp):
            group = epilogue_group(op)
            if group is not None:
                make_fused("epilogue", group)
                count += 1
    return count


@dataclass(frozen=True)
class FuseEpilogue(ModulePass):
    """Fold the elementwise ops after each matmul into one `lp.fused epilogue`."""

    name = "fuse-epilogue"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        for fn in op.ops:
            if isinstance(fn, func.FuncOp) and fn.body.blocks:
                fuse_block(fn.body.block)
        verify_module(op, "the module after fuse-epilogue")
