"""The `lpcc` command: --version, types, opt."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

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
