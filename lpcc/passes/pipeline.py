"""The default pass pipeline of each optimization level (`-O0`, `-O1`, `-O2`).

A pipeline is xDSL's text form, `name{option=value},name2`, so what
`lpcc.compile` runs can be pasted into `lpcc opt -p` to replay it:

* `-O0`: nothing. The imported (and quantized) graph runs op by op.
* `-O1`: clean-ups and fusion, arithmetic unchanged: constant folding,
  canonicalize, cse, `fuse-epilogue` (bias/activation/residual into the
  matmul), `fuse-elementwise` (chains and a trailing reduction into one
  region), dce.
* `-O2`: `-O1` plus the low-precision rewrites: `select-kernels` records the
  kernel each quantized matmul gets (LUT, dequant-after-group-GEMM or dense,
  by the rule in `lpcc.passes.kernel_choice`, overridable per layer), then
  `dequant-after-group-gemm` (int8 activations when the quant config says
  `-a8`), `lut-gemm` (T-MAC, for the matmuls the rule gave "lut"),
  `symmetrize-tables`, and `fuse-table-precompute` (the table joins the op
  that produces its activations; Q, K and V share one table).

Order matters: kernel selection before the rewrites that read it; the
rewrites before folding (bit planes of constant weights fold at compile
time) and cse (one group sum and one table per activation); epilogue fusion
before elementwise fusion (a bias add belongs to its matmul); table fusion
last, into the regions elementwise fusion made.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass, PassPipeline
from xdsl.utils.exceptions import ArgSpecParseError

from lpcc.errors import LpccError

OPT_LEVELS = (0, 1, 2)
DEFAULT_OPT_LEVEL = 2


class PipelineError(LpccError):
    """A pipeline that cannot be built or run."""


def _quote(text: str) -> str:
    if '"' in text or "\\" in text:
        raise PipelineError(f"pass option {text!r} may not contain quotes")
    return f'"{text}"'


def default_pipeline(
    opt_level: int = DEFAULT_OPT_LEVEL,
    *,
    target: str = "reference",
    activations: str = "float",
    kernels: Mapping[str, str] | None = None,
) -> str:
    """The pipeline text of `opt_level` for `target`.

    `activations` ("float" | "int8") is the inner-sum type of
    dequant-after-group-GEMM; `kernels` maps weight-name patterns to a kernel
    ("lut", "dequant", "dense") ahead of the rule. Asking for int8
    activations (W4A8, `-a8`) asks for that kernel: layers that `kernels`
    does not name get "dequant", where the rule would pick LUT (which has
    its own int8 tables and would leave the request without effect).
    """
    if opt_level not in OPT_LEVELS:
        raise PipelineError(
            f"opt_level must be one of {', '.join(map(str, OPT_LEVELS))}, "
            f"got {opt_level!r}"
        )
    if opt_level == 0:
        return ""
    cleanup = ["fold-constants", "canonicalize", "cse"]
    fusion = ["fuse-epilogue", "fuse-elementwise"]
    tile = ["tile"] if target == "cpu" else []  # record the kernels' tiles
    if opt_level == 1:
        return ",".join([*cleanup, *fusion, "dce", *tile])
    from lpcc.passes.kernel_choice import format_overrides, normalize_overrides

    pairs = normalize_overrides(kernels)
    if activations == "int8":
        pairs.append(("*", "dequant"))  # after the user's: first match wins
    override = format_overrides(pairs)
    select = f"select-kernels{{target={_quote(target)} override={_quote(override)}}}"
    return ",".join(
        [
            select,
            f"dequant-after-group-gemm{{act={_quote(activations)}}}",
            "lut-gemm",
            "symmetrize-tables",
            *cleanup,
            *fusion,
            "fuse-table-precompute",
            "dce",
            *tile,
        ]
    )


def parse_pipeline(spec: str) -> list[ModulePass]:
    """The passes of a pipeline text, with a clear error for a bad one."""
    from lpcc.passes import get_all_passes

    if not spec:
        return []
    available = get_all_passes()
    try:
        return list(PassPipeline.parse_spec(available, spec).passes)
    except (ArgSpecParseError, ValueError, KeyError) as err:
        raise PipelineError(
            f"bad pipeline {spec!r}: {err}\nknown passes: "
            f"{', '.join(sorted(available))} (lpcc opt --list-passes)"
        ) from None


def run_pipeline(
    module: ModuleOp,
    spec: str,
    after_pass: Callable[[str, ModuleOp], None] | None = None,
) -> None:
    """Run `spec` on `module` in place, verifying after every pass.

    `after_pass(name, module)` is called after each pass (the compile API
    keeps a clone of each stage for `ir()` and `LPCC_DUMP_IR`).
    """
    from lpcc.ir.dialect import context, verify_module

    ctx = context()
    for p in parse_pipeline(spec):
        try:
            p.apply(ctx, module)
        except LpccError:
            raise
        except Exception as err:  # a pass bug: say which pass, keep the cause
            raise PipelineError(
                f"pass {p.name!r} failed: {type(err).__name__}: {err}; rerun with "
                "LPCC_DUMP_IR=<dir> to see the IR before it, or lower opt_level"
            ) from err
        verify_module(module, f"the module after pass {p.name!r}")
        if after_pass is not None:
            after_pass(p.name, module)
