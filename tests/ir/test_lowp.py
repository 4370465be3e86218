"""The low-precision ops: text round trip, verifier errors, and semantics.

References are independent of the interpreter: float64 NumPy sums written
from the op docstrings, hand-derived tables (notes/lut_gemm.md 1.1, 2.2, 4)
and ml_dtypes for float weight values.
"""

from __future__ import annotations

import itertools

import ml_dtypes
import numpy as np
import pytest
from xdsl.dialects import func
from xdsl.dialects.builtin import (
    ArrayAttr,
    DictionaryAttr,
    FunctionType,
    ModuleOp,
    StringAttr,
)
from xdsl.ir import Block, Region, SSAValue

from lpcc.errors import IRError
from lpcc.ir import interp
from lpcc.ir.dialect import lowp, parse_module, print_module, tensor_type
from lpcc.ir.dialect import ops as lp
from lpcc.ir.dtypes import dtype

F32 = dtype("f32")


def run(build, inputs: list[np.ndarray], dyn: bool = False) -> list[np.ndarray]:
    """Build a function from `build(args) -> [ops]` (last op's results returned)."""
    types = [tensor_type(F32, (-1, *x.shape[1:]) if dyn else x.shape) for x in inputs]
    block = Block(arg_types=types)
    attrs = None
    if dyn:  # the builders read lp.dims of the arguments: attach them first
        attrs = ArrayAttr(
            [
                DictionaryAttr(
                    {"lp.dims": StringAttr(",".join(["s0", *map(str, x.shape[1:])]))}
                )
                for x in inputs
            ]
        )
    fn = func.FuncOp("main", (types, []), Region(block), arg_attrs=attrs)
    ops = build(*block.args)
    block.add_ops(ops)
    outs = [o.results[0] for o in ops if getattr(o, "_ret", False)] or [
        ops[-1].results[0]
    ]
    block.add_op(func.ReturnOp(*outs))
    fn.function_type = FunctionType.from_lists(types, [v.type for v in outs])
    module = ModuleOp([fn])
    text = print_module(module)
    again = parse_module(text)  # every case also round-trips through text
    assert print_module(again) == text
    return interp.run_module(again, inputs)


def const(values: np.ndarray, name: str) -> lp.ConstantOp:
    dt = dtype(name)
    return lp.ConstantOp.from_codes(dt.encode(np.asarray(values)), dt)


def ret(op):
    op._ret = True
    return op


# -- the worked examples of the notes ----------------------------------------------


X4 = np.array([[1, 2, 3, 4]], np.float32)
T_NOTES = [-10, -8, -6, -4, -4, -2, 0, 2, -2, 0, 2, 4, 4, 6, 8, 10]


def test_tmac_worked_example():
    """x = [1,2,3,4], q = [3,0,2,1] (uint2, read as q - 2): y = -7 (notes 1.1)."""

    def build(x: SSAValue):
        w = const([[3, 0, 2, 1]], "uint2")
        planes = ret(lowp.BitplanesOp(w.result, 4))
        table = ret(lowp.LutPrecomputeOp(x, None, 4))
        s = lowp.GroupSumOp(x, 4)
        acc = ret(
            lowp.LutAccumulateOp(table.result, planes.result, s.result, None, 4, True)
        )
        return [w, planes, table, s, acc]

    planes, table, y = run(build, [X4])
    assert planes.reshape(-1).tolist() == [9, 5]
    assert table.reshape(-1).tolist() == T_NOTES
    assert y.reshape(-1).tolist() == [-7.0]


def test_half_table_of_the_notes():
    """H = T[8..15] = [-2,0,2,4,4,6,8,10] and T[5] = -H[2] = -2 (notes 2.2)."""

    def build(x):
        return [lowp.LutPrecomputeOp(x, None, 4, half=True)]

    (h,) = run(build, [X4])
    assert h.reshape(-1).tolist() == [-2, 0, 2, 4, 4, 6, 8, 10]
    full = np.array(T_NOTES, np.float32)
    idx = np.arange(16)[:, None]  # 16 rows n, one group j
    assert interp.lut_lookup(h[0], idx, 4).reshape(-1).tolist() == T_NOTES
    assert interp.lut_lookup(full[None], idx, 4).reshape(-1).tolist() == T_NOTES


