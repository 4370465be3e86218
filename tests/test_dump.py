"""IR dumps (`LPCC_DUMP_IR=<dir>`, `lpcc.compile(..., dump_ir=<dir>)`).

The contract under test: every stage is written as numbered, re-parseable
text with source locations; each dump, fed through the passes that follow
it (with `lpcc opt`), gives the final stage again; `repro.py` redoes the
compile and checks it against `program.txt`; kernels' sources are there;
SSA names and locations come from the user's source.
"""

from __future__ import annotations

import inspect
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import lpcc
from lpcc import models
from lpcc.api import CompiledModel, split_pipeline
from lpcc.cli import main
from lpcc.ir.dialect import parse_module
from lpcc.models import LlamaConfig, TinyLlama
from lpcc.passes.pipeline import run_pipeline
from lpcc.passes.quantize import QuantizeWeights
from lpcc.quant import QuantConfig, parse_quant

CFG = LlamaConfig(vocab_size=96, dim=64, hidden_dim=128, n_layers=1)
QUANT = "int4-g32"


@pytest.fixture(scope="module")
def dumped(tmp_path_factory: pytest.TempPathFactory) -> tuple[CompiledModel, Path]:
    out = tmp_path_factory.mktemp("dump")
    ids = torch.randint(0, 96, (1, 5), generator=torch.Generator().manual_seed(0))
    prog = lpcc.compile(TinyLlama(CFG, seed=3), (ids,), quant=QUANT, dump_ir=out)
    return prog, out


def stage_files(out: Path) -> list[Path]:
    return sorted(out.glob("[0-9][0-9][0-9]_*.mlir"))


def test_one_numbered_file_per_stage(dumped: tuple[CompiledModel, Path]) -> None:
    prog, out = dumped
    files = stage_files(out)
    assert [f.name for f in files] == [
        f"{i:03d}_{stage}.mlir" for i, stage in enumerate(prog.stages)
    ]
    assert prog.stages[:2] == ["import", "quantize"]
    for f, stage in zip(files, prog.stages, strict=True):
        assert f.read_text() == prog.ir(stage, locations=True)
    assert (out / "program.txt").read_text() == prog.as_text()
    # every kernel of the program has its source, named as in the listing
    kernels = {p.stem for p in (out / "kernels").iterdir()}
    assert kernels == {k.name for k in prog.program.kernels}
    for k in prog.program.kernels:  # reference kernels: the MLIR they run
        assert (out / "kernels" / f"{k.name}.mlir").read_text() == k.source


def remaining(prog: CompiledModel, index: int) -> str:
    """The pipeline text that turns stage `index` into the final stage."""
    passes = split_pipeline(prog.program.meta["pipeline"])
    cfg = parse_quant(QUANT)
    assert cfg is not None
    quantize = str(QuantizeWeights.from_config(cfg).pipeline_pass_spec())
    after = [quantize, *passes]  # the stage after import is quantize's
    assert len(after) == len(prog.stages) - 1
    return ",".join(after[index:])


def test_every_dump_replays_with_lpcc_opt(
    dumped: tuple[CompiledModel, Path], tmp_path: Path
) -> None:
    prog, out = dumped
    final = prog.ir(prog.stages[-1])  # printed without locations, as opt does
    for i, f in enumerate(stage_files(out)):
        spec = remaining(prog, i)
        dst = tmp_path / f"{i}.mlir"
        argv = ["opt", str(f), "-o", str(dst)] + (["-p", spec] if spec else [])
        assert main(argv) == 0, f.name
        assert dst.read_text() == final, f"{f.name} through {spec!r}"


