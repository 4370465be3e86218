"""CPU kernels for elementwise ops and `lp.fused elementwise` regions.

Every elementwise op (add ... pow, cmp, the unary math ops, select, cast)
and every fused elementwise region (a chain of those, broadcasts, splat
constants and iotas, possibly ending in sum/mean/max/min reductions) becomes
one loop nest that computes the body in registers: no temporaries, one read
of each input and one write of each output. The reductions of `reduce.py`
(standalone lp.reduce_*) use the same nest with a body of one op.

The nest. The iteration space S is the broadcast of the body's shapes
(right-aligned: an `lp.broadcast` in a body may add leading dimensions).
Dimensions of size 1 are dropped and adjacent dimensions that every buffer
treats alike (all contiguous or all broadcast, and the same role) merge
into groups, so `x[a, b, c] + bias[1, 1, c]` is a 2-D nest. A group is a
*row* group (parallel: its indices come from the row number the worker pool
hands out) or a *loop* group (a reduced dimension: a sequential loop whose
values accumulate in registers). Two schedules:

* columns: the last group is a row group. Rows are (the other row groups) x
  (blocks of `BLOCK` elements of the last group), so even a 1-D tensor is
  split over the threads; inside a row, vectors of `W` lanes (8 f32 on AVX2,
  16 on AVX-512, 4 on SSE2) run over the block, then a scalar tail. Loop
  groups (column reductions) nest inside each vector of 8W columns, whose
  accumulators stay in registers while the loops walk down the rows.
* inner: the last group is reduced. A row is one output element; the loop
  groups nest inside it, the last one vectorized into 4W lane accumulators
  (four independent add chains) that are combined pairwise at the end.

Operands that are broadcast along the vectorized dimension are loaded once
per row and splatted; the reductions reassociate float sums (lanes), which
no other op does (no fast-math flags anywhere: FMA contraction or
reassociation would change the interpreter's bits).

Semantics follow the interpreter (`lpcc.ir.interp`) op by op:

* Each op's result is rounded to its element type as `run_op` does: f32
  passes through; narrower floats (f16, bf16, f8, f6, f4: any float whose
  values fit f32 and whose smallest normal is an f32 normal) are rounded to
  nearest even with the variant's overflow rule (inf, NaN or saturation) by
  bit arithmetic (`Emitter.round_float`); integers saturate to their range.
* Integer add/sub/mul are exact (in the narrowest register that holds the
  exact result) and then saturate; int64 wraps as NumPy's int64 does (and
  so does uint32 * uint32, which the interpreter multiplies in int64).
  Integer division rounds toward zero, exactly (the interpreter's
  `_int_div` differs when an operand is its storage type's minimum, where
  NumPy's abs wraps); integer pow wraps in the storage width as NumPy's
  does; neg/abs wrap at the storage minimum. Division by zero and negative
  integer exponents, which the interpreter rejects with an error, give 0
  here (a kernel cannot raise).
* max/min propagate NaN and return the second operand on ties (NumPy's
  SIMD loops: `maximum(-0.0, 0.0)` is 0.0). Comparisons are ordered except
  `ne`. Casts round half to even, send NaN to 0 and saturate (`DType.encode`).
* exp, log, tanh, sigmoid and erf are f32 polynomials with range reduction
  (Cephes-style exp and log, erf fitted here), vectorized, no libm: exp
  and log within 1 ulp of the exact value, tanh 1.5, sigmoid and erf 2
  (bounds derived and measured in tests/codegen/test_elementwise.py; NumPy's
  own float32 exp and log are 2.2 and 3 ulp off). sin and cos reduce by
  pi/2 in f64 (FreeBSD's medium-size path) and evaluate f64 polynomials
  (0.55 ulp); lanes with |x| >= 2^28, where that reduction loses the
  quadrant, call libm's sinf/cosf in a rarely taken branch. Float pow is
  exp(y log|x|) in f64 (1 ulp) with C99 powf's special cases; y == 2 is
  x * x. add/sub/mul/div/sqrt/rsqrt, compares, casts, roundings and
  everything integer are bit for bit.

Not handled (the generator returns None, the op runs in the interpreter):
e8m0, floats held as f64, uint64 (and uint33..64), casts of integers wider
than 24 bits to narrow floats with a range beyond 2^24 (bf16: sitofp would
round twice), bool arithmetic other than add/mul/max/min,
reductions whose input broadcasts along a reduced dimension, fused bodies
whose reductions disagree on their dimensions, non-splat constants, and
dynamic sizes that cannot be proven equal or broadcast.

`emit_elementwise(kb, op, operands)` is the public helper that other
generators (matmul epilogues) call to apply one elementwise op to values
they hold in registers, scalars or vectors; `can_emit(op)` says whether it
can.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from llvmlite import ir
from xdsl.ir import Operation, OpResult, SSAValue

from lpcc.codegen.llvm.kernel import (
    F32,
    F64,
    I1,
    I8,
    I32,
    I64,
    KernelBuilder,
    KernelRequest,
    NativeKernel,
    elem,
    register,
    shape,
    storage_type,
)
from lpcc.codegen.shapes import BINARY_KIND as _BINARY
from lpcc.ir.dialect import ops as lp
from lpcc.ir.dialect.fused import FusedOp, YieldOp
from lpcc.ir.dtypes import DType, FloatType, IntType
from lpcc.ir.symbolic import Dim
from lpcc.ir.symbolic import dim_mul as _mul
from lpcc.ir.symbolic import dim_prod as _prod

__all__ = [
    "Emitter",
    "can_emit",
    "emit_elementwise",
    "lanes_for",
    "supported_dtype",
]

F32_T = FloatType(8, 23, "ieee")
BOOL_T = IntType(1, False)

# A row of the columns schedule covers at most this many elements of the
# last group (so a long 1-D tensor still splits over the threads).
BLOCK = 4096
# Each thread's share of a kernel is at least about this many elements.
CHUNK = 16 * 1024
# A dynamic size counts as this many elements when choosing a granule.
GUESS = 64

# -- element types ------------------------------------------------------------------


def _is_f32(dt: DType) -> bool:
    return dt == F32_T


def _is_bool(dt: DType) -> bool:
    return dt == BOOL_T


def supported_dtype(dt: DType) -> bool:
    """Whether these kernels compute on `dt` (see the module docstring)."""
    if isinstance(dt, FloatType):
        if _is_f32(dt):
            return True
        return dt.value_dtype == np.float32 and dt.emin >= -126 and dt.man <= 23
    if isinstance(dt, IntType):
        return dt.value_dtype != np.uint64
    return False


def _reg(dt: DType) -> ir.Type:
    """The scalar register type of `dt`'s values: f32, i1 (bool) or storage."""
    if isinstance(dt, FloatType):
        return F32
    if _is_bool(dt):
        return I1
    return storage_type(dt)


def _signed(dt: DType) -> bool:
    return bool(dt.is_signed)


def lanes_for(isa: str) -> int:
    """f32 lanes of one vector register on `isa`."""
    return {"avx512": 16, "avx2": 8}.get(isa, 4)


def _vt(t: ir.Type, w: int) -> ir.Type:
    return t if w == 1 else ir.VectorType(t, w)


def _lanes(v: ir.Value) -> int:
    return v.type.count if isinstance(v.type, ir.VectorType) else 1


def _elt(t: ir.Type) -> ir.Type:
    return t.element if isinstance(t, ir.VectorType) else t


def _mangle(t: ir.Type) -> str:
    if isinstance(t, ir.VectorType):
        return f"v{t.count}{_mangle(t.element)}"
    if t == F32:
        return "f32"
    if t == F64:
        return "f64"
    return f"i{t.width}"


def _scalar_const(t: ir.Type, value: float | int | bool) -> ir.Constant:
    if isinstance(t, ir.IntType):
        v = int(value) & ((1 << t.width) - 1)
        if t.width > 1 and v >= 1 << (t.width - 1):
            v -= 1 << t.width
        return ir.Constant(t, v)
    return ir.Constant(t, float(value))