def test_mixpe_worked_example():
    """K = 4, G = 2: q = [3,1,0,2], z = [2,1], s = [0.5,0.25] -> y = -0.25 (notes 4)."""

    def build(x):
        w = const([[3, 1, 0, 2]], "uint2")
        s = const([[0.5, 0.25]], "f16")
        z = const([[2, 1]], "uint2")
        p = lowp.GroupMatmulOp(x, w.result, 2)
        sums = lowp.GroupSumOp(x, 2)
        y = lowp.GroupDequantReduceOp(p.result, s.result, z.result, sums.result)
        return [w, s, z, p, sums, y]

    (y,) = run(build, [X4])
    assert y.tolist() == [[-0.25]]


# -- semantics against float64 references ---------------------------------------------


WEIGHTS = ["int2", "uint3", "int4", "uint1", "int8", "f4e2m1", "f8e4m3fn"]


def weight_values(name: str, shape, rng) -> np.ndarray:
    dt = dtype(name)
    if name.startswith("f"):
        ml = {"f4e2m1": ml_dtypes.float4_e2m1fn, "f8e4m3fn": ml_dtypes.float8_e4m3fn}
        v = rng.normal(size=shape).astype(ml[name]).astype(np.float64)
        return np.clip(v, -6, 6)
    return rng.integers(dt.min, dt.max + 1, size=shape)


