"""The `quantize` pass: weight-only quantization of linear (and conv) layers.

It matches what the torch frontend emits for `nn.Linear`,

    %w = lp.constant {lp.name = "fc1.weight"} dense "0x.." : tensor<NxKxf32>
    %y = lp.matmul %x, %w transpose_b : ...

and rewrites the weight into packed codes, scales (and zero points) and an
`lp.dequantize` that the matmul now reads:

    %w_q = lp.constant {lp.name = "fc1.weight"} dense "0x.." : tensor<NxKx!lp.int<4>>
    %w_scale = lp.constant {lp.name = "fc1.weight.scale"} ... : tensor<NxGxf16>
    %w_dq = lp.dequantize %w_q scale %w_scale block [1, 128] : (...) -> tensor<NxKxf32>
    %y = lp.matmul %x, %w_dq transpose_b : ...

The numbers come from `lpcc.quant.quantize_weight` (one implementation of
the math); later passes fuse the dequantize into the GEMM. Uses of the weight
other than a matmul rhs (a tied embedding's lp.take) keep the original
constant, and the report says so.

Python: `quantize_module(module, "int4-g32") -> QuantReport`, or
`QuantizeWeights.from_config(cfg).apply(ctx, module)` then `.report`.
Command line: `lpcc opt -p 'quantize{weight="int4" group_size=32}'`; the
fields mirror `QuantConfig` (`weight` also takes a short string such as
"uint3-g64", and `group_size=0` means per channel).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp, StringAttr, TensorType
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass

from lpcc import config as lpcc_config
from lpcc.ir.dialect import ops as lp
from lpcc.ir.dialect import to_dtype, verify_module
from lpcc.ir.dialect.ops import NAME_ATTR
from lpcc.ir.dtypes import DType, FloatType
from lpcc.passes.rewrite import erase_if_unused
from lpcc.quant import (
    LayerRow,
    QuantConfig,
    QuantError,
    QuantizedWeight,
    QuantReport,
    _parse_short,
    parse_quant,
    quantize_weight,
)

__all__ = ["QuantizeWeights", "quantize_module"]


@dataclass
class _Target:
    """One weight constant and the operands (op, index) that will read Q."""

    const: lp.ConstantOp
    kind: str  # "linear" or "conv2d"
    name: str
    uses: list[tuple[Operation, int]] = field(default_factory=list)


def _float_const(v: SSAValue, rank: int) -> lp.ConstantOp | None:
    op = v.owner
    if not isinstance(op, lp.ConstantOp):
        return None
    t = op.result.type
    if not isinstance(t, TensorType) or len(t.get_shape()) != rank:
        return None
    return op if isinstance(to_dtype(t.element_type), FloatType) else None


def _find_targets(module: ModuleOp, conv: bool) -> list[_Target]:
    """Weight constants in the order of their first matmul/conv use."""
    found: dict[lp.ConstantOp, _Target] = {}
    counts = {"linear": 0, "conv2d": 0}
    for op in module.walk():
        if isinstance(op, lp.MatmulOp) and op.transpose_b is not None:
            const, kind = _float_const(op.rhs, 2), "linear"
        elif conv and isinstance(op, lp.Conv2dOp):
            const, kind = _float_const(op.weight, 4), "conv2d"
        else:
            continue
        if const is None:
            continue
        if const not in found:
            attr = const.attributes.get(NAME_ATTR)
            if isinstance(attr, StringAttr):
                name = attr.data
            else:
                name = f"{'matmul' if kind == 'linear' else 'conv2d'}{counts[kind]}"
            counts[kind] += 1
            found[const] = _Target(const, kind, name)
        found[const].uses.append((op, 1))
    return list(found.values())


def _constant(codes: np.ndarray, dt: DType, name: str, hint: str) -> lp.ConstantOp:
    op = lp.ConstantOp.from_codes(codes, dt)
    op.attributes[NAME_ATTR] = StringAttr(name)
    op.result.name_hint = hint
    return op


def _rewrite(target: _Target, qw: QuantizedWeight) -> None:
    """Insert Q/s/z constants and the dequantize; point the uses at it."""
    const = target.const
    orig_shape = lp.value_shape(const.result)
    out_dt = lp.value_elem(const.result)
    hint = const.result.name_hint or "w"
    new: list[Operation] = []
    q = _constant(qw.codes, qw.dtype, target.name, f"{hint}_q")
    s = _constant(
        qw.scale_codes, qw.scale_dtype, f"{target.name}.scale", f"{hint}_scale"
    )
    new += [q, s]
    z = None
    if qw.zero is not None:
        z = _constant(qw.zero, qw.dtype, f"{target.name}.zero", f"{hint}_zero")
        new.append(z)
    dq = lp.DequantizeOp(
        q.result, s.result, None if z is None else z.result, qw.block, out_dt
    )
    dq.result.name_hint = f"{hint}_dq"
    new.append(dq)
    value: SSAValue = dq.result
    if len(orig_shape) != 2:  # conv2d: back to [O, C, kh, kw]
        reshape = lp.ReshapeOp(dq.result, orig_shape)
        reshape.result.name_hint = f"{hint}_dq4"
        new.append(reshape)
        value = reshape.result
    block = const.parent_block()
    assert block is not None
    block.insert_ops_before(new, const)
    wanted = set(target.uses)
    const.result.replace_uses_with_if(
        value, lambda use: (use.operation, use.index) in wanted
    )
    erase_if_unused(const)


def _progress(total: int) -> Any:
    from tqdm.auto import tqdm

    mode = lpcc_config.get("progress")
    if total < lpcc_config.get("progress_min_layers") or mode == "never":
        disable: bool | None = True
    else:
        disable = None if mode == "auto" else False
    return tqdm(total=total, desc="lpcc quantize", unit="layer", disable=disable)


def quantize_module(module: ModuleOp, cfg: QuantConfig | str) -> QuantReport:
    """Quantize the weights of `module` in place; return what was done."""
    config = parse_quant(cfg)
    if config is None:
        raise QuantError("quantize_module: no quantization config (quant=None)")
    report = QuantReport(str(config))
    targets = _find_targets(module, config.conv)
    chosen: list[_Target] = []
    for target in targets:
        if config.selects(target.name):
            chosen.append(target)
        else:
            report.skipped.append(target.name)
    with _progress(len(chosen)) as bar:
        for target in chosen:
            bar.set_postfix_str(target.name, refresh=False)
            values = target.const.values()
            shape = tuple(values.shape)
            qw = quantize_weight(values.reshape(shape[0], -1), config, name=target.name)
            _rewrite(target, qw)
            if target.const.parent is not None:
                report.kept_fp32.append(target.name)
            report.rows.append(
                LayerRow(
                    name=target.name,
                    shape=shape,
                    format=config.dtype.name,
                    group_size=qw.group_size,
                    per_channel=config.per_channel,
                    scale_dtype=config.scale_dtype,  # type: ignore[arg-type]
                    zero_point=qw.zero is not None,
                    bits_per_weight=qw.bits_per_weight,
                    nmse=qw.nmse,
                    fp32_bytes=4 * values.size,
                    packed_bytes=qw.nbytes,
                )
            )
            bar.update(1)
    verify_module(module, "the module after the quantize pass")
    return report


@dataclass(frozen=True)
class QuantizeWeights(ModulePass):
    """Weight-only quantization of linear (and, with conv, conv2d) weights.

    Fields mirror `QuantConfig`; None means "the default" (or what the short
    string in `weight` says). `group_size=0` is per channel. After `apply`,
    `report` holds the `QuantReport`.
    """

    name = "quantize"

    weight: str = "int4"
    group_size: int | None = None
    symmetric: bool | None = None
    zero_point: bool | None = None
    scale_dtype: str | None = None
    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    conv: bool = False
    report: QuantReport | None = field(
        default=None, init=False, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        self.config()  # a bad option fails when the pipeline is built

    @classmethod
    def from_config(cls, cfg: QuantConfig | str) -> QuantizeWeights:
        """The pass for a QuantConfig (or short string) from the Python API."""
        c = parse_quant(cfg)
        if c is None:
            raise QuantError("QuantizeWeights.from_config: no config (None)")
        return cls(
            weight=c.dtype.name,
            group_size=0 if c.group_size is None else c.group_size,
            symmetric=c.symmetric,  # type: ignore[arg-type]
            scale_dtype=c.scale_dtype,  # type: ignore[arg-type]
            include=c.include,
            exclude=c.exclude,
            conv=c.conv,
        )

    def config(self) -> QuantConfig:
        """The QuantConfig these options describe."""
        try:
            kwargs = _parse_short(self.weight)
        except QuantError as err:
            raise QuantError(f"pass quantize, option weight: {err}") from None
        if self.group_size is not None and self.group_size < 0:
            raise QuantError(
                f"pass quantize, option group_size: expected N >= 1 (elements of K "
                f"per scale) or 0 (per channel), got {self.group_size}"
            )
        if self.group_size is not None:
            kwargs["group_size"] = None if self.group_size == 0 else self.group_size
        for key in ("symmetric", "zero_point", "scale_dtype"):
            if getattr(self, key) is not None:
                kwargs[key] = getattr(self, key)
        try:
            return QuantConfig(
                **kwargs, include=self.include, exclude=self.exclude, conv=self.conv
            )
        except QuantError as err:
            raise QuantError(f"pass quantize: {err}") from None

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        object.__setattr__(self, "report", quantize_module(op, self.config()))
