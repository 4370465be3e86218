"""The fold-constants pass: the interpreter gives the same outputs, bit for bit,
before and after, and no narrow weight is widened."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp

import lpcc
from lpcc.codegen.program import build_program
from lpcc.errors import LpccError
from lpcc.ir import interp
from lpcc.ir.dialect import lowp, parse_module, print_module
from lpcc.ir.dialect import ops as lp
from lpcc.passes import get_all_passes
from lpcc.passes.fold_constants import FoldConstants, fold_constants

RNG = np.random.default_rng(0)


def hexdata(dt: str, values: np.ndarray) -> str:
    t = lpcc.dtype(dt)
    return "0x" + t.pack(t.encode(np.asarray(values))).tobytes().hex().upper()


def top_ops(module: ModuleOp) -> list[object]:
    fn = next(op for op in module.ops if isinstance(op, func.FuncOp))
    return list(fn.body.block.ops)


def constant_bytes(module: ModuleOp) -> int:
    return sum(
        len(op.data.data) for op in module.walk() if isinstance(op, lp.ConstantOp)
    )


def same(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype
        assert np.array_equal(g, w, equal_nan=True)


W = RNG.integers(-8, 8, (6, 16))  # int4 weight, [N, K]
PERM = RNG.standard_normal((16, 3)).astype(np.float32)

# A LUT GEMM on a constant weight (its bit planes fold), a matmul on a
# permuted + reshaped constant, splat arithmetic and int64 shape arithmetic.
MIXED = f"""
func.func @main(%x: tensor<2x16xf32>) -> (tensor<2x6x4xf32>, tensor<2x3xf32>, tensor<2x16xf32>, tensor<2x!lp.int<64>>) {{
  %w = lp.constant {{lp.name = "fc.weight"}} dense "{hexdata("int4", W)}" : tensor<6x16x!lp.int<4>>
  %planes = lp.bitplanes %w group 4 : tensor<6x16x!lp.int<4>> -> tensor<4x6x4x!lp.uint<4>>
  %t = lp.lut_precompute %x group 4 : tensor<2x16xf32> -> tensor<2x4x16xf32>
  %s = lp.group_sum %x group 4 : tensor<2x16xf32> -> tensor<2x4xf32>
  %p = lp.lut_accumulate %t, %planes, %s group 4 signed : (tensor<2x4x16xf32>, tensor<4x6x4x!lp.uint<4>>, tensor<2x4xf32>) -> tensor<2x6x4xf32>
  %m = lp.constant {{lp.name = "proj"}} dense "{hexdata("f32", PERM.T)}" : tensor<3x16xf32>
  %mt = lp.permute %m [1, 0] : tensor<3x16xf32> -> tensor<16x3xf32>
  %mr = lp.reshape %mt : tensor<16x3xf32> -> tensor<16x3xf32>
  %y = lp.matmul %x, %mr : (tensor<2x16xf32>, tensor<16x3xf32>) -> tensor<2x3xf32>
  %half = lp.constant splat 0.5 : tensor<1x1xf32>
  %e = lp.exp %half : tensor<1x1xf32>
  %eb = lp.broadcast %e : tensor<1x1xf32> -> tensor<2x16xf32>
  %z = lp.mul %x, %eb : tensor<2x16xf32>
  %a = lp.constant dense "{hexdata("int64", [3, 5])}" : tensor<2x!lp.int<64>>
  %b = lp.constant splat 7 : tensor<2x!lp.int<64>>
  %c = lp.mul %a, %b : tensor<2x!lp.int<64>>
  func.return %p, %y, %z, %c : tensor<2x6x4xf32>, tensor<2x3xf32>, tensor<2x16xf32>, tensor<2x!lp.int<64>>
}}
"""  # noqa: E501


def test_folds_and_matches_the_interpreter() -> None:
    module = parse_module(MIXED)
    x = RNG.standard_normal((2, 16)).astype(np.float32)
    before = interp.run_module(module, [x])
    n_before, bytes_before = len(top_ops(module)), constant_bytes(module)
    # bitplanes, permute, reshape, exp, broadcast, mul
    assert fold_constants(module) == 6
    after = interp.run_module(module, [x])
    same(after, before)
    ops = top_ops(module)
    # Each folded op became a constant; the 7 constants they alone read went
    # (%w, %m, %half, %a, %b and the intermediate %mt and %e).
    assert len(ops) == n_before - 7
    assert not any(isinstance(op, lowp.BitplanesOp | lp.PermuteOp) for op in ops)
    assert constant_bytes(module) <= bytes_before
    names = {
        op.attributes["lp.name"].data  # type: ignore[union-attr]
        for op in ops
        if isinstance(op, lp.ConstantOp) and "lp.name" in op.attributes
    }
    assert names == {"fc.weight.bitplanes", "proj.permute.reshape"}
    # An independent reference for the folded values: numpy.
    assert np.array_equal(after[3], np.int64([21, 35]))
    assert np.array_equal(after[1], np.matmul(x, PERM))


def test_never_widens_a_weight() -> None:
    text = f"""
