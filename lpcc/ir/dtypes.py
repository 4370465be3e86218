"""Element types of any bit width: names, ranges, codecs and packing.

This module is the one source of truth for what a low-precision number *is*.
Every other part of lpcc (the dialect, quantization, the interpreter, the
backends' constant packing) asks a `DType` for its name, its range, or its
codes, and never re-derives them.

Three families:

* `IntType(bits, signed)`: two's-complement `int<b>` and `uint<b>`, b in 1..64
  (widths above 32 exist for index tensors such as token ids).
* `FloatType(exp, man, variant)`: sign, `exp` exponent bits, `man` mantissa
  bits, 1 <= exp, 0 <= man, 1+exp+man <= 32. The variant fixes the special
  values (see `VARIANTS`).
* `E8M0Type()`: the OCP MX scale, an unsigned exponent: 2**(code-127), NaN at
  0xFF, no zero and no sign.

A *code* is the unsigned integer that holds a value's bits (a signed int's
code is its two's complement in b bits). `encode` maps values to codes with
round-to-nearest-even, `decode` maps codes back to values exactly, `pack`
turns codes into the dense bit stream of `lpcc.ir.packing`.

Naming rules (docs/types.md has the full table):

* `str(t)` is canonical and parses back to `t`: `int3`, `uint5`, `f32`,
  `f16`, `bf16`, `e8m0`, `f{N}e{E}m{M}` when the variant is the default for N
  bits (finite below 8 bits, as OCP MX and Tilus; ieee from 8 bits up, as
  ml_dtypes' float8_e4m3 and float8_e3m4), `f{N}e{E}m{M}fn` and `...fnuz` for
  those variants at 8 bits and more, and `float<E,M,variant>` otherwise.
* The `fn` suffix means what it means in the ecosystem: below 8 bits every
  `fn` format (ml_dtypes' float4_e2m1fn, float6_e3m2fn, ...) is finite, so
  `f6e3m2fn` is `f6e3m2`; lpcc's `fn` variant at those widths is spelled
  `float<3,2,fn>`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

from lpcc.errors import CodecError, DTypeError
from lpcc.ir import packing

Variant = Literal["ieee", "fn", "fnuz", "finite"]

VARIANTS: dict[str, str] = {
    "ieee": "inf and NaN as IEEE 754 (all-ones exponent)",
    "fn": "no inf; NaN only at the all-ones magnitude (as OCP float8_e4m3fn)",
    "fnuz": "no inf, no negative zero; NaN is the negative-zero code; bias + 1",
    "finite": "no inf, no NaN: every code is a number (as OCP FP6/FP4)",
}

_U64 = np.uint64


def _float_value(sig: int, exp: int) -> float:
    """sig * 2**exp as a Python float, inf when it overflows a double."""
    try:
        return math.ldexp(sig, exp)
    except OverflowError:
        return math.inf


class DType:
    """An element type. Instances are immutable, hashable and compare by value."""

    kind: ClassVar[str]
    bits: int

    # -- names ------------------------------------------------------------
    @property
    def name(self) -> str:
        """The canonical name; `lpcc.dtype(t.name) == t`."""
        raise NotImplementedError

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"lpcc.dtype({self.name!r})"

    # -- range ------------------------------------------------------------
    is_signed: bool
    variant: str | None = None

    @property
    def min(self) -> float | int:
        raise NotImplementedError

    @property
    def max(self) -> float | int:
        raise NotImplementedError

    @property
    def smallest_normal(self) -> float | None:
        return None

    @property
    def smallest_subnormal(self) -> float | None:
        return None

    @property
    def eps(self) -> float | int:
        raise NotImplementedError

    @property
    def special_values(self) -> str:
        """A one-line description of the codes that are not ordinary numbers."""
        raise NotImplementedError

    # -- storage ----------------------------------------------------------
    @property
    def code_dtype(self) -> np.dtype:
        """NumPy type of the codes: the smallest unsigned int holding `bits`."""
        return packing.code_dtype(self.bits)

    @property
    def decode_dtype(self) -> np.dtype:
        """NumPy type `decode` returns: float32 when it holds every value exactly."""
        raise NotImplementedError

    def nbytes(self, count: int) -> int:
        """Bytes that `count` packed elements occupy."""
        return packing.packed_nbytes(count, self.bits)

    def pack(self, codes: np.ndarray) -> np.ndarray:
        """Codes (any shape, C order) to the dense little-endian bit stream."""
        return packing.pack_bits(codes, self.bits, what=f"{self.name}.pack")

    def unpack(self, buf: np.ndarray | bytes, count: int) -> np.ndarray:
        """The first `count` codes of a packed stream, as a 1-D array."""
        return packing.unpack_bits(buf, self.bits, count, what=f"{self.name}.unpack")

    # -- codecs -----------------------------------------------------------
    def encode(self, x: np.ndarray) -> np.ndarray:
        """Values to codes: round to nearest, ties to even; see the variant."""
        raise NotImplementedError

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Codes to values, exactly (as `decode_dtype`)."""
        raise NotImplementedError

    # -- the value domain (what kernels compute on) ------------------------
    @property
    def value_dtype(self) -> np.dtype:
        """NumPy type that holds this type's values while a program runs.

        Floats and e8m0 use `decode_dtype` (float32 when exact); integers the
        smallest NumPy integer holding the range (int4 -> int8, uint1 -> bool),
        so token ids and indices stay exact. The reference interpreter and the
        runtime both hold tensors this way.
        """
        return self.decode_dtype

    def values(self, codes: np.ndarray) -> np.ndarray:
        """Codes to values as `value_dtype`."""
        return self.decode(codes).astype(self.value_dtype, copy=False)

    def to_values(self, x: np.ndarray) -> np.ndarray:
        """`x` rounded once to this type, as `value_dtype` (what kernels hold).

        The reference interpreter rounds every result with it and the VM its
        inputs; float32 passes through, narrower floats round with the codec.
        """
        x = np.asarray(x)
        exact = self.kind == "float" and getattr(self, "variant", "") == "ieee"
        if exact and self.bits == 32 and self.man == 23:  # type: ignore[attr-defined]
            # f32 is NumPy's float32: its cast rounds to nearest even, once.
            return x.astype(np.float32, copy=False)
        if x.dtype == np.bool_:
            x = x.astype(np.float32)
        return self.round(x).astype(self.value_dtype, copy=False)

    def round(self, x: np.ndarray) -> np.ndarray:
        """The values of this type nearest to `x`: decode(encode(x)).

        (Scaled quantization is the `lp.quantize` op; this is plain rounding.)
        """
        return self.decode(self.encode(x))

    def _codes(self, codes: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
        arr = np.asarray(codes)
        flat = packing.check_codes(arr, self.bits, f"{self.name}.decode")
        return flat, arr.shape

    def _values(self, x: np.ndarray) -> np.ndarray:
        """`x` as float64, exactly, or a CodecError that says why not."""
        arr = np.asarray(x)
        if arr.dtype.kind in "fiub" or np.can_cast(arr.dtype, np.float64):
            if arr.dtype.kind == "f" and arr.dtype.itemsize > 8:
                raise CodecError(
                    f"{self.name}.encode: {arr.dtype} inputs would be rounded to "
                    "float64 first (double rounding); pass float32 or float64"
                )
            with np.errstate(invalid="ignore"):  # NaN inputs are handled later
                return arr.astype(np.float64)
        raise CodecError(
            f"{self.name}.encode: expected a real-valued NumPy array, got dtype "
            f"{arr.dtype}"
        )


@dataclass(frozen=True, repr=False)
class IntType(DType):
    """Two's-complement `int<b>` or `uint<b>`; encode rounds half to even and
    saturates, NaN encodes as 0."""

    bits: int
    signed: bool = True
    kind: ClassVar[str] = "int"

    def __post_init__(self) -> None:
        if not isinstance(self.bits, int) or not 1 <= self.bits <= packing.MAX_BITS:
            raise DTypeError(
                f"integer width must be in 1..{packing.MAX_BITS}, got {self.bits!r}"
            )

    @property
    def name(self) -> str:
        return f"{'' if self.signed else 'u'}int{self.bits}"

    @property
    def is_signed(self) -> bool:  # type: ignore[override]
        return self.signed

    @property
    def min(self) -> int:
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def max(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    @property
    def eps(self) -> int:
        return 1

    @property
    def special_values(self) -> str:
        return "none (NaN encodes as 0; out of range saturates)"

    @property
    def decode_dtype(self) -> np.dtype:
        exact32 = max(-self.min, self.max) <= 1 << 24
        return np.dtype(np.float32 if exact32 else np.float64)

    def encode(self, x: np.ndarray) -> np.ndarray:
        arr = np.asarray(x)
        if arr.dtype.kind in "iub":
            v = self._clip_ints(arr)
        else:
            f = np.rint(self._values(arr))
            f = np.where(np.isnan(f), 0.0, f)
            # Powers of two bound the range exactly even where max is not a
            # float64 (64-bit types): f > max  <=>  f >= max + 1.
            limit = math.ldexp(1.0, self.bits - int(self.signed))
            above = f >= limit
            below = f < float(self.min)
            f = np.clip(f, float(self.min), np.nextafter(limit, 0.0))
            v = f.astype(np.int64) if self.signed else f.astype(np.uint64)
            v = np.where(above, v.dtype.type(self.max), v)
            v = np.where(below, v.dtype.type(self.min), v)
        mask = (1 << self.bits) - 1
        return (v.astype(np.uint64) & _U64(mask)).astype(self.code_dtype)

    def _clip_ints(self, arr: np.ndarray) -> np.ndarray:
        if arr.dtype.kind == "u":
            u = arr.astype(np.uint64)
            return np.minimum(u, _U64(self.max))
        s = arr.astype(np.int64)
        hi = min(self.max, np.iinfo(np.int64).max)
        s = np.clip(s, max(self.min, np.iinfo(np.int64).min), hi)
        return s if self.signed else s.astype(np.uint64)

    def decode_int(self, codes: np.ndarray) -> np.ndarray:
        """Codes to their integer values (int64; uint64 for uint64)."""
        flat, shape = self._codes(codes)
        if not self.signed:
            out = flat if self.bits == 64 else flat.astype(np.int64)
        else:
            v = flat.astype(np.int64)
            if self.bits < 64:
                v = np.where(v >= 1 << (self.bits - 1), v - (1 << self.bits), v)
            out = v
        return out.reshape(shape)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        return self.decode_int(codes).astype(self.decode_dtype)

    @property
    def value_dtype(self) -> np.dtype:
        if self.bits == 1 and not self.signed:
            return np.dtype(np.bool_)
        width = next(w for w in (8, 16, 32, 64) if w >= self.bits)
        return np.dtype(f"{'i' if self.signed else 'u'}{width // 8}")

    def values(self, codes: np.ndarray) -> np.ndarray:
        return self.decode_int(codes).astype(self.value_dtype, copy=False)

    def to_values(self, x: np.ndarray) -> np.ndarray:
        """Integers saturate into range; floats round half to even first."""
        x = np.asarray(x)
        vd = self.value_dtype
        if x.dtype.kind == "b":
            return x.astype(vd)
        if x.dtype.kind in "iu":
            info = np.iinfo(x.dtype)
            if info.min >= self.min and info.max <= self.max:
                return x.astype(vd, copy=False)
            return np.clip(x, self.min, self.max).astype(vd)
        return self.values(self.encode(x))


@dataclass(frozen=True, repr=False)
class FloatType(DType):
    """A binary float with `exp` exponent and `man` mantissa bits and a sign.

    Values: exponent field 0 is subnormal (man * 2**(emin-man)); otherwise
    (2**man + man_field) * 2**(field - bias - man). bias = 2**(exp-1) - 1, one
    more for `fnuz`. The variant decides which codes are inf/NaN and what
    overflow does: ieee -> inf, fn and fnuz -> NaN, finite -> saturate.
    """

    exp: int
    man: int
    variant: str = "ieee"
    kind: ClassVar[str] = "float"
    is_signed: ClassVar[bool] = True

    def __post_init__(self) -> None:
        e, m = self.exp, self.man
        if not (isinstance(e, int) and isinstance(m, int)):
            raise DTypeError(f"float<e,m>: e and m must be ints, got {e!r}, {m!r}")
        if e < 1 or m < 0 or 1 + e + m > 32:
            raise DTypeError(
                f"float<{e},{m}>: need 1 <= e, 0 <= m and 1+e+m <= 32 bits"
            )
        if self.variant not in VARIANTS:
            raise DTypeError(
                f"float<{e},{m},{self.variant}>: unknown variant "
                f"{self.variant!r}; choose one of {', '.join(VARIANTS)}"
            )
        if self.variant == "ieee" and m == 0:
            raise DTypeError(
                f"float<{e},0,ieee> has no code for NaN (IEEE needs a mantissa "
                "bit); use variant 'fn', 'fnuz' or 'finite'"
            )
        if self.max_code == 0:
            raise DTypeError(
                f"float<{e},{m},{self.variant}> has no nonzero finite value"
            )

    # -- structure --------------------------------------------------------
    @property
    def bits(self) -> int:  # type: ignore[override]
        return 1 + self.exp + self.man

    @property
    def bias(self) -> int:
        return (1 << (self.exp - 1)) - (0 if self.variant == "fnuz" else 1)

    @property
    def emin(self) -> int:
        """Exponent of the smallest normal number."""
        return 1 - self.bias

    @property
    def emax(self) -> int:
        """Exponent of the largest finite number."""
        return (self.max_code >> self.man) - self.bias

    @property
    def max_code(self) -> int:
        """The magnitude code (sign bit clear) of the largest finite value."""
        e, m = self.exp, self.man
        all_ones = (1 << (e + m)) - 1
        if self.variant == "ieee":
            return ((1 << e) - 1 << m) - 1
        if self.variant == "fn":
            return all_ones - 1
        return all_ones

    @property
    def has_inf(self) -> bool:
        return self.variant == "ieee"

    @property
    def has_nan(self) -> bool:
        return self.variant != "finite"

    @property
    def has_negative_zero(self) -> bool:
        return self.variant != "fnuz"

    # -- names ------------------------------------------------------------
    @property
    def name(self) -> str:
        e, m, v, n = self.exp, self.man, self.variant, self.bits
        for alias, spec in _STANDARD_FLOATS.items():
            if spec == (e, m, v):
                return alias
        if v == _default_variant(n):
            return f"f{n}e{e}m{m}"
        if v == "fnuz" or (v == "fn" and n >= 8):
            return f"f{n}e{e}m{m}{v}"
        return f"float<{e},{m},{v}>"

    # -- range ------------------------------------------------------------
    def _mag_value(self, mag: int) -> float:
        field, frac = mag >> self.man, mag & ((1 << self.man) - 1)
        if field == 0:
            return _float_value(frac, self.emin - self.man)
        return _float_value(frac + (1 << self.man), field - self.bias - self.man)

    @property
    def max(self) -> float:
        return self._mag_value(self.max_code)

    @property
    def min(self) -> float:
        return -self.max

    @property
    def smallest_normal(self) -> float:
        return _float_value(1, self.emin)

    @property
    def smallest_subnormal(self) -> float | None:
        return _float_value(1, self.emin - self.man) if self.man else None

    @property
    def eps(self) -> float:
        return _float_value(1, -self.man)

    @property
    def special_values(self) -> str:
        e, m = self.exp, self.man
        width = e + m
        if self.variant == "ieee":
            return f"+-inf, NaN (exponent all ones); -0 ({hex(1 << width)})"
        if self.variant == "fn":
            nan = (1 << width) - 1
            return f"NaN at {hex(nan)} and {hex(nan | 1 << width)}; no inf; -0"
        if self.variant == "fnuz":
            return f"NaN at {hex(1 << width)} (the -0 code); no inf, no -0"
        return "none: no inf, no NaN; -0; overflow saturates"

    @property
    def decode_dtype(self) -> np.dtype:
        smallest = self.emin - self.man if self.man else self.emin
        exact32 = self.man <= 23 and smallest >= -149 and self.emax <= 127
        return np.dtype(np.float32 if exact32 else np.float64)

    # -- codecs -----------------------------------------------------------
    def encode(self, x: np.ndarray) -> np.ndarray:
        """Values to codes, correctly rounded from float32 or float64.

        The value's 53-bit significand is shifted right once, straight to the
        target precision (the subnormal case only shifts further), and rounded
        to nearest even from the shifted-out bits, so there is never a second
        rounding. NaN becomes the canonical quiet NaN with the input's sign;
        for `finite` formats, which have none, NaN becomes the negative-zero
        code (+0 for a negative NaN), as ml_dtypes does.
        """
        f = self._values(x)
        shape = f.shape
        f = f.reshape(-1)
        e, m = self.exp, self.man
        width = e + m
        sign = np.signbit(f).astype(np.uint64)
        a = np.abs(f)
        nan = np.isnan(a)
        inf = np.isinf(a)
        nonzero = ~nan & ~inf & (a > 0)
        frac, ex = np.frexp(np.where(nonzero, a, 1.0))  # a = frac * 2**ex
        exp_ = ex.astype(np.int64) - 1  # a in [2**exp_, 2**(exp_+1))
        sig = np.ldexp(frac, 53).astype(np.uint64)  # in [2**52, 2**53)
        exp_eff = np.maximum(exp_, self.emin)
        shift = np.minimum(52 - m + (exp_eff - exp_), 63).astype(np.uint64)
        q = sig >> shift
        rem = sig & ((_U64(1) << shift) - _U64(1))
        half = _U64(1) << (shift - _U64(1))
        q += ((rem > half) | ((rem == half) & ((q & _U64(1)) == 1))).astype(np.uint64)
        # A carry out of the mantissa lands in the exponent field by itself.
        index = np.minimum(exp_eff - self.emin, (1 << e) + 1).astype(np.uint64)
        mag = np.where(nonzero, (index << _U64(m)) + q, _U64(0))
        overflow = inf | (mag > self.max_code)

        if self.variant == "ieee":
            inf_code = ((1 << e) - 1) << m
            mag = np.where(overflow, _U64(inf_code), mag)
            mag = np.where(nan, _U64(inf_code | 1 << (m - 1)), mag)
        elif self.variant == "fn":
            mag = np.where(overflow | nan, _U64((1 << width) - 1), mag)
        elif self.variant == "finite":
            mag = np.where(overflow, _U64(self.max_code), mag)
            sign = np.where(nan, _U64(1) - sign, sign)
        codes = (sign << _U64(width)) | mag
        if self.variant == "fnuz":
            codes = np.where(mag == 0, _U64(0), codes)  # no negative zero
            codes = np.where(overflow | nan, _U64(1 << width), codes)
        return codes.astype(self.code_dtype).reshape(shape)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        flat, shape = self._codes(codes)
        e, m = self.exp, self.man
        width = e + m
        negative = ((flat >> _U64(width)) & _U64(1)).astype(bool)
        mag = flat & _U64((1 << width) - 1)
        field = (mag >> _U64(m)).astype(np.int64)
        frac = (mag & _U64((1 << m) - 1)).astype(np.float64)
        sig = np.where(field == 0, frac, frac + float(1 << m))
        exp_ = np.where(field == 0, self.emin, field - self.bias) - m
        with np.errstate(over="ignore"):  # only formats wider than float64
            v = np.ldexp(sig, exp_.astype(np.int32))
        if self.variant == "ieee":
            special = field == (1 << e) - 1
            v = np.where(special, np.where(frac == 0, np.inf, np.nan), v)
        elif self.variant == "fn":
            v = np.where(mag == (1 << width) - 1, np.nan, v)
        v = np.where(negative, -v, v)
        if self.variant == "fnuz":
            v = np.where(flat == 1 << width, np.nan, v)
        return v.astype(self.decode_dtype).reshape(shape)


@dataclass(frozen=True, repr=False)
class E8M0Type(DType):
    """The OCP MX shared scale: code c is 2**(c-127); 0xFF is NaN.

    Unsigned, with no zero: encode rounds to the nearest power of two (ties
    up, as a 0-bit mantissa rounds), saturates below 2**-127 to code 0, and
    sends zero, negatives, inf, NaN and values that round past 2**127 to NaN.
    Bit-exact with ml_dtypes.float8_e8m0fnu.
    """

    kind: ClassVar[str] = "e8m0"
    bits: ClassVar[int] = 8  # type: ignore[misc]
    is_signed: ClassVar[bool] = False
    bias: ClassVar[int] = 127

    @property
    def name(self) -> str:
        return "e8m0"

    @property
    def min(self) -> float:
        return math.ldexp(1.0, -127)

    @property
    def max(self) -> float:
        return math.ldexp(1.0, 127)

    @property
    def smallest_normal(self) -> float:
        return math.ldexp(1.0, -127)

    @property
    def eps(self) -> float:
        return 1.0

    @property
    def special_values(self) -> str:
        return "NaN at 0xff; no zero, no sign, no inf"

    @property
    def decode_dtype(self) -> np.dtype:
        return np.dtype(np.float32)

    def encode(self, x: np.ndarray) -> np.ndarray:
        f = self._values(x)
        usable = np.isfinite(f) & (f > 0)
        frac, ex = np.frexp(np.where(usable, f, 1.0))
        # frac in [0.5, 1): the value rounds up iff frac >= 0.75 (ties up).
        exp_ = ex.astype(np.int64) - 1 + (frac >= 0.75)
        code = np.clip(exp_ + 127, 0, 255)
        code = np.where(usable & (exp_ <= 127), code, 255)
        return code.astype(np.uint8)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        flat, shape = self._codes(codes)
        c = flat.astype(np.int32)
        v = np.where(c == 255, np.nan, np.ldexp(1.0, c - 127))
        return v.astype(np.float32).reshape(shape)


# -- constructors and names ----------------------------------------------------

_STANDARD_FLOATS: dict[str, tuple[int, int, str]] = {
    "f32": (8, 23, "ieee"),
    "f16": (5, 10, "ieee"),
    "bf16": (8, 7, "ieee"),
}

# Spellings used by NumPy, torch, ml_dtypes, OCP and Tilus; all resolve here.
_ALIASES: dict[str, str] = {
    "float32": "f32",
    "fp32": "f32",
    "float": "f32",
    "float16": "f16",
    "fp16": "f16",
    "half": "f16",
    "bfloat16": "bf16",
    "bool": "uint1",
    "float8_e8m0fnu": "e8m0",
    "f8e8m0fnu": "e8m0",
    "f8e8m0": "e8m0",
    "fp8_e4m3": "f8e4m3fn",
    "fp8_e5m2": "f8e5m2",
    "fp6_e2m3": "f6e2m3",
    "fp6_e3m2": "f6e3m2",
    "fp4_e2m1": "f4e2m1",
    "fp4": "f4e2m1",
    "nvfp4": "f4e2m1",
    "mxfp4": "f4e2m1",
}

_NAMED_FLOATS = (
    "f4e2m1",
    "f6e2m3",
    "f6e3m2",
    "f8e4m3fn",
    "f8e4m3fnuz",
    "f8e5m2",
    "f8e5m2fnuz",
    "f8e3m4",
    "f8e4m3",
    "e8m0",
    "bf16",
    "f16",
    "f32",
    # Tilus's sub-byte floats that the ecosystem above lacks.
    "f3e1m1",
    "f4e1m2",
    "f5e1m3",
    "f5e2m2",
    "f5e3m1",
    "f6e4m1",
    "f7e2m4",
    "f7e3m3",
    "f7e4m2",
    "f7e5m1",
)


def _default_variant(bits: int) -> str:
    """Sub-byte floats have no specials (OCP MX, Tilus); wider ones are IEEE."""
    return "finite" if bits < 8 else "ieee"


def int_(bits: int) -> IntType:
    """The signed two's-complement integer type of `bits` bits."""
    return IntType(bits, True)


def uint_(bits: int) -> IntType:
    """The unsigned integer type of `bits` bits."""
    return IntType(bits, False)


def float_(exp: int, man: int, variant: str = "ieee") -> FloatType:
    """The float type with `exp` exponent bits, `man` mantissa bits and a sign."""
    return FloatType(exp, man, variant)


def named_dtypes() -> list[DType]:
    """Every float format with a name, then int/uint of 1..8 bits."""
    floats = [dtype(n) for n in _NAMED_FLOATS]
    ints = [IntType(b, s) for s in (True, False) for b in range(1, 9)]
    return floats + ints


_INT_RE = re.compile(r"(u?)int(\d+)b?|([iu])(\d+)|(u?)int<\s*(\d+)\s*>")
_SHORT_FLOAT_RE = re.compile(r"f(\d+)e(\d+)m(\d+)(fnuz|fn)?")
_LONG_FLOAT_RE = re.compile(r"float(\d+)_e(\d+)m(\d+)(b\d+)?(fnuz|fn)?")
_GENERIC_FLOAT_RE = re.compile(r"float<\s*(\d+)\s*,\s*(\d+)\s*(?:,\s*(\w+)\s*)?>")


def _float_from_parts(text: str, n: str, e: str, m: str, suffix: str | None) -> DType:
    bits, exp, man = int(n), int(e), int(m)
    if 1 + exp + man != bits:
        raise DTypeError(
            f"element type {text!r}: sign + {exp} exponent + {man} mantissa "
            f"bits = {1 + exp + man}, not {bits}"
        )
    if suffix == "fnuz":
        variant = "fnuz"
    elif suffix == "fn":
        variant = "fn" if bits >= 8 else "finite"
    else:
        variant = _default_variant(bits)
    return FloatType(exp, man, variant)


def _parse_name(text: str) -> DType:
    key = text.strip().lower()
    if key.startswith("torch."):
        key = key[len("torch.") :]
    key = _ALIASES.get(key, key)
    if key == "e8m0":
        return E8M0Type()
    if key in _STANDARD_FLOATS:
        return FloatType(*_STANDARD_FLOATS[key])
    if mt := _INT_RE.fullmatch(key):
        if mt[2]:
            unsigned, bits = mt[1] == "u", mt[2]
        elif mt[4]:
            unsigned, bits = mt[3] == "u", mt[4]
        else:
            unsigned, bits = mt[5] == "u", mt[6]
        return IntType(int(bits), not unsigned)
    if mt := _SHORT_FLOAT_RE.fullmatch(key):
        return _float_from_parts(text, mt[1], mt[2], mt[3], mt[4])
    if mt := _LONG_FLOAT_RE.fullmatch(key):
        if mt[4]:
            raise DTypeError(
                f"element type {text!r}: a custom exponent bias ({mt[4]}) is not "
                "supported; lpcc floats use bias 2**(e-1)-1 (+1 for fnuz)"
            )
        return _float_from_parts(text, mt[1], mt[2], mt[3], mt[5])
    if mt := _GENERIC_FLOAT_RE.fullmatch(key):
        return FloatType(int(mt[1]), int(mt[2]), mt[3] or "ieee")
    if key in ("f64", "float64", "double", "fp64"):
        raise DTypeError(
            f"element type {text!r}: lpcc floats have at most 32 bits; cast "
            "float64 data to f32 first"
        )
    raise DTypeError(
        f"unknown element type {text!r}. Write int<b>/uint<b> (int3, uint5), "
        "fNeXmY (f6e3m2, f8e4m3fn), float<e,m,variant> with variant in "
        f"{'/'.join(VARIANTS)}, e8m0, bf16, f16 or f32; `lpcc types` lists "
        "the named formats"
    )


def dtype(spec: object) -> DType:
    """The element type that `spec` names.

    `spec` may be a `DType`, a name ("int3", "f6e2m3", "float<3,2,finite>",
    "float8_e4m3fn", "float6_e3m2"), a NumPy or ml_dtypes dtype, or a torch
    dtype. Raises `DTypeError` for anything else.
    """
    if isinstance(spec, DType):
        return spec
    if isinstance(spec, str):
        return _parse_name(spec)
    text = str(spec)
    if text.startswith("torch."):
        return _parse_name(text)
    try:
        name = np.dtype(spec).name  # type: ignore[call-overload]
    except TypeError:
        raise DTypeError(
            f"cannot make an element type from {spec!r} of type "
            f"{type(spec).__name__}; pass a name such as 'int4' or a NumPy dtype"
        ) from None
    return _parse_name(name)
