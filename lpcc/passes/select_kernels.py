"""The `select-kernels` pass: tag each quantized matmul with the kernel to use.

For every `lp.matmul` whose rhs is an `lp.dequantize` (a quantized linear
layer, as the quantize pass leaves it) it sets the string attribute

    lp.kernel = "lut" | "dequant" | "dense"

from the rule of `lpcc.passes.kernel_choice` (target, weight type, m), or
from the first `override` pattern that matches the weight's `lp.name`.
Later passes read it: `dequant-after-group-gemm` leaves "dense" matmuls
alone and copies the tag onto the `lp.group_matmul` it emits; `lut-gemm`
lowers the "lut" ones. m is the number of activation rows sharing one pass
over the weights: the product of the lhs's dimensions before K (the rows M
times any batch dimensions), None when one of them is dynamic.

Options: `target` ("cpu", "reference" or "cuda") and `override`
("pattern=kind,..."; fnmatch over `lp.name`, first match wins). An unknown
kind or a malformed entry fails when the pipeline is built; an override of
"lut" on a weight the LUT kernel cannot take (a float type, or K not a
multiple of the group size G) fails when the pass runs, naming the weight;
the rule itself gives such a layer "dequant".

Command line: `lpcc opt -p 'select-kernels{target="cpu" override="lm_head*=dense"}'`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp, StringAttr
from xdsl.passes import ModulePass

from lpcc.ir.dialect import ops as lp
from lpcc.ir.dialect.ops import KERNEL_ATTR, NAME_ATTR
from lpcc.ir.dialect.types import DYNAMIC
from lpcc.passes.kernel_choice import (
    KernelChoiceError,
    Overrides,
    check_target,
    choose_kernel,
    find_override,
    lut_unsupported_reason,
    parse_overrides,
)

__all__ = [
    "KERNEL_ATTR",
    "SelectKernels",
    "kernel_for",
    "lut_shape_reason",
    "rows_of",
    "weight_name",
]

_WHERE = "pass select-kernels"


def weight_name(op: lp.MatmulOp) -> str:
    """The weight's `lp.name` (its constant's, else the matmul's), or ""."""
    assert isinstance(op.rhs.owner, lp.DequantizeOp)
    for holder in (op.rhs.owner.input.owner, op):
        attr = getattr(holder, "attributes", {}).get(NAME_ATTR)
        if isinstance(attr, StringAttr):
            return attr.data
    return ""


def rows_of(op: lp.MatmulOp) -> int | None:
    """Activation rows per pass over the weights: prod(lhs.shape[:-1])."""
    lead = lp.value_shape(op.lhs)[:-1]
    return None if DYNAMIC in lead else math.prod(lead)


def lut_shape_reason(op: lp.MatmulOp) -> str | None:
    """Why the layer's shape keeps it off the LUT kernel, or None.

    lut-gemm needs whole groups (block [1, G] with G | K, K static); a short
    last group stays a group GEMM on the dequant path.
    """
    dq = op.rhs.owner
    assert isinstance(dq, lp.DequantizeOp)
    block = tuple(lp._array(dq.block))
    k = lp.value_shape(dq.input)[-1]
    if len(block) != 2 or block[0] != 1:
        return f"its block {list(block)} is not [1, G]; use 'dequant'"
    if k == DYNAMIC or k % block[1]:
        return (
            f"K = {'?' if k == DYNAMIC else k} is not a multiple of its group size "
            f"{block[1]} (the LUT kernel needs whole groups); use 'dequant'"
        )
    return None


def kernel_for(op: lp.MatmulOp, target: str, overrides: Overrides) -> str:
    """The kernel of one quantized matmul: an override, else the rule (which
    gives "dequant" where the shape rules LUT out, `lut_shape_reason`)."""
    dq = op.rhs.owner
    assert isinstance(dq, lp.DequantizeOp)
    weight = lp.value_elem(dq.input)
    name = weight_name(op)
    found = find_override(name, overrides)
    if found is None:
        kind = choose_kernel(weight, rows_of(op), target)
        return "dequant" if kind == "lut" and lut_shape_reason(op) else kind
    pattern, kind = found
    if kind == "lut":
        why = lut_unsupported_reason(weight) or lut_shape_reason(op)
        if why is not None:
            raise KernelChoiceError(
                f"{_WHERE}, option override: {pattern!r}=lut matches weight "
                f"{name or '(unnamed)'}, which cannot use the LUT kernel: {why}"
            )
    return kind


@dataclass(frozen=True)
class SelectKernels(ModulePass):
    """Set `lp.kernel` on every matmul that reads an `lp.dequantize`."""

    name = "select-kernels"

    target: str = "cpu"
    override: str = ""

    def __post_init__(self) -> None:
        # Bad options fail when the pipeline is built, not halfway through it.
        check_target(self.target, f"{_WHERE}, option target")
        self.overrides()

    def overrides(self) -> Overrides:
        """The parsed `override` option."""
        return parse_overrides(self.override)

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        overrides = self.overrides()
        for matmul in op.walk():
            if isinstance(matmul, lp.MatmulOp) and isinstance(
                matmul.rhs.owner, lp.DequantizeOp
            ):
                kind = kernel_for(matmul, self.target, overrides)
                matmul.attributes[KERNEL_ATTR] = StringAttr(kind)
