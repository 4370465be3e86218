"""Float codes of any format to f32 in registers: shift, mask, multiply.

A code of `FloatType(e, m)` is sign | exponent field | mantissa field. Moved
so that its mantissa field lands on f32's (`mag << (23 - m)`, the sign to bit
31), the bits read as an f32 hold the right mantissa and an exponent field
equal to the code's, biased by 127 instead of the format's bias B; one
multiply by 2**(127 - B) fixes the exponent. Subnormal codes (exponent field
0) land on f32 subnormals, and the multiply scales them exactly too, because
every value of a format with e <= 8 and m <= 23 is an f32 and the product
is exact (a power-of-two scale of an exactly representable value that stays
in range). So `decode = as_f32(shifted) * 2**(127 - B)`: 2 to 4
instructions (shift, and, or, multiply), no table, no memory traffic.

What the trick cannot know is the format's special codes (inf, NaN, the
fnuz NaN at -0): the generator compares the trick with `DType.decode` for
every code at compile time and emits an explicit select for each code that
differs (at most 4, else it returns None). The decode stays a pure function
of `DType` (one source of truth): nothing here restates a format's rules.
"""

from __future__ import annotations

import numpy as np

from lpcc.ir.dtypes import FloatType

__all__ = ["float_decode"]

_MAX_SPECIAL = 4


def _trick(dt: FloatType, codes: np.ndarray) -> np.ndarray:
    """What the shift-mask-multiply gives for `codes` (float64 values)."""
    m, mag_bits = dt.man, dt.bits - 1
    mag = codes & ((1 << mag_bits) - 1)
    sign = (codes >> mag_bits) & 1
    bits = (sign.astype(np.uint32) << 31) | (mag.astype(np.uint32) << (23 - m))
    with np.errstate(invalid="ignore"):  # NaN bit patterns of special codes
        return bits.view(np.float32).astype(np.float64) * 2.0 ** (127 - dt.bias)


def _c_float(v: float) -> str:
    if np.isnan(v):
        return "__int_as_float(0x7fc00000)"
    if np.isinf(v):
        return "__int_as_float(0x7f800000)" if v > 0 else "__int_as_float(0xff800000)"
    return f"{float(np.float32(v))!r}f"


def float_decode(dt: FloatType, code: str) -> str | None:
    """A C expression: the f32 value of `code` (an unsigned int holding one
    code of `dt` in its low bits); None when `dt` has no exact trick."""
    if not isinstance(dt, FloatType) or dt.exp > 8 or dt.man > 23 or dt.bits > 16:
        return None
    if dt.exp == 8 and dt.bias != 127:  # a scale below 1 would round subnormals
        return None
    codes = np.arange(1 << dt.bits, dtype=np.uint32)
    want = dt.decode(codes.astype(dt.code_dtype)).astype(np.float64)
    got = _trick(dt, codes)
    same = (got == want) | (np.isnan(got) & np.isnan(want))
    same &= np.signbit(got) == np.signbit(want)
    special = [int(c) for c in codes[~same]]
    m, mag_bits = dt.man, dt.bits - 1
    scale = 2.0 ** (127 - dt.bias)
    u = f"((unsigned)({code}))"
    trick = (
        f"(__uint_as_float(((({u} >> {mag_bits}) & 1u) << 31) | "
        f"(({u} & {(1 << mag_bits) - 1}u) << {23 - m})) * {scale!r}f)"
    )
    if not special:
        return trick
    if _ieee_specials(dt, codes, want, special):
        # exponent field all ones: +-inf with a zero mantissa, else NaN
        emask = ((1 << dt.exp) - 1) << m
        sign_inf = f"(({u} >> {mag_bits}) & 1u ? -INFINITY : INFINITY)"
        return (
            f"(({u} & {emask}u) == {emask}u ? (({u} & {(1 << m) - 1}u) == 0u ? "
            f"{sign_inf} : NAN) : {trick})"
        )
    if len(special) > _MAX_SPECIAL:
        return None
    for c in special:
        trick = f"({u} == {c}u ? {_c_float(want[c])} : {trick})"
    return trick


def _ieee_specials(
    dt: FloatType, codes: np.ndarray, want: np.ndarray, special: list[int]
) -> bool:
    """Whether IEEE's rule (exponent all ones: inf or NaN) covers `special`."""
    m = dt.man
    efield = (codes >> m) & ((1 << dt.exp) - 1)
    top = efield == (1 << dt.exp) - 1
    if not set(special) <= set(codes[top].tolist()):
        return False
    mant = codes & ((1 << m) - 1)
    neg = ((codes >> (dt.bits - 1)) & 1).astype(bool)
    rule = np.where(mant == 0, np.where(neg, -np.inf, np.inf), np.nan)
    w = want[top]
    r = rule[top]
    return bool(((w == r) | (np.isnan(w) & np.isnan(r))).all())
