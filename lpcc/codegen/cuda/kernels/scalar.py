"""The scalar C emitter: one element of an elementwise lp op, as CUDA C.

Elementwise kernels, fused regions and matmul epilogues all compute "one
element of op(x, y, ..)" from element values they already hold; this module
writes those statements once, with the interpreter's semantics
(`lpcc.ir.interp`), so every CUDA generator agrees with it bit for bit where
the math is exact:

* Each result is rounded to its element type as `run_op` does: f32 passes
  through; narrower floats (f16, bf16, f8, f6, f4: values that fit f32 with
  an f32-normal smallest normal) round to nearest even by bit arithmetic,
  with the variant's overflow rule (inf, NaN or saturation) and NaN rule;
  integers saturate to their range (int64 wraps as NumPy's int64).
* f32 add/sub/mul use `__fadd_rn`/`__fmul_rn` (never contracted into FMAs,
  which would change the interpreter's bits); `/` and `__fsqrt_rn` are IEEE
  (nvcc's default -prec-div/-prec-sqrt). max/min propagate NaN and give the
  second operand on ties (NumPy). Comparisons are ordered except `ne`.
* Integer add/sub/mul are exact in 64 bits, then saturate; division rounds
  toward zero exactly (a zero divisor sets status `DIV_ZERO` and gives 0);
  pow and neg/abs wrap in the storage width as NumPy does, then saturate
  (a negative exponent sets `NEG_POW` and gives 0). Bool add/max are `or`,
  mul/min `and`.
* exp, log, tanh, erf, cos, sin and pow use CUDA's f32 libm (expf 2 ulp,
  logf 1, tanhf 2, erff 2, sinf/cosf 2, powf 4 ulp at most; the emulator's
  glibc is within 1); sigmoid is 1 / (1 + expf(-x)) as the interpreter.
* Casts follow `DType.encode`: float -> int rounds half to even, sends NaN
  to 0 and saturates; int -> int saturates; int -> bool is x > 0 (signed)
  or x != 0; float -> narrow float rounds once.

Not handled (`emit_op` returns None): e8m0, floats held as f64, uint64,
non-splat constants, bool arithmetic other than add/mul/max/min, unary
math on integers, int -> narrow float casts that would round twice (a
source range beyond 2^24 into a float with max >= 2^23), quantize/dequantize.

Statuses: an emitted division or pow may store `DIV_ZERO` / `NEG_POW` into
`*status` (the calling-convention parameter `status`); a kernel that uses
this module adds `ERRORS` to its `CudaKernel.errors`. The statements use
only CUDA intrinsics that the host emulator also has, so they need no
prelude beyond `kernel.PRELUDE`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from xdsl.ir import Operation, SSAValue

from lpcc.codegen.cuda.kernel import c_dim, ctype, elem
from lpcc.codegen.shapes import BINARY_KIND as _BINARY
from lpcc.ir.dialect import ops as lp
from lpcc.ir.dialect.fused import YieldOp
from lpcc.ir.dtypes import DType, FloatType, IntType
from lpcc.ir.symbolic import Dim

__all__ = [
    "DIV_ZERO",
    "ERRORS",
    "NEG_POW",
    "CExpr",
    "can_emit",
    "emit_body",
    "emit_op",
    "float_literal",
    "literal",
    "offset_expr",
    "round_float",
    "supported_dtype",
    "unravel",
]

DIV_ZERO = 101
NEG_POW = 102
ERRORS: dict[int, str] = {
    DIV_ZERO: "lp.div: integer division by zero",
    NEG_POW: "lp.pow: integer power with a negative exponent",
}

F32_T = FloatType(8, 23, "ieee")
BOOL_T = IntType(1, False)
Fresh = Callable[[str], str]


@dataclass(frozen=True)
class CExpr:
    """One element's value as C: an expression (preferably a variable name)."""

    text: str  # a C expression of ONE element's value
    dtype: DType  # its lp element type; its C type is kernel.ctype(dtype)


# -- element types ---------------------------------------------------------------------


def supported_dtype(dt: DType) -> bool:
    """Whether the emitter computes on `dt` (see the module docstring)."""
    if isinstance(dt, FloatType):
        if dt == F32_T:
            return True
        return dt.value_dtype == np.float32 and dt.emin >= -126 and dt.man <= 23
    if isinstance(dt, IntType):
        return dt.value_dtype != np.uint64
    return False