# Polynomial coefficients (highest degree first).
# Cephes expf: e^r = 1 + r + r^2 P(r), |r| <= ln2/2.
_EXP_P = (
    1.9875691500e-4,
    1.3981999507e-3,
    8.3334519073e-3,
    4.1665795894e-2,
    1.6666665459e-1,
    5.0000001201e-1,
)
# Cephes logf: log(1+m) = m - m^2/2 + m^3 P(m), sqrt(1/2) - 1 <= m < sqrt(2) - 1.
_LOG_P = (
    7.0376836292e-2,
    -1.1514610310e-1,
    1.1676998740e-1,
    -1.2420140846e-1,
    1.4249322787e-1,
    -1.6668057665e-1,
    2.0000714765e-1,
    -2.4999993993e-1,
    3.3333331174e-1,
)
# Cephes tanhf for |x| < 0.625: tanh x = x + x^3 P(x^2).
_TANH_P = (
    -5.70498872745e-3,
    2.06390887954e-2,
    -5.37397155531e-2,
    1.33314422036e-1,
    -3.33332819422e-1,
)
# erf, fitted for this file (least squares on Chebyshev nodes, relative
# error): |x| < 0.875: erf x = x C0 + x^3 P(x^2); 0.875 <= |x| < 4:
# erf x = 1 - exp(-x^2) Q(1/x) (Q approximates erfc(x) exp(x^2)).
_ERF_C0 = 1.128379225730896
_ERF_SMALL = (
    -0.00038576144577495014,
    0.0012007328261610661,
    -0.002109148004627616,
    0.005966157264528621,
    -0.027101770301637768,
    0.11287641511310427,
    -0.37612917404061286,
)
_ERF_LARGE = (
    0.0070427694777406265,
    -0.059746815244845465,
    0.2270422732298522,
    -0.504550633468236,
    0.7050456333012937,
    -0.5750821591361213,
    0.07349016240993161,
    0.5536807128400818,
    0.0006616325503170503,
)
# FreeBSD k_sinf.c / k_cosf.c (double, |r| <= pi/4), lowest degree first.
_SIN_D = (
    -0.16666666641626524,
    0.008333329385889463,
    -0.00019839334836096632,
    2.718311493989822e-06,
)
_COS_D = (
    -0.499999997251031,
    0.04166662332373906,
    -0.001388676377460993,
    2.439044879627741e-05,
)
_PIO2_1 = 1.57079631090164184570e00  # first 25 bits of pi/2
_PIO2_1T = 1.58932547735281966916e-08  # pi/2 - _PIO2_1
# fdlibm e_log.c: log(1+f) = f - hfsq + s (hfsq + R(s^2)).
_LG = (
    6.666666666666735130e-01,
    3.999999999940941908e-01,
    2.857142874366239149e-01,
    2.222219843214978396e-01,
    1.818357216161805012e-01,
    1.531383769920937332e-01,
    1.479819860511658591e-01,
)
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10


