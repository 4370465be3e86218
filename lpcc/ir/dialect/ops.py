"""The graph-level ops of the lp dialect.

Conventions, chosen once for every op:

* Operands and results are builtin tensors whose element types are lp types
  (see `types.py`); every op is `Pure` and has one result.
* Elementwise ops broadcast like NumPy but only between operands of equal
  rank (each dimension equal or 1, as TOSA); the frontend reshapes scalars.
  `matmul` alone broadcasts batch dimensions of different ranks.
* Dimensions in properties are non-negative (builders accept negative ones
  and normalize). `?` dimensions are accepted and only checked when known.
* Each op's result type is computed by one `infer` function, used both by
  its Python builder and by its verifier, so the two cannot disagree.
* Semantics (what the reference interpreter computes) are documented on each
  op; quantize/dequantize/cast/constant use the `DType` codecs.

Layout encodings on result types are not inferred: passes choose them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
from xdsl.dialects.builtin import (
    BytesAttr,
    DenseArrayBase,
    IntAttr,
    StringAttr,
    TensorType,
    UnitAttr,
    i64,
)
from xdsl.ir import Attribute, SSAValue
from xdsl.irdl import (
    IRDLOperation,
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    opt_prop_def,
    prop_def,
    result_def,
    traits_def,
    var_operand_def,
)
from xdsl.traits import Pure
from xdsl.utils.exceptions import VerifyException

from lpcc.errors import IRError
from lpcc.ir.dialect.directives import (
    Int,
    IntList,
    Keyword,
    Payload,
    Signature,
    int_array,
    is_splat_payload,
)
from lpcc.ir.dialect.types import (
    DYNAMIC,
    check_tensor_type,
    tensor_type,
    to_attr,
    to_dtype,
)
from lpcc.ir.dtypes import DType, FloatType, IntType, int_
from lpcc.ir.layout import Layout
from lpcc.ir.symbolic import DIMS_ATTR, Dim, format_dims, parse_dims

_DIRECTIVES = (Int, IntList, Keyword, Signature, Payload)
_SIG = "`:` custom<Signature>(type(operands), type(results))"

# -- helpers --------------------------------------------------------------------


def _fail(op: str, why: str) -> VerifyException:
    return VerifyException(f"{op}: {why}")


def _shape(t: Attribute) -> tuple[int, ...]:
    return t.get_shape()  # type: ignore[attr-defined,no-any-return]


def _elem(t: Attribute) -> DType:
    return to_dtype(t.element_type)  # type: ignore[attr-defined]


def _type(v: SSAValue | Attribute) -> TensorType:
    t = v.type if isinstance(v, SSAValue) else v
    if not isinstance(t, TensorType):
        raise IRError(f"expected a tensor, got {t}")
    return t


def _norm_dim(op: str, dim: int, rank: int) -> int:
    if not -rank <= dim < max(rank, 1):
        raise IRError(f"{op}: dim {dim} out of range for rank {rank}")
    return dim % rank if rank else 0


def _array(attr: Attribute) -> tuple[int, ...]:
    assert isinstance(attr, DenseArrayBase)
    return tuple(attr.get_values())  # type: ignore[arg-type]


def _is_float(dt: DType) -> bool:
    return isinstance(dt, FloatType)


def broadcast_shapes(op: str, *shapes: Sequence[int]) -> tuple[int, ...]:
    """NumPy broadcasting, right-aligned; `?` broadcasts against anything."""
    rank = max(len(s) for s in shapes)
    out = []
    for d in range(rank):
        sizes = {s[len(s) - rank + d] for s in shapes if len(s) - rank + d >= 0}
        known = {n for n in sizes if n not in (1, DYNAMIC)}
        if len(known) > 1:
            raise IRError(f"{op}: shapes {[list(s) for s in shapes]} do not broadcast")
        if known:
            out.append(known.pop())
        elif DYNAMIC in sizes:
            out.append(DYNAMIC)
        else:
            out.append(1)
    return tuple(out)


# Discardable attributes that passes read and carry over (one spelling for all):
# the state_dict key of a weight constant, copied to the ops that read it.
NAME_ATTR = "lp.name"
# The kernel `select-kernels` chose for a matmul or group GEMM ("lut", ...).
KERNEL_ATTR = "lp.kernel"


def value_elem(v: SSAValue) -> DType:
    """The lp element type of tensor value `v` (IRError if not a tensor)."""
    return _elem(_type(v))


def value_shape(v: SSAValue) -> tuple[int, ...]:
    """The static shape of `v`, DYNAMIC for each `?` (`value_dims` has the
    expressions); IRError if `v` is not a tensor."""
    return tuple(_shape(_type(v)))


def value_dims(v: SSAValue) -> tuple[Dim, ...]:
    """The shape of `v` with each `?` replaced by its size expression.

    The expressions come from the `lp.dims` attribute of the defining op (or
    of the function argument); see `lpcc.ir.symbolic`. An `lp.fused` result
    has the dims of the value its body yields, a body argument those of the
    operand it stands for.
    """
    from xdsl.dialects.func import FuncOp
    from xdsl.ir import Block, BlockArgument

    shape = _shape(_type(v))
    if DYNAMIC not in shape:
        return shape
    text = None
    if isinstance(v, BlockArgument):
        parent = v.block.parent_op() if isinstance(v.block, Block) else None
        if parent is not None and parent.name == "lp.fused":
            return value_dims(parent.operands[v.index])  # the operand it stands for
        if isinstance(parent, FuncOp) and parent.arg_attrs is not None:
            attrs = parent.arg_attrs.data[v.index].data
            if DIMS_ATTR in attrs:
                text = attrs[DIMS_ATTR]
    elif v.owner.name == "lp.fused":  # result #i is what the body yields as #i
        last = v.owner.regions[0].block.last_op
        if last is None or len(last.operands) != len(v.owner.results):
            raise IRError("lp.fused: the body must end with lp.yield of its results")
        return value_dims(last.operands[v.index])
    else:
        text = v.owner.attributes.get(DIMS_ATTR)
    if not isinstance(text, StringAttr):
        where = v.owner.name if not isinstance(v, BlockArgument) else "an argument"
        raise IRError(
            f"{where}: result shape {list(shape)} has dynamic sizes but no "
            f"{DIMS_ATTR} attribute giving their expressions"
        )
    dims = parse_dims(text.data)
    if len(dims) != len(shape) or any(
        s != DYNAMIC and d != s for s, d in zip(shape, dims, strict=True)
    ):
        raise IRError(f"{DIMS_ATTR} {text.data!r} does not match shape {list(shape)}")
    return dims


def set_dims(op: IRDLOperation, dims: Sequence[Dim]) -> None:
    """Record the size expressions of `op`'s result (only if some are dynamic)."""
    if any(isinstance(d, str) for d in dims):
        op.attributes[DIMS_ATTR] = StringAttr(format_dims(dims))
    else:
        op.attributes.pop(DIMS_ATTR, None)