func.func @main() -> (tensor<4x16xf32>, tensor<4x4x4x!lp.uint<4>>) {{
  %w = lp.constant {{lp.name = "w"}} dense "{hexdata("int4", W[:4])}" : tensor<4x16x!lp.int<4>>
  %s = lp.constant splat 0.5 : tensor<4x1xf16>
  %dq = lp.dequantize %w scale %s block [1, 16] : (tensor<4x16x!lp.int<4>>, tensor<4x1xf16>) -> tensor<4x16xf32>
  %planes = lp.bitplanes %w group 4 : tensor<4x16x!lp.int<4>> -> tensor<4x4x4x!lp.uint<4>>
  func.return %dq, %planes : tensor<4x16xf32>, tensor<4x4x4x!lp.uint<4>>
}}
"""  # noqa: E501
    module = parse_module(text)
    want = interp.run_module(module, [])
    assert fold_constants(module) == 1  # the planes (32 bytes, as the weight)
    kinds = [type(op) for op in top_ops(module)]
    assert lp.DequantizeOp in kinds and lowp.BitplanesOp not in kinds
    # The weight still feeds the dequantize, so it stays next to its planes.
    assert sum(k is lp.ConstantOp for k in kinds) == 3
    same(interp.run_module(module, []), want)
    # 256 f32 bytes; the largest operand has 32: 224 bytes of growth fold it.
    assert fold_constants(module, max_growth=223) == 0
    assert fold_constants(module, max_growth=224) == 1
    got = interp.run_module(module, [])
    same(got, want)
    assert np.array_equal(got[0], (W[:4] * 0.5).astype(np.float32))


@pytest.mark.parametrize("dt", ["f32", "f16", "bf16", "f8e4m3fn"])
@pytest.mark.parametrize(
    "op", ["exp", "log", "sqrt", "rsqrt", "tanh", "sigmoid", "erf", "cos", "sin"]
)
def test_splat_folds_like_the_full_evaluation(op: str, dt: str) -> None:
    """A splat is evaluated on one element: the same bits as on all of them."""
    t = lpcc.dtype(dt)
    for v in (0.7, 1.9, 3.25):
        text = f"""
func.func @main() -> tensor<3x37x{dt_attr(dt)}> {{
  %c = lp.constant splat {t.decode(t.encode(np.float32([v])))[0]} : tensor<3x37x{dt_attr(dt)}>
  %y = lp.{op} %c : tensor<3x37x{dt_attr(dt)}>
  func.return %y : tensor<3x37x{dt_attr(dt)}>
}}
"""  # noqa: E501
        module = parse_module(text)
        want = interp.run_module(module, [])
        assert fold_constants(module) == 1
        (const,) = [o for o in top_ops(module) if isinstance(o, lp.ConstantOp)]
        assert const.is_splat
        same(interp.run_module(module, []), want)


def dt_attr(dt: str) -> str:
    from lpcc.ir.dialect import to_attr

    return str(to_attr(lpcc.dtype(dt)))


def test_ops_that_stay() -> None:
    text = """
func.func @main(%x: tensor<?x4xf32> {lp.dims = "s0,4"}) -> (tensor<2x!lp.int<8>>, tensor<?x4xf32>, tensor<4xf32>) {
  %a = lp.constant splat 5 : tensor<2x!lp.int<8>>
  %zero = lp.constant splat 0 : tensor<2x!lp.int<8>>
  %q = lp.div %a, %zero : tensor<2x!lp.int<8>>
  %c = lp.constant splat 2.0 : tensor<1x4xf32>
  %b = lp.broadcast %c {lp.dims = "s0,4"} : tensor<1x4xf32> -> tensor<?x4xf32>
  %i = lp.iota dim 0 : tensor<4xf32>
  func.return %q, %b, %i : tensor<2x!lp.int<8>>, tensor<?x4xf32>, tensor<4xf32>
}
"""  # noqa: E501
    module = parse_module(text)
    printed = print_module(module)
    assert fold_constants(module) == 0
    assert print_module(module) == printed
    with pytest.raises(LpccError, match="integer division by zero"):
        interp.run_module(module, [np.zeros((3, 4), np.float32)])


def test_bad_option() -> None:
    with pytest.raises(LpccError, match="max_growth"):
        FoldConstants(max_growth=-1)
    assert get_all_passes()["fold-constants"]() is FoldConstants


@functools.cache
def tiny_llama_lut() -> tuple[str, np.ndarray]:
    """A 1-layer TinyLlama with int2-g32 weights through the low-precision
    passes, as IR text (exported once per session; test_fuse_table_precompute
    reads it too), and token ids to run it on."""
    import torch
    from lpcc.frontends.torch_export import import_module

    from lpcc.ir.dialect import context
    from lpcc.models import LlamaConfig, TinyLlama
    from lpcc.passes.quantize import quantize_module

    model = TinyLlama(LlamaConfig(n_layers=1), seed=0).eval()
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0))
    module = import_module(model, (ids,)).module
    quantize_module(module, "int2-g32")
    passes = get_all_passes()
    for name in ("dequant-after-group-gemm", "lut-gemm"):
        if name in passes:
            passes[name]()().apply(context(), module)
    return print_module(module), ids.numpy()


def test_tiny_llama() -> None:
    text, ids = tiny_llama_lut()
    module = parse_module(text)
    assert any(isinstance(op, lowp.BitplanesOp) for op in module.walk())
    before = interp.run_module(module, [ids])
    kernels = len(build_program(module).kernels)
    planes = sum(isinstance(op, lowp.BitplanesOp) for op in module.walk())
    bytes_before = constant_bytes(module)
    folded = fold_constants(module)
    assert folded >= planes
    same(interp.run_module(module, [ids]), before)
    assert not any(isinstance(op, lowp.BitplanesOp) for op in module.walk())
    # The dequantized weights that remain (K not a multiple of 32) stay packed.
    for op in module.walk():
        if isinstance(op, lp.DequantizeOp):
            assert isinstance(op.input.owner, lp.ConstantOp)
    assert constant_bytes(module) <= bytes_before
    assert len(build_program(module).kernels) < kernels
