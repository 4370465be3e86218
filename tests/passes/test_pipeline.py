"""The default pipelines (-O0/-O1/-O2) end to end.

The reference for a quantized model is torch eager on its dequantized
weights (`lpcc.demo.dequantized_copy`, built from `lpcc.quant`, not from the
passes). Paths whose arithmetic only reassociates float sums (-O1, the
dequant path at -O2) must match to 1e-5 of the output's scale. The LUT path
quantizes its tables to int8 (T-MAC): each GEMM's error is bounded by the
derivation in tests/passes/test_lut_gemm.py; the end-to-end figure here is a
sanity check on the relative RMS error of the logits (measured 1e-2 to 3e-2
on this 2-layer random model, for act groups 4 to 32; checked at 5e-2; with
f32 tables it is 3e-7).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import lpcc
from lpcc.cli import main
from lpcc.demo import dequantized_copy
from lpcc.errors import LpccError
from lpcc.ir.dialect import lowp, parse_module, print_module
from lpcc.models import LlamaConfig, TinyLlama
from lpcc.passes import get_all_passes
from lpcc.passes.pipeline import (
    PipelineError,
    default_pipeline,
    parse_pipeline,
    run_pipeline,
)
from lpcc.quant import parse_quant

CFG = LlamaConfig(vocab_size=96, dim=64, hidden_dim=128, n_layers=2)


@pytest.fixture(scope="module")
def llama() -> TinyLlama:
    return TinyLlama(CFG, seed=3).eval()


def ids(m: int) -> torch.Tensor:
    return torch.randint(0, 96, (1, m), generator=torch.Generator().manual_seed(m))


def names(spec: str) -> list[str]:
    return [p.name for p in parse_pipeline(spec)]


def test_levels() -> None:
    assert default_pipeline(0) == ""
    o1, o2 = names(default_pipeline(1)), names(default_pipeline(2))
    assert "fuse-elementwise" in o1 and "lut-gemm" not in o1
    assert set(o1) <= set(o2)
    # Every pass lpcc registers is in the cpu -O2 pipeline, except quantize
    # (it runs when quant= asks); tile only records CPU kernels' tiles.
    o2_cpu = names(default_pipeline(2, target="cpu"))
    assert set(get_all_passes()) - {"quantize"} <= set(o2_cpu)
    assert "tile" not in o2 and o2_cpu[-1] == "tile"
    assert names(default_pipeline(1, target="cpu"))[-1] == "tile"
    with pytest.raises(PipelineError, match="opt_level must be one of 0, 1, 2"):
        default_pipeline(3)
    with pytest.raises(LpccError, match="unknown kernel kind 'fast'"):
        default_pipeline(2, kernels={"*": "fast"})
    with pytest.raises(PipelineError, match=r"(?s)bad pipeline 'nope'.*known passes"):
        parse_pipeline("nope")


def relative(got: np.ndarray, want: np.ndarray) -> tuple[float, float]:
    """(max error / max |want|, RMS error / RMS want)."""
    d = got.astype(np.float64) - want
    return (
        float(np.abs(d).max() / np.abs(want).max()),
        float(np.sqrt((d**2).mean() / (want**2).mean())),
    )


# (quant, rows M, kernel every quantized matmul must get at -O2)
CASES = [
    ("int2-g32", 1, "lut"),
    ("uint3-g32-asym", 4, "lut"),
    ("int3-g64", 12, "lut"),  # prefill: LUT at any M
    ("int4-g32", 1, "lut"),
    ("uint8-g64-asym", 3, "dequant"),
    ("int4-g32-a8", 2, "dequant-a8"),
    ("f4e2m1-g32", 2, "dequant"),
]


@pytest.mark.parametrize(("quant", "m", "kernel"), CASES)
def test_o2_matches_the_dequantized_model(llama, quant, m, kernel) -> None:
    x = ids(m)
    prog = lpcc.compile(llama, (x,), quant=quant, opt_level=2)
    with torch.no_grad():
        want = dequantized_copy(llama, parse_quant(quant))(x).double().numpy()
    got = prog(x).numpy()
    final = parse_module(prog.ir(prog.stages[-1]))
    ops = [op for op in final.walk() if op.name.startswith("lp.")]
    n_lut = sum(isinstance(op, lowp.LutAccumulateOp) for op in ops)
    n_group = sum(isinstance(op, lowp.GroupMatmulOp) for op in ops)
    assert not any(op.name == "lp.dequantize" for op in ops)  # never widened
    err_max, err_rms = relative(got, want)
    if kernel == "lut":
        assert n_lut == 7 * CFG.n_layers + 1 and n_group == 0  # + the head
        assert err_rms <= 5e-2, err_rms
    elif kernel == "dequant-a8":
        # x rounds to int8 per group: |x - aX| <= a/2, a = max|x|/127.
        assert n_group == 7 * CFG.n_layers + 1 and n_lut == 0
        assert any(op.name == "lp.quantize" for op in ops)
        assert err_rms <= 2e-2, err_rms
    else:
        assert n_group == 7 * CFG.n_layers + 1 and n_lut == 0
        assert err_max <= 1e-5, err_max


def test_lut_path_is_exact_with_f32_tables(llama) -> None:
    """With f32 tables the LUT rewrite is float reassociation only."""
    from lpcc.frontends.torch_export import import_module

    from lpcc.ir import interp
    from lpcc.passes.quantize import quantize_module

    x = ids(2)
    imported = import_module(llama, (x,))
    quantize_module(imported.module, "int2-g32")
    before = interp.run_module(imported.module.clone(), [x.numpy()])[0]
    spec = default_pipeline(2).replace("lut-gemm", 'lut-gemm{table="f32"}')
    run_pipeline(imported.module, spec)
    after = interp.run_module(imported.module, [x.numpy()])[0]
    assert relative(after, before.astype(np.float64))[0] <= 1e-5


def test_dense_override_is_o1(llama) -> None:
    """kernels={"*": "dense"} leaves every matmul alone: -O2 == -O1, bit for bit."""
    x = ids(2)
    o1 = lpcc.compile(llama, (x,), quant="int2-g32", opt_level=1)
    dense = lpcc.compile(
        llama, (x,), quant="int2-g32", opt_level=2, kernels={"*": "dense"}
    )
    assert "lp.group_matmul" not in dense.ir(dense.stages[-1])
    assert np.array_equal(o1(x).numpy(), dense(x).numpy())
    per_layer = lpcc.compile(
        llama, (x,), quant="int2-g32", kernels={"layers.0.*": "dequant"}
    )
    text = per_layer.ir("select-kernels")
    assert 'lp.kernel = "dequant"' in text and 'lp.kernel = "lut"' in text


def test_opt_levels_cut_kernels_and_keep_results(llama) -> None:
    x = ids(3)
    progs = {
        lvl: lpcc.compile(llama, (x,), quant="int4-g32", opt_level=lvl)
        for lvl in (0, 1, 2)
    }
    calls = {lvl: p.program.stats()["calls"] for lvl, p in progs.items()}
    assert calls[0] > calls[1] >= calls[2]
    assert np.array_equal(progs[0](x).numpy(), progs[1](x).numpy())
    assert progs[0].stages == ["import", "quantize"]
    assert progs[2].stages[2:] == [
        "select-kernels",
        "dequant-after-group-gemm",
        "lut-gemm",
        "symmetrize-tables",
        "fold-constants",
        "canonicalize",
        "cse",
        "fuse-epilogue",
        "fuse-elementwise",
        "fuse-table-precompute",
        "dce",
    ]


def test_recorded_pipeline_replays(llama, tmp_path: Path) -> None:
    """program.meta["pipeline"] through `lpcc opt -p` gives the final IR again."""
    x = ids(1)
    prog = lpcc.compile(llama, (x,), quant="int3-g32")
    spec = prog.program.meta["pipeline"]
    src = tmp_path / "quantized.mlir"
    src.write_text(prog.ir("quantize"))
    out = tmp_path / "out.mlir"
    assert main(["opt", str(src), "-p", spec, "-o", str(out)]) == 0
    replayed = parse_module(out.read_text())
    assert print_module(replayed) == prog.ir(prog.stages[-1])


def test_cli_opt_level(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "f.mlir"
    src.write_text(
        """
