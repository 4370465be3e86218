"""The `lut-gemm` pass: group GEMMs on narrow integer weights become T-MAC LUT GEMMs.

It rewrites (x float [..., M, K], w an int/uint weight [N, K] of B = 1..8 bits)

    %p = lp.group_matmul %x, %w group G

into

    %planes = lp.bitplanes %w group g            // a constant w folds at compile time
    %S  = lp.group_sum %x group G                 // shared with the dequant epilogue
    %ls = lp.lut_scale %x group g act_group A     // only with table="int8"
    %T  = lp.lut_precompute %x (scale %ls)? group g   // one table per x, reused
    %p  = lp.lut_accumulate %T, %planes, %S (scale %ls)? group G (signed)?

and P is the same quantity as before, so the consumer (`lp.group_dequant_reduce`
with its scales and zero points) is untouched. An `lp.matmul %x, %wd transpose_b`
on `%wd = lp.dequantize %q ...` is first turned into a group GEMM by
`dequant_after_group_gemm.rewrite_matmul`, and S comes from its `group_sum_for`.

The identity (../shared/notes/lut_gemm.md 1.1): write the unsigned code
u = w - min(type) = sum_b 2^b beta_b with bits beta_b in {0, 1}, and read each bit
as sigma_b = 2 beta_b - 1 in {-1, +1}. Then

    u = sum_b 2^(b-1) sigma_b + (2^B - 1)/2, so
    sum_k u_k x_k = 1/2 sum_b 2^b sum_j T_j[idx_bj] + (2^B - 1)/2 * S,

where j runs over runs of g activations, T_j[i] = sum_t (2 bit_t(i) - 1) x_(gj+t)
(2^g entries, built once per token) and idx_bj is the g-bit nibble of plane b
(bit t = beta_b of weight gj+t). A signed intB weight is u - 2^(B-1), so its P
subtracts 2^(B-1) S more: the `signed` flag. Worked example: x = [1, 2, 3, 4],
int2 w = [1, -2, 0, -1] (u = [3, 0, 2, 1]): planes 9 and 5, P = 1/2 T[9] + T[5]
+ (3/2 - 2) * 10 = 0 - 2 - 5 = -7.

Why: no weight is ever widened or multiplied. A weight costs B table lookups of
g activations each (B/g lookups per weight and activation row), so the cost is
linear in B and falls with the bit width, unlike dequantizing kernels whose
cost is flat in B; the table is built once per activation row and shared by
every GEMM reading that row (Q/K/V, gate/up).

Table quantization (table="int8", T-MAC 1.2): per act group of A activations
ls = max_j (|x_gj| + ... + |x_gj+g-1|) / 127, the largest |T_j[i]| of the group,
and T is stored as rint(T / ls) in [-127, 127] (symmetric, so the half tables of
`symmetrize-tables` negate exactly). Lookups then sum in integers and ls applies
once per min(A, G) activations; each entry is off by at most ls/2.

Options: `table` "int8" (default) or "f32" (exact tables; `act_group` is then
unused); `act_group` A, 0 = choose per GEMM with `choose_act_group` (min(G, 64) as
T-MAC tunes it, when it fits; an explicit A that does not fit a GEMM is an
error naming it); `g` activations per table, 2..8.

A group GEMM is left unchanged when: its `lp.kernel` attribute is set to other
than "lut"; x is not a float tensor (int8 activations take the dequant path);
w is not an int/uint type of <= 8 bits (float weight types such as f4e2m1);
K is dynamic or G is not a multiple of g (so K % g != 0 never reaches the ops);
G does not divide K (a short last group stays on the dequant path).
`lp.name` and `lp.kernel` move to the lut_accumulate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp, StringAttr, TensorType
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass

from lpcc.errors import IRError
from lpcc.ir.dialect import lowp, verify_module
from lpcc.ir.dialect import ops as lp
from lpcc.ir.dialect.ops import KERNEL_ATTR, NAME_ATTR
from lpcc.ir.dialect.types import DYNAMIC
from lpcc.ir.dtypes import FloatType, IntType
from lpcc.passes.dequant_after_group_gemm import group_sum_for, rewrite_matmul
from lpcc.passes.rewrite import replace_op

__all__ = ["LutGemm", "choose_act_group", "lut_gemm_module", "reuse_or_insert"]

TABLES = ("int8", "f32")


def _dominates(a: Operation, b: Operation) -> bool:
    """True if `a` comes before `b` (or an op enclosing `b`) in `a`'s block."""
    block = a.parent_block()
    op: Operation | None = b
    while op is not None and op.parent_block() is not block:
        op = op.parent_op()
    return op is not None and op is not a and a.is_before_in_block(op)


