"""The `fuse-elementwise` pass: chains of elementwise ops become one region.

The rewrite, for elementwise f, g (broadcasts and casts included):

    f(g(x), y)  ==  fused{ a, b -> f(g(a), b) }(x, y)

and a group may end in reductions r (sum, max, min, mean):

    r(f(x))  ==  fused{ a -> r(f(a)) }(x)

so `exp`, `mul`, `rsqrt`, ... of one group run in one kernel and no
intermediate tensor is written to memory. A value the group defines and
something outside reads becomes an extra result of the `lp.fused` op. The
interpreter runs the same ops in the same order inside the region, so the
output is bit for bit the same.

Groups grow greedily from producer to consumer over each function body in
block order: an elementwise op or a reduction joins the groups of its
elementwise producers when

* the merged group stays acyclic with the outside (no path group -> outside
  op -> group: the fused op must be placeable in the block),
* no op of the group reads a reduction of the same group (a reduction's
  result is not fused with its consumers: it needs the whole reduction
  first), and
* the group has at most `max_ops` ops.

Splat constants and `lp.iota`s that a group reads are cloned into its body
(they cost nothing to recompute). A group of one op is left alone, and so
is a group whose values nothing reads (dead code, for `dce`). Run
`fuse-epilogue` first so that matmul epilogues are not split off into
elementwise groups.

Python: `FuseElementwise(max_ops=64).apply(ctx, module)`; command line:
`lpcc opt FILE -p 'fuse-elementwise{max_ops=16}'`.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Block, Operation
from xdsl.passes import ModulePass

from lpcc.errors import IRError
from lpcc.ir.dialect import ops as lp
from lpcc.ir.dialect import verify_module
from lpcc.ir.dialect.fused import make_fused

__all__ = [
    "ELEMENTWISE",
    "ELEMENTWISE_MATH",
    "REDUCTIONS",
    "FuseElementwise",
    "plan_groups",
]

# Elementwise ops that compute (each output element from the operand elements
# at the same, size-1-broadcast, index); the other passes share this set.
ELEMENTWISE_MATH: tuple[type[Operation], ...] = (
    lp.ElementwiseBinaryOp,
    lp.ElementwiseUnaryOp,
    lp.SelectOp,
    lp.CastOp,
)
ELEMENTWISE: tuple[type[Operation], ...] = (*ELEMENTWISE_MATH, lp.BroadcastOp)
REDUCTIONS: tuple[type[Operation], ...] = (
    lp.ReduceSumOp,
    lp.ReduceMaxOp,
    lp.ReduceMinOp,
    lp.ReduceMeanOp,
)


class _Planner:
    """Greedy grouping of one block (its ops are not changed)."""

    def __init__(self, block: Block, max_ops: int) -> None:
        self.ops = list(block.ops)
        self.pos = {op: i for i, op in enumerate(self.ops)}
        self.max_ops = max_ops
        self.group_of: dict[Operation, int] = {}
        self.members: dict[int, list[Operation]] = {}

    def run(self) -> list[list[Operation]]:
        for i, x in enumerate(self.ops):
            if not isinstance(x, ELEMENTWISE + REDUCTIONS):
                continue
            self.group_of[x] = i
            self.members[i] = [x]
            for v in x.operands:
                p = v.owner
                if not isinstance(p, Operation) or isinstance(p, REDUCTIONS):
                    continue
                g = self.group_of.get(p)
                if g is None or g == self.group_of[x]:
                    continue
                self._try_merge(self.group_of[x], g, limit=i)
        return [m for m in self.members.values() if len(m) > 1 and _read_outside(m)]

    def _try_merge(self, a: int, b: int, limit: int) -> None:
        ga, gb = self.members[a], self.members[b]
        if len(ga) + len(gb) > self.max_ops:
            return
        sa, sb = set(ga), set(gb)
        if _reads_reduction(ga, sb) or _reads_reduction(gb, sa):
            return
        if self._reaches(sa, sb, limit) or self._reaches(sb, sa, limit):
            return
        for op in gb:
            self.group_of[op] = a
        ga.extend(gb)
        del self.members[b]

    def _reaches(self, src: set[Operation], dst: set[Operation], limit: int) -> bool:
        """Whether a path src -> (outside ops or groups) -> dst exists.

        Every op after position `limit` is ungrouped and only reaches later
        ops, while every grouped op lies at or before `limit`: the search
        stops there.
        """
        stack = [u for op in src for u in _users(op) if u not in src and u not in dst]
        seen: set[Operation] = set()
        while stack:
            w = stack.pop()
            if w in seen or self.pos.get(w, limit + 1) > limit:
                continue
            g = self.group_of.get(w)
            node = self.members[g] if g is not None else [w]
            seen.update(node)
            for op in node:
                for u in _users(op):
                    if u in dst:
                        return True
                    if u not in src and u not in seen:
                        stack.append(u)
        return False


def _users(op: Operation) -> list[Operation]:
    return [use.operation for r in op.results for use in r.uses]


def _read_outside(group: list[Operation]) -> bool:
    members = set(group)
    return any(u not in members for op in group for u in _users(op))


def _reads_reduction(ops: list[Operation], others: set[Operation]) -> bool:
    return any(
        v.owner in others and isinstance(v.owner, REDUCTIONS)
        for op in ops
        for v in op.operands
    )


def plan_groups(block: Block, max_ops: int = 64) -> list[list[Operation]]:
    """The groups `fuse-elementwise` would fuse in `block` (two ops or more)."""
    return _Planner(block, max_ops).run()


def fuse_block(block: Block, max_ops: int = 64) -> int:
    """Fuse the elementwise groups of `block`; return how many were made."""
    groups = plan_groups(block, max_ops)
    for group in groups:
        make_fused("elementwise", group)
    return len(groups)


@dataclass(frozen=True)
class FuseElementwise(ModulePass):
    """Fuse elementwise chains (and trailing reductions) into `lp.fused` regions."""

    name = "fuse-elementwise"

    max_ops: int = 64

    def __post_init__(self) -> None:
        if self.max_ops < 2:
            raise IRError(
                f"pass fuse-elementwise, option max_ops: expected >= 2 (ops per "
                f"fused region), got {self.max_ops}; leave the pass out to fuse "
                "nothing"
            )

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        for fn in op.ops:
            if isinstance(fn, func.FuncOp) and fn.body.blocks:
                fuse_block(fn.body.block, self.max_ops)
        verify_module(op, "the module after fuse-elementwise")
