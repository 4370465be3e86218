"""The lp dialect: every op prints and parses back; verifiers catch bad IR."""

from __future__ import annotations

import numpy as np
import pytest
from xdsl.builder import ImplicitBuilder
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import SSAValue

import lpcc
from lpcc.ir.dialect import (
    LP,
    LayoutAttr,
    lowp,
    parse_module,
    print_module,
    tensor_type,
    to_attr,
    to_dtype,
    verify_module,
)
from lpcc.ir.dialect import ops as lp
from lpcc.ir.dialect.fused import make_fused
from lpcc.ir.layout import local

F32 = lpcc.dtype("f32")


def every_op_module() -> ModuleOp:
    """One function that uses each lp op at least once, built with the builders."""
    x_t = tensor_type(F32, [2, 3, 8])
    img_t = tensor_type(F32, [1, 4, 9, 9])
    ids_t = tensor_type(lpcc.int_(64), [2, 5])
    module = ModuleOp([])
    with ImplicitBuilder(module.body):
        fn = func.FuncOp("every_op", ((x_t, img_t, ids_t), (x_t,)))
        with ImplicitBuilder(fn.body) as (x, img, ids):
            row = lp.ConstantOp.from_array(
                np.linspace(-1, 1, 8).reshape(1, 1, 8)
            ).result
            v = lp.AddOp(x, row).result
            v = lp.SubOp(v, x).result
            v = lp.MulOp(v, x).result
            v = lp.DivOp(
                v, lp.ConstantOp.from_array(np.full((1, 1, 1), 2.0)).result
            ).result
            v = lp.MaxOp(v, x).result
            v = lp.MinOp(v, x).result
            v = lp.PowOp(v, x).result
            for unary in (
                lp.NegOp,
                lp.AbsOp,
                lp.ExpOp,
                lp.LogOp,
                lp.SqrtOp,
                lp.RsqrtOp,
                lp.TanhOp,
                lp.SigmoidOp,
                lp.ErfOp,
                lp.CosOp,
                lp.SinOp,
            ):
                v = unary(v).result
            mask = lp.CmpOp("lt", v, x).result
            v = lp.SelectOp(mask, v, x).result
            # quantization of an [8, 16] weight: int3, groups of 8 along K
            w = lp.ConstantOp.from_array(np.linspace(-2, 2, 128).reshape(8, 16)).result
            scale = lp.ConstantOp.from_array(
                np.full((8, 2), 0.25), lpcc.dtype("f16")
            ).result
            zero = lp.ConstantOp.from_array(np.zeros((8, 2)), lpcc.dtype("int3")).result
            q = lp.QuantizeOp(w, scale, zero, [1, 8], lpcc.dtype("int3")).result
            wd = lp.DequantizeOp(q, scale, None, [1, 8], F32).result
            h = lp.MatmulOp(
                v, lp.SliceOp(wd, [0, 0], [8, 8], [1, 2]).result, transpose_b=True
            ).result
            lp.MatmulOp(
                lp.CastOp(v, lpcc.int_(8)).result,
                lp.CastOp(v, lpcc.int_(8)).result,
                transpose_b=True,
            )
            h = lp.CastOp(h, lpcc.dtype("f6e3m2")).result
            h = lp.CastOp(h, F32).result
            s = lp.ReduceSumOp(h, [1], keepdim=True).result
            lp.ReduceMaxOp(h, [0, 2])
            lp.ReduceMinOp(h, [-1])
            lp.ReduceMeanOp(s, [2])
            lp.CumsumOp(h, -1)
            h = lp.SoftmaxOp(h, 2).result
            lp.LogSoftmaxOp(h, 2)
            flat = lp.ReshapeOp(h, [6, 8]).result
            lp.PermuteOp(flat, [1, 0])
            lp.BroadcastOp(row, [4, 2, 3, 8])
            lp.ConcatOp([h, x], dim=2)
            table = lp.ReshapeOp(flat, [6, 8]).result
            emb = lp.TakeOp(table, ids, 0).result
            idx = lp.ConstantOp.from_array(np.zeros((2, 3, 1)), lpcc.int_(32)).result
            lp.GatherOp(x, idx, 2)
            kernel = lp.ConstantOp.from_array(np.ones((6, 2, 3, 3))).result
            bias = lp.ConstantOp.from_array(np.zeros(6)).result
            conv = lp.Conv2dOp(
                img, kernel, bias, stride=[2, 2], padding=[1, 1], groups=2
            ).result
            lp.Conv2dOp(
                img,
                lp.ConstantOp.from_array(np.ones((3, 4, 2, 2))).result,
                dilation=[2, 2],
            )
            lp.MaxPool2dOp(conv, [3, 3], [2, 2], [1, 1], ceil_mode=True)
            lp.AvgPool2dOp(conv, [2, 2], count_include_pad=False)
            lp.ReshapeOp(emb, [10, 8])
            lp.IotaOp(lpcc.int_(64), [3, 5], dim=1)
            # The low-precision ops (lowp.py) and a fused region (fused.py).
            w = lp.ConstantOp.from_array(np.ones((4, 8)), lpcc.dtype("int3")).result
            scale = lp.ConstantOp.from_array(np.ones((4, 2)), lpcc.dtype("f16")).result
            sums = lowp.GroupSumOp(x, 4).result
            part = lowp.GroupMatmulOp(x, w, 4).result
            lowp.GroupDequantReduceOp(part, scale, act_scale=sums)
            planes = lowp.BitplanesOp(w, 4).result
            ls = lowp.LutScaleOp(x, 4, 8).result
            lut = lowp.LutPrecomputeOp(x, ls, 4, half=True).result
            lowp.LutAccumulateOp(lut, planes, sums, ls, 4, signed=True)
            neg = lp.NegOp(x)
            exp = lp.ExpOp(neg.result)
            lp.AddOp(exp.result, x)
            func.ReturnOp(h)
    make_fused("elementwise", [neg, exp])  # outside the builder: it inserts itself
    return module


