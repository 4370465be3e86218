"""`lpcc.compile` and `lpcc.load`: the user's entry points.

compile = torch.export (lpcc.frontends) -> lp IR "import" -> weight
quantization "quantize" (when asked) -> graph passes -> lowering to a VM
`Program` for the target (lpcc.codegen.program) -> a `CompiledModel` that is
called like the module. Each stage's module is kept (xDSL clones share the
constant payloads, so this costs little) and printed on demand by
`CompiledModel.ir(stage)`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lpcc import config
from lpcc.errors import LpccError

if TYPE_CHECKING:
    from xdsl.dialects.builtin import ModuleOp

    from lpcc.quant import QuantConfig, QuantReport
    from lpcc.runtime import Program

TARGETS = ("reference", "cpu", "cuda")
_BUILT_TARGETS = ("reference", "cpu")


class CompileError(LpccError):
    """compile() was called with something it cannot compile."""


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
) -> CompiledModel:
    """Compile a torch module for `target`; call the result like the module.

    `quant` quantizes the weights of linear layers ("int4", "int4-g128",
    "uint3-g64-asym", "f4e2m1-g32", or a `QuantConfig`); `dynamic_shapes`
    is torch.export's (e.g. `{"ids": {1: Dim("seq", max=512)}}`).
    `opt_level` picks the pass pipeline (`lpcc.passes.pipeline`: 0 none, 1
    fusion, 2 also the low-precision rewrites); `kernels` overrides the
    kernel of quantized layers by weight-name pattern, e.g.
    `{"layers.0.*": "dense", "*.mlp.*": "lut"}`.
    """
    from lpcc.passes.pipeline import default_pipeline
    from lpcc.quant import parse_quant

    _check_target(target)
    cfg = parse_quant(quant)
    if kernels and opt_level != 2:
        raise CompileError(
            f"lpcc.compile: kernels= chooses among the -O2 rewrites, but "
            f"opt_level={opt_level!r} does not run them; use opt_level=2 or drop "
            "kernels="
        )
    spec = default_pipeline(
        opt_level,
        target=target,
        activations=getattr(cfg, "activations", "float") if cfg else "float",
        kernels=kernels,
    )
    start = time.perf_counter()
    from lpcc.frontends.torch_export import import_module

    imported = import_module(module, example_inputs, dynamic_shapes=dynamic_shapes)
    stages: dict[str, ModuleOp] = {"import": imported.module.clone()}
    work = imported.module
    report = None
    if cfg is not None:
        from lpcc.passes.quantize import quantize_module

        report = quantize_module(work, cfg)
        stages["quantize"] = work.clone()
    _run_passes(work, spec, stages)
    from lpcc.codegen.program import build_program

    program = build_program(
        work,
        target=target,
        input_names=imported.input_names,
        output_names=imported.output_names,
        dim_ranges=imported.dim_ranges,
    )
    program.meta["pipeline"] = spec
    if report is not None:
        program.meta["quant_report"] = report.to_dict()
    program.meta["compile_seconds"] = time.perf_counter() - start
    compiled = CompiledModel(program, stages=stages, report=report)
    _dump(compiled)
    return compiled


def _run_passes(module: ModuleOp, spec: str, stages: dict[str, ModuleOp]) -> None:
    from lpcc.passes.pipeline import run_pipeline

    def keep(name: str, mod: ModuleOp) -> None:
        key, n = name, 2
        while key in stages:  # a pass that runs twice: "cse", "cse#2"
            key, n = f"{name}#{n}", n + 1
        stages[key] = mod.clone()

    run_pipeline(module, spec, keep)


def _dump(compiled: CompiledModel) -> None:
    """LPCC_DUMP_IR=<dir>: every stage as re-parseable text, plus the listing."""
    where = config.get("dump_ir")
    if not where:
        return
    out = Path(where)
    try:
        out.mkdir(parents=True, exist_ok=True)
        for i, stage in enumerate(compiled.stages):
            (out / f"{i:03d}_{stage}.mlir").write_text(compiled.ir(stage))
        (out / "program.txt").write_text(compiled.as_text())
    except OSError as err:
        raise LpccError(
            f"LPCC_DUMP_IR={where!r}: cannot write the IR dump ({err}); "
            "point it at a writable directory or unset it"
        ) from None


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
        self._report = report
        self._vm = VM(program)

    # -- calling ----------------------------------------------------------------
    def __call__(self, *inputs: Any) -> Any:
        torch_in = any(type(x).__module__.startswith("torch") for x in inputs)
        arrays = [self._to_numpy(i, x) for i, x in enumerate(inputs)]
        outputs = self._vm.run(arrays)
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
            x = x.detach().cpu()
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

    def ir(self, stage: str = "import") -> str:
        """The module text after `stage` ("import", "quantize", or a pass)."""
        from lpcc.ir.dialect import print_module

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
        return print_module(self._stages[stage])

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

    t = torch.from_numpy(np.ascontiguousarray(y))
    if dtype == "bf16":
        t = t.to(torch.bfloat16)
    return t


def load(path: str | os.PathLike[str]) -> CompiledModel:
    """Load a program saved by `CompiledModel.save`."""
    from lpcc.runtime import load as load_program

    return CompiledModel(load_program(path))