def test_locations_survive_the_replay(dumped: tuple[CompiledModel, Path]) -> None:
    from lpcc.api import print_ir

    prog, out = dumped
    files = stage_files(out)
    final = files[-1].read_text()
    assert "loc(" in final
    for i in (1, len(files) // 2):  # after quantize, and mid-pipeline
        module = parse_module(files[i].read_text(), files[i].name)
        run_pipeline(module, remaining(prog, i))
        assert print_ir(module) == final, files[i].name


def source_line(obj: object, text: str) -> int:
    """The line number of the first line of `obj`'s source containing `text`."""
    lines, first = inspect.getsourcelines(obj)  # type: ignore[arg-type]
    return first + next(i for i, ln in enumerate(lines) if text in ln)


def test_names_and_locations_come_from_the_source(
    dumped: tuple[CompiledModel, Path],
) -> None:
    _, out = dumped
    text = (out / "000_import.mlir").read_text()
    # `q = self.wq(x).view(...).transpose(1, 2)` in Attention.forward: the
    # value `q` holds is the permute, named by module path and variable
    line = source_line(models.LlamaAttention.forward, "q = self.wq(x)")
    file = inspect.getsourcefile(models.LlamaAttention)
    found = re.search(
        r"^\s*%layers\.0\.attn\.q = (lp\.\w+) .* loc\((.*)\)$", text, re.M
    )
    assert found is not None
    assert found.group(1) == "lp.permute"
    assert found.group(2) == f'"layers.0.attn"("{file}":{line}:0)'
    # the projection inside it: the Linear's own module path
    assert re.search(r"^\s*%layers\.0\.attn\.wq\.\w+ = lp\.matmul ", text, re.M)
    # weights by state_dict key, inputs by argument name
    assert "%layers.0.attn.wq.weight = lp.constant" in text
    assert "func.func @main(%ids: " in text
    names = re.findall(r"^\s*(%[\w.$-]+) = ", text, re.M)
    assert len(names) == len(set(names))  # no name defined twice


def repro(script: Path, *args: str) -> int:
    """Run a dumped repro.py's main in this process; its exit status."""
    return int(runpy.run_path(str(script))["main"]([str(script), *args]))


def test_repro_script(
    dumped: tuple[CompiledModel, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, out = dumped
    script = out / "repro.py"
    source = script.read_text()
    # the config it quantizes with is the one compile used
    quant = re.search(r"^QUANT = (.*?)  #", source, re.M)
    assert quant is not None
    assert QuantConfig(**eval(quant.group(1))) == parse_quant(QUANT)
    # as a user runs it ...
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "the same program as program.txt" in run.stdout
    # ... and from a later stage (in process: faster)
    assert repro(script, "005_symmetrize-tables.mlir") == 0
    assert "the same program as program.txt" in capsys.readouterr().out
    # it does compare: a listing that differs fails
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in out.glob("*.*"):
        (copy / f.name).write_text(f.read_text())
    listing = copy / "program.txt"
    listing.write_text(listing.read_text().replace("ret ", "ret  "))
    assert repro(copy / "repro.py") == 1
    assert "differs from program.txt" in capsys.readouterr().err


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        return torch.relu(h) + 1.0


def test_cpu_kernels_dump_llvm_ir_and_assembly(tmp_path: Path) -> None:
    prog = lpcc.compile(Tiny(), (torch.randn(3, 16),), target="cpu", dump_ir=tmp_path)
    native = [k for k in prog.program.kernels if k.target == "cpu"]
    assert native, prog.as_text()
    for k in native:
        ll = (tmp_path / "kernels" / f"{k.name}.ll").read_text()
        assert re.search(rf'^define void @"?{k.name}"?\(', ll, re.M)
        asm = (tmp_path / "kernels" / f"{k.name}.s").read_text()
        assert re.search(rf"^{k.name}:", asm, re.M)  # the entry's label
        parse_module((tmp_path / "kernels" / f"{k.name}.mlir").read_text())
    assert repro(tmp_path / "repro.py") == 0


def test_knob_dumps_and_stale_files_go(tmp_path: Path) -> None:
    stale = tmp_path / "099_old.mlir"
    stale.write_text("")
    with lpcc.config.override(dump_ir=str(tmp_path)):
        prog = lpcc.compile(Tiny(), (torch.randn(3, 16),), opt_level=0)
    assert not stale.exists()
    assert [f.name for f in stage_files(tmp_path)] == ["000_import.mlir"]
    assert prog.stages == ["import"]


def test_a_failing_pass_leaves_the_stages_before_it(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from xdsl.transforms.dead_code_elimination import DeadCodeElimination

    def broken(self: object, ctx: object, module: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(DeadCodeElimination, "apply", broken)
    with pytest.raises(lpcc.LpccError, match="pass 'dce' failed"):
        lpcc.compile(Tiny(), (torch.randn(3, 16),), opt_level=1, dump_ir=tmp_path)
    names = [f.name for f in stage_files(tmp_path)]
    assert names == [  # -O1 is fold, canonicalize, cse, 2 fusions, then dce
        "000_import.mlir",
        "001_fold-constants.mlir",
        "002_canonicalize.mlir",
        "003_cse.mlir",
        "004_fuse-epilogue.mlir",
        "005_fuse-elementwise.mlir",
    ]
    monkeypatch.undo()  # the repro runs the real passes
    assert repro(tmp_path / "repro.py") == 0  # no program.txt: prints the listing
    assert "program (target reference)" in capsys.readouterr().out
