"""The `lpcc` command: --version, types, opt."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import lpcc
from lpcc.cli import main

IR = """func.func @f(%x: tensor<4xf32>) -> tensor<4xf32> {
  %a = lp.exp %x : tensor<4xf32>
  %b = lp.exp %x : tensor<4xf32>
  %c = lp.add %a, %b : tensor<4xf32>
  func.return %c : tensor<4xf32>
}
"""


def test_console_script_version() -> None:
    exe = Path(sys.executable).parent / "lpcc"
    out = subprocess.run(
        [str(exe), "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"lpcc {lpcc.__version__}"


def test_types_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["types"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["name", "bits", "min", "max"]
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert {
        "f4e2m1",
        "f6e2m3",
        "f6e3m2",
        "f8e4m3fn",
        "f8e5m2",
        "e8m0",
        "bf16",
        "f16",
        "f32",
        "int3",
        "uint5",
    } <= set(rows)
    assert rows["f4e2m1"][1:6] == ["4", "-6", "6", "0.5", "0.5"]
    assert rows["f8e4m3fn"][1:4] == ["8", "-448", "448"]
    assert rows["int3"][1:4] == ["3", "-4", "3"]


def test_types_json_and_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["types", "--json", "float<5,10,finite>", "uint2"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["float<5,10,finite>", "uint2"]
    assert rows[0]["max"] == 131008.0 and rows[1]["max"] == 3


def test_types_bad_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["types", "int99"]) == 1
    assert (
        "lpcc types: error: integer width must be in 1..64" in capsys.readouterr().err
    )


def test_opt_runs_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in.mlir"
    src.write_text(IR)
    assert main(["opt", str(src), "-p", "cse"]) == 0
    out = capsys.readouterr().out
    assert out.count("lp.exp") == 1 and "lp.add %a, %a" in out
    dest = tmp_path / "out.mlir"
    assert main(["opt", str(src), "-o", str(dest)]) == 0
    assert dest.read_text().count("lp.exp") == 2


def test_opt_round_trips_a_module_with_every_op(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lpcc.ir.dialect import print_module
    from tests.ir.test_dialect import every_op_module

    text = print_module(every_op_module())
    src = tmp_path / "every_op.mlir"
    src.write_text(text)
    assert main(["opt", str(src)]) == 0
    assert capsys.readouterr().out == text


def test_opt_lists_passes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["opt", "--list-passes"]) == 0
    assert {"cse", "dce", "canonicalize"} <= set(capsys.readouterr().out.split())


@pytest.mark.parametrize(
    "args, text, message",
    [
        (["-p", "nope"], IR, "Unrecognized passes: \\['nope'\\]"),
        (["-p", "cse,,dce"], IR, "Expected pass name"),
        (["-p", "cse{foo=1}"], IR, "not found in expected arguments"),
        (
            [],
            IR.replace(
                "  %b", "  %r = lp.reshape %x : tensor<4xf32> -> tensor<3xf32>\n  %b"
            ),
            "does not verify: lp.reshape: \\[4\\] \\(4 elements\\) cannot become",
        ),
        ([], "func.func @f( {", "cannot parse"),
    ],
)
def test_opt_errors(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    text: str,
    message: str,
) -> None:
    src = tmp_path / "in.mlir"
    src.write_text(text)
    assert main(["opt", str(src), *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("lpcc opt: error: ")
    assert re.search(message, err), err


def test_opt_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["opt", "/nonexistent/x.mlir"]) == 1
    assert "cannot read /nonexistent/x.mlir: No such file" in capsys.readouterr().err


def test_opt_unwritable_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in.mlir"
    src.write_text(IR)
    assert (
        main(["opt", str(src), "-o", str(tmp_path / "no" / "such" / "dir.mlir")]) == 1
    )
    assert "cannot write" in capsys.readouterr().err


# -- compile / run / dump / bench ---------------------------------------------------

QUANT = "int4-g32"
MLP_ARGS = ["compile", "lpcc.models:MLP", "--example", "3x16"]


def _eager(x: np.ndarray, quant: str | None = QUANT) -> np.ndarray:
    """torch eager on MLP(seed=0), with the weights the program quantized."""
    import torch

    from lpcc.demo import dequantized_copy
    from lpcc.models import MLP
    from lpcc.quant import parse_quant

    model = MLP(seed=0).eval()
    if quant is not None:
        model = dequantized_copy(model, parse_quant(quant))
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


@pytest.fixture(scope="module", params=["cpu", "reference"])
def compiled(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path]:
    """MLP(seed=0), int4-g32, compiled by the CLI: cpu at -O2, reference at -O1."""
    target = request.param
    out = tmp_path_factory.mktemp("cli") / f"mlp_{target}.lpcc"
    opt = ["-O", "1"] if target == "reference" else []
    argv = ["compile", "lpcc.models:MLP", "--example", "3x16", "--quant", QUANT]
    assert main([*argv, "--target", target, *opt, "-o", str(out)]) == 0
    return target, out


def test_compile_run_matches_torch(
    compiled: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target, path = compiled
    x = np.random.default_rng(1).standard_normal((3, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    y_path = tmp_path / "y.npy"
    capsys.readouterr()
    assert (
        main(["run", str(path), "--input", str(tmp_path / "x.npy"), "-o", str(y_path)])
        == 0
    )
    assert f"wrote {y_path}: float32 [3, 8]" in capsys.readouterr().out
    got, want = np.load(y_path), _eager(x)
    scale = float(np.abs(want).max())
    if target == "reference":
        # -O1: dequantize then f32 matmul, as torch; K <= 32 sums of O(1)
        # terms differ by a few float32 ulps of the sum, far below 1e-5.
        assert np.abs(got - want).max() <= 1e-5 * max(scale, 1.0)
    else:
        # -O2 at 3 rows takes the LUT path: activations rounded per group to
        # int8 (relative error <= 1/254 each, docs/using.md "about 1e-2 relative
        # RMS" on the logits), so allow 3% of the output's scale.
        assert np.abs(got - want).max() <= 3e-2 * scale
    # without --output: names, shapes and the first values are printed
    assert main(["run", str(path), "-i", str(tmp_path / "x.npy")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("linear_2: float32 [3, 8] first values [")
    assert f"{got[0, 0]:.6f}"[:7] in out


def test_compile_summary_names_kernels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The one-line summary, -q (silent) and -v (pipeline and stage timings)."""
    src = tmp_path / "tiny_model.py"
    src.write_text(
        "import torch\n\n"
        "def build():\n"
        "    torch.manual_seed(0)\n"
        "    return torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU())\n"
    )
    out = tmp_path / "tiny.lpcc"
    argv = ["compile", f"{src}:build", "--example", "5x8", "-o", str(out)]
    dump = tmp_path / "dump"
    opts = ["--target", "reference", "--dynamic", "0:0:2..16", "--dump-ir", str(dump)]
    assert main(["-v", *argv, *opts]) == 0
    captured = capsys.readouterr()
    assert re.fullmatch(
        rf"compiled {re.escape(str(src))}:build for reference: (\d+) kernels "
        rf"\(0 native\), \d+ constants [\d.]+ (B|KiB); [\d.]+ s -> "
        rf"{re.escape(str(out))}\n",
        captured.out,
    ), captured.out
    err = captured.err
    assert "pipeline: " in err
    for stage in ("import", "cse", "lower"):
        assert re.search(rf"^  {stage} +[\d.]+ ms$", err, re.M), err
    assert (dump / "000_import.mlir").is_file() and (dump / "program.txt").is_file()
    # the dynamic batch: run it at a size other than the example's
    import torch
    from lpcc.runtime import load

    from lpcc.cli import load_factory

    program = load(out)
    (sym,) = program.dim_ranges
    assert program.dim_ranges[sym] == (2, 16)
    x = np.random.default_rng(3).standard_normal((7, 8)).astype(np.float32)
    np.save(tmp_path / "x7.npy", x)
    y = tmp_path / "y7.npy"
    assert (
        main(["-q", "run", str(out), "-i", str(tmp_path / "x7.npy"), "-o", str(y)]) == 0
    )
    with torch.no_grad():
        want = load_factory(f"{src}:build")()(torch.from_numpy(x)).numpy()
    # one f32 dot product of 8 terms and a ReLU: within a few ulps
    np.testing.assert_allclose(np.load(y), want, rtol=1e-6, atol=1e-6)
    assert main(["-q", *argv]) == 0
    assert capsys.readouterr() == ("", "")


