"""Element-type names, aliases and attributes (values derived by hand)."""

from __future__ import annotations

import contextlib
import math

import ml_dtypes
import numpy as np
import pytest
import torch

import lpcc
from lpcc.ir.dtypes import VARIANTS, E8M0Type, FloatType, IntType


def _all_types() -> list[lpcc.DType]:
    types: list[lpcc.DType] = [E8M0Type()]
    types += [IntType(b, s) for b in range(1, 65) for s in (True, False)]
    for e in range(1, 10):
        for m in range(0, 32 - e):
            for v in VARIANTS:
                with contextlib.suppress(lpcc.DTypeError):  # e.g. ieee with m = 0
                    types.append(FloatType(e, m, v))
    return types


def test_canonical_names_parse_back() -> None:
    types = _all_types()
    assert len(types) > 1000
    for t in types:
        assert lpcc.dtype(str(t)) == t, str(t)
        assert lpcc.dtype(repr(t)[len("lpcc.dtype('") : -2]) == t


@pytest.mark.parametrize(
    "alias, canonical",
    [
        ("f4e2m1", "f4e2m1"),
        ("float4_e2m1fn", "f4e2m1"),
        ("f6e2m3", "f6e2m3"),
        ("float6_e2m3fn", "f6e2m3"),
        ("f6e3m2", "f6e3m2"),
        ("float6_e3m2fn", "f6e3m2"),
        ("float6_e3m2", "f6e3m2"),  # Tilus
        ("f6e3m2fn", "f6e3m2"),  # sub-byte fn is finite, as in ml_dtypes
        ("f8e4m3fn", "f8e4m3fn"),
        ("float8_e4m3fn", "f8e4m3fn"),
        ("f8e4m3fnuz", "f8e4m3fnuz"),
        ("f8e5m2", "f8e5m2"),
        ("f8e5m2fnuz", "f8e5m2fnuz"),
        ("f8e3m4", "f8e3m4"),
        ("f8e4m3", "f8e4m3"),
        ("e8m0", "e8m0"),
        ("float8_e8m0fnu", "e8m0"),
        ("bf16", "bf16"),
        ("bfloat16", "bf16"),
        ("f16", "f16"),
        ("float16", "f16"),
        ("f32", "f32"),
        ("float32", "f32"),
        ("f16e5m10", "f16"),
        ("int3", "int3"),
        ("i3", "int3"),
        ("int<3>", "int3"),
        ("int3b", "int3"),
        ("uint5", "uint5"),
        ("u5", "uint5"),
        ("uint<5>", "uint5"),
        ("bool", "uint1"),
        (" INT4 ", "int4"),
        ("float<3,2,finite>", "f6e3m2"),
        ("float<3,2>", "float<3,2,ieee>"),
        ("float<3,2,fn>", "float<3,2,fn>"),
        ("float<5,10,finite>", "float<5,10,finite>"),
        ("f5e2m2", "f5e2m2"),
        ("f7e3m3", "f7e3m3"),
    ],
)
def test_aliases(alias: str, canonical: str) -> None:
    assert str(lpcc.dtype(alias)) == canonical


def test_constructors_and_foreign_dtypes() -> None:
    assert lpcc.int_(3) == lpcc.dtype("int3")
    assert lpcc.uint_(5) == lpcc.dtype("uint5")
    assert lpcc.float_(3, 2, "finite") == lpcc.dtype("f6e3m2")
    assert lpcc.float_(5, 2) == lpcc.dtype("f8e5m2")
    assert lpcc.dtype(np.float32) == lpcc.dtype("f32")
    assert lpcc.dtype(np.dtype("int8")) == lpcc.int_(8)
    assert lpcc.dtype(ml_dtypes.float8_e4m3fn) == lpcc.dtype("f8e4m3fn")
    assert lpcc.dtype(ml_dtypes.int4) == lpcc.int_(4)
    assert lpcc.dtype(torch.bfloat16) == lpcc.dtype("bf16")
    assert lpcc.dtype(torch.int64) == lpcc.int_(64)
    assert lpcc.dtype(torch.float8_e5m2) == lpcc.dtype("f8e5m2")
    t = lpcc.dtype("int3")
    assert lpcc.dtype(t) is t
    assert hash(lpcc.dtype("f6e2m3")) == hash(lpcc.float_(2, 3, "finite"))


@pytest.mark.parametrize(
    "name, bits, lo, hi, normal, subnormal, eps",
    [
        # OCP MX spec values, worked out from e/m/bias by hand.
        ("f4e2m1", 4, -6.0, 6.0, 1.0, 0.5, 0.5),
        ("f6e2m3", 6, -7.5, 7.5, 1.0, 0.125, 0.125),
        ("f6e3m2", 6, -28.0, 28.0, 0.25, 0.0625, 0.25),
        ("f8e4m3fn", 8, -448.0, 448.0, 2.0**-6, 2.0**-9, 0.125),
        ("f8e4m3fnuz", 8, -240.0, 240.0, 2.0**-7, 2.0**-10, 0.125),
        ("f8e5m2", 8, -57344.0, 57344.0, 2.0**-14, 2.0**-16, 0.25),
        ("f8e5m2fnuz", 8, -57344.0, 57344.0, 2.0**-15, 2.0**-17, 0.25),
        ("f8e4m3", 8, -240.0, 240.0, 2.0**-6, 2.0**-9, 0.125),
        ("f8e3m4", 8, -15.5, 15.5, 0.25, 2.0**-6, 0.0625),
        ("f16", 16, -65504.0, 65504.0, 2.0**-14, 2.0**-24, 2.0**-10),
        (
            "bf16",
            16,
            -(2 - 2.0**-7) * 2.0**127,
            (2 - 2.0**-7) * 2.0**127,
            2.0**-126,
            2.0**-133,
            2.0**-7,
        ),
        ("f3e1m1", 3, -3.0, 3.0, 2.0, 1.0, 0.5),
        ("float<5,10,finite>", 16, -131008.0, 131008.0, 2.0**-14, 2.0**-24, 2.0**-10),
    ],
)
def test_float_attributes(
    name: str,
    bits: int,
    lo: float,
    hi: float,
    normal: float,
    subnormal: float,
    eps: float,
) -> None:
    t = lpcc.dtype(name)
    assert (t.bits, t.min, t.max) == (bits, lo, hi)
    assert (t.smallest_normal, t.smallest_subnormal, t.eps) == (normal, subnormal, eps)
    assert t.is_signed and t.variant in VARIANTS