class LpOp(IRDLOperation):
    """Base of lp ops: checks every tensor type, then the op's own rules."""

    def verify_(self) -> None:
        for i, operand in enumerate(self.operands):
            check_tensor_type(operand.type, f"{self.name} operand #{i}")
        for result in self.results:
            check_tensor_type(result.type, f"{self.name} result")
        try:
            expected = self.infer_from_operands()
        except IRError as err:
            raise VerifyException(str(err)) from err
        if expected is None:
            return
        (result,) = self.results
        got = _type(result)
        want_elem, want_shape = expected
        if got.element_type != to_attr(want_elem):
            raise _fail(
                self.name,
                f"result element type {got.element_type}, "
                f"expected {to_attr(want_elem)}",
            )
        if len(got.get_shape()) != len(want_shape) or any(
            g != w and DYNAMIC not in (g, w)
            for g, w in zip(got.get_shape(), want_shape, strict=True)
        ):
            raise _fail(
                self.name,
                f"result shape {list(got.get_shape())}, expected {list(want_shape)}",
            )

    def infer_from_operands(self) -> tuple[DType, tuple[int, ...]] | None:
        """(element type, shape) of the result, or None if the type is free."""
        raise NotImplementedError


# -- constants -----------------------------------------------------------------


@irdl_op_definition
class ConstantOp(LpOp):
    """A tensor constant whose payload is its packed codes.

    `data` is the dense bit stream of `lpcc.ir.packing` (codes from the element
    type's `encode`), or, for a splat, the packed code of the one element every
    position holds. Low-bit weights are thus stored at b bits per element.
    """

    name = "lp.constant"
    data = prop_def(BytesAttr)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    custom_directives = _DIRECTIVES
    assembly_format = "attr-dict custom<Payload>($data, type($result))"

    def __init__(self, data: bytes, result_type: TensorType) -> None:
        super().__init__(
            properties={"data": BytesAttr(data)}, result_types=[result_type]
        )

    @classmethod
    def from_codes(
        cls, codes: np.ndarray, dt: DType, layout: Layout | None = None
    ) -> ConstantOp:
        """A constant holding `codes` (already encoded) of element type `dt`."""
        codes = np.asarray(codes)
        flat = codes.reshape(-1)
        if (
            flat.size > 1
            and dt.nbytes(flat.size) != dt.nbytes(1)
            and np.all(flat == flat[0])
        ):
            data = dt.pack(flat[:1])
        else:
            data = dt.pack(flat)
        return cls(data.tobytes(), tensor_type(dt, codes.shape, layout))

    @classmethod
    def from_array(cls, values: np.ndarray, dt: DType | None = None) -> ConstantOp:
        """Encode `values` (rounding to `dt`, default f32) into a constant."""
        from lpcc.ir.dtypes import dtype as parse

        dt = parse("f32") if dt is None else dt
        return cls.from_codes(dt.encode(np.asarray(values)), dt)

    @property
    def dtype(self) -> DType:
        return _elem(self.result.type)

    @property
    def is_splat(self) -> bool:
        return is_splat_payload(self.data.data, self.dtype, _type(self.result))

    def codes(self) -> np.ndarray:
        """The codes, shaped like the result."""
        shape = _shape(self.result.type)
        count = 1 if self.is_splat else math.prod(shape)
        codes = self.dtype.unpack(np.frombuffer(self.data.data, np.uint8), count)
        if self.is_splat:
            return np.broadcast_to(codes[:1].reshape((1,) * len(shape)), shape)
        return codes.reshape(shape)

    def values(self) -> np.ndarray:
        """The decoded values, shaped like the result."""
        return self.dtype.decode(self.codes())

    def infer_from_operands(self) -> None:
        t = _type(self.result)
        shape = _shape(t)
        if DYNAMIC in shape:
            raise VerifyException(f"{self.name}: constants need a static shape")
        dt = _elem(t)
        numel = math.prod(shape)
        size = len(self.data.data)
        if size not in (dt.nbytes(numel), dt.nbytes(1)):
            raise _fail(
                self.name,
                f"payload of {size} bytes; {numel} x {dt} needs "
                f"{dt.nbytes(numel)} (or {dt.nbytes(1)} for a splat)",
            )
        count = numel if size == dt.nbytes(numel) else 1
        used = count * dt.bits % 8
        if used and self.data.data[-1] >> used:
            raise _fail(self.name, "padding bits after the last element must be 0")
        return None


@irdl_op_definition
class IotaOp(LpOp):
    """result[i_0, ..., i_n] = i_dim: the index along `dim` (torch arange).

    The element type is an integer or float type; arange(start, end, step)
    is `start + step * iota`.
    """

    name = "lp.iota"
    dim = prop_def(IntAttr)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    custom_directives = _DIRECTIVES
    assembly_format = "`dim` custom<Int>($dim) attr-dict `:` type($result)"

    def __init__(self, dt: DType, shape: Sequence[int], dim: int = 0):
        d = _norm_dim(self.name, dim, len(shape))
        super().__init__(
            result_types=[tensor_type(dt, shape)], properties={"dim": IntAttr(d)}
        )

    def infer_from_operands(self) -> None:
        t = _type(self.result)
        if not 0 <= self.dim.data < len(_shape(t)):
            raise IRError(
                f"lp.iota: dim {self.dim.data} out of range for rank {len(_shape(t))}"
            )
        if _elem(t).kind == "e8m0":
            raise IRError("lp.iota: needs an integer or float element type")
        return None


# -- elementwise ------------------------------------------------------------------


