"""Native data-movement, index and (de)quantization kernels vs the interpreter.

Every kernel function holds one op; `interp.run_function` is the oracle and
the native result must equal it bit for bit (the ops move values or compute
them in float64 exactly as the interpreter does, then round once). Shapes
are odd on purpose (1, 3, 17, 33), element sizes 1/2/4/8 bytes, dims
dynamic where the op allows. ISA levels this host runs are executed; the
others are compiled to object code only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from lpcc.runtime.kernels import ExecutionError
from xdsl.dialects import func
from xdsl.ir import Operation, SSAValue

import lpcc
from lpcc.codegen.llvm import isa as isa_mod
from lpcc.codegen.llvm import loader
from lpcc.codegen.llvm.lower import kernel_meta, lower_kernel, run_native
from lpcc.codegen.llvm.runner import native_kernel_fn
from lpcc.errors import IRError
from lpcc.ir import interp
from lpcc.ir.dialect import ops as lp
from lpcc.ir.dtypes import dtype
from lpcc.ir.symbolic import Dim
from tests.codegen.helpers import op_fn as make_fn
from tests.codegen.helpers import rand
from tests.codegen.helpers import same_bits as same

pytestmark = pytest.mark.skipif(
    loader.host_arch() not in ("x86_64", "amd64"), reason="x86-64 host only"
)

RUN = [i for i in isa_mod.LEVELS if isa_mod.host_has(i)]
COMPILE_ONLY = [i for i in isa_mod.LEVELS if not isa_mod.host_has(i)]
TYPES = ["f32", "int8", "int16", "int64", "uint1", "uint4"]  # 4, 1, 2, 8, bool, 1


def check(fn: func.FuncOp, inputs: Sequence[np.ndarray]) -> np.ndarray:
    """Native == interpreter on every level this host runs; others compile."""
    (want,) = interp.run_function(fn, inputs)
    for level in RUN:
        got = run_native(fn, inputs, isa=level)
        assert got is not None, f"no native kernel for {level}"
        same(got[0], want)
    for level in COMPILE_ONLY:
        assert lower_kernel(fn, level) is not None
    return want


def note(fn: func.FuncOp) -> str:
    lowered = lower_kernel(fn, RUN[0])
    assert lowered is not None
    return lowered[0].note


# -- iota ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dt", "shape", "dim"),
    [
        ("int64", (3, 17), 1),
        ("int64", (3, 17), 0),
        ("f32", (2, 3, 5), 1),
        ("int32", (33,), 0),
        ("int4", (2, 10), 1),  # 8, 9 saturate to 7
        ("uint1", (4, 3), 0),  # 2, 3 saturate to True
        ("f16", (5, 7), 1),  # exact in f16
    ],
)
def test_iota(dt: str, shape: tuple[int, ...], dim: int) -> None:
    fn = make_fn([], lambda: lp.IotaOp(lpcc.dtype(dt), shape, dim))
    out = check(fn, [])
    if dt == "int4":
        assert out.max() == 7


def test_iota_dynamic_and_rounding() -> None:
    fn = make_fn(
        [("f32", ("s0", 4))],
        lambda x: lp.IotaOp(lpcc.dtype("int64"), [-1, 4], 0),
        out_dims=["s0", 4],
    )
    # the function's result is the iota; x only binds s0
    for n in (1, 5):
        (want,) = interp.run_function(fn, [np.zeros((n, 4), np.float32)])
        for level in RUN:
            (got,) = run_native(fn, [np.zeros((n, 4), np.float32)], isa=level)
            same(got, want)
    # f16 cannot hold every index below 5000: left to the codec (interpreter)
    big = make_fn([], lambda: lp.IotaOp(lpcc.dtype("f16"), [5000], 0))
    assert lower_kernel(big, RUN[0]) is None


# -- permute -------------------------------------------------------------------


def _each_type(cases: list[tuple], full: int = 1) -> list[tuple]:
    """The first `full` cases for every type in TYPES, the rest for f32 (the
    kernels only see element sizes; this keeps the file fast)."""
    out = []
    for k, case in enumerate(cases):
        for dt in TYPES if k < full else ("f32",):
            out.append((dt, *case))
    return out


@pytest.mark.parametrize(
    ("dt", "shape", "perm"),
    [
        *_each_type(
            [
                ((17, 33), (1, 0)),  # transpose: whole tiles (T <= 16) and edges
                ((2, 3, 17, 5), (3, 1, 0, 2)),
                ((1, 4, 4, 8), (0, 2, 1, 3)),  # attention heads
                ((4, 1, 6), (2, 1, 0)),
                ((3, 5, 7), (0, 1, 2)),  # identity: one flat copy
                ((70, 3, 40), (2, 1, 0)),  # batch dim between the moved ones
            ]
        ),
        ("int8", (70, 3, 40), (2, 1, 0)),
        ("int64", (2, 3, 17, 5), (3, 1, 0, 2)),
    ],
)
def test_permute(dt: str, shape: tuple[int, ...], perm: tuple[int, ...]) -> None:
    fn = make_fn([(dt, shape)], lambda x: lp.PermuteOp(x, perm))
    check(fn, [rand(dt, shape)])


def test_permute_paths() -> None:
    heads = make_fn([("f32", (1, 4, 4, 8))], lambda x: lp.PermuteOp(x, (0, 2, 1, 3)))
    assert "memcpy" in note(heads)
    t = make_fn([("f32", (17, 33))], lambda x: lp.PermuteOp(x, (1, 0)))
    assert "transpose" in note(t)


def test_permute_large_splits_rows() -> None:
    """Big enough for both pool threads: the row split must not drop rows."""
    x = rand("f32", (64, 33, 40))
    for perm in ((1, 0, 2), (2, 0, 1)):
        check(make_fn([("f32", x.shape)], lambda v, p=perm: lp.PermuteOp(v, p)), [x])


@pytest.mark.parametrize("perm", [(1, 0, 2), (2, 0, 1), (0, 2, 1)])
def test_permute_dynamic(perm: tuple[int, ...]) -> None:
    dims: list[Dim] = ["s0", 8, 3]
    fn = make_fn(
        [("f32", dims)],
        lambda x: lp.PermuteOp(x, perm),
        out_dims=[dims[p] for p in perm],
    )
    for n in (1, 13):
        check(fn, [rand("f32", (n, 8, 3), seed=n)])


# -- broadcast -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("dt", "src", "dst"),
    _each_type(
        [
            ((3, 1, 5), (2, 3, 4, 5)),
            ((1, 8), (5, 8)),
            ((5, 1), (5, 8)),
            ((8,), (3, 4, 8)),
            ((1,), (7,)),
            ((3, 17), (3, 17)),
        ]
    ),
)
def test_broadcast(dt: str, src: tuple[int, ...], dst: tuple[int, ...]) -> None:
    fn = make_fn([(dt, src)], lambda x: lp.BroadcastOp(x, dst))
    check(fn, [rand(dt, src)])


def _run_rank0(fn: func.FuncOp, inputs: list[np.ndarray], out: np.ndarray) -> None:
    """Run through the VM's entry (`runner`): `run_native` turns 0-d inputs
    into 1-d ones (np.ascontiguousarray) and then rejects them."""
    for level in RUN:
        lowered = lower_kernel(fn, level)
        assert lowered is not None
        nk, obj = lowered
        run = native_kernel_fn(obj.object_code, kernel_meta(nk, obj, len(inputs), 1))
        got = np.zeros_like(out)
        run(inputs, [got], {})
        same(got, out)


def test_broadcast_scalar_and_rank0_quantize() -> None:
    fn = make_fn([("int16", ())], lambda x: lp.BroadcastOp(x, (3, 5)))
    x = np.array(-7, np.int16)
    _run_rank0(fn, [x], interp.run_function(fn, [x])[0])
    fn = make_fn(
        [("f32", ()), ("f32", ())],
        lambda a, b: lp.QuantizeOp(a, b, None, (), lpcc.dtype("int8")),
    )
    xs = [np.array(2.5, np.float32), np.array(0.5, np.float32)]
    (want,) = interp.run_function(fn, xs)
    assert want.shape == () and want == 5
    _run_rank0(fn, xs, want)


def test_broadcast_dynamic() -> None:
    fn = make_fn(
        [("f32", ("s0", 1))],
        lambda x: lp.BroadcastOp(x, [-1, 6]),
        out_dims=["s0", 6],
    )
    for n in (1, 9):
        check(fn, [rand("f32", (n, 1), seed=n)])
    # a dynamic size that is 1 on some calls and broadcasts then
    fn = make_fn(
        [("int64", ("s0", 4))],
        lambda x: lp.BroadcastOp(x, [-1, 4]),
        out_dims=["Max(s0, 3)", 4],
    )
    for n in (1, 3, 5):
        out = check(fn, [rand("int64", (n, 4), seed=n)])
        assert out.shape == (max(n, 3), 4)


# -- slice ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dt", "shape", "offsets", "sizes", "strides"),
    _each_type(
        [
            ((10, 8), (1, 2), (4, 3), (2, 2)),
            ((17,), (1,), (6,), (3,)),
            ((6, 33), (2, 0), (3, 33), (1, 1)),  # contiguous: one flat copy
            ((4, 6, 5), (1, 1, 0), (3, 2, 5), (1, 3, 1)),
            ((1, 4, 4, 8), (0, 0, 0, 4), (1, 4, 4, 4), (1, 1, 1, 1)),  # rotary half
        ]
    ),
)
def test_slice(dt: str, shape, offsets, sizes, strides) -> None:  # type: ignore[no-untyped-def]
    fn = make_fn([(dt, shape)], lambda x: lp.SliceOp(x, offsets, sizes, strides))
    check(fn, [rand(dt, shape)])


def test_slice_dynamic() -> None:
    fn = make_fn(
        [("f32", ("s0", 8))],
        lambda x: lp.SliceOp(x, (1, 2), (-1, 3), (1, 2)),
        out_dims=["s0 - 1", 3],
    )
    for n in (1, 2, 17):
        check(fn, [rand("f32", (n, 8), seed=n)])


def test_slice_dynamic_overrun_writes_zeros() -> None:
    """The interpreter rejects a slice past the end; the kernel cannot raise,
    so it must not read past the input either: it writes zeros."""
    fn = make_fn(
        [("f32", ("s0", 8))],
        lambda x: lp.SliceOp(x, (1, 0), (-1, 8), (1, 1)),
        out_dims=["s0", 8],
    )
    x = rand("f32", (3, 8)) + 1
    with pytest.raises(IRError, match="reads index 3"):
        interp.run_function(fn, [x])
    for level in RUN:
        (got,) = run_native(fn, [x], isa=level)
        same(got, np.zeros((3, 8), np.float32))


# -- concat --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dt", "shapes", "dim"),
    _each_type(
        [
            (((3, 2, 5), (3, 1, 5), (3, 4, 5), (3, 3, 5)), 1),
            (((2, 3), (2, 5)), 1),
            (((1, 7), (3, 7), (2, 7)), 0),
            (((1, 4, 4, 4), (1, 4, 4, 4)), 3),  # rotary halves
        ]
    ),
)
def test_concat(dt: str, shapes, dim: int) -> None:  # type: ignore[no-untyped-def]
    fn = make_fn([(dt, s) for s in shapes], lambda *xs: lp.ConcatOp(list(xs), dim))
    check(fn, [rand(dt, s, seed=i) for i, s in enumerate(shapes)])


def test_concat_same_input_twice_and_large() -> None:
    # the kernel function has one argument for both operands
    fn = make_fn([("f32", (3, 5))], lambda x: lp.ConcatOp([x, x], 1))
    check(fn, [rand("f32", (3, 5))])
    shapes = ((300, 70), (300, 90))
    fn = make_fn([("f32", s) for s in shapes], lambda a, b: lp.ConcatOp([a, b], 1))
    check(fn, [rand("f32", s, seed=i) for i, s in enumerate(shapes)])


def test_concat_dynamic() -> None:
    fn = make_fn(
        [("f32", ("s0", 4)), ("f32", ("s1", 4))],
        lambda a, b: lp.ConcatOp([a, b], 0),
        out_dims=["s0 + s1", 4],
    )
    for n, m in ((1, 2), (0, 3), (17, 5)):
        check(fn, [rand("f32", (n, 4), seed=n), rand("f32", (m, 4), seed=m + 1)])
    fn = make_fn(
        [("int8", ("s0", 3)), ("int8", ("s0", 5))],
        lambda a, b: lp.ConcatOp([a, b], 1),
        out_dims=["s0", 8],
    )
    for n in (1, 6):
        check(fn, [rand("int8", (n, 3), seed=n), rand("int8", (n, 5), seed=2)])


# -- take ----------------------------------------------------------------------


@pytest.mark.parametrize("dt", TYPES)
def test_take_embedding(dt: str) -> None:
    ids = np.array([[3, 0, 49, 7, 7, -1, 12]], np.int64)
    fn = make_fn(
        [(dt, (50, 16)), ("int64", ids.shape)], lambda x, i: lp.TakeOp(x, i, 0)
    )
    check(fn, [rand(dt, (50, 16)), ids])


@pytest.mark.parametrize(("idt", "dim"), [("int32", 1), ("int8", 2), ("uint8", 0)])
def test_take_dims(idt: str, dim: int) -> None:
    xshape = (3, 10, 4)
    n = xshape[dim]
    rng = np.random.default_rng(1)
    lo = 0 if idt.startswith("u") else -n
    idx = rng.integers(lo, n, size=(2, 3)).astype(lpcc.dtype(idt).value_dtype)
    fn = make_fn([("f32", xshape), (idt, idx.shape)], lambda x, i: lp.TakeOp(x, i, dim))
    check(fn, [rand("f32", xshape), idx])


def test_take_dynamic() -> None:
    fn = make_fn(
        [("f32", (20, 16)), ("int64", (1, "s0"))],
        lambda x, i: lp.TakeOp(x, i, 0),
        out_dims=[1, "s0", 16],
    )
    x = rand("f32", (20, 16))
    for n in (1, 9):
        check(fn, [x, np.arange(n, dtype=np.int64).reshape(1, n) * 2 % 20])
    fn = make_fn(
        [("f32", ("s0", 6)), ("int64", (5,))],
        lambda x, i: lp.TakeOp(x, i, 0),
        out_dims=[5, 6],
    )
    check(fn, [rand("f32", (4, 6)), np.array([0, 3, -4, 2, 1], np.int64)])


@pytest.mark.parametrize(
    ("idt", "idx"),
    [
        ("int64", [7, 0, 2, 1]),
        ("int64", [0, -9, 2, 1]),  # below -n
        ("int64", [0, 1, 2, 1 << 40]),
        ("int8", [0, 1, 5, 4]),  # == n
        ("uint8", [0, 1, 200, 4]),
    ],
)
def test_take_out_of_range_raises_like_the_interpreter(idt: str, idx: list) -> None:
    """The status slot: the kernel flags the index (clamping meanwhile, so it
    never reads outside x) and the caller raises, as the interpreter does."""
    fn = make_fn([("f32", (5, 3)), (idt, (4,))], lambda x, i: lp.TakeOp(x, i, 0))
    x = rand("f32", (5, 3))
    ind = np.array(idx, dtype(idt).value_dtype)
    with pytest.raises(IRError, match="out of range"):
        interp.run_function(fn, [x, ind])
    for level in RUN:
        with pytest.raises(ExecutionError, match=r"lp.take \(dim 0\): an index is out"):
            run_native(fn, [x, ind], isa=level)
    ok = (
        np.array([4, -5, 0, 2], dtype(idt).value_dtype)
        if idt != "uint8"
        else (np.array([4, 0, 0, 2], np.uint8))
    )
    for level in RUN:  # in range, including -n: no error, the status stays 0
        (got,) = run_native(fn, [x, ok], isa=level)
        same(got, x[ok.astype(np.int64)])


def test_gather_out_of_range_raises() -> None:
    fn = make_fn(
        [("f32", (3, 5)), ("int64", (3, 2))], lambda x, i: lp.GatherOp(x, i, 1)
    )
    x = rand("f32", (3, 5))
    idx = np.array([[0, 1], [2, 5], [4, 3]], np.int64)
    for level in RUN:
        with pytest.raises(ExecutionError, match=r"lp.gather \(dim 1\)"):
            run_native(fn, [x, idx], isa=level)


# -- gather --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dt", "xshape", "ishape", "dim"),
    _each_type(
        [
            ((2, 5, 4), (2, 6, 4), 1),
            ((3, 5), (3, 4), 1),
            ((4, 3), (2, 3), 0),
            ((1, 5), (3, 4), 1),  # a size-1 input dim broadcasts (NumPy)
        ]
    ),
)
def test_gather(dt: str, xshape, ishape, dim: int) -> None:  # type: ignore[no-untyped-def]
    n = xshape[dim]
    idx = np.random.default_rng(2).integers(-n, n, size=ishape).astype(np.int64)
    fn = make_fn([(dt, xshape), ("int64", ishape)], lambda x, i: lp.GatherOp(x, i, dim))
    check(fn, [rand(dt, xshape), idx])


def test_gather_dynamic_and_unhandled() -> None:
    fn = make_fn(
        [("f32", ("s0", 5)), ("int32", ("s0", 4))],
        lambda x, i: lp.GatherOp(x, i, 1),
        out_dims=["s0", 4],
    )
    for n in (1, 7):
        idx = np.random.default_rng(n).integers(0, 5, size=(n, 4)).astype(np.int32)
        check(fn, [rand("f32", (n, 5)), idx])
    # sizes that differ off `dim`: NumPy's broadcasting rules; interpreter only
    bad = make_fn(
        [("f32", (3, 5)), ("int64", (2, 4))], lambda x, i: lp.GatherOp(x, i, 1)
    )
    assert lower_kernel(bad, RUN[0]) is None


# -- quantize / dequantize -----------------------------------------------------


def _scales(shape: Sequence[int], dt: str = "f16", seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    s = rng.uniform(0.01, 0.5, size=tuple(shape))
    return lpcc.dtype(dt).to_values(s)


_TARGETS = ["int4", "uint4", "int8", "uint8", "int16", "int32", "uint1", "f32"]


@pytest.mark.parametrize(
    ("to", "shape", "block"),
    [(to, (3, 20), (1, 8)) for to in _TARGETS]
    + [
        ("int4", (5, 7), (1, 7)),  # per channel
        ("f32", (2, 3, 9), (2, 3, 9)),  # per tensor
        ("int8", (300, 40), (2, 8)),  # big enough for both threads
    ],
)
def test_quantize(to: str, shape: tuple[int, ...], block: tuple[int, ...]) -> None:
    sshape = tuple(-(-n // b) for n, b in zip(shape, block, strict=True))
    x = rand("f32", shape) / 10
    x.flat[:4] = [np.nan, np.inf, -np.inf, 0.0]
    s = _scales(sshape)
    fn = make_fn(
        [("f32", shape), ("f16", sshape)],
        lambda a, b: lp.QuantizeOp(a, b, None, block, lpcc.dtype(to)),
    )
    check(fn, [x, s])


def test_quantize_ties_zero_points_and_mx() -> None:
    # x / s lands exactly on .5: rounds half to even (0.5->0, 1.5->2, -2.5->-2)
    x = np.array([[0.5, 1.5, 2.5, -2.5, -0.5, 3.5, 1e30, -1e30]], np.float32)
    s = np.ones((1, 1), np.float32)
    fn = make_fn(
        [("f32", x.shape), ("f32", (1, 1))],
        lambda a, b: lp.QuantizeOp(a, b, None, (1, 8), lpcc.dtype("int8")),
    )
    out = check(fn, [x, s])
    assert out.tolist() == [[0, 2, 2, -2, 0, 4, 127, -128]]
    # asymmetric uint4 with uint4 zero points, short last group
    x = rand("f32", (4, 20)) / 20
    fn = make_fn(
        [("f32", (4, 20)), ("f16", (4, 3)), ("uint4", (4, 3))],
        lambda a, b, z: lp.QuantizeOp(a, b, z, (1, 8), lpcc.dtype("uint4")),
    )
    check(fn, [x, _scales((4, 3)), rand("uint4", (4, 3))])
    # MX: e8m0 scales, groups of 32
    fn = make_fn(
        [("f32", (2, 64)), ("e8m0", (2, 2))],
        lambda a, b: lp.QuantizeOp(a, b, None, (1, 32), lpcc.dtype("int8")),
    )
    check(fn, [rand("f32", (2, 64)), np.array([[0.25, 1.0], [2.0, 0.5]], np.float32)])
    # narrow float targets need the codec: not native
    fn = make_fn(
        [("f32", (2, 8)), ("f32", (2, 1))],
        lambda a, b: lp.QuantizeOp(a, b, None, (1, 8), lpcc.dtype("f8e4m3fn")),
    )
    assert lower_kernel(fn, RUN[0]) is None


def test_quantize_dynamic_rows() -> None:
    fn = make_fn(
        [("f32", ("s0", 16)), ("f32", ("s0", 2))],
        lambda a, b: lp.QuantizeOp(a, b, None, (1, 8), lpcc.dtype("int4")),
        out_dims=["s0", 16],
    )
    for n in (1, 5):
        check(fn, [rand("f32", (n, 16), seed=n) / 50, _scales((n, 2), "f32")])


@pytest.mark.parametrize(
    ("src", "zero", "shape", "block"),
    [
        (src, zero, (3, 20), (1, 8))
        for src, zero in [
            ("int4", None),
            ("uint4", "uint4"),
            ("int8", "int8"),
            ("uint1", None),
            ("int16", None),
            ("f4e2m1", None),
            ("f8e4m3fn", "f32"),
        ]
    ]
    + [("uint8", "uint8", (33,), (33,)), ("int4", None, (300, 40), (2, 8))],
)
def test_dequantize(src: str, zero: str | None, shape, block) -> None:  # type: ignore[no-untyped-def]
    sshape = tuple(-(-n // b) for n, b in zip(shape, block, strict=True))
    args = [(src, shape), ("f16", sshape)] + ([(zero, sshape)] if zero else [])

    def build(q: SSAValue, s: SSAValue, z: SSAValue | None = None) -> Operation:
        return lp.DequantizeOp(q, s, z, block, lpcc.dtype("f32"))

    inputs = [rand(src, shape), _scales(sshape)]
    if zero:
        inputs.append(rand(zero, sshape, seed=5) if zero != "f32" else _scales(sshape))
    check(make_fn(args, build), inputs)


def test_dequantize_mx_dynamic_and_unhandled() -> None:
    fn = make_fn(
        [("f4e2m1", ("s0", 64)), ("e8m0", ("s0", 2))],
        lambda q, s: lp.DequantizeOp(q, s, None, (1, 32), lpcc.dtype("f32")),
        out_dims=["s0", 64],
    )
    for n in (1, 3):
        s = lpcc.dtype("e8m0").values(
            np.random.default_rng(n).integers(110, 140, size=(n, 2)).astype(np.uint8)
        )
        check(fn, [rand("f4e2m1", (n, 64), seed=n), s])
    # f16 results round with the codec: interpreter
    fn = make_fn(
        [("int4", (2, 8)), ("f32", (2, 1))],
        lambda q, s: lp.DequantizeOp(q, s, None, (1, 8), lpcc.dtype("f16")),
    )
    assert lower_kernel(fn, RUN[0]) is None
