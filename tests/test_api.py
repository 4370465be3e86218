"""lpcc.compile / CompiledModel / lpcc.load: the user's view, end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import lpcc
from lpcc import config
from lpcc.api import CompileError


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(33, 16), nn.GELU(), nn.Linear(16, 3)).eval()


@pytest.fixture(scope="module")
def compiled() -> tuple[nn.Module, lpcc.CompiledModel]:
    model = mlp()
    return model, lpcc.compile(model, (torch.randn(5, 33),), quant="int4-g16")


def test_torch_in_torch_out_numpy_in_numpy_out() -> None:
    model = mlp()
    x = torch.randn(5, 33)
    prog = lpcc.compile(model, (x,))
    got = prog(x)
    assert isinstance(got, torch.Tensor)
    torch.testing.assert_close(got, model(x), rtol=1e-4, atol=1e-5)
    got_np = prog(x.numpy())
    assert isinstance(got_np, np.ndarray) and got_np.dtype == np.float32
    np.testing.assert_allclose(got_np, model(x).detach().numpy(), rtol=1e-4, atol=1e-5)


def test_unknown_target_says_so() -> None:
    with pytest.raises(CompileError, match=r"unknown target 'tpu'.*cuda"):
        lpcc.compile(mlp(), (torch.randn(2, 33),), target="tpu")


def test_wrong_inputs_name_the_parameter(
    compiled: tuple[nn.Module, lpcc.CompiledModel],
) -> None:
    _, prog = compiled
    name = prog.program.inputs[0].name
    with pytest.raises(lpcc.LpccError, match="1 input"):
        prog(torch.randn(5, 33), torch.randn(5, 33))
    with pytest.raises(lpcc.LpccError, match=rf"{name}.*\[5, 33\].*\[5, 32\]"):
        prog(torch.randn(5, 32))
    with pytest.raises(lpcc.LpccError, match=rf"{name}.*f32.*int64"):
        prog(torch.ones(5, 33, dtype=torch.int64))
    with pytest.raises(lpcc.LpccError, match=rf"{name}.*bfloat16"):
        prog(torch.ones(5, 33, dtype=torch.bfloat16))


def test_ir_stages(compiled: tuple[nn.Module, lpcc.CompiledModel]) -> None:
    _, prog = compiled
    assert prog.stages[:2] == ["import", "quantize"]
    assert "lp.matmul" in prog.ir("import")
    assert "lp.dequantize" not in prog.ir("import")
    assert "lp.dequantize" in prog.ir("quantize")
    assert "!lp.int<4>" in prog.ir(prog.stages[-1])
    with pytest.raises(lpcc.LpccError, match="stages of this program: import"):
        prog.ir("nonsense")
    # every stage's text parses back (a dump is a valid input to `lpcc opt`)
    from lpcc.ir.dialect import parse_module

    for stage in prog.stages:
        parse_module(prog.ir(stage))


def test_listing_shows_calls_and_return(
    compiled: tuple[nn.Module, lpcc.CompiledModel],
) -> None:
    text = compiled[1].as_text()
    assert "call" in text and "ret" in text


def test_quant_report(compiled: tuple[nn.Module, lpcc.CompiledModel]) -> None:
    report = compiled[1].quant_report()
    assert len(report.rows) == 2
    assert "int4" in str(report)
    with pytest.raises(lpcc.LpccError, match="without quant"):
        lpcc.compile(mlp(), (torch.randn(2, 33),)).quant_report()


def test_save_load_round_trip(
    compiled: tuple[nn.Module, lpcc.CompiledModel], tmp_path: Path
) -> None:
    _, prog = compiled
    x = torch.randn(5, 33)
    path = tmp_path / "mlp.lpcc"
    prog.save(path)
    loaded = lpcc.load(path)
    assert torch.equal(loaded(x), prog(x))
    assert loaded.as_text() == prog.as_text()
    assert str(loaded.quant_report()) == str(prog.quant_report())
    with pytest.raises(lpcc.LpccError, match="compile the model again"):
        loaded.ir("import")


def test_dump_ir_writes_every_stage(tmp_path: Path) -> None:
    with config.override(dump_ir=str(tmp_path / "dump")):
        prog = lpcc.compile(mlp(), (torch.randn(2, 33),), quant="int8-pc")
    names = sorted(p.name for p in (tmp_path / "dump").iterdir())
    assert names[0] == "000_import.mlir" and names[1] == "001_quantize.mlir"
    assert "program.txt" in names
    assert (tmp_path / "dump" / "000_import.mlir").read_text() == prog.ir(
        "import", locations=True
    )


def test_unwritable_dump_dir_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with (
        config.override(dump_ir=str(blocker / "sub")),
        pytest.raises(lpcc.LpccError, match="LPCC_DUMP_IR"),
    ):
        lpcc.compile(mlp(), (torch.randn(2, 33),))


def _models() -> list[tuple[str, nn.Module, tuple[torch.Tensor, ...]]]:
    from lpcc.models import MLP, SmallCNN, TinyGPT2, TinyLlama

    ids = torch.randint(0, 64, (2, 5), generator=torch.Generator().manual_seed(1))
    img = torch.randn(2, 3, 9, 9, generator=torch.Generator().manual_seed(2))
    x = torch.randn(3, 16, generator=torch.Generator().manual_seed(3))
    return [
        ("mlp", MLP(), (x,)),
        ("llama", TinyLlama(), (ids,)),
        ("gpt2", TinyGPT2(), (ids,)),
        ("cnn", SmallCNN(), (img,)),
    ]


MODELS = _models()


@pytest.mark.parametrize(
    ("name", "model", "inputs"), MODELS, ids=[m[0] for m in MODELS]
)
def test_models_compile_save_load_and_match_eager(
    name: str, model: nn.Module, inputs: tuple[torch.Tensor, ...], tmp_path: Path
) -> None:
    """Through the whole pipeline, the VM and a file: fp32, rel. error <= 1e-4."""
    model = model.eval()
    with torch.no_grad():
        want = model(*inputs)
    prog = lpcc.compile(model, inputs)
    prog.save(tmp_path / f"{name}.lpcc")
    got = lpcc.load(tmp_path / f"{name}.lpcc")(*inputs)
    err = float((got - want).abs().max() / want.abs().max())
    assert err <= 1e-4, (name, err)


@pytest.mark.parametrize("quant", ["int4-g16", "uint3-g8", "f4e2m1-g32-se8m0"])
def test_quantized_llama_matches_eager_on_dequantized_weights(quant: str) -> None:
    """The compiled int-N model == torch eager with the dequantized weights.

    The dequant kernel only reassociates float sums; the LUT path's int8
    tables are checked in tests/passes/test_pipeline.py.
    """
    from lpcc.demo import dequantized_copy
    from lpcc.models import TinyLlama
    from lpcc.quant import parse_quant

    model = TinyLlama().eval()
    ids = torch.randint(0, 64, (1, 7), generator=torch.Generator().manual_seed(4))
    prog = lpcc.compile(model, (ids,), quant=quant, kernels={"*": "dequant"})
    reference = dequantized_copy(model, parse_quant(quant))
    with torch.no_grad():
        want, fp32 = reference(ids), model(ids)
    got = prog(ids)
    err = float((got - want).abs().max() / want.abs().max())
    assert err <= 1e-5, err
    # and quantization did change the model (the check above is not vacuous)
    assert float((fp32 - want).abs().max()) > 100 * float((got - want).abs().max())
    assert len(prog.quant_report().rows) == 2 * 7 + 1  # q,k,v,o,gate,up,down + head


def test_unbounded_dynamic_size_saves_and_loads(tmp_path: Path) -> None:
    """torch.export gives an unbounded size the top 2**63 - 1; the program
    holds None instead, so the file (sizes up to 2**62) loads back."""
    from torch.export import Dim

    m = mlp()
    x = torch.randn(3, 33)
    prog = lpcc.compile(m, (x,), dynamic_shapes={"input": {0: Dim("b")}})
    assert all(hi is None or hi < 2**62 for _, hi in prog.program.dim_ranges.values())
    prog.save(tmp_path / "m.lpcc")
    back = lpcc.load(tmp_path / "m.lpcc")
    x5 = torch.randn(5, 33)
    assert torch.equal(back(x5), prog(x5))


def test_on_stage_reports_every_stage_in_order() -> None:
    seen: list[tuple[str, float]] = []
    prog = lpcc.compile(
        mlp(),
        (torch.randn(2, 33),),
        quant="int4-g32",
        on_stage=lambda n, s: seen.append((n, s)),
    )
    names = [n for n, _ in seen]
    assert names == [*prog.stages, "lower"]  # import, quantize, each pass, lower
    assert names[:2] == ["import", "quantize"] and len(names) > 4
    assert all(s >= 0 for _, s in seen)