def test_every_op_round_trips() -> None:
    module = every_op_module()
    verify_module(module)
    names = {op.name for op in module.walk()}
    missing = {op.name for op in LP.operations} - names
    assert not missing, f"ops not covered by the round-trip test: {missing}"
    text = print_module(module)
    again = parse_module(text)
    assert print_module(again) == text
    assert again.is_structurally_equivalent(module)


def test_printed_forms_read_well() -> None:
    text = print_module(every_op_module())
    for fragment in [
        "lp.add %0, %3 : (tensor<2x3x8xf32>, tensor<1x1x8xf32>) -> tensor<2x3x8xf32>",
        "lp.exp %",
        ": tensor<2x3x8xf32>\n",
        "lp.cmp lt %",
        "-> tensor<2x3x8xi1>",
        "lp.constant splat 2.0 : tensor<1x1x1xf32>",
        "lp.constant splat 0.25 : tensor<8x2xf16>",
        "lp.constant splat 0 : tensor<8x2x!lp.int<3>>",
        "lp.quantize %",
        "block [1, 8]",
        "-> tensor<8x16x!lp.int<3>>",
        "transpose_b",
        "lp.reduce_sum %",
        "dims [1] keepdim",
        "lp.permute %",
        " [1, 0] ",
        "offsets [0, 0] strides [1, 2]",
        "lp.concat %",
        "dim 2",
        "stride [2, 2] padding [1, 1] dilation [1, 1] groups 2",
        "ceil_mode",
        "tensor<2x3x8x!lp.float<3,2,finite>>",
        "tensor<2x5x!lp.int<64>>",
    ]:
        assert fragment in text, fragment


@pytest.mark.parametrize(
    "dt",
    [
        "int3",
        "uint5",
        "int64",
        "uint1",
        "f32",
        "f16",
        "bf16",
        "f6e3m2",
        "f8e4m3fn",
        "f8e5m2fnuz",
        "float<3,2,ieee>",
        "float<5,10,finite>",
        "e8m0",
    ],
)
def test_element_types_map_both_ways(dt: str) -> None:
    t = lpcc.dtype(dt)
    attr = to_attr(t)
    assert to_dtype(attr) == t
    text = print_module(_identity_module(tensor_type(t, [2, 3])))
    assert print_module(parse_module(text)) == text