class ElementwiseBinaryOp(LpOp):
    """Elementwise on equal-rank operands with size-1 broadcasting."""

    lhs = operand_def(TensorType)
    rhs = operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    custom_directives = _DIRECTIVES
    assembly_format = f"$lhs `,` $rhs attr-dict {_SIG}"

    def __init__(self, lhs: SSAValue, rhs: SSAValue, layout: Layout | None = None):
        dt, shape = self.infer(self.name, _type(lhs), _type(rhs))
        super().__init__(
            operands=[lhs, rhs], result_types=[tensor_type(dt, shape, layout)]
        )

    @classmethod
    def infer(
        cls, name: str, lhs: TensorType, rhs: TensorType
    ) -> tuple[DType, tuple[int, ...]]:
        a, b = _elem(lhs), _elem(rhs)
        if a != b:
            raise IRError(
                f"{name}: operand element types differ ({a} vs {b}); insert an lp.cast"
            )
        if len(_shape(lhs)) != len(_shape(rhs)):
            raise IRError(
                f"{name}: operand ranks differ ({list(_shape(lhs))} vs "
                f"{list(_shape(rhs))}); reshape to equal rank first"
            )
        return cls.result_dtype(name, a), broadcast_shapes(
            name, _shape(lhs), _shape(rhs)
        )

    @classmethod
    def result_dtype(cls, name: str, dt: DType) -> DType:
        return dt

    def infer_from_operands(self) -> tuple[DType, tuple[int, ...]]:
        return self.infer(self.name, _type(self.lhs), _type(self.rhs))


@irdl_op_definition
class AddOp(ElementwiseBinaryOp):
    """lhs + rhs."""

    name = "lp.add"


@irdl_op_definition
class SubOp(ElementwiseBinaryOp):
    """lhs - rhs."""

    name = "lp.sub"


@irdl_op_definition
class MulOp(ElementwiseBinaryOp):
    """lhs * rhs."""

    name = "lp.mul"


@irdl_op_definition
class DivOp(ElementwiseBinaryOp):
    """lhs / rhs (true division for floats; ints round toward zero)."""

    name = "lp.div"


@irdl_op_definition
class MaxOp(ElementwiseBinaryOp):
    """max(lhs, rhs), NaN-propagating."""

    name = "lp.max"


@irdl_op_definition
class MinOp(ElementwiseBinaryOp):
    """min(lhs, rhs), NaN-propagating."""

    name = "lp.min"


@irdl_op_definition
class PowOp(ElementwiseBinaryOp):
    """lhs ** rhs."""

    name = "lp.pow"


CMP_PREDICATES = ("eq", "ne", "lt", "le", "gt", "ge")


@irdl_op_definition
class CmpOp(ElementwiseBinaryOp):
    """lhs <predicate> rhs as i1; predicate in eq, ne, lt, le, gt, ge."""

    name = "lp.cmp"
    predicate = prop_def(StringAttr)
    assembly_format = f"custom<Keyword>($predicate) $lhs `,` $rhs attr-dict {_SIG}"

    def __init__(self, predicate: str, lhs: SSAValue, rhs: SSAValue):
        if predicate not in CMP_PREDICATES:
            raise IRError(f"lp.cmp: predicate {predicate!r} not in {CMP_PREDICATES}")
        inferred = self.infer(self.name, _type(lhs), _type(rhs))
        IRDLOperation.__init__(
            self,
            operands=[lhs, rhs],
            result_types=[tensor_type(*inferred)],
            properties={"predicate": StringAttr(predicate)},
        )

    @classmethod
    def result_dtype(cls, name: str, dt: DType) -> DType:
        return IntType(1, False)

    def verify_(self) -> None:
        if self.predicate.data not in CMP_PREDICATES:
            raise _fail(
                self.name,
                f"predicate {self.predicate.data!r} not in {', '.join(CMP_PREDICATES)}",
            )
        super().verify_()


class ElementwiseUnaryOp(LpOp):
    """f(input), elementwise; the result has the input's type."""

    input = operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    custom_directives = _DIRECTIVES
    assembly_format = f"$input attr-dict {_SIG}"
    FLOATS_ONLY: ClassVar[bool] = True

    def __init__(self, input: SSAValue):
        t = _type(input)
        self.check_dtype(self.name, _elem(t))
        super().__init__(
            operands=[input], result_types=[tensor_type(_elem(t), _shape(t))]
        )

    @classmethod
    def check_dtype(cls, name: str, dt: DType) -> None:
        if cls.FLOATS_ONLY and not _is_float(dt):
            raise IRError(f"{name}: needs a float tensor, got {dt}; cast it first")
        if not dt.is_signed:
            raise IRError(f"{name}: needs a signed element type, got {dt}")

    def infer_from_operands(self) -> tuple[DType, tuple[int, ...]]:
        t = _type(self.input)
        self.check_dtype(self.name, _elem(t))
        return _elem(t), _shape(t)


@irdl_op_definition
class NegOp(ElementwiseUnaryOp):
    """-input."""

    name = "lp.neg"
    FLOATS_ONLY: ClassVar[bool] = False


@irdl_op_definition
class AbsOp(ElementwiseUnaryOp):
    """|input|."""

    name = "lp.abs"
    FLOATS_ONLY: ClassVar[bool] = False


@irdl_op_definition
class ExpOp(ElementwiseUnaryOp):
    """e ** input."""

    name = "lp.exp"


@irdl_op_definition
class LogOp(ElementwiseUnaryOp):
    """Natural logarithm."""

    name = "lp.log"


@irdl_op_definition
class SqrtOp(ElementwiseUnaryOp):
    """Square root."""

    name = "lp.sqrt"


@irdl_op_definition
class RsqrtOp(ElementwiseUnaryOp):
    """1 / sqrt(input)."""

    name = "lp.rsqrt"


@irdl_op_definition
class TanhOp(ElementwiseUnaryOp):
    """Hyperbolic tangent."""

    name = "lp.tanh"


@irdl_op_definition
class SigmoidOp(ElementwiseUnaryOp):
    """1 / (1 + e ** -input)."""

    name = "lp.sigmoid"


@irdl_op_definition
class ErfOp(ElementwiseUnaryOp):
    """The Gauss error function."""

    name = "lp.erf"


@irdl_op_definition
class CosOp(ElementwiseUnaryOp):
    """Cosine (radians)."""

    name = "lp.cos"


@irdl_op_definition
class SinOp(ElementwiseUnaryOp):
    """Sine (radians)."""

    name = "lp.sin"


