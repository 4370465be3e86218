"""Weight-only quantization: the config users write, the RTN math, the report.

One formula (docs/DESIGN.md §5, and the semantics of `lp.dequantize`):

    W[n, k] = s[n, g] * (Q[n, k] - z[n, g]),   g = k // group_size

with Q of the weight format (int/uint of 1..8 bits or a float format), s in
f16, f32 or e8m0, and z (the zero point, in the weight format) only where the
format needs one. `quantize_weight` computes Q, s and z by round-to-nearest
(RTN) group-wise along K, the last axis; the `quantize` IR pass
(`lpcc.passes.quantize`) calls it for every linear layer and records a
`QuantReport`.

Defaults, and why:

* group size 128: the common choice of GPTQ/AWQ-style int4 checkpoints; with
  f16 scales it costs 16/128 = 0.125 extra bits per weight. `-pc` (per
  channel) is one group over all of K.
* int and float formats are symmetric (zero maps to code 0, no zero point to
  store); uint formats are asymmetric (a zero point per group, min/max range).
* f16 scales: exact enough for RTN and half the storage of f32; e8m0 (power of
  two scales, as OCP MX) only when asked, e.g. "f4e2m1-g32-se8m0" is MXFP4.
* float activations: the weights are the only quantized tensors. `-a8`
  (activations="int8", e.g. "int4-g32-a8", W4A8) asks the
  dequant-after-group-gemm rewrite to quantize activations per weight group
  to int8 so that the inner sums are exact int32 (ggml's Q8 activations);
  integer weight formats only.

Only NumPy is used here (the IR pass lives in `lpcc.passes.quantize`); every
rounding and code mapping goes through the `DType` codecs of
`lpcc.ir.dtypes`.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from lpcc.errors import DTypeError, LpccError
from lpcc.ir.dtypes import DType, FloatType, IntType, dtype

__all__ = [
    "ACTIVATIONS",
    "DEFAULT_GROUP_SIZE",
    "SCALE_DTYPES",
    "LayerRow",
    "QuantConfig",
    "QuantError",
    "QuantReport",
    "QuantizedWeight",
    "parse_quant",
    "quantize_weight",
]

DEFAULT_GROUP_SIZE = 128
SCALE_DTYPES = ("f16", "f32", "e8m0")

GRAMMAR = (
    "<dtype>[-g<N>|-pc][-sym|-asym][-s<f16|f32|e8m0>][-a8]; e.g. 'int4' (groups of "
    f"{DEFAULT_GROUP_SIZE}, symmetric, f16 scales), 'int4-g32', 'uint3-g64' "
    "(uint is asymmetric: a zero point per group), 'int2-g64-asym', 'int8-pc' "
    "(per channel: one group over all of K), 'f4e2m1-g32', "
    "'f4e2m1-g32-se8m0' (MXFP4), 'int4-g32-a8' (int8 activations, W4A8)"
)
ACTIVATIONS = ("float", "int8")


class QuantError(LpccError, ValueError):
    """A quantization setting that cannot work, or a weight it cannot quantize."""


# -- configuration -------------------------------------------------------------------


def _default_symmetric(dt: DType) -> bool:
    """int and float formats: symmetric; uint: asymmetric (zero point)."""
    return not (isinstance(dt, IntType) and not dt.signed)


def _patterns(value: object, what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, Iterable) or not all(isinstance(p, str) for p in value):
        raise QuantError(
            f"QuantConfig.{what}: expected glob patterns (a str or a tuple of str) "
            f"matched against weight names such as 'layers.0.mlp.w1.weight', got "
            f"{value!r}"
        )
    return tuple(value)


@dataclass(frozen=True)
class QuantConfig:
    """How to quantize weights; see the module docstring for the defaults.

    `weight` is the weight format (any int/uint of 1..8 bits or float format
    of at most 16 bits, as `lpcc.dtype` names it); `group_size` the number of
    consecutive K elements that share a scale (None: per channel);
    `symmetric`/`zero_point` are resolved from the format when None;
    `include`/`exclude` are fnmatch globs on the weight's state_dict name;
    `conv` also quantizes conv2d weights (as [O, C*kh*kw]);
    `activations` is "float" or "int8" (per-group int8 activations in the
    group GEMM; int/uint weights only; short suffix `-a8`).
    Fields hold resolved values after construction (`weight` a DType,
    `symmetric` and `zero_point` bools), so equal settings compare equal.
    """

    weight: DType | str
    group_size: int | None = DEFAULT_GROUP_SIZE
    symmetric: bool | None = None
    zero_point: bool | None = None
    scale_dtype: str | DType = "f16"
    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    conv: bool = False
    activations: str = "float"

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: resolve once, here
        try:
            wt = dtype(self.weight)
        except DTypeError as err:
            raise QuantError(f"QuantConfig.weight: {err}") from None
        if isinstance(wt, IntType):
            if not 1 <= wt.bits <= 8:
                raise QuantError(
                    f"QuantConfig.weight: {wt} has {wt.bits} bits; integer weight "
                    "formats have 1..8 bits (int1..int8, uint1..uint8)"
                )
        elif isinstance(wt, FloatType):
            if wt.bits > 16:
                raise QuantError(
                    f"QuantConfig.weight: {wt} has {wt.bits} bits; float weight "
                    "formats have at most 16 (f4e2m1, f6e3m2, f8e4m3fn, ...); pass "
                    "quant=None to keep f32 weights"
                )
        else:
            raise QuantError(
                f"QuantConfig.weight: {wt} is a scale format, not a weight format; "
                "use it as scale_dtype='e8m0' with a weight such as f4e2m1"
            )
        set_(self, "weight", wt)

        g = self.group_size
        if g is not None and (isinstance(g, bool) or not isinstance(g, int) or g < 1):
            raise QuantError(
                f"QuantConfig.group_size: expected an int >= 1 (elements of K per "
                f"scale) or None (per channel), got {g!r}"
            )

        try:
            st = dtype(self.scale_dtype)
        except DTypeError:
            st = None
        if st is None or st.name not in SCALE_DTYPES:
            raise QuantError(
                f"QuantConfig.scale_dtype: {self.scale_dtype!r} is not a scale type; "
                f"choose one of {', '.join(SCALE_DTYPES)}"
            )
        set_(self, "scale_dtype", st.name)

        sym = self.symmetric
        if sym is None:
            sym = _default_symmetric(wt)
        if not isinstance(sym, bool):
            raise QuantError(f"QuantConfig.symmetric: expected a bool, got {sym!r}")
        if isinstance(wt, FloatType) and not sym:
            raise QuantError(
                f"QuantConfig.symmetric: float formats ({wt}) are symmetric "
                "(s = absmax / max, no zero point); drop symmetric=False / '-asym'"
            )
        if isinstance(wt, IntType) and sym and wt.bits == 1:
            raise QuantError(
                f"QuantConfig.symmetric: symmetric {wt} has no nonzero level "
                "(qmax = 2**(b-1) - 1 = 0); use 'uint1' or 'int1-asym' (two levels "
                "min..max with a zero point), or int2 for ternary weights"
            )
        set_(self, "symmetric", sym)

        # uint needs a zero point even when symmetric (z = 2**(b-1), as GPTQ's
        # uint4 "sym"); int/float symmetric formats need none; asym always does.
        needs_zero = not sym or (isinstance(wt, IntType) and not wt.signed)
        if self.zero_point is not None and self.zero_point != needs_zero:
            why = (
                "asymmetric quantization stores one per group"
                if not sym
                else f"symmetric unsigned {wt} stores z = 2**(b-1)"
                if needs_zero
                else f"symmetric {wt} maps zero to code 0"
            )
            raise QuantError(
                f"QuantConfig.zero_point={self.zero_point}: {why}; leave "
                "zero_point=None (it follows `symmetric` and the format)"
            )
        set_(self, "zero_point", needs_zero)

        set_(self, "include", _patterns(self.include, "include"))
        set_(self, "exclude", _patterns(self.exclude, "exclude"))
        if not isinstance(self.conv, bool):
            raise QuantError(f"QuantConfig.conv: expected a bool, got {self.conv!r}")
        if self.activations not in ACTIVATIONS:
            raise QuantError(
                f"QuantConfig.activations: {self.activations!r} is not one of "
                f"{', '.join(repr(a) for a in ACTIVATIONS)} ('int8': suffix -a8)"
            )
        if self.activations == "int8" and not isinstance(wt, IntType):
            raise QuantError(
                f"QuantConfig.activations: int8 activations need integer weight "
                f"codes (int/uint) for exact int32 group sums; {wt} weights take "
                "float activations (drop activations='int8' / '-a8')"
            )

    # -- derived ---------------------------------------------------------------
    @property
    def dtype(self) -> DType:
        """The weight format as a DType."""
        assert isinstance(self.weight, DType)
        return self.weight

    @property
    def scale_type(self) -> DType:
        """The scale format as a DType."""
        return dtype(self.scale_dtype)

    @property
    def per_channel(self) -> bool:
        return self.group_size is None

    @property
    def short(self) -> str:
        """The short string of the format part (`parse_quant` reads it back)."""
        parts = [
            self.dtype.name,
            "pc" if self.group_size is None else f"g{self.group_size}",
        ]
        if self.symmetric != _default_symmetric(self.dtype):
            parts.append("sym" if self.symmetric else "asym")
        if self.scale_dtype != "f16":
            parts.append(f"s{self.scale_dtype}")
        if self.activations == "int8":
            parts.append("a8")
        return "-".join(parts)

    def __str__(self) -> str:
        if self.include == ("*",) and not self.exclude and not self.conv:
            return self.short
        extra = []
        if self.include != ("*",):
            extra.append(f"include={list(self.include)}")
        if self.exclude:
            extra.append(f"exclude={list(self.exclude)}")
        if self.conv:
            extra.append("conv=True")
        return f"{self.short} ({', '.join(extra)})"

    def selects(self, name: str) -> bool:
        """Whether the weight called `name` is quantized (include, then exclude)."""
        return any(fnmatch.fnmatchcase(name, p) for p in self.include) and not any(
            fnmatch.fnmatchcase(name, p) for p in self.exclude
        )

    def group_for(self, k: int) -> int:
        """The group size used for a row of `k` elements (at most k)."""
        return k if self.group_size is None else min(self.group_size, k)


_GROUP_RE = re.compile(r"g(\d+)")


def _bad_spec(text: str, why: str) -> QuantError:
    return QuantError(f"quant={text!r}: {why}. Write {GRAMMAR}")


def _parse_short(text: str) -> dict[str, Any]:
    """The fields a short string sets (only those it names)."""
    parts = text.strip().lower().split("-")
    if not parts[0]:
        raise _bad_spec(text, "no weight format")
    try:
        kwargs: dict[str, Any] = {"weight": dtype(parts[0])}
    except DTypeError as err:
        raise _bad_spec(text, f"{parts[0]!r} is not a weight format ({err})") from None
    seen: set[str] = set()
    for part in parts[1:]:
        if part == "pc" or _GROUP_RE.fullmatch(part):
            key, value = "group_size", None if part == "pc" else int(part[1:])
        elif part in ("sym", "asym"):
            key, value = "symmetric", part == "sym"
        elif part == "a8":
            key, value = "activations", "int8"
        elif part.startswith("s") and len(part) > 1:
            key, value = "scale_dtype", part[1:]
            if value not in SCALE_DTYPES:
                raise _bad_spec(
                    text, f"scale type {value!r} is not one of {SCALE_DTYPES}"
                )
        else:
            raise _bad_spec(text, f"unknown part {part!r}")
        if key in seen:
            raise _bad_spec(text, f"{part!r} repeats a setting given before it")
        seen.add(key)
        kwargs[key] = value
    return kwargs


def parse_quant(spec: str | QuantConfig | DType | None) -> QuantConfig | None:
    """`quant=` as users write it: None, a short string, a DType or a QuantConfig."""
    if spec is None or isinstance(spec, QuantConfig):
        return spec
    if isinstance(spec, DType):
        return QuantConfig(spec)
    if isinstance(spec, str):
        kwargs = _parse_short(spec)
        try:
            return QuantConfig(**kwargs)
        except QuantError as err:
            raise QuantError(f"quant={spec!r}: {err}") from None
    raise QuantError(
        f"quant: expected None, a string or a QuantConfig, got "
        f"{type(spec).__name__}. Strings: {GRAMMAR}"
    )


# -- round-to-nearest ----------------------------------------------------------------


def _expand(v: np.ndarray, group: int, k: int) -> np.ndarray:
    """[N, G] per-group values repeated over their groups, cropped to [N, K]."""
    return np.repeat(v, group, axis=1)[:, :k]


def _scale_codes(s: np.ndarray, st: DType, name: str) -> np.ndarray:
    """Round the exact scales `s` (float64, >= 0) to scale codes.

    f16/f32: round to nearest; a scale that underflows to 0 becomes the
    smallest positive value, and one that overflows is an error. e8m0: the
    smallest power of two >= s, 2**ceil(log2 s), so w / s never exceeds the
    format's max. (OCP MX uses 2**(floor(log2 absmax) - emax), which can
    saturate the largest elements; ours never saturates and loses at most one
    binade of resolution.) All-zero groups (s == 0) get scale 1.
    """
    safe = np.where(s > 0, s, 1.0)
    if st.kind == "e8m0":
        frac, ex = np.frexp(safe)  # safe = frac * 2**ex, frac in [0.5, 1)
        exp = np.where(frac == 0.5, ex - 1, ex).astype(np.int64)
        if np.any(exp > 127):
            raise QuantError(
                f"quantize {name}: a group's scale {float(safe.max()):.3g} is above "
                "e8m0's largest 2**127; these weights are not finite-scale data"
            )
        return st.encode(np.ldexp(1.0, np.maximum(exp, -127)))
    codes = st.encode(safe)
    values = st.decode(codes)
    if not np.all(np.isfinite(values)):
        raise QuantError(
            f"quantize {name}: a group's scale {float(safe.max()):.3g} overflows "
            f"{st}; use scale_dtype='f32' (suffix -sf32)"
        )
    smallest = st.smallest_subnormal or st.smallest_normal
    return np.where(values == 0, st.encode(np.array(smallest)), codes).astype(
        codes.dtype
    )


@dataclass(frozen=True, eq=False)
class QuantizedWeight:
    """Q, s and z of one [N, K] weight; W ~ s * (Q - z) blockwise (`dequantize`)."""

    codes: np.ndarray  # [N, K] codes of `dtype`
    scale: np.ndarray  # [N, G] scale values (float32)
    scale_codes: np.ndarray  # [N, G] codes of `scale_dtype`
    zero: np.ndarray | None  # [N, G] codes of `dtype`, or None
    dtype: DType
    scale_dtype: DType
    group_size: int  # effective: min(config group size, K)
    nmse: float  # sum((W - dequantize())^2) / sum(W^2); 0 for an all-zero W

    @property
    def shape(self) -> tuple[int, int]:
        return self.codes.shape  # type: ignore[return-value]

    @property
    def block(self) -> tuple[int, int]:
        """The `block` of lp.dequantize: one scale per (1, group_size)."""
        return (1, self.group_size)

    def dequantize(self) -> np.ndarray:
        """(Q - z) * s as float32: exactly what lp.dequantize computes."""
        k = self.shape[1]
        q = self.dtype.decode(self.codes).astype(np.float64)
        if self.zero is not None:
            z = self.dtype.decode(self.zero).astype(np.float64)
            q = q - _expand(z, self.group_size, k)
        s = self.scale.astype(np.float64)
        return (q * _expand(s, self.group_size, k)).astype(np.float32)

    @property
    def total_bits(self) -> int:
        """Bits of codes + scales + zeros, unpadded."""
        n, k = self.shape
        groups = self.scale.size
        zero_bits = groups * self.dtype.bits if self.zero is not None else 0
        return n * k * self.dtype.bits + groups * self.scale_dtype.bits + zero_bits

    @property
    def bits_per_weight(self) -> float:
        n, k = self.shape
        return self.total_bits / (n * k)

    @property
    def nbytes(self) -> int:
        """Bytes of the three packed constants (codes, scales, zeros)."""
        n, k = self.shape
        groups = self.scale.size
        zero = self.dtype.nbytes(groups) if self.zero is not None else 0
        return self.dtype.nbytes(n * k) + self.scale_dtype.nbytes(groups) + zero


def quantize_weight(
    w: np.ndarray, cfg: QuantConfig | str, *, name: str = "weight"
) -> QuantizedWeight:
    """Round-to-nearest group quantization of `w` [N, K] along K.

    symmetric int<b>: s = absmax / qmax with qmax = 2**(b-1) - 1, so the grid
    is symmetric around an exact zero and -2**(b-1) is not used (using it,
    s = absmax / 2**(b-1), would gain half a level at the price of clipping
    +absmax; for int2 ours is the ternary {-1, 0, 1}). Symmetric uint<b> is
    the same grid shifted by z = 2**(b-1).
    asymmetric: the range [min(w, 0), max(w, 0)] (zero stays exact and z
    fits), s = range / (2**b - 1), z = round(-min / s + type min).
    float formats: s = absmax / max, Q = encode(w / s) (clipped to +-max).
    The scale is rounded to its format first, and Q computed with the rounded
    scale as lp.quantize does, Q = encode(w / s + z), so `dequantize` uses
    exactly the stored scale. The last group is short when K % group != 0.
    """
    config = parse_quant(cfg)
    if config is None:
        raise QuantError(f"quantize {name}: no quantization config given")
    w = np.asarray(w)
    if w.ndim != 2 or w.dtype.kind != "f" or 0 in w.shape:
        raise QuantError(
            f"quantize {name}: expected a non-empty 2-D float array [N, K], got "
            f"shape {list(w.shape)} of {w.dtype}"
        )
    if not np.all(np.isfinite(w)):
        raise QuantError(
            f"quantize {name}: the weight holds NaN or inf; fix the checkpoint or "
            "exclude this weight (QuantConfig.exclude)"
        )
    dt, st = config.dtype, config.scale_type
    n, k = w.shape
    group = config.group_for(k)
    ngroups = -(-k // group)
    w64 = w.astype(np.float64)
    # Zero padding never changes absmax, nor [min(w, 0), max(w, 0)].
    padded = np.zeros((n, ngroups * group))
    padded[:, :k] = w64
    grouped = padded.reshape(n, ngroups, group)

    lo = None  # asymmetric: the low end of each group's range
    if config.symmetric:
        qmax = dt.max if isinstance(dt, FloatType) else (1 << (dt.bits - 1)) - 1
        s = np.abs(grouped).max(axis=2) / qmax
    else:
        lo = np.minimum(grouped.min(axis=2), 0.0)
        s = (np.maximum(grouped.max(axis=2), 0.0) - lo) / ((1 << dt.bits) - 1)
    scodes = _scale_codes(s, st, name)
    scale = st.decode(scodes).astype(np.float32)  # exact: f16, f32, e8m0
    s_r = scale.astype(np.float64)

    zero_codes = None
    if lo is not None:
        zero_codes = dt.encode(-lo / s_r + dt.min)
    elif config.zero_point:  # unsigned symmetric: the midpoint
        zero_codes = dt.encode(np.full(s.shape, 1 << (dt.bits - 1)))

    x = w64 / _expand(s_r, group, k)
    if zero_codes is not None:
        x = x + _expand(dt.decode(zero_codes).astype(np.float64), group, k)
    if isinstance(dt, FloatType):
        x = np.clip(x, -dt.max, dt.max)  # never inf/NaN in fn/ieee formats
    codes = dt.encode(x)
    qw = QuantizedWeight(codes, scale, scodes, zero_codes, dt, st, group, 0.0)
    err = float(np.sum((w64 - qw.dequantize().astype(np.float64)) ** 2))
    ref = float(np.sum(w64**2))
    return replace(qw, nmse=err / ref if ref > 0 else 0.0)


# -- the report ----------------------------------------------------------------------


@dataclass(frozen=True)
class LayerRow:
    """One quantized weight in a QuantReport."""

    name: str
    shape: tuple[int, ...]  # as in the model (conv2d weights are 4-D)
    format: str
    group_size: int  # effective group size (K for per channel)
    per_channel: bool
    scale_dtype: str
    zero_point: bool
    bits_per_weight: float  # codes + scales + zeros
    nmse: float
    fp32_bytes: int
    packed_bytes: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def _human(nbytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if nbytes < 1024 or unit == "GiB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.2f} {unit}"
        nbytes /= 1024
    raise AssertionError("unreachable")


def _truncate(name: str, width: int) -> str:
    """Keep both ends of a long dotted name: the layer index and the leaf."""
    if len(name) <= width:
        return name
    head = (width - 3) // 2
    return name[:head] + "..." + name[len(name) - (width - 3 - head) :]


@dataclass
class QuantReport:
    """Per-layer results of weight quantization, with totals.

    `skipped`: weights the pass could quantize but include/exclude left out;
    `kept_fp32`: quantized weights whose original constant stays too because
    something other than a matmul rhs uses it (e.g. a tied embedding).
    """

    config: str
    rows: list[LayerRow] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    kept_fp32: list[str] = field(default_factory=list)

    NAME_WIDTH = 48

    # -- totals ----------------------------------------------------------------
    @property
    def fp32_bytes(self) -> int:
        return sum(r.fp32_bytes for r in self.rows)

    @property
    def packed_bytes(self) -> int:
        return sum(r.packed_bytes for r in self.rows)

    @property
    def num_weights(self) -> int:
        return sum(r.numel for r in self.rows)

    @property
    def bits_per_weight(self) -> float:
        """All bits stored (codes, scales, zeros) over all quantized weights."""
        total = self.num_weights
        return (
            sum(r.bits_per_weight * r.numel for r in self.rows) / total
            if total
            else 0.0
        )

    @property
    def compression(self) -> float:
        """fp32 bytes / packed bytes of the quantized weights."""
        return self.fp32_bytes / self.packed_bytes if self.packed_bytes else 0.0

    @property
    def empty_reason(self) -> str | None:
        """Why nothing was quantized, or None when something was."""
        if self.rows:
            return None
        if self.skipped:
            return (
                f"all {len(self.skipped)} quantizable weights were left out by the "
                f"include/exclude patterns of {self.config}: "
                f"{', '.join(self.skipped[:8])}"
                f"{' ...' if len(self.skipped) > 8 else ''}"
            )
        return (
            "the module has no linear layers (lp.matmul ... transpose_b whose rhs is "
            "a rank-2 float lp.constant; with conv=True also lp.conv2d weights)"
        )

    # -- text and JSON -----------------------------------------------------------
    def __str__(self) -> str:
        if not self.rows:
            return (
                f"weight quantization {self.config}: no layer quantized: "
                f"{self.empty_reason}"
            )
        lines = [
            f"weight quantization {self.config}: {len(self.rows)} layers, "
            f"{_human(self.fp32_bytes)} fp32 -> {_human(self.packed_bytes)} packed "
            f"({self.compression:.2f}x), {self.bits_per_weight:.3f} bits/weight",
        ]
        head = ["name", "shape", "format", "group", "bits/w", "nmse"]
        table = [
            [
                _truncate(r.name, self.NAME_WIDTH),
                "x".join(map(str, r.shape)),
                r.format + ("" if r.scale_dtype == "f16" else f"/s{r.scale_dtype}"),
                f"{r.group_size} (pc)" if r.per_channel else str(r.group_size),
                f"{r.bits_per_weight:.3f}",
                f"{r.nmse:.3e}",
            ]
            for r in self.rows
        ]
        total = ["total", "", "", "", f"{self.bits_per_weight:.3f}", ""]
        widths = [max(len(row[i]) for row in [head, *table, total]) for i in range(6)]
        right = {4, 5}

        def fmt(row: Sequence[str]) -> str:
            cells = [
                c.rjust(w) if i in right else c.ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            ]
            return "  ".join(cells).rstrip()

        rule = ["-" * w for w in widths]
        lines += [fmt(head), fmt(rule), *map(fmt, table), fmt(rule), fmt(total)]
        if self.skipped:
            lines.append(f"left out by include/exclude: {', '.join(self.skipped)}")
        if self.kept_fp32:
            lines.append(
                "f32 copy kept for users other than matmul (e.g. tied embeddings): "
                + ", ".join(self.kept_fp32)
            )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: the rows, the lists, and the totals (for readers)."""
        return {
            "config": self.config,
            "rows": [{**asdict(r), "shape": list(r.shape)} for r in self.rows],
            "skipped": list(self.skipped),
            "kept_fp32": list(self.kept_fp32),
            "totals": {
                "fp32_bytes": self.fp32_bytes,
                "packed_bytes": self.packed_bytes,
                "bits_per_weight": self.bits_per_weight,
                "compression": self.compression,
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QuantReport:
        """Inverse of `to_dict` (totals are recomputed from the rows)."""
        try:
            rows = [LayerRow(**{**r, "shape": tuple(r["shape"])}) for r in data["rows"]]
            return cls(
                str(data["config"]),
                rows,
                list(data.get("skipped", [])),
                list(data.get("kept_fp32", [])),
            )
        except (KeyError, TypeError) as err:
            raise QuantError(
                f"QuantReport.from_dict: not a saved quantization report ({err})"
            ) from None
