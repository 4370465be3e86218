"""The one layout of compile errors (`lpcc.errors.error_message`).

Each message says what failed (op, pass or stage), where (module path and
source line, the line shown), why, and what to try; these tests read the
messages a user gets from `lpcc.compile` and from a call.
"""

from __future__ import annotations

import inspect
import re

import pytest
import torch
from lpcc.frontends.torch_export import FrontendError, UnsupportedOpError
from lpcc.runtime import InputError
from torch import nn

import lpcc
from lpcc.errors import CompileError, error_message
from lpcc.quant import QuantError


def lines_of(err: pytest.ExceptionInfo[BaseException]) -> list[str]:
    return str(err.value).splitlines()


def line_of(fn: object, text: str) -> tuple[str, int]:
    """(file, line) of the first line of `fn`'s source containing `text`."""
    src, first = inspect.getsourcelines(fn)  # type: ignore[arg-type]
    file = inspect.getsourcefile(fn)  # type: ignore[arg-type]
    assert file is not None
    return file, first + next(i for i, ln in enumerate(src) if text in ln)


def test_layout_and_order() -> None:
    with open(__file__) as f:
        first_line = f.readline().rstrip()
    text = error_message(
        "cannot do X",
        stage="frontend",
        why="because Y",
        hint="try Z",
        module="enc.fc (Linear)",
        source=(__file__, 1),
        function="forward",
        explanation="background",
    )
    assert text.splitlines() == [
        "lpcc frontend: cannot do X",
        "  in module  enc.fc (Linear)",
        f"  at         {__file__}:1, in forward",
        f"        1 | {first_line}",
        "Reason: because Y",
        "Explanation: background",
        "Hint: try Z",
        "Debug: LPCC_DUMP_IR=<dir> (or lpcc.compile(..., dump_ir=<dir>)) writes "
        "the IR after every stage and a repro.py",
    ]
    # parts not given are left out, not printed empty
    assert error_message("x", why="y", hint="z", debug=False).splitlines() == [
        "lpcc: x",
        "Reason: y",
        "Hint: z",
    ]


class Inner(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.floor(x) * 2  # no converter for aten.floor


class Outer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(4, 4), Inner())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.enc(x)


def test_unsupported_op() -> None:
    with pytest.raises(UnsupportedOpError) as err:
        lpcc.compile(Outer(), (torch.randn(2, 4),))
    file, line = line_of(Inner.forward, "torch.floor")
    assert lines_of(err)[:4] == [
        "lpcc frontend: cannot import `aten.floor.default` (graph node %floor)",
        "  in module  enc.1 (Inner)",
        f"  at         {file}:{line}, in forward",
        f"    {line:>5} |         return torch.floor(x) * 2  # no converter for "
        "aten.floor",
    ]
    text = str(err.value)
    assert re.search(
        r"^Reason: lpcc has no converter for the ATen op `aten\.floor", text, re.M
    )
    assert re.search(r"^Hint: .*supported_ops\(\).*Escape hatch: ", text, re.M)
    assert re.search(r"^Debug: LPCC_DUMP_IR=<dir>", text, re.M)


class Widen(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.double()  # float64 inside the model
        return y.sum(dim=0)


def test_unsupported_dtype_inside_the_model() -> None:
    with pytest.raises(UnsupportedOpError) as err:
        lpcc.compile(Widen(), (torch.randn(2, 4),))
    file, line = line_of(Widen.forward, "x.double()")
    text = str(err.value)
    assert f"  at         {file}:{line}, in forward" in text
    assert "y = x.double()" in text  # the line, shown
    assert re.search(r"^Reason: .*torch\.float64 are not supported", text, re.M)
    assert re.search(r"^Hint: convert to one of .*torch\.float32", text, re.M)


def test_unsupported_dtype_of_an_input() -> None:
    with pytest.raises(FrontendError) as err:
        lpcc.compile(Inner(), (torch.randn(2, 4, dtype=torch.float64),))
    got = lines_of(err)
    assert got[0] == "lpcc frontend: input 'x' of the model cannot be imported"
    assert got[1] == "Reason: tensors of dtype torch.float64 are not supported"
    assert got[2].startswith("Hint: convert to one of torch.float32")
    assert got[3].startswith("Debug: LPCC_DUMP_IR=")


@pytest.mark.parametrize(
    ("quant", "reason"),
    [
        ("int4-gx", "quant='int4-gx': unknown part 'gx'"),
        ("int9", "int9 has 9 bits"),
        (3, "expected None, a string or a QuantConfig, got int"),
    ],
)
def test_invalid_quant(quant: object, reason: str) -> None:
    with pytest.raises(QuantError) as err:  # its own type, the common layout
        lpcc.compile(Inner(), (torch.randn(2, 4),), quant=quant)  # type: ignore[arg-type]
    got = lines_of(err)
    assert got[0] == (
        f"lpcc compile: quant={quant!r} is not a quantization setting lpcc can use"
    )
    assert got[1].startswith("Reason: ") and reason in got[1]
    assert got[2].startswith("Hint: pick a row of the table in docs/using.md")
    assert "quant='int4-g32'" in got[2] and "quant=None" in got[2]
    assert len(got) == 3  # no dump hint: nothing was compiled


def test_shape_mismatch_at_call_time() -> None:
    prog = lpcc.compile(nn.Linear(6, 3), (torch.randn(5, 6),))
    with pytest.raises(InputError) as err:
        prog(torch.randn(5, 7))
    got = lines_of(err)
    assert (
        got[0] == "lpcc call: the inputs do not match the compiled program's parameters"
    )
    assert re.fullmatch(
        r"Reason: input '\w+' \(#0\): dimension 1 is 7, expected 6 "
        r"\(shape \[5, 6\], got \[5, 7\]\)",
        got[1],
    )
    name = prog.program.inputs[0].name
    assert got[2].startswith(f"Hint: call it with ({name}: f32[5, 6]); ")
    assert "dynamic_shapes=" in got[2]
    assert isinstance(err.value, lpcc.LpccError) and isinstance(err.value, ValueError)


def test_compile_error_is_one_class() -> None:
    from lpcc.api import CompileError as api_error

    assert api_error is CompileError
    with pytest.raises(CompileError, match="unknown target"):
        lpcc.compile(Inner(), (torch.randn(2, 4),), target="tpu")