@pytest.mark.parametrize("wname", WEIGHTS)
@pytest.mark.parametrize("group", [4, 8])
def test_group_matmul_and_sum(wname, group):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 3, 16)).astype(np.float32)
    w = weight_values(wname, (5, 16), rng)

    def build(xv):
        c = const(w, wname)
        return [
            c,
            ret(lowp.GroupMatmulOp(xv, c.result, group)),
            ret(lowp.GroupSumOp(xv, group)),
        ]

    p, s = run(build, [x])
    xg = x.astype(np.float64).reshape(2, 3, 16 // group, group)
    wg = w.astype(np.float64).reshape(5, 16 // group, group)
    want = np.einsum("bmgk,ngk->bmng", xg, wg)
    np.testing.assert_allclose(p, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(s, xg.sum(-1), rtol=1e-6, atol=1e-6)
    assert p.dtype == np.float32


def test_a_short_last_group():
    """K = 20, G = 8: groups [0, 8), [8, 16), [16, 20) (as quantize's scales)."""
    rng = np.random.default_rng(11)
    x = rng.normal(size=(2, 20)).astype(np.float32)
    w = rng.integers(-4, 4, size=(3, 20))

    def build(xv):
        c = const(w, "int3")
        return [
            c,
            ret(lowp.GroupMatmulOp(xv, c.result, 8)),
            ret(lowp.GroupSumOp(xv, 8)),
        ]

    p, s = run(build, [x])
    assert p.shape == (2, 3, 3) and s.shape == (2, 3)
    x64 = x.astype(np.float64)
    for g, (lo, hi) in enumerate([(0, 8), (8, 16), (16, 20)]):
        np.testing.assert_allclose(p[..., g], x64[:, lo:hi] @ w[:, lo:hi].T, atol=1e-5)
        np.testing.assert_allclose(s[:, g], x64[:, lo:hi].sum(-1), atol=1e-5)


def test_group_matmul_int8_activations_is_exact():
    rng = np.random.default_rng(2)
    xq = rng.integers(-127, 128, size=(3, 64))
    w = rng.integers(-8, 8, size=(4, 64))
    block = Block(arg_types=[tensor_type(dtype("int8"), (3, 64))])
    c = const(w, "int4")
    p = lowp.GroupMatmulOp(block.args[0], c.result, 32)
    s = lowp.GroupSumOp(block.args[0], 32)
    block.add_ops([c, p, s, func.ReturnOp(p.result, s.result)])
    fn = func.FuncOp(
        "main", ([block.args[0].type], [p.result.type, s.result.type]), Region(block)
    )
    pv, sv = interp.run_module(ModuleOp([fn]), [xq.astype(np.int8)])
    assert pv.dtype == np.int32 and sv.dtype == np.int32
    want = np.einsum("mgk,ngk->mng", xq.reshape(3, 2, 32), w.reshape(4, 2, 32))
    assert np.array_equal(pv, want)
    assert np.array_equal(sv, xq.reshape(3, 2, 32).sum(-1))


@pytest.mark.parametrize("zero", [False, True])
@pytest.mark.parametrize("act", [False, True])
def test_group_dequant_reduce(zero, act):
    rng = np.random.default_rng(3)
    p = rng.normal(size=(2, 3, 4)).astype(np.float32)  # [M, N, Gn]
    s = rng.uniform(0.1, 1, size=(3, 4))
    z = rng.integers(0, 8, size=(3, 4))
    sums = rng.normal(size=(2, 4)).astype(np.float32)
    a = rng.uniform(0.1, 1, size=(2, 4)).astype(np.float32)
    inputs = [p, sums, a]

    def build(pv, sv, av):
        sc, zc = const(s, "f32"), const(z, "uint3")
        y = lowp.GroupDequantReduceOp(
            pv,
            sc.result,
            zc.result if zero else None,
            sv if zero else None,
            av if act else None,
        )
        return [sc, zc, y]

    (y,) = run(build, inputs)
    want = np.zeros((2, 3))
    for m, n, g in itertools.product(range(2), range(3), range(4)):
        term = float(p[m, n, g]) - (z[n, g] * float(sums[m, g]) if zero else 0)
        want[m, n] += float(np.float32(s[n, g])) * (float(a[m, g]) if act else 1) * term
    np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("wname", ["uint1", "int2", "uint3", "int4", "int5", "uint8"])
def test_bitplanes_rebuild_the_codes(wname):
    dt = dtype(wname)
    rng = np.random.default_rng(4)
    w = rng.integers(dt.min, dt.max + 1, size=(3, 16))

    def build(_x):
        c = const(w, wname)
        return [c, lowp.BitplanesOp(c.result, 4)]

    (planes,) = run(build, [X4])
    assert planes.shape == (dt.bits, 3, 4)
    u = np.zeros((3, 16), np.int64)
    for b, n, j, t in itertools.product(range(dt.bits), range(3), range(4), range(4)):
        u[n, 4 * j + t] += ((int(planes[b, n, j]) >> t) & 1) << b
    assert np.array_equal(u, w - dt.min)


def table_reference(x: np.ndarray, g: int) -> np.ndarray:
    """T[..., j, i] = sum_t (2 bit_t(i) - 1) x[g j + t], by loops in float64."""
    xg = x.astype(np.float64).reshape(*x.shape[:-1], -1, g)
    out = np.zeros((*xg.shape[:-1], 2**g))
    for i in range(2**g):
        for t in range(g):
            out[..., i] += (2 * ((i >> t) & 1) - 1) * xg[..., t]
    return out


@pytest.mark.parametrize("g", [2, 4, 5])
def test_lut_precompute_float(g):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 20 * g // 2)).astype(np.float32)
    x = x[:, : (x.shape[1] // g) * g].copy()

    def build(xv):
        return [
            ret(lowp.LutPrecomputeOp(xv, None, g)),
            ret(lowp.LutPrecomputeOp(xv, None, g, half=True)),
        ]

    full, half = run(build, [x])
    np.testing.assert_allclose(full, table_reference(x, g), rtol=1e-6, atol=1e-6)
    assert np.array_equal(half, full[..., 2 ** (g - 1) :])
    # The table is odd, exactly: T[~i] == -T[i].
    assert np.array_equal(full[..., ::-1], -full)


def test_lut_scale_and_int8_table():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(2, 64)).astype(np.float32)
    x[1, :32] = 0  # an all-zero act group: scale 0, table 0

    def build(xv):
        ls = ret(lowp.LutScaleOp(xv, 4, 32))
        return [ls, ret(lowp.LutPrecomputeOp(xv, ls.result, 4))]

    ls, tq = run(build, [x])
    sums = np.abs(x.astype(np.float64)).reshape(2, 2, 8, 4).sum(-1).max(-1)
    np.testing.assert_allclose(ls, sums / 127, rtol=1e-6)
    assert tq.dtype == np.int8
    t = table_reference(x, 4).reshape(2, 2, 8, 16)
    with np.errstate(invalid="ignore", divide="ignore"):
        want = np.where(ls[..., None, None] > 0, np.rint(t / ls[..., None, None]), 0)
    got = tq.reshape(2, 2, 8, 16).astype(np.float64)
    assert np.abs(got - want).max() <= 1  # rounding at a float32 tie
    assert np.abs(tq).max() <= 127 and not tq[1, :8].any()


@pytest.mark.parametrize("wname", ["uint1", "int2", "uint2", "int3", "int4", "uint8"])
@pytest.mark.parametrize("half", [False, True])
def test_lut_accumulate_equals_group_matmul(wname, half):
    """With f32 tables the lookups give group_matmul's P (K = 64 sums of f32)."""
    dt = dtype(wname)
    rng = np.random.default_rng(7)
    x = rng.normal(size=(3, 64)).astype(np.float32)
    w = rng.integers(dt.min, dt.max + 1, size=(5, 64))

    def build(xv):
        c = const(w, wname)
        planes = lowp.BitplanesOp(c.result, 4)
        table = lowp.LutPrecomputeOp(xv, None, 4, half=half)
        s = lowp.GroupSumOp(xv, 16)
        acc = lowp.LutAccumulateOp(
            table.result, planes.result, s.result, None, 16, dt.signed and dt.bits > 1
        )
        return [c, planes, table, s, acc]

    (p,) = run(build, [x])
    want = np.einsum(
        "mgk,ngk->mng",
        x.astype(np.float64).reshape(3, 4, 16),
        w.reshape(5, 4, 16).astype(np.float64),
    )
    # Each table entry is a sum of 4 f32 values (error <= 3 eps sum|x|), each of
    # the B planes scales it by 2^b <= 2^(B-1), and the group sum adds 16 more.
    bound = (
        2**dt.bits * 4 * np.finfo(np.float32).eps * np.abs(x).reshape(3, 4, 16).sum(-1)
    )
    assert np.all(np.abs(p - want) <= bound[:, None, :] + 1e-6)


def test_int1_signed_weights():
    """int1 holds {-1, 0}: its unsigned code is w + 1, and `signed` subtracts 1."""
    rng = np.random.default_rng(8)
    x = rng.normal(size=(2, 8)).astype(np.float32)
    w = rng.integers(-1, 1, size=(3, 8))

    def build(xv):
        c = const(w, "int1")
        planes = lowp.BitplanesOp(c.result, 4)
        table = lowp.LutPrecomputeOp(xv, None, 4)
        s = lowp.GroupSumOp(xv, 8)
        return [
            c,
            planes,
            table,
            s,
            lowp.LutAccumulateOp(table.result, planes.result, s.result, None, 8, True),
        ]

    (p,) = run(build, [x])
    np.testing.assert_allclose(
        p[..., 0], x.astype(np.float64) @ w.T, rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("act_group", [8, 16, 64])
def test_lut_accumulate_int8_table_is_exact_on_its_table(act_group):
    """With int8 tables the result is (1/2) sum ls * (integer lookups) + corr * S."""
    rng = np.random.default_rng(9)
    x = rng.normal(size=(2, 64)).astype(np.float32)
    w = rng.integers(0, 8, size=(3, 64))

    def build(xv):
        c = const(w, "uint3")
        planes = ret(lowp.BitplanesOp(c.result, 4))
        ls = ret(lowp.LutScaleOp(xv, 4, act_group))
        table = ret(lowp.LutPrecomputeOp(xv, ls.result, 4, half=True))
        s = ret(lowp.GroupSumOp(xv, 16))
        acc = ret(
            lowp.LutAccumulateOp(table.result, planes.result, s.result, ls.result, 16)
        )
        return [c, planes, ls, table, s, acc]

    planes, ls, table, s, p = run(build, [x])
    want = np.zeros((2, 3, 4))
    for m, n, j in itertools.product(range(2), range(3), range(16)):
        for b in range(3):
            i = int(planes[b, n, j])
            entry = table[m, j, i - 8] if i >= 8 else -table[m, j, 7 - i]
            want[m, n, j // 4] += (
                0.5 * 2**b * float(ls[m, 4 * j // act_group]) * int(entry)
            )
    want += 3.5 * s.astype(np.float64)[:, None, :]
    np.testing.assert_allclose(p, want, rtol=1e-6, atol=1e-6)
    exact = np.einsum(
        "mgk,ngk->mng", x.astype(np.float64).reshape(2, 4, 16), w.reshape(3, 4, 16)
    )
    err = np.abs(p - exact)
    # Each entry is off by <= ls/2, B = 3 planes weigh 1/2 + 1 + 2 per lookup.
    assert np.all(err <= 3.5 * 4 * ls.max() / 2 + 1e-5)


def test_dynamic_rows():
    rng = np.random.default_rng(10)
    w = rng.integers(-2, 2, size=(4, 32))

    def build(xv):
        c = const(w, "int2")
        planes = lowp.BitplanesOp(c.result, 4)
        ls = lowp.LutScaleOp(xv, 4, 32)
        table = lowp.LutPrecomputeOp(xv, ls.result, 4)
        s = lowp.GroupSumOp(xv, 32)
        acc = lowp.LutAccumulateOp(
            table.result, planes.result, s.result, ls.result, 32, True
        )
        sc = const(np.full((4, 1), 0.5), "f16")
        y = lowp.GroupDequantReduceOp(acc.result, sc.result)
        return [c, planes, ls, table, s, acc, sc, y]

    for m in (1, 3):
        x = rng.normal(size=(m, 32)).astype(np.float32)
        (y,) = run(build, [x], dyn=True)
        assert y.shape == (m, 4)
        np.testing.assert_allclose(y, 0.5 * x @ w.T, atol=0.1 * np.abs(x).sum())


# -- verifier errors ---------------------------------------------------------------


def value(shape, name="f32") -> SSAValue:
    return Block(arg_types=[tensor_type(dtype(name), shape)]).args[0]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: lowp.LutPrecomputeOp(value((2, 30))), "multiple of group 4"),
        (
            lambda: lowp.GroupMatmulOp(value((2, 32)), value((4, 16), "int4"), 8),
            "K differs",
        ),
        (
            lambda: lowp.GroupMatmulOp(
                value((2, 32), "int8"), value((4, 32), "f4e2m1"), 8
            ),
            "integer activations",
        ),
        (lambda: lowp.BitplanesOp(value((4, 32), "f4e2m1"), 4), "int/uint of 1..8"),
        (lambda: lowp.LutPrecomputeOp(value((2, 32), "int8")), "float activations"),
        (lambda: lowp.LutScaleOp(value((2, 32)), 4, 6), "multiple of group"),
        (
            lambda: lowp.GroupDequantReduceOp(
                value((2, 3, 4)), value((3, 4)), value((3, 4), "uint4")
            ),
            "needs the group sums",
        ),
        (
            lambda: lowp.GroupDequantReduceOp(value((2, 3, 4)), value((3, 5))),
            "scale shape",
        ),
        (
            lambda: lowp.LutAccumulateOp(
                value((2, 8, 16)),
                value((2, 3, 8), "uint4"),
                value((2, 2)),
                value((2, 1)),
                16,
            ),
            "f32 without a scale or int8 with one",
        ),
        (
            lambda: lowp.LutAccumulateOp(
                value((2, 8, 12)), value((2, 3, 8), "uint4"), value((2, 2)), None, 16
            ),
            "16 entries",
        ),
    ],
)
def test_builder_errors(make, message):
    with pytest.raises(IRError, match=message):
        make()


def test_verifier_rejects_a_wrong_result_type():
    text = """
func.func @f(%x: tensor<2x32xf32>, %w: tensor<4x32x!lp.int<4>>) -> tensor<2x4x3xf32> {
  %p = lp.group_matmul %x, %w group 8 : (tensor<2x32xf32>, tensor<4x32x!lp.int<4>>) -> tensor<2x4x3xf32>
  func.return %p : tensor<2x4x3xf32>
}
"""  # noqa: E501
    with pytest.raises(IRError, match="expected"):
        parse_module(text)
