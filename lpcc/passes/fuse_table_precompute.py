"""The `fuse-table-precompute` pass: LUT tables join the kernel that makes x.

The table ops of an activation x are `lp.lut_scale`, `lp.lut_precompute` and
`lp.group_sum` (what `lut-gemm` and `dequant-after-group-gemm` insert). The
rewrite, in two steps:

1. One table per x. Identical table ops (same op, same operands, same
   properties and attributes) become one:

       T1 = lut_precompute(x), T2 = lut_precompute(x)  ==>  T1 = T2 = lut_precompute(x)

   so Q, K and V (gate and up) read one table, built once per activation
   row and shared by every N-tile of every matmul that reads x.

2. The tables of x join x's producer. If x = e(a, b, ...) is produced by an
   elementwise op or chain e (unary, binary, select, cast, broadcast: the
   last multiply of RMSNorm or LayerNorm), or by an `lp.fused elementwise`
   (or `precompute`) region, then

       x = e(a, b); ls, T, S = tables(x)
         ==>  ls, T, S (, x) = fused precompute {
                  p, q -> x' = e(p, q); tables(x')
              }(a, b)

   The producer's body (a chain: grown back from x's producer over
   elementwise ops whose result only the group reads) and the table ops
   make one `lp.fused precompute` region; x is still a result only if
   something besides the tables reads it. Why: x is in registers when it
   is produced, so the tables cost no extra read of x and, when only the
   tables read x, x is never written out at all.

   Otherwise (x is a function argument, or comes from a matmul, softmax, a
   reduction, an epilogue region...) the table ops of x are grouped into
   one `lp.fused precompute` region: one kernel, one read of x, instead of
   one kernel per table op. A lone table op is left alone.

Where in a pipeline: after the rewrites that make table ops (`lut-gemm`,
`dequant-after-group-gemm`). Before or after `fuse-elementwise` both work:
after, it takes in that pass's regions; before, it grows the elementwise
chain itself and `fuse-elementwise` leaves the precompute region alone.

Option `into_producer` (default true): false only groups the table ops
(step 2's second case for every x). Fusing never changes the arithmetic:
the interpreter runs the same ops in the body (see `lpcc.ir.dialect.fused`).

Python: `fuse_table_precompute(module, into_producer=True) -> int` (regions
made). Command line: `lpcc opt -p 'fuse-table-precompute{into_producer=false}'`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Block, Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.rewriter import Rewriter

from lpcc.ir.dialect import lowp, verify_module
from lpcc.ir.dialect.fused import FusedOp, YieldOp, make_fused, would_cycle
from lpcc.passes.fuse_elementwise import ELEMENTWISE  # producers tables may join

__all__ = ["TABLE_OPS", "FuseTablePrecompute", "fuse_table_precompute"]

# The ops that precompute per-activation tables (operand #0 is x).
TABLE_OPS = (lowp.LutScaleOp, lowp.LutPrecomputeOp, lowp.GroupSumOp)
# Region kinds whose body the tables may join.
PRODUCER_KINDS = ("elementwise", "precompute")
# A chain grown back from x's producer stops at this many ops.
MAX_CHAIN = 64


def _key(op: Operation) -> tuple[Any, ...]:
    """What makes two table ops compute the same tensor."""
    return (
        op.name,
        tuple(op.operands),
        tuple(sorted(op.properties.items())),
        tuple(sorted(op.attributes.items())),
        tuple(r.type for r in op.results),
    )


def dedupe_tables(block: Block) -> int:
    """Replace each table op identical to an earlier one in `block` by it."""
    seen: dict[tuple[Any, ...], Operation] = {}
    removed = 0
    for op in list(block.ops):
        if not isinstance(op, TABLE_OPS):
            continue
        first = seen.setdefault(_key(op), op)
        if first is op:
            continue
        for new, old in zip(first.results, op.results, strict=True):
            old.replace_all_uses_with(new)
        Rewriter.erase_op(op)
        removed += 1
    return removed


def _tables_of(x: SSAValue, block: Block) -> list[Operation]:
    """The table ops of `block` that read `x` as their input, in block order."""
    ops = {
        use.operation
        for use in x.uses
        if use.index == 0
        and isinstance(use.operation, TABLE_OPS)
        and use.operation.parent_block() is block
    }
    return [op for op in block.ops if op in ops]


def _chain(producer: Operation, tables: list[Operation]) -> list[Operation]:
    """`producer` and the elementwise ops before it that only the group reads."""
    block = producer.parent_block()
    group = [producer]
    grew = True
    while grew and len(group) < MAX_CHAIN:
        grew = False
        members = {*group, *tables}
        for op in list(group):
            for v in op.operands:
                q = v.owner
                if (
                    not isinstance(q, ELEMENTWISE)
                    or q in members
                    or q.parent_block() is not block
                    or any(u.operation not in members for u in q.results[0].uses)
                    or would_cycle([*group, q, *tables])
                ):
                    continue
                group.append(q)
                members.add(q)
                grew = True
                if len(group) >= MAX_CHAIN:
                    return group
    return group


def _inline(region_op: FusedOp) -> list[Operation]:
    """Move the body of `region_op` before it, erase it; return the moved ops."""
    body = region_op.body.block
    for arg, v in zip(body.args, region_op.inputs, strict=True):
        arg.replace_all_uses_with(v)
    last = body.last_op
    assert isinstance(last, YieldOp)
    moved = [op for op in body.ops if op is not last]
    for result, v in zip(region_op.results, last.values, strict=True):
        if result.name_hint and v.owner in moved:  # keep the outside name
            v.name_hint = result.name_hint
        result.replace_all_uses_with(v)
    block = region_op.parent_block()
    assert block is not None
    for op in moved:
        op.detach()
        block.insert_op_before(op, region_op)
    Rewriter.erase_op(region_op)
    return moved


def _fuse_x(x: SSAValue, block: Block, into_producer: bool) -> bool:
    """Make the region for the tables of `x`; whether one was made."""
    tables = _tables_of(x, block)
    if not tables:
        return False
    producer = x.owner
    if (
        into_producer
        and isinstance(producer, Operation)
        and producer.parent_block() is block
    ):
        if (
            isinstance(producer, FusedOp)
            and producer.kind.data in PRODUCER_KINDS
            and not would_cycle([producer, *tables])
        ):
            make_fused("precompute", [*_inline(producer), *tables])
            return True
        if isinstance(producer, ELEMENTWISE):
            chain = _chain(producer, tables)
            if not would_cycle([*chain, *tables]):
                make_fused("precompute", [*chain, *tables])
                return True
    if len(tables) < 2 or would_cycle(tables):
        return False
    make_fused("precompute", tables)
    return True


def fuse_table_precompute(module: ModuleOp, into_producer: bool = True) -> int:
    """Dedupe the table ops of `module` and fuse them (see the module
    docstring); return the number of `lp.fused precompute` regions made."""
    made = 0
    for fn in [op for op in module.walk() if isinstance(op, func.FuncOp)]:
        if not fn.body.blocks:
            continue
        block = fn.body.block
        dedupe_tables(block)
        done: set[SSAValue] = set()
        while True:  # inlining a producer replaces its results: look again
            x = next(
                (
                    op.operands[0]
                    for op in block.ops
                    if isinstance(op, TABLE_OPS) and op.operands[0] not in done
                ),
                None,
            )
            if x is None:
                break
            done.add(x)
            made += _fuse_x(x, block, into_producer)
    verify_module(module, "the module after the fuse-table-precompute pass")
    return made


@dataclass(frozen=True)
class FuseTablePrecompute(ModulePass):
    """Dedupe the LUT/group-sum table ops of each activation and fuse them
    into the kernel that produces it (or, with `into_producer=false`, into
    one kernel of their own)."""

    name = "fuse-table-precompute"

    into_producer: bool = True

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        fuse_table_precompute(op, self.into_producer)