@irdl_op_definition
class SelectOp(LpOp):
    """cond ? on_true : on_false, elementwise, with size-1 broadcasting."""

    name = "lp.select"
    cond = operand_def(TensorType)
    on_true = operand_def(TensorType)
    on_false = operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    custom_directives = _DIRECTIVES
    assembly_format = f"$cond `,` $on_true `,` $on_false attr-dict {_SIG}"

    def __init__(self, cond: SSAValue, on_true: SSAValue, on_false: SSAValue):
        inferred = self.infer(_type(cond), _type(on_true), _type(on_false))
        super().__init__(
            operands=[cond, on_true, on_false], result_types=[tensor_type(*inferred)]
        )

    @staticmethod
    def infer(
        c: TensorType, a: TensorType, b: TensorType
    ) -> tuple[DType, tuple[int, ...]]:
        if _elem(c) != IntType(1, False):
            raise IRError(f"lp.select: condition must be i1, got {_elem(c)}")
        if _elem(a) != _elem(b):
            raise IRError(
                f"lp.select: branch element types differ ({_elem(a)} vs {_elem(b)})"
            )
        shapes = (_shape(c), _shape(a), _shape(b))
        if len({len(s) for s in shapes}) != 1:
            raise IRError("lp.select: operands must have equal rank")
        return _elem(a), broadcast_shapes("lp.select", *shapes)

    def infer_from_operands(self) -> tuple[DType, tuple[int, ...]]:
        return self.infer(_type(self.cond), _type(self.on_true), _type(self.on_false))


# -- conversions and quantization ---------------------------------------------------


@irdl_op_definition
class CastOp(LpOp):
    """Value conversion: result = result_type.encode(input values).

    Floats round to nearest even and overflow as the variant says; integers
    round half to even and saturate (see `lpcc.ir.dtypes`).
    """

    name = "lp.cast"
    input = operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    custom_directives = _DIRECTIVES
    assembly_format = f"$input attr-dict {_SIG}"

    def __init__(self, input: SSAValue, to: DType):
        t = _type(input)
        super().__init__(operands=[input], result_types=[tensor_type(to, _shape(t))])

    def infer_from_operands(self) -> tuple[DType, tuple[int, ...]]:
        return _elem(self.result.type), _shape(_type(self.input))