def _is_bool(dt: DType) -> bool:
    return dt == BOOL_T


def _wide(dt: DType) -> bool:
    """64-bit storage (int64): arithmetic wraps, as NumPy's int64."""
    return dt.value_dtype.itemsize == 8


def _int_lit(v: int) -> str:
    if v == -(1 << 63):
        return "(-9223372036854775807LL - 1LL)"
    return f"{v}LL"


def float_literal(v: float) -> str:
    """An exact C literal of the f32 value nearest `v` (bits for inf/NaN)."""
    f = np.float32(v)
    if not np.isfinite(f):
        return f"__uint_as_float({int(f.view(np.uint32)):#x}u)"
    text = repr(float(f))
    if np.float32(float(text)) != f:  # pragma: no cover - repr round-trips
        raise AssertionError(text)
    if "e" not in text and "." not in text:
        text += ".0"
    return f"{text}f" if not text.startswith("-") else f"({text}f)"


def literal(value: float | int | bool, dt: DType) -> str:
    """A C expression of the constant `value` (already in dt's domain) as dt."""
    if isinstance(dt, FloatType):
        return float_literal(float(value))
    if _is_bool(dt):
        return "((lp_bool)1)" if bool(value) else "((lp_bool)0)"
    return f"(({ctype(dt)}){_int_lit(int(value))})"


def _saturate(v: str, dt: DType) -> str:
    """C expression: lp_i64 expression `v` clamped to dt's range, as dt's C type."""
    t = ctype(dt)
    if _wide(dt):
        return f"(({t})({v}))"
    lo, hi = _int_lit(int(dt.min)), _int_lit(int(dt.max))
    return f"(({t})(({v}) < {lo} ? {lo} : ({v}) > {hi} ? {hi} : ({v})))"


def round_float(x: str, dt: DType, lines: list[str], fresh: Fresh) -> str:
    """A variable holding f32 value `x` rounded to float type `dt` as
    `dt.round` does (RNE; overflow to inf, NaN or max by variant)."""
    if dt == F32_T:
        return x
    assert isinstance(dt, FloatType)
    y = fresh("rnd")
    m = dt.man
    mx = float_literal(dt.max)
    lines.append(f"float {y};")
    lines.append("{")
    lines.append(f"  unsigned lp_bits = __float_as_uint({x});")
    lines.append("  unsigned lp_sign = lp_bits & 0x80000000u;")
    lines.append("  unsigned lp_mag = lp_bits & 0x7fffffffu;")
    lines.append("  unsigned lp_r = lp_mag;")
    if m < 23:
        s = 23 - m
        # Ties to even; with no mantissa bits the implicit bit is the odd one,
        # so ties round up (as FloatType.encode).
        lsb = "1u" if m == 0 else f"((lp_mag >> {s}) & 1u)"
        big = float_literal(1.5 * 2.0 ** (dt.emin - m + 23))
        lines.append("  float lp_a = __uint_as_float(lp_mag);")
        lines.append(
            f"  unsigned lp_norm = (lp_mag + {(1 << (s - 1)) - 1}u + {lsb}) & "
            f"{(~((1 << s) - 1)) & 0xFFFFFFFF:#x}u;"
        )
        lines.append(
            f"  unsigned lp_sub = __float_as_uint(__fadd_rn(__fadd_rn(lp_a, {big}), "
            f"-{big}));"
        )
        lines.append(
            f"  lp_r = lp_a < {float_literal(2.0**dt.emin)} ? lp_sub : lp_norm;"
        )
    if dt.variant == "ieee":
        over = "0x7f800000u"
    elif dt.variant in ("fn", "fnuz"):
        over = "0x7fc00000u"
    else:
        over = f"{int(np.float32(dt.max).view(np.uint32)):#x}u"
    lines.append(f"  if (__uint_as_float(lp_r) > {mx}) lp_r = {over};")
    lines.append("  unsigned lp_out = lp_r | lp_sign;")
    if dt.variant == "finite":  # NaN encodes as zero of the opposite sign
        lines.append(f"  if ({x} != {x}) lp_out = lp_sign ^ 0x80000000u;")
    else:
        lines.append(f"  if ({x} != {x}) lp_out = 0x7fc00000u | lp_sign;")
    if dt.variant == "fnuz":  # no negative zero
        lines.append("  if (lp_r == 0u) lp_out = 0u;")
    lines.append(f"  {y} = __uint_as_float(lp_out);")
    lines.append("}")
    return y