def test_element_type_spellings() -> None:
    assert str(to_attr(lpcc.dtype("int3"))) == "!lp.int<3>"
    assert str(to_attr(lpcc.dtype("uint5"))) == "!lp.uint<5>"
    assert str(to_attr(lpcc.dtype("f6e2m3"))) == "!lp.float<2,3,finite>"
    assert str(to_attr(lpcc.dtype("e8m0"))) == "!lp.e8m0"
    assert str(to_attr(lpcc.dtype("bool"))) == "i1"
    assert str(to_attr(F32)) == "f32"


def _identity_module(t: object) -> ModuleOp:
    module = ModuleOp([])
    with ImplicitBuilder(module.body):
        fn = func.FuncOp("id", ((t,), (t,)))  # type: ignore[arg-type]
        with ImplicitBuilder(fn.body) as (x,):
            func.ReturnOp(x)
    return module


def test_layout_encoding_round_trips() -> None:
    layout = local(2, 1).column_spatial(4, 8).local(2, 1)
    t = tensor_type(lpcc.dtype("int4"), [32, 16], layout)
    text = print_module(_identity_module(t))
    assert "#lp.layout<shape=[16, 8], modes=[[2, 4, 2], [8]]" in text
    module = parse_module(text)
    arg = module.body.block.first_op.body.block.args[0]  # type: ignore[union-attr]
    assert isinstance(arg.type.encoding, LayoutAttr)
    assert arg.type.encoding.data == layout


@pytest.mark.parametrize(
    "values, dt",
    [
        (np.array([[1, -4, 3], [0, 2, -1]]), "int3"),
        (np.array([0.5, -6.0, 1.5, 0.0, 3.0]), "f4e2m1"),
        (np.array([1.0, 2.0**-127, 2.0**127]), "e8m0"),
        (np.array([np.nan, -0.0, np.inf]), "f16"),
        (np.array([-0.0, -0.0]), "f32"),
        (np.array([np.nan, np.nan]), "f8e4m3fn"),
        (np.array([0.1, 0.1, 0.1]), "f32"),
        (np.array([3.0, 3.0]), "uint5"),
    ],
)
def test_constants_hold_packed_codes(values: np.ndarray, dt: str) -> None:
    t = lpcc.dtype(dt)
    op = lp.ConstantOp.from_array(values, t)
    assert len(op.data.data) in (t.nbytes(values.size), t.nbytes(1))
    expected = t.decode(t.encode(values))
    np.testing.assert_array_equal(op.values(), expected)
    text = print_module(_constant_module(op))
    again = parse_module(text)
    assert print_module(again) == text
    const = next(o for o in again.walk() if isinstance(o, lp.ConstantOp))
    assert np.array_equal(const.codes(), t.encode(values))


def _constant_module(op: lp.ConstantOp) -> ModuleOp:
    t = op.result.type
    module = ModuleOp([])
    with ImplicitBuilder(module.body):
        fn = func.FuncOp("c", ((), (t,)))
        with ImplicitBuilder(fn.body):
            fn.body.block.add_op(op)
            func.ReturnOp(op.result)
    return module


def test_low_bit_constant_is_packed() -> None:
    op = lp.ConstantOp.from_array(
        np.arange(64).reshape(8, 8) % 8 - 4, lpcc.dtype("int3")
    )
    assert len(op.data.data) == 24  # 64 x 3 bits, not 64 bytes
    assert 'dense "0x' in print_module(_constant_module(op))


def _bad(body: str, args: str = "%x: tensor<4x8xf32>") -> str:
    return f"func.func @f({args}) {{\n{body}\n  func.return\n}}"