def block_scale_shape(
    op: str, shape: Sequence[int], block: Sequence[int]
) -> tuple[int, ...]:
    """Shape of the scales when each scale covers one `block` of the input."""
    if len(block) != len(shape):
        raise IRError(
            f"{op}: block {list(block)} needs one size per dimension "
            f"of shape {list(shape)}"
        )
    if any(b < 1 for b in block):
        raise IRError(f"{op}: block sizes must be >= 1, got {list(block)}")
    return tuple(
        DYNAMIC if n == DYNAMIC else -(-n // b)
        for n, b in zip(shape, block, strict=True)
    )


class _QuantBase(LpOp):
    input = operand_def(TensorType)
    scale = operand_def(TensorType)
    zero = opt_operand_def(TensorType)
    block = prop_def(DenseArrayBase.constr(i64))
    result = result_def(TensorType)
    traits = traits_def(Pure())
    custom_directives = _DIRECTIVES
    assembly_format = (
        "$input `scale` $scale (`zero` $zero^)? `block` custom<IntList>($block) "
        f"attr-dict {_SIG}"
    )

    def __init__(
        self,
        input: SSAValue,
        scale: SSAValue,
        zero: SSAValue | None,
        block: Sequence[int],
        to: DType,
    ):
        t = _type(input)
        super().__init__(
            operands=[input, scale, [zero] if zero is not None else []],
            result_types=[tensor_type(to, _shape(t))],
            properties={"block": int_array(tuple(block))},
        )

    def infer_from_operands(self) -> tuple[DType, tuple[int, ...]]:
        t = _type(self.input)
        want = block_scale_shape(self.name, _shape(t), _array(self.block))
        for what, v in (("scale", self.scale), ("zero", self.zero)):
            if v is None:
                continue
            got = _shape(_type(v))
            if len(got) != len(want) or any(
                g != w and DYNAMIC not in (g, w) for g, w in zip(got, want, strict=True)
            ):
                raise IRError(
                    f"{self.name}: {what} shape {list(got)}, expected "
                    f"{list(want)} for block {list(_array(self.block))}"
                )
        if (
            not _is_float(_elem(_type(self.scale)))
            and _elem(_type(self.scale)).kind != "e8m0"
        ):
            raise IRError(f"{self.name}: scale must be a float or e8m0 tensor")
        self.check_elements(_elem(t), _elem(self.result.type))
        return _elem(self.result.type), _shape(t)

    def check_elements(self, src: DType, dst: DType) -> None:
        raise NotImplementedError


@irdl_op_definition
class QuantizeOp(_QuantBase):
    """q = result_type.encode(input / scale[blk] + zero[blk]), blk = index // block.

    Group-wise quantization along K is block [1, G]; per-channel is [1, K];
    per-tensor is the input shape; MX is [1, 32] with e8m0 scales. With
    W = s * (Q - z), `dequantize` inverts it up to rounding.
    """

    name = "lp.quantize"

    def check_elements(self, src: DType, dst: DType) -> None:
        if not _is_float(src):
            raise IRError(f"lp.quantize: input must be a float tensor, got {src}")


@irdl_op_definition
class DequantizeOp(_QuantBase):
    """out = (decode(input) - decode(zero[blk])) * decode(scale[blk]), a float."""

    name = "lp.dequantize"

    def check_elements(self, src: DType, dst: DType) -> None:
        if not _is_float(dst):
            raise IRError(f"lp.dequantize: result must be a float tensor, got {dst}")


# -- contraction ---------------------------------------------------------------------


@irdl_op_definition
class MatmulOp(LpOp):
    """lhs[..., M, K] @ rhs[..., K, N] (rhs[..., N, K] with transpose_b).

    Batch dimensions broadcast as NumPy's matmul. Floats accumulate in f32 and
    round once to the result type; integers accumulate exactly into int32.
    """

    name = "lp.matmul"
    lhs = operand_def(TensorType)
    rhs = operand_def(TensorType)
    transpose_b = opt_prop_def(UnitAttr)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    custom_directives = _DIRECTIVES
    assembly_format = f"$lhs `,` $rhs (`transpose_b` $transpose_b^)? attr-dict {_SIG}"

    def __init__(
        self,
        lhs: SSAValue,
        rhs: SSAValue,
        transpose_b: bool = False,
        out: DType | None = None,
    ):
        dt, shape = self.infer(_type(lhs), _type(rhs), transpose_b, out)
        super().__init__(
            operands=[lhs, rhs],
            result_types=[tensor_type(dt, shape)],
            properties={"transpose_b": UnitAttr()} if transpose_b else {},
        )

    @staticmethod
    def infer(
        a: TensorType, b: TensorType, transpose_b: bool, out: DType | None
    ) -> tuple[DType, tuple[int, ...]]:
        sa, sb = _shape(a), _shape(b)
        if len(sa) < 2 or len(sb) < 2:
            raise IRError(
                f"lp.matmul: operands need rank >= 2, got {list(sa)} and {list(sb)}"
            )
        m, k = sa[-2:]
        n, k2 = sb[-2:] if transpose_b else sb[-2:][::-1]
        if DYNAMIC not in (k, k2) and k != k2:
            raise IRError(
                f"lp.matmul: contraction sizes differ: {list(sa)} @ "
                f"{list(sb)}{' (transpose_b)' if transpose_b else ''}"
            )
        ea, eb = _elem(a), _elem(b)
        if _is_float(ea) and _is_float(eb):
            dt = out if out is not None else ea
            if not _is_float(dt):
                raise IRError(
                    f"lp.matmul: float operands give a float result, not {dt}"
                )
        elif isinstance(ea, IntType) and isinstance(eb, IntType):
            dt = int_(32)
            if out is not None and out != dt:
                raise IRError(
                    f"lp.matmul: integer operands accumulate into int32, not {out}"
                )
        else:
            raise IRError(
                f"lp.matmul: operand types {ea} and {eb} mix floats and "
                "integers; dequantize or cast first"
            )
        batch = broadcast_shapes("lp.matmul", sa[:-2], sb[:-2])
        return dt, (*batch, m, n)

    def infer_from_operands(self) -> tuple[DType, tuple[int, ...]]:
        out = _elem(self.result.type)
        return self.infer(
            _type(self.lhs), _type(self.rhs), self.transpose_b is not None, out
        )


# -- reductions and normalizations --------------------------------------------------


class ReduceOp(LpOp):
    """Reduce over `dims` (sorted, unique); `keepdim` keeps them as size 1."""

    input = operand_def(TensorType)
    dims = prop_def(DenseArrayBase.constr(i64))
    keepdim = opt_prop_def(UnitAttr)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    custom_directives = _DIRECTIVES
    assembly_format = (
        f"$input `dims` custom<IntList>($dims) (`keepdim` $keepdim^)? attr-dict {_SIG}"
    )
    FLOATS_ONLY: ClassVar[bool] = False

    def __init__(self, input: SSAValue, dims: Sequence[int], keepdim: bool = False):
        t = _type(input)
        rank = len(_shape(t))
        norm = sorted({_norm_dim(self.name, d, rank) for d in dims})
        dt, shape = self.infer(self.name, t, norm, keepdim)
        super().__init__(
            operands=[input],
            result_types=[tensor_type(dt, shape)],
            properties={
                "dims": int_array(norm),
                **({"keepdim": UnitAttr()} if keepdim else {}),
            },
        )

    @classmethod
    def infer(
        cls, name: str, t: TensorType, dims: Sequence[int], keepdim: bool
    ) -> tuple[DType, tuple[int, ...]]:
        shape = _shape(t)
        if list(dims) != sorted(set(dims)) or any(
            not 0 <= d < len(shape) for d in dims
        ):
            raise IRError(
                f"{name}: dims {list(dims)} must be sorted, unique and in "
                f"0..{len(shape) - 1}"
            )
        if cls.FLOATS_ONLY and not _is_float(_elem(t)):
            raise IRError(f"{name}: needs a float tensor, got {_elem(t)}")
        out = tuple(
            1 if d in dims else n
            for d, n in enumerate(shape)
            if keepdim or d not in dims
        )
        return _elem(t), out

    def infer_from_operands(self) -> tuple[DType, tuple[int, ...]]:
        return self.infer(
            self.name, _type(self.input), _array(self.dims), self.keepdim is not None
        )


@irdl_op_definition
class ReduceSumOp(ReduceOp):
    """Sum (floats accumulate in f32)."""

    name = "lp.reduce_sum"


@irdl_op_definition
class ReduceMaxOp(ReduceOp):
    """Maximum (torch amax)."""

    name = "lp.reduce_max"


@irdl_op_definition
class ReduceMinOp(ReduceOp):
    """Minimum (torch amin)."""

    name = "lp.reduce_min"


@irdl_op_definition
class ReduceMeanOp(ReduceOp):
    """Arithmetic mean."""

    name = "lp.reduce_mean"
    FLOATS_ONLY: ClassVar[bool] = True


class AlongDimOp(LpOp):
    """An op along one dimension; the result has the input's type."""

    input = operand_def(TensorType)
    dim = prop_def(IntAttr)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    custom_directives = _DIRECTIVES
    assembly_format = f"$input `dim` custom<Int>($dim) attr-dict {_SIG}"
    FLOATS_ONLY: ClassVar[bool] = True

    def __init__(self, input: SSAValue, dim: int):
        t = _type(input)
        d = _norm_dim(self.name, dim, len(_shape(t)))
        super().__init__(
            operands=[input],
            result_types=[tensor_type(_elem(t), _shape(t))],
            properties={"dim": IntAttr(d)},
        )

    def infer_from_operands(self) -> tuple[DType, tuple[int, ...]]:
        t = _type(self.input)
        if not 0 <= self.dim.data < len(_shape(t)):
            raise IRError(
                f"{self.name}: dim {self.dim.data} out of range for rank "
                f"{len(_shape(t))}"
            )
        if self.FLOATS_ONLY and not _is_float(_elem(t)):
            raise IRError(f"{self.name}: needs a float tensor, got {_elem(t)}")
        return _elem(t), _shape(t)


@irdl_op_definition
class CumsumOp(AlongDimOp):
    """Inclusive prefix sum along `dim`."""

    name = "lp.cumsum"
    FLOATS_ONLY: ClassVar[bool] = False


@irdl_op_definition
class SoftmaxOp(AlongDimOp):
    """exp(x - max) / sum(exp(x - max)) along `dim`."""

    name = "lp.softmax"


@irdl_op_definition
class LogSoftmaxOp(AlongDimOp):
    """x - max - log(sum(exp(x - max))) along `dim`."""

    name = "lp.log_softmax"


# -- data movement ---------------------------------------------------------------------


@irdl_op_definition
class ReshapeOp(LpOp):
    """The same elements in row-major order under a new shape."""

    name = "lp.reshape"
    input = operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    custom_directives = _DIRECTIVES
    assembly_format = f"$input attr-dict {_SIG}"

    def __init__(self, input: SSAValue, shape: Sequence[int]):
        super().__init__(
            operands=[input], result_types=[tensor_type(_elem(_type(input)), shape)]
        )

    def infer_from_operands(self) -> tuple[DType, tuple[int, ...]]:
        a, b = _shape(_type(self.input)), _shape(self.result.type)
        if DYNAMIC not in a + b and math.prod(a) != math.prod(b):
            raise IRError(
                f"lp.reshape: {list(a)} ({math.prod(a)} elements) cannot "
                f"become {list(b)} ({math.prod(b)} elements)"
            )
        return _elem(_type(self.input)), b


@irdl_op_definition
class PermuteOp(LpOp):
    """result.shape[i] = input.shape[perm[i]] (torch permute)."""

    name = "lp.permute"
    input = operand_def(TensorType)
    perm = prop_def(DenseArrayBase.constr(i64))
    result = result_def(TensorType)
    traits = traits_def(Pure())
    custom_directives = _DIRECTIVES
    assembly_format = f"$input custom<IntList>($perm) attr-dict {_SIG}"

    def __init__(self, input: SSAValue, perm: Sequence[int]):
        t = _type(input)
        rank = len(_shape(t))
        norm = [_norm_dim(self.name, p, rank) for p in perm]
        dt, shape = self.infer(t, norm)
        super().__init__(
            operands=[input],
            result_types=[tensor_type(dt, shape)],
            properties={"perm": int_array(norm)},
        )

    @staticmethod
    def infer(t: TensorType, perm: Sequence[int]) -> tuple[DType, tuple[int, ...]]:
        shape = _shape(t)
        if sorted(perm) != list(range(len(shape))):
            raise IRError(
                f"lp.permute: {list(perm)} is not a permutation of "
                f"{len(shape)} dimensions"
            )
        return _elem(t), tuple(shape[p] for p in perm)

    def infer_from_operands(self) -> tuple[DType, tuple[int, ...]]:
        return self.infer(_type(self.input), _array(self.perm))


@irdl_op_definition
class BroadcastOp(LpOp):
    """NumPy broadcast_to: new leading dimensions, size-1 dimensions expand."""

    name = "lp.broadcast"
    input = operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    custom_directives = _DIRECTIVES
    assembly_format = f"$input attr-dict {_SIG}"

    def __init__(self, input: SSAValue, shape: Sequence[int]):
        super().__init__(
            operands=[input], result_types=[tensor_type(_elem(_type(input)), shape)]
        )

    def infer_from_operands(self) -> tuple[DType, tuple[int, ...]]:
        src, dst = _shape(_type(self.input)), _shape(self.result.type)
        if len(dst) < len(src) or any(
            s not in (1, d) and DYNAMIC not in (s, d)
            for s, d in zip(src, dst[len(dst) - len(src) :], strict=True)
        ):
            raise IRError(
                f"lp.broadcast: {list(src)} does not broadcast to {list(dst)}"
            )
        return _elem(_type(self.input)), dst


@irdl_op_definition
class SliceOp(LpOp):
    """result[i...] = input[offsets + i * strides]; sizes are the result shape."""

    name = "lp.slice"
    input = operand_def(TensorType)
    offsets = prop_def(DenseArrayBase.constr(i64))
    strides = prop_def(DenseArrayBase.constr(i64))
    result = result_def(TensorType)
    traits = traits_def(Pure())
    custom_directives = _DIRECTIVES
    assembly_format = (
        "$input `offsets` custom<IntList>($offsets) `strides` "
        f"custom<IntList>($strides) attr-dict {_SIG}"
    )

    def __init__(
        self,
        input: SSAValue,
        offsets: Sequence[int],
        sizes: Sequence[int],
        strides: Sequence[int] | None = None,
    ):
        strides = [1] * len(offsets) if strides is None else list(strides)
        super().__init__(
            operands=[input],
            result_types=[tensor_type(_elem(_type(input)), sizes)],
            properties={
                "offsets": int_array(tuple(offsets)),
                "strides": int_array(tuple(strides)),
            },
        )

    def infer_from_operands(self) -> tuple[DType, tuple[int, ...]]:
        src, sizes = _shape(_type(self.input)), _shape(self.result.type)
        offsets, strides = _array(self.offsets), _array(self.strides)
        if not len(src) == len(sizes) == len(offsets) == len(strides):
            raise IRError("lp.slice: offsets, strides and result need the input's rank")
        for d, (n, off, size, step) in enumerate(
            zip(src, offsets, sizes, strides, strict=True)
        ):
            if off < 0 or step < 1:
                raise IRError(f"lp.slice: dim {d} needs offset >= 0 and stride >= 1")
            if DYNAMIC not in (n, size) and size and off + (size - 1) * step >= n:
                raise IRError(
                    f"lp.slice: dim {d} reads index {off + (size - 1) * step} "
                    f"of a size-{n} dimension"
                )
        return _elem(_type(self.input)), sizes


@irdl_op_definition
class ConcatOp(LpOp):
    """Inputs joined along `dim`."""

    name = "lp.concat"
    inputs = var_operand_def(TensorType)
    dim = prop_def(IntAttr)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    custom_directives = _DIRECTIVES
    assembly_format = f"$inputs `dim` custom<Int>($dim) attr-dict {_SIG}"

    def __init__(self, inputs: Sequence[SSAValue], dim: int):
        if not inputs:
            raise IRError("lp.concat: needs at least one input")
        rank = len(_shape(_type(inputs[0])))
        d = _norm_dim(self.name, dim, rank)
        dt, shape = self.infer([_type(v) for v in inputs], d)
        super().__init__(
            operands=[list(inputs)],
            result_types=[tensor_type(dt, shape)],
            properties={"dim": IntAttr(d)},
        )

    @staticmethod
    def infer(types: Sequence[TensorType], dim: int) -> tuple[DType, tuple[int, ...]]:
        if not types:
            raise IRError("lp.concat: needs at least one input")
        first = _shape(types[0])
        if not 0 <= dim < len(first):
            raise IRError(f"lp.concat: dim {dim} out of range for rank {len(first)}")
        total = 0
        for t in types:
            s = _shape(t)
            if (
                _elem(t) != _elem(types[0])
                or len(s) != len(first)
                or any(
                    a != b and DYNAMIC not in (a, b)
                    for i, (a, b) in enumerate(zip(s, first, strict=True))
                    if i != dim
                )
            ):
                raise IRError(f"lp.concat: {t} does not match {types[0]} off dim {dim}")
            total = DYNAMIC if DYNAMIC in (total, s[dim]) else total + s[dim]
        return _elem(types[0]), (*first[:dim], total, *first[dim + 1 :])

    def infer_from_operands(self) -> tuple[DType, tuple[int, ...]]:
        return self.infer([_type(v) for v in self.inputs], self.dim.data)


class _IndexOp(LpOp):
    input = operand_def(TensorType)
    indices = operand_def(TensorType)
    dim = prop_def(IntAttr)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    custom_directives = _DIRECTIVES
    assembly_format = f"$input `,` $indices `dim` custom<Int>($dim) attr-dict {_SIG}"

    def __init__(self, input: SSAValue, indices: SSAValue, dim: int = 0):
        t = _type(input)
        d = _norm_dim(self.name, dim, len(_shape(t)))
        dt, shape = self.infer(t, _type(indices), d)
        super().__init__(
            operands=[input, indices],
            result_types=[tensor_type(dt, shape)],
            properties={"dim": IntAttr(d)},
        )

    @classmethod
    def infer(
        cls, t: TensorType, idx: TensorType, dim: int
    ) -> tuple[DType, tuple[int, ...]]:
        raise NotImplementedError

    @staticmethod
    def _check(name: str, t: TensorType, idx: TensorType, dim: int) -> None:
        if not isinstance(_elem(idx), IntType):
            raise IRError(f"{name}: indices must be integers, got {_elem(idx)}")
        if not 0 <= dim < len(_shape(t)):
            raise IRError(f"{name}: dim {dim} out of range for rank {len(_shape(t))}")

    def infer_from_operands(self) -> tuple[DType, tuple[int, ...]]:
        return self.infer(_type(self.input), _type(self.indices), self.dim.data)


@irdl_op_definition
class TakeOp(_IndexOp):
    """np.take(input, indices, axis=dim): index_select and embedding lookup.

    Result shape: input.shape[:dim] + indices.shape + input.shape[dim+1:].
    """

    name = "lp.take"

    @classmethod
    def infer(
        cls, t: TensorType, idx: TensorType, dim: int
    ) -> tuple[DType, tuple[int, ...]]:
        cls._check("lp.take", t, idx, dim)
        s = _shape(t)
        return _elem(t), (*s[:dim], *_shape(idx), *s[dim + 1 :])


@irdl_op_definition
class GatherOp(_IndexOp):
    """torch.gather: result[i][j] = input[i][indices[i][j]] along dim (equal ranks)."""

    name = "lp.gather"

    @classmethod
    def infer(
        cls, t: TensorType, idx: TensorType, dim: int
    ) -> tuple[DType, tuple[int, ...]]:
        cls._check("lp.gather", t, idx, dim)
        if len(_shape(idx)) != len(_shape(t)):
            raise IRError("lp.gather: indices need the input's rank")
        return _elem(t), _shape(idx)


# -- convolution and pooling -----------------------------------------------------------


def _window_out(n: int, k: int, s: int, p: int, d: int, ceil: bool) -> int:
    """Output size of a sliding window (PyTorch's formula, ceil_mode included)."""
    if n == DYNAMIC:
        return DYNAMIC
    span = n + 2 * p - d * (k - 1) - 1
    out = (-(-span // s) if ceil else span // s) + 1
    if ceil and (out - 1) * s >= n + p:  # the last window must start inside
        out -= 1
    return out


def _pair(op: str, what: str, values: Sequence[int], minimum: int) -> tuple[int, int]:
    if len(values) != 2 or any(v < minimum for v in values):
        raise IRError(f"{op}: {what} must be two ints >= {minimum}, got {list(values)}")
    return values[0], values[1]


@irdl_op_definition
class Conv2dOp(LpOp):
    """2-D convolution, NCHW input, OIHW weight, optional bias[O] (torch conv2d)."""

    name = "lp.conv2d"
    input = operand_def(TensorType)
    weight = operand_def(TensorType)
    bias = opt_operand_def(TensorType)
    stride = prop_def(DenseArrayBase.constr(i64))
    padding = prop_def(DenseArrayBase.constr(i64))
    dilation = prop_def(DenseArrayBase.constr(i64))
    groups = prop_def(IntAttr)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    custom_directives = _DIRECTIVES
    assembly_format = (
        "$input `,` $weight (`bias` $bias^)? `stride` custom<IntList>($stride) "
        "`padding` custom<IntList>($padding) `dilation` custom<IntList>($dilation) "
        f"`groups` custom<Int>($groups) attr-dict {_SIG}"
    )

    def __init__(
        self,
        input: SSAValue,
        weight: SSAValue,
        bias: SSAValue | None = None,
        stride: Sequence[int] = (1, 1),
        padding: Sequence[int] = (0, 0),
        dilation: Sequence[int] = (1, 1),
        groups: int = 1,
    ):
        dt, shape = self.infer(
            _type(input),
            _type(weight),
            None if bias is None else _type(bias),
            stride,
            padding,
            dilation,
            groups,
        )
        super().__init__(
            operands=[input, weight, [bias] if bias is not None else []],
            result_types=[tensor_type(dt, shape)],
            properties={
                "stride": int_array(tuple(stride)),
                "padding": int_array(tuple(padding)),
                "dilation": int_array(tuple(dilation)),
                "groups": IntAttr(groups),
            },
        )

    @staticmethod
    def infer(
        x: TensorType,
        w: TensorType,
        b: TensorType | None,
        stride: Sequence[int],
        padding: Sequence[int],
        dilation: Sequence[int],
        groups: int,
    ) -> tuple[DType, tuple[int, ...]]:
        op = "lp.conv2d"
        sx, sw = _shape(x), _shape(w)
        if len(sx) != 4 or len(sw) != 4:
            raise IRError(
                f"{op}: input NCHW and weight OIHW need rank 4, got "
                f"{list(sx)} and {list(sw)}"
            )
        if not _is_float(_elem(x)) or _elem(w) != _elem(x):
            raise IRError(
                f"{op}: input and weight must share a float type, got "
                f"{_elem(x)} and {_elem(w)}"
            )
        sh, sw_ = _pair(op, "stride", stride, 1)
        ph, pw = _pair(op, "padding", padding, 0)
        dh, dw = _pair(op, "dilation", dilation, 1)
        n, c, h, wd = sx
        o, cg, kh, kw = sw
        if groups < 1 or (c != DYNAMIC and c % groups) or o % groups:
            raise IRError(f"{op}: groups {groups} must divide channels {c} and {o}")
        if c != DYNAMIC and cg * groups != c:
            raise IRError(
                f"{op}: weight has {cg} input channels per group, input "
                f"has {c} channels in {groups} groups"
            )
        if b is not None and (_shape(b) != (o,) or _elem(b) != _elem(x)):
            raise IRError(f"{op}: bias must be [{o}] of {_elem(x)}, got {b}")
        return _elem(x), (
            n,
            o,
            _window_out(h, kh, sh, ph, dh, False),
            _window_out(wd, kw, sw_, pw, dw, False),
        )

    def infer_from_operands(self) -> tuple[DType, tuple[int, ...]]:
        return self.infer(
            _type(self.input),
            _type(self.weight),
            None if self.bias is None else _type(self.bias),
            _array(self.stride),
            _array(self.padding),
            _array(self.dilation),
            self.groups.data,
        )


class Pool2dOp(LpOp):
    """Sliding-window pooling over the last two dimensions of NCHW."""

    input = operand_def(TensorType)
    kernel = prop_def(DenseArrayBase.constr(i64))
    stride = prop_def(DenseArrayBase.constr(i64))
    padding = prop_def(DenseArrayBase.constr(i64))
    ceil_mode = opt_prop_def(UnitAttr)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    custom_directives = _DIRECTIVES

    def window_dilation(self) -> tuple[int, ...]:
        return (1, 1)

    def infer_from_operands(self) -> tuple[DType, tuple[int, ...]]:
        t = _type(self.input)
        dilation = self.window_dilation()
        return self.infer(
            self.name,
            t,
            _array(self.kernel),
            _array(self.stride),
            _array(self.padding),
            dilation,
            self.ceil_mode is not None,
        )

    @staticmethod
    def infer(
        op: str,
        t: TensorType,
        kernel: Sequence[int],
        stride: Sequence[int],
        padding: Sequence[int],
        dilation: Sequence[int],
        ceil: bool,
    ) -> tuple[DType, tuple[int, ...]]:
        s = _shape(t)
        if len(s) != 4:
            raise IRError(f"{op}: input must be NCHW (rank 4), got {list(s)}")
        if not _is_float(_elem(t)):
            raise IRError(f"{op}: needs a float tensor, got {_elem(t)}")
        kh, kw = _pair(op, "kernel", kernel, 1)
        sh, sw = _pair(op, "stride", stride, 1)
        ph, pw = _pair(op, "padding", padding, 0)
        dh, dw = _pair(op, "dilation", dilation, 1)
        if 2 * ph > kh or 2 * pw > kw:
            raise IRError(
                f"{op}: padding {list(padding)} must be at most half the "
                f"kernel {list(kernel)}"
            )
        return _elem(t), (
            s[0],
            s[1],
            _window_out(s[2], kh, sh, ph, dh, ceil),
            _window_out(s[3], kw, sw, pw, dw, ceil),
        )


@irdl_op_definition
class MaxPool2dOp(Pool2dOp):
    """Max over each window; padding is -inf (torch max_pool2d)."""

    name = "lp.max_pool2d"
    dilation = prop_def(DenseArrayBase.constr(i64))

    def window_dilation(self) -> tuple[int, ...]:
        return _array(self.dilation)

    assembly_format = (
        "$input `kernel` custom<IntList>($kernel) `stride` custom<IntList>($stride) "
        "`padding` custom<IntList>($padding) `dilation` custom<IntList>($dilation) "
        f"(`ceil_mode` $ceil_mode^)? attr-dict {_SIG}"
    )

    def __init__(
        self,
        input: SSAValue,
        kernel: Sequence[int],
        stride: Sequence[int] | None = None,
        padding: Sequence[int] = (0, 0),
        dilation: Sequence[int] = (1, 1),
        ceil_mode: bool = False,
    ):
        stride = tuple(kernel) if stride is None else tuple(stride)
        dt, shape = self.infer(
            self.name, _type(input), kernel, stride, padding, dilation, ceil_mode
        )
        super().__init__(
            operands=[input],
            result_types=[tensor_type(dt, shape)],
            properties={
                "kernel": int_array(tuple(kernel)),
                "stride": int_array(stride),
                "padding": int_array(tuple(padding)),
                "dilation": int_array(tuple(dilation)),
                **({"ceil_mode": UnitAttr()} if ceil_mode else {}),
            },
        )


@irdl_op_definition
class AvgPool2dOp(Pool2dOp):
    """Mean over each window (torch avg_pool2d); padding counts as 0 only with
    `count_include_pad`."""

    name = "lp.avg_pool2d"
    count_include_pad = opt_prop_def(UnitAttr)
    assembly_format = (
        "$input `kernel` custom<IntList>($kernel) `stride` custom<IntList>($stride) "
        "`padding` custom<IntList>($padding) (`ceil_mode` $ceil_mode^)? "
        f"(`count_include_pad` $count_include_pad^)? attr-dict {_SIG}"
    )

    def __init__(
        self,
        input: SSAValue,
        kernel: Sequence[int],
        stride: Sequence[int] | None = None,
        padding: Sequence[int] = (0, 0),
        ceil_mode: bool = False,
        count_include_pad: bool = True,
    ):
        stride = tuple(kernel) if stride is None else tuple(stride)
        dt, shape = self.infer(
            self.name, _type(input), kernel, stride, padding, (1, 1), ceil_mode
        )
        props: dict[str, Attribute] = {
            "kernel": int_array(tuple(kernel)),
            "stride": int_array(stride),
            "padding": int_array(tuple(padding)),
        }
        if ceil_mode:
            props["ceil_mode"] = UnitAttr()
        if count_include_pad:
            props["count_include_pad"] = UnitAttr()
        super().__init__(
            operands=[input], result_types=[tensor_type(dt, shape)], properties=props
        )


LP_OPS: tuple[type[IRDLOperation], ...] = (
    ConstantOp,
    IotaOp,
    AddOp,
    SubOp,
    MulOp,
    DivOp,
    MaxOp,
    MinOp,
    PowOp,
    CmpOp,
    NegOp,
    AbsOp,
    ExpOp,
    LogOp,
    SqrtOp,
    RsqrtOp,
    TanhOp,
    SigmoidOp,
    ErfOp,
    CosOp,
    SinOp,
    SelectOp,
    CastOp,
    QuantizeOp,
    DequantizeOp,
    MatmulOp,
    ReduceSumOp,
    ReduceMaxOp,
    ReduceMinOp,
    ReduceMeanOp,
    CumsumOp,
    SoftmaxOp,
    LogSoftmaxOp,
    ReshapeOp,
    PermuteOp,
    BroadcastOp,
    SliceOp,
    ConcatOp,
    TakeOp,
    GatherOp,
    Conv2dOp,
    MaxPool2dOp,
    AvgPool2dOp,
)