class Emitter:
    """Elementwise arithmetic with lp semantics on scalars or vectors.

    Values are llvmlite values of the register type of their lp type (f32,
    i1 for bool, the storage integer otherwise), scalar or `<n x T>`; every
    method works on both. Intrinsics are declared in the builder's module.
    """

    def __init__(
        self, b: ir.IRBuilder, fail: Callable[[ir.Value, str], None] | None = None
    ) -> None:
        self.b = b
        self.module: ir.Module = b.function.module
        # `KernelBuilder.fail_if`: flag bad data (an integer division by zero)
        # for the caller to raise; without it such lanes just give 0.
        self.fail = fail

    # -- small helpers ---------------------------------------------------------

    def c(self, like: ir.Value | ir.Type, value: float | int | bool) -> ir.Constant:
        """A constant of `like`'s type (a splat for vectors)."""
        t = like if isinstance(like, ir.Type) else like.type
        if isinstance(t, ir.VectorType):
            return ir.Constant(t, [_scalar_const(t.element, value)] * t.count)
        return _scalar_const(t, value)

    def splat(self, v: ir.Value, w: int) -> ir.Value:
        """`v` (a scalar) in all `w` lanes; `v` itself if w == 1."""
        if w == 1 or isinstance(v.type, ir.VectorType):
            return v
        b = self.b
        vt = ir.VectorType(v.type, w)
        one = b.insert_element(ir.Constant(vt, ir.Undefined), v, ir.Constant(I32, 0))
        mask = ir.Constant(ir.VectorType(I32, w), [0] * w)
        return b.shuffle_vector(one, ir.Constant(vt, ir.Undefined), mask)

    def intr(self, name: str, t: ir.Type, n: int) -> ir.Function:
        """The overloaded intrinsic `name` on type `t` taking `n` arguments."""
        full = f"{name}.{_mangle(t)}"
        fn = self.module.globals.get(full)
        if fn is None:
            fn = ir.Function(self.module, ir.FunctionType(t, [t] * n), full)
        return fn

    def call(self, name: str, *args: ir.Value) -> ir.Value:
        return self.b.call(self.intr(name, args[0].type, len(args)), list(args))

    def sel(self, c: ir.Value, a: ir.Value, b: ir.Value) -> ir.Value:
        return self.b.select(c, a, b)

    def int_type(self, x: ir.Value, width: int) -> ir.Type:
        return _vt(ir.IntType(width), _lanes(x))

    def as_int(self, x: ir.Value) -> ir.Value:
        width = 64 if _elt(x.type) == F64 else 32
        return self.b.bitcast(x, self.int_type(x, width))

    def as_float(self, x: ir.Value) -> ir.Value:
        t = F64 if _elt(x.type).width == 64 else F32
        return self.b.bitcast(x, _vt(t, _lanes(x)))

    # -- float building blocks -------------------------------------------------

    def fabs(self, x: ir.Value) -> ir.Value:
        return self.call("llvm.fabs", x)

    def copysign(self, mag: ir.Value, sign: ir.Value) -> ir.Value:
        return self.call("llvm.copysign", mag, sign)

    def fma(self, a: ir.Value, b: ir.Value, c: ir.Value) -> ir.Value:
        """a * b + c, fused where the ISA has FMA (llvm.fmuladd)."""
        return self.call("llvm.fmuladd", a, b, c)

    def poly(self, x: ir.Value, coeffs: Sequence[float]) -> ir.Value:
        """Horner's rule, highest-degree coefficient first."""
        acc: ir.Value = self.c(x, coeffs[0])
        for k in coeffs[1:]:
            acc = self.fma(acc, x, self.c(x, k))
        return acc

    def isnan(self, x: ir.Value) -> ir.Value:
        return self.b.fcmp_unordered("uno", x, x)

    def lt(self, a: ir.Value, k: float) -> ir.Value:
        return self.b.fcmp_ordered("<", a, self.c(a, k))

    def gt(self, a: ir.Value, k: float) -> ir.Value:
        return self.b.fcmp_ordered(">", a, self.c(a, k))

    def clamp(self, x: ir.Value, lo: float, hi: float) -> ir.Value:
        """x limited to [lo, hi]; NaN stays NaN."""
        x = self.sel(self.gt(x, hi), self.c(x, hi), x)
        return self.sel(self.lt(x, lo), self.c(x, lo), x)

    def rint(self, x: ir.Value) -> ir.Value:
        """Round half to even to an integral float (any magnitude, no libm)."""
        b = self.b
        big = 2.0**52 if _elt(x.type) == F64 else 2.0**23
        a = self.fabs(x)
        r = b.fsub(b.fadd(a, self.c(x, big)), self.c(x, big))
        return self.sel(self.lt(a, big), self.copysign(r, x), x)

    def round_n(self, t: ir.Value) -> tuple[ir.Value, ir.Value]:
        """(nearest integer as a float, as an int) for |t| < 2^22 (2^51 in f64)."""
        b = self.b
        magic = 1.5 * 2.0**52 if _elt(t.type) == F64 else 1.5 * 2.0**23
        m = b.fadd(t, self.c(t, magic))
        nf = b.fsub(m, self.c(t, magic))
        ni = b.sub(self.as_int(m), self.as_int(self.c(t, magic)))
        return nf, ni

    def pow2(self, n: ir.Value, t: ir.Type) -> ir.Value:
        """2^n for int lanes n in the normal range of float type `t`."""
        b = self.b
        if _elt(t) == F64:
            bits = b.shl(b.add(n, self.c(n, 1023)), self.c(n, 52))
        else:
            bits = b.shl(b.add(n, self.c(n, 127)), self.c(n, 23))
        return b.bitcast(bits, t)

    # -- f32 transcendentals -----------------------------------------------------

    def exp(self, x: ir.Value) -> ir.Value:
        """e^x (Cephes expf): overflow to inf, gradual underflow, NaN kept."""
        b = self.b
        x = self.clamp(x, -104.0, 89.0)
        nf, ni = self.round_n(b.fmul(x, self.c(x, 1.44269504088896341)))
        r = self.fma(nf, self.c(x, -0.693359375), x)
        r = self.fma(nf, self.c(x, 2.12194440e-4), r)
        z = b.fmul(r, r)
        y = b.fadd(self.fma(self.poly(r, _EXP_P), z, r), self.c(x, 1.0))
        # 2^n in two factors so that n in [-151, 129] needs no special case.
        n1 = b.ashr(ni, self.c(ni, 1))
        n2 = b.sub(ni, n1)
        return b.fmul(b.fmul(y, self.pow2(n1, x.type)), self.pow2(n2, x.type))

    def log(self, x: ir.Value) -> ir.Value:
        """Natural log (Cephes logf), subnormals, 0 -> -inf, < 0 -> NaN."""
        b = self.b
        small = self.lt(x, 2.0**-126)
        xs = self.sel(small, b.fmul(x, self.c(x, 2.0**23)), x)
        bits = self.as_int(xs)
        e = b.and_(b.lshr(bits, self.c(bits, 23)), self.c(bits, 0xFF))
        e = b.add(e, self.sel(small, self.c(bits, -126 - 23), self.c(bits, -126)))
        m = b.bitcast(
            b.or_(b.and_(bits, self.c(bits, 0x007FFFFF)), self.c(bits, 0x3F000000)),
            x.type,
        )
        low = self.lt(m, 0.707106781186547524)
        e = self.sel(low, b.sub(e, self.c(e, 1)), e)
        m = b.fsub(self.sel(low, b.fadd(m, m), m), self.c(x, 1.0))
        ef = b.sitofp(e, x.type)
        z = b.fmul(m, m)
        y = b.fmul(b.fmul(self.poly(m, _LOG_P), m), z)
        y = self.fma(ef, self.c(x, -2.12194440e-4), y)
        y = self.fma(z, self.c(x, -0.5), y)
        r = b.fadd(m, y)
        r = self.fma(ef, self.c(x, 0.693359375), r)
        r = self.sel(b.fcmp_ordered("==", x, self.c(x, math.inf)), x, r)
        r = self.sel(b.fcmp_ordered("==", x, self.c(x, 0.0)), self.c(x, -math.inf), r)
        r = self.sel(self.lt(x, 0.0), self.c(x, math.nan), r)
        return self.sel(self.isnan(x), x, r)

    def tanh(self, x: ir.Value) -> ir.Value:
        """tanh (Cephes tanhf): odd polynomial below 0.625, 1 - 2/(e^2|x| + 1)."""
        b = self.b
        a = self.fabs(x)
        z = b.fmul(x, x)
        small = self.fma(b.fmul(self.poly(z, _TANH_P), z), x, x)
        e = self.exp(b.fadd(a, a))
        big = b.fsub(self.c(x, 1.0), b.fdiv(self.c(x, 2.0), b.fadd(e, self.c(x, 1.0))))
        return self.sel(self.lt(a, 0.625), small, self.copysign(big, x))

    def sigmoid(self, x: ir.Value) -> ir.Value:
        """1 / (1 + e^-x), the interpreter's formula."""
        b = self.b
        e = self.exp(b.fneg(x))
        return b.fdiv(self.c(x, 1.0), b.fadd(self.c(x, 1.0), e))

    def erf(self, x: ir.Value) -> ir.Value:
        """erf: x P(x^2) below 0.875, 1 - e^-x^2 Q(1/x) up to 4, +-1 beyond."""
        b = self.b
        a = self.clamp(self.fabs(x), 0.0, 4.0)
        z = b.fmul(a, a)
        small = self.fma(
            a, self.c(x, _ERF_C0), b.fmul(b.fmul(a, z), self.poly(z, _ERF_SMALL))
        )
        q = self.poly(b.fdiv(self.c(x, 1.0), a), _ERF_LARGE)
        large = b.fsub(self.c(x, 1.0), b.fmul(self.exp(b.fneg(z)), q))
        return self.copysign(self.sel(self.lt(a, 0.875), small, large), x)

    # -- f64-based functions (accuracy beyond what f32 polynomials give) ----------

    def _sincos(self, x: ir.Value, want_sin: bool) -> ir.Value:
        """sin or cos: reduce by pi/2 in f64 (FreeBSD's medium-size path)."""
        b = self.b
        xd = b.fpext(x, _vt(F64, _lanes(x)))
        nf, ni = self.round_n(b.fmul(xd, self.c(xd, 6.36619772367581382433e-01)))
        r = b.fsub(
            b.fsub(xd, b.fmul(nf, self.c(xd, _PIO2_1))),
            b.fmul(nf, self.c(xd, _PIO2_1T)),
        )
        z = b.fmul(r, r)
        s_tail = self.poly(z, _SIN_D[::-1])
        s = self.fma(b.fmul(r, z), s_tail, r)
        c = self.fma(z, self.poly(z, _COS_D[::-1]), self.c(xd, 1.0))
        odd = b.trunc(b.and_(ni, self.c(ni, 1)), _vt(I1, _lanes(x)))
        if want_sin:
            v = self.sel(odd, c, s)
            flip = b.and_(ni, self.c(ni, 2))
        else:
            v = self.sel(odd, s, c)
            flip = b.and_(b.add(ni, self.c(ni, 1)), self.c(ni, 2))
        neg = b.icmp_unsigned("!=", flip, self.c(flip, 0))
        v = self.sel(neg, b.fneg(v), v)
        return self._libm_beyond(
            x, b.fptrunc(v, x.type), 2.0**28, "sinf" if want_sin else "cosf"
        )

    def _libm_beyond(
        self, x: ir.Value, fast: ir.Value, limit: float, name: str
    ) -> ir.Value:
        """`fast`, except lanes with |x| >= limit: libm's `name` (a rare
        branch: the f64 reduction above loses the quadrant beyond 2^28)."""
        b = self.b
        w = _lanes(x)
        huge = b.fcmp_ordered(">=", self.fabs(x), self.c(x, limit))
        anyh = huge if w == 1 else b.bitcast(huge, ir.IntType(w))
        anyh = b.icmp_unsigned("!=", anyh, self.c(anyh.type, 0))
        fn = self.module.globals.get(name)
        if fn is None:
            fn = ir.Function(self.module, ir.FunctionType(F32, [F32]), name)
        with b.goto_entry_block():
            b.position_at_start(b.function.entry_basic_block)
            slot = b.alloca(fast.type)
        b.store(fast, slot)
        with b.if_then(anyh, likely=False):
            if w == 1:
                b.store(b.call(fn, [x]), slot)
            else:
                v = fast
                for k in range(w):
                    lane = ir.Constant(I32, k)
                    v = b.insert_element(
                        v, b.call(fn, [b.extract_element(x, lane)]), lane
                    )
                b.store(self.sel(huge, v, fast), slot)
        return b.load(slot)

    def sin(self, x: ir.Value) -> ir.Value:
        return self._sincos(x, True)

    def cos(self, x: ir.Value) -> ir.Value:
        return self._sincos(x, False)

    def _log_f64(self, a: ir.Value) -> ir.Value:
        """log(a) for positive finite f64 `a` (fdlibm's reduction and series)."""
        b = self.b
        bits = self.as_int(a)
        e = b.sub(b.lshr(bits, self.c(bits, 52)), self.c(bits, 1023))
        m = b.bitcast(
            b.or_(
                b.and_(bits, self.c(bits, 0x000FFFFFFFFFFFFF)),
                self.c(bits, 0x3FF0000000000000),
            ),
            a.type,
        )
        hi = self.gt(m, math.sqrt(2.0))
        m = self.sel(hi, b.fmul(m, self.c(m, 0.5)), m)
        e = self.sel(hi, b.add(e, self.c(e, 1)), e)
        f = b.fsub(m, self.c(m, 1.0))
        s = b.fdiv(f, b.fadd(f, self.c(f, 2.0)))
        z = b.fmul(s, s)
        w = b.fmul(z, z)
        t1 = b.fmul(w, self.poly(w, (_LG[5], _LG[3], _LG[1])))
        t2 = b.fmul(z, self.poly(w, (_LG[6], _LG[4], _LG[2], _LG[0])))
        r = b.fadd(t1, t2)
        hfsq = b.fmul(b.fmul(f, f), self.c(f, 0.5))
        log1p = b.fsub(f, b.fsub(hfsq, b.fmul(s, b.fadd(hfsq, r))))
        ef = b.sitofp(e, a.type)
        return b.fadd(
            b.fmul(ef, self.c(a, _LN2_HI)),
            b.fadd(b.fmul(ef, self.c(a, _LN2_LO)), log1p),
        )

    def _exp_f64(self, t: ir.Value) -> ir.Value:
        """e^t in f64 for t clamped to [-200, 200] (Taylor series after reduction)."""
        b = self.b
        t = self.clamp(t, -200.0, 200.0)
        kf, ki = self.round_n(b.fmul(t, self.c(t, 1.0 / math.log(2.0))))
        r = b.fsub(
            b.fsub(t, b.fmul(kf, self.c(t, _LN2_HI))), b.fmul(kf, self.c(t, _LN2_LO))
        )
        p = self.poly(r, [1.0 / math.factorial(k) for k in range(12, -1, -1)])
        return b.fmul(p, self.pow2(ki, t.type))

    def powf(self, x: ir.Value, y: ir.Value) -> ir.Value:
        """x ** y for f32 (C99 powf's special cases), via f64 exp(y log|x|)."""
        b = self.b
        w = _lanes(x)
        dt = _vt(F64, w)
        xd, yd = b.fpext(x, dt), b.fpext(y, dt)
        ax = self.fabs(xd)
        safe = self.sel(b.fcmp_ordered("==", ax, self.c(ax, 0.0)), self.c(ax, 1.0), ax)
        lnx = self._log_f64(self.sel(self.isnan(safe), self.c(ax, 1.0), safe))
        lnx = self.sel(
            b.fcmp_ordered("==", ax, self.c(ax, 0.0)), self.c(ax, -math.inf), lnx
        )
        lnx = self.sel(
            b.fcmp_ordered("==", ax, self.c(ax, math.inf)), self.c(ax, math.inf), lnx
        )
        mag = b.fptrunc(self._exp_f64(b.fmul(yd, lnx)), x.type)
        ay = self.fabs(y)
        y_int = b.fcmp_ordered("==", self.rint(y), y)  # inf counts as even
        small_y = self.lt(ay, 2.0**24)
        yi = b.fptosi(self.sel(small_y, y, self.c(y, 0.0)), self.int_type(y, 32))
        y_odd = b.and_(
            b.and_(y_int, small_y),
            b.trunc(b.and_(yi, self.c(yi, 1)), _vt(I1, w)),
        )
        sign = b.icmp_signed("<", self.as_int(x), self.c(self.int_type(x, 32), 0))
        res = self.sel(b.and_(sign, y_odd), b.fneg(mag), mag)
        neg_finite = b.and_(self.lt(x, 0.0), self.gt(x, -math.inf))
        res = self.sel(b.and_(neg_finite, b.not_(y_int)), self.c(x, math.nan), res)
        res = self.sel(b.or_(self.isnan(x), self.isnan(y)), self.c(x, math.nan), res)
        minus_one_inf = b.and_(
            b.fcmp_ordered("==", x, self.c(x, -1.0)),
            b.fcmp_ordered("==", ay, self.c(y, math.inf)),
        )
        one = self.c(x, 1.0)
        res = self.sel(minus_one_inf, one, res)
        res = self.sel(b.fcmp_ordered("==", y, self.c(y, 2.0)), b.fmul(x, x), res)
        res = self.sel(b.fcmp_ordered("==", y, self.c(y, 1.0)), x, res)
        res = self.sel(b.fcmp_ordered("==", x, one), one, res)
        return self.sel(b.fcmp_ordered("==", y, self.c(y, 0.0)), one, res)

    # -- rounding to a narrower type --------------------------------------------

    def round_float(self, x: ir.Value, dt: DType) -> ir.Value:
        """f32 `x` rounded to float type `dt` as `dt.round` does (f32: as is)."""
        if _is_f32(dt):
            return x
        assert isinstance(dt, FloatType)
        b = self.b
        m = dt.man
        bits = self.as_int(x)
        sign = b.and_(bits, self.c(bits, 0x80000000))
        mag = b.and_(bits, self.c(bits, 0x7FFFFFFF))
        a = b.bitcast(mag, x.type)
        r = mag
        if m < 23:
            s = 23 - m
            # Ties to even; with no mantissa bits the implicit bit is the odd
            # one, so ties round up (as `FloatType.encode`).
            lsb = (
                self.c(mag, 1)
                if m == 0
                else b.and_(b.lshr(mag, self.c(mag, s)), self.c(mag, 1))
            )
            up = b.add(b.add(mag, self.c(mag, (1 << (s - 1)) - 1)), lsb)
            normal = b.and_(up, self.c(mag, ~((1 << s) - 1)))
            big = 1.5 * 2.0 ** (dt.emin - m + 23)
            sub = self.as_int(b.fsub(b.fadd(a, self.c(x, big)), self.c(x, big)))
            r = self.sel(self.lt(a, 2.0**dt.emin), sub, normal)
        over = self.gt(b.bitcast(r, x.type), dt.max)
        nan_bits = self.c(mag, 0x7FC00000)
        if dt.variant == "ieee":
            r = self.sel(over, self.c(mag, 0x7F800000), r)
        elif dt.variant in ("fn", "fnuz"):
            r = self.sel(over, nan_bits, r)
        else:  # finite: saturate
            max_bits = int(np.float32(dt.max).view(np.uint32))
            r = self.sel(over, self.c(mag, max_bits), r)
        out = b.or_(r, sign)
        nan = self.isnan(x)
        if dt.variant == "finite":  # NaN encodes as zero of the opposite sign
            out = self.sel(nan, b.xor(sign, self.c(sign, 0x80000000)), out)
        else:
            out = self.sel(nan, b.or_(nan_bits, sign), out)
        if dt.variant == "fnuz":  # no negative zero
            out = self.sel(b.icmp_unsigned("==", r, self.c(r, 0)), r, out)
        return b.bitcast(out, x.type)

    def saturate(self, v: ir.Value, dt: DType, signed_reg: bool = True) -> ir.Value:
        """Integer `v` (a register at least as wide as dt's storage, holding
        the exact value) clamped to dt's range and truncated to its storage."""
        b = self.b
        t = storage_type(dt) if not _is_bool(dt) else I1
        width = _elt(v.type).width
        lo, hi = int(dt.min), int(dt.max)
        rmin = -(1 << (width - 1)) if signed_reg else 0
        rmax = (1 << (width - 1)) - 1 if signed_reg else (1 << width) - 1
        cmp = b.icmp_signed if signed_reg else b.icmp_unsigned
        if hi < rmax:
            v = self.sel(cmp(">", v, self.c(v, hi)), self.c(v, hi), v)
        if lo > rmin:
            v = self.sel(cmp("<", v, self.c(v, lo)), self.c(v, lo), v)
        tt = _vt(t, _lanes(v))
        if _elt(tt).width < width:
            v = b.trunc(v, tt)
        return v

    def extend(self, v: ir.Value, dt: DType, width: int) -> ir.Value:
        """Integer `v` of type `dt` widened (sign- or zero-) to `width` bits."""
        t = self.int_type(v, width)
        if _elt(v.type).width == width:
            return v
        if _signed(dt) and not _is_bool(dt):
            return self.b.sext(v, t)
        return self.b.zext(v, t)

    # -- the ops -----------------------------------------------------------------

    def fmax(self, a: ir.Value, b_: ir.Value, is_max: bool) -> ir.Value:
        """NumPy's maximum/minimum: NaN from either side, b on ties."""
        b = self.b
        better = b.fcmp_ordered(">" if is_max else "<", a, b_)
        return self.sel(self.isnan(a), a, self.sel(better, a, b_))

    def imax(self, a: ir.Value, b_: ir.Value, signed: bool, is_max: bool) -> ir.Value:
        b = self.b
        op = ">" if is_max else "<"
        c = b.icmp_signed(op, a, b_) if signed else b.icmp_unsigned(op, a, b_)
        return self.sel(c, a, b_)

    def binary(self, kind: str, a: ir.Value, b_: ir.Value, dt: DType) -> ir.Value:
        """lhs <kind> rhs for `dt` (kind: add sub mul div max min pow)."""
        b = self.b
        if isinstance(dt, FloatType):
            if kind == "add":
                v = b.fadd(a, b_)
            elif kind == "sub":
                v = b.fsub(a, b_)
            elif kind == "mul":
                v = b.fmul(a, b_)
            elif kind == "div":
                v = b.fdiv(a, b_)
            elif kind in ("max", "min"):
                v = self.fmax(a, b_, kind == "max")
            else:
                v = self.powf(a, b_)
            return self.round_float(v, dt)
        if _is_bool(dt):
            if kind in ("add", "max"):
                return b.or_(a, b_)
            return b.and_(a, b_)  # mul, min
        signed = _signed(dt)
        store_w = _elt(a.type).width
        if kind in ("max", "min"):
            return self.imax(a, b_, signed, kind == "max")
        if kind == "pow":
            return self.saturate(self.ipow(a, b_, signed), dt, signed)
        need = {
            "add": dt.bits + 1,
            "sub": dt.bits + 1,
            "mul": 2 * dt.bits + (0 if signed else 1),
            "div": dt.bits + 1,
        }[kind]
        width = next((w for w in (8, 16, 32, 64) if w >= max(need, store_w)), 64)
        x, y = self.extend(a, dt, width), self.extend(b_, dt, width)
        if kind == "add":
            v = b.add(x, y)
        elif kind == "sub":
            v = b.sub(x, y)
        elif kind == "mul":
            v = b.mul(x, y)
        else:
            zero = b.icmp_signed("==", y, self.c(y, 0))
            if self.fail is not None:
                self.fail(zero, "lp.div: integer division by zero")
            if signed:
                # Only a 64-bit storage minimum / -1 overflows; it wraps.
                m1 = b.icmp_signed("==", y, self.c(y, -1))
                safe = self.sel(b.or_(zero, m1), self.c(y, 1), y)
                q = self.sel(m1, b.sub(self.c(x, 0), x), b.sdiv(x, safe))
            else:
                q = b.udiv(x, self.sel(zero, self.c(y, 1), y))
            v = self.sel(zero, self.c(q, 0), q)
        if width == 64 and dt.bits == 64:
            return v  # int64 wraps as NumPy's int64
        return self.saturate(v, dt, True)

    def ipow(self, a: ir.Value, e: ir.Value, signed: bool) -> ir.Value:
        """a ** e wrapping in the storage width (negative e gives 0)."""
        b = self.b
        w = _lanes(a)
        neg = b.icmp_signed("<", e, self.c(e, 0)) if signed else None
        if neg is not None:
            if self.fail is not None:
                self.fail(neg, "lp.pow: integer power with a negative exponent")
            e = self.sel(neg, self.c(e, 0), e)
        # Square and multiply while any lane has exponent bits left.
        fn = b.function
        pre = b.block
        head = fn.append_basic_block("ipow.head")
        body = fn.append_basic_block("ipow.body")
        done = fn.append_basic_block("ipow.done")
        b.branch(head)
        b.position_at_end(head)
        acc = b.phi(a.type)
        base = b.phi(a.type)
        ex = b.phi(e.type)
        acc.add_incoming(self.c(a, 1), pre)
        base.add_incoming(a, pre)
        ex.add_incoming(e, pre)
        left = b.icmp_unsigned("!=", ex, self.c(ex, 0))
        if w > 1:
            left = b.bitcast(left, ir.IntType(w))
            left = b.icmp_unsigned("!=", left, self.c(left.type, 0))
        b.cbranch(left, body, done)
        b.position_at_end(body)
        bit = b.trunc(b.and_(ex, self.c(ex, 1)), _vt(I1, w))
        acc.add_incoming(self.sel(bit, b.mul(acc, base), acc), body)
        base.add_incoming(b.mul(base, base), body)
        ex.add_incoming(b.lshr(ex, self.c(ex, 1)), body)
        b.branch(head)
        b.position_at_end(done)
        if neg is not None:
            return self.sel(neg, self.c(acc, 0), acc)
        return acc

    def compare(self, pred: str, a: ir.Value, b_: ir.Value, dt: DType) -> ir.Value:
        b = self.b
        sym = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}[
            pred
        ]
        if isinstance(dt, FloatType):
            if pred == "ne":
                return b.fcmp_unordered("!=", a, b_)
            return b.fcmp_ordered(sym, a, b_)
        if _signed(dt) and not _is_bool(dt):
            return b.icmp_signed(sym, a, b_)
        return b.icmp_unsigned(sym, a, b_)

    def unary(self, kind: str, x: ir.Value, dt: DType) -> ir.Value:
        b = self.b
        if not isinstance(dt, FloatType):  # neg / abs on signed ints: wrap
            n = b.sub(self.c(x, 0), x)
            if kind == "abs":
                n = self.sel(b.icmp_signed("<", x, self.c(x, 0)), n, x)
            return self.saturate(n, dt, True)
        if kind == "neg":
            v = b.fneg(x)
        elif kind == "abs":
            v = self.fabs(x)
        elif kind == "sqrt":
            v = self.call("llvm.sqrt", x)
        elif kind == "rsqrt":
            v = b.fdiv(self.c(x, 1.0), self.call("llvm.sqrt", x))
        else:
            v = getattr(self, kind)(x)
        return self.round_float(v, dt)

    def cast(self, x: ir.Value, src: DType, dst: DType) -> ir.Value:
        """`dst.encode` of `src` values, as values (see `can_cast`)."""
        b = self.b
        w = _lanes(x)
        if src == dst:
            return x
        if isinstance(dst, FloatType):
            if isinstance(src, FloatType):
                return self.round_float(x, dst)
            if _is_bool(src) or not _signed(src):
                v = b.uitofp(x, _vt(F32, w))
            else:
                v = b.sitofp(x, _vt(F32, w))
            return self.round_float(v, dst)
        if isinstance(src, FloatType):
            r = self.rint(x)
            if _is_bool(dst):
                return b.fcmp_ordered(">=", r, self.c(r, 1.0))
            limit = 2.0 ** (dst.bits - int(_signed(dst)))
            above = b.fcmp_ordered(">=", r, self.c(r, limit))
            below = b.fcmp_ordered("<", r, self.c(r, float(dst.min)))
            bad = b.or_(b.or_(above, below), self.isnan(r))
            width = 32 if limit <= 2.0**31 else 64
            it = _vt(ir.IntType(width), w)
            v = b.fptosi(self.sel(bad, self.c(r, 0.0), r), it)
            v = self.sel(above, self.c(v, int(dst.max)), v)
            v = self.sel(below, self.c(v, int(dst.min)), v)
            t = _vt(storage_type(dst), w)
            if _elt(t).width < width:
                v = b.trunc(v, t)
            elif _elt(t).width > width:
                v = b.sext(v, t)
            return v
        if _is_bool(src):
            return b.zext(x, _vt(storage_type(dst), w))
        if _is_bool(dst):
            zero = self.c(x, 0)
            if _signed(src):
                return b.icmp_signed(">", x, zero)
            return b.icmp_unsigned("!=", x, zero)
        v = self.extend(x, src, 64)
        return self.saturate(v, dst, True)

    def op(self, op: Operation, args: Sequence[ir.Value], w: int = 1) -> ir.Value:
        """The result of elementwise `op` on register values `args`."""
        if isinstance(op, lp.ConstantOp):
            value = op.values().reshape(-1)[0]
            return self.splat(_scalar_const(_reg(op.dtype), value), w)
        if isinstance(op, lp.BroadcastOp):
            return args[0]
        if isinstance(op, lp.CastOp):
            return self.cast(args[0], elem(op.input), elem(op.result))
        if isinstance(op, lp.SelectOp):
            return self.sel(args[0], args[1], args[2])
        if isinstance(op, lp.CmpOp):
            return self.compare(op.predicate.data, args[0], args[1], elem(op.lhs))
        if type(op) in _BINARY:
            return self.binary(_BINARY[type(op)], args[0], args[1], elem(op.result))
        if type(op) in _UNARY:
            return self.unary(_UNARY[type(op)], args[0], elem(op.result))
        raise AssertionError(f"Emitter: {op.name} is not elementwise")