def reuse_or_insert(
    make: Callable[[], Operation],
    match: Callable[[Operation], bool],
    anchor: SSAValue,
    before: Operation,
    hint: str | None = None,
) -> SSAValue:
    """The result of an existing op (a user of `anchor` for which `match` holds
    and that comes before `before`), else of `make()` inserted before `before`.

    Why: one table / one group sum per activation, however many GEMMs read it.
    """
    for use in anchor.uses:
        op = use.operation
        if match(op) and _dominates(op, before):
            return op.results[0]
    new = make()
    block = before.parent_block()
    assert block is not None
    block.insert_op_before(new, before)
    if hint is not None:
        new.results[0].name_hint = hint
    return new.results[0]


def _hint(v: SSAValue, suffix: str) -> str | None:
    return f"{v.name_hint}_{suffix}" if v.name_hint else None


def choose_act_group(k: int, group: int, g: int) -> int:
    """The default act group, as T-MAC tunes it: min(G, 64) when it fits.

    T-MAC ships 32 for 4-bit G = 32 and 64 for 2-bit G = 128 (notes 1.6):
    a finer table scale costs one multiply per act group and keeps int8
    tables accurate. Otherwise the largest of {64, 32, G} that divides K, is
    a multiple of g and divides or is divided by G (G itself always fits
    once G | K and g | G).
    """
    fits = [
        a
        for a in (min(group, 64), 64, 32, group)
        if k % a == 0 and a % g == 0 and (group % a == 0 or a % group == 0)
    ]
    return fits[0]


def _check_act_group(a: int, k: int, group: int, g: int, where: str) -> None:
    if k % a or a % g or (group % a and a % group):
        raise IRError(
            f"pass lut-gemm, option act_group={a}: does not fit {where} (K = {k}, "
            f"group G = {group}, g = {g}); it must divide K, be a multiple of g and "
            "divide or be divided by G. Use act_group=0 to choose one per GEMM"
        )


def _kernel_allows(op: Operation) -> bool:
    attr = op.attributes.get(KERNEL_ATTR)
    return attr is None or (isinstance(attr, StringAttr) and attr.data == "lut")


def _eligible(x: SSAValue, w: SSAValue, g: int) -> bool:
    """Float activations, an int/uint weight of <= 8 bits, static K with g | K."""
    if not isinstance(x.type, TensorType) or not isinstance(w.type, TensorType):
        return False
    wt = lp.value_elem(w)
    k = lp.value_shape(x)[-1]
    return (
        isinstance(lp.value_elem(x), FloatType)
        and isinstance(wt, IntType)
        and wt.bits <= 8
        and k != DYNAMIC
        and k % g == 0
    )


def _matmul_to_group(op: lp.MatmulOp, g: int) -> lowp.GroupMatmulOp | None:
    """`rewrite_matmul` of the dequant pass, for matmuls the LUT path can take
    (others stay matmuls: this pass does not choose the dequant kernel)."""
    if not _kernel_allows(op) or op.transpose_b is None:
        return None
    dq = op.rhs.owner
    if not isinstance(dq, lp.DequantizeOp) or not _eligible(op.lhs, dq.input, g):
        return None
    block = tuple(dq.block.get_values())
    if len(block) != 2 or block[0] != 1 or block[1] % g:
        return None  # not [1, G] with g | G: leave it to the dequant pass
    if lp.value_shape(op.lhs)[-1] % block[1]:
        return None  # a short last group: the dequant path handles it
    return rewrite_matmul(op)