# -- the ops ---------------------------------------------------------------------------

_UNARY_F: dict[type, str] = {
    lp.ExpOp: "expf({x})",
    lp.LogOp: "logf({x})",
    lp.SqrtOp: "__fsqrt_rn({x})",
    lp.RsqrtOp: "(1.0f / __fsqrt_rn({x}))",
    lp.TanhOp: "tanhf({x})",
    lp.SigmoidOp: "(1.0f / __fadd_rn(1.0f, expf(-{x})))",
    lp.ErfOp: "erff({x})",
    lp.CosOp: "cosf({x})",
    lp.SinOp: "sinf({x})",
    lp.NegOp: "(-{x})",
    lp.AbsOp: "fabsf({x})",
}
_CMP = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}


def _def(
    lines: list[str], fresh: Fresh, dt: DType, expr: str, stem: str = "v"
) -> CExpr:
    name = fresh(stem)
    lines.append(f"{ctype(dt)} {name} = {expr};")
    return CExpr(name, dt)


def _i64(x: CExpr) -> str:
    return f"((lp_i64){x.text})"


def _u64(x: CExpr) -> str:
    return f"((lp_u64)(lp_i64){x.text})"


def _float_binary(
    kind: str, a: str, b: str, dt: DType, lines: list[str], fresh: Fresh
) -> CExpr | None:
    if kind == "add":
        e = f"__fadd_rn({a}, {b})"
    elif kind == "sub":
        e = f"__fadd_rn({a}, -{b})"
    elif kind == "mul":
        e = f"__fmul_rn({a}, {b})"
    elif kind == "div":
        e = f"({a} / {b})"
    elif kind == "max":
        e = f"(({a} != {a}) ? {a} : (({a} > {b}) ? {a} : {b}))"
    elif kind == "min":
        e = f"(({a} != {a}) ? {a} : (({a} < {b}) ? {a} : {b}))"
    else:  # pow, with C99 powf's special cases made exact (NumPy's too)
        e = (
            f"(({b} == 0.0f || {a} == 1.0f) ? 1.0f : ({b} == 1.0f) ? {a} : "
            f"({b} == 2.0f) ? __fmul_rn({a}, {a}) : powf({a}, {b}))"
        )
    v = _def(lines, fresh, F32_T, e, "f")
    return CExpr(round_float(v.text, dt, lines, fresh), dt)


def _int_binary(
    kind: str, a: CExpr, b: CExpr, dt: DType, lines: list[str], fresh: Fresh
) -> CExpr | None:
    t = ctype(dt)
    if _is_bool(dt):
        if kind in ("add", "max"):
            return _def(lines, fresh, dt, f"(lp_bool)({a.text} | {b.text})", "b")
        if kind in ("mul", "min"):
            return _def(lines, fresh, dt, f"(lp_bool)({a.text} & {b.text})", "b")
        return None
    if kind in ("max", "min"):
        c = ">" if kind == "max" else "<"
        return _def(
            lines, fresh, dt, f"(({a.text} {c} {b.text}) ? {a.text} : {b.text})", "i"
        )
    if kind in ("add", "sub", "mul"):
        # Exact in 64 bits for every type below int64 (uint32 * uint32 wraps
        # in int64, as the interpreter's int64 product does), then saturate.
        op = {"add": "+", "sub": "-", "mul": "*"}[kind]
        w = fresh("w")
        lines.append(f"lp_i64 {w} = (lp_i64)({_u64(a)} {op} {_u64(b)});")
        return _def(lines, fresh, dt, _saturate(w, dt), "i")
    if kind == "div":
        x, y, q = fresh("x"), fresh("y"), fresh("q")
        lines.append(f"lp_i64 {x} = {_i64(a)}, {y} = {_i64(b)}, {q};")
        lines.append(f"if ({y} == 0) {{ atomicExch(status, {DIV_ZERO}); {q} = 0; }}")
        # Only int64's minimum / -1 overflows; it wraps (as NumPy).
        lines.append(f"else if ({y} == -1) {q} = (lp_i64)(0ULL - (lp_u64){x});")
        lines.append(f"else {q} = {x} / {y};")
        return _def(lines, fresh, dt, _saturate(q, dt), "i")
    # pow: square and multiply modulo 2^64, then truncate to the storage type
    # (NumPy computes in the storage width), then saturate.
    acc, base, e = fresh("acc"), fresh("base"), fresh("e")
    lines.append(f"lp_u64 {acc} = 1ULL, {base} = {_u64(a)};")
    lines.append(f"lp_i64 {e} = {_i64(b)};")
    if dt.is_signed:
        lines.append(
            f"if ({e} < 0) {{ atomicExch(status, {NEG_POW}); {e} = 0; {acc} = 0ULL; }}"
        )
    lines.append(
        f"for (lp_u64 lp_k = (lp_u64){e}; lp_k; lp_k >>= 1) {{ "
        f"if (lp_k & 1ULL) {acc} *= {base}; {base} *= {base}; }}"
    )
    if _wide(dt):
        return _def(lines, fresh, dt, f"(({t}){acc})", "i")
    return _def(lines, fresh, dt, _saturate(f"(lp_i64)(({t}){acc})", dt), "i")


