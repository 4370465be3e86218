"""fuse-epilogue and fuse-elementwise keep every output bit for bit.

Fusion moves ops into `lp.fused` regions without changing them, and the
interpreter runs a region's ops in order, so the outputs before and after
each pass must be identical (np.array_equal, NaNs included). The programs
are random elementwise DAGs (seeded) with broadcasts, reductions, casts,
splat constants, iotas and matmuls in between (which make cycles possible),
and the reference models through the torch frontend, with and without
weight quantization. Each pass must also shrink the program: fewer
top-level ops and fewer kernel calls in `build_program`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import pytest
import torch
from lpcc.frontends.torch_export import import_module
from lpcc.runtime import VM, Call
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Block, Operation, Region, SSAValue

from lpcc import dtype
from lpcc.codegen.program import build_program
from lpcc.errors import IRError
from lpcc.ir import interp
from lpcc.ir.dialect import context, tensor_type, verify_module
from lpcc.ir.dialect import ops as lp
from lpcc.ir.dialect.fused import FusedOp
from lpcc.models import (
    MLP,
    CNNConfig,
    GPT2Config,
    LlamaConfig,
    MLPConfig,
    SmallCNN,
    TinyGPT2,
    TinyLlama,
)
from lpcc.passes import get_all_passes
from lpcc.passes.fuse_elementwise import FuseElementwise, plan_groups
from lpcc.passes.fuse_epilogue import FuseEpilogue
from lpcc.passes.quantize import quantize_module

F32, F16 = dtype("f32"), dtype("f16")
ROWS, COLS = 4, 8
SHAPES = [(ROWS, COLS), (1, COLS), (ROWS, 1), (1, 1)]

PASSES: dict[str, list[Callable[[], object]]] = {
    "epilogue": [FuseEpilogue],
    "elementwise": [FuseElementwise],
    "both": [FuseEpilogue, FuseElementwise],
}


def top_ops(module: ModuleOp) -> int:
    return sum(
        len(list(fn.body.block.ops)) for fn in module.ops if isinstance(fn, func.FuncOp)
    )


def calls(module: ModuleOp) -> int:
    program = build_program(module)
    return sum(isinstance(ins, Call) for ins in program.instructions)


def run_passes(module: ModuleOp, which: str) -> ModuleOp:
    out = module.clone()
    for cls in PASSES[which]:
        cls().apply(context(), out)  # type: ignore[attr-defined]
    verify_module(out)
    return out


def same(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape
        assert np.array_equal(g, w, equal_nan=True)


# -- random programs ------------------------------------------------------------


def _shape(v: SSAValue) -> tuple[int, ...]:
    return tuple(v.type.get_shape())  # type: ignore[attr-defined]


def random_program(seed: int) -> ModuleOp:
    """@main(a[4,8], b[1,8], c[4,1]): 4 to 15 random ops, 1 to 3 results."""
    rng = np.random.default_rng(seed)
    arg_shapes = [SHAPES[0], SHAPES[1], SHAPES[2]][: 2 + seed % 2]
    types = [tensor_type(F32, s) for s in arg_shapes]
    block = Block(arg_types=types)
    pool: list[SSAValue] = list(block.args)

    def pick(shape: tuple[int, ...] | None = None) -> SSAValue:
        vs = [v for v in pool if shape is None or _shape(v) == shape] or pool
        return vs[int(rng.integers(len(vs)))]

    def add(*ops: Operation) -> SSAValue:
        block.add_ops(ops)
        pool.append(ops[-1].results[0])
        return ops[-1].results[0]

    unary = [lp.ExpOp, lp.TanhOp, lp.SinOp, lp.NegOp, lp.AbsOp, lp.SigmoidOp]
    binary = [lp.AddOp, lp.SubOp, lp.MulOp, lp.MaxOp, lp.MinOp]
    for _ in range(int(rng.integers(4, 16))):
        kind = rng.choice(
            [
                "unary",
                "binary",
                "binary",
                "broadcast",
                "reduce",
                "select",
                "cast",
                "splat",
                "matmul",
                "iota",
            ]
        )
        if kind == "unary":
            add(unary[int(rng.integers(len(unary)))](pick()))
        elif kind == "binary":
            add(binary[int(rng.integers(len(binary)))](pick(), pick()))
        elif kind == "broadcast":
            v = pick()
            if _shape(v) != SHAPES[0]:
                add(lp.BroadcastOp(v, SHAPES[0]))
        elif kind == "reduce":
            v = pick(SHAPES[0])
            cls = [lp.ReduceSumOp, lp.ReduceMaxOp, lp.ReduceMeanOp][
                int(rng.integers(3))
            ]
            add(cls(v, [int(rng.integers(2))], keepdim=True))
        elif kind == "select":
            a, b = pick(), pick()
            cond = lp.CmpOp("gt", a, b)
            add(cond, lp.SelectOp(cond.result, b, a))
        elif kind == "cast":
            half = lp.CastOp(pick(), F16)
            add(half, lp.CastOp(half.result, F32))
        elif kind == "splat":
            c = lp.ConstantOp.from_array(np.full((1, 1), 0.75, np.float32))
            add(c, lp.MulOp(pick(), c.result))
        elif kind == "matmul":
            w = lp.ConstantOp.from_array(
                rng.standard_normal((COLS, COLS)).astype(np.float32)
            )
            lhs = pick(SHAPES[0]) if rng.random() < 0.7 else pick(SHAPES[1])
            if _shape(lhs)[1] == COLS:
                add(w, lp.MatmulOp(lhs, w.result, transpose_b=True))
        else:
            iota = lp.IotaOp(F32, SHAPES[0], dim=int(rng.integers(2)))
            add(iota, lp.AddOp(pick(), iota.result))
    computed = pool[len(types) :] or pool
    results = [computed[-1]]
    for _ in range(int(rng.integers(0, 3))):
        v = computed[int(rng.integers(len(computed)))]
        if v not in results:
            results.append(v)
    block.add_op(func.ReturnOp(*results))
    fn = func.FuncOp("main", (types, [r.type for r in results]), Region(block))
    module = ModuleOp([fn])
    verify_module(module)
    return module


def random_inputs(module: ModuleOp, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(1000 + seed)
    fn = next(op for op in module.ops if isinstance(op, func.FuncOp))
    return [
        rng.standard_normal(_shape(a)).astype(np.float32) for a in fn.body.block.args
    ]


SEEDS = range(60)


@pytest.mark.parametrize("which", list(PASSES))
def test_random_programs_are_unchanged(which: str) -> None:
    fused_any = 0
    for seed in SEEDS:
        module = random_program(seed)
        x = random_inputs(module, seed)
        want = interp.run_module(module, x)
        after = run_passes(module, which)
        same(interp.run_module(after, x), want)
        n0, n1 = top_ops(module), top_ops(after)
        regions = sum(isinstance(op, FusedOp) for op in after.walk())
        assert n1 <= n0
        if regions:
            fused_any += 1
            assert n1 < n0, f"seed {seed}: a region but no fewer ops"
            # A region of one op is never made (constants cloned in aside).
            for op in after.walk():
                if isinstance(op, FusedOp):
                    body = [o for o in op.body.block.ops if o.name != "lp.constant"]
                    assert len(body) > 2, f"seed {seed}: {body}"
            if seed % 4 == 0:
                same(VM(build_program(after)).run(x), want)
            # A second run finds nothing more to fuse.
            assert top_ops(run_passes(after, which)) == n1
    # Matmuls are rarer than elementwise ops, and often read twice.
    assert fused_any >= len(SEEDS) // (12 if which == "epilogue" else 2)


def test_planned_groups_respect_max_ops_and_reductions() -> None:
    for seed in SEEDS:
        module = random_program(seed)
        fn = next(op for op in module.ops if isinstance(op, func.FuncOp))
        for max_ops in (2, 3, 64):
            for group in plan_groups(fn.body.block, max_ops):
                assert 2 <= len(group) <= max_ops
                members = set(group)
                for op in group:  # nothing in a group reads its reductions
                    for v in op.operands:
                        owner = v.owner
                        assert not (
                            owner in members and owner.name.startswith("lp.reduce")
                        )
        x = random_inputs(module, seed)
        after = module.clone()
        FuseElementwise(max_ops=3).apply(context(), after)
        same(interp.run_module(after, x), interp.run_module(module, x))


def test_pass_options_and_registration() -> None:
    passes = get_all_passes()
    assert passes["fuse-elementwise"]() is FuseElementwise
    assert passes["fuse-epilogue"]() is FuseEpilogue
    assert FuseElementwise().max_ops == 64
    with pytest.raises(IRError, match="option max_ops: expected >= 2"):
        FuseElementwise(max_ops=0)


# -- the reference models -------------------------------------------------------


def ids(batch: int, seq: int, vocab: int = 64) -> torch.Tensor:
    return torch.randint(
        0, vocab, (batch, seq), generator=torch.Generator().manual_seed(0)
    )


MODELS: dict[str, Callable[[], tuple[torch.nn.Module, tuple[torch.Tensor, ...]]]] = {
    "mlp-gelu": lambda: (MLP(MLPConfig(), seed=1), (torch.randn(3, 16),)),
    "mlp-silu": lambda: (
        MLP(MLPConfig(activation="silu"), seed=2),
        (torch.randn(3, 16),),
    ),
    "llama": lambda: (TinyLlama(LlamaConfig(n_layers=1), seed=3), (ids(1, 5),)),
    "gpt2": lambda: (TinyGPT2(GPT2Config(n_layers=1), seed=4), (ids(1, 5),)),
    "cnn": lambda: (SmallCNN(CNNConfig(), seed=5), (torch.randn(1, 3, 8, 8),)),
}
QUANT: dict[str, str] = {
    "mlp-gelu": "int4-g8",
    "mlp-silu": "uint3-g16",
    "llama": "int4-g32",
    "gpt2": "uint4-g16",
    "cnn": "int8-g8",
}


@functools.cache
def imported(name: str) -> tuple[ModuleOp, tuple[np.ndarray, ...]]:
    torch.manual_seed(0)
    model, args = MODELS[name]()
    module = import_module(model.eval(), args).module
    return module, tuple(a.numpy() for a in args)


@pytest.mark.parametrize("quant", [False, True], ids=["f32", "quantized"])
@pytest.mark.parametrize("name", list(MODELS))
def test_models_are_unchanged_and_smaller(name: str, quant: bool) -> None:
    base, x = imported(name)
    module = base.clone()
    if quant:
        quantize_module(module, QUANT[name])
    want = interp.run_module(module, list(x))
    n0, c0 = top_ops(module), calls(module)
    k0 = len(build_program(module).kernels)
    for which in PASSES:
        after = run_passes(module, which)
        same(interp.run_module(after, list(x)), want)
        assert top_ops(after) < n0, which
        assert calls(after) < c0, which
        if which == "both":
            program = build_program(after)
            assert len(program.kernels) < k0
            same(VM(program).run(list(x)), want)