def test_other_attributes() -> None:
    e8 = lpcc.dtype("e8m0")
    assert (e8.bits, e8.min, e8.max, e8.smallest_subnormal) == (
        8,
        2.0**-127,
        2.0**127,
        None,
    )
    assert not e8.is_signed and e8.variant is None
    i3 = lpcc.dtype("int3")
    assert (i3.bits, i3.min, i3.max, i3.is_signed, i3.variant) == (3, -4, 3, True, None)
    assert (lpcc.uint_(4).min, lpcc.uint_(4).max) == (0, 15)
    assert lpcc.float_(4, 0, "finite").smallest_subnormal is None
    assert lpcc.dtype("float<10,3,finite>").max == math.ldexp(15, 1023 - 511 - 3)
    assert lpcc.dtype("float<12,3,finite>").max == math.inf  # beyond float64


def test_code_and_decode_dtypes() -> None:
    assert lpcc.dtype("int3").code_dtype == np.uint8
    assert lpcc.dtype("f16").code_dtype == np.uint16
    assert lpcc.dtype("float<5,11,ieee>").code_dtype == np.uint32
    assert lpcc.dtype("int64").code_dtype == np.uint64
    assert lpcc.dtype("f32").decode_dtype == np.float32
    assert lpcc.dtype("float<8,23,finite>").decode_dtype == np.float64  # > f32 max
    assert lpcc.dtype("float<7,24,finite>").decode_dtype == np.float64


@pytest.mark.parametrize(
    "spec, message",
    [
        ("int0", "integer width must be in 1..64"),
        ("int65", "integer width must be in 1..64"),
        ("f6e2m2", "= 5, not 6"),
        ("float<0,3,ieee>", "need 1 <= e"),
        ("float<8,24,ieee>", "1\\+e\\+m <= 32"),
        ("float<3,2,nope>", "unknown variant 'nope'"),
        ("float<4,0,ieee>", "no code for NaN"),
        ("float<1,0,fn>", "no nonzero finite value"),
        ("float8_e4m3b11fnuz", "custom exponent bias"),
        ("f64", "at most 32 bits"),
        ("complex64", "unknown element type 'complex64'"),
        ("", "unknown element type"),
    ],
)
def test_bad_names_say_why(spec: str, message: str) -> None:
    with pytest.raises(lpcc.DTypeError, match=message):
        lpcc.dtype(spec)


def test_bad_variant_and_objects() -> None:
    with pytest.raises(lpcc.DTypeError, match="unknown variant 'nope'"):
        lpcc.float_(3, 2, "nope")
    with pytest.raises(lpcc.DTypeError, match="cannot make an element type"):
        lpcc.dtype(object())
    assert issubclass(lpcc.DTypeError, ValueError)


@pytest.mark.parametrize(
    ("name", "np_name"),
    [
        ("uint1", "bool"),
        ("int1", "int8"),
        ("int4", "int8"),
        ("uint8", "uint8"),
        ("int9", "int16"),
        ("int32", "int32"),
        ("int64", "int64"),
        ("uint33", "uint64"),
        ("f32", "float32"),
        ("f16", "float32"),
        ("f4e2m1", "float32"),
        ("e8m0", "float32"),
    ],
)
def test_value_dtype(name: str, np_name: str) -> None:
    dt = lpcc.dtype(name)
    assert dt.value_dtype == np.dtype(np_name)
    extremes = [dt.min, dt.max]
    codes = dt.encode(np.array(extremes, dtype=np.float64))
    assert dt.values(codes).dtype == np.dtype(np_name)
    assert dt.values(codes).tolist() == extremes


@pytest.mark.parametrize(
    ("name", "given", "want"),
    [
        ("int4", [-9, 7, 100], [-8, 7, 7]),  # integers saturate
        ("int4", [0.5, 1.5, -2.5], [0, 2, -2]),  # floats round half to even
        ("uint1", [-1, 0, 3], [False, False, True]),
        ("uint1", [0.4, 0.6], [False, True]),
        ("f16", [1 + 2**-11, 70000.0], [1.0, np.inf]),
        ("f4e2m1", [0.25, 7.0], [0.0, 6.0]),
        ("f32", [1 + 2**-24, 1 + 3 * 2**-24], [1.0, 1 + 2**-22]),  # ties to even
    ],
)
def test_to_values_rounds_once_into_the_value_domain(
    name: str, given: list[float], want: list[float]
) -> None:
    dt = lpcc.dtype(name)
    kind = np.int64 if all(float(g).is_integer() for g in given) else np.float64
    got = dt.to_values(np.array(given, kind))
    assert got.dtype == dt.value_dtype
    assert got.tolist() == want
