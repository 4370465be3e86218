"""lp.fused / lp.yield: text round trip, verifier, interpreter, lowering.

A fused region must compute exactly what its ops compute unfused (the
interpreter runs the same ops), so the references here are the unfused
module and NumPy float32 arithmetic written out by hand.
"""

from __future__ import annotations

import numpy as np
import pytest
from lpcc.runtime import VM, Call, dumps, loads
from xdsl.dialects import func
from xdsl.ir import Block, Region

import lpcc
from lpcc.codegen.program import build_program
from lpcc.ir import interp
from lpcc.ir.dialect import ops as lp
from lpcc.ir.dialect import parse_module, print_module, verify_module
from lpcc.ir.dialect.fused import FusedOp, YieldOp, make_fused, would_cycle

RNG = np.random.default_rng(5)

FUSED = """
func.func @main(%a: tensor<4x8xf32>, %b: tensor<1x8xf32>) -> (tensor<4x8xf32>, tensor<4x1xf32>) {
  %e, %s = lp.fused elementwise(%a, %b) : (tensor<4x8xf32>, tensor<1x8xf32>) -> (tensor<4x8xf32>, tensor<4x1xf32>) {
  ^bb0(%x: tensor<4x8xf32>, %y: tensor<1x8xf32>):
    %ex = lp.exp %x : tensor<4x8xf32>
    %m = lp.mul %ex, %y : (tensor<4x8xf32>, tensor<1x8xf32>) -> tensor<4x8xf32>
    %t = lp.tanh %m : tensor<4x8xf32>
    %r = lp.reduce_sum %t dims [1] keepdim : tensor<4x8xf32> -> tensor<4x1xf32>
    lp.yield %t, %r : tensor<4x8xf32>, tensor<4x1xf32>
  }
  func.return %e, %s : tensor<4x8xf32>, tensor<4x1xf32>
}
"""  # noqa: E501

UNFUSED = """
func.func @main(%a: tensor<4x8xf32>, %b: tensor<1x8xf32>) -> (tensor<4x8xf32>, tensor<4x1xf32>) {
  %ex = lp.exp %a : tensor<4x8xf32>
  %m = lp.mul %ex, %b : (tensor<4x8xf32>, tensor<1x8xf32>) -> tensor<4x8xf32>
  %t = lp.tanh %m : tensor<4x8xf32>
  %r = lp.reduce_sum %t dims [1] keepdim : tensor<4x8xf32> -> tensor<4x1xf32>
  func.return %t, %r : tensor<4x8xf32>, tensor<4x1xf32>
}
"""  # noqa: E501


def inputs() -> list[np.ndarray]:
    return [
        RNG.standard_normal((4, 8)).astype(np.float32),
        RNG.standard_normal((1, 8)).astype(np.float32),
    ]


def fn_of(module) -> func.FuncOp:
    (fn,) = [op for op in module.ops if isinstance(op, func.FuncOp)]
    return fn


