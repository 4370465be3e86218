"""The `lpcc` command line.

    lpcc compile lpcc.models:MLP --example 3x16 --quant int4-g32 -o mlp.lpcc
    lpcc run mlp.lpcc --input x.npy --output y.npy
    lpcc dump mlp.lpcc            # listing, metadata, quantization report
    lpcc bench mlp.lpcc --repeat 100
    lpcc opt model.mlir -p cse    # passes on IR text (like xdsl-opt)
    lpcc types | demo | config

One function per subcommand (`cmd_<name>`), which imports what it needs only
when it runs, so `lpcc --help` stays fast. `run`, `dump` and `bench` load the
file with `lpcc.runtime` alone (NumPy; xDSL only for "reference" kernels).

`-q/--quiet` prints only errors; `-v/--verbose` adds the pass pipeline, the
time of each compile stage, and tracebacks. Progress bars follow the
`LPCC_PROGRESS` knob (`lpcc config`). Exit codes: 0 ok, 1 an lpcc error (one
message on standard error saying what failed and what to try), 2 a usage
error (argparse's message).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lpcc._version import __version__
from lpcc.errors import LpccError
from lpcc.ir.dtypes import DType

if TYPE_CHECKING:
    import numpy as np

    from lpcc.runtime import Program


class CliError(LpccError):
    """A command-line argument or file the command cannot use."""


def _fmt(value: float | int | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.6g}"


def _type_row(t: DType) -> dict[str, object]:
    return {
        "name": t.name,
        "bits": t.bits,
        "min": t.min,
        "max": t.max,
        "smallest_normal": t.smallest_normal,
        "smallest_subnormal": t.smallest_subnormal,
        "eps": t.eps,
        "special_values": t.special_values,
    }


def _say(args: argparse.Namespace, text: str, *, verbose: bool = False) -> None:
    """Print an informational line: never with --quiet; `verbose` ones only -v."""
    if getattr(args, "quiet", False):
        return
    if verbose and not getattr(args, "verbose", False):
        return
    print(text, file=sys.stderr if verbose else sys.stdout)


def cmd_types(args: argparse.Namespace) -> int:
    """Print a table of element types: the named ones, or those given."""
    from lpcc.ir.dtypes import dtype, named_dtypes

    types = [dtype(n) for n in args.names] if args.names else named_dtypes()
    if args.json:
        rows = [_type_row(t) for t in types]
        print(json.dumps(rows, indent=2, default=str))
        return 0
    head = ["name", "bits", "min", "max", "smallest subnormal", "eps", "special values"]
    table = [
        [
            t.name,
            str(t.bits),
            _fmt(t.min),
            _fmt(t.max),
            _fmt(t.smallest_subnormal),
            _fmt(t.eps),
            t.special_values,
        ]
        for t in types
    ]
    widths = [max(len(row[i]) for row in [head, *table]) for i in range(len(head))]
    for row in [head, ["-" * w for w in widths], *table]:
        print(
            "  ".join(
                cell.ljust(w) for cell, w in zip(row, widths, strict=True)
            ).rstrip()
        )
    return 0


def cmd_opt(args: argparse.Namespace) -> int:
    """Parse IR, run a pass pipeline, print the result (like xdsl-opt)."""
    from xdsl.dialects.builtin import ModuleOp
    from xdsl.passes import ModulePass, PassPipeline
    from xdsl.utils.exceptions import ArgSpecParseError, DiagnosticException

    from lpcc.ir.dialect import context, parse_module, print_module, verify_module
    from lpcc.passes import get_all_passes

    passes = get_all_passes()
    if args.list_passes:
        print("\n".join(sorted(passes)))
        return 0
    if args.file is None:
        raise LpccError("give an input FILE (or - for standard input)")
    name = "<stdin>" if args.file == "-" else args.file
    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
    except OSError as err:
        raise LpccError(f"cannot read {name}: {err.strerror}") from None
    module = parse_module(text, name)
    chunks: list[str] = []

    def dump(after: ModulePass | None, mod: ModuleOp, _next: ModulePass | None) -> None:
        # xDSL calls this before the first pass (after=None) and after each.
        if after is not None:
            chunks.append(f"// -----// IR after {after.name} //----- //\n")
            chunks.append(print_module(mod))

    if args.opt_level is not None:
        from lpcc.passes.pipeline import default_pipeline

        level = default_pipeline(args.opt_level, target=args.target)
        args.passes = ",".join(p for p in (level, args.passes) if p)
    pipeline = None
    if args.passes:
        callback = dump if args.print_between_passes else None
        try:
            pipeline = PassPipeline.parse_spec(passes, args.passes, callback=callback)
        except (ArgSpecParseError, ValueError) as err:  # xDSL's own messages
            raise LpccError(
                f"bad pipeline {args.passes!r}: {err}\nknown passes: "
                f"{', '.join(sorted(passes))} (lpcc opt --list-passes)"
            ) from None
        try:
            pipeline.apply(context(), module)
        except DiagnosticException as err:
            raise LpccError(
                f"pipeline {args.passes!r} failed on {name}: {err}"
            ) from None
        verify_module(module, f"{name} after {args.passes}")
    if not chunks:  # with --print-between-passes the last dump is the result
        chunks.append(print_module(module))
    if args.output:
        try:
            with open(args.output, "w") as out:
                out.writelines(chunks)
        except OSError as err:
            raise LpccError(f"cannot write {args.output}: {err.strerror}") from None
    else:
        sys.stdout.writelines(chunks)
    return 0


# -- compile ------------------------------------------------------------------------

# --example dtypes: lpcc's names and torch's, to the torch dtype attribute.
_EXAMPLE_DTYPES = {
    "f32": "float32",
    "float32": "float32",
    "float": "float32",
    "f16": "float16",
    "float16": "float16",
    "half": "float16",
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
    "int64": "int64",
    "long": "int64",
    "int32": "int32",
    "int": "int32",
    "int16": "int16",
    "int8": "int8",
    "uint8": "uint8",
    "bool": "bool",
    "i1": "bool",
    "uint1": "bool",
}


def parse_example(text: str) -> list[tuple[tuple[int, ...], str] | str]:
    """`--example` SHAPES: `3x16`, `1x16:int64`, `a.npy`, several comma-separated.

    Each item is (shape, torch dtype name) or the path of a .npy file. Raises
    argparse.ArgumentTypeError (a usage error, exit 2) on bad syntax.
    """
    items: list[tuple[tuple[int, ...], str] | str] = []
    for item in text.replace(",", " ").split():
        if item.endswith(".npy"):
            items.append(item)
            continue
        shape_text, _, dt = item.partition(":")
        dt = dt or "f32"
        if dt not in _EXAMPLE_DTYPES:
            raise argparse.ArgumentTypeError(
                f"{item!r}: unknown dtype {dt!r}; use one of "
                f"{', '.join(sorted(set(_EXAMPLE_DTYPES)))}"
            )
        dims = shape_text.lower().split("x") if shape_text else []
        if not all(d.isdigit() for d in dims):
            raise argparse.ArgumentTypeError(
                f"{item!r}: a shape is sizes joined by 'x' with an optional "
                "':dtype', e.g. 3x16 or 1x16:int64 (a scalar is ':f32')"
            )
        items.append((tuple(int(d) for d in dims), _EXAMPLE_DTYPES[dt]))
    if not items:
        raise argparse.ArgumentTypeError("no shapes given, e.g. --example 3x16")
    return items


def parse_dynamic(text: str) -> tuple[int, int, int | None, int | None]:
    """`--dynamic IN:DIM[:MIN..MAX]`: input IN's dimension DIM is dynamic.

    `0:1` (any size), `0:1:2..512`, `0:1:..512`. Bad syntax: exit 2.
    """
    parts = text.split(":")
    try:
        if len(parts) not in (2, 3):
            raise ValueError
        index, dim = int(parts[0]), int(parts[1])
        lo = hi = None
        if len(parts) == 3:
            a, sep, b = parts[2].partition("..")
            if not sep:
                raise ValueError
            lo = int(a) if a else None
            hi = int(b) if b else None
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected INPUT:DIM[:MIN..MAX], e.g. 0:1 or 0:1:2..512 "
            "(input 0's dimension 1 takes sizes 2 to 512)"
        ) from None
    return index, dim, lo, hi


def load_factory(spec: str) -> Callable[[], Any]:
    """`MODULE:FACTORY`: MODULE a dotted name (from the current directory too)
    or a .py path; FACTORY a name in it, dotted for attributes."""
    import importlib
    import importlib.util

    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise CliError(
            f"model {spec!r}: expected MODULE:FACTORY, e.g. lpcc.models:MLP or "
            "my_model.py:build (FACTORY() must return a torch.nn.Module)"
        )
    if module_name.endswith(".py") or os.sep in module_name:
        path = Path(module_name)
        if not path.is_file():
            raise CliError(f"model {spec!r}: no file {module_name}")
        name = f"_lpcc_cli_{path.stem}"
        loader = importlib.util.spec_from_file_location(name, path)
        if loader is None or loader.loader is None:
            raise CliError(f"model {spec!r}: cannot import {module_name}")
        module = importlib.util.module_from_spec(loader)
        sys.modules[name] = module
        sys.path.insert(0, str(path.resolve().parent))  # its sibling imports
        try:
            loader.loader.exec_module(module)
        except Exception as err:
            raise CliError(
                f"model {spec!r}: importing {module_name} failed: "
                f"{type(err).__name__}: {err}"
            ) from err
    else:
        if "" not in sys.path and os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())  # as `python -m` would
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            raise CliError(
                f"model {spec!r}: no module named {err.name!r}; give a module "
                "importable from the current directory or a path to a .py file"
            ) from None
        except Exception as err:
            raise CliError(
                f"model {spec!r}: importing {module_name} failed: "
                f"{type(err).__name__}: {err}"
            ) from err
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = sorted(  # callables defined there (not its imports)
                n
                for n, v in vars(module).items()
                if not n.startswith("_")
                and callable(v)
                and getattr(v, "__module__", module.__name__) == module.__name__
            )
            raise CliError(
                f"model {spec!r}: {module_name} has no {attr!r}; its callables: "
                f"{', '.join(names[:20])}{' ...' if len(names) > 20 else ''}"
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise CliError(
            f"model {spec!r}: {attr} is a {type(obj).__name__}, not callable"
        )
    return obj


def _example_inputs(items: Sequence[tuple[tuple[int, ...], str] | str]) -> list[Any]:
    """Tensors for the shapes: floats ~ N(0, 1) (seed 0), ints and bools zero."""
    import numpy as np
    import torch

    gen = torch.Generator().manual_seed(0)
    out = []
    for item in items:
        if isinstance(item, str):
            out.append(torch.from_numpy(_load_npy(item, "--example")))
            continue
        shape, name = item
        dt = getattr(torch, name)
        if dt.is_floating_point:
            out.append(torch.randn(shape, generator=gen).to(dt))
        else:
            out.append(torch.from_numpy(np.zeros(shape, dtype=str(dt)[6:])))
    return out


def _dynamic_shapes(
    specs: Sequence[tuple[int, int, int | None, int | None]], n_inputs: int
) -> tuple[Any, ...] | None:
    if not specs:
        return None
    from torch.export import Dim

    shapes: list[dict[int, Any] | None] = [None] * n_inputs
    for index, dim, lo, hi in specs:
        if not 0 <= index < n_inputs:
            raise CliError(
                f"--dynamic {index}:{dim}: there are {n_inputs} example inputs "
                f"(0..{n_inputs - 1})"
            )
        d = shapes[index] = shapes[index] or {}
        d[dim] = Dim(f"in{index}_dim{dim}", min=lo, max=hi)
    return tuple(shapes)


class _StageClock:
    """`lpcc.compile`'s `on_stage` hook: stage timings and the progress bar.

    The bar's total is known up front: import, quantize, each pass of the
    pipeline, lower.
    """

    def __init__(self, bar: Any, names: list[str]) -> None:
        self.bar = bar
        self.times: list[tuple[str, float]] = []
        self._next = iter(names[1:])
        bar.total = len(names)
        bar.set_postfix_str(names[0] if names else "")

    def __call__(self, stage: str, seconds: float) -> None:
        self.times.append((stage, seconds))
        self.bar.update(1)
        self.bar.set_postfix_str(next(self._next, ""))

    def __enter__(self) -> _StageClock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()


def _stage_names(args: argparse.Namespace) -> list[str]:
    """The stages `lpcc.compile` will report, in order (for the bar's total)."""
    from lpcc.passes.pipeline import default_pipeline, parse_pipeline
    from lpcc.quant import parse_quant

    cfg = parse_quant(args.quant)
    spec = default_pipeline(
        args.opt_level,
        target=args.target,
        activations=getattr(cfg, "activations", "float") if cfg else "float",
    )
    names = ["import"] + (["quantize"] if cfg is not None else [])
    seen: dict[str, int] = {}
    for p in parse_pipeline(spec):
        seen[p.name] = seen.get(p.name, 0) + 1
        names.append(p.name if seen[p.name] == 1 else f"{p.name}#{seen[p.name]}")
    return [*names, "lower"]


def _progress_bar(args: argparse.Namespace, total: int, desc: str) -> Any:
    """A tqdm bar on stderr under the `progress` knob's rules (off with -q)."""
    from tqdm.auto import tqdm

    from lpcc import config

    mode = config.get("progress")
    disable: bool | None
    if args.quiet or mode == "never":
        disable = True
    else:
        disable = None if mode == "auto" else False  # None: only on a terminal
    return tqdm(total=total, desc=desc, unit="stage", disable=disable, leave=False)


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def cmd_compile(args: argparse.Namespace) -> int:
    """Import MODULE:FACTORY, build the model, compile it, save the program."""
    import lpcc
    from lpcc import config

    factory = load_factory(args.model)
    try:
        model = factory()
    except Exception as err:
        raise CliError(
            f"model {args.model!r}: calling {args.model.rpartition(':')[2]}() "
            f"failed: {type(err).__name__}: {err}; FACTORY must build the model "
            "with no arguments"
        ) from err
    import torch

    if not isinstance(model, torch.nn.Module):
        raise CliError(
            f"model {args.model!r}: the factory returned a {type(model).__name__}, "
            "not a torch.nn.Module"
        )
    items = [item for group in args.example for item in group]
    inputs = _example_inputs(items)
    dynamic = _dynamic_shapes(args.dynamic or [], len(inputs))
    out = Path(args.output)
    if not out.parent.is_dir():
        raise CliError(f"-o {args.output}: the directory {out.parent} does not exist")
    overrides = {"progress": "never"} if args.quiet else {}
    start = time.perf_counter()
    names = _stage_names(args)
    bar = _progress_bar(args, len(names), "lpcc compile")
    with config.override(**overrides), _StageClock(bar, names) as clock:
        program = lpcc.compile(
            model,
            tuple(inputs),
            quant=args.quant,
            target=args.target,
            dynamic_shapes=dynamic,
            opt_level=args.opt_level,
            **({"dump_ir": args.dump_ir} if args.dump_ir else {}),
            on_stage=clock,
        )
    seconds = time.perf_counter() - start
    try:
        program.save(out)
    except OSError as err:
        raise CliError(f"-o {args.output}: cannot write: {err.strerror}") from None
    prog = program.program
    _say(args, f"pipeline: {prog.meta.get('pipeline') or '(none)'}", verbose=True)
    for stage, sec in clock.times:
        _say(args, f"  {stage:<28} {sec * 1e3:9.1f} ms", verbose=True)
    native = sum(k.target != "reference" for k in prog.kernels)
    stats = prog.stats()
    quant = ""
    if "quant_report" in prog.meta:
        report = program.quant_report()
        quant = (
            f", {len(report.rows)} layers {report.config} "
            f"({report.bits_per_weight:.2f} bits/weight)"
        )
    _say(
        args,
        f"compiled {args.model} for {prog.target}: {stats['kernels']} kernels "
        f"({native} native), {stats['constants']} constants "
        f"{_human(stats['constant_bytes'])}{quant}; {seconds:.2f} s -> {out}",
    )
    return 0


# -- run, dump, bench ---------------------------------------------------------------


def _load_program(path: str) -> Program:
    from lpcc.runtime import load

    try:
        return load(path)
    except OSError as err:
        raise CliError(
            f"cannot read program {path}: {err.strerror}; give a file written by "
            "`lpcc compile -o`"
        ) from None


def _load_npy(path: str, option: str) -> np.ndarray:
    import numpy as np

    try:
        return np.load(path, allow_pickle=False)
    except OSError as err:
        raise CliError(f"{option} {path}: cannot read: {err.strerror or err}") from None
    except ValueError as err:
        raise CliError(
            f"{option} {path}: not a .npy array ({err}); save inputs with np.save"
        ) from None


def _sizes(text: Sequence[str]) -> dict[str, int]:
    env = {}
    for item in text:
        name, sep, value = item.partition("=")
        if not sep or not value.isdigit():
            raise CliError(f"--size {item!r}: expected SYMBOL=N, e.g. --size s0=16")
        env[name] = int(value)
    return env


def _random_inputs(program: Program, env: dict[str, int]) -> list[np.ndarray]:
    """Inputs from the program's specs: floats ~ N(0, 1), ints and bools zero.

    A dynamic size is taken from --size, else the lower end of its range.
    """
    import numpy as np

    from lpcc.ir.dtypes import dtype
    from lpcc.ir.symbolic import ShapeError, evaluate_shape, symbols

    known = {sym for spec in program.inputs for d in spec.shape for sym in symbols(d)}
    for sym in env:
        if sym not in known:
            raise CliError(
                f"--size {sym}={env[sym]}: the program has no size {sym!r}; its "
                f"sizes: {', '.join(sorted(known)) or 'none (all static)'} "
                "(`lpcc dump` shows them with their ranges)"
            )
    env = dict(env)
    for spec in program.inputs:
        for d in spec.shape:
            for sym in symbols(d):
                if sym not in env:
                    lo, _ = program.dim_ranges.get(sym, (1, None))
                    env[sym] = max(lo, 1)
    rng = np.random.default_rng(0)
    out = []
    for spec in program.inputs:
        try:
            shape = evaluate_shape(spec.shape, env)
        except ShapeError as err:
            raise CliError(f"input {spec.name!r}: {err}; give --size") from None
        dt = dtype(spec.dtype)
        if dt.kind == "float":
            out.append(rng.standard_normal(shape).astype(dt.value_dtype))
        else:
            out.append(np.zeros(shape, dt.value_dtype))
    return out


def _thread_override(threads: int | None) -> dict[str, int]:
    if threads is None:
        return {}
    if threads < 1:
        raise CliError(f"--threads {threads}: give 1 or more")
    return {"num_threads": threads}


def cmd_run(args: argparse.Namespace) -> int:
    """Run a saved program on .npy inputs; save or show the outputs."""
    import numpy as np

    from lpcc import config
    from lpcc.runtime import VM

    program = _load_program(args.program)
    inputs = [_load_npy(p, "--input") for p in args.input or []]
    outputs_to = args.output or []
    if outputs_to and len(outputs_to) != len(program.outputs):
        raise CliError(
            f"--output: the program has {len(program.outputs)} outputs "
            f"({', '.join(s.name for s in program.outputs)}), got "
            f"{len(outputs_to)} paths"
        )
    with config.override(**_thread_override(args.threads)):
        results = VM(program).run(inputs)
    if outputs_to:
        for path, y in zip(outputs_to, results, strict=True):
            try:
                np.save(path, y, allow_pickle=False)
            except OSError as err:
                raise CliError(
                    f"--output {path}: cannot write: {err.strerror}"
                ) from None
            _say(args, f"wrote {path}: {y.dtype} {list(y.shape)}")
        return 0
    with np.printoptions(precision=6, threshold=8, edgeitems=4):
        for spec, y in zip(program.outputs, results, strict=True):
            first = np.array2string(y.reshape(-1)[:8], separator=", ")
            print(f"{spec.name}: {y.dtype} {list(y.shape)} first values {first}")
    return 0


def cmd_dump(args: argparse.Namespace) -> int:
    """The listing, the metadata (JSON) and the quantization report."""
    program = _load_program(args.program)
    print(program.as_text(kernels=args.kernels), end="")
    meta = {k: v for k, v in program.meta.items() if k != "quant_report"}
    print("metadata:")
    print(json.dumps(meta, indent=2, sort_keys=True, default=str))
    report = program.meta.get("quant_report")
    if report is not None:
        from lpcc.quant import QuantReport

        print(str(QuantReport.from_dict(report)))
    else:
        print("quantization: none (compiled without --quant)")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Latency of one run: warm-up runs, then median / p10 / p90 / min."""
    import numpy as np

    from lpcc import config
    from lpcc.runtime import VM

    program = _load_program(args.program)
    if args.warmup < 0 or args.repeat < 1:
        raise CliError(
            f"--warmup {args.warmup} --repeat {args.repeat}: warm-up must be >= 0 "
            "and repeat >= 1"
        )
    if args.input:
        inputs = [_load_npy(p, "--input") for p in args.input]
    else:
        inputs = _random_inputs(program, _sizes(args.size or []))
    with config.override(**_thread_override(args.threads)):
        vm = VM(program)
        for _ in range(args.warmup):
            vm.run(inputs)
        times = np.empty(args.repeat)
        for i in range(args.repeat):
            start = time.perf_counter()
            vm.run(inputs)
            times[i] = time.perf_counter() - start
        threads = config.get("num_threads")
    ms = times * 1e3
    p10, med, p90 = np.percentile(ms, [10, 50, 90])
    shapes = ", ".join(f"{list(x.shape)}" for x in inputs)
    print(
        f"{args.program} (target {program.target}, inputs {shapes}, threads "
        f"{threads or 'all'}): {args.repeat} runs after {args.warmup} warm-up"
    )
    print(
        f"median {med:.4f} ms  p10 {p10:.4f} ms  p90 {p90:.4f} ms  "
        f"min {ms.min():.4f} ms"
    )
    return 0


# -- the parser ---------------------------------------------------------------------


def _common() -> argparse.ArgumentParser:
    """-q / -v, accepted before or after the subcommand."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print only errors",
    )
    common.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="also print the pipeline, stage timings and tracebacks",
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(
        prog="lpcc",
        description="lpcc: a deep-learning compiler for numbers narrower than a byte",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"lpcc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "compile",
        parents=[common],
        help="compile a torch model to a .lpcc file",
        description="Import MODULE, call FACTORY() for a torch.nn.Module, compile "
        "it for the example input shapes, and save the program.",
    )
    p.add_argument(
        "model",
        metavar="MODULE:FACTORY",
        help="e.g. lpcc.models:TinyLlama, or path/to/file.py:build",
    )
    p.add_argument(
        "--example",
        required=True,
        action="append",
        type=parse_example,
        metavar="SHAPES",
        help="example inputs: 3x16 (float32), 1x16:int64, 2x3x16x16:f32, x.npy; "
        "several comma-separated or repeated",
    )
    p.add_argument("--quant", help="weight quantization, e.g. int4-g32 (docs/using.md)")
    p.add_argument(
        "--target",
        default="cpu",
        choices=("cpu", "cuda", "reference"),
        help="(default cpu)",
    )
    p.add_argument(
        "-O",
        "--opt-level",
        dest="opt_level",
        type=int,
        default=2,
        choices=(0, 1, 2),
        help="pass pipeline level (default 2)",
    )
    p.add_argument(
        "--dynamic",
        action="append",
        type=parse_dynamic,
        metavar="IN:DIM[:MIN..MAX]",
        help="make input IN's dimension DIM dynamic, e.g. 0:1:2..512",
    )
    p.add_argument(
        "--dump-ir",
        metavar="DIR",
        help="write every stage's IR and the listing here (as LPCC_DUMP_IR)",
    )
    p.add_argument("-o", "--output", required=True, help="the .lpcc file to write")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("run", parents=[common], help="run a .lpcc program")
    p.add_argument("program", help="a file written by lpcc compile")
    p.add_argument(
        "--input", "-i", action="extend", nargs="+", help=".npy inputs, in order"
    )
    p.add_argument(
        "--output", "-o", action="extend", nargs="+", help=".npy files for outputs"
    )
    p.add_argument("--threads", type=int, help="CPU kernel threads (default: all)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "dump", parents=[common], help="listing, metadata and quant report"
    )
    p.add_argument("program", help="a file written by lpcc compile")
    p.add_argument("--kernels", action="store_true", help="add kernel sources")
    p.set_defaults(func=cmd_dump)

    p = sub.add_parser("bench", parents=[common], help="latency of a .lpcc program")
    p.add_argument("program", help="a file written by lpcc compile")
    p.add_argument(
        "--input",
        "-i",
        action="extend",
        nargs="+",
        help=".npy inputs (default: random ones of the program's input shapes)",
    )
    p.add_argument(
        "--size",
        action="append",
        metavar="SYM=N",
        help="a dynamic size for the random inputs (default: its lower bound)",
    )
    p.add_argument("--warmup", type=int, default=10, help="untimed runs (default 10)")
    p.add_argument("--repeat", type=int, default=100, help="timed runs (default 100)")
    p.add_argument("--threads", type=int, help="CPU kernel threads (default: all)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser(
        "types", parents=[common], help="table of element types and their ranges"
    )
    p.add_argument("names", nargs="*", help="types to show (default: every named one)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_types)

    p = sub.add_parser(
        "opt", parents=[common], help="parse lp IR, run passes, print it"
    )
    p.add_argument("file", nargs="?", help="IR file, or - for standard input")
    p.add_argument("-p", "--passes", default="", help="pipeline, e.g. cse,dce")
    p.add_argument(
        "-O",
        dest="opt_level",
        type=int,
        choices=(0, 1, 2),
        help="run the default pipeline of this level first (see lpcc.passes.pipeline)",
    )
    p.add_argument(
        "--target",
        default="reference",
        choices=("reference", "cpu", "cuda"),
        help="target whose kernel-choice rule -O2 follows (default: reference)",
    )
    p.add_argument("-o", "--output", help="write here instead of standard output")
    p.add_argument(
        "--print-between-passes",
        action="store_true",
        help="print the IR after every pass",
    )
    p.add_argument("--list-passes", action="store_true", help="list pass names")
    p.set_defaults(func=cmd_opt)

    from lpcc import demo

    demo.add_parser(sub)

    p = sub.add_parser(
        "config", parents=[common], help="list the LPCC_* knobs and their values"
    )
    p.set_defaults(func=cmd_config)
    return parser


def cmd_config(args: argparse.Namespace) -> int:
    """Every knob: its variable, default and help, then its current value."""
    from lpcc import config

    print(config.describe())
    print()
    for name in config.KNOBS:
        print(f"{name} = {config.get(name)!r}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (0 ok, 1 lpcc error, 2 usage)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version, usage errors
        return exit_.code if isinstance(exit_.code, int) else 2
    args.quiet = getattr(args, "quiet", False)
    args.verbose = getattr(args, "verbose", False)
    if args.quiet and args.verbose:
        print("lpcc: error: --quiet and --verbose exclude each other", file=sys.stderr)
        return 2
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args))
    except BrokenPipeError:  # `lpcc dump x.lpcc | head`: not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error at exit
        return 0
    except LpccError as err:
        if args.verbose:
            traceback.print_exc()
        print(f"lpcc {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
