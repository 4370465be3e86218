"""The `lpcc` command: `lpcc --version`, `lpcc types`, `lpcc opt`.

Later issues add subcommands (compile, run, demo, bench); each lives in one
function here and imports what it needs only when it runs, so `lpcc --help`
stays fast.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from lpcc._version import __version__
from lpcc.errors import LpccError
from lpcc.ir.dtypes import DType


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lpcc",
        description="lpcc: a deep-learning compiler for numbers narrower than a byte",
    )
    parser.add_argument("--version", action="version", version=f"lpcc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("types", help="table of element types and their ranges")
    p.add_argument("names", nargs="*", help="types to show (default: every named one)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_types)

    p = sub.add_parser("opt", help="parse lp IR, run passes, print it")
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

    p = sub.add_parser("config", help="list the LPCC_* knobs and their values")
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
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args))
    except LpccError as err:
        print(f"lpcc {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