_UNARY: dict[type, str] = {
    lp.NegOp: "neg",
    lp.AbsOp: "abs",
    lp.ExpOp: "exp",
    lp.LogOp: "log",
    lp.SqrtOp: "sqrt",
    lp.RsqrtOp: "rsqrt",
    lp.TanhOp: "tanh",
    lp.SigmoidOp: "sigmoid",
    lp.ErfOp: "erf",
    lp.CosOp: "cos",
    lp.SinOp: "sin",
}


def _can_cast(src: DType, dst: DType) -> bool:
    if isinstance(dst, FloatType) and isinstance(src, IntType) and not _is_f32(dst):
        # One rounding: sitofp is exact, or whatever it rounds overflows dst.
        exact = max(-int(src.min), int(src.max)) <= 1 << 24
        return exact or dst.max < 2.0**23
    return True


def can_emit(op: Operation) -> bool:
    """Whether `Emitter.op` / `emit_elementwise` handle `op` with its types."""
    if isinstance(op, lp.ConstantOp):
        return op.is_splat and supported_dtype(op.dtype)
    if not isinstance(
        op, lp.ElementwiseBinaryOp | lp.ElementwiseUnaryOp | lp.SelectOp | lp.CastOp
    ) and not isinstance(op, lp.BroadcastOp):
        return False
    types = [elem(v) for v in op.operands] + [elem(op.results[0])]
    if not all(supported_dtype(t) for t in types):
        return False
    if isinstance(op, lp.CastOp):
        return _can_cast(types[0], types[1])
    if isinstance(op, lp.ElementwiseBinaryOp) and not isinstance(op, lp.CmpOp):
        dt = types[0]
        if _is_bool(dt):
            return type(op) in (lp.AddOp, lp.MulOp, lp.MaxOp, lp.MinOp)
    if isinstance(op, lp.ElementwiseUnaryOp):
        return type(op) in _UNARY
    return (
        isinstance(op, lp.BroadcastOp | lp.SelectOp | lp.CmpOp) or type(op) in _BINARY
    )