def _cast_ok(src: DType, dst: DType) -> bool:
    if isinstance(dst, FloatType) and isinstance(src, IntType) and dst != F32_T:
        # One rounding: int -> f32 is exact, or whatever it rounds overflows dst.
        exact = max(-int(src.min), int(src.max)) <= 1 << 24
        return exact or dst.max < 2.0**23
    return True


def _cast(x: CExpr, dst: DType, lines: list[str], fresh: Fresh) -> CExpr | None:
    src = x.dtype
    if src == dst:
        return x
    if not _cast_ok(src, dst):
        return None
    if isinstance(dst, FloatType):
        if isinstance(src, FloatType):
            return CExpr(round_float(x.text, dst, lines, fresh), dst)
        v = _def(lines, fresh, F32_T, f"((float){_i64(x)})", "f")
        return CExpr(round_float(v.text, dst, lines, fresh), dst)
    if isinstance(src, FloatType):
        r = fresh("r")
        lines.append(f"float {r} = rintf({x.text});")
        if _is_bool(dst):
            return _def(lines, fresh, dst, f"(lp_bool)({r} >= 1.0f)", "b")
        limit = float_literal(2.0 ** (dst.bits - int(dst.is_signed)))
        lo = float_literal(float(dst.min))
        e = (
            f"(({r} >= {limit}) ? {_int_lit(int(dst.max))} : ({r} < {lo}) ? "
            f"{_int_lit(int(dst.min))} : ({r} != {r}) ? 0LL : (lp_i64){r})"
        )
        return _def(lines, fresh, dst, f"(({ctype(dst)}){e})", "i")
    if _is_bool(src):
        return _def(lines, fresh, dst, f"(({ctype(dst)}){x.text})", "i")
    if _is_bool(dst):
        c = ">" if src.is_signed else "!="
        return _def(lines, fresh, dst, f"(lp_bool)({x.text} {c} 0)", "b")
    return _def(lines, fresh, dst, _saturate(_i64(x), dst), "i")


def emit_op(
    op: Operation, args: Sequence[CExpr], lines: list[str], fresh: Fresh
) -> CExpr | None:
    """C statements (appended to `lines`) computing one element of `op`'s result
    from its operands' element values `args` (already broadcast); None when the
    op/type is not supported exactly. `fresh(stem)` returns a new variable name.

    A splat `lp.constant` (no args) gives a literal; `lp.broadcast` passes its
    operand on (the caller indexes). Nothing is appended when None is returned
    for a type or op reason known up front; a partial emission may remain
    otherwise, so callers discard `lines` on None.
    """
    if len(op.results) != 1:
        return None
    dt = elem(op.results[0])
    if not supported_dtype(dt) or not all(supported_dtype(a.dtype) for a in args):
        return None
    if isinstance(op, lp.ConstantOp):
        if not op.is_splat:
            return None
        value = op.values().reshape(-1)[0]
        return CExpr(literal(value.item(), dt), dt)
    if isinstance(op, lp.BroadcastOp):
        return args[0]
    if isinstance(op, lp.CastOp):
        return _cast(args[0], dt, lines, fresh)
    if isinstance(op, lp.SelectOp):
        c, a, b = args
        return _def(lines, fresh, dt, f"({c.text} ? {a.text} : {b.text})", "s")
    if isinstance(op, lp.CmpOp):
        a, b = args
        sym = _CMP[op.predicate.data]
        return _def(lines, fresh, dt, f"(lp_bool)({a.text} {sym} {b.text})", "c")
    if type(op) in _BINARY:
        a, b = args
        kind = _BINARY[type(op)]
        if isinstance(dt, FloatType):
            return _float_binary(kind, a.text, b.text, dt, lines, fresh)
        return _int_binary(kind, a, b, dt, lines, fresh)
    if isinstance(op, lp.NegOp | lp.AbsOp) and isinstance(dt, IntType):
        if _is_bool(dt) or not dt.is_signed:
            return None
        # Wraps in the storage width (NumPy), then saturates to dt.
        t = ctype(dt)
        (x,) = args
        n = f"(({t})(0ULL - {_u64(x)}))"
        if isinstance(op, lp.AbsOp):
            n = f"(({x.text} < 0) ? {n} : {x.text})"
        return _def(lines, fresh, dt, _saturate(f"(lp_i64){n}", dt), "i")
    if type(op) in _UNARY_F and isinstance(dt, FloatType):
        v = _def(lines, fresh, F32_T, _UNARY_F[type(op)].format(x=args[0].text), "f")
        return CExpr(round_float(v.text, dt, lines, fresh), dt)
    return None