@pytest.mark.parametrize(
    "text, message",
    [
        (
            _bad(
                "%y = lp.add %x, %x : (tensor<4x8xf32>, tensor<4x8xf32>) -> "
                "tensor<4x8xf16>"
            ),
            "result element type",
        ),
        (
            _bad(
                '%y = "lp.add"(%x, %x) : (tensor<4x8xf32>, tensor<4x8xf32>) -> '
                "tensor<4x7xf32>"
            ),
            "result shape",
        ),
        (
            _bad(
                "%c = lp.constant splat 1.0 : tensor<4x1xf16>\n"
                "%y = lp.add %x, %c : (tensor<4x8xf32>, tensor<4x1xf16>) -> "
                "tensor<4x8xf32>"
            ),
            "element types differ",
        ),
        (
            _bad(
                "%c = lp.constant splat 1.0 : tensor<8xf32>\n"
                "%y = lp.add %x, %c : (tensor<4x8xf32>, tensor<8xf32>) -> "
                "tensor<4x8xf32>"
            ),
            "ranks differ",
        ),
        (
            _bad(
                "%y = lp.matmul %x, %x : (tensor<4x8xf32>, tensor<4x8xf32>) -> "
                "tensor<4x8xf32>"
            ),
            "contraction sizes differ",
        ),
        (
            _bad("%y = lp.reshape %x : tensor<4x8xf32> -> tensor<30xf32>"),
            "cannot become",
        ),
        (
            _bad("%y = lp.permute %x [0, 0] : tensor<4x8xf32> -> tensor<4x4xf32>"),
            "not a permutation",
        ),
        (
            _bad("%y = lp.reduce_sum %x dims [1, 0] : tensor<4x8xf32> -> tensor<f32>"),
            "sorted, unique",
        ),
        (
            _bad(
                "%y = lp.slice %x offsets [0, 6] strides [1, 2] : tensor<4x8xf32> -> "
                "tensor<4x2xf32>"
            ),
            "reads index 8",
        ),
        (
            _bad("%y = lp.broadcast %x : tensor<4x8xf32> -> tensor<4x9xf32>"),
            "does not broadcast",
        ),
        (_bad("%y = lp.softmax %x dim 2 : tensor<4x8xf32>"), "out of range"),
        (
            _bad(
                "%y = lp.cmp lq %x, %x : (tensor<4x8xf32>, tensor<4x8xf32>) -> "
                "tensor<4x8xi1>"
            ),
            "predicate 'lq'",
        ),
        (
            _bad(
                "%y = lp.exp %x : tensor<4x8x!lp.int<4>>", "%x: tensor<4x8x!lp.int<4>>"
            ),
            "needs a float tensor",
        ),
        (
            _bad(
                "%s = lp.constant splat 1.0 : tensor<4x3xf32>\n"
                "%q = lp.quantize %x scale %s block [1, 4] : "
                "(tensor<4x8xf32>, tensor<4x3xf32>) -> tensor<4x8x!lp.int<4>>"
            ),
            "scale shape \\[4, 3\\], expected \\[4, 2\\]",
        ),
        (
            _bad('%c = lp.constant dense "0x0102" : tensor<2x!lp.int<4>>'),
            "payload of 2 bytes",
        ),
        (_bad('%c = lp.constant dense "0xF1" : tensor<1x!lp.int<4>>'), "padding bits"),
        (_bad("%c = lp.constant splat 1.0 : tensor<?x4xf32>"), "static shape"),
        (
            _bad("%y = lp.exp %x : tensor<4x8xf64>", "%x: tensor<4x8xf64>"),
            "not an lp element type",
        ),
        (
            _bad(
                "%y = lp.exp %x : tensor<6x8xf32, #lp.layout<shape=[4, 8], "
                "modes=[[4], [8]], "
                "spatial=[0, 1], local=[]>>",
                "%x: tensor<6x8xf32, #lp.layout<shape=[4, 8], modes=[[4], [8]], "
                "spatial=[0, 1], "
                "local=[]>>",
            ),
            "not a multiple of the layout tile",
        ),
        (
            _bad(
                "%y = lp.conv2d %x, %x stride [1, 1] padding [0, 0] dilation [1, 1] "
                "groups 1 : "
                "(tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>"
            ),
            "need rank 4",
        ),
    ],
)
def test_verifier_errors(text: str, message: str) -> None:
    with pytest.raises(lpcc.IRError, match=message):
        parse_module(text)


