"""Which GEMM kernel a quantized linear layer gets: LUT, dequant or dense.

The rule (`choose_kernel(weight, m, target)`). m is the number of
activation rows that share one pass over the weights (tokens in the call;
None when it is dynamic, i.e. decode-shaped):

| target               | weight                      | m            | kernel    |
| -------------------- | --------------------------- | ------------ | --------- |
| "cuda"               | any quantized type          | any          | "dequant" |
| "cpu", "reference"   | int/uint of <= 7 bits       | any          | "lut"     |
| "cpu", "reference"   | int/uint of 8 bits          | any          | "dequant" |
| "cpu", "reference"   | float types (f4e2m1, ...)   | any          | "dequant" |

Why: on CUDA, tensor cores want dequantized fp16 tiles (LOP3 decoding,
BitBLAS/Ladder). On the CPU, lpcc's own kernels measured side by side
(`benchmarks/gemv.py --lpcc-kernels lut,dequant`, 4096x4096, group 128,
cold, Zen 3 AVX2, 2026-11-23; us at 1 / 2 threads):

| width | M  | lut          | dequant       |
| ----- | -- | ------------ | ------------- |
| int3  | 1  | 552 / 411    | 904 / 560     |
| int4  | 1  | 708 / 447    | 1069 / 477    |
| int5  | 1  | 895 / 632    | 1448 / 1028   |
| int6  | 1  | 1086 / 777   | 1393 / 841    |
| int7  | 1  | 1169 / 837   | 1492 / 895    |
| int8  | 1  | 1520 / 787   | 1228 / 701    |
| int2  | 16 | 2358 / 1807  | 7078 / 3658   |
| int4  | 16 | 4951 / 2196  | 8548 / 4938   |
| int4  | 64 | 16440 / 8541 | 28839 / 13976 |

The LUT kernel reads b bit planes (b/8 bytes a weight) where the dequant
kernel stores 5..7-bit codes in 8-bit fields, and its table lookups
replace b multiply-adds by one; only at 8 bits does the dequant kernel's
plain int8 stream win. With many rows the LUT kernel still wins, because
its tables are built once per row and reused across all N outputs. Float
weight types have no integer bit planes, so they cannot use LUT. "dense"
(keep dequantize + matmul) is never chosen by the rule; it is for
overrides (debugging, accuracy-critical layers).

Accuracy: the LUT kernel's tables hold activation sums as int8 (per-group
scales, as llama.cpp's Q8 activations), so its results differ from f32
activations by about 1e-2 relative on a model's logits (`lpcc demo`: 2e-2
at int4, the same greedy tokens); the dequant kernel with float activations
is exact up to f32 rounding. Override with `kernels={"*": "dequant"}` where
that matters.

An earlier provisional rule (LUT only for <= 3 bits and m <= 8, from
published T-MAC figures and llama.cpp on Zen 5) is superseded by these
measurements; Zen 5 (AVX-512) has not been measured with lpcc's kernels,
and the table should be rechecked there.

Overrides: `pattern=kind` entries, fnmatch patterns over the weight's
`lp.name` (its state_dict key), first match wins, e.g.
`layers.0.*=dense,*.mlp.*=lut` (`parse_overrides`); the Python API passes
a dict {pattern: kind} through `normalize_overrides`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping

from lpcc.errors import LpccError
from lpcc.ir.dtypes import DType, IntType

__all__ = [
    "KINDS",
    "LUT_MAX_BITS",
    "LUT_MAX_M",
    "TARGETS",
    "KernelChoiceError",
    "check_target",
    "choose_kernel",
    "find_override",
    "format_overrides",
    "lut_unsupported_reason",
    "match_override",
    "normalize_overrides",
    "parse_overrides",
]

KINDS = ("lut", "dequant", "dense")
TARGETS = ("cpu", "reference", "cuda")
LUT_MAX_BITS = 7  # int/uint weights of at most this many bits go to LUT
LUT_MAX_M: int | None = None  # ... when at most this many rows share them
LUT_WEIGHT_BITS = 8  # the LUT ops take int/uint codes of 1..8 bits

Overrides = list[tuple[str, str]]


class KernelChoiceError(LpccError, ValueError):
    """A bad target, kernel kind or override for the kernel choice."""


def check_target(target: str, where: str) -> None:
    if target not in TARGETS:
        raise KernelChoiceError(
            f"{where}: unknown target {target!r}; choose one of "
            f"{', '.join(repr(t) for t in TARGETS)}"
        )


def lut_unsupported_reason(weight: DType) -> str | None:
    """Why `weight` cannot use the LUT kernel, or None when it can."""
    if not isinstance(weight, IntType):
        return (
            f"{weight} is not an integer type: the LUT kernel splits integer "
            "codes into bit planes (int/uint of 1..8 bits); use 'dequant'"
        )
    if weight.bits > LUT_WEIGHT_BITS:
        return (
            f"{weight} has {weight.bits} bits; the LUT kernel takes int/uint "
            f"codes of 1..{LUT_WEIGHT_BITS} bits; use 'dequant'"
        )
    return None


def choose_kernel(weight: DType, m: int | None, target: str) -> str:
    """The kernel ("lut" or "dequant") the rule picks (module docstring)."""
    check_target(target, "choose_kernel")
    if m is not None and m < 0:
        raise KernelChoiceError(f"choose_kernel: m must be >= 0 or None, got {m}")
    if target == "cuda":
        return "dequant"
    if (
        isinstance(weight, IntType)
        and weight.bits <= LUT_MAX_BITS
        and (m is None or LUT_MAX_M is None or m <= LUT_MAX_M)
    ):
        return "lut"
    return "dequant"


# -- overrides ----------------------------------------------------------------------

_OPTION = "option override"
_GRAMMAR = (
    "write comma-separated pattern=kind entries, e.g. "
    "'layers.0.*=dense,*.mlp.*=lut' (kinds: " + ", ".join(KINDS) + ")"
)


def _entry(pattern: object, kind: object, where: str) -> tuple[str, str]:
    if not isinstance(pattern, str) or not isinstance(kind, str):
        raise KernelChoiceError(
            f"{where}: expected str pattern and kind, got {pattern!r}={kind!r}; "
            f"{_GRAMMAR}"
        )
    pattern, kind = pattern.strip(), kind.strip()
    if not pattern:
        raise KernelChoiceError(f"{where}: an entry has an empty pattern; {_GRAMMAR}")
    if any(c in pattern for c in ",="):
        raise KernelChoiceError(
            f"{where}: pattern {pattern!r} holds ',' or '=', which separate "
            f"entries; {_GRAMMAR}"
        )
    if kind not in KINDS:
        raise KernelChoiceError(
            f"{where}: unknown kernel kind {kind!r} for pattern {pattern!r}; "
            f"choose one of {', '.join(KINDS)}"
        )
    return pattern, kind


def parse_overrides(text: str) -> Overrides:
    """'pat=kind,pat=kind' -> [(pat, kind), ...] in order (first match wins)."""
    where = f"pass select-kernels, {_OPTION}"
    if not isinstance(text, str):
        raise KernelChoiceError(f"{where}: expected a string, got {text!r}")
    out: Overrides = []
    if not text.strip():
        return out
    for raw in text.split(","):
        entry = raw.strip()
        pattern, sep, kind = entry.rpartition("=")
        if not sep:
            raise KernelChoiceError(f"{where}: entry {entry!r} has no '='; {_GRAMMAR}")
        out.append(_entry(pattern, kind, where))
    return out


def normalize_overrides(
    value: str | Mapping[str, str] | Iterable[tuple[str, str]] | None,
) -> Overrides:
    """Overrides as the APIs take them: None, the option string, a dict
    {pattern: kind} (insertion order is match order) or (pattern, kind) pairs."""
    where = f"kernel choice {_OPTION}"
    if value is None:
        return []
    if isinstance(value, str):
        return parse_overrides(value)
    items = value.items() if isinstance(value, Mapping) else value
    out: Overrides = []
    try:
        for item in items:
            pattern, kind = item
            out.append(_entry(pattern, kind, where))
    except (TypeError, ValueError) as err:
        if isinstance(err, KernelChoiceError):
            raise
        raise KernelChoiceError(
            f"{where}: expected a dict {{pattern: kind}} or (pattern, kind) pairs, "
            f"got {value!r}"
        ) from None
    return out


def format_overrides(overrides: Iterable[tuple[str, str]]) -> str:
    """The option string of `select-kernels` for these overrides."""
    return ",".join(f"{p}={k}" for p, k in normalize_overrides(list(overrides)))


def find_override(
    name: str, overrides: Iterable[tuple[str, str]]
) -> tuple[str, str] | None:
    """The first (pattern, kind) whose pattern matches `name`, or None."""
    for pattern, kind in overrides:
        if fnmatch.fnmatchcase(name, pattern):
            return pattern, kind
    return None


def match_override(name: str, overrides: Iterable[tuple[str, str]]) -> str | None:
    """The kind of the first pattern matching `name`, or None."""
    found = find_override(name, overrides)
    return None if found is None else found[1]
