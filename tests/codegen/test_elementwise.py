"""Native elementwise kernels and fused elementwise regions vs the interpreter.

Each kernel function is run by `interp.run_function` (the oracle) and
natively on every ISA level this host runs (others compile to object code
only). Results that the kernels compute with the interpreter's own IEEE
operations (add, sub, mul, div, sqrt, rsqrt, max/min, compares, selects,
casts, narrow-float rounding, everything integer) must be equal bit for
bit; NaNs compare by position, zeros by sign. The transcendental functions
are polynomials of their own, so they are checked against float64 truth
with a bound in ulps (the spacing of float32 at the true value) and against
the interpreter with that bound plus NumPy's own error.
"""

from __future__ import annotations

import ctypes
import math
from collections.abc import Callable, Sequence

import numpy as np
import pytest
from llvmlite import ir
from lpcc.runtime.kernels import ExecutionError
from xdsl.dialects import func
from xdsl.ir import SSAValue

import lpcc
from lpcc.codegen.llvm import isa as isa_mod
from lpcc.codegen.llvm import jit, loader
from lpcc.codegen.llvm.kernel import F32, KernelBuilder, request_for
from lpcc.codegen.llvm.kernels.elementwise import can_emit, emit_elementwise
from lpcc.codegen.llvm.lower import lower_kernel, run_native
from lpcc.ir import interp
from lpcc.ir.dialect import ops as lp
from tests.codegen.helpers import Body
from tests.codegen.helpers import body_fn as make_fn
from tests.codegen.helpers import same_values as same

pytestmark = pytest.mark.skipif(
    loader.host_arch() not in ("x86_64", "amd64"), reason="x86-64 host only"
)

RUN = [i for i in isa_mod.LEVELS if isa_mod.host_has(i)]
COMPILE_ONLY = [i for i in isa_mod.LEVELS if not isa_mod.host_has(i)]
F32_NP = np.float32


# -- building kernel functions ---------------------------------------------------------


# -- comparing -------------------------------------------------------------------------


def native(fn: func.FuncOp, inputs: Sequence[np.ndarray], isa: str) -> list[np.ndarray]:
    out = run_native(fn, inputs, isa=isa)
    assert out is not None, f"no native kernel on {isa}"
    return out