def can_emit(op: Operation) -> bool:
    """Whether `emit_op` handles `op` with its operand and result types."""
    args = [CExpr(f"a{i}", elem(v)) for i, v in enumerate(op.operands)]
    n = iter(range(1 << 30))
    return emit_op(op, args, [], lambda s: f"{s}{next(n)}") is not None


def emit_body(
    ops: Sequence[Operation],
    env: dict[SSAValue, CExpr],
    lines: list[str],
    fresh: Fresh,
) -> bool:
    """emit_op for each op in order (lp.constant splat -> a C literal of the
    right type; stops at lp.yield), filling env; False if any op is unsupported.

    Ops whose results are all in `env` already are skipped: a caller puts
    values it computes itself there first (iota indices, reductions).
    """
    for op in ops:
        if isinstance(op, YieldOp) or op.name == "func.return":
            break
        if op.results and all(r in env for r in op.results):
            continue
        if any(v not in env for v in op.operands):
            return False
        v = emit_op(op, [env[o] for o in op.operands], lines, fresh)
        if v is None:
            return False
        env[op.results[0]] = v
    return True


# -- indexing --------------------------------------------------------------------------


def _is_one(d: Dim) -> bool:
    return isinstance(d, int) and d == 1


def offset_expr(
    in_shape: Sequence[Dim],
    out_shape: Sequence[Dim],
    index_vars: Sequence[str],
    used: list[str],
) -> str:
    """C expression of the element offset in a contiguous row-major input of
    `in_shape` (same rank as out_shape, size-1 dims broadcast) for the output
    index given per dim by `index_vars`; sizes may be symbolic (use kernel.c_dim).

    A lower-rank input is aligned to the right (leading dims broadcast).
    """
    rank = len(out_shape)
    pad = rank - len(in_shape)
    if pad < 0 or len(index_vars) != rank:
        raise ValueError("offset_expr: input rank above the output's")
    full = [1] * pad + list(in_shape)
    terms: list[str] = []
    stride: list[str] = []  # product of the sizes to the right, as C factors
    for d in range(rank - 1, pad - 1, -1):
        n = full[d]
        if not _is_one(n):
            idx = index_vars[d]
            terms.append("*".join([idx, *stride]))
            stride = [*stride, c_dim(n, used)]
    if not terms:
        return "0LL"
    return "(" + " + ".join(reversed(terms)) + ")"


def unravel(
    linear: str, out_shape: Sequence[Dim], names: Sequence[str], used: list[str]
) -> list[str]:
    """C statements splitting `linear` (a long long) into per-dim index variables
    `names` (declared here, `long long`) of a row-major `out_shape`."""
    rank = len(out_shape)
    if rank == 0:
        return []
    rem = f"{names[0]}_rem"
    out = [f"long long {rem} = {linear};"]
    for d in range(rank - 1, 0, -1):
        n = out_shape[d]
        if _is_one(n):
            out.append(f"long long {names[d]} = 0;")
            continue
        c = c_dim(n, used)
        out.append(f"long long {names[d]} = {rem} % {c}; {rem} /= {c};")
    out.append(f"long long {names[0]} = {rem};")
    return out