@dataclass(frozen=True)
class LutGemm(ModulePass):
    """Group GEMMs on int/uint weights -> T-MAC bit-serial table lookups."""

    name = "lut-gemm"

    table: str = "int8"
    act_group: int = 0
    g: int = 4

    def __post_init__(self) -> None:
        if self.table not in TABLES:
            raise IRError(
                f"pass lut-gemm, option table: expected one of {', '.join(TABLES)}, "
                f"got {self.table!r}"
            )
        if not 2 <= self.g <= 8:
            raise IRError(
                f"pass lut-gemm, option g: tables index 2..8 activations, got {self.g}"
            )
        if self.act_group < 0 or self.act_group % self.g:
            raise IRError(
                f"pass lut-gemm, option act_group: expected 0 (choose) or a "
                f"positive multiple of g = {self.g}, got {self.act_group}"
            )

    def rewrite(self, op: lowp.GroupMatmulOp) -> lowp.LutAccumulateOp | None:
        """Rewrite one group GEMM in place; None if it does not qualify."""
        x, w, group = op.input, op.weight, op.group.data
        if not _kernel_allows(op) or not _eligible(x, w, self.g) or group % self.g:
            return None
        if lp.value_shape(x)[-1] % group:
            return None  # a short last group: the dequant path handles it
        g = self.g
        k = lp.value_shape(x)[-1]
        wt = lp.value_elem(w)
        assert isinstance(wt, IntType)
        planes = reuse_or_insert(
            lambda: lowp.BitplanesOp(w, g),
            lambda o: isinstance(o, lowp.BitplanesOp) and o.group.data == g,
            w,
            op,
            _hint(w, "planes"),
        )
        sums = group_sum_for(x, group, op)
        ls: SSAValue | None = None
        if self.table == "int8":
            a = self.act_group or choose_act_group(k, group, g)
            name = op.attributes.get(NAME_ATTR)
            where = "lp.group_matmul" + (
                f" {name.data!r}" if isinstance(name, StringAttr) else ""
            )
            _check_act_group(a, k, group, g, where)
            ls = reuse_or_insert(
                lambda: lowp.LutScaleOp(x, g, a),
                lambda o: (
                    isinstance(o, lowp.LutScaleOp)
                    and (o.group.data, o.act_group.data) == (g, a)
                ),
                x,
                op,
                _hint(x, "ls"),
            )
        table = reuse_or_insert(
            lambda: lowp.LutPrecomputeOp(x, ls, g),
            lambda o: (
                isinstance(o, lowp.LutPrecomputeOp)
                and o.input is x  # x, not the scale, is the anchor
                and o.scale is ls
                and o.group.data == g
                and o.half is None
            ),
            x,
            op,
            _hint(x, "lut"),
        )
        acc = lowp.LutAccumulateOp(table, planes, sums, ls, group, wt.signed)
        replace_op(op, acc)  # lp.name and lp.kernel move to the accumulate
        return acc

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        lut_gemm_module(op, self)


def lut_gemm_module(module: ModuleOp, options: LutGemm | None = None) -> int:
    """Run `lut-gemm` on `module` in place; return how many GEMMs were rewritten."""
    p = LutGemm() if options is None else options
    for mm in [o for o in module.walk() if isinstance(o, lp.MatmulOp)]:
        _matmul_to_group(mm, p.g)
    count = 0
    for gm in [o for o in module.walk() if isinstance(o, lowp.GroupMatmulOp)]:
        count += p.rewrite(gm) is not None
    verify_module(module, "the module after the lut-gemm pass")
    return count
