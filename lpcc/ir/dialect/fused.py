"""Fused regions: `lp.fused` (an op with a body) and its terminator `lp.yield`.

A fused op is a group of lp ops that one kernel runs without writing the
group's intermediate tensors to memory:

    %e, %t = lp.fused elementwise(%a) : (tensor<4xf32>) -> (tensor<4xf32>, ...) {
    ^bb0(%x: tensor<4xf32>):
      %e_1 = lp.exp %x : tensor<4xf32>
      %t_1 = lp.tanh %e_1 : tensor<4xf32>
      lp.yield %e_1, %t_1 : tensor<4xf32>, tensor<4xf32>
    }

Semantics: bind the block arguments to the operands, run the body's ops in
order (each with its own semantics), and the results are the yielded values.
So fusing never changes the arithmetic; it only changes what a backend may
keep in registers. The body is isolated from above (it reads only its block
arguments), holds only single-result lp ops (no nested `lp.fused`), and
`kind` ("elementwise", "epilogue", "precompute") tells a backend which
schedule to use. `make_fused` builds one from ops already in a block; the
fusion passes use it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from xdsl.dialects.builtin import StringAttr, TensorType
from xdsl.ir import Attribute, Block, Operation, Region, SSAValue
from xdsl.irdl import (
    IRDLOperation,
    irdl_op_definition,
    lazy_traits_def,
    prop_def,
    region_def,
    traits_def,
    var_operand_def,
    var_result_def,
)
from xdsl.traits import HasParent, IsolatedFromAbove, IsTerminator, Pure
from xdsl.utils.exceptions import VerifyException

from lpcc.errors import IRError
from lpcc.ir.dialect.directives import Keyword
from lpcc.ir.dialect.ops import ConstantOp, IotaOp

__all__ = [
    "FUSED_KINDS",
    "FUSED_OPS",
    "FusedOp",
    "YieldOp",
    "inlinable",
    "make_fused",
    "would_cycle",
]

FUSED_KINDS = ("elementwise", "epilogue", "precompute")


@irdl_op_definition
class YieldOp(IRDLOperation):
    """The values an `lp.fused` body returns, one per result of the fused op."""

    name = "lp.yield"
    values = var_operand_def(TensorType)
    traits = lazy_traits_def(lambda: (IsTerminator(), HasParent(FusedOp)))
    assembly_format = "($values^ `:` type($values))? attr-dict"

    def __init__(self, values: Sequence[SSAValue]):
        super().__init__(operands=[list(values)])


@irdl_op_definition
class FusedOp(IRDLOperation):
    """Run the body on the operands; the results are what `lp.yield` yields."""

    name = "lp.fused"
    kind = prop_def(StringAttr)
    inputs = var_operand_def(TensorType)
    outs = var_result_def(TensorType)
    body = region_def("single_block")
    traits = traits_def(Pure(), IsolatedFromAbove())
    custom_directives = (Keyword,)
    assembly_format = (
        "custom<Keyword>($kind) `(` $inputs `)` attr-dict `:` "
        "functional-type($inputs, $outs) $body"
    )

    def __init__(
        self,
        kind: str,
        inputs: Sequence[SSAValue],
        result_types: Sequence[Attribute],
        body: Region,
    ):
        if kind not in FUSED_KINDS:
            raise IRError(f"lp.fused: kind {kind!r} not in {', '.join(FUSED_KINDS)}")
        super().__init__(
            operands=[list(inputs)],
            result_types=[list(result_types)],
            properties={"kind": StringAttr(kind)},
            regions=[body],
        )

    @property
    def block(self) -> Block:
        return self.body.block

    @property
    def yield_op(self) -> YieldOp:
        last = self.body.block.last_op
        if not isinstance(last, YieldOp):
            raise IRError("lp.fused: the body must end with lp.yield")
        return last

    def verify_(self) -> None:
        def fail(why: str) -> VerifyException:
            return VerifyException(f"lp.fused: {why}")

        if self.kind.data not in FUSED_KINDS:
            raise fail(f"kind {self.kind.data!r} not in {', '.join(FUSED_KINDS)}")
        block = self.body.block
        if len(block.args) != len(self.inputs):
            raise fail(
                f"the body has {len(block.args)} arguments for "
                f"{len(self.inputs)} operands; give it one per operand"
            )
        for i, (arg, v) in enumerate(zip(block.args, self.inputs, strict=True)):
            if arg.type != v.type:
                raise fail(
                    f"body argument #{i} is {arg.type}, operand #{i} is {v.type}"
                )
        last = block.last_op
        if not isinstance(last, YieldOp):
            raise fail("the body must end with lp.yield")
        got = [v.type for v in last.values]
        want = [r.type for r in self.outs]
        if len(got) != len(want):
            raise fail(f"lp.yield gives {len(got)} values for {len(want)} results")
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            if g != w:
                raise fail(f"lp.yield value #{i} is {g}, result #{i} is {w}")
        for op in block.ops:
            if op is last:
                continue
            if isinstance(op, FusedOp):
                raise fail("lp.fused regions do not nest; inline the inner one")
            if not op.name.startswith("lp.") or isinstance(op, YieldOp):
                raise fail(f"{op.name} inside the body; only lp ops may be fused")
            if len(op.results) != 1:
                raise fail(f"{op.name} inside the body has {len(op.results)} results")


FUSED_OPS: tuple[type[IRDLOperation], ...] = (FusedOp, YieldOp)


def _in_order(ops: Iterable[Operation]) -> tuple[Block, list[Operation]]:
    ops = list(dict.fromkeys(ops))
    if not ops:
        raise IRError("make_fused: no ops to fuse")
    block = ops[0].parent_block()
    if block is None or any(op.parent_block() is not block for op in ops):
        raise IRError("make_fused: the ops must all lie in one block")
    index = {op: i for i, op in enumerate(block.ops)}
    return block, sorted(ops, key=index.__getitem__)


def _dependents(start: set[Operation], span: list[Operation]) -> list[Operation]:
    """Ops of `span` (block order) that read, transitively, a result of `start`."""
    reached = set(start)
    found = []
    for op in span:
        if op in start:
            continue
        if any(v.owner in reached for v in op.operands):
            reached.add(op)
            found.append(op)
    return found


def would_cycle(ops: Iterable[Operation]) -> bool:
    """Whether fusing `ops` makes a cycle: group -> outside op -> group."""
    block, ordered = _in_order(ops)
    group = set(ordered)
    span = _span(block, ordered)
    outside = set(_dependents(group, span))
    return any(v.owner in outside for op in ordered for v in op.operands)


def _span(block: Block, ordered: list[Operation]) -> list[Operation]:
    """The ops of `block` from the first to the last of `ordered`."""
    span, inside = [], False
    for op in block.ops:
        inside = inside or op is ordered[0]
        if inside:
            span.append(op)
        if op is ordered[-1]:
            break
    return span


def inlinable(op: Operation) -> bool:
    """Ops a body recomputes instead of reading: splat constants and iotas."""
    return isinstance(op, IotaOp) or (isinstance(op, ConstantOp) and op.is_splat)


def make_fused(kind: str, ops: Iterable[Operation], inline: bool = True) -> FusedOp:
    """Move `ops` (one block, any order) into a new `lp.fused` op; return it.

    Inputs are the values the ops read but do not define (in order of first
    use); results are the values they define that something else reads (in
    block order). With `inline`, splat constants and iotas the ops read are
    cloned into the body instead (the originals go if nothing else reads
    them). The fused op takes the place of the last of `ops`; outside ops in
    between that read a result move after it. Raises IRError if that would
    make a cycle (an outside op that both reads from and feeds the group) or
    if an op cannot live in a body.
    """
    block, ordered = _in_order(ops)
    group = set(ordered)
    for op in ordered:
        if len(op.results) != 1 or op.regions or not op.name.startswith("lp."):
            raise IRError(
                f"make_fused: cannot fuse {op.name} (a fused body holds "
                "single-result lp ops)"
            )
    span = _span(block, ordered)
    later = _dependents(group, span)
    outside = set(later)
    if any(v.owner in outside for op in ordered for v in op.operands):
        raise IRError(
            "make_fused: the group would form a cycle (an op outside it reads "
            "one of its results and feeds another of its ops)"
        )
    inputs: list[SSAValue] = []
    clones: dict[SSAValue, Operation] = {}
    for op in ordered:
        for v in op.operands:
            if v.owner in group or v in inputs or v in clones:
                continue
            if inline and isinstance(v.owner, Operation) and inlinable(v.owner):
                clones[v] = v.owner.clone()
            else:
                inputs.append(v)
    outputs = [
        r
        for op in ordered
        for r in op.results
        if any(use.operation not in group for use in r.uses)
    ]
    body = Block(arg_types=[v.type for v in inputs])
    for arg, v in zip(body.args, inputs, strict=True):
        arg.name_hint = v.name_hint
    fused = FusedOp(kind, inputs, [r.type for r in outputs], Region(body))
    block.insert_op_after(fused, ordered[-1])
    for new, old in zip(fused.results, outputs, strict=True):
        new.name_hint = old.name_hint
        old.replace_uses_with_if(new, lambda use: use.operation not in group)
    for arg, v in zip(body.args, inputs, strict=True):
        v.replace_uses_with_if(arg, lambda use: use.operation in group)
    for v, clone in clones.items():
        clone.results[0].name_hint = v.name_hint
        v.replace_uses_with_if(clone.results[0], lambda use: use.operation in group)
        body.add_op(clone)
        if not v.uses:
            v.owner.detach()
            v.owner.erase()
    for op in ordered:
        op.detach()
        body.add_op(op)
    body.add_op(YieldOp(outputs))
    # Outside readers of the results that sat between the group's ops.
    anchor: Operation = fused
    for op in later:
        op.detach()
        block.insert_op_after(op, anchor)
        anchor = op
    return fused