@pytest.mark.parametrize(
    "text, message",
    [
        (_bad("", "%x: tensor<4x!lp.float<3,2,nope>>"), "float variant must be one of"),
        (_bad("", "%x: tensor<4x!lp.int<0>>"), "integer width must be in 1..64"),
        (
            _bad("", "%x: tensor<4x8x!lp.uint<1>>"),
            r"<input>:1:37\n.*\n *\^\^\^\n.*spelled i1",
        ),
        (_bad("", "%x: tensor<4x!lp.float<8,23,ieee>>"), "spelled f32"),
        (
            _bad(
                "",
                "%x: tensor<4xf32, #lp.layout<shape=[4], modes=[[4]], spatial=[], "
                "local=[]>>",
            ),
            "exactly once",
        ),
        (_bad("%y = lp.frobnicate %x : tensor<4x8xf32>"), "frobnicate"),
        (_bad("%y = lp.add %x, %x : tensor<4x8xf32"), "<input>:3:3"),
        (
            _bad("%y = lp.add %x, %x : tensor<4x8xf32> -> tensor<4x8xf32>"),
            "<input>:2:22\n.*\n.*\n.*2 operands: write their types as",
        ),
    ],
)
def test_parse_errors_point_at_the_text(text: str, message: str) -> None:
    with pytest.raises(lpcc.IRError, match=message):
        parse_module(text)


def test_builders_reject_bad_operands() -> None:
    module = ModuleOp([])
    with ImplicitBuilder(module.body):
        fn = func.FuncOp(
            "f", ((tensor_type(F32, [4, 8]), tensor_type(F32, [3, 8])), ())
        )
        with ImplicitBuilder(fn.body) as (a, b):
            with pytest.raises(lpcc.IRError, match="do not broadcast"):
                lp.AddOp(a, b)
            with pytest.raises(lpcc.IRError, match="contraction sizes differ"):
                lp.MatmulOp(a, b)
            with pytest.raises(lpcc.IRError, match="dim 5 out of range"):
                lp.SoftmaxOp(a, 5)
            with pytest.raises(lpcc.IRError, match="mix floats and integers"):
                lp.MatmulOp(a, lp.CastOp(b, lpcc.int_(4)).result, transpose_b=True)
            func.ReturnOp()


def test_shape_inference_hand_derived() -> None:
    """Output sizes worked out with PyTorch's formulas by hand."""
    module = ModuleOp([])
    with ImplicitBuilder(module.body):
        fn = func.FuncOp("f", ((tensor_type(F32, [2, 3, 10, 7]),), ()))
        with ImplicitBuilder(fn.body) as (x,):
            w = lp.ConstantOp.from_array(np.ones((4, 3, 3, 2))).result
            # H: (10 + 2 - 2*(3-1) - 1) // 3 + 1 = 3; W: (7 + 0 - 1 - 1) // 1 + 1 = 6
            conv = lp.Conv2dOp(x, w, stride=[3, 1], padding=[1, 0], dilation=[2, 1])
            assert conv.result.type.get_shape() == (2, 4, 3, 6)
            # ceil((10 + 2 - 3) / 2) + 1 = 6; the last window starts
            # at 10, inside 10 + 1, so it stays
            pool = lp.MaxPool2dOp(x, [3, 3], [2, 2], [1, 1], ceil_mode=True)
            assert pool.result.type.get_shape() == (2, 3, 6, 4)
            ids = lp.ConstantOp.from_array(np.zeros((5, 1)), lpcc.int_(32)).result
            take = lp.TakeOp(x, ids, 1)
            assert take.result.type.get_shape() == (2, 5, 1, 10, 7)
            a = lp.ConstantOp.from_array(np.ones((3, 1, 4, 5))).result
            b = lp.ConstantOp.from_array(np.ones((6, 5, 2))).result
            assert lp.MatmulOp(a, b).result.type.get_shape() == (3, 6, 4, 2)
            func.ReturnOp()
    verify_module(module)


