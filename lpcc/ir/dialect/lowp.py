"""Low-precision ops: group GEMM, its dequantizing epilogue, and LUT GEMM.

These are what the low-precision passes rewrite `matmul(x, dequantize(Q))`
into (../shared/notes/lut_gemm.md sections 1, 2 and 4). Notation: x is
`[..., M, K]`, the weight codes Q are `[N, K]` (the `transpose_b` form the
frontend emits for Linear), a *group* is `G` consecutive elements along K
(`Gn = K / G` groups), u = Q - min(Q's type) is the unsigned code of a
weight, B its bit width.

* `lp.group_matmul`:  P[..., m, n, g] = sum_{k in g} x[..., m, k] * Q[n, k]
* `lp.group_sum`:     S[..., g] = sum_{k in g} x[..., k]
* `lp.group_dequant_reduce`: y = sum_g s[n,g] * a[m,g] * (P - z[n,g] * S[m,g])
  (MixPE's dequant-after-group-GEMM; a = 1 without activation scales, z = 0
  without zero points)
* `lp.bitplanes`: the weight as B planes of g-bit indices (T-MAC 1.5)
* `lp.lut_scale`, `lp.lut_precompute`: per g activations the 2^g sums
  T[i] = sum_t (2 bit_t(i) - 1) x_t, optionally int8 with a per-act-group
  scale; `half` keeps only the entries with the top index bit set
  (LUT Tensor Core's symmetrization: T[~i] = -T[i])
* `lp.lut_accumulate`: P from table lookups, the same P as group_matmul on u
  (minus 2^(B-1) * S for signed types):
  P = 1/2 sum_b 2^b sum_{j in g} ls * T_j[plane_b[n, j]] + ((2^B - 1)/2 - off) * S

K must be static; the group GEMM ops (group_matmul, group_sum) allow a
shorter last group, the LUT ops need K divisible by their groups. Leading
dimensions of x may be dynamic (`?`, with `lp.dims` set by the builders).
Semantics are implemented in `lpcc/ir/interp.py`.
"""

from __future__ import annotations

from collections.abc import Sequence

from xdsl.dialects.builtin import IntAttr, TensorType, UnitAttr
from xdsl.ir import SSAValue
from xdsl.irdl import (
    AttrSizedOperandSegments,
    IRDLOperation,
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    opt_prop_def,
    prop_def,
    result_def,
    traits_def,
)
from xdsl.traits import Pure

from lpcc.errors import IRError
from lpcc.ir.dialect.ops import (
    _DIRECTIVES,
    _SIG,
    LpOp,
    _elem,
    _is_float,
    _shape,
    _type,
    set_dims,
    value_dims,
)
from lpcc.ir.dialect.types import DYNAMIC, tensor_type
from lpcc.ir.dtypes import DType, FloatType, IntType, dtype, int_

__all__ = [
    "LOWP_OPS",
    "TABLE_LIMIT",
    "BitplanesOp",
    "GroupDequantReduceOp",
    "GroupMatmulOp",
    "GroupSumOp",
    "LutAccumulateOp",
    "LutPrecomputeOp",
    "LutScaleOp",
]

F32 = dtype("f32")
INT8 = int_(8)
INT32 = int_(32)
TABLE_LIMIT = 127  # int8 tables are clamped to +-127 so negation never overflows