def test_dump(compiled: tuple[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    target, path = compiled
    assert main(["dump", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"program (target {target})\ninputs (1):\n  %0 x: f32[3, 16]")
    assert "\ncode:\n" in out and "\n  ret %" in out
    meta = out.split("metadata:\n", 1)[1]
    meta_json = json.loads(meta[: meta.index("\n}\n") + 2])
    assert meta_json["pipeline"] and meta_json["compile_seconds"] > 0
    assert f"weight quantization {QUANT}: 3 layers" in out
    for name in ("layers.0.weight", "layers.1.weight", "layers.2.weight"):
        assert re.search(rf"^{re.escape(name)} +\d+x\d+ +int4 ", out, re.M), out


def test_bench(compiled: tuple[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    _, path = compiled
    argv = ["bench", str(path), "--warmup", "1", "--repeat", "5", "--threads", "1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "inputs [3, 16], threads 1): 5 runs after 1 warm-up" in out
    stats = re.search(
        r"median ([\d.]+) ms  p10 ([\d.]+) ms  p90 ([\d.]+) ms  min ([\d.]+) ms", out
    )
    assert stats, out
    med, p10, p90, low = map(float, stats.groups())
    assert 0 < low <= p10 <= med <= p90


def test_compile_and_run_with_the_console_script(tmp_path: Path) -> None:
    """The installed `lpcc` entry point, end to end, without quantization."""
    exe = str(Path(sys.executable).parent / "lpcc")
    out = tmp_path / "mlp.lpcc"
    x = np.random.default_rng(2).standard_normal((2, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    subprocess.run(
        [exe, "-q", "compile", "lpcc.models:MLP", "--example", "2x16", "-o", str(out)],
        check=True,
        cwd=tmp_path,
    )
    y = tmp_path / "y.npy"
    subprocess.run(
        [exe, "-q", "run", str(out), "-i", "x.npy", "-o", str(y)],
        check=True,
        cwd=tmp_path,
    )
    want = _eager(x, quant=None)
    # f32 GEMMs with K <= 32 and the erf GELU: a few ulps of O(1) values.
    np.testing.assert_allclose(np.load(y), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "argv, code, message",
    [
        (
            ["compile", "nosuch_mod:build", "--example", "3x16", "-o", "a.lpcc"],
            1,
            "model 'nosuch_mod:build': no module named 'nosuch_mod'",
        ),
        (
            ["compile", "lpcc.models:Nope", "--example", "3x16", "-o", "a.lpcc"],
            1,
            "lpcc.models has no 'Nope'; its callables: .*MLP",
        ),
        (
            ["compile", "lpcc.models", "--example", "3x16", "-o", "a.lpcc"],
            1,
            "expected MODULE:FACTORY",
        ),
        (
            ["compile", "lpcc.models:MLPConfig", "--example", "3x16", "-o", "a.lpcc"],
            1,
            "returned a MLPConfig, not a torch.nn.Module",
        ),
        (
            ["compile", "lpcc.models:MLP", "--example", "3y16", "-o", "a.lpcc"],
            2,
            "argument --example: '3y16': a shape is sizes joined by 'x'",
        ),
        (
            ["compile", "lpcc.models:MLP", "--example", "3x16:int7", "-o", "a.lpcc"],
            2,
            "argument --example: '3x16:int7': unknown dtype 'int7'",
        ),
        (
            ["compile", "lpcc.models:MLP", "--example", "3x16", "--dynamic", "0"],
            2,
            "argument --dynamic: '0': expected INPUT:DIM",
        ),
        (
            ["compile", "lpcc.models:MLP", "-o", "a.lpcc"],
            2,
            "the following arguments are required: --example",
        ),
        (
            [*MLP_ARGS, "--dynamic", "1:0", "-o", "a.lpcc"],
            1,
            "--dynamic 1:0: there are 1 example inputs",
        ),
        (
            [*MLP_ARGS, "--quant", "int99", "-o", "a.lpcc"],
            1,
            "quant='int99': 'int99' is not a weight format",
        ),
        (
            ["compile", "lpcc.models:MLP", "--example", "3x16", "-o", "no/dir/a.lpcc"],
            1,
            "-o no/dir/a.lpcc: the directory no/dir does not exist",
        ),
        (["run", "missing.lpcc"], 1, "cannot read program missing.lpcc: No such"),
        (["-q", "-v", "types"], 2, "--quiet and --verbose exclude each other"),
        (["bench", "missing.lpcc"], 1, "cannot read program missing.lpcc"),
        (["dump"], 2, "the following arguments are required: program"),
    ],
)
def test_cli_errors(
    argv: list[str],
    code: int,
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == code
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert "Traceback" not in err


def test_run_errors(
    compiled: tuple[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Input count/shape/dtype, files: exit 1 and a message naming what to fix."""
    _, path = compiled
    prog = str(path)
    np.save(tmp_path / "x.npy", np.zeros((3, 16), np.float32))
    np.save(tmp_path / "short.npy", np.zeros((2, 16), np.float32))
    np.save(tmp_path / "f64.npy", np.zeros((3, 16), np.float64))
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    (tmp_path / "junk.lpcc").write_bytes(b"garbage")
    (tmp_path / "cut.lpcc").write_bytes(path.read_bytes()[:200])
    x = str(tmp_path / "x.npy")
    cases = [
        (["run", prog], "the program takes 1 inputs \\(x\\), got 0"),
        (["run", prog, "-i", x, x], "the program takes 1 inputs \\(x\\), got 2"),
        (
            ["run", prog, "-i", str(tmp_path / "short.npy")],
            "input 'x' \\(#0\\): dimension 0 is 2, expected 3",
        ),
        (
            ["run", prog, "-i", str(tmp_path / "f64.npy")],
            "input 'x' \\(#0\\): expected dtype f32 .* got float64",
        ),
        (["run", prog, "-i", str(tmp_path / "junk.npy")], "--input .*junk.npy: not a"),
        (["run", prog, "-i", x, "-o", "a.npy", "b.npy"], "--output: the program has 1"),
        (["run", str(tmp_path / "junk.lpcc")], "not an lpcc program file"),
        (["dump", str(tmp_path / "cut.lpcc")], "cut.lpcc"),
        (["bench", prog, "--size", "seq=4"], "--size seq=4: the program has no size"),
        (["bench", prog, "--repeat", "0"], "repeat >= 1"),
    ]
    for argv, message in cases:
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert err.startswith(f"lpcc {argv[0]}: error: "), err
        assert re.search(message, err), (argv, err)
    # -v adds the traceback
    assert main(["-v", "run", prog]) == 1
    assert "Traceback (most recent call last)" in capsys.readouterr().err


def test_cuda_target_compiles_and_runs_only_where_it_can(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--target cuda` compiles anywhere; running says what it needs, and runs
    on the host emulator when asked (LPCC_CUDA_DEVICE=emulate)."""
    from lpcc.codegen.cuda.runner import gpu_available

    if gpu_available():
        pytest.skip("this machine has a GPU: the no-GPU message does not apply")
    monkeypatch.setenv("LPCC_CUDA_ARCHS", "none")
    out = tmp_path / "mlp_cuda.lpcc"
    argv = ["compile", "lpcc.models:MLP", "--example", "3x16", "--quant", QUANT]
    assert main([*argv, "--target", "cuda", "-o", str(out)]) == 0
    x = np.random.default_rng(1).standard_normal((3, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    capsys.readouterr()
    monkeypatch.setenv("LPCC_CUDA_DEVICE", "auto")
    assert main(["run", str(out), "-i", str(tmp_path / "x.npy")]) == 1
    err = capsys.readouterr().err
    assert "CUDA kernels" in err and "LPCC_CUDA_DEVICE=emulate" in err, err
    monkeypatch.setenv("LPCC_CUDA_DEVICE", "emulate")
    y = tmp_path / "y.npy"
    assert main(["run", str(out), "-i", str(tmp_path / "x.npy"), "-o", str(y)]) == 0
    # dequant kernels in f32 against torch on the same dequantized weights:
    # K <= 32 products per output, so a few f32 ulps of the output's scale
    want = _eager(x)
    assert np.abs(np.load(y) - want).max() <= 1e-5 * max(float(np.abs(want).max()), 1)
