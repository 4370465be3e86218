"""The quantize pass on hand-built IR: the interpreter before/after, the IR it
writes, include/exclude, shared weights, conv, the pass API and the CLI form.

Expected outputs use `reference_rtn` (tests/test_quant.py: torch/ml_dtypes,
no lpcc codec) for the dequantized weights and NumPy/torch for the layers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest
import torch
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, StringAttr
from xdsl.ir import Block, Operation, Region
from xdsl.passes import PassPipeline

from lpcc import config, dtype
from lpcc.ir import interp
from lpcc.ir.dialect import context, print_module, tensor_type, verify_module
from lpcc.ir.dialect import ops as lp
from lpcc.passes import get_all_passes
from lpcc.passes.quantize import QuantizeWeights, quantize_module
from lpcc.quant import QuantConfig, QuantError, parse_quant, quantize_weight
from tests.test_quant import reference_rtn

F32 = dtype("f32")


def weights(n: int, k: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((n, k)) * 0.1).astype(
        np.float32
    )


def const(w: np.ndarray, name: str | None) -> lp.ConstantOp:
    op = lp.ConstantOp.from_array(w, F32)
    if name is not None:
        op.attributes["lp.name"] = StringAttr(name)
    return op


def module_of(arg_shapes: Sequence[tuple[int, ...]], body) -> ModuleOp:
    """A module with @main(args) whose ops `body(block_args)` returns."""
    types = [tensor_type(F32, s) for s in arg_shapes]
    block = Block(arg_types=types)
    ops, results = body(block.args)
    block.add_ops([*ops, func.ReturnOp(*results)])
    fn = func.FuncOp("main", (types, [r.type for r in results]), Region(block))
    module = ModuleOp([fn])
    verify_module(module)
    return module


def mlp(w1: np.ndarray, w2: np.ndarray, names=("fc1.weight", "fc2.weight"), batch=3):
    """x @ w1.T -> tanh -> @ w2.T, as the frontend emits linear layers."""

    def body(args):
        c1, c2 = const(w1, names[0]), const(w2, names[1])
        m1 = lp.MatmulOp(args[0], c1.result, transpose_b=True)
        act = lp.TanhOp(m1.result)
        m2 = lp.MatmulOp(act.result, c2.result, transpose_b=True)
        return [c1, m1, act, c2, m2], [m2.result]

    return module_of([(batch, w1.shape[1])], body)


def ops_of(module: ModuleOp, cls: type[Operation]) -> list:
    return [op for op in module.walk() if isinstance(op, cls)]


def fmt_of(spec: str) -> tuple[str, int | None, bool, str]:
    cfg = parse_quant(spec)
    assert cfg is not None
    return cfg.dtype.name, cfg.group_size, bool(cfg.symmetric), cfg.scale_dtype


SPECS = [
    "int4-g16",
    "uint3-g8",
    "int2-g16-asym",
    "f4e2m1-g16",
    "int8-pc",
    "f4e2m1-g32-se8m0",
    "uint4-g16-sym",
    "f8e4m3fn-g8-sf32",
]


@pytest.mark.parametrize("spec", SPECS)
def test_mlp_runs_with_the_dequantized_weights(spec: str) -> None:
    w1, w2 = weights(24, 40, 1), weights(6, 24, 2)  # K = 40: a short last group
    x = np.random.default_rng(3).standard_normal((3, 40)).astype(np.float32)
    module = mlp(w1, w2)
    before = interp.run_module(module, [x])[0]
    np.testing.assert_allclose(before, np.tanh(x @ w1.T) @ w2.T, rtol=1e-5, atol=1e-6)

    report = quantize_module(module, spec)
    verify_module(module)
    after = interp.run_module(module, [x])[0]
    fmt, group, sym, scale = fmt_of(spec)
    d1 = reference_rtn(w1, fmt, group, sym, scale)[3]
    d2 = reference_rtn(w2, fmt, group, sym, scale)[3]
    want = np.tanh(x @ d1.T) @ d2.T
    np.testing.assert_allclose(after, want, rtol=1e-5, atol=1e-6)
    assert not np.array_equal(after, before)  # it did quantize
    assert [r.name for r in report.rows] == ["fc1.weight", "fc2.weight"]
    assert report.rows[0].shape == (24, 40) and report.rows[0].format == fmt


@pytest.mark.parametrize("spec", ["int4-g16", "uint3-g8", "int5-pc", "f6e3m2-g8-se8m0"])
def test_rewritten_ir_is_packed_and_named(spec: str) -> None:
    w1, w2 = weights(24, 40, 4), weights(6, 24, 5)
    module = mlp(w1, w2)
    report = quantize_module(module, spec)
    cfg = parse_quant(spec)
    assert cfg is not None
    dt, st = cfg.dtype, cfg.scale_type
    consts = {op.attributes["lp.name"].data: op for op in ops_of(module, lp.ConstantOp)}
    # The f32 weights are gone; codes, scales (and zeros) replace them.
    assert all(op.dtype != F32 for op in consts.values())
    expected = {"fc1.weight", "fc1.weight.scale", "fc2.weight", "fc2.weight.scale"}
    if cfg.zero_point:
        expected |= {"fc1.weight.zero", "fc2.weight.zero"}
    assert set(consts) == expected
    deqs = ops_of(module, lp.DequantizeOp)
    assert len(deqs) == 2
    for (name, w), dq, row in zip(
        [("fc1.weight", w1), ("fc2.weight", w2)], deqs, report.rows, strict=True
    ):
        n, k = w.shape
        g = cfg.group_for(k)
        q = consts[name]
        assert q.dtype == dt and q.result.type.get_shape() == (n, k)
        assert len(q.data.data) == math.ceil(n * k * dt.bits / 8)  # packed, not bytes
        s = consts[f"{name}.scale"]
        assert s.dtype == st and s.result.type.get_shape() == (n, -(-k // g))
        assert len(s.data.data) == st.nbytes(n * -(-k // g))
        assert tuple(dq.block.get_values()) == (1, g)
        assert dq.input is q.result and dq.scale is s.result
        assert (dq.zero is not None) == bool(cfg.zero_point)
        # lp.dequantize (the interpreter) == QuantizedWeight.dequantize.
        args = [interp.run_op(v.owner, []) for v in dq.operands]
        got = interp.run_op(dq, args)
        np.testing.assert_array_equal(got, quantize_weight(w, cfg).dequantize())
        assert row.packed_bytes == sum(len(v.owner.data.data) for v in dq.operands)
        assert row.fp32_bytes == 4 * n * k
    # The matmuls read the dequantized weights.
    for mm, dq in zip(ops_of(module, lp.MatmulOp), deqs, strict=True):
        assert mm.rhs is dq.result


def test_include_exclude() -> None:
    w1, w2 = weights(8, 16, 6), weights(4, 8, 7)
    x = np.ones((3, 16), np.float32)
    module = mlp(w1, w2)
    report = quantize_module(module, QuantConfig("int4", 8, exclude=("fc2.*",)))
    assert [r.name for r in report.rows] == ["fc1.weight"]
    assert report.skipped == ["fc2.weight"]
    kept = [op for op in ops_of(module, lp.ConstantOp) if op.dtype == F32]
    assert len(kept) == 1 and kept[0].attributes["lp.name"].data == "fc2.weight"
    d1 = reference_rtn(w1, "int4", 8, True)[3]
    got = interp.run_module(module, [x])[0]
    np.testing.assert_allclose(got, np.tanh(x @ d1.T) @ w2.T, rtol=1e-5, atol=1e-6)

    only = mlp(w1, w2, names=("layers.0.mlp.w1.weight", "lm_head.weight"))
    rep = quantize_module(only, QuantConfig("int4", 8, include=("layers.*.mlp.*",)))
    assert [r.name for r in rep.rows] == ["layers.0.mlp.w1.weight"]


def test_nothing_matched_leaves_the_module_alone_and_says_why() -> None:
    w1, w2 = weights(8, 16, 8), weights(4, 8, 9)
    module = mlp(w1, w2)
    text = print_module(module)
    report = quantize_module(module, QuantConfig("int4", exclude="*"))
    assert print_module(module) == text
    assert report.rows == [] and report.skipped == ["fc1.weight", "fc2.weight"]
    assert "left out by the include/exclude patterns" in str(report)

    def body(args):  # x @ W without transpose_b, and a matmul of two inputs
        c = const(w1.T.copy(), "w")
        m = lp.MatmulOp(args[0], c.result)
        m2 = lp.MatmulOp(m.result, args[1], transpose_b=True)
        return [c, m, m2], [m2.result]

    plain = module_of([(3, 16), (5, 8)], body)
    report = quantize_module(plain, "int4")
    assert report.rows == [] and "no linear layers" in str(report)
    assert not ops_of(plain, lp.DequantizeOp)


def test_unnamed_weights_are_numbered() -> None:
    module = mlp(weights(8, 16, 1), weights(4, 8, 2), names=(None, None))
    report = quantize_module(module, "int4-g8")
    assert [r.name for r in report.rows] == ["matmul0", "matmul1"]
    names = {op.attributes["lp.name"].data for op in ops_of(module, lp.ConstantOp)}
    assert names == {"matmul0", "matmul0.scale", "matmul1", "matmul1.scale"}


def test_shared_weight_keeps_f32_for_other_users() -> None:
    """Tied embedding: lp.take rows of E, and logits = h @ E.T with the same E."""
    emb = weights(10, 16, 3)
    ids = np.array([[1, 7, 3]], np.int64)

    def body(args):
        e = const(emb, "tok.weight")
        idx = lp.ConstantOp.from_array(ids, dtype("int64"))
        h = lp.TakeOp(e.result, idx.result, 0)  # [1, 3, 16]
        h2 = lp.ReshapeOp(h.result, (3, 16))
        y = lp.AddOp(h2.result, args[0])
        logits = lp.MatmulOp(y.result, e.result, transpose_b=True)
        again = lp.MatmulOp(args[0], e.result, transpose_b=True)
        return [e, idx, h, h2, y, logits, again], [logits.result, again.result]

    module = module_of([(3, 16)], body)
    x = weights(3, 16, 4)
    report = quantize_module(module, "int4-g8")
    verify_module(module)
    assert [r.name for r in report.rows] == ["tok.weight"]
    assert report.kept_fp32 == ["tok.weight"]
    assert "f32 copy kept" in str(report)
    assert len(ops_of(module, lp.DequantizeOp)) == 1  # one dequantize, two matmuls
    (take,) = ops_of(module, lp.TakeOp)
    assert isinstance(take.input.owner, lp.ConstantOp) and take.input.owner.dtype == F32
    logits, again = interp.run_module(module, [x])
    ed = reference_rtn(emb, "int4", 8, True)[3]
    y = emb[ids[0]] + x  # the embedding rows stay exact
    np.testing.assert_allclose(logits, y @ ed.T, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(again, x @ ed.T, rtol=1e-5, atol=1e-6)


def test_conv2d_weights_only_with_conv() -> None:
    w = weights(4, 3 * 3 * 3, 10).reshape(4, 3, 3, 3)
    x = weights(2 * 3 * 6, 6, 11).reshape(2, 3, 6, 6)

    def body(args):
        c = const(w, "conv.weight")
        y = lp.Conv2dOp(args[0], c.result, padding=(1, 1))
        return [c, y], [y.result]

    module = module_of([(2, 3, 6, 6)], body)
    assert quantize_module(module, "int4-g9").rows == []  # conv=False by default
    report = quantize_module(module, QuantConfig("int4", 9, conv=True))
    verify_module(module)
    assert report.rows[0].shape == (4, 3, 3, 3) and report.rows[0].name == "conv.weight"
    (dq,) = ops_of(module, lp.DequantizeOp)
    assert dq.result.type.get_shape() == (4, 27)
    got = interp.run_module(module, [x])[0]
    wd = reference_rtn(w.reshape(4, 27), "int4", 9, True)[3].reshape(4, 3, 3, 3)
    want = torch.nn.functional.conv2d(
        torch.from_numpy(x), torch.from_numpy(wd), padding=1
    ).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


# -- the pass object, the pipeline syntax, progress -----------------------------------


def test_pass_fields_map_to_the_config() -> None:
    assert QuantizeWeights().config() == QuantConfig("int4")
    assert QuantizeWeights(weight="uint3-g64", group_size=16).config() == QuantConfig(
        "uint3", group_size=16
    )
    assert QuantizeWeights(weight="int8", group_size=0).config().per_channel
    p = QuantizeWeights(
        weight="int2", symmetric=False, scale_dtype="e8m0", exclude=("lm_head*",)
    )
    assert p.config() == QuantConfig(
        "int2", symmetric=False, scale_dtype="e8m0", exclude=("lm_head*",)
    )
    for cfg in [QuantConfig("int8", None), QuantConfig("uint4", 32, conv=True)]:
        assert QuantizeWeights.from_config(cfg).config() == cfg
    with pytest.raises(QuantError, match=r"pass quantize.*group_size"):
        QuantizeWeights(group_size=-3)
    with pytest.raises(QuantError, match="pass quantize, option weight"):
        QuantizeWeights(weight="int4-bogus")


def test_pipeline_spec_and_report_attribute() -> None:
    module = mlp(weights(8, 32, 1), weights(4, 8, 2))
    pipeline = PassPipeline.parse_spec(
        get_all_passes(), 'quantize{weight="uint4" group_size=16 exclude="fc2.*"}'
    )
    (qpass,) = pipeline.passes
    assert isinstance(qpass, QuantizeWeights)
    assert qpass.config() == QuantConfig("uint4", 16, exclude=("fc2.*",))
    pipeline.apply(context(), module)
    assert qpass.report is not None
    assert [r.name for r in qpass.report.rows] == ["fc1.weight"]
    assert "!lp.uint<4>" in print_module(module)


@pytest.mark.parametrize(
    ("mode", "min_layers", "shown"),
    [
        ("always", 2, True),
        ("always", 3, False),
        ("never", 1, False),
        ("auto", 1, False),
    ],
)
def test_progress_bar(
    capsys: pytest.CaptureFixture[str], mode: str, min_layers: int, shown: bool
) -> None:
    module = mlp(weights(8, 16, 1), weights(4, 8, 2))
    with config.override(progress=mode, progress_min_layers=min_layers):
        quantize_module(module, "int4-g8")
    err = capsys.readouterr().err
    assert ("lpcc quantize" in err) == shown  # auto: captured stderr is no tty
    if shown:
        assert "2/2" in err


# -- end to end with the torch frontend ------------------------------------------------


class TorchMLP(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = torch.nn.Linear(64, 48)
        self.fc2 = torch.nn.Linear(48, 40)
        self.head = torch.nn.Linear(40, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.nn.functional.gelu(self.fc1(x))
        h = torch.nn.functional.silu(self.fc2(h))
        return self.head(h)


@pytest.mark.parametrize(
    "spec", ["int4-g32", "uint3-g16", "int2-g64-asym", "f4e2m1-g32", "int8-pc"]
)
def test_torch_mlp_matches_eager_with_dequantized_weights(spec: str) -> None:
    frontend = pytest.importorskip("lpcc.frontends.torch_export")
    model = TorchMLP().eval()
    x = torch.randn(5, 64, generator=torch.Generator().manual_seed(1))
    imported = frontend.import_module(model, (x,))
    report = quantize_module(imported.module, spec)
    assert [r.name for r in report.rows] == ["fc1.weight", "fc2.weight", "head.weight"]
    got = interp.run_module(imported.module, [x.numpy()])[0]
    fmt, group, sym, scale = fmt_of(spec)
    with torch.no_grad():
        for lin in (model.fc1, model.fc2, model.head):
            wd = reference_rtn(lin.weight.numpy(), fmt, group, sym, scale)[3]
            lin.weight.copy_(torch.from_numpy(wd))
        want = model(x).numpy()
    err = np.max(np.abs(got - want)) / np.max(np.abs(want))
    assert err <= 1e-5, err
