"""The fuse-table-precompute pass: the same outputs, bit for bit, from the
interpreter (and from the VM), with fewer top-level ops and kernels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from lpcc.runtime import VM
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp

from lpcc.codegen.program import build_program
from lpcc.ir import interp
from lpcc.ir.dialect import lowp, parse_module
from lpcc.ir.dialect.fused import FusedOp
from lpcc.passes import get_all_passes
from lpcc.passes.fold_constants import fold_constants
from lpcc.passes.fuse_table_precompute import (
    TABLE_OPS,
    FuseTablePrecompute,
    fuse_table_precompute,
)
from tests.passes.test_fold_constants import tiny_llama_lut

RNG = np.random.default_rng(0)
CASES = (
    Path(__file__).parents[1] / "filecheck" / "passes" / "fuse_table_precompute.mlir"
)


def functions(module: ModuleOp) -> dict[str, func.FuncOp]:
    return {op.sym_name.data: op for op in module.ops if isinstance(op, func.FuncOp)}


def top_ops(fn: func.FuncOp) -> list[object]:
    return list(fn.body.block.ops)


def inputs_of(fn: func.FuncOp, rows: int = 2) -> list[np.ndarray]:
    out = []
    for arg in fn.body.block.args:
        shape = [rows if d < 0 else d for d in arg.type.get_shape()]  # type: ignore[attr-defined]
        out.append(RNG.standard_normal(shape).astype(np.float32))
    return out


def same(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype
        assert np.array_equal(g, w)


@pytest.mark.parametrize("into_producer", [True, False])
def test_filecheck_cases_match_the_interpreter(into_producer: bool) -> None:
    module = parse_module(CASES.read_text())
    fns = functions(module)
    ins = {name: inputs_of(fn) for name, fn in fns.items()}
    want = {name: interp.run_function(fn, ins[name]) for name, fn in fns.items()}
    sizes = {name: len(top_ops(fn)) for name, fn in fns.items()}
    made = fuse_table_precompute(module, into_producer)
    # rmsnorm, region, the two activations of grouped, chain_stop
    assert made == 5
    for name, fn in functions(module).items():
        same(interp.run_function(fn, ins[name]), want[name])
        assert len(top_ops(fn)) < sizes[name]
        # Every table op now lives in a precompute region, but the lone one.
        loose = [op for op in top_ops(fn) if isinstance(op, TABLE_OPS)]
        assert len(loose) == (1 if name == "grouped" else 0)
    rms = functions(module)["rmsnorm"]
    # One table, one scale, one sum serve Q, K and V.
    assert sum(isinstance(op, lowp.LutPrecomputeOp) for op in rms.walk()) == 1
    assert sum(isinstance(op, lowp.GroupSumOp) for op in rms.walk()) == 1
    (region,) = [op for op in top_ops(rms) if isinstance(op, FusedOp)]
    assert region.kind.data == "precompute"
    # The RMSNorm tail joins only with into_producer.
    assert any(op.name == "lp.rsqrt" for op in region.walk()) == into_producer


DYNAMIC = """
func.func @main(%h: tensor<?x32xf32> {lp.dims = "s0,32"}) -> (tensor<?x3x4xf32>, tensor<?x32xf32>) {
  %g = lp.constant splat 0.75 : tensor<1x32xf32>
  %x = lp.mul %h, %g {lp.dims = "s0,32"} : (tensor<?x32xf32>, tensor<1x32xf32>) -> tensor<?x32xf32>
  %w = lp.constant dense "0x0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF" : tensor<2x3x8x!lp.uint<4>>
  %ls = lp.lut_scale %x group 4 act_group 16 {lp.dims = "s0,2"} : tensor<?x32xf32> -> tensor<?x2xf32>
  %t = lp.lut_precompute %x scale %ls group 4 {lp.dims = "s0,8,16"} : (tensor<?x32xf32>, tensor<?x2xf32>) -> tensor<?x8x16x!lp.int<8>>
  %s = lp.group_sum %x group 8 {lp.dims = "s0,4"} : tensor<?x32xf32> -> tensor<?x4xf32>
  %y = lp.lut_accumulate %t, %w, %s scale %ls group 8 signed {lp.dims = "s0,3,4"} : (tensor<?x8x16x!lp.int<8>>, tensor<2x3x8x!lp.uint<4>>, tensor<?x4xf32>, tensor<?x2xf32>) -> tensor<?x3x4xf32>
  %e = lp.exp %x {lp.dims = "s0,32"} : tensor<?x32xf32>
  func.return %y, %e : tensor<?x3x4xf32>, tensor<?x32xf32>
}
"""  # noqa: E501


def test_dynamic_rows_through_the_vm() -> None:
    module = parse_module(DYNAMIC)
    ins = {n: inputs_of(functions(module)["main"], n) for n in (1, 5)}
    want = {n: interp.run_module(module, ins[n]) for n in ins}
    kernels = len(build_program(module, dim_ranges={"s0": (1, 8)}).kernels)
    assert fuse_table_precompute(module) == 1
    (region,) = [op for op in module.walk() if isinstance(op, FusedOp)]
    assert len(region.results) == 4  # x (exp reads it too), ls, T, S
    program = build_program(module, dim_ranges={"s0": (1, 8)})
    assert len(program.kernels) < kernels
    vm = VM(program)
    for n in ins:
        same(interp.run_module(module, ins[n]), want[n])
        same(vm.run(ins[n]), want[n])


def test_registered() -> None:
    assert get_all_passes()["fuse-table-precompute"]() is FuseTablePrecompute
    assert FuseTablePrecompute().into_producer is True


def test_tiny_llama() -> None:
    text, ids = tiny_llama_lut()
    module = parse_module(text)
    fold_constants(module)
    before = interp.run_module(module, [ids])
    (fn,) = functions(module).values()
    n_ops = len(top_ops(fn))
    kernels = len(build_program(module).kernels)
    activations = {
        op.operands[0] for op in fn.body.block.ops if isinstance(op, TABLE_OPS)
    }
    assert activations, "lut-gemm made no table ops"
    made = fuse_table_precompute(module)
    assert made == len(activations)
    same(interp.run_module(module, [ids]), before)
    assert not any(isinstance(op, TABLE_OPS) for op in top_ops(fn))
    assert len(top_ops(fn)) < n_ops
    program = build_program(module)
    assert len(program.kernels) < kernels
    same(VM(program).run([ids]), before)
    # The three RMSNorm outputs (attention, MLP, final) take their tables
    # into the norm's kernel: those regions hold an rsqrt.
    regions = [op for op in top_ops(fn) if isinstance(op, FusedOp)]
    assert all(r.kind.data == "precompute" for r in regions)
    assert sum(any(o.name == "lp.rsqrt" for o in r.walk()) for r in regions) == 3
