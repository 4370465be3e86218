"""build_program + VM against the reference interpreter on the same module.

The interpreter (`lpcc.ir.interp.run_function`) is the oracle: a lowered
program must give bit-identical outputs. The buffer plan is checked against
an independent recomputation of live ranges from the emitted instructions.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from lpcc.runtime import (
    VM,
    Call,
    Copy,
    InputError,
    Program,
    Return,
    View,
    load,
    save,
)

import lpcc
from lpcc.codegen.program import build_program
from lpcc.errors import IRError
from lpcc.ir import interp
from lpcc.ir.dialect import parse_module

RNG = np.random.default_rng(0)


def randn(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def hexdata(dt: str, values: np.ndarray) -> str:
    t = lpcc.dtype(dt)
    return "0x" + t.pack(t.encode(np.asarray(values))).tobytes().hex().upper()


def same(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype
        assert np.array_equal(g, w, equal_nan=True)


def check(text: str, inputs: list[np.ndarray], **kw: object) -> Program:
    module = parse_module(text)
    program = build_program(module, **kw)  # type: ignore[arg-type]
    same(VM(program).run(inputs), interp.run_module(module, inputs))
    return program


W4 = RNG.integers(-8, 8, (4, 8))
MLP = f"""
func.func @main(%x: tensor<3x4xf32>, %b: tensor<1x8xf32>) -> tensor<3x8xf32> {{
  %w = lp.constant {{lp.name = "w"}} dense "{hexdata("int4", W4)}"
    : tensor<4x8x!lp.int<4>>
  %wf = lp.cast %w : (tensor<4x8x!lp.int<4>>) -> tensor<4x8xf32>
  %h = lp.matmul %x, %wf : (tensor<3x4xf32>, tensor<4x8xf32>) -> tensor<3x8xf32>
  %hb = lp.add %h, %b : (tensor<3x8xf32>, tensor<1x8xf32>) -> tensor<3x8xf32>
  %t = lp.tanh %hb : (tensor<3x8xf32>) -> tensor<3x8xf32>
  %s = lp.softmax %t dim 1 : (tensor<3x8xf32>) -> tensor<3x8xf32>
  func.return %s : tensor<3x8xf32>
}}
"""


def test_mlp_with_int4_weight_matches_interpreter() -> None:
    program = check(MLP, [randn(3, 4), randn(1, 8)])
    (w,) = program.constants
    assert (w.name, w.dtype, w.shape, w.splat) == ("w", "int4", (4, 8), False)
    assert len(w.data) == 16  # 32 elements at 4 bits, packed
    assert np.array_equal(w.values(), W4)
    assert [s.name for s in program.inputs] == ["x", "b"]
    text = program.as_text()
    assert "c[0] w: int4[4, 8]" in text
    assert "call k_matmul_0(%0, " in text


CHAIN = """
func.func @main(%x: tensor<2x8xf32>) -> tensor<4x4xf32> {
  %a = lp.exp %x : (tensor<2x8xf32>) -> tensor<2x8xf32>
  %b = lp.tanh %a : (tensor<2x8xf32>) -> tensor<2x8xf32>
  %c = lp.exp %b : (tensor<2x8xf32>) -> tensor<2x8xf32>
  %d = lp.tanh %c : (tensor<2x8xf32>) -> tensor<2x8xf32>
  %e = lp.mul %d, %d : (tensor<2x8xf32>, tensor<2x8xf32>) -> tensor<2x8xf32>
  %f = lp.reshape %e : (tensor<2x8xf32>) -> tensor<4x4xf32>
  %g = lp.exp %f : (tensor<4x4xf32>) -> tensor<4x4xf32>
  func.return %g : tensor<4x4xf32>
}
"""


def test_chain_reuses_storage_and_shares_kernels() -> None:
    program = check(CHAIN, [randn(2, 8)])
    temps = [b for b in program.buffers if b.storage is not None]
    assert program.num_storages < len(temps)
    assert program.num_storages == 3  # two ping-pong storages + the output's
    # Identical op texts share a kernel; the reshape is a view, not a kernel.
    assert [k.name for k in program.kernels] == [
        "k_exp_0",
        "k_tanh_0",
        "k_mul_0",
        "k_exp_1",  # same op, different shape: a different kernel
    ]
    assert sum(isinstance(i, View) for i in program.instructions) == 1
    mul = next(
        i for i in program.instructions if isinstance(i, Call) and "mul" in i.kernel
    )
    assert len(mul.inputs) == 1  # %d, %d: one argument
    text = program.as_text()
    assert text.count("in st0") >= 2  # the listing shows the reuse
    assert "free st0" in text and "alloc st0 [64 bytes]" in text
    assert program.stats()["peak_bytes"] == 2 * 64  # st1 is freed before st2


def live_ranges_disjoint(program: Program) -> None:
    """Independent check: buffers sharing a storage never overlap in time."""
    root: dict[int, int] = {}
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for pc, ins in enumerate(program.instructions):
        if isinstance(ins, Call | Copy):
            outs = ins.outputs if isinstance(ins, Call) else (ins.dst,)
            for b in outs:
                root[b] = b
                first[b] = last[b] = pc
        if isinstance(ins, View) and ins.src in root:
            root[ins.dst] = root[ins.src]
        uses: tuple[int, ...] = ()
        if isinstance(ins, Call):
            uses = ins.inputs
        elif isinstance(ins, View | Copy):
            uses = (ins.src,)
        elif isinstance(ins, Return):
            uses = ins.buffers
        for b in uses:
            if b in root:
                last[root[b]] = max(last[root[b]], pc)
    by_storage: dict[int, list[int]] = {}
    for r in first:
        by_storage.setdefault(program.buffers[r].storage, []).append(r)  # type: ignore[arg-type]
    for rs in by_storage.values():
        rs.sort(key=first.__getitem__)
        for a, b in itertools.pairwise(rs):
            assert last[a] < first[b], (a, b, program.as_text())
    outs = program.instructions[-1].buffers  # type: ignore[union-attr]
    out_storages = [program.buffers[b].storage for b in outs]
    for s in out_storages:
        assert len(by_storage[s]) == 1  # type: ignore[index]


def random_module(seed: int) -> tuple[str, list[np.ndarray]]:
    """A random DAG of elementwise ops, reshapes and a matmul over [4, 6] values."""
    rng = np.random.default_rng(seed)
    lines = []
    t = "tensor<4x6xf32>"
    vals = ["%x", "%y"]
    for i in range(int(rng.integers(4, 14))):
        kind = rng.choice(["unary", "binary", "reshape2", "matmul"])
        a, b = (vals[int(j)] for j in rng.integers(0, len(vals), 2))
        name = f"%v{i}"
        if kind == "unary":
            op = rng.choice(["lp.tanh", "lp.neg", "lp.sin"])
            lines.append(f"{name} = {op} {a} : ({t}) -> {t}")
        elif kind == "binary":
            op = rng.choice(["lp.add", "lp.mul", "lp.max", "lp.sub"])
            lines.append(f"{name} = {op} {a}, {b} : ({t}, {t}) -> {t}")
        elif kind == "reshape2":
            mid = f"%r{i}"
            lines.append(f"{mid} = lp.reshape {a} : ({t}) -> tensor<6x4xf32>")
            lines.append(f"{name} = lp.reshape {mid} : (tensor<6x4xf32>) -> {t}")
        else:
            mid = f"%m{i}"
            lines.append(
                f"{mid} = lp.matmul {a}, {b} transpose_b : ({t}, {t}) -> "
                "tensor<4x4xf32>"
            )
            lines.append(
                f"{name} = lp.matmul {mid}, {b} : (tensor<4x4xf32>, {t}) -> {t}"
            )
        vals.append(name)
    k = int(rng.integers(1, 4))
    rets = [vals[int(j)] for j in rng.integers(0, len(vals), k)]
    body = "\n  ".join(lines)
    text = (
        f"func.func @main(%x: {t}, %y: {t}) -> ({', '.join([t] * k)}) {{\n  {body}\n"
        f"  func.return {', '.join(rets)} : {', '.join([t] * k)}\n}}\n"
    )
    return text, [randn(4, 6), randn(4, 6)]


@pytest.mark.parametrize("seed", range(25))
def test_random_graphs_match_interpreter_and_plan_is_sound(seed: int) -> None:
    text, inputs = random_module(seed)
    program = check(text, inputs)
    live_ranges_disjoint(program)


DYNAMIC = """
func.func @main(%x: tensor<?x4xf32> {lp.dims = "s0,4"}, %w: tensor<4x8xf32>)
    -> tensor<?x2x4xf32> {
  %a = lp.matmul %x, %w {lp.dims = "s0,8"}
    : (tensor<?x4xf32>, tensor<4x8xf32>) -> tensor<?x8xf32>
  %b = lp.exp %a {lp.dims = "s0,8"} : (tensor<?x8xf32>) -> tensor<?x8xf32>
  %c = lp.add %a, %b {lp.dims = "s0,8"}
    : (tensor<?x8xf32>, tensor<?x8xf32>) -> tensor<?x8xf32>
  %d = lp.softmax %c dim 1 {lp.dims = "s0,8"} : (tensor<?x8xf32>) -> tensor<?x8xf32>
  %e = lp.reshape %d {lp.dims = "s0,2,4"} : (tensor<?x8xf32>) -> tensor<?x2x4xf32>
  func.return %e : tensor<?x2x4xf32>
}
"""


def test_dynamic_shapes_run_for_several_sizes() -> None:
    module = parse_module(DYNAMIC)
    program = build_program(module, dim_ranges={"s0": (0, 16)})
    assert program.inputs[0].shape == ("s0", 4)
    vm = VM(program)
    w = randn(4, 8)
    for n in (1, 5, 0):
        x = randn(n, 4)
        same(vm.run([x, w]), interp.run_module(module, [x, w]))
    assert "32*s0" in program.as_text()
    assert program.stats({"s0": 5})["peak_bytes"] == 3 * 32 * 5
    assert program.stats()["peak_bytes"] is None  # symbolic, no values given
    with pytest.raises(InputError, match=r"'x' \(#0\).*s0 = 17.*\[0, 16\]"):
        vm.run([randn(17, 4), w])


def test_input_errors_name_the_parameter() -> None:
    vm = VM(build_program(parse_module(DYNAMIC)))
    x, w = randn(3, 4), randn(4, 8)
    with pytest.raises(InputError, match=r"takes 2 inputs \(x, w\), got 1"):
        vm.run([x])
    with pytest.raises(InputError, match=r"input 'w' \(#1\).*dimension 1 is 9"):
        vm.run([x, randn(4, 9)])
    with pytest.raises(InputError, match=r"input 'x' \(#0\).*rank 2"):
        vm.run([randn(3), w])
    with pytest.raises(InputError, match=r"input 'x' \(#0\).*f32.*got float64"):
        vm.run([x.astype(np.float64), w])
    with pytest.raises(InputError, match=r"input 'w'.*list"):
        vm.run([x, w.tolist()])  # type: ignore[list-item]
    assert isinstance(InputError("x"), ValueError)


def test_f16_inputs_accept_float16_and_round_float32() -> None:
    text = """