def test_dynamic_dimensions_are_accepted() -> None:
    text = _bad(
        "%y = lp.add %x, %x : tensor<?x8xf32>\n"
        "%z = lp.reduce_sum %y dims [1] : tensor<?x8xf32> -> tensor<?xf32>",
        "%x: tensor<?x8xf32>",
    )
    assert "tensor<?xf32>" in print_module(parse_module(text))


def test_constant_accessors_and_dim_errors() -> None:
    ones = lp.ConstantOp.from_array(np.ones(3))
    assert ones.dtype == F32 and ones.is_splat and len(ones.data.data) == 4
    ramp = lp.ConstantOp.from_array(np.arange(3.0))
    assert not ramp.is_splat and ramp.values().tolist() == [0.0, 1.0, 2.0]
    with pytest.raises(lpcc.IRError, match="dim 3 out of range for rank 1"):
        lp.ReduceSumOp(ones.result, [3])
    assert isinstance(ones.result, SSAValue)


def test_dynamic_dims_attribute_round_trips() -> None:
    from lpcc.ir.dialect.ops import set_dims, value_dims

    text = """
func.func @f(%x: tensor<2x?xf32> {lp.dims = "2,s0"}) -> tensor<?x2xf32> {
  %t = lp.permute %x [1, 0] {lp.dims = "s0,2"} : (tensor<2x?xf32>) -> tensor<?x2xf32>
  func.return %t : tensor<?x2xf32>
}
"""
    module = parse_module(text)
    fn = next(op for op in module.walk() if isinstance(op, func.FuncOp))
    perm = next(op for op in module.walk() if isinstance(op, lp.PermuteOp))
    assert value_dims(fn.body.block.args[0]) == (2, "s0")
    assert value_dims(perm.result) == ("s0", 2)
    set_dims(perm, ("2*s0", 2))
    assert value_dims(perm.result) == ("2*s0", 2)
    assert parse_module(print_module(module)) is not None
    perm.attributes.pop("lp.dims")
    with pytest.raises(lpcc.IRError, match=r"lp\.dims"):
        value_dims(perm.result)


@pytest.mark.parametrize("codes", [[[1], [2]], [[3], [3]], [[1, 2, 3]]])
def test_short_dense_payload_is_not_a_splat(codes: list[list[int]]) -> None:
    """Two int4 codes fill one byte, as one code does: the payload is dense."""
    i4 = lpcc.dtype("int4")
    op = lp.ConstantOp.from_codes(np.array(codes, np.uint8), i4)
    assert op.codes().tolist() == codes
    module = ModuleOp([])
    with ImplicitBuilder(module.body):
        fn = func.FuncOp("f", ((), (op.result.type,)))
        with ImplicitBuilder(fn.body):
            fn.body.block.add_op(op)
            func.ReturnOp(op.result)
    back = parse_module(print_module(module))
    (parsed,) = [o for o in back.walk() if isinstance(o, lp.ConstantOp)]
    assert parsed.codes().tolist() == codes


@pytest.mark.parametrize("value", [1e-5, 1e20, -3.5e-8, 0.5])
def test_splat_float_literals_parse_back(value: float) -> None:
    """MLIR float literals need a '.': `1e-05` must print as `1.0e-05`."""
    op = lp.ConstantOp.from_array(np.full((2, 2), value, np.float32))
    assert op.is_splat
    module = ModuleOp([op])
    back = parse_module(print_module(module))
    (parsed,) = [o for o in back.walk() if isinstance(o, lp.ConstantOp)]
    assert parsed.values().tolist() == op.values().tolist()


def test_rank0_constant() -> None:
    op = lp.ConstantOp.from_array(np.array(2.5, np.float32))
    assert op.codes().shape == () and float(op.values()) == 2.5
