"""The `tile` pass: record each CPU kernel's tiling and weight layout in the IR.

For every op that becomes one kernel (an lp op or an `lp.fused` region of
`func.func @main`), the pass asks the CPU kernel generators
(`lpcc.codegen.llvm.kernel.generate`) what they would build for it on ISA
level `isa`, and writes the answer on the op as

    {lp.tile = "<path and tiles>; rows R / granule G; repack #i <layout>"}

e.g. `"lut avx2: 32-row blocks x group 128, planes side by side; rows 128 /
1; repack #1 lut2-avx2[...]"`; an op no generator takes gets
`"reference"` (it runs in the interpreter), a fused region whose body will
be split `"split"`. The rows are the parallel dimension the worker pool
splits (SIMD lanes and threads, the layout algebra's workers); the repack
layout is the order the weight constant is rewritten into at compile time.

Where the choice lives: each kernel family chooses its tiles from the op's
shapes and the ISA in its generator (one cost rule, next to the code it
tunes), and this pass makes the choice visible in dumps and `lpcc opt`. The
attribute does not change what the op computes; the interpreter ignores it.
The pass runs last in the cpu pipelines (`-O1`, `-O2`).
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, StringAttr
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass

from lpcc.errors import IRError
from lpcc.ir.dialect import ops as lp
from lpcc.ir.dialect.fused import FusedOp

__all__ = ["TILE_ATTR", "Tile", "describe_tiles", "tile_module"]

TILE_ATTR = "lp.tile"


def describe_tiles(op: Operation, isa: str, consts: set[SSAValue]) -> str:
    """The `lp.tile` text for `op`, whose constant operands are `consts`."""
    from lpcc.codegen.llvm.kernel import KernelRequest, generate
    from lpcc.codegen.program import distinct_operands, kernel_function

    operands = distinct_operands(op)
    kfn = kernel_function(op, operands)
    const_idx = frozenset(i for i, v in enumerate(operands) if v in consts)
    nk = generate(KernelRequest(kfn, isa, const_idx, "lpcc_tile_probe"))
    if nk is None:
        return "split" if isinstance(op, FusedOp) else "reference"
    parts = [nk.note or "native", f"rows {nk.rows} / granule {nk.granule}"]
    parts += [f"repack #{i} {r.layout}" for i, r in sorted(nk.repack.items())]
    return "; ".join(parts)


def tile_module(module: ModuleOp, isa: str = "auto") -> int:
    """Annotate the kernels of `@main` in place; return how many are native."""
    from lpcc.codegen.llvm import isa as isa_mod

    level = isa_mod.selected_isa(to_run=True) if isa == "auto" else isa
    if level not in isa_mod.LEVELS:
        raise IRError(
            f"tile: unknown isa {isa!r}; use auto or one of {', '.join(isa_mod.LEVELS)}"
        )
    native = 0
    for fn in module.ops:
        if not isinstance(fn, func.FuncOp):
            continue
        consts: set[SSAValue] = set()
        for op in fn.body.block.ops:
            if isinstance(op, lp.ConstantOp):
                consts.add(op.result)
                continue
            if isinstance(op, func.ReturnOp | lp.ReshapeOp):
                continue
            text = describe_tiles(op, level, consts)
            op.attributes[TILE_ATTR] = StringAttr(text)
            native += text not in ("reference", "split")
    return native


@dataclass(frozen=True)
class Tile(ModulePass):
    """Record the CPU kernels' tiles and weight layouts as `lp.tile`."""

    name = "tile"
    isa: str = "auto"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        tile_module(op, self.isa)