def same(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape
        assert np.array_equal(g, w, equal_nan=True)


# -- text ----------------------------------------------------------------------


def test_round_trip() -> None:
    module = parse_module(FUSED)
    text = print_module(module)
    again = parse_module(text)
    assert again.is_structurally_equivalent(module)
    assert print_module(again) == text
    assert "%e, %s = lp.fused elementwise(%a, %b)" in text
    assert "lp.yield %t, %r : tensor<4x8xf32>, tensor<4x1xf32>" in text


@pytest.mark.parametrize("kind", ["elementwise", "epilogue", "precompute"])
def test_kinds_round_trip(kind: str) -> None:
    text = FUSED.replace("lp.fused elementwise", f"lp.fused {kind}")
    module = parse_module(text)
    (fused,) = [op for op in module.walk() if isinstance(op, FusedOp)]
    assert fused.kind.data == kind
    assert f"lp.fused {kind}(%a, %b)" in print_module(module)


def _one(body: str, sig: str = "(tensor<4xf32>) -> tensor<4xf32>") -> str:
    return f"""
func.func @main(%a: tensor<4xf32>) -> tensor<4xf32> {{
  %r = lp.fused elementwise(%a) : {sig} {{
{body}
  }}
  func.return %r : tensor<4xf32>
}}
"""


ARG = "  ^bb0(%x: tensor<4xf32>):\n"
BAD = [
    (
        _one(
            ARG + "    %h = lp.cast %x : tensor<4xf32> -> tensor<4xf16>\n"
            "    lp.yield %h : tensor<4xf16>"
        ),
        "lp.yield value #0 is tensor<4xf16>, result #0 is tensor<4xf32>",
    ),
    (
        _one(ARG + "    lp.yield %x, %x : tensor<4xf32>, tensor<4xf32>"),
        "lp.yield gives 2 values for 1 results",
    ),
    (
        _one(
            "  ^bb0(%x: tensor<4xf16>):\n    %c = lp.cast %x : tensor<4xf16> -> "
            "tensor<4xf32>\n    lp.yield %c : tensor<4xf32>"
        ),
        "body argument #0 is tensor<4xf16>, operand #0 is tensor<4xf32>",
    ),
    (
        _one(
            "  ^bb0(%x: tensor<4xf32>, %z: tensor<4xf32>):\n"
            "    lp.yield %x : tensor<4xf32>"
        ),
        "the body has 2 arguments for 1 operands",
    ),
    (
        _one(
            ARG + "    %n = lp.fused elementwise(%x) : (tensor<4xf32>) -> "
            "tensor<4xf32> {\n    ^bb1(%y: tensor<4xf32>):\n"
            "      lp.yield %y : tensor<4xf32>\n    }\n"
            "    lp.yield %n : tensor<4xf32>"
        ),
        "do not nest",
    ),
    (
        _one(
            ARG + "    %c = arith.constant dense<1.0> : tensor<4xf32>\n"
            "    lp.yield %c : tensor<4xf32>"
        ),
        "arith.constant inside the body; only lp ops may be fused",
    ),
    (
        _one(
            ARG + "    %e = lp.exp %a : tensor<4xf32>\n    lp.yield %e : tensor<4xf32>"
        ),
        "IsolatedFromAbove",
    ),
    (
        _one(ARG + "    lp.yield %x : tensor<4xf32>").replace(
            "elementwise", "pointwise"
        ),
        "kind 'pointwise' not in elementwise, epilogue, precompute",
    ),
    (
        """
func.func @main(%a: tensor<4xf32>) -> tensor<4xf32> {
  lp.yield %a : tensor<4xf32>
}
""",
        "expects parent op 'lp.fused'",
    ),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_verifier_errors(text: str, message: str) -> None:
    with pytest.raises(lpcc.IRError, match=message.replace("(", r"\(")):
        parse_module(text)


def test_builder_rejects_bad_kind() -> None:
    module = parse_module(UNFUSED)
    block = fn_of(module).body.block
    with pytest.raises(lpcc.IRError, match="kind 'loop' not in"):
        FusedOp("loop", [block.args[0]], [], Region(Block()))


# -- interpreter ------------------------------------------------------------------


def test_interpreter_fused_equals_unfused() -> None:
    x = inputs()
    got = interp.run_module(parse_module(FUSED), x)
    same(got, interp.run_module(parse_module(UNFUSED), x))
    # By hand, in float32 like the interpreter: tanh(exp(a) * b), row sums.
    t = np.tanh(np.exp(x[0]) * x[1])
    assert np.array_equal(got[0], t)
    assert np.allclose(got[1], t.sum(axis=1, keepdims=True), rtol=1e-6)


def test_run_op_results() -> None:
    module = parse_module(FUSED)
    (fused,) = [op for op in module.walk() if isinstance(op, FusedOp)]
    x = inputs()
    outs = interp.run_op_results(fused, x)
    assert [o.shape for o in outs] == [(4, 8), (4, 1)]
    with pytest.raises(lpcc.IRError, match="has 2 results; call run_op_results"):
        interp.run_op(fused, x)


# -- make_fused ---------------------------------------------------------------------


def test_make_fused_matches_the_hand_written_region() -> None:
    module = parse_module(UNFUSED)
    ops = list(fn_of(module).body.block.ops)[:4]
    fused = make_fused("elementwise", ops)
    verify_module(module)
    assert [r.name_hint for r in fused.results] == ["t", "r"]
    assert len(list(fn_of(module).body.block.ops)) == 2  # fused + return
    x = inputs()
    same(interp.run_module(module, x), interp.run_module(parse_module(FUSED), x))


MOVES = """
func.func @main(%a: tensor<4xf32>, %w: tensor<4x4xf32>) -> (tensor<4xf32>, tensor<1x4xf32>) {
  %e = lp.exp %a : tensor<4xf32>
  %r = lp.reshape %e : tensor<4xf32> -> tensor<1x4xf32>
  %m = lp.matmul %r, %w : (tensor<1x4xf32>, tensor<4x4xf32>) -> tensor<1x4xf32>
  %two = lp.constant splat 2.0 : tensor<4xf32>
  %n = lp.mul %e, %two : tensor<4xf32>
  func.return %n, %m : tensor<4xf32>, tensor<1x4xf32>
}
"""  # noqa: E501


def test_make_fused_moves_readers_and_clones_splats() -> None:
    module = parse_module(MOVES)
    x = [
        RNG.standard_normal(4).astype(np.float32),
        RNG.standard_normal((4, 4)).astype(np.float32),
    ]
    want = interp.run_module(module, x)
    block = fn_of(module).body.block
    ops = list(block.ops)
    fused = make_fused("elementwise", [ops[0], ops[4]])
    verify_module(module)
    # The reshape and matmul read exp: they now come after the fused op, and
    # the splat is recomputed inside (the original had no other reader).
    assert [op.name for op in block.ops] == [
        "lp.fused",
        "lp.reshape",
        "lp.matmul",
        "func.return",
    ]
    assert [op.name for op in fused.body.block.ops] == [
        "lp.constant",
        "lp.exp",
        "lp.mul",
        "lp.yield",
    ]
    assert len(fused.inputs) == 1
    same(interp.run_module(module, x), want)


def test_make_fused_refuses_a_cycle() -> None:
    module = parse_module(
        """
func.func @main(%a: tensor<4xf32>, %w: tensor<4x4xf32>) -> tensor<4xf32> {
  %e = lp.exp %a : tensor<4xf32>
  %r = lp.reshape %e : tensor<4xf32> -> tensor<1x4xf32>
  %m = lp.matmul %r, %w : (tensor<1x4xf32>, tensor<4x4xf32>) -> tensor<1x4xf32>
  %q = lp.reshape %m : tensor<1x4xf32> -> tensor<4xf32>
  %n = lp.mul %e, %q : tensor<4xf32>
  func.return %n : tensor<4xf32>
}
"""
    )
    block = fn_of(module).body.block
    ops = list(block.ops)
    assert would_cycle([ops[0], ops[4]])
    assert not would_cycle([ops[0], ops[1]])
    with pytest.raises(lpcc.IRError, match="would form a cycle"):
        make_fused("elementwise", [ops[0], ops[4]])
    verify_module(module)  # untouched


def test_make_fused_rejects_non_lp_ops() -> None:
    module = parse_module(UNFUSED)
    block = fn_of(module).body.block
    with pytest.raises(lpcc.IRError, match=r"cannot fuse func\.return"):
        make_fused("elementwise", [block.first_op, block.last_op])


# -- dynamic sizes --------------------------------------------------------------------

DYNAMIC = """
func.func @main(%a: tensor<?x4xf32> {lp.dims = "n,4"}) -> (tensor<?x4xf32>, tensor<?x1xf32>) {
  %e, %s = lp.fused elementwise(%a) : (tensor<?x4xf32>) -> (tensor<?x4xf32>, tensor<?x1xf32>) {
  ^bb0(%x: tensor<?x4xf32>):
    %i = lp.iota dim 0 {lp.dims = "n,4"} : tensor<?x4xf32>
    %ex = lp.add %x, %i {lp.dims = "n,4"} : tensor<?x4xf32>
    %r = lp.reduce_max %ex dims [1] keepdim {lp.dims = "n,1"} : tensor<?x4xf32> -> tensor<?x1xf32>
    lp.yield %ex, %r : tensor<?x4xf32>, tensor<?x1xf32>
  }
  func.return %e, %s : tensor<?x4xf32>, tensor<?x1xf32>
}
"""  # noqa: E501


def test_dynamic_dims_through_a_region() -> None:
    module = parse_module(DYNAMIC)
    (fused,) = [op for op in module.walk() if isinstance(op, FusedOp)]
    assert lp.value_dims(fused.results[0]) == ("n", 4)
    assert lp.value_dims(fused.results[1]) == ("n", 1)
    assert lp.value_dims(fused.body.block.args[0]) == ("n", 4)
    program = build_program(module)
    vm = VM(program)
    for n in (1, 3, 6):
        a = RNG.standard_normal((n, 4)).astype(np.float32)
        rows = np.arange(n, dtype=np.float32)[:, None]
        want = [a + rows, (a + rows).max(axis=1, keepdims=True)]
        same(interp.run_module(module, [a]), want)
        same(vm.run([a]), want)


def test_yield_without_dims_is_an_error() -> None:
    module = parse_module(DYNAMIC.replace(' {lp.dims = "n,1"}', ""), verify=False)
    (fused,) = [op for op in module.walk() if isinstance(op, FusedOp)]
    with pytest.raises(lpcc.IRError, match=r"no lp\.dims attribute"):
        lp.value_dims(fused.results[1])


# -- lowering -----------------------------------------------------------------------


def test_program_runs_a_two_result_region_as_one_kernel() -> None:
    module = parse_module(FUSED)
    program = build_program(module)
    assert len(program.kernels) == 1
    (kernel,) = program.kernels
    assert kernel.meta["num_outputs"] == 2 and kernel.meta["num_inputs"] == 2
    assert kernel.name == "k_fused_elementwise_0"
    calls = [ins for ins in program.instructions if isinstance(ins, Call)]
    assert len(calls) == 1 and len(calls[0].outputs) == 2
    outs = calls[0].outputs
    assert program.buffers[outs[0]].storage != program.buffers[outs[1]].storage
    x = inputs()
    want = interp.run_module(module, x)
    same(VM(program).run(x), want)
    same(VM(loads(dumps(program))).run(x), want)


def test_program_with_region_and_other_ops() -> None:
    """A region whose first result feeds later kernels and whose second is
    returned: the planner may reuse the first's storage once it is dead."""
    text = """
func.func @main(%a: tensor<4x8xf32>, %b: tensor<1x8xf32>) -> (tensor<4x8xf32>, tensor<4x1xf32>) {
  %e, %s = lp.fused elementwise(%a, %b) : (tensor<4x8xf32>, tensor<1x8xf32>) -> (tensor<4x8xf32>, tensor<4x1xf32>) {
  ^bb0(%x: tensor<4x8xf32>, %y: tensor<1x8xf32>):
    %m = lp.mul %x, %y : (tensor<4x8xf32>, tensor<1x8xf32>) -> tensor<4x8xf32>
    %r = lp.reduce_max %m dims [1] keepdim : tensor<4x8xf32> -> tensor<4x1xf32>
    lp.yield %m, %r : tensor<4x8xf32>, tensor<4x1xf32>
  }
  %n = lp.neg %e : tensor<4x8xf32>
  %t = lp.tanh %n : tensor<4x8xf32>
  func.return %t, %s : tensor<4x8xf32>, tensor<4x1xf32>
}
"""  # noqa: E501
    module = parse_module(text)
    program = build_program(module)
    x = inputs()
    same(VM(program).run(x), interp.run_module(module, x))
    assert [k.meta["num_outputs"] for k in program.kernels] == [2, 1, 1]


def test_yield_op_builds() -> None:
    module = parse_module(UNFUSED)
    block = fn_of(module).body.block
    assert YieldOp([block.args[0]]).values[0] is block.args[0]


def test_yield_alone_does_not_run() -> None:
    module = parse_module(FUSED)
    (fused,) = [op for op in module.walk() if isinstance(op, FusedOp)]
    with pytest.raises(lpcc.IRError, match=r"only ends an lp\.fused body"):
        interp.run_op_results(fused.yield_op, inputs())