func.func @main(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
  %a = lp.exp %x : tensor<4x8xf32>
  %b = lp.mul %a, %x : tensor<4x8xf32>
  %c = lp.tanh %b : tensor<4x8xf32>
  func.return %c : tensor<4x8xf32>
}
"""
    )
    assert main(["opt", str(src), "-O0"]) == 0
    assert "lp.fused" not in capsys.readouterr().out
    assert main(["opt", str(src), "-O1"]) == 0
    out = capsys.readouterr().out
    assert out.count("lp.fused elementwise") == 1
    assert main(["opt", str(src), "-O2", "--target", "cpu"]) == 0


def test_a_failing_pass_is_named(monkeypatch: pytest.MonkeyPatch, llama) -> None:
    from lpcc.passes.fuse_elementwise import FuseElementwise

    def boom(self, ctx, module):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(FuseElementwise, "apply", boom)
    with pytest.raises(PipelineError, match=r"pass 'fuse-elementwise' failed.*kaboom"):
        lpcc.compile(llama, (ids(1),), opt_level=1)


def _other_models():
    from lpcc.models import MLP, CNNConfig, GPT2Config, MLPConfig, SmallCNN, TinyGPT2

    g = torch.Generator().manual_seed(7)
    return [
        (
            "mlp-silu",
            MLP(MLPConfig(in_dim=64, hidden_dim=96, activation="silu"), seed=1),
            (torch.randn(3, 64, generator=g),),
        ),
        (
            "gpt2",
            TinyGPT2(GPT2Config(dim=64, vocab_size=80), seed=2),
            (torch.randint(0, 80, (2, 5), generator=g),),
        ),
        (
            "cnn",
            SmallCNN(CNNConfig(channels=(8, 16)), seed=3),
            (torch.randn(2, 3, 12, 12, generator=g),),
        ),
    ]


@pytest.mark.parametrize("quant", ["int3-g32", "uint4-g32-asym", "int8-g64"])
@pytest.mark.parametrize(("name", "model", "inputs"), _other_models())
def test_o2_on_the_other_models(name, model, inputs, quant) -> None:
    """MLP (bias + SiLU epilogues), GPT-2 (fused QKV, GELU-tanh, tied head) and
    the CNN (conv weights quantized too) at -O2 against dequantized eager."""
    model = model.eval()
    cfg = parse_quant(quant)
    if name == "cnn":
        cfg = lpcc.QuantConfig(**{**cfg.__dict__, "conv": True})
    prog = lpcc.compile(model, inputs, quant=cfg, opt_level=2)
    with torch.no_grad():
        want = dequantized_copy(model, cfg)(*inputs).double().numpy()
    got = prog(*inputs).numpy()
    text = prog.ir(prog.stages[-1])
    assert "lp.dequantize" not in text or name == "cnn"  # conv keeps its dequantize
    err_max, err_rms = relative(got, want)
    if "lp.lut_accumulate" in text:  # int8 tables, see the module docstring
        assert err_rms <= 5e-2, err_rms
    else:
        assert err_max <= 1e-5, err_max


def test_short_last_group_takes_the_dequant_path() -> None:
    """K = 96, G = 64: groups of 64 and 32 (as the scales); LUT needs G | K."""
    from lpcc.models import MLP, MLPConfig

    model = MLP(MLPConfig(in_dim=64, hidden_dim=96), seed=4).eval()
    x = torch.randn(2, 64, generator=torch.Generator().manual_seed(9))
    prog = lpcc.compile(model, (x,), quant="int3-g64")
    text = prog.ir(prog.stages[-1])
    # layer 0 (K = 64) looks up tables; layers 1 and 2 (K = 96) do not
    assert text.count("lp.lut_accumulate") == 1
    assert text.count("lp.group_matmul") == 2 and "lp.dequantize" not in text
    with torch.no_grad():
        want = dequantized_copy(model, parse_quant("int3-g64"))(x).double().numpy()
    assert relative(prog(x).numpy(), want)[1] <= 5e-2
    exact = lpcc.compile(model, (x,), quant="int3-g64", kernels={"*": "dequant"})
    assert relative(exact(x).numpy(), want)[0] <= 1e-5


def test_kernels_need_opt_level_2(llama) -> None:
    with pytest.raises(lpcc.LpccError, match=r"kernels= .* opt_level=1"):
        lpcc.compile(llama, (ids(1),), quant="int2", opt_level=1, kernels={"*": "lut"})
