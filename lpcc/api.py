"""`lpcc.compile` and `lpcc.load`: the user's entry points.

compile = torch.export (lpcc.frontends) -> lp IR "import" -> weight
quantization "quantize" (when asked) -> graph passes -> lowering to a VM
`Program` for the target (lpcc.codegen.program) -> a `CompiledModel` that is
called like the module. Each stage's module is kept (xDSL clones share the
constant payloads, so this costs little) and printed on demand by
`CompiledModel.ir(stage)`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lpcc import config
from lpcc.errors import CompileError, LpccError, error_message

if TYPE_CHECKING:
    from xdsl.dialects.builtin import ModuleOp

    from lpcc.quant import QuantConfig, QuantReport
    from lpcc.runtime import Program

TARGETS = ("reference", "cpu", "cuda")
_BUILT_TARGETS = ("reference", "cpu", "cuda")


def _check_target(target: str) -> None:
    if target not in TARGETS:
        raise CompileError(
            f"lpcc.compile: unknown target {target!r}; choose one of "
            f"{', '.join(TARGETS)}"
        )
    if target not in _BUILT_TARGETS:
        raise CompileError(
            f"lpcc.compile: the {target!r} target is not built yet in lpcc "
            f"{_version()}; use target='reference' (the NumPy interpreter) for now"
        )


def _version() -> str:
    from lpcc._version import __version__

    return __version__


def compile(
    module: Any,
    example_inputs: Any,
    *,
    quant: str | QuantConfig | None = None,
    target: str = "reference",
    dynamic_shapes: Any = None,
    opt_level: int = 2,
    kernels: dict[str, str] | None = None,
    dump_ir: str | os.PathLike[str] | None = None,
    on_stage: StageHook | None = None,
) -> CompiledModel:
    """Compile a torch module for `target`; call the result like the module.

    `quant` quantizes the weights of linear layers ("int4", "int4-g128",
    "uint3-g64-asym", "f4e2m1-g32", or a `QuantConfig`); `dynamic_shapes`
    is torch.export's (e.g. `{"ids": {1: Dim("seq", max=512)}}`).
    `opt_level` picks the pass pipeline (`lpcc.passes.pipeline`: 0 none, 1
    fusion, 2 also the low-precision rewrites); `kernels` overrides the
    kernel of quantized layers by weight-name pattern, e.g.
    `{"layers.0.*": "dense", "*.mlp.*": "lut"}`. `dump_ir` (default: the
    `LPCC_DUMP_IR` knob) is a directory to write every stage's IR, the VM
    listing, the kernels' sources and a `repro.py` to (see `_Dumper`).
    `on_stage(name, seconds)` is called as each stage ends: "import",
    "quantize", every pass (a repeated one as "cse#2"), "lower" (progress
    bars and timings: `lpcc compile -v`).
    """
    _check_target(target)
    _check_options(quant, opt_level, kernels, "lpcc.compile")
    start = time.perf_counter()
    from lpcc.frontends.torch_export import import_module

    imported = import_module(module, example_inputs, dynamic_shapes=dynamic_shapes)
    _Clock(on_stage, start)("import")
    return compile_imported(
        imported,
        quant=quant,
        target=target,
        opt_level=opt_level,
        kernels=kernels,
        dump_ir=dump_ir,
        start=start,
        on_stage=on_stage,
    )


def _check_options(
    quant: Any, opt_level: int, kernels: dict[str, str] | None, where: str
) -> QuantConfig | None:
    """The parsed `quant`, after checking the options fit together."""
    from lpcc.quant import parse_quant

    cfg = _parse_quant(quant, parse_quant)
    if kernels and opt_level != 2:
        raise CompileError(
            f"{where}: kernels= chooses among the -O2 rewrites, but "
            f"opt_level={opt_level!r} does not run them; use opt_level=2 or drop "
            "kernels="
        )
    return cfg


def compile_imported(
    imported: Any,
    *,
    quant: str | QuantConfig | None = None,
    target: str = "reference",
    opt_level: int = 2,
    kernels: dict[str, str] | None = None,
    dump_ir: str | os.PathLike[str] | None = None,
    frontend: str = "torch.export",
    start: float | None = None,
    on_stage: StageHook | None = None,
) -> CompiledModel:
    """`lpcc.compile`'s steps after the import: quantize, passes, program.

    `imported` is a `frontends.torch_export.Imported` (from torch.export,
    or from the torch.compile backend's ATen graph, `frontend` names which);
    every entry point compiles through here, so they cannot drift apart.
    """
    from lpcc.passes.pipeline import default_pipeline

    if start is None:
        start = time.perf_counter()
    _check_target(target)
    cfg = _check_options(quant, opt_level, kernels, f"compile ({frontend})")
    spec = default_pipeline(
        opt_level,
        target=target,
        activations=getattr(cfg, "activations", "float") if cfg else "float",
        kernels=kernels,
    )
    dumper = _Dumper.open(dump_ir)
    stages: dict[str, ModuleOp] = {"import": imported.module.clone()}
    work = imported.module
    if dumper is not None:  # written as they come: a failing pass leaves them
        dumper.repro(cfg, spec, target, imported, isa=None)
        dumper.stage("import", work)
    clock = _Clock(on_stage)
    report = None
    if cfg is not None:
        from lpcc.passes.quantize import quantize_module

        report = quantize_module(work, cfg)
        stages["quantize"] = work.clone()
        if dumper is not None:
            dumper.stage("quantize", work)
        clock("quantize")
    _run_passes(work, spec, stages, dumper, clock)
    from lpcc.codegen.program import build_program

    sources: dict[str, dict[str, str]] = {}
    program = build_program(
        work,
        target=target,
        input_names=imported.input_names,
        output_names=imported.output_names,
        dim_ranges=imported.dim_ranges,
        sources=sources,
    )
    clock("lower")
    program.meta["pipeline"] = spec
    if frontend != "torch.export":
        program.meta["frontend"] = frontend
    if report is not None:
        program.meta["quant_report"] = report.to_dict()
    program.meta["compile_seconds"] = time.perf_counter() - start
    compiled = CompiledModel(program, stages=stages, report=report)
    compiled.kernel_sources = sources
    if dumper is not None:
        dumper.repro(cfg, spec, target, imported, isa=program.meta.get("isa"))
        dumper.finish(compiled)
    return compiled


def _parse_quant(quant: Any, parse: Any) -> QuantConfig | None:
    """`parse_quant`, its errors in the compile-error layout (same type)."""
    from lpcc.quant import QuantError

    try:
        cfg: QuantConfig | None = parse(quant)
    except QuantError as err:
        raise QuantError(
            error_message(
                f"quant={quant!r} is not a quantization setting lpcc can use",
                stage="compile",
                why=str(err),
                hint="pick a row of the table in docs/using.md (Weight "
                "quantization), e.g. quant='int4-g32', or pass "
                "lpcc.QuantConfig(weight=..., group_size=...); `lpcc types` lists "
                "the formats; quant=None compiles without quantizing",
                debug=False,
            )
        ) from None
    return cfg


StageHook = Callable[[str, float], None]
_log = logging.getLogger("lpcc.compile")


class _Clock:
    """Calls `on_stage(name, seconds since the last stage ended)`; logs it
    on the "lpcc.compile" logger (`LPCC_LOGS=compile`)."""

    def __init__(self, on_stage: StageHook | None, start: float | None = None) -> None:
        self.on_stage = on_stage
        self.last = time.perf_counter() if start is None else start

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        _log.info("%-28s %8.1f ms", name, (now - self.last) * 1e3)
        if self.on_stage is not None:
            self.on_stage(name, now - self.last)
        self.last = now


def _run_passes(
    module: ModuleOp,
    spec: str,
    stages: dict[str, ModuleOp],
    dumper: _Dumper | None = None,
    clock: _Clock | None = None,
) -> None:
    from lpcc.passes.pipeline import run_pipeline

    def keep(name: str, mod: ModuleOp) -> None:
        key, n = name, 2
        while key in stages:  # a pass that runs twice: "cse", "cse#2"
            key, n = f"{name}#{n}", n + 1
        stages[key] = mod.clone()
        if dumper is not None:
            dumper.stage(key, mod)
        if clock is not None:
            clock(key)

    run_pipeline(module, spec, keep)


def print_ir(module: ModuleOp, locations: bool = True) -> str:
    """`module` as text `lpcc opt` reads, with source locations if asked.

    Locations print as MLIR's `loc("layers.0.mlp"("model.py":42:0))` after
    each op that has one (ops made by passes have none, and print none).
    """
    from io import StringIO

    from xdsl.printer import Printer

    out = StringIO()
    Printer(stream=out, print_debuginfo=locations).print_op(module)
    text = out.getvalue() + "\n"
    return text.replace(" loc(unknown)", "") if locations else text


def split_pipeline(spec: str) -> list[str]:
    """The passes of a pipeline text, each as its own text (commas in options kept)."""
    passes, depth, quoted, start = [], 0, False, 0
    for i, c in enumerate(spec):
        if c == '"':
            quoted = not quoted
        elif not quoted and c in "{}":
            depth += 1 if c == "{" else -1
        elif not quoted and depth == 0 and c == ",":
            passes.append(spec[start:i].strip())
            start = i + 1
    passes.append(spec[start:].strip())
    return [p for p in passes if p]


class _Dumper:
    """Writes a compile's IR dump: LPCC_DUMP_IR=<dir> or compile(dump_ir=<dir>).

    The directory gets, each file as soon as its stage ends (so a pass that
    fails leaves the stages before it, and a repro.py that fails the same):

    * `000_import.mlir`, `001_quantize.mlir`, `00N_<pass>.mlir`: the module
      after each stage, with source locations, as `lpcc opt` reads it;
    * `repro.py`: redoes the compile from `000_import.mlir` (or from any
      later stage given on its command line) and checks `program.txt`;
    * `program.txt`: the VM listing;
    * `kernels/<name>.mlir`: each kernel's function (the op it runs), and
      for CPU kernels `<name>.ll` (LLVM IR) and `<name>.s` (assembly), for
      CUDA kernels `<name>.cu` (the CUDA C the program carries).

    Files of an earlier dump in the same directory are removed first.
    """

    def __init__(self, out: Path) -> None:
        self.out = out
        self.count = 0

    @classmethod
    def open(cls, where: str | os.PathLike[str] | None) -> _Dumper | None:
        """A dumper for `where` (default: the dump_ir knob); None when off."""
        if where is None:
            where = config.get("dump_ir")
        if not where:
            return None
        dumper = cls(Path(where))
        with dumper._writing():
            dumper.out.mkdir(parents=True, exist_ok=True)
            stale = [
                *dumper.out.glob("[0-9][0-9][0-9]_*.mlir"),
                *(dumper.out / "kernels").glob("k_*.*"),
            ]
            for path in stale:
                path.unlink()
        return dumper

    @contextmanager
    def _writing(self) -> Iterator[None]:
        try:
            yield
        except OSError as err:
            raise LpccError(
                f"LPCC_DUMP_IR / dump_ir={str(self.out)!r}: cannot write the IR "
                f"dump ({err}); point it at a writable directory or unset it"
            ) from None

    def write(self, name: str, text: str) -> None:
        """Write `text` to `name` (a path relative to the dump directory)."""
        path = self.out / name
        with self._writing():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)

    def stage(self, name: str, module: ModuleOp) -> None:
        """The next numbered stage file."""
        self.write(f"{self.count:03d}_{name.replace('#', '.')}.mlir", print_ir(module))
        self.count += 1

    def repro(
        self,
        cfg: QuantConfig | None,
        spec: str,
        target: str,
        imported: Any,
        isa: str | None,
    ) -> None:
        """`repro.py`: the compile's inputs after the import, as Python literals."""
        quant = None
        if cfg is not None:
            quant = {
                f.name: getattr(getattr(cfg, f.name), "name", getattr(cfg, f.name))
                for f in fields(cfg)
            }
        passes = "".join(f"\n    {p!r}," for p in split_pipeline(spec))
        self.write(
            "repro.py",
            _REPRO.format(
                version=_version(),
                quant=repr(quant),
                passes=f"[{passes}\n]" if passes else "[]",
                target=target,
                isa=isa,
                input_names=list(imported.input_names),
                output_names=list(imported.output_names),
                dim_ranges=dict(imported.dim_ranges),
            ),
        )

    def finish(self, compiled: CompiledModel) -> None:
        """The VM listing and each kernel's sources."""
        self.write("program.txt", compiled.as_text())
        isa = compiled.program.meta.get("isa")
        for name, src in compiled.kernel_sources.items():
            self.write(f"kernels/{name}.mlir", src["mlir"])
            if "ll" in src:
                from lpcc.codegen.llvm.jit import asm

                self.write(f"kernels/{name}.ll", src["ll"])
                self.write(f"kernels/{name}.s", asm(src["ll"], isa))
            if "cu" in src:
                self.write(f"kernels/{name}.cu", src["cu"])


_REPRO = '''\
"""Redo an lpcc compile from the IR dumped next to this file.

Written by lpcc {version} (LPCC_DUMP_IR=<dir> or lpcc.compile(dump_ir=<dir>)).

    python repro.py                  # the whole compile, from 000_import.mlir
    python repro.py 004_cse.mlir     # from a later stage: the passes after it

It rebuilds the program and compares its listing with program.txt: exit 0
if they are equal, 1 if not; a step that fails raises its error here. The
passes alone: lpcc opt 001_quantize.mlir -p "<the PASSES, comma-joined>".
"""

import sys
from pathlib import Path

from lpcc.codegen.program import build_program
from lpcc.ir.dialect import parse_module
from lpcc.passes.pipeline import run_pipeline

HERE = Path(__file__).resolve().parent
QUANT = {quant}  # lpcc.QuantConfig fields (None: no quantization)
PASSES = {passes}
TARGET = {target!r}
ISA = {isa!r}
INPUT_NAMES = {input_names!r}
OUTPUT_NAMES = {output_names!r}
DIM_RANGES = {dim_ranges!r}


def main(argv: list[str]) -> int:
    start = argv[1] if len(argv) > 1 else "000_import.mlir"
    number = int(Path(start).name[:3])
    module = parse_module((HERE / Path(start).name).read_text(), start)
    if number == 0 and QUANT is not None:
        from lpcc.passes.quantize import quantize_module
        from lpcc.quant import QuantConfig

        quantize_module(module, QuantConfig(**QUANT))
    first = 1 + (QUANT is not None)  # the number of the file after PASSES[0]
    run_pipeline(module, ",".join(PASSES[max(0, number - first + 1) :]))
    program = build_program(
        module,
        target=TARGET,
        isa=ISA,
        input_names=INPUT_NAMES,
        output_names=OUTPUT_NAMES,
        dim_ranges=DIM_RANGES,
    )
    text = program.as_text()
    listing = HERE / "program.txt"
    if not listing.exists():
        print(text, end="")
        return 0
    if listing.read_text() == text:
        print("repro: the same program as program.txt")
        return 0
    print(text, end="")
    print("repro: the program differs from program.txt", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
'''


class CompiledModel:
    """A compiled program, called like the module it came from.

    torch tensors in give torch tensors out; NumPy arrays in give NumPy
    arrays out. Inputs are checked (count, dtype, shape) before anything
    runs, and errors name the parameter.
    """

    def __init__(
        self,
        program: Program,
        *,
        stages: dict[str, ModuleOp] | None = None,
        report: QuantReport | None = None,
    ) -> None:
        from lpcc.runtime import VM

        self.program = program
        self._stages = stages or {}
        # kernel name -> generated sources ({"mlir", "ll"}), for IR dumps; a
        # loaded program has none (saved files keep object code only)
        self.kernel_sources: dict[str, dict[str, str]] = {}
        self._report = report
        self._vm = VM(program)
        self._f16_out = any(s.dtype == "f16" for s in program.outputs)

    # -- calling ----------------------------------------------------------------
    def __call__(self, *inputs: Any) -> Any:
        torch_in = False
        arrays: list[Any] = []
        for i, x in enumerate(inputs):
            if type(x) is not np.ndarray and type(x).__module__.startswith("torch"):
                torch_in = True
                x = self._to_numpy(i, x)
            arrays.append(x)
        try:
            outputs = self._vm.run(arrays)
        except LpccError as err:
            from lpcc.runtime import InputError

            if not isinstance(err, InputError):
                raise
            raise InputError(self._call_error(str(err))) from None
        if self._f16_out:
            outputs = [
                self._output(spec.dtype, y)
                for spec, y in zip(self.program.outputs, outputs, strict=True)
            ]
        if torch_in:
            outputs = [
                _to_torch(spec.dtype, y)
                for spec, y in zip(self.program.outputs, outputs, strict=True)
            ]
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def _to_numpy(self, i: int, x: Any) -> Any:
        if type(x).__module__.startswith("torch"):
            import torch

            if not isinstance(x, torch.Tensor):
                return x
            if x.requires_grad:
                x = x.detach()
            if x.device.type != "cpu":
                x = x.cpu()
            if x.dtype == torch.bfloat16:
                specs = self.program.inputs
                if i < len(specs) and specs[i].dtype != "bf16":
                    name = specs[i].name
                    raise _input_error(
                        f"input {name!r} (#{i}) has dtype bfloat16, expected "
                        f"{specs[i].dtype}"
                    )
                return x.float().numpy()
            return x.numpy()
        return x

    def _call_error(self, reason: str) -> str:
        """A call's input error in the compile-error layout."""
        ins = ", ".join(s.show() for s in self.program.inputs)
        ranges = ", ".join(
            f"{k} in [{lo}, {'inf' if hi is None else hi}]"
            for k, (lo, hi) in self.program.dim_ranges.items()
        )
        return error_message(
            "the inputs do not match the compiled program's parameters",
            stage="call",
            why=reason,
            hint=f"call it with ({ins})"
            + (f", sizes {ranges}" if ranges else "")
            + "; for other sizes or dtypes compile again with example inputs "
            "like them (dynamic_shapes= with torch.export.Dim for sizes that vary)",
            debug=False,
        )

    @staticmethod
    def _output(dtype: str, y: np.ndarray) -> np.ndarray:
        if dtype == "f16":
            return y.astype(np.float16)
        return y

    # -- inspection -------------------------------------------------------------
    @property
    def stages(self) -> list[str]:
        """Names of the stages whose IR `ir()` can print."""
        return list(self._stages)

    def ir(self, stage: str = "import", locations: bool = False) -> str:
        """The module text after `stage` ("import", "quantize", or a pass).

        `locations=True` adds each op's source location (`loc(...)`), as the
        IR dumps print it; both forms parse back with `lpcc opt`.
        """
        if stage not in self._stages:
            if not self._stages:
                raise LpccError(
                    "this program was loaded from a file, which holds the VM "
                    "program, not the IR; compile the model again to see its IR"
                )
            raise LpccError(
                f"no IR stage {stage!r}; stages of this program: "
                f"{', '.join(self._stages)}"
            )
        return print_ir(self._stages[stage], locations)

    def as_text(self) -> str:
        """The VM listing: inputs, constants, kernels and instructions."""
        return self.program.as_text()

    def quant_report(self) -> QuantReport:
        """Per-layer format, group size, bits per weight and error; totals."""
        from lpcc.quant import QuantReport

        if self._report is not None:
            return self._report
        saved = self.program.meta.get("quant_report")
        if saved is None:
            raise LpccError(
                "this program was compiled without quant=...; there is no "
                "quantization report"
            )
        return QuantReport.from_dict(saved)

    # -- files --------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the program to one file (format: lpcc.runtime.format)."""
        from lpcc.runtime import save

        save(self.program, path)

    def __repr__(self) -> str:
        ins = ", ".join(
            f"{s.name}: {s.dtype}{list(s.shape)}" for s in self.program.inputs
        )
        return f"<lpcc.CompiledModel target={self.program.target} ({ins})>"


def _input_error(message: str) -> LpccError:
    from lpcc.runtime import InputError

    return InputError(message)


def _to_torch(dtype: str, y: np.ndarray) -> Any:
    import torch

    t = torch.from_numpy(np.require(y, requirements="C"))  # keeps 0-d
    if dtype == "bf16":
        t = t.to(torch.bfloat16)
    return t


def load(path: str | os.PathLike[str]) -> CompiledModel:
    """Load a program saved by `CompiledModel.save`."""
    from lpcc.runtime import load as load_program

    return CompiledModel(load_program(path))