func.func @main(%x: tensor<4xf16>, %y: tensor<4xf16>) -> tensor<4xf16> {
  %z = lp.add %x, %y : (tensor<4xf16>, tensor<4xf16>) -> tensor<4xf16>
  func.return %z : tensor<4xf16>
}
"""
    module = parse_module(text)
    vm = VM(build_program(module))
    x = np.array([1, 2048, 0.1, 65504], np.float16)
    y = np.array([2**-11, 1, 0.2, 65504], np.float16)
    (got,) = vm.run([x, y])
    assert got.dtype == np.float32
    with np.errstate(over="ignore"):
        want = (x + y).astype(np.float32)  # NumPy float16 adds round once
    assert np.array_equal(got, want)
    # float32 values for an f16 parameter are rounded to f16 first.
    (again,) = vm.run([np.float32([1 + 2**-12, 0, 0, 0]), np.zeros(4, np.float32)])
    assert again[0] == 1.0


def test_outputs_are_independent_arrays() -> None:
    t, t4 = "tensor<2x2xf32>", "tensor<4xf32>"
    text = f"""
func.func @main(%x: {t}) -> ({t}, {t4}, {t}, {t}, {t}) {{
  %c = lp.constant splat 3.0 : {t}
  %r = lp.reshape %x : ({t}) -> {t4}
  %e = lp.exp %x : ({t}) -> {t}
  func.return %x, %r, %c, %e, %e : {t}, {t4}, {t}, {t}, {t}
}}
"""
    module = parse_module(text)
    program = build_program(module)
    assert sum(isinstance(i, Copy) for i in program.instructions) == 4
    vm = VM(program)
    x = randn(2, 2)
    keep = x.copy()
    outs = vm.run([x])
    same(outs, interp.run_module(module, [keep]))
    for o in outs:
        o[...] = -1  # writing an output touches nothing else
    assert np.array_equal(x, keep)
    assert not np.shares_memory(outs[3], outs[4])
    again = vm.run([x])
    same(again, interp.run_module(module, [keep]))
    assert np.all(outs[0] == -1)  # the first run's arrays are not reused
    live_ranges_disjoint(program)


def test_save_load_run_is_identical(tmp_path: Path) -> None:
    module = parse_module(MLP)
    program = build_program(module)
    path = save(program, tmp_path / "mlp.lpcc")
    again = load(path)
    assert again == program
    inputs = [randn(3, 4), randn(1, 8)]
    same(VM(again).run(inputs), VM(program).run(inputs))


def test_lowering_errors() -> None:
    module = parse_module(CHAIN)
    with pytest.raises(IRError, match="no lowering for target 'tpu'"):
        build_program(module, target="tpu")
    with pytest.raises(IRError, match="no function @nope"):
        build_program(module, name="nope")
    with pytest.raises(IRError, match="2 input names for 1 arguments"):
        build_program(module, input_names=["a", "b"])
    named = build_program(module, input_names=["ids"], output_names=["logits"])
    assert named.inputs[0].name == "ids" and named.outputs[0].name == "logits"


def test_compound_sizes_and_kernels_without_inputs() -> None:
    t = "tensor<?x4xf32>"
    i64 = "tensor<?x4x!lp.int<64>>"
    text = f"""
func.func @main(%x: {t} {{lp.dims = "s0,4"}}) -> ({t}, {i64}) {{
  %c = lp.concat %x, %x, %x dim 0 {{lp.dims = "3*s0,4"}} : ({t}, {t}, {t}) -> {t}
  %e = lp.exp %c {{lp.dims = "3*s0,4"}} : ({t}) -> {t}
  %i = lp.iota dim 0 {{lp.dims = "s0+1,4"}} : {i64}
  func.return %e, %i : {t}, {i64}
}}
"""
    module = parse_module(text)
    program = build_program(module)
    assert "alloc st0 [16*(3*s0) bytes]" in program.as_text()
    assert "alloc st2 [32*(s0+1) bytes]" in program.as_text()
    vm = VM(program)
    for n in (2, 5):
        x = randn(n, 4)
        got = vm.run([x])
        same(got, interp.run_module(module, [x]))
        assert got[1].shape == (n + 1, 4)