def _ceil_groups(op: str, k: int, group: int) -> int:
    """ceil(K / group): the group GEMM ops allow a shorter last group."""
    if group < 1:
        raise IRError(f"{op}: group must be >= 1, got {group}")
    if k == DYNAMIC:
        raise IRError(f"{op}: the reduced dimension K must be static")
    return -(-k // group)


def _groups(op: str, what: str, k: int, group: int) -> int:
    """K / group, checking that K is static and divisible."""
    if group < 1:
        raise IRError(f"{op}: {what} must be >= 1, got {group}")
    if k == DYNAMIC:
        raise IRError(f"{op}: the reduced dimension K must be static")
    if k % group:
        raise IRError(
            f"{op}: K = {k} is not a multiple of {what} {group}; pad K or skip "
            "this rewrite"
        )
    return k // group


def _lead(op: str, t: TensorType, rank: int) -> tuple[int, ...]:
    s = _shape(t)
    if len(s) < rank:
        raise IRError(f"{op}: operand needs rank >= {rank}, got {list(s)}")
    return s


def _int_weight(op: str, dt: DType) -> IntType:
    if not isinstance(dt, IntType) or dt.bits > 8:
        raise IRError(f"{op}: weights must be int/uint of 1..8 bits, got {dt}")
    return dt


def _same_prefix(op: str, what: str, a: Sequence[int], b: Sequence[int]) -> None:
    if len(a) != len(b) or any(
        x != y and DYNAMIC not in (x, y) for x, y in zip(a, b, strict=True)
    ):
        raise IRError(f"{op}: {what}: shapes {list(a)} and {list(b)} differ")


def _with_dims(op: IRDLOperation, src: SSAValue, keep: int, tail: Sequence[int]):
    """Set `lp.dims` of op's result: src's first `keep` dims, then `tail`."""
    set_dims(op, (*value_dims(src)[:keep], *tail))
    return op


def _acc_type(x: DType, w: DType) -> DType:
    if isinstance(x, IntType) and isinstance(w, IntType):
        return INT32
    if _is_float(x):
        return F32
    raise IRError(
        f"integer activations ({x}) need integer weights, got {w}; dequantize or "
        "cast first"
    )


@irdl_op_definition
class GroupMatmulOp(LpOp):
    """P[..., m, n, g] = sum_{k in group g} x[..., m, k] * w[n, k].

    Partial products per K-group, the inner sum of dequant-after-group-GEMM.
    When G does not divide K the last group is shorter (as the quantize
    pass's last scale group), so K / G rounds up.
    Float x: w's values (any int, uint or float type) are multiplied and summed
    in f32. Integer x and w: exact int32 (int8 activations times narrow codes).
    """

    name = "lp.group_matmul"
    input = operand_def(TensorType)
    weight = operand_def(TensorType)
    group = prop_def(IntAttr)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    custom_directives = _DIRECTIVES
    assembly_format = f"$input `,` $weight `group` custom<Int>($group) attr-dict {_SIG}"

    def __init__(self, input: SSAValue, weight: SSAValue, group: int):
        dt, shape = self.infer(_type(input), _type(weight), group)
        super().__init__(
            operands=[input, weight],
            result_types=[tensor_type(dt, shape)],
            properties={"group": IntAttr(group)},
        )
        _with_dims(self, input, -1, shape[-2:])

    @staticmethod
    def infer(x: TensorType, w: TensorType, group: int) -> tuple[DType, tuple]:
        sx = _lead("lp.group_matmul", x, 2)
        sw = _shape(w)
        if len(sw) != 2:
            raise IRError(f"lp.group_matmul: weight must be [N, K], got {list(sw)}")
        if sw[1] != sx[-1]:
            raise IRError(
                f"lp.group_matmul: K differs: input {list(sx)}, weight {list(sw)}"
            )
        gn = _ceil_groups("lp.group_matmul", sx[-1], group)
        return _acc_type(_elem(x), _elem(w)), (*sx[:-1], sw[0], gn)

    def infer_from_operands(self):
        return self.infer(_type(self.input), _type(self.weight), self.group.data)


@irdl_op_definition
class GroupSumOp(LpOp):
    """S[..., g] = sum_{k in group g} x[..., k]: f32 for floats, int32 for ints.

    Computed once per token and group, and shared by every group GEMM that
    reads the same x (the zero-point and LUT corrections need it). The last
    group is shorter when G does not divide K.
    """

    name = "lp.group_sum"
    input = operand_def(TensorType)
    group = prop_def(IntAttr)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    custom_directives = _DIRECTIVES
    assembly_format = f"$input `group` custom<Int>($group) attr-dict {_SIG}"

    def __init__(self, input: SSAValue, group: int):
        dt, shape = self.infer(_type(input), group)
        super().__init__(
            operands=[input],
            result_types=[tensor_type(dt, shape)],
            properties={"group": IntAttr(group)},
        )
        _with_dims(self, input, -1, shape[-1:])

    @staticmethod
    def infer(x: TensorType, group: int) -> tuple[DType, tuple]:
        s = _lead("lp.group_sum", x, 1)
        gn = _ceil_groups("lp.group_sum", s[-1], group)
        dt = _elem(x)
        if not isinstance(dt, IntType | FloatType):
            raise IRError(f"lp.group_sum: needs an int or float tensor, got {dt}")
        return (INT32 if isinstance(dt, IntType) else F32), (*s[:-1], gn)

    def infer_from_operands(self):
        return self.infer(_type(self.input), self.group.data)


@irdl_op_definition
class GroupDequantReduceOp(LpOp):
    """y[.., m, n] = sum_g s[n,g] a[.., m, g] (p[.., m, n, g] - z[n,g] S[.., m, g]).

    The epilogue of dequant-after-group-GEMM: one scale multiply per output
    and group, never per weight. `zero` needs `sums` (S of the same x);
    `act_scale` a is the per-group scale of int8 activations (x = a * X).
    Computed in float64 and rounded once to the float result type.
    """

    name = "lp.group_dequant_reduce"
    partial = operand_def(TensorType)
    scale = operand_def(TensorType)
    zero = opt_operand_def(TensorType)
    sums = opt_operand_def(TensorType)
    act_scale = opt_operand_def(TensorType)
    result = result_def(TensorType)
    irdl_options = (AttrSizedOperandSegments(as_property=True),)
    traits = traits_def(Pure())
    custom_directives = _DIRECTIVES
    # Each operand's type follows it: two optional operands make the shared
    # `custom<Signature>` ambiguous.
    assembly_format = (
        "$partial `:` type($partial) `scale` $scale `:` type($scale) "
        "(`zero` $zero^ `:` type($zero))? (`sums` $sums^ `:` type($sums))? "
        "(`act_scale` $act_scale^ `:` type($act_scale))? attr-dict "
        "`->` type($result)"
    )

    def __init__(
        self,
        partial: SSAValue,
        scale: SSAValue,
        zero: SSAValue | None = None,
        sums: SSAValue | None = None,
        act_scale: SSAValue | None = None,
        out: DType = F32,
    ):
        opt = (zero, sums, act_scale)
        dt, shape = self.infer(
            _type(partial),
            _type(scale),
            *(_type(v) if v is not None else None for v in opt),
            out,
        )
        super().__init__(
            operands=[partial, scale, *([v] if v is not None else [] for v in opt)],
            result_types=[tensor_type(dt, shape)],
        )
        _with_dims(self, partial, -1, ())

    @staticmethod
    def infer(
        p: TensorType,
        s: TensorType,
        z: TensorType | None,
        sums: TensorType | None,
        a: TensorType | None,
        out: DType,
    ) -> tuple[DType, tuple]:
        op = "lp.group_dequant_reduce"
        sp = _lead(op, p, 3)
        n, gn = sp[-2:]
        if _shape(s) != (n, gn):
            raise IRError(f"{op}: scale shape {list(_shape(s))}, expected {[n, gn]}")
        if not _is_float(_elem(s)) and _elem(s).kind != "e8m0":
            raise IRError(f"{op}: scale must be a float or e8m0 tensor")
        if z is not None:
            if _shape(z) != (n, gn):
                raise IRError(f"{op}: zero shape {list(_shape(z))}, expected {[n, gn]}")
            if sums is None:
                raise IRError(f"{op}: a zero point needs the group sums (`sums`)")
        elif sums is not None:
            raise IRError(f"{op}: `sums` is only used with a zero point")
        for what, t in (("sums", sums), ("act_scale", a)):
            if t is not None:
                _same_prefix(op, what, _shape(t), (*sp[:-2], gn))
        if a is not None and _elem(a) != F32:
            raise IRError(f"{op}: act_scale must be f32, got {_elem(a)}")
        if not _is_float(out):
            raise IRError(f"{op}: the result must be a float type, got {out}")
        if (sums is not None) and (
            isinstance(_elem(sums), IntType) != isinstance(_elem(p), IntType)
        ):
            raise IRError(f"{op}: partial and sums must both be int32 or both f32")
        return out, sp[:-1]

    def infer_from_operands(self):
        return self.infer(
            _type(self.partial),
            _type(self.scale),
            *(_type(v) if v is not None else None for v in (self.zero, self.sums)),
            _type(self.act_scale) if self.act_scale is not None else None,
            _elem(self.result.type),
        )


@irdl_op_definition
class BitplanesOp(LpOp):
    """plane[b, n, j] = sum_{t < g} ((u[n, g*j + t] >> b) & 1) << t.

    u = w - min(w's type) is the unsigned code; the result holds, for each of
    the B bits, one g-bit table index per g weights (T-MAC's bit-serial
    weight). On a constant it folds at compile time.
    """

    name = "lp.bitplanes"
    input = operand_def(TensorType)
    group = prop_def(IntAttr)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    custom_directives = _DIRECTIVES
    assembly_format = f"$input `group` custom<Int>($group) attr-dict {_SIG}"

    def __init__(self, input: SSAValue, group: int = 4):
        dt, shape = self.infer(_type(input), group)
        super().__init__(
            operands=[input],
            result_types=[tensor_type(dt, shape)],
            properties={"group": IntAttr(group)},
        )

    @staticmethod
    def infer(w: TensorType, group: int) -> tuple[DType, tuple]:
        op = "lp.bitplanes"
        sw = _shape(w)
        if len(sw) != 2:
            raise IRError(f"{op}: weight must be [N, K], got {list(sw)}")
        if not 2 <= group <= 8:
            raise IRError(f"{op}: group must be 2..8 activations, got {group}")
        dt = _int_weight(op, _elem(w))
        return IntType(group, False), (
            dt.bits,
            sw[0],
            _groups(op, "group", sw[1], group),
        )

    def infer_from_operands(self):
        return self.infer(_type(self.input), self.group.data)


@irdl_op_definition
class LutScaleOp(LpOp):
    """ls[..., a] = max_{j in act group a} (|x_j0| + ... + |x_j(g-1)|) / 127.

    The per-act-group scale of an int8 table: the largest table entry of the
    act group maps to 127.
    """

    name = "lp.lut_scale"
    input = operand_def(TensorType)
    group = prop_def(IntAttr)
    act_group = prop_def(IntAttr)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    custom_directives = _DIRECTIVES
    assembly_format = (
        "$input `group` custom<Int>($group) `act_group` custom<Int>($act_group) "
        f"attr-dict {_SIG}"
    )

    def __init__(self, input: SSAValue, group: int = 4, act_group: int = 64):
        dt, shape = self.infer(_type(input), group, act_group)
        super().__init__(
            operands=[input],
            result_types=[tensor_type(dt, shape)],
            properties={"group": IntAttr(group), "act_group": IntAttr(act_group)},
        )
        _with_dims(self, input, -1, shape[-1:])

    @staticmethod
    def infer(x: TensorType, group: int, act_group: int) -> tuple[DType, tuple]:
        op = "lp.lut_scale"
        s = _lead(op, x, 1)
        if not _is_float(_elem(x)):
            raise IRError(f"{op}: needs float activations, got {_elem(x)}")
        if act_group % group:
            raise IRError(
                f"{op}: act_group {act_group} must be a multiple of group {group}"
            )
        return F32, (*s[:-1], _groups(op, "act_group", s[-1], act_group))

    def infer_from_operands(self):
        return self.infer(_type(self.input), self.group.data, self.act_group.data)


@irdl_op_definition
class LutPrecomputeOp(LpOp):
    """T[..., j, i] = sum_{t < g} (2 bit_t(i) - 1) * x[..., g*j + t].

    One table of 2^g signed sums per g activations (+-1 weight encoding).
    With `scale` ls (from `lp.lut_scale`): int8, rint(T / ls) clamped to
    +-127 (0 where ls is 0). With `half`: only i in [2^(g-1), 2^g), stored
    at i - 2^(g-1); the rest is -T[~i].
    """

    name = "lp.lut_precompute"
    input = operand_def(TensorType)
    scale = opt_operand_def(TensorType)
    group = prop_def(IntAttr)
    half = opt_prop_def(UnitAttr)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    custom_directives = _DIRECTIVES
    assembly_format = (
        "$input (`scale` $scale^)? `group` custom<Int>($group) (`half` $half^)? "
        f"attr-dict {_SIG}"
    )

    def __init__(
        self,
        input: SSAValue,
        scale: SSAValue | None = None,
        group: int = 4,
        half: bool = False,
    ):
        t = _type(scale) if scale is not None else None
        dt, shape = self.infer(_type(input), t, group, half)
        super().__init__(
            operands=[input, [scale] if scale is not None else []],
            result_types=[tensor_type(dt, shape)],
            properties={
                "group": IntAttr(group),
                **({"half": UnitAttr()} if half else {}),
            },
        )
        _with_dims(self, input, -1, shape[-2:])

    @staticmethod
    def infer(
        x: TensorType, scale: TensorType | None, group: int, half: bool
    ) -> tuple[DType, tuple]:
        op = "lp.lut_precompute"
        s = _lead(op, x, 1)
        if not _is_float(_elem(x)):
            raise IRError(f"{op}: needs float activations, got {_elem(x)}")
        if not 2 <= group <= 8:
            raise IRError(f"{op}: group must be 2..8 activations, got {group}")
        j = _groups(op, "group", s[-1], group)
        if scale is not None:
            ss = _shape(scale)
            _same_prefix(op, "scale", ss[:-1], s[:-1])
            if ss[-1] < 1 or s[-1] % ss[-1] or (s[-1] // ss[-1]) % group:
                raise IRError(
                    f"{op}: scale {list(ss)} must have one entry per act group "
                    f"(a multiple of {group} activations) of K = {s[-1]}"
                )
        entries = 2 ** (group - 1) if half else 2**group
        return (INT8 if scale is not None else F32), (*s[:-1], j, entries)

    def infer_from_operands(self):
        t = _type(self.scale) if self.scale is not None else None
        return self.infer(_type(self.input), t, self.group.data, self.half is not None)


@irdl_op_definition
class LutAccumulateOp(LpOp):
    """P[..., m, n, r] from table lookups: group_matmul(x, w) without a multiply.

    With v_b[j] = ls[a(j)] * T[..., m, j, plane[b, n, j]] (ls = 1 for a float
    table; a half table is read as T[i] = H[i - 2^(g-1)] for the top bit set,
    else -H[~i]):
      P = 1/2 sum_b 2^b sum_{j in r} v_b[j] + ((2^B - 1)/2 - off) * S[..., m, r]
    with off = 2^(B-1) when `signed` (the weight type's offset), else 0. S is
    `lp.group_sum(x, group)`. Integer tables sum exactly before ls applies.
    """

    name = "lp.lut_accumulate"
    table = operand_def(TensorType)
    planes = operand_def(TensorType)
    sums = operand_def(TensorType)
    scale = opt_operand_def(TensorType)
    group = prop_def(IntAttr)
    signed = opt_prop_def(UnitAttr)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    custom_directives = _DIRECTIVES
    assembly_format = (
        "$table `,` $planes `,` $sums (`scale` $scale^)? `group` custom<Int>($group) "
        f"(`signed` $signed^)? attr-dict {_SIG}"
    )

    def __init__(
        self,
        table: SSAValue,
        planes: SSAValue,
        sums: SSAValue,
        scale: SSAValue | None,
        group: int,
        signed: bool = False,
    ):
        t = _type(scale) if scale is not None else None
        dt, shape = self.infer(_type(table), _type(planes), _type(sums), t, group)
        super().__init__(
            operands=[table, planes, sums, [scale] if scale is not None else []],
            result_types=[tensor_type(dt, shape)],
            properties={
                "group": IntAttr(group),
                **({"signed": UnitAttr()} if signed else {}),
            },
        )
        _with_dims(self, table, -2, shape[-2:])

    @staticmethod
    def infer(
        table: TensorType,
        planes: TensorType,
        sums: TensorType,
        scale: TensorType | None,
        group: int,
    ) -> tuple[DType, tuple]:
        op = "lp.lut_accumulate"
        st, sp = _lead(op, table, 3), _shape(planes)
        pe = _elem(planes)
        if len(sp) != 3 or not isinstance(pe, IntType) or pe.signed:
            raise IRError(f"{op}: planes must be [B, N, K/g] of uint<g>, got {planes}")
        g = pe.bits
        bits, n, j = sp
        if st[-2] != j:
            raise IRError(f"{op}: table has {st[-2]} groups of {g}, planes {j}")
        if st[-1] not in (2**g, 2 ** (g - 1)):
            raise IRError(
                f"{op}: a table for g = {g} has {2**g} entries ({2 ** (g - 1)} "
                f"when halved), got {st[-1]}"
            )
        te = _elem(table)
        if (scale is None) != (te == F32) or te not in (F32, INT8):
            raise IRError(
                f"{op}: the table must be f32 without a scale or int8 with one, "
                f"got {te}{' with a scale' if scale is not None else ''}"
            )
        k = j * g
        if group % g:
            raise IRError(f"{op}: group {group} must be a multiple of g = {g}")
        gn = _groups(op, "group", k, group)
        _same_prefix(op, "sums", _shape(sums), (*st[:-2], gn))
        if _elem(sums) != F32:
            raise IRError(f"{op}: sums must be f32, got {_elem(sums)}")
        if scale is not None:
            ss = _shape(scale)
            _same_prefix(op, "scale", ss[:-1], st[:-2])
            if k % ss[-1] or (k // ss[-1]) % g:
                raise IRError(f"{op}: scale {list(ss)} does not divide K = {k}")
            a = k // ss[-1]
            if a % group and group % a:
                raise IRError(
                    f"{op}: act group {a} and group {group} must divide one another"
                )
        if not 1 <= bits <= 8:
            raise IRError(f"{op}: 1..8 bit planes, got {bits}")
        return F32, (*st[:-2], n, gn)

    def infer_from_operands(self):
        t = _type(self.scale) if self.scale is not None else None
        return self.infer(
            _type(self.table), _type(self.planes), _type(self.sums), t, self.group.data
        )


LOWP_OPS: tuple[type[IRDLOperation], ...] = (
    GroupMatmulOp,
    GroupSumOp,
    GroupDequantReduceOp,
    BitplanesOp,
    LutScaleOp,
    LutPrecomputeOp,
    LutAccumulateOp,
)