def emit_elementwise(
    kb: KernelBuilder, op: Operation, operands: list[ir.Value]
) -> ir.Value:
    """Apply elementwise `op` to register values at `kb.b`'s position.

    `operands` are scalars or `<n x T>` vectors of the register type of each
    operand's lp type (f32 for every float type, i1 for bool, the storage
    integer otherwise); the result has the same lane count, rounded to the
    result type as the interpreter rounds it. Check `can_emit(op)` first.
    A splat `lp.constant` (no operands) gives a scalar.
    """
    w = max((_lanes(v) for v in operands), default=1)
    return Emitter(kb.b, kb.fail_if).op(op, operands, w)


# -- regions: what a loop nest computes ---------------------------------------------

_REDUCE_KIND: dict[type, str] = {
    lp.ReduceSumOp: "sum",
    lp.ReduceMeanOp: "mean",
    lp.ReduceMaxOp: "max",
    lp.ReduceMinOp: "min",
}


@dataclass
class Region:
    """A body to run over a loop nest: ops on values of `args` (kernel inputs
    `slots`), with `outputs` (kernel outputs in order)."""

    args: list[SSAValue]
    slots: list[int]
    ops: list[Operation]
    outputs: list[SSAValue]

    @staticmethod
    def of_op(req: KernelRequest) -> Region:
        op = req.op
        args = list(req.args)
        return Region(args, list(range(len(args))), [op], list(op.results))

    @staticmethod
    def of_fused(req: KernelRequest) -> Region | None:
        op = req.op
        assert isinstance(op, FusedOp)
        block = op.body.block
        slots = []
        for v in op.inputs:
            if v not in req.args:
                return None
            slots.append(req.arg_index(v))
        last = block.last_op
        ret = req.func.body.block.last_op
        if not isinstance(last, YieldOp) or ret is None:
            return None
        outputs = []
        for v in ret.operands:  # kernel outputs in the function's order
            if not isinstance(v, OpResult) or v.owner is not op:
                return None
            outputs.append(last.operands[v.index])
        body = [o for o in block.ops if o is not last]
        return Region(list(block.args), slots, body, outputs)