def check(fn: func.FuncOp, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Native == interpreter bit for bit on every level this host runs (the
    others compile in `test_other_levels_compile`)."""
    want = interp.run_function(fn, inputs)
    for level in RUN:
        got = native(fn, inputs, level)
        for k, (g, w) in enumerate(zip(got, want, strict=True)):
            same(g, w, f"{level} output #{k}")
    return want


def ulps(got: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """|got - truth| in units of the float32 spacing at the true value.

    Where truth is 0 or beyond the float32 range the spacing is that of the
    float32 nearest to it. Non-finite values must match exactly (checked
    by the callers), so they count as 0 here.
    """
    with np.errstate(over="ignore"):
        t32 = truth.astype(np.float32)
    sp = np.spacing(np.abs(t32)).astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs(got.astype(np.float64) - truth) / sp
    fin = np.isfinite(got) & np.isfinite(t32)
    return np.where(fin, err, 0.0)


def specials_match(got: np.ndarray, want: np.ndarray) -> None:
    """Same NaN positions, same infinities (with sign)."""
    assert np.array_equal(np.isnan(got), np.isnan(want))
    inf = np.isinf(want) | np.isinf(got)
    assert np.array_equal(got[inf], want[inf])


def rand_f32(shape: Sequence[int], seed: int, scale: float = 3.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(tuple(shape)) * scale).astype(np.float32)


SPECIAL = np.array(
    [0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 2.5, np.inf, -np.inf, np.nan, 1e-40, -3e38],
    np.float32,
)


def with_specials(x: np.ndarray) -> np.ndarray:
    flat = x.reshape(-1).copy()
    n = min(len(flat), len(SPECIAL))
    flat[:n] = SPECIAL[:n]
    return flat.reshape(x.shape)


# -- transcendental accuracy -----------------------------------------------------------

# name: (op, inputs, float64 truth, bound in ulps of the truth). Where the
# bounds come from (measured maxima on AVX2 with FMA / SSE2 without, Zen 3):
# exp (Cephes: a degree-6 polynomial after a two-constant ln2 reduction,
# ~0.5 ulp + 0.5 for the final rounding) 0.97 / 0.92 -> 1; log (Cephes, same
# budget) 0.74 -> 1; tanh (its own odd polynomial below 0.625, else
# 1 - 2/(e^2x + 1): exp's error shrinks by the subtraction) 1.22 -> 1.5;
# sigmoid (1/(1 + e^-x): exp's error plus two roundings) 1.87 -> 2; erf
# (fitted here: 2^-29.6 / 2^-25 relative polynomial error plus ~4 f32
# roundings) 1.25 / 1.66 -> 2; sin and cos (f64 reduction and polynomial,
# one rounding to f32: 0.5 + 2^-37) 0.55 -> 0.6. NumPy's own float32 exp,
# log and sigmoid are 2.2, 3.0 and 2.7 ulp off on the same grids.


def _grid(lo: float, hi: float, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([np.linspace(lo, hi, n), rng.uniform(lo, hi, n)]).astype(
        np.float32
    )


def _log_inputs() -> np.ndarray:
    rng = np.random.default_rng(3)
    e = rng.uniform(-149, 127, 40000)  # every binade, subnormals included
    x = np.exp2(e) * rng.uniform(1, 2, e.size)
    x = np.concatenate([x, np.linspace(0.5, 2, 20000)])
    return x.astype(np.float32)


def _trig(seed: int) -> np.ndarray:
    """Up to 1000 densely, then every binade up to 3e38 (beyond 2^28 the
    kernel calls libm for those lanes)."""
    rng = np.random.default_rng(seed)
    far = np.exp2(rng.uniform(10, 127, 4000)) * rng.choice([-1, 1], 4000)
    return np.concatenate([_grid(-1000, 1000, 30000, seed), far]).astype(np.float32)


MATH = {
    "exp": (lp.ExpOp, lambda: _grid(-104, 89, 30000, 1), np.exp, 1.0),
    "log": (lp.LogOp, _log_inputs, np.log, 1.0),
    "tanh": (lp.TanhOp, lambda: _grid(-12, 12, 30000, 2), np.tanh, 1.5),
    "sigmoid": (
        lp.SigmoidOp,
        lambda: _grid(-80, 80, 30000, 4),
        lambda x: 1 / (1 + np.exp(-x)),
        2.0,
    ),
    "erf": (
        lp.ErfOp,
        lambda: _grid(-5, 5, 30000, 5),
        np.frompyfunc(math.erf, 1, 1),
        2.0,
    ),
    "sin": (lp.SinOp, lambda: _trig(6), np.sin, 0.6),
    "cos": (lp.CosOp, lambda: _trig(7), np.cos, 0.6),
}


@pytest.mark.parametrize("name", sorted(MATH))
def test_transcendental_accuracy(name: str) -> None:
    cls, inputs, truth_fn, bound = MATH[name]
    x = np.concatenate([SPECIAL, inputs()])
    fn = make_fn([("f32", x.shape)], lambda b, a: [b(cls(a))])
    with np.errstate(all="ignore"):
        truth = truth_fn(x.astype(np.float64)).astype(np.float64)
    (want,) = interp.run_function(fn, [x])
    numpy_err = ulps(want, truth).max()
    for level in RUN:
        (got,) = native(fn, [x], level)
        specials_match(got, want)
        err = ulps(got, truth)
        assert err.max() <= bound, (level, float(err.max()), x[np.argmax(err)])
        # vs the interpreter: both are within their bounds of the truth.
        assert ulps(got, want.astype(np.float64)).max() <= bound + numpy_err + 1


def test_exp_extremes() -> None:
    """Overflow to inf, gradual underflow to subnormals and 0, NaN kept."""
    x = np.array(
        [88.72, 88.7228, 88.73, 200, -87.3, -100, -103.9, -104.5, -1e30, np.nan],
        np.float32,
    )
    fn = make_fn([("f32", x.shape)], lambda b, a: [b(lp.ExpOp(a))])
    for level in RUN:
        (got,) = native(fn, [x], level)
        truth = np.exp(x.astype(np.float64))
        with np.errstate(over="ignore"):
            specials_match(got, truth.astype(np.float32))
        assert ulps(got, truth).max() <= 1.0
        assert got[5] > 0 and got[6] > 0  # subnormal results, not flushed


def test_pow() -> None:
    """x ** y: exp(y log|x|) in f64 (<= 1 ulp) and C99 powf's special cases."""
    rng = np.random.default_rng(8)
    n = 20000
    x = (np.exp2(rng.uniform(-20, 20, n)) * rng.choice([-1, 1], n)).astype(F32_NP)
    y = rng.uniform(-6, 6, n).astype(F32_NP)
    y[::3] = np.round(y[::3])  # integral exponents for negative bases
    sx = [0.0, -0.0, 1.0, -1.0, 2.0, -2.0, np.inf, -np.inf, np.nan, 0.5, -0.5, 3.0]
    sy = [0.0, -0.0, 1.0, 2.0, 3.0, -3.0, 0.5, -0.5, np.inf, -np.inf, np.nan, 1.5]
    gx, gy = np.meshgrid(np.array(sx, F32_NP), np.array(sy, F32_NP))
    x = np.concatenate([gx.ravel(), x])
    y = np.concatenate([gy.ravel(), y])
    fn = make_fn(
        [("f32", x.shape), ("f32", y.shape)], lambda b, p, q: [b(lp.PowOp(p, q))]
    )
    (want,) = interp.run_function(fn, [x, y])
    with np.errstate(all="ignore"):
        truth = np.power(x.astype(np.float64), y.astype(np.float64))
    for level in RUN:
        (got,) = native(fn, [x, y], level)
        specials_match(got, want)
        zero = want == 0
        assert np.array_equal(np.signbit(got[zero]), np.signbit(want[zero]))
        assert ulps(got, truth).max() <= 1.0
        assert ulps(got, want.astype(np.float64)).max() <= 1.0
        # Squares are x * x rounded once (NumPy's powf is 1 ulp off on some).
        sq = y == 2
        same(got[sq], x[sq] * x[sq])


# -- f32 arithmetic: bit for bit -------------------------------------------------------

BINARY = [lp.AddOp, lp.SubOp, lp.MulOp, lp.DivOp, lp.MaxOp, lp.MinOp]
UNARY_EXACT = [lp.NegOp, lp.AbsOp, lp.SqrtOp, lp.RsqrtOp]
PREDICATES = ["eq", "ne", "lt", "le", "gt", "ge"]


def _all_f32_ops(b: Body, x: SSAValue, y: SSAValue) -> list[SSAValue]:
    outs = [b(cls(x, y)) for cls in BINARY]
    outs += [b(cls(x)) for cls in UNARY_EXACT]
    outs += [b(lp.CmpOp(p, x, y)) for p in PREDICATES]
    outs.append(b(lp.SelectOp(outs[-1], x, y)))
    return outs


@pytest.mark.parametrize(
    ("sa", "sb"),
    [
        ((3, 33), (3, 33)),
        ((3, 33), (1, 33)),  # row broadcast
        ((33, 7), (33, 1)),  # column broadcast
        ((3, 1), (1, 17)),  # outer product
        ((1,), (1,)),
        ((2, 3, 17), (2, 1, 17)),  # broadcast in the middle
    ],
)
def test_f32_ops_bit_exact(sa: tuple[int, ...], sb: tuple[int, ...]) -> None:
    x = with_specials(rand_f32(sa, 0))
    y = rand_f32(sb, 1)
    y.reshape(-1)[:1] = -0.0  # max(x, -0.0) ties and division by zero
    fn = make_fn([("f32", sa), ("f32", sb)], _all_f32_ops, fuse=True)
    check(fn, [x, y])


@pytest.mark.parametrize("cls", [*BINARY, lp.PowOp])
def test_binary_op_alone(cls: type) -> None:
    """One op per kernel (not fused), odd sizes, a broadcast operand."""
    x = with_specials(rand_f32((17, 3), 2))
    y = rand_f32((1, 3), 3)
    fn = make_fn([("f32", (17, 3)), ("f32", (1, 3))], lambda b, p, q: [b(cls(p, q))])
    if cls is lp.PowOp:  # not bit for bit: <= 1 ulp from the interpreter's powf
        (want,) = interp.run_function(fn, [x, y])
        for level in RUN:
            (got,) = native(fn, [x, y], level)
            specials_match(got, want)
            assert ulps(got, want.astype(np.float64)).max() <= 1.0
    else:
        check(fn, [x, y])


@pytest.mark.parametrize("cls", [lp.NegOp, lp.RsqrtOp])
def test_unary_op_alone(cls: type) -> None:
    x = with_specials(rand_f32((33, 7), 4))
    check(make_fn([("f32", (33, 7))], lambda b, a: [b(cls(a))]), [x])


@pytest.mark.parametrize("pred", ["ne", "le"])
def test_cmp_alone(pred: str) -> None:
    x = with_specials(rand_f32((5, 17), 5))
    y = x.copy()
    y[::2] = rand_f32((5, 17), 6)[::2]
    fn = make_fn(
        [("f32", (5, 17)), ("f32", (5, 17))],
        lambda b, p, q: [b(lp.CmpOp(pred, p, q))],
    )
    out = check(fn, [x, y])
    assert out[0].dtype == np.bool_


# -- integers --------------------------------------------------------------------------

INT_TYPES = [
    "int8",
    "int4",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint3",
    "uint16",
    "uint32",
]


def rand_int(dt_name: str, shape: Sequence[int], seed: int) -> np.ndarray:
    dt = lpcc.dtype(dt_name)
    rng = np.random.default_rng(seed)
    lo, hi = int(dt.min), int(dt.max)
    x = rng.integers(lo, hi, size=tuple(shape), endpoint=True, dtype=np.int64)
    flat = x.reshape(-1)
    flat[:4] = [lo, hi, 0, -1 if dt.is_signed else 1]  # extremes saturate
    return x.astype(dt.value_dtype)


@pytest.mark.parametrize("dt", INT_TYPES)
def test_integer_ops(dt: str) -> None:
    """Exact integer semantics: saturating add/sub/mul (int64 wraps), division
    toward zero, wrapping pow, max/min, compares, neg/abs."""
    t = lpcc.dtype(dt)
    shape = (3, 17)
    x = rand_int(dt, shape, 10)
    y = rand_int(dt, (1, 17), 11)
    storage_min = np.iinfo(t.value_dtype).min
    # Division: no zero divisor (the interpreter raises) and no storage
    # minimum (the interpreter's `_int_div` wraps |x| there; see the report).
    num = np.where(x == storage_min, 1, x).astype(t.value_dtype)
    den = np.where((y == 0) | (y == storage_min), 3 if t.max >= 3 else 1, y)
    den = den.astype(t.value_dtype)
    e = np.random.default_rng(12).integers(0, min(int(t.max), 9) + 1, shape)
    e = e.astype(t.value_dtype)

    def build(b: Body, p: SSAValue, q: SSAValue, n: SSAValue, d: SSAValue, k):
        outs = [b(cls(p, q)) for cls in (lp.AddOp, lp.SubOp, lp.MulOp, lp.MaxOp)]
        outs.append(b(lp.MinOp(p, q)))
        outs.append(b(lp.DivOp(n, d)))
        outs.append(b(lp.PowOp(p, k)))
        outs += [b(lp.CmpOp(pr, p, q)) for pr in PREDICATES]
        if t.is_signed:
            outs += [b(lp.NegOp(p)), b(lp.AbsOp(p))]
        return outs

    fn = make_fn(
        [(dt, shape), (dt, (1, 17)), (dt, shape), (dt, (1, 17)), (dt, shape)],
        build,
        fuse=True,
    )
    check(fn, [x, y, num, den, e])


def test_integer_div_alone_negative() -> None:
    """-7 / 2 = -3, 7 / -2 = -3, -7 / -2 = 3 (toward zero, not floor)."""
    x = np.array([-7, 7, -7, 7, 0, -128 + 1, 127], np.int8)
    y = np.array([2, -2, -2, 2, 5, -1, -1], np.int8)
    fn = make_fn([("int8", (7,)), ("int8", (7,))], lambda b, p, q: [b(lp.DivOp(p, q))])
    out = check(fn, [x, y])
    assert out[0].tolist() == [-3, -3, 3, 3, 0, 127, -127]


@pytest.mark.parametrize("where", [0, 20, 36])  # a vector body lane, the tail
def test_integer_div_by_zero_raises_like_the_interpreter(where: int) -> None:
    """The kernel flags the zero divisor in its status slot; the call raises."""
    x = np.arange(1, 38, dtype=np.int32).reshape(1, 37)
    y = np.full((1, 37), 3, np.int32)
    y[0, where] = 0
    fn = make_fn(
        [("int32", (1, 37)), ("int32", (1, 37))], lambda b, p, q: [b(lp.DivOp(p, q))]
    )
    with pytest.raises(ValueError, match="division by zero"):
        interp.run_function(fn, [x, y])
    for level in RUN:
        with pytest.raises(ExecutionError, match=r"lp\.div: integer division by zero"):
            native(fn, [x, y], level)
        ok = np.where(y == 0, 1, y).astype(np.int32)  # same kernel, no zero
        assert np.array_equal(native(fn, [x, ok], level)[0], x // ok)


def test_integer_pow_negative_exponent_raises() -> None:
    x = np.array([[2, 3, 4]], np.int16)
    e = np.array([[1, -1, 2]], np.int16)
    fn = make_fn(
        [("int16", (1, 3)), ("int16", (1, 3))], lambda b, p, q: [b(lp.PowOp(p, q))]
    )
    with pytest.raises(ValueError, match="negative exponent"):
        interp.run_function(fn, [x, e])
    for level in RUN:
        with pytest.raises(ExecutionError, match=r"lp\.pow: integer power with a neg"):
            native(fn, [x, e], level)


def test_bool_ops() -> None:
    rng = np.random.default_rng(13)
    x = rng.integers(0, 2, (4, 9)).astype(bool)
    y = rng.integers(0, 2, (1, 9)).astype(bool)

    def build(b: Body, p: SSAValue, q: SSAValue) -> list[SSAValue]:
        outs = [b(cls(p, q)) for cls in (lp.AddOp, lp.MulOp, lp.MaxOp, lp.MinOp)]
        outs += [b(lp.CmpOp(pr, p, q)) for pr in PREDICATES]
        outs.append(b(lp.SelectOp(p, q, outs[0])))
        outs.append(b(lp.CastOp(p, lpcc.dtype("f32"))))
        outs.append(b(lp.CastOp(p, lpcc.dtype("int8"))))
        return outs

    check(make_fn([("uint1", (4, 9)), ("uint1", (1, 9))], build, fuse=True), [x, y])


# -- casts and narrow floats -----------------------------------------------------------

CAST_TARGETS = [
    "int8",
    "int4",
    "uint8",
    "uint3",
    "int16",
    "int32",
    "int64",
    "uint32",
    "uint1",
    "f16",
    "bf16",
    "f8e4m3fn",
    "f8e5m2",
    "f8e4m3fnuz",
    "f8e3m4",
    "f6e3m2",
    "f6e2m3",
    "f4e2m1",
    "float<3,0,finite>",
    "float<4,3,fn>",
]


def _cast_inputs() -> np.ndarray:
    """Random bit patterns (every exponent), halves, ties, specials, limits."""
    rng = np.random.default_rng(14)
    bits = rng.integers(0, 2**32, 6000, dtype=np.uint64).astype(np.uint32)
    wide = bits.view(np.float32)
    near = (rng.standard_normal(4000) * 40).astype(np.float32)
    halves = np.arange(-300, 300).astype(np.float32) / 2
    limits = np.array(
        [
            65504,
            65519.99,
            65520,
            448,
            464,
            480,
            57344,
            61440,
            6,
            7,
            0.25,
            2**31,
            -(2**31),
            2**31 - 128,
            2**32,
            2**63,
            -(2**63),
            3e38,
            1e-45,
            6e-8,
            3e-8,
        ],
        np.float32,
    )
    return np.concatenate([SPECIAL, limits, -limits, halves, near, wide])


def test_casts_from_f32() -> None:
    x = _cast_inputs()
    fn = make_fn(
        [("f32", x.shape)],
        lambda b, a: [b(lp.CastOp(a, lpcc.dtype(t))) for t in CAST_TARGETS],
        fuse=True,
    )
    out = check(fn, [x])
    assert np.isnan(out[CAST_TARGETS.index("f16")]).any()


@pytest.mark.parametrize("src", ["int8", "int16", "int32", "int64", "uint8", "uint16"])
def test_casts_from_ints(src: str) -> None:
    x = rand_int(src, (57,), 15)
    targets = ["f32", "int8", "uint8", "int32", "int64", "uint1", "int4", "f16"]
    if lpcc.dtype(src).bits <= 16:  # int32 -> bf16 would round twice: None
        targets += ["bf16", "f8e4m3fn"]
    fn = make_fn(
        [(src, x.shape)],
        lambda b, a: [b(lp.CastOp(a, lpcc.dtype(t))) for t in targets if t != src],
        fuse=True,
    )
    check(fn, [x])


def test_narrow_float_arithmetic() -> None:
    """Each op's f32 result is rounded to the result type (f16, bf16, f8)."""
    for dt in ("f16", "bf16", "f8e4m3fn"):
        t = lpcc.dtype(dt)
        x = t.to_values(with_specials(rand_f32((5, 7), 16)))
        y = t.to_values(rand_f32((5, 7), 17))

        def build(b: Body, p: SSAValue, q: SSAValue) -> list[SSAValue]:
            s = b(lp.AddOp(p, q))
            m = b(lp.MulOp(s, q))
            return [s, m, b(lp.DivOp(m, p)), b(lp.SqrtOp(s)), b(lp.MaxOp(p, q))]

        check(make_fn([(dt, (5, 7)), (dt, (5, 7))], build, fuse=True), [x, y])


def test_narrow_float_transcendental() -> None:
    """bf16 tanh: the f32 polynomial rounds to the interpreter's bf16 value or
    its neighbour (<= 2 f32 ulps before rounding can flip one rounding)."""
    t = lpcc.dtype("bf16")
    x = t.to_values(np.linspace(-4, 4, 301).astype(np.float32))
    fn = make_fn([("bf16", x.shape)], lambda b, a: [b(lp.TanhOp(a))])
    (want,) = interp.run_function(fn, [x])
    for level in RUN:
        (got,) = native(fn, [x], level)
        assert np.all(np.abs(got - want) <= np.spacing(np.abs(want)) * 2**16)
        assert np.mean(got == want) > 0.95


def test_unsupported_types_fall_back() -> None:
    """e8m0, uint64 and an int32 -> bf16 cast (sitofp would round twice) are
    not handled natively: the generators return None (the interpreter runs)."""
    cases = [
        make_fn([("f32", (4,))], lambda b, a: [b(lp.CastOp(a, lpcc.dtype("e8m0")))]),
        make_fn(
            [("uint64", (4,)), ("uint64", (4,))], lambda b, p, q: [b(lp.AddOp(p, q))]
        ),
        make_fn([("int32", (4,))], lambda b, a: [b(lp.CastOp(a, lpcc.dtype("bf16")))]),
    ]
    for fn in cases:
        assert lower_kernel(fn, RUN[0]) is None


# -- fused regions ---------------------------------------------------------------------


def _gelu_tanh(b: Body, x: SSAValue) -> list[SSAValue]:
    c = lambda v: b.const(v, "f32", 2)  # noqa: E731
    x3 = b(lp.MulOp(b(lp.MulOp(x, x)), x))
    inner = b(lp.AddOp(x, b(lp.MulOp(x3, c(0.044715)))))
    t = b(lp.TanhOp(b(lp.MulOp(inner, c(math.sqrt(2 / math.pi))))))
    half = b(lp.MulOp(x, c(0.5)))
    return [b(lp.MulOp(half, b(lp.AddOp(t, c(1.0)))))]


def test_fused_gelu_and_silu() -> None:
    x = rand_f32((3, 37), 18)
    fn = make_fn([("f32", (3, 37))], _gelu_tanh, fuse=True)
    assert isinstance(fn.body.block.first_op, lpcc.ir.dialect.fused.FusedOp)
    (want,) = interp.run_function(fn, [x])
    for level in RUN:
        (got,) = native(fn, [x], level)
        # tanh within 2 ulp, then two roundings: relative 4 ulp of f32 (plus
        # an absolute term where 1 + tanh cancels).
        assert np.all(np.abs(got - want) <= 2**-21 * np.abs(want) + 2**-22)

    silu = make_fn(
        [("f32", (3, 37))], lambda b, a: [b(lp.MulOp(a, b(lp.SigmoidOp(a))))], fuse=True
    )
    (want,) = interp.run_function(silu, [x])
    for level in RUN:
        (got,) = native(silu, [x], level)
        assert ulps(got, want.astype(np.float64)).max() <= 4


def test_fused_multiple_outputs_broadcast_iota_constants() -> None:
    """Outputs of different shapes, an lp.broadcast adding a leading dim,
    an iota along the middle dim, splat constants (inlined)."""

    def build(b: Body, x: SSAValue, col: SSAValue) -> list[SSAValue]:
        e = b(lp.NegOp(col))  # [4, 1]: an output smaller than the space
        big = b(lp.BroadcastOp(x, (2, 4, 9)))  # [4, 9] -> [2, 4, 9]
        io = b(lp.IotaOp(lpcc.dtype("f32"), (1, 4, 1), 1))
        s = b(lp.AddOp(big, io))
        m = b(lp.MulOp(s, b.const(2.0, "f32", 3)))
        k = b(lp.CmpOp("gt", m, b.const(3.0, "f32", 3)))
        return [e, m, k, b(lp.SubOp(x, col))]

    x = rand_f32((4, 9), 19)
    c = rand_f32((4, 1), 20)
    fn = make_fn([("f32", (4, 9)), ("f32", (4, 1))], build, fuse=True)
    check(fn, [x, c])


def test_fused_dynamic_dim() -> None:
    def build(b: Body, x: SSAValue, w: SSAValue) -> list[SSAValue]:
        y = b(lp.MulOp(x, w), ("s0", 6))
        return [b(lp.ExpOp(y), ("s0", 6)), b(lp.AddOp(y, x), ("s0", 6))]

    fn = make_fn([("f32", ("s0", 6)), ("f32", (1, 6))], build, fuse=True)
    w = rand_f32((1, 6), 21)
    for rows in (1, 5, 700):
        x = rand_f32((rows, 6), rows)
        want = interp.run_function(fn, [x, w])
        for level in RUN:
            got = native(fn, [x, w], level)
            assert ulps(got[0], want[0].astype(np.float64)).max() <= 2
            same(got[1], want[1])


def test_dynamic_last_dim_and_large() -> None:
    """A dynamic last dim; 20000 elements split into rows of BLOCK over threads."""
    fn = make_fn(
        [("f32", (2, "s0")), ("f32", (2, "s0"))],
        lambda b, p, q: [b(lp.SubOp(p, q), (2, "s0"))],
    )
    for n in (1, 3, 10000):
        check(fn, [rand_f32((2, n), n), rand_f32((2, n), n + 1)])


def test_fused_rmsnorm_reduction() -> None:
    """x * rsqrt(mean(x*x) + eps) has two regions: mean(x*x) fuses."""

    def build(b: Body, x: SSAValue) -> list[SSAValue]:
        sq = b(lp.MulOp(x, x))
        return [b(lp.ReduceMeanOp(sq, [2], keepdim=True)), sq]

    x = rand_f32((2, 3, 37), 22)
    fn = make_fn([("f32", (2, 3, 37))], build, fuse=True)
    # a kernel function returns the region's results in op order: sq, mean
    (sq, mean), got_all = interp.run_function(fn, [x]), None
    for level in RUN:
        got_all = native(fn, [x], level)
        same(got_all[0], sq)
        # Sum of n = 37 non-negative terms, reassociated (lanes) vs NumPy's
        # pairwise order: each is within (n-1) u of the exact sum (u = 2^-24).
        assert np.all(np.abs(got_all[1] - mean) <= 2 * 36 * 2**-24 * mean)
    assert got_all is not None


def _sum_bound(x: np.ndarray, dims: tuple[int, ...], n: int) -> np.ndarray:
    """Both sums are within (n - 1) u sum|x| of the exact one (u = 2^-24)."""
    return 2 * (n - 1) * 2**-24 * np.sum(np.abs(x.astype(np.float64)), axis=dims)


def test_fused_column_reduction_with_elementwise_output() -> None:
    """Reduced dims first: vectors of columns walk down the rows; the
    elementwise value is stored at every point on the way."""

    def build(b: Body, x: SSAValue, s: SSAValue) -> list[SSAValue]:
        y = b(lp.MulOp(x, s))
        return [y, b(lp.ReduceMaxOp(y, [0])), b(lp.ReduceSumOp(y, [0], keepdim=True))]

    x = rand_f32((33, 70), 30)
    s = rand_f32((1, 70), 31)
    fn = make_fn([("f32", (33, 70)), ("f32", (1, 70))], build, fuse=True)
    want = interp.run_function(fn, [x, s])
    y = want[0].astype(np.float64)
    for level in RUN:
        got = native(fn, [x, s], level)
        same(got[0], want[0])
        same(got[1], want[1])
        assert np.all(np.abs(got[2] - want[2]) <= _sum_bound(y, (0,), 33))


# -- reductions ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "dims", "keep"),
    [
        ((3, 37), (1,), True),
        ((37, 3), (0,), False),  # column reduction
        ((2, 5, 17), (1,), False),  # middle dim: columns
        ((2, 5, 17), (0, 2), True),  # R K R: rows over the middle
        ((4, 1, 33), (1, 2), False),
        ((129,), (0,), False),
    ],
)
def test_reduce_float(
    shape: tuple[int, ...], dims: tuple[int, ...], keep: bool
) -> None:
    """sum, mean, max, min of one input over the same dims: one fused kernel
    (the first shape also as four standalone kernels)."""
    x = rand_f32(shape, 23)
    n = math.prod(shape[d] for d in dims)
    reds = (lp.ReduceSumOp, lp.ReduceMeanOp, lp.ReduceMaxOp, lp.ReduceMinOp)
    fns = [
        make_fn(
            [("f32", shape)],
            lambda b, a: [b(c(a, dims, keep)) for c in reds],
            fuse=True,
        )
    ]
    if shape == (3, 37):
        fns += [
            make_fn([("f32", shape)], lambda b, a, c=c: [b(c(a, dims, keep))])
            for c in reds
        ]
    for fn in fns:
        want = interp.run_function(fn, [x])
        kinds = reds if len(want) == 4 else [type(fn.body.block.first_op)]
        for level in RUN:
            got = native(fn, [x], level)
            for cls, g, w in zip(kinds, got, want, strict=True):
                assert g.shape == w.shape
                if cls in (lp.ReduceMaxOp, lp.ReduceMinOp):
                    same(g, w)
                    continue
                bound = _sum_bound(x, dims, n).reshape(w.shape)
                if cls is lp.ReduceMeanOp:
                    bound = bound / n + np.spacing(np.abs(w))
                assert np.all(np.abs(g - w) <= bound), cls.name


def test_reduce_nan_and_inf() -> None:
    x = rand_f32((3, 20), 24)
    x[0, 5] = np.nan
    x[1, 7] = np.inf
    x[2, 19] = -np.inf
    reds = (lp.ReduceMaxOp, lp.ReduceMinOp, lp.ReduceSumOp)
    check(
        make_fn(
            [("f32", (3, 20))], lambda b, a: [b(c(a, [1])) for c in reds], fuse=True
        ),
        [x],
    )


@pytest.mark.parametrize("dt", ["int8", "int4", "int32", "int64", "uint8", "uint1"])
def test_reduce_int(dt: str) -> None:
    """Integer sums are exact in int64, then saturate; max/min exact."""
    x = (
        rand_int(dt, (3, 41), 25)
        if dt != "uint1"
        else np.random.default_rng(0).integers(0, 2, (3, 41)).astype(bool)
    )
    reds = (lp.ReduceSumOp, lp.ReduceMaxOp, lp.ReduceMinOp)
    for dims in ((1,), (0,)):
        fn = make_fn(
            [(dt, (3, 41))],
            lambda b, a, dims=dims: [b(c(a, dims, True)) for c in reds],
            fuse=True,
        )
        check(fn, [x])


def test_reduce_dynamic() -> None:
    fn = make_fn([("f32", ("s0", 5))], lambda b, a: [b(lp.ReduceMaxOp(a, [0]))])
    for rows in (1, 9):
        check(fn, [rand_f32((rows, 5), rows)])


# -- softmax, log-softmax, cumsum ------------------------------------------------------


def _softmax_bound(x: np.ndarray, d: int, log: bool) -> Callable[[np.ndarray], float]:
    """Max error vs float64 truth, in f32 ulps of the truth: exp within 1 ulp,
    a sum of n terms within (n-1) u relative, one division or log."""
    n = x.shape[d]
    return lambda _: 4 + 2 * n


@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize(("shape", "dim"), [((3, 37), 1), ((5, 3, 7), 1), ((17, 2), 0)])
def test_softmax(log: bool, shape: tuple[int, ...], dim: int) -> None:
    x = rand_f32(shape, 26)
    cls = lp.LogSoftmaxOp if log else lp.SoftmaxOp
    fn = make_fn([("f32", shape)], lambda b, a: [b(cls(a, dim))])
    xd = x.astype(np.float64)
    s = xd - xd.max(axis=dim, keepdims=True)
    lse = np.log(np.exp(s).sum(axis=dim, keepdims=True))
    truth = s - lse if log else np.exp(s - lse)
    n = shape[dim]
    (want,) = interp.run_function(fn, [x])
    for level in RUN:
        (got,) = native(fn, [x], level)
        if log:  # absolute: log-sum-exp is computed once, |s| is exact
            assert np.max(np.abs(got - truth)) <= (n + 4) * 2**-24 * (
                np.abs(truth).max() + 1
            )
        else:
            assert ulps(got, truth).max() <= 4 + 2 * n
        assert np.max(np.abs(got - want)) <= 1e-5 * (np.abs(want).max() + 1)


def test_softmax_special_rows() -> None:
    """A row of -inf (max not finite: 0/0), a NaN row, a +inf entry."""
    x = rand_f32((4, 9), 27)
    x[0] = -np.inf
    x[1, 3] = np.nan
    x[2, 4] = np.inf
    x[3, :8] = -np.inf  # one finite entry: exactly 1
    for cls in (lp.SoftmaxOp, lp.LogSoftmaxOp):
        fn = make_fn([("f32", (4, 9))], lambda b, a, cls=cls: [b(cls(a, 1))])
        (want,) = interp.run_function(fn, [x])
        for level in RUN:
            (got,) = native(fn, [x], level)
            specials_match(got, want)
            assert got[3, 8] == want[3, 8]


@pytest.mark.parametrize(
    ("dt", "shape", "dim"),
    [
        ("f32", (3, 37), 1),
        ("f32", (9, 5), 0),
        ("f16", (2, 3, 40), 2),
        ("int8", (4, 40), 1),
        ("int4", (4, 40), 1),
        ("int32", (7, 3), 0),
        ("int64", (2, 19), 1),
        ("uint1", (3, 10), 1),
    ],
)
def test_cumsum(dt: str, shape: tuple[int, ...], dim: int) -> None:
    """In the interpreter's order: f32 bit for bit; ints saturate per output."""
    if dt in ("f32", "f16"):
        x = lpcc.dtype(dt).to_values(rand_f32(shape, 28))
    elif dt == "uint1":
        x = np.random.default_rng(1).integers(0, 2, shape).astype(bool)
    else:
        x = rand_int(dt, shape, 29)
    check(make_fn([(dt, shape)], lambda b, a: [b(lp.CumsumOp(a, dim))]), [x])


def test_softmax_dynamic() -> None:
    fn = make_fn([("f32", (2, "s0"))], lambda b, a: [b(lp.SoftmaxOp(a, 1), (2, "s0"))])
    for n in (1, 50):
        x = rand_f32((2, n), n)
        (want,) = interp.run_function(fn, [x])
        for level in RUN:
            (got,) = native(fn, [x], level)
            assert np.max(np.abs(got - want)) <= 1e-6


# -- the public helper, generated code, other ISA levels -------------------------------


def test_emit_elementwise_on_vectors() -> None:
    """emit_elementwise applies an op's semantics to values a generator holds
    in vector registers (here 8 lanes loaded by hand)."""
    fn = make_fn([("f32", (8,))], lambda b, a: [b(lp.TanhOp(a))])
    op = fn.body.block.first_op
    assert op is not None and can_emit(op)
    assert not can_emit(lp.ReduceSumOp(fn.body.block.args[0], [0]))
    level = RUN[0]
    kb = KernelBuilder(request_for(fn, level))
    v = kb.load(kb.inp(0), 0, ir.VectorType(F32, 8))
    kb.store(emit_elementwise(kb, op, [v]), kb.out(0), 0)
    lib = jit.jit(kb.finish(), level)
    entry = lib.function(
        "lpcc_kernel", None, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p
    )
    x = np.linspace(-3, 3, 8).astype(np.float32)
    y = np.zeros(8, np.float32)
    argv = np.array([x.ctypes.data, y.ctypes.data], np.int64)
    entry(0, 1, argv.ctypes.data)
    assert ulps(y, np.tanh(x.astype(np.float64))).max() <= 2


def test_generated_code_is_vectorized() -> None:
    """AVX2 code for f32 add and exp loops works on ymm registers and calls
    no libm function; exp uses FMA."""
    for cls in (lp.AddOp, lp.ExpOp):
        n = 2 if cls is lp.AddOp else 1
        fn = make_fn([("f32", (4, 1024))] * n, lambda b, *a, cls=cls: [b(cls(*a))])
        lowered = lower_kernel(fn, "avx2")
        assert lowered is not None
        text = jit.asm(lowered[0].ir, "avx2")
        body = [ln for ln in text.splitlines() if ln.startswith("\t")]
        assert any("ymm" in ln for ln in body)
        assert not any("call" in ln for ln in body)
        if cls is lp.ExpOp:
            assert any("vfmadd" in ln and "ymm" in ln for ln in body)
        else:
            assert any("vaddps" in ln and "ymm" in ln for ln in body)


def test_other_levels_compile() -> None:
    """Levels this host cannot run (AVX-512 here) still compile to object code."""
    fns = [
        make_fn([("f32", (3, 37))], _gelu_tanh, fuse=True),
        make_fn(
            [("int16", (5, 9)), ("int16", (5, 9))],
            lambda b, p, q: [b(lp.PowOp(p, q)), b(lp.DivOp(p, q))],
            fuse=True,
        ),
        make_fn(
            [("f32", (6, 7))], lambda b, a: [b(lp.CastOp(a, lpcc.dtype("f8e4m3fn")))]
        ),
        make_fn([("f32", (6, 7))], lambda b, a: [b(lp.ReduceSumOp(a, [0]))]),
        make_fn([("f32", (6, 7))], lambda b, a: [b(lp.ReduceMaxOp(a, [1]))]),
        make_fn([("f32", (6, 7, 3))], lambda b, a: [b(lp.SoftmaxOp(a, 1))]),
        make_fn([("f32", (6, 7))], lambda b, a: [b(lp.CumsumOp(a, 1))]),
        make_fn(
            [("f32", (6, 7)), ("f32", (6, 7))],
            lambda b, p, q: [b(lp.SinOp(p)), b(lp.PowOp(p, q))],
            fuse=True,
        ),
    ]
    for level in COMPILE_ONLY:
        for fn in fns:
            assert lower_kernel(fn, level) is not None
