"""The `symmetrize-tables` pass: LUT tables keep only the half with the top bit set.

It rewrites

    %T = lp.lut_precompute %x (scale %ls)? group g          // [..., K/g, 2^g]

into

    %T = lp.lut_precompute %x (scale %ls)? group g half     // [..., K/g, 2^(g-1)]

when every user of %T is an `lp.lut_accumulate`, which recognises a half table
by its shape and mirrors it (LUT Tensor Core's table symmetrization,
../shared/notes/lut_gemm.md 2.2).

The algebra: with the +-1 encoding T[i] = sum_t (2 bit_t(i) - 1) x_t, flipping
every bit flips every sign, so T[~i] = T[2^g - 1 - i] = -T[i]. Keep
H[j] = T[2^(g-1) + j] for j < 2^(g-1) (the entries whose top bit c is set);
then T[i] = H[i & m] if c = 1 and T[i] = -H[~i & m] if c = 0, m = 2^(g-1) - 1
(branch-free: s = c - 1, T[i] = (H[(i ^ s) & m] ^ s) - s). The reference
precompute adds the terms in a fixed order, so the f32 table is odd exactly;
int8 tables round to nearest (rint(-t) = -rint(t)) and clamp to +-127, never
-128, so negation is exact too: the result is bit-identical. What it buys:
half the precompute work and half the table bytes (registers, L1, shared
memory); g = 4 tables fit an 8-entry byte shuffle (`prmt`) and g = 5 a 16-entry
one (`pshufb`).

A table with another user, or none, is left alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass

from lpcc.ir.dialect import lowp, verify_module
from lpcc.passes.rewrite import replace_op

__all__ = ["SymmetrizeTables", "symmetrize_tables_module"]


def _halve(op: lowp.LutPrecomputeOp) -> bool:
    """Replace one full table by its half; False if some user needs it whole."""
    users = [use.operation for use in op.result.uses]
    if op.half is not None or not users:
        return False
    if not all(
        isinstance(u, lowp.LutAccumulateOp) and u.table is op.result for u in users
    ):
        return False
    half = lowp.LutPrecomputeOp(op.input, op.scale, op.group.data, half=True)
    replace_op(op, half, keep=list(op.attributes))  # lp.dims stays the new op's
    return True


def symmetrize_tables_module(module: ModuleOp) -> int:
    """Run `symmetrize-tables` in place; return how many tables were halved."""
    ops = [o for o in module.walk() if isinstance(o, lowp.LutPrecomputeOp)]
    count = sum(_halve(o) for o in ops)
    verify_module(module, "the module after the symmetrize-tables pass")
    return count


@dataclass(frozen=True)
class SymmetrizeTables(ModulePass):
    """Full LUT tables read only by lut_accumulate -> their symmetric half."""

    name = "symmetrize-tables"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        symmetrize_tables_module(op)