@dataclass
class _Mem:
    """A buffer the nest reads ("in") or writes ("out", "red"); `dims` is its
    shape right-aligned to the nest's rank, `strides` its stride per group."""

    value: SSAValue
    dt: DType
    kind: str
    slot: int
    dims: tuple[Dim, ...]
    strides: list[Dim] = field(default_factory=list)
    red: Operation | None = None


@dataclass
class _Group:
    extent: Dim
    loop: bool
    sdims: list[int]


@dataclass
class _Plan:
    region: Region
    groups: list[_Group]
    mems: list[_Mem]
    reductions: list[Operation]
    iota_group: dict[Operation, int]  # -1: the iota's index is always 0
    red_count: Dim = 1  # elements each reduction combines


def _ceil_div(a: Dim, k: int) -> Dim:
    if isinstance(a, int):
        return max(1, -(-a // k))
    return f"CeilDiv({a}, {k})"


def _estimate(d: Dim) -> int:
    return d if isinstance(d, int) else GUESS


def _aligned(v: SSAValue, rank: int) -> tuple[Dim, ...]:
    dims = shape(v)
    return (1,) * (rank - len(dims)) + tuple(dims)


def _region_ok(region: Region) -> list[Operation] | None:
    """The region's reductions if every op is one this nest computes."""
    reductions = []
    red_results = set()
    for op in region.ops:
        if type(op) in _REDUCE_KIND:
            dt = elem(op.operands[0])
            if not supported_dtype(dt):
                return None
            if _is_bool(dt) and type(op) is lp.ReduceMeanOp:
                return None
            reductions.append(op)
            red_results.add(op.results[0])
        elif isinstance(op, lp.IotaOp):
            if not supported_dtype(elem(op.result)):
                return None
        elif not can_emit(op):
            return None
        if any(v in red_results for v in op.operands):
            return None  # a reduction feeds the body: needs the whole reduction
    return reductions


def plan_region(region: Region) -> _Plan | None:
    """The loop nest for `region`, or None if it cannot be one nest."""
    reductions = _region_ok(region)
    if reductions is None:
        return None
    red_results = {op.results[0] for op in reductions}
    for v in region.outputs:
        if not supported_dtype(elem(v)):
            return None
    values: list[SSAValue] = list(region.args)
    for op in region.ops:
        values.extend(op.operands)
        if op.results[0] not in red_results:
            values.append(op.results[0])
    try:
        rank = max((len(shape(v)) for v in values), default=0)
        aligned = {v: _aligned(v, rank) for v in values}
    except Exception:  # malformed dims: not this kernel's to judge
        return None
    space: list[Dim] = []
    for d in range(rank):
        sizes = {dims[d] for dims in aligned.values() if dims[d] != 1}
        if len(sizes) > 1:
            return None
        space.append(sizes.pop() if sizes else 1)
    active = [d for d in range(rank) if space[d] != 1]

    # The reduced dimensions, the same for every reduction.
    red_dims: set[int] | None = None
    for op in reductions:
        x = op.operands[0]
        off = rank - len(shape(x))
        dims = {off + d for d in lp._array(op.dims)}  # type: ignore[attr-defined]
        dims = {d for d in dims if space[d] != 1}
        if red_dims is None:
            red_dims = dims
        elif dims != red_dims:
            return None
        if any(aligned[x][d] != space[d] for d in dims):
            return None  # broadcast along a reduced dim
    red_dims = red_dims or set()

    mems: list[_Mem] = []
    used = {v for op in region.ops for v in op.operands} | set(region.outputs)
    for arg, slot in zip(region.args, region.slots, strict=True):
        if arg in used:
            mems.append(_Mem(arg, elem(arg), "in", slot, aligned[arg]))
    for j, v in enumerate(region.outputs):
        if v in red_results:
            op = v.owner
            x = op.operands[0]
            dims = tuple(1 if d in red_dims else n for d, n in enumerate(aligned[x]))
            mems.append(_Mem(v, elem(v), "red", j, dims, red=op))
        elif v in aligned:
            mems.append(_Mem(v, elem(v), "out", j, aligned[v]))
        else:
            return None
    for m in mems:
        if any(n not in (1, space[d]) for d, n in enumerate(m.dims)):
            return None

    # Iotas count as buffers contiguous along their one dimension.
    iota_dims: dict[Operation, int] = {}
    for op in region.ops:
        if isinstance(op, lp.IotaOp):
            d = rank - len(shape(op.result)) + op.dim.data
            iota_dims[op] = d if aligned[op.result][d] != 1 else -1

    def cls(m_dims: tuple[Dim, ...], d: int) -> bool:
        return m_dims[d] != 1

    patterns = [m.dims for m in mems]
    for d in iota_dims.values():
        if d >= 0:
            patterns.append(tuple(space[k] if k == d else 1 for k in range(rank)))
    groups: list[_Group] = []
    for d in active:
        loop = d in red_dims
        if groups:
            g = groups[-1]
            prev = g.sdims[-1]
            if g.loop == loop and all(cls(p, d) == cls(p, prev) for p in patterns):
                g.sdims.append(d)
                g.extent = _mul(g.extent, space[d])
                continue
        groups.append(_Group(space[d], loop, [d]))
    for m in mems:
        own = []
        for d in range(rank):
            own.append(_prod(m.dims[d + 1 :]))
        m.strides = [
            own[g.sdims[-1]] if cls(m.dims, g.sdims[-1]) else 0 for g in groups
        ]
    iota_group = {}
    for op, d in iota_dims.items():
        iota_group[op] = next((i for i, g in enumerate(groups) if d in g.sdims), -1)
    count = _prod([space[d] for d in sorted(red_dims)])
    return _Plan(region, groups, mems, reductions, iota_group, count)


# -- accumulators ---------------------------------------------------------------


class _Acc:
    """How one reduction accumulates: register type, start value, combine."""

    def __init__(self, em: Emitter, op: Operation) -> None:
        self.em = em
        self.op = op
        self.kind = _REDUCE_KIND[type(op)]
        self.dt = elem(op.operands[0])
        dt = self.dt
        if isinstance(dt, FloatType):
            self.t = F32
            self.init: float | int = {
                "sum": -0.0,
                "mean": -0.0,
                "max": -math.inf,
                "min": math.inf,
            }[self.kind]
        elif self.kind == "sum":
            self.t = I64
            self.init = 0
        elif _is_bool(dt):
            self.t = I1
            self.init = 0 if self.kind == "max" else 1
        else:
            self.t = storage_type(dt)
            self.init = int(dt.min) if self.kind == "max" else int(dt.max)

    def value(self, v: ir.Value) -> ir.Value:
        """The body value as an accumulator operand."""
        if self.t == I64 and not isinstance(self.dt, FloatType):
            return self.em.extend(v, self.dt, 64)
        return v

    def combine(self, a: ir.Value, v: ir.Value) -> ir.Value:
        em, b = self.em, self.em.b
        if self.t == F32:
            if self.kind in ("sum", "mean"):
                return b.fadd(a, v)
            return em.fmax(a, v, self.kind == "max")
        if self.kind == "sum":
            return b.add(a, v)
        if self.t == I1:
            return b.or_(a, v) if self.kind == "max" else b.and_(a, v)
        return em.imax(a, v, _signed(self.dt), self.kind == "max")

    def hreduce(self, v: ir.Value) -> ir.Value:
        """Combine the lanes of `v` pairwise into one scalar."""
        b = self.em.b
        w = _lanes(v)
        while w > 1:
            h = w // 2
            lo = b.shuffle_vector(
                v, v, ir.Constant(ir.VectorType(I32, h), list(range(h)))
            )
            hi = b.shuffle_vector(
                v, v, ir.Constant(ir.VectorType(I32, h), list(range(h, w)))
            )
            v = self.combine(lo, hi)
            w = h
        if isinstance(v.type, ir.VectorType):
            v = b.extract_element(v, ir.Constant(I32, 0))
        return v

    def finish(self, v: ir.Value, count: ir.Value | None) -> ir.Value:
        """The reduction's result (in its type's registers) from the total."""
        em, b = self.em, self.em.b
        out_dt = elem(self.op.results[0])
        if self.kind == "mean":
            assert count is not None
            w = _lanes(v)
            d = b.fdiv(b.fpext(v, _vt(F64, w)), em.splat(b.sitofp(count, F64), w))
            v = b.fptrunc(d, v.type)
        if self.t == F32:
            return em.round_float(v, out_dt)
        if self.kind == "sum":
            if _is_bool(out_dt):
                return b.icmp_signed(">", v, em.c(v, 0))
            if out_dt.bits == 64:
                return v
            return em.saturate(v, out_dt, True)
        return v


# -- loads, stores, allocas ---------------------------------------------------------


def load_value(
    kb: KernelBuilder, ptr: ir.Value, index: ir.Value, dt: DType, w: int
) -> ir.Value:
    """`w` elements of a `dt` buffer at `index`, in registers."""
    st = storage_type(dt)
    v = kb.load(ptr, index, _vt(st, w))
    if _is_bool(dt):
        v = kb.b.icmp_unsigned("!=", v, Emitter(kb.b).c(v, 0))
    return v


def store_value(
    kb: KernelBuilder, v: ir.Value, ptr: ir.Value, index: ir.Value, dt: DType
) -> None:
    """Store register value(s) `v` of type `dt` at `index`."""
    if _is_bool(dt):
        v = kb.b.zext(v, _vt(I8, _lanes(v)))
    kb.store(v, ptr, index)


def alloca(kb: KernelBuilder, t: ir.Type) -> ir.Value:
    """A stack slot in the entry block (promoted to a register by LLVM)."""
    b = kb.b
    with b.goto_entry_block():
        b.position_at_start(kb.fn.entry_basic_block)
        return b.alloca(t)


def umin(b: ir.IRBuilder, x: ir.Value, y: ir.Value) -> ir.Value:
    return b.select(b.icmp_signed("<", x, y), x, y)


# -- the loop nest ---------------------------------------------------------------


class _Nest:
    """Generates the loop nest of a plan (see the module docstring)."""

    def __init__(self, req: KernelRequest, plan: _Plan) -> None:
        self.req = req
        self.plan = plan
        self.kb = KernelBuilder(req, num_outputs=len(plan.region.outputs))
        self.b = self.kb.b
        self.em = Emitter(self.b, self.kb.fail_if)
        self.W = lanes_for(req.isa)
        self.accs = [_Acc(self.em, op) for op in plan.reductions]
        self.red_ops = set(plan.reductions)
        kb = self.kb
        self.ext = [kb.dim(g.extent) for g in plan.groups]
        self.stride = {
            (i, g): kb.dim(s)
            for i, m in enumerate(plan.mems)
            for g, s in enumerate(m.strides)
            if s != 0
        }
        self.ptr = {
            i: kb.inp(m.slot) if m.kind == "in" else kb.out(m.slot)
            for i, m in enumerate(plan.mems)
        }
        self.count = kb.dim(plan.red_count) if plan.reductions else None

    # offsets: dict mem index -> i64 element offset
    def offsets(
        self, base: dict[int, ir.Value], g: int, idx: ir.Value
    ) -> dict[int, ir.Value]:
        b = self.b
        out = dict(base)
        for i in out:
            s = self.stride.get((i, g))
            if s is not None:
                out[i] = b.add(out[i], b.mul(idx, s))
        return out

    def eval(
        self,
        w: int,
        off: dict[int, ir.Value],
        last: int,
        coords: dict[int, ir.Value],
        pre: dict[int, ir.Value],
    ) -> dict[SSAValue, ir.Value]:
        """The body's values at a point (w lanes along group `last`)."""
        kb, em = self.kb, self.em
        plan = self.plan
        vals: dict[SSAValue, ir.Value] = {}
        for i, m in enumerate(plan.mems):
            if m.kind != "in":
                continue
            if i in pre:
                vals[m.value] = em.splat(pre[i], w)
            elif (i, last) in self.stride:
                vals[m.value] = load_value(kb, self.ptr[i], off[i], m.dt, w)
            else:
                s = load_value(kb, self.ptr[i], off[i], m.dt, 1)
                vals[m.value] = em.splat(s, w)
        for op in plan.region.ops:
            if op in self.red_ops:
                continue
            if isinstance(op, lp.IotaOp):
                vals[op.result] = self.iota(op, w, last, coords)
                continue
            vals[op.results[0]] = em.op(op, [vals[v] for v in op.operands], w)
        return vals

    def iota(
        self, op: lp.IotaOp, w: int, last: int, coords: dict[int, ir.Value]
    ) -> ir.Value:
        em, b = self.em, self.b
        g = self.plan.iota_group[op]
        if g < 0:
            idx: ir.Value = em.splat(ir.Constant(I64, 0), w)
        elif g == last:
            lane = ir.Constant(ir.VectorType(I64, w), list(range(w))) if w > 1 else None
            idx = em.splat(coords[g], w)
            if lane is not None:
                idx = b.add(idx, lane)
        else:
            idx = em.splat(coords[g], w)
        dt = elem(op.result)
        if isinstance(dt, FloatType):
            return em.round_float(b.sitofp(idx, _vt(F32, w)), dt)
        if _is_bool(dt):
            return b.icmp_signed(">", idx, em.c(idx, 0))
        return em.saturate(idx, dt, True)

    def store_outputs(
        self, vals: dict[SSAValue, ir.Value], off: dict[int, ir.Value], last: int
    ) -> None:
        for i, m in enumerate(self.plan.mems):
            if m.kind == "out":
                self.store(i, vals[m.value], off[i], last)

    def store(self, i: int, v: ir.Value, off: ir.Value, last: int) -> None:
        m = self.plan.mems[i]
        if (i, last) not in self.stride and _lanes(v) > 1:
            v = self.b.extract_element(v, ir.Constant(I32, 0))
        store_value(self.kb, v, self.ptr[i], off, m.dt)

    def widths(self) -> list[int]:
        return [self.W, 1]

    def decompose(
        self, r: ir.Value, groups: list[int], inner: ir.Value | None
    ) -> tuple[dict[int, ir.Value], ir.Value | None]:
        """Row number -> indices of `groups` (last fastest), then `inner`."""
        b = self.b
        coords: dict[int, ir.Value] = {}
        rest = r
        j = None
        if inner is not None:
            j = b.urem(rest, inner)
            rest = b.udiv(rest, inner)
        for g in reversed(groups):
            coords[g] = b.urem(rest, self.ext[g])
            rest = b.udiv(rest, self.ext[g])
        return coords, j

    def row_base(self, coords: dict[int, ir.Value]) -> dict[int, ir.Value]:
        base = {i: ir.Constant(I64, 0) for i in range(len(self.plan.mems))}
        for g, idx in coords.items():
            base = self.offsets(base, g, idx)
        return base

    def init_accs(self, w: int) -> list[ir.Value]:
        slots = []
        for acc in self.accs:
            slot = alloca(self.kb, _vt(acc.t, w))
            self.b.store(self.em.c(_vt(acc.t, w), acc.init), slot)
            slots.append(slot)
        return slots

    def accumulate(self, slots: list[ir.Value], vals: dict[SSAValue, ir.Value]) -> None:
        b = self.b
        for acc, slot in zip(self.accs, slots, strict=True):
            v = acc.value(vals[acc.op.operands[0]])
            b.store(acc.combine(b.load(slot), v), slot)

    def nested(
        self,
        groups: list[int],
        off: dict[int, ir.Value],
        coords: dict[int, ir.Value],
        body: Callable[[dict[int, ir.Value], dict[int, ir.Value]], None],
    ) -> None:
        """Sequential loops over `groups` (outermost first) around `body`."""
        if not groups:
            body(off, coords)
            return
        g = groups[0]
        with self.kb.loop(0, self.ext[g], name=f"g{g}") as i:
            self.nested(groups[1:], self.offsets(off, g, i), {**coords, g: i}, body)

    # -- schedules ----------------------------------------------------------------

    def columns(self) -> NativeKernel:
        plan, kb, b = self.plan, self.kb, self.b
        groups = plan.groups
        last = len(groups) - 1
        rows_g = [g for g in range(last) if not groups[g].loop]
        loop_g = [g for g in range(last) if groups[g].loop]
        reduce = bool(plan.reductions)
        # A column reduction keeps 8 vectors of columns in registers while it
        # walks down the reduced rows (whole cache lines per row), and cuts
        # the columns into blocks of 4 such so that both threads get some.
        block = 32 * self.W if reduce else BLOCK
        widths = [8 * self.W, self.W, 1] if reduce else self.widths()
        n = self.ext[last]
        nb_dim = _ceil_div(groups[last].extent, block)
        nb = kb.dim(nb_dim)
        rows = _prod([groups[g].extent for g in rows_g] + [nb_dim])
        with kb.loop(kb.begin, kb.end, name="row") as r:
            coords, j = self.decompose(r, rows_g, nb)
            assert j is not None
            base = self.row_base(coords)
            c0 = b.mul(j, ir.Constant(I64, block))
            c1 = umin(b, b.add(c0, ir.Constant(I64, block)), n)
            pre = {}
            if not reduce:
                for i, m in enumerate(plan.mems):
                    if m.kind == "in" and (i, last) not in self.stride:
                        pre[i] = load_value(kb, self.ptr[i], base[i], m.dt, 1)
            cur = c0
            for w in widths:
                stop = b.sub(c1, ir.Constant(I64, w - 1))
                with kb.loop(cur, stop, w, name=f"c{w}_") as c:
                    off = self.offsets(base, last, c)
                    at = {**coords, last: c}
                    if not reduce:
                        vals = self.eval(w, off, last, at, pre)
                        self.store_outputs(vals, off, last)
                    else:
                        self.column_reduce(w, off, at, loop_g, last)
                cur = c
        per_row = min(block, _estimate(groups[last].extent)) * _estimate(
            _prod([groups[g].extent for g in loop_g])
        )
        granule = max(1, CHUNK // max(per_row, 1))
        note = f"elementwise columns: {len(groups)} groups, {self.W} f32 lanes"
        if plan.reductions:
            note = f"column reduction: {len(groups)} groups, {self.W} f32 lanes"
        return kb.kernel(rows=rows, granule=granule, note=note)

    def column_reduce(
        self,
        w: int,
        off: dict[int, ir.Value],
        coords: dict[int, ir.Value],
        loop_g: list[int],
        last: int,
    ) -> None:
        slots = self.init_accs(w)

        def body(o: dict[int, ir.Value], at: dict[int, ir.Value]) -> None:
            vals = self.eval(w, o, last, at, {})
            self.store_outputs(vals, o, last)
            self.accumulate(slots, vals)

        self.nested(loop_g, off, coords, body)
        self.store_reductions(
            [[self.b.load(s)] for s in slots], off, last, horizontal=False
        )

    def store_reductions(
        self,
        parts: list[list[ir.Value]],
        off: dict[int, ir.Value],
        last: int,
        horizontal: bool,
    ) -> None:
        for acc, vs in zip(self.accs, parts, strict=True):
            total = None
            for v in vs:
                if horizontal:
                    v = acc.hreduce(v)
                total = v if total is None else acc.combine(total, v)
            assert total is not None
            res = acc.finish(total, self.count)
            for i, m in enumerate(self.plan.mems):
                if m.kind == "red" and m.red is acc.op:
                    self.store(i, res, off[i], last)

    def inner(self) -> NativeKernel:
        plan, kb, b = self.plan, self.kb, self.b
        groups = plan.groups
        last = len(groups) - 1
        rows_g = [g for g in range(last) if not groups[g].loop]
        loop_g = [g for g in range(last) if groups[g].loop]
        n = self.ext[last]
        rows = _prod([groups[g].extent for g in rows_g])
        # Four vectors of lane accumulators: four independent add chains.
        widths = [4 * self.W, self.W, 1]
        with kb.loop(kb.begin, kb.end, name="row") as r:
            coords, _ = self.decompose(r, rows_g, None)
            base = self.row_base(coords)
            slots = {w: self.init_accs(w) for w in widths}

            def body(o: dict[int, ir.Value], at: dict[int, ir.Value]) -> None:
                pre = {}
                for i, m in enumerate(plan.mems):
                    if m.kind == "in" and (i, last) not in self.stride:
                        pre[i] = load_value(kb, self.ptr[i], o[i], m.dt, 1)
                cur: ir.Value = ir.Constant(I64, 0)
                for w in widths:
                    stop = b.sub(n, ir.Constant(I64, w - 1))
                    with kb.loop(cur, stop, w, name=f"k{w}_") as c:
                        off = self.offsets(o, last, c)
                        vals = self.eval(w, off, last, {**at, last: c}, pre)
                        self.store_outputs(vals, off, last)
                        self.accumulate(slots[w], vals)
                    cur = c

            self.nested(loop_g, base, coords, body)
            parts = [
                [b.load(slots[w][k]) for w in widths] for k in range(len(self.accs))
            ]
            self.store_reductions(parts, base, last, horizontal=True)
        per_row = _estimate(_prod([groups[g].extent for g in [*loop_g, last]]))
        granule = max(1, CHUNK // max(per_row, 1))
        note = f"row reduction: {len(groups)} groups, {self.W} f32 lanes"
        return kb.kernel(rows=rows, granule=granule, note=note)


def generate_region(req: KernelRequest, region: Region) -> NativeKernel | None:
    """A native kernel running `region` as one loop nest, or None."""
    if req.isa not in ("avx512", "avx2", "generic"):
        return None
    plan = plan_region(region)
    if plan is None:
        return None
    if not plan.groups:  # a single element
        plan.groups = [_Group(1, False, [])]
        for m in plan.mems:
            m.strides = [0]
    nest = _Nest(req, plan)
    if plan.groups[-1].loop:
        return nest.inner()
    return nest.columns()


def _single(req: KernelRequest) -> NativeKernel | None:
    ret = req.func.body.block.last_op
    if ret is None or list(ret.operands) != list(req.op.results):
        return None
    return generate_region(req, Region.of_op(req))


for _cls in (*_BINARY, *_UNARY, lp.CmpOp, lp.SelectOp, lp.CastOp):
    register(_cls)(_single)


@register(FusedOp, kind="elementwise")
def _fused(req: KernelRequest) -> NativeKernel | None:
    region = Region.of_fused(req)
    if region is None:
        return None
    return generate_region(req, region)
