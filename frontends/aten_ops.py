"""ATen op -> lp dialect converters, one registry.

Each converter is registered with `@converts(aten.x.default, ...)` and is a
function `(b: Builder, node: fx.Node) -> SSAValue | tuple` that emits lp ops
through the `Builder` and returns the value(s) of the node. The importer
(`torch_export.py`) then makes the result agree with torch's own metadata:
element type from `node.meta["val"].dtype` (an `lp.cast` if needed) and
sizes from its shape (`lp.dims` on dynamic results), so converters need not
repeat torch's type promotion for their result.

Rules the converters keep:

* Never produce wrong code silently: an argument combination a converter
  does not implement raises `Unsupported(reason)`, which the importer turns
  into an `UnsupportedOpError` naming the op, module and source line.
* Python scalars become splat constants of the computation's type with the
  other operand's rank (all sizes 1); ranks are equalized by reshapes,
  since lp elementwise ops only broadcast size-1 dimensions.
* Composite converters (gelu, layer/batch norm, softmax) compute in f32 for
  f16/bf16 inputs and round once at the end, as torch's CPU kernels do.
* Result shapes come from torch's metadata (`Builder.out_dims(node)`), never
  from possibly symbolic arguments.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.fx import Node
from xdsl.dialects.builtin import (
    FileLineColLoc,
    IntAttr,
    NameLoc,
    StringAttr,
    UnknownLoc,
)
from xdsl.ir import Block, Operation, SSAValue

from lpcc.errors import IRError, LpccError, error_message
from lpcc.ir import dtypes
from lpcc.ir.dialect import ops as lp
from lpcc.ir.dialect.types import DYNAMIC
from lpcc.ir.dtypes import DType, FloatType, IntType
from lpcc.ir.symbolic import DIMS_ATTR, Dim, ShapeError, format_dims, parse_dims

aten = torch.ops.aten

# -- errors ----------------------------------------------------------------------------

SUPPORTED_HINT = (
    "rewrite with supported ops, or open an issue; supported ops: "
    "`lpcc.frontends.supported_ops()`. Escape hatch: compute this part in "
    "torch, outside the module you compile"
)


class FrontendError(LpccError, ValueError):
    """A torch program lpcc cannot import (other than an unsupported op)."""


class UnsupportedOpError(LpccError, NotImplementedError):
    """An ATen op, or an argument combination of one, without a converter."""


class Unsupported(Exception):
    """Raised inside a converter; the importer adds the node's context."""

    def __init__(self, reason: str, hint: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.hint = hint


_TORCH_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\S+)\n\s*(.*)')


def _user_frame(stack_trace: str | None) -> tuple[str, int, str, str] | None:
    """(file, line, function, code) of the last frame outside torch itself."""
    if not stack_trace:
        return None
    frames = [
        (f, int(n), fn, code.strip())
        for f, n, fn, code in _TORCH_FRAME.findall(stack_trace)
    ]
    torch_dir = torch.__file__.rsplit("/", 1)[0] + "/"
    user = [fr for fr in frames if not fr[0].startswith(torch_dir)]
    picked = user or frames
    return picked[-1] if picked else None


def node_where(node: Node) -> dict[str, Any]:
    """Where `node` comes from, as `error_message` keywords (module, source...)."""
    where: dict[str, Any] = {}
    stack = node.meta.get("nn_module_stack") or {}
    if stack:
        path, cls = list(stack.values())[-1]
        cls_name = cls.__name__ if isinstance(cls, type) else str(cls).split(".")[-1]
        where["module"] = f"{path or '<root>'} ({cls_name})"
    frame = _user_frame(node.meta.get("stack_trace"))
    if frame is not None:
        file, line, fn, code = frame
        where |= {"source": (file, line), "function": fn, "code": code}
    return where


def node_context(node: Node) -> list[str]:
    """Lines naming the module path/class and user source line of `node`."""
    where = node_where(node)
    text = error_message("", why="", hint="", debug=False, **where)
    return [ln for ln in text.splitlines()[1:] if ln.startswith(" ")]


_ASSIGN = re.compile(r"([A-Za-z_]\w*)\s*=(?!=)")


def node_location(node: Node) -> Any:
    """The MLIR location of `node`: its module path around file:line, if known.

    `loc("layers.0.mlp"("model.py":42:0))`; column 0 (torch's stack traces
    carry none). `UnknownLoc` for a node without a user frame.
    """
    frame = _user_frame(node.meta.get("stack_trace"))
    if frame is None:
        return UnknownLoc()
    loc = FileLineColLoc(StringAttr(frame[0]), IntAttr(frame[1]), IntAttr(0))
    path = module_path(node)
    return NameLoc(StringAttr(path), loc) if path else loc


def module_path(node: Node) -> str:
    """The dotted path of the innermost module `node` was traced in ("" at root)."""
    stack = node.meta.get("nn_module_stack") or {}
    return str(list(stack.values())[-1][0]) if stack else ""


def assigned_names(nodes: Sequence[Node]) -> dict[Node, str]:
    """User variable names: the last node of a `name = ...` source line.

    A line's own nodes (those whose innermost user frame is that line) end
    with the value the line assigns, so that node takes the variable's name.
    """
    last: dict[tuple[str, int, str], tuple[Node, str]] = {}
    for node in nodes:
        frame = _user_frame(node.meta.get("stack_trace"))
        if frame is None:
            continue
        m = _ASSIGN.match(frame[3])
        if m is not None:
            last[frame[:3]] = (node, m.group(1))
    return dict(last.values())


def op_name(node: Node) -> str:
    """`aten.x.overload`; for getitem, the op whose output it picks."""
    target = node.target
    if target is operator.getitem and isinstance(node.args[0], Node):
        return f"{op_name(node.args[0])} (output {node.args[1]})"
    if isinstance(target, torch._ops.OpOverload | torch._ops.OpOverloadPacket):
        return str(target)
    return getattr(target, "__name__", str(target))


def unsupported_error(
    node: Node, reason: str, hint: str | None = None
) -> UnsupportedOpError:
    """The what / where / Reason / Explanation / Hint message for `node`."""
    return UnsupportedOpError(
        error_message(
            f"cannot import `{op_name(node)}` (graph node %{node.name})",
            stage="frontend",
            why=reason,
            explanation=(
                "lpcc imports the Core ATen graph torch.export produces and maps "
                "every op to lp dialect ops; it refuses rather than guess, so the "
                "compiled program never silently differs from torch."
            ),
            hint=hint or SUPPORTED_HINT,
            **node_where(node),
        )
    )


# -- registry --------------------------------------------------------------------------

Converter = Callable[["Builder", Node], Any]
CONVERTERS: dict[Any, Converter] = {}

# Ops that produce nothing lpcc needs: shape queries, runtime asserts.
IGNORED: set[Any] = {
    aten.sym_size.int,
    aten.sym_numel.default,
    aten.sym_stride.int,
    aten.sym_storage_offset.default,
    aten._assert_tensor_metadata.default,
    aten._assert_scalar.default,
    aten._assert_async.msg,
    aten.sym_constrain_range.default,
    aten.sym_constrain_range_for_size.default,
}


def converts(*targets: Any) -> Callable[[Converter], Converter]:
    """Register `fn` as the converter of each ATen overload in `targets`."""

    def register(fn: Converter) -> Converter:
        for t in targets:
            if t in CONVERTERS:
                raise LpccError(f"{t} already has a converter")
            CONVERTERS[t] = fn
        return fn

    return register


def supported_ops() -> list[str]:
    """Names of the ATen overloads the importer converts, sorted."""
    return sorted(str(t) for t in CONVERTERS if t is not operator.getitem)


# -- types -----------------------------------------------------------------------------

TORCH_DTYPES: dict[torch.dtype, str] = {
    torch.float32: "f32",
    torch.float16: "f16",
    torch.bfloat16: "bf16",
    torch.int64: "int64",
    torch.int32: "int32",
    torch.int16: "int16",
    torch.int8: "int8",
    torch.uint8: "uint8",
    torch.bool: "uint1",
}
F32 = dtypes.dtype("f32")
I64 = dtypes.dtype("int64")
BOOL = dtypes.dtype("uint1")


def lp_dtype(dt: torch.dtype) -> DType:
    """The lp element type of a torch dtype (FrontendError if none)."""
    name = TORCH_DTYPES.get(dt)
    if name is None:
        raise Unsupported(
            f"tensors of dtype {dt} are not supported",
            f"convert to one of {', '.join(str(d) for d in TORCH_DTYPES)} first "
            "(e.g. float64 -> float32)",
        )
    return dtypes.dtype(name)


def _is_float(dt: DType) -> bool:
    return isinstance(dt, FloatType)


# A value's element type and static shape, as the dialect defines them
# (`_shape` is also imported by torch_export).
_elem = lp.value_elem
_shape = lp.value_shape


def sym_dim(s: Any) -> Dim:
    """An int, or the size expression of a SymInt (an int if it is constant)."""
    if isinstance(s, int):
        return s
    if isinstance(s, torch.SymInt):
        expr = s.node.expr
        if getattr(expr, "is_number", False):
            return int(expr)
        text = format_dims([str(expr)])
        try:
            parse_dims(text)
        except ShapeError:
            raise Unsupported(
                f"torch describes a dynamic size as {text!r}, which lpcc's size "
                "expressions cannot represent",
                "make that dimension static, or simplify the size computation",
            ) from None
        return text
    raise Unsupported(f"expected a size, got {s!r}")


def _dims_from_fake(fake: Any) -> tuple[Dim, ...]:
    return tuple(sym_dim(s) for s in fake.shape)


def _static(dims: Sequence[Dim]) -> list[int]:
    return [d if isinstance(d, int) else DYNAMIC for d in dims]


# -- the builder -----------------------------------------------------------------------


@dataclass
class SymValue:
    """A graph node that is a size (SymInt), not a tensor."""

    dim: Dim


class Unusable:
    """A tuple element lpcc cannot produce (e.g. max_pool2d's indices)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


class Builder:
    """Emits lp ops into one block; the helpers converters share."""

    def __init__(self, block: Block) -> None:
        self.block = block
        self.values: dict[Node, Any] = {}

    # -- reading node arguments --------------------------------------------------

    @staticmethod
    def args(node: Node) -> dict[str, Any]:
        """Arguments by schema name, defaults filled in."""
        schema = node.target._schema  # type: ignore[union-attr]
        out: dict[str, Any] = {}
        for i, arg in enumerate(schema.arguments):
            if i < len(node.args):
                out[arg.name] = node.args[i]
            elif arg.name in node.kwargs:
                out[arg.name] = node.kwargs[arg.name]
            elif arg.has_default_value():
                out[arg.name] = arg.default_value
            else:
                out[arg.name] = None
        return out

    def tensor(self, x: Any) -> SSAValue:
        """The lp value of a tensor argument."""
        v = self.values.get(x) if isinstance(x, Node) else None
        if isinstance(v, SSAValue):
            return v
        raise Unsupported(f"expected a tensor argument, got {x!r}")

    def is_tensor(self, x: Any) -> bool:
        return isinstance(x, Node) and isinstance(self.values.get(x), SSAValue)

    def int(self, x: Any) -> int:
        """A concrete int argument (SymInts must have a constant value)."""
        if isinstance(x, Node):
            v = self.values.get(x)
            if isinstance(v, SymValue) and isinstance(v.dim, int):
                return v.dim
            raise Unsupported(
                f"argument %{x.name} is a dynamic size; lpcc needs it to be "
                "a constant here",
                "make that dimension static, or restructure the computation",
            )
        if isinstance(x, bool) or not isinstance(x, int):
            if isinstance(x, torch.SymInt):
                d = sym_dim(x)
                if isinstance(d, int):
                    return d
            raise Unsupported(f"expected a constant int, got {x!r}")
        return x

    def scalar(self, x: Any) -> bool | int | float:
        """A Python number argument (symbolic scalars are unsupported)."""
        if isinstance(x, bool | int | float):
            return x
        if isinstance(x, Node):
            v = self.values.get(x)
            if isinstance(v, SymValue) and isinstance(v.dim, int):
                return v.dim
        raise Unsupported(
            f"expected a constant number, got {x!r}; lpcc does not compute "
            "with dynamic sizes as values",
            "pass the value as a tensor input instead",
        )

    @staticmethod
    def fake(node: Node) -> Any:
        return node.meta.get("val")

    def out_dims(self, node: Node, index: int | None = None) -> tuple[Dim, ...]:
        fake = self.fake(node)
        if index is not None:
            fake = fake[index]
        return _dims_from_fake(fake)

    def out_dtype(self, node: Node, index: int | None = None) -> DType:
        fake = self.fake(node)
        if index is not None:
            fake = fake[index]
        return lp_dtype(fake.dtype)

    def torch_dtype_of(self, x: Any) -> torch.dtype | None:
        """The torch dtype of a tensor argument (None for a Python scalar)."""
        if isinstance(x, Node):
            fake = self.fake(x)
            if isinstance(fake, torch.Tensor):
                return fake.dtype
        return None

    def promote(self, x: Any, y: Any) -> DType:
        """torch's result type of two operands (tensors or Python scalars)."""

        def probe(v: Any) -> Any:
            fake = self.fake(v) if isinstance(v, Node) else None
            if isinstance(fake, torch.Tensor):  # only dtype and 0-d-ness matter
                return torch.empty(() if fake.ndim == 0 else (1,), dtype=fake.dtype)
            return self.scalar(v)

        return lp_dtype(torch.result_type(probe(x), probe(y)))

    # -- emitting -------------------------------------------------------------------

    def emit(self, op: Operation, dims: Sequence[Dim] | None = None) -> SSAValue:
        """Append `op`; record its result sizes if some are dynamic."""
        self.block.add_op(op)
        result = op.results[0]
        shape = _shape(result)
        if DYNAMIC not in shape:
            return result
        if dims is None:
            dims = _infer_dims(op)
        dims = tuple(s if s != DYNAMIC else d for s, d in zip(shape, dims, strict=True))
        op.attributes[DIMS_ATTR] = StringAttr(format_dims(dims))
        if any(isinstance(d, str) for d in dims):
            return result
        # every size turned out static: continue with a static type
        return self.emit(lp.ReshapeOp(result, dims))  # type: ignore[arg-type]

    def dims(self, v: SSAValue) -> tuple[Dim, ...]:
        return lp.value_dims(v)

    def const(self, values: Any, dt: DType) -> SSAValue:
        return self.emit(lp.ConstantOp.from_array(np.asarray(values), dt))

    def full(
        self, value: float | int | bool, dt: DType, shape: Sequence[int]
    ) -> SSAValue:
        """A `shape` constant holding the Python number `value` as torch stores
        it in `dt`: to bool is `!= 0` and float to int truncates (the codec
        would round half to even)."""
        if dt == BOOL:
            value = bool(value)
        elif (
            isinstance(dt, IntType)
            and isinstance(value, float)
            and math.isfinite(value)
        ):
            value = math.trunc(value)
        arr = np.full(tuple(shape), value, dtype=np.float64 if _is_float(dt) else None)
        return self.const(arr, dt)

    def splat(self, value: float | int | bool, dt: DType, rank: int) -> SSAValue:
        """A constant of `rank` dimensions of size 1 holding `value`."""
        return self.full(value, dt, (1,) * rank)

    def operand(self, x: Any, dt: DType, rank: int) -> SSAValue:
        """Tensor or scalar `x` as a `dt` value of exactly `rank` dimensions."""
        if self.is_tensor(x) or isinstance(x, SSAValue):
            v = x if isinstance(x, SSAValue) else self.tensor(x)
            return self.to_rank(self.cast(v, dt), rank)
        return self.splat(self.scalar(x), dt, rank)

    def rank_of(self, *xs: Any) -> int:
        ranks = [
            len(_shape(x if isinstance(x, SSAValue) else self.tensor(x)))
            for x in xs
            if isinstance(x, SSAValue) or self.is_tensor(x)
        ]
        return max(ranks, default=0)

    def to_rank(self, v: SSAValue, rank: int) -> SSAValue:
        have = len(_shape(v))
        if have == rank:
            return v
        assert have < rank
        return self.reshape(v, (1,) * (rank - have) + self.dims(v))

    def reshape(self, v: SSAValue, dims: Sequence[Dim]) -> SSAValue:
        """`v` under new sizes; folds reshape chains and one-element constants."""
        dims = tuple(dims)
        if self.dims(v) == dims:
            return v
        owner = v.owner
        if isinstance(owner, lp.ReshapeOp):
            return self.reshape(owner.input, dims)
        if (
            isinstance(owner, lp.ConstantOp)
            and "lp.name" not in owner.attributes
            and math.prod(_shape(v)) == 1
            and all(isinstance(d, int) for d in dims)
        ):
            # reshape the codes: decoded int64 values (float64) are inexact
            codes = owner.codes().reshape(dims)  # type: ignore[arg-type]
            return self.emit(lp.ConstantOp.from_codes(codes, owner.dtype))
        return self.emit(lp.ReshapeOp(v, _static(dims)), dims)

    def broadcast(self, v: SSAValue, dims: Sequence[Dim]) -> SSAValue:
        dims = tuple(dims)
        if self.dims(v) == dims:
            return v
        return self.emit(lp.BroadcastOp(v, _static(dims)), dims)

    def cast(self, v: SSAValue, dt: DType) -> SSAValue:
        """torch's conversion: to bool is `!= 0`; float to int truncates."""
        src = _elem(v)
        if src == dt:
            return v
        rank = len(_shape(v))
        if dt == BOOL:
            return self.emit(lp.CmpOp("ne", v, self.splat(0, src, rank)))
        if _is_float(src) and isinstance(dt, IntType):
            # lp.cast rounds half to even; step back toward zero where it
            # rounded away from zero.
            r = self.emit(lp.CastOp(v, dt))
            back = self.emit(lp.CastOp(r, src))
            away = self.emit(
                lp.CmpOp("gt", self.emit(lp.AbsOp(back)), self.emit(lp.AbsOp(v)))
            )
            positive = self.emit(lp.CmpOp("gt", v, self.splat(0, src, rank)))
            step = self.emit(
                lp.SelectOp(positive, self.splat(1, dt, rank), self.splat(-1, dt, rank))
            )
            return self.emit(lp.SelectOp(away, self.emit(lp.SubOp(r, step)), r))
        return self.emit(lp.CastOp(v, dt))

    def binary(self, cls: type, x: Any, y: Any, dt: DType) -> SSAValue:
        """`cls(x, y)` computed in `dt` after torch-style rank broadcasting."""
        rank = self.rank_of(x, y)
        return self.emit(cls(self.operand(x, dt, rank), self.operand(y, dt, rank)))

    def cmp(self, pred: str, x: Any, y: Any) -> SSAValue:
        dt = self.promote(x, y)
        rank = self.rank_of(x, y)
        return self.emit(
            lp.CmpOp(pred, self.operand(x, dt, rank), self.operand(y, dt, rank))
        )

    def select(self, cond: Any, x: Any, y: Any, dt: DType) -> SSAValue:
        rank = self.rank_of(cond, x, y)
        c = self.operand(cond, BOOL, rank)
        return self.emit(
            lp.SelectOp(c, self.operand(x, dt, rank), self.operand(y, dt, rank))
        )

    def opmath(self, v: SSAValue) -> SSAValue:
        """16-bit floats widened to f32 for a composite computation."""
        dt = _elem(v)
        return self.cast(v, F32) if _is_float(dt) and dt.bits < 32 else v


def _infer_dims(op: Operation) -> tuple[Dim, ...]:
    """Size expressions of a dynamic result from its operands' sizes."""
    if isinstance(op, lp.ElementwiseBinaryOp | lp.SelectOp):
        ins = [lp.value_dims(v) for v in op.operands]
        out: list[Dim] = []
        for i, n in enumerate(_shape(op.results[0])):
            cands = [d[i] for d in ins if d[i] != 1]
            out.append(n if n != DYNAMIC else next(iter(cands), 1))
        return tuple(out)
    if isinstance(op, lp.ElementwiseUnaryOp | lp.CastOp | lp.AlongDimOp):
        return lp.value_dims(op.operands[0])
    if isinstance(op, lp.ReduceOp):
        src = lp.value_dims(op.operands[0])
        dims = set(lp._array(op.dims))
        keep = op.keepdim is not None
        return tuple(
            1 if i in dims else d for i, d in enumerate(src) if keep or i not in dims
        )
    if isinstance(op, lp.MatmulOp):
        a, b = lp.value_dims(op.lhs), lp.value_dims(op.rhs)
        ba, bb = a[:-2], b[:-2]
        rank = max(len(ba), len(bb))
        ba = (1,) * (rank - len(ba)) + ba
        bb = (1,) * (rank - len(bb)) + bb
        batch = tuple(x if x != 1 else y for x, y in zip(ba, bb, strict=True))
        n = b[-2] if op.transpose_b is not None else b[-1]
        return (*batch, a[-2], n)
    if isinstance(op, lp.PermuteOp):
        src = lp.value_dims(op.input)
        return tuple(src[p] for p in lp._array(op.perm))
    if isinstance(op, lp.TakeOp):
        src, idx = lp.value_dims(op.input), lp.value_dims(op.indices)
        d = op.dim.data
        return (*src[:d], *idx, *src[d + 1 :])
    if isinstance(op, lp.GatherOp):
        return lp.value_dims(op.indices)
    raise IRError(f"{op.name}: the frontend must give the sizes of its dynamic result")


# -- helpers for converters ------------------------------------------------------------


def _norm(dim: int, rank: int) -> int:
    if not -max(rank, 1) <= dim < max(rank, 1):
        raise Unsupported(f"dim {dim} out of range for rank {rank}")
    return dim % rank if rank else 0


def _dim_list(b: Builder, dims: Any, rank: int) -> list[int]:
    """A dim / list of dims argument; None or [] means every dimension."""
    if dims is None:
        return list(range(rank))
    if not isinstance(dims, list | tuple):
        dims = [dims]
    if not dims:
        return list(range(rank))
    return sorted({_norm(b.int(d), rank) for d in dims})


# -- elementwise -----------------------------------------------------------------------


def _arith(cls: type, swap: bool = False) -> Converter:
    def convert(b: Builder, node: Node) -> SSAValue:
        a = b.args(node)
        x, y = a["self"], a["other"]
        dt = b.out_dtype(node)
        if dt == BOOL and cls is lp.SubOp:
            raise Unsupported("boolean subtraction is not defined")
        if swap:  # rsub(self, other, alpha) = other - alpha * self
            x, y = y, x
        alpha = a.get("alpha")
        if alpha is not None and b.scalar(alpha) != 1:
            y = b.binary(lp.MulOp, y, b.scalar(alpha), dt)
        return b.binary(cls, x, y, dt)

    return convert


converts(aten.add.Tensor, aten.add.Scalar)(_arith(lp.AddOp))
converts(aten.sub.Tensor, aten.sub.Scalar)(_arith(lp.SubOp))
converts(aten.rsub.Tensor, aten.rsub.Scalar)(_arith(lp.SubOp, swap=True))
converts(aten.mul.Tensor, aten.mul.Scalar)(_arith(lp.MulOp))
converts(aten.maximum.default)(_arith(lp.MaxOp))
converts(aten.minimum.default)(_arith(lp.MinOp))


@converts(aten.div.Tensor, aten.div.Scalar, aten.true_divide.Tensor)
def _div(b: Builder, node: Node) -> SSAValue:
    a = b.args(node)
    return b.binary(lp.DivOp, a["self"], a["other"], b.out_dtype(node))


@converts(aten.div.Tensor_mode, aten.div.Scalar_mode)
def _div_mode(b: Builder, node: Node) -> SSAValue:
    a = b.args(node)
    x, y, mode = a["self"], a["other"], a["rounding_mode"]
    dt = b.out_dtype(node)
    if mode is None:
        return b.binary(lp.DivOp, x, y, dt)
    rank = b.rank_of(x, y)
    xv, yv = b.operand(x, dt, rank), b.operand(y, dt, rank)
    q = b.emit(lp.DivOp(xv, yv))
    if _is_float(dt):
        # trunc/floor of the true quotient through an int64 round trip; a
        # quotient of magnitude >= 2**man (also inf, nan) is already integral
        assert isinstance(dt, FloatType)
        small = b.emit(
            lp.CmpOp("lt", b.emit(lp.AbsOp(q)), b.splat(2.0**dt.man, dt, rank))
        )
        t = b.emit(lp.SelectOp(small, b.cast(b.cast(q, I64), dt), q))
        if mode == "trunc":
            return t
        below = b.emit(lp.CmpOp("lt", q, t))
        return b.emit(lp.SelectOp(below, b.emit(lp.SubOp(t, b.splat(1, dt, rank))), t))
    if mode == "trunc":  # lp.div on integers rounds toward zero
        return q
    # floor for integers: one less where the remainder is non-zero and the
    # signs differ
    r = b.emit(lp.SubOp(xv, b.emit(lp.MulOp(q, yv))))
    zero = b.splat(0, dt, rank)
    inexact = b.emit(lp.CmpOp("ne", r, zero))
    differ = b.emit(
        lp.CmpOp(
            "ne", b.emit(lp.CmpOp("lt", xv, zero)), b.emit(lp.CmpOp("lt", yv, zero))
        )
    )
    fix = b.emit(lp.SelectOp(inexact, differ, b.splat(False, BOOL, rank)))
    return b.emit(lp.SelectOp(fix, b.emit(lp.SubOp(q, b.splat(1, dt, rank))), q))


@converts(aten.pow.Tensor_Tensor, aten.pow.Tensor_Scalar, aten.pow.Scalar)
def _pow(b: Builder, node: Node) -> SSAValue:
    a = b.args(node)
    return b.binary(lp.PowOp, a["self"], a["exponent"], b.out_dtype(node))


def _cmp(pred: str) -> Converter:
    def convert(b: Builder, node: Node) -> SSAValue:
        a = b.args(node)
        return b.cmp(pred, a["self"], a["other"])

    return convert


for _p in ("eq", "ne", "lt", "le", "gt", "ge"):
    _pkt = getattr(aten, _p)
    converts(_pkt.Tensor, _pkt.Scalar)(_cmp(_p))


@converts(
    aten.where.self, aten.where.ScalarSelf, aten.where.ScalarOther, aten.where.Scalar
)
def _where(b: Builder, node: Node) -> SSAValue:
    a = b.args(node)
    return b.select(a["condition"], a["self"], a["other"], b.out_dtype(node))


def _logical(kind: str) -> Converter:
    def convert(b: Builder, node: Node) -> SSAValue:
        a = b.args(node)
        if kind == "not":
            x = a["self"]
            if (
                node.target is aten.bitwise_not.default
                and b.torch_dtype_of(x) != torch.bool
            ):
                raise Unsupported("bitwise_not is supported on bool tensors only")
            rank = b.rank_of(x)
            v = b.operand(x, BOOL, rank)
            return b.emit(lp.CmpOp("eq", v, b.splat(False, BOOL, rank)))
        x, y = a["self"], a["other"]
        if not str(node.target).startswith("aten.logical") and (
            b.torch_dtype_of(x) != torch.bool
            or (b.torch_dtype_of(y) not in (torch.bool, None))
        ):
            raise Unsupported(f"{node.target} is supported on bool tensors only")
        rank = b.rank_of(x, y)
        u, v = b.operand(x, BOOL, rank), b.operand(y, BOOL, rank)
        if kind == "and":
            return b.emit(lp.SelectOp(u, v, b.splat(False, BOOL, rank)))
        if kind == "or":
            return b.emit(lp.SelectOp(u, b.splat(True, BOOL, rank), v))
        return b.emit(lp.CmpOp("ne", u, v))

    return convert


converts(aten.logical_not.default, aten.bitwise_not.default)(_logical("not"))
converts(aten.logical_and.default, aten.bitwise_and.Tensor, aten.__and__.Tensor)(
    _logical("and")
)
converts(aten.logical_or.default, aten.bitwise_or.Tensor, aten.__or__.Tensor)(
    _logical("or")
)
converts(aten.logical_xor.default, aten.bitwise_xor.Tensor, aten.__xor__.Tensor)(
    _logical("xor")
)

_UNARY = {
    aten.exp.default: lp.ExpOp,
    aten.log.default: lp.LogOp,
    aten.sqrt.default: lp.SqrtOp,
    aten.rsqrt.default: lp.RsqrtOp,
    aten.tanh.default: lp.TanhOp,
    aten.sigmoid.default: lp.SigmoidOp,
    aten.erf.default: lp.ErfOp,
    aten.cos.default: lp.CosOp,
    aten.sin.default: lp.SinOp,
    aten.neg.default: lp.NegOp,
    aten.abs.default: lp.AbsOp,
}


@converts(*_UNARY)
def _unary(b: Builder, node: Node) -> SSAValue:
    x = b.cast(b.tensor(b.args(node)["self"]), b.out_dtype(node))
    return b.emit(_UNARY[node.target](x))


@converts(aten.square.default)
def _square(b: Builder, node: Node) -> SSAValue:
    x = b.tensor(b.args(node)["self"])
    return b.binary(lp.MulOp, x, x, b.out_dtype(node))


@converts(aten.reciprocal.default)
def _reciprocal(b: Builder, node: Node) -> SSAValue:
    return b.binary(lp.DivOp, 1.0, b.args(node)["self"], b.out_dtype(node))


@converts(aten.relu.default)
def _relu(b: Builder, node: Node) -> SSAValue:
    return b.binary(lp.MaxOp, b.args(node)["self"], 0, b.out_dtype(node))


@converts(aten.silu.default)
def _silu(b: Builder, node: Node) -> SSAValue:
    x = b.opmath(b.tensor(b.args(node)["self"]))
    return b.emit(lp.MulOp(x, b.emit(lp.SigmoidOp(x))))


@converts(aten.gelu.default)
def _gelu(b: Builder, node: Node) -> SSAValue:
    a = b.args(node)
    x = b.opmath(b.tensor(a["self"]))
    dt, rank = _elem(x), len(_shape(x))

    def c(value: float) -> SSAValue:
        return b.splat(value, dt, rank)

    if a["approximate"] == "tanh":
        cube = b.emit(lp.MulOp(b.emit(lp.MulOp(x, x)), x))
        inner = b.emit(lp.AddOp(x, b.emit(lp.MulOp(cube, c(0.044715)))))
        t = b.emit(lp.TanhOp(b.emit(lp.MulOp(inner, c(math.sqrt(2 / math.pi))))))
    elif a["approximate"] == "none":
        t = b.emit(lp.ErfOp(b.emit(lp.MulOp(x, c(1 / math.sqrt(2))))))
    else:
        raise Unsupported(f"gelu approximate={a['approximate']!r}")
    half_x = b.emit(lp.MulOp(x, c(0.5)))
    return b.emit(lp.MulOp(half_x, b.emit(lp.AddOp(t, c(1.0)))))


@converts(aten.leaky_relu.default)
def _leaky_relu(b: Builder, node: Node) -> SSAValue:
    a = b.args(node)
    dt = b.out_dtype(node)
    x = b.tensor(a["self"])
    pos = b.cmp("gt", a["self"], 0)
    return b.emit(
        lp.SelectOp(pos, x, b.binary(lp.MulOp, x, b.scalar(a["negative_slope"]), dt))
    )


def _clamp_to(b: Builder, x: Any, lo: Any, hi: Any, dt: DType) -> SSAValue:
    out = x
    if lo is not None:
        out = b.binary(lp.MaxOp, out, lo, dt)
    if hi is not None:
        out = b.binary(lp.MinOp, out, hi, dt)
    return b.cast(b.tensor(x), dt) if out is x else out


@converts(aten.clamp.default, aten.clamp.Tensor)
def _clamp(b: Builder, node: Node) -> SSAValue:
    a = b.args(node)
    return _clamp_to(b, a["self"], a["min"], a["max"], b.out_dtype(node))


@converts(aten.clamp_min.default, aten.clamp_min.Tensor)
def _clamp_min(b: Builder, node: Node) -> SSAValue:
    a = b.args(node)
    return _clamp_to(b, a["self"], a["min"], None, b.out_dtype(node))


@converts(aten.clamp_max.default, aten.clamp_max.Tensor)
def _clamp_max(b: Builder, node: Node) -> SSAValue:
    a = b.args(node)
    return _clamp_to(b, a["self"], None, a["max"], b.out_dtype(node))


@converts(aten.hardtanh.default)
def _hardtanh(b: Builder, node: Node) -> SSAValue:
    a = b.args(node)
    return _clamp_to(b, a["self"], a["min_val"], a["max_val"], b.out_dtype(node))


# -- type conversion and identity ------------------------------------------------------


@converts(
    aten.clone.default,
    aten.alias.default,
    aten.detach.default,
    aten.lift_fresh_copy.default,
    aten.contiguous.default,
)
def _identity(b: Builder, node: Node) -> SSAValue:
    return b.tensor(node.args[0])


@converts(aten._to_copy.default)
def _to_copy(b: Builder, node: Node) -> SSAValue:
    return b.cast(b.tensor(node.args[0]), b.out_dtype(node))


@converts(aten.native_dropout.default, aten.dropout.default)
def _dropout(b: Builder, node: Node) -> Any:
    a = b.args(node)
    if a["train"] and b.scalar(a["p"]) > 0:
        raise Unsupported(
            f"dropout with p={a['p']} in training mode is random",
            "call module.eval() before compiling, and pass dropout_p=0 to "
            "scaled_dot_product_attention for inference",
        )
    x = b.tensor(a["input"])
    if node.target is aten.dropout.default:
        return x
    return (x, Unusable("the dropout mask is not computed"))


# -- matmul ----------------------------------------------------------------------------


def _transposed_source(b: Builder, x: Any) -> SSAValue | None:
    """The source of a permute/t that only swaps the last two dimensions."""
    if not isinstance(x, Node) or x.op != "call_function":
        return None
    if x.target is aten.t.default:
        src = x.args[0]
    elif x.target is aten.permute.default:
        src, perm = x.args[0], list(x.args[1])
        rank = len(perm)
        want = [*range(rank - 2), rank - 1, rank - 2]
        if rank < 2 or [p % rank for p in perm] != want:
            return None
    elif x.target is aten.transpose.int:
        src = x.args[0]
        fake = b.fake(src) if isinstance(src, Node) else None
        if fake is None:
            return None
        rank = fake.ndim
        if rank < 2 or sorted(_norm(d, rank) for d in x.args[1:3]) != [
            rank - 2,
            rank - 1,
        ]:
            return None
    else:
        return None
    if not b.is_tensor(src) or len(_shape(b.tensor(src))) < 2:
        return None
    return b.tensor(src)


def _matmul(b: Builder, x: Any, w: Any, dt: DType) -> SSAValue:
    lhs = b.cast(b.tensor(x), dt)
    src = _transposed_source(b, w)
    if src is not None:
        return b.emit(lp.MatmulOp(lhs, b.cast(src, dt), transpose_b=True))
    return b.emit(lp.MatmulOp(lhs, b.cast(b.tensor(w), dt)))


@converts(aten.mm.default, aten.bmm.default)
def _mm(b: Builder, node: Node) -> SSAValue:
    a = b.args(node)
    return _matmul(b, a["self"], a["mat2"], b.out_dtype(node))


@converts(aten.addmm.default)
def _addmm(b: Builder, node: Node) -> SSAValue:
    a = b.args(node)
    dt = b.out_dtype(node)
    prod = _matmul(b, a["mat1"], a["mat2"], dt)
    if b.scalar(a["alpha"]) != 1:
        prod = b.binary(lp.MulOp, prod, b.scalar(a["alpha"]), dt)
    bias: Any = a["self"]
    beta = b.scalar(a["beta"])
    if beta == 0:
        return prod
    if beta != 1:
        bias = b.binary(lp.MulOp, bias, beta, dt)
    return b.binary(lp.AddOp, prod, bias, dt)


@converts(aten.linear.default)
def _linear(b: Builder, node: Node) -> SSAValue:
    """x @ W.T + bias as `lp.matmul %x, %W transpose_b` on the weight itself."""
    a = b.args(node)
    dt = b.out_dtype(node)
    x, w = b.cast(b.tensor(a["input"]), dt), b.cast(b.tensor(a["weight"]), dt)
    if len(_shape(w)) != 2:
        raise Unsupported(f"linear with a weight of rank {len(_shape(w))}")
    squeeze = len(_shape(x)) == 1
    if squeeze:
        x = b.reshape(x, (1, *b.dims(x)))
    out = b.emit(lp.MatmulOp(x, w, transpose_b=True))
    if a["bias"] is not None:
        out = b.binary(lp.AddOp, out, a["bias"], dt)
    if squeeze:
        out = b.reshape(out, b.dims(out)[1:])
    return out


# -- reductions and normalizations -----------------------------------------------------


def _reduce(cls: type, kind: str = "") -> Converter:
    def convert(b: Builder, node: Node) -> Any:
        a = b.args(node)
        x = b.tensor(a["self"])
        rank = len(_shape(x))
        dims = _dim_list(b, a.get("dim"), rank)
        keep = bool(a.get("keepdim", False))
        dt = b.out_dtype(node, 0 if kind == "values" else None)
        x = b.cast(x, BOOL if kind == "bool" else dt)
        out = x if rank == 0 else b.emit(cls(x, dims, keep))
        if kind == "values":
            return (out, Unusable("the indices of max/min are not computed"))
        return out

    return convert


converts(aten.sum.dim_IntList, aten.sum.default)(_reduce(lp.ReduceSumOp))
converts(aten.mean.dim, aten.mean.default)(_reduce(lp.ReduceMeanOp))
converts(aten.amax.default, aten.max.default)(_reduce(lp.ReduceMaxOp))
converts(aten.amin.default, aten.min.default)(_reduce(lp.ReduceMinOp))
converts(aten.max.dim)(_reduce(lp.ReduceMaxOp, "values"))
converts(aten.min.dim)(_reduce(lp.ReduceMinOp, "values"))
converts(aten.any.dim, aten.any.dims, aten.any.default)(_reduce(lp.ReduceMaxOp, "bool"))
converts(aten.all.dim, aten.all.dims, aten.all.default)(_reduce(lp.ReduceMinOp, "bool"))


@converts(aten.var.correction, aten.var.dim, aten.std.correction, aten.std.dim)
def _var(b: Builder, node: Node) -> SSAValue:
    a = b.args(node)
    x = b.opmath(b.tensor(a["self"]))
    dims = _dim_list(b, a["dim"], len(_shape(x)))
    sizes = [b.dims(x)[d] for d in dims]
    if not all(isinstance(n, int) for n in sizes):
        raise Unsupported("var/std over a dynamic dimension")
    count = math.prod(sizes)  # type: ignore[arg-type]
    if "correction" in a:
        corr = 1 if a["correction"] is None else b.scalar(a["correction"])
    else:
        corr = 1 if a["unbiased"] else 0
    mean = b.emit(lp.ReduceMeanOp(x, dims, True))
    diff = b.emit(lp.SubOp(x, mean))
    squares = b.emit(lp.MulOp(diff, diff))
    total = b.emit(lp.ReduceSumOp(squares, dims, bool(a["keepdim"])))
    n = b.splat(max(count - corr, 0), _elem(x), len(_shape(total)))
    out = b.emit(lp.DivOp(total, n))
    if "std" in str(node.target):
        out = b.emit(lp.SqrtOp(out))
    return out


def _softmax(cls: type) -> Converter:
    def convert(b: Builder, node: Node) -> SSAValue:
        args = node.args
        x = b.opmath(b.tensor(args[0]))
        return b.emit(cls(x, _norm(b.int(args[1]), len(_shape(x)))))

    return convert


converts(aten._softmax.default, aten.softmax.int)(_softmax(lp.SoftmaxOp))
converts(aten._log_softmax.default, aten.log_softmax.int)(_softmax(lp.LogSoftmaxOp))


@converts(aten.native_layer_norm.default)
def _layer_norm(b: Builder, node: Node) -> tuple[SSAValue, SSAValue, SSAValue]:
    a = b.args(node)
    x = b.opmath(b.tensor(a["input"]))
    rank = len(_shape(x))
    n = len(a["normalized_shape"])
    dims = list(range(rank - n, rank))
    dt = _elem(x)
    mean = b.emit(lp.ReduceMeanOp(x, dims, True))
    xc = b.emit(lp.SubOp(x, mean))
    var = b.emit(lp.ReduceMeanOp(b.emit(lp.MulOp(xc, xc)), dims, True))
    eps = b.splat(b.scalar(a["eps"]), dt, rank)
    rstd = b.emit(lp.RsqrtOp(b.emit(lp.AddOp(var, eps))))
    out = b.emit(lp.MulOp(xc, rstd))
    if a["weight"] is not None:
        out = b.binary(lp.MulOp, out, a["weight"], dt)
    if a["bias"] is not None:
        out = b.binary(lp.AddOp, out, a["bias"], dt)
    return out, mean, rstd


@converts(aten._native_batch_norm_legit_no_training.default)
def _batch_norm(b: Builder, node: Node) -> tuple[Any, ...]:
    """Folded at import time into x * scale + shift (per channel, dim 1)."""
    a = b.args(node)
    x = b.opmath(b.tensor(a["input"]))
    rank = len(_shape(x))
    if rank < 2:
        raise Unsupported("batch norm needs an input of rank >= 2")
    stats = {}
    for key in ("weight", "bias", "running_mean", "running_var"):
        v = a[key]
        if v is None:
            stats[key] = None
            continue
        owner = b.tensor(v).owner
        if not isinstance(owner, lp.ConstantOp):
            raise Unsupported(
                f"batch norm whose {key} is computed, not a parameter/buffer"
            )
        stats[key] = owner.values().astype(np.float64)
    eps = float(b.scalar(a["eps"]))
    var = stats["running_var"]
    mean = stats["running_mean"]
    scale = 1.0 / np.sqrt(var + eps)
    if stats["weight"] is not None:
        scale = scale * stats["weight"]
    shift = -mean * scale
    if stats["bias"] is not None:
        shift = shift + stats["bias"]
    c = scale.shape[0]
    shape = (1, c) + (1,) * (rank - 2)
    dt = _elem(x)
    s = b.const(scale.reshape(shape), dt)  # the codec rounds float64 once
    t = b.const(shift.reshape(shape), dt)
    _name_like(
        s, a["weight"] if a["weight"] is not None else a["running_var"], b, "bn_scale"
    )
    _name_like(
        t, a["bias"] if a["bias"] is not None else a["running_mean"], b, "bn_shift"
    )
    out = b.emit(lp.AddOp(b.emit(lp.MulOp(x, s)), t))
    gone = Unusable("batch norm's saved statistics are not computed")
    return out, gone, gone


def _name_like(v: SSAValue, source: Any, b: Builder, suffix: str) -> None:
    """Name a folded constant after the module of the parameter it came from."""
    owner = b.tensor(source).owner
    name = owner.attributes.get("lp.name") if isinstance(owner, Operation) else None
    if isinstance(name, StringAttr) and isinstance(v.owner, Operation):
        prefix = name.data.rsplit(".", 1)[0]
        v.owner.attributes["lp.name"] = StringAttr(f"{prefix}.{suffix}")


@converts(aten.cumsum.default)
def _cumsum(b: Builder, node: Node) -> SSAValue:
    a = b.args(node)
    x = b.cast(b.tensor(a["self"]), b.out_dtype(node))
    return b.emit(lp.CumsumOp(x, _norm(b.int(a["dim"]), len(_shape(x)))))


# -- indexing --------------------------------------------------------------------------


@converts(aten.embedding.default)
def _embedding(b: Builder, node: Node) -> SSAValue:
    a = b.args(node)
    return b.emit(lp.TakeOp(b.tensor(a["weight"]), b.tensor(a["indices"]), 0))


@converts(aten.index_select.default)
def _index_select(b: Builder, node: Node) -> SSAValue:
    a = b.args(node)
    x = b.tensor(a["self"])
    d = _norm(b.int(a["dim"]), len(_shape(x)))
    idx = b.tensor(a["index"])
    out = b.emit(lp.TakeOp(x, idx, d))
    if len(_shape(idx)) == 0:  # index_select keeps the dimension
        out = b.reshape(out, b.out_dims(node))
    return out


@converts(aten.index.Tensor)
def _index(b: Builder, node: Node) -> SSAValue:
    a = b.args(node)
    x = b.tensor(a["self"])
    indices = list(a["indices"])
    used = [i for i, t in enumerate(indices) if t is not None]
    if len(used) != 1:
        raise Unsupported(
            f"indexing with {len(used)} index tensors; lpcc supports one",
            "index one dimension at a time (x[i][:, j]) or use torch.gather",
        )
    d = used[0]
    idx = indices[d]
    if b.torch_dtype_of(idx) not in (torch.int64, torch.int32):
        raise Unsupported(
            "indexing with a boolean mask (the result size depends on the data)",
            "use torch.where(mask, x, 0) instead",
        )
    return b.emit(lp.TakeOp(x, b.tensor(idx), d))


@converts(aten.gather.default)
def _gather(b: Builder, node: Node) -> SSAValue:
    a = b.args(node)
    x, idx = b.tensor(a["self"]), b.tensor(a["index"])
    d = _norm(b.int(a["dim"]), len(_shape(x)))
    xd, id_ = b.dims(x), b.dims(idx)
    if any(i != d and xs != js for i, (xs, js) in enumerate(zip(xd, id_, strict=True))):
        # torch.gather allows indices smaller than the input off `dim`
        sizes = [
            xs if i == d else js for i, (xs, js) in enumerate(zip(xd, id_, strict=True))
        ]
        x = b.emit(lp.SliceOp(x, [0] * len(xd), _static(sizes)), sizes)
    return b.emit(lp.GatherOp(x, idx, d))


# -- shapes ----------------------------------------------------------------------------


@converts(
    aten.view.default,
    aten._unsafe_view.default,
    aten.reshape.default,
    aten.squeeze.dim,
    aten.squeeze.dims,
    aten.squeeze.default,
    aten.unsqueeze.default,
    aten.flatten.using_ints,
)
def _reshape(b: Builder, node: Node) -> SSAValue:
    return b.reshape(b.tensor(node.args[0]), b.out_dims(node))


@converts(aten.permute.default)
def _permute(b: Builder, node: Node) -> SSAValue:
    x = b.tensor(node.args[0])
    rank = len(_shape(x))
    perm = [_norm(b.int(p), rank) for p in node.args[1]]
    if perm == list(range(rank)):
        return x
    return b.emit(lp.PermuteOp(x, perm))


@converts(aten.transpose.int)
def _transpose(b: Builder, node: Node) -> SSAValue:
    x = b.tensor(node.args[0])
    rank = len(_shape(x))
    i, j = (_norm(b.int(d), rank) for d in node.args[1:3])
    perm = list(range(rank))
    perm[i], perm[j] = perm[j], perm[i]
    return x if i == j else b.emit(lp.PermuteOp(x, perm))


@converts(aten.t.default)
def _t(b: Builder, node: Node) -> SSAValue:
    x = b.tensor(node.args[0])
    return x if len(_shape(x)) < 2 else b.emit(lp.PermuteOp(x, [1, 0]))


@converts(aten.expand.default)
def _expand(b: Builder, node: Node) -> SSAValue:
    return b.broadcast(b.tensor(node.args[0]), b.out_dims(node))


@converts(aten.repeat.default)
def _repeat(b: Builder, node: Node) -> SSAValue:
    x = b.tensor(node.args[0])
    reps = [b.int(r) for r in node.args[1]]
    src = (1,) * (len(reps) - len(_shape(x))) + b.dims(x)
    x = b.reshape(x, src)
    inter: list[Dim] = []
    wide: list[Dim] = []
    for r, n in zip(reps, src, strict=True):
        inter += [1, n]
        wide += [r, n]
    y = b.broadcast(b.reshape(x, inter), wide)
    return b.reshape(y, b.out_dims(node))


def _offset(b: Builder, x: SSAValue, d: int, start: Any, default: int) -> int | None:
    """A slice bound as an index in [0, size], or None if it is dynamic."""
    if start is None:
        return default
    s = b.int(start)
    n = b.dims(x)[d]
    if s < 0:
        if not isinstance(n, int):
            return None
        s += n
    if isinstance(n, int):
        s = min(max(s, 0), n)
    return max(s, 0)


@converts(aten.slice.Tensor)
def _slice(b: Builder, node: Node) -> SSAValue:
    a = b.args(node)
    x = b.tensor(a["self"])
    rank = len(_shape(x))
    d = _norm(b.int(a["dim"]), rank)
    step = b.int(a["step"])
    out_dims = b.out_dims(node)
    if b.dims(x) == out_dims:
        return x
    off = _offset(b, x, d, a["start"], 0)
    if off is None:
        raise Unsupported(
            "a slice with a negative start on a dynamic dimension",
            "slice from the front (x[:, :n]) or make the dimension static",
        )
    offsets = [0] * rank
    offsets[d] = off
    strides = [1] * rank
    strides[d] = step
    return b.emit(lp.SliceOp(x, offsets, _static(out_dims), strides), out_dims)


@converts(aten.select.int)
def _select(b: Builder, node: Node) -> SSAValue:
    a = b.args(node)
    x = b.tensor(a["self"])
    rank = len(_shape(x))
    d = _norm(b.int(a["dim"]), rank)
    i = b.int(a["index"])
    n = b.dims(x)[d]
    if i < 0:
        if not isinstance(n, int):
            raise Unsupported("select with a negative index on a dynamic dimension")
        i += n
    sizes = list(b.dims(x))
    sizes[d] = 1
    offsets = [0] * rank
    offsets[d] = i
    part = b.emit(lp.SliceOp(x, offsets, _static(sizes)), sizes)
    return b.reshape(part, b.out_dims(node))


def _split_parts(b: Builder, node: Node, x: SSAValue, d: int) -> tuple[SSAValue, ...]:
    outs = []
    off = 0
    for i, fake in enumerate(b.fake(node)):
        dims = _dims_from_fake(fake)
        offsets = [0] * len(dims)
        offsets[d] = off
        if dims == b.dims(x):
            outs.append(x)
        else:
            outs.append(b.emit(lp.SliceOp(x, offsets, _static(dims)), dims))
        n = dims[d]
        if not isinstance(n, int):
            if i + 1 < len(b.fake(node)):
                raise Unsupported("split into dynamic-size pieces")
            break
        off += n
    return tuple(outs)


@converts(aten.split.Tensor, aten.split_with_sizes.default)
def _split(b: Builder, node: Node) -> tuple[SSAValue, ...]:
    a = b.args(node)
    x = b.tensor(a["self"])
    return _split_parts(b, node, x, _norm(b.int(a["dim"]), len(_shape(x))))


@converts(aten.unbind.int)
def _unbind(b: Builder, node: Node) -> tuple[SSAValue, ...]:
    a = b.args(node)
    x = b.tensor(a["self"])
    d = _norm(b.int(a["dim"]), len(_shape(x)))
    n = b.dims(x)[d]
    if not isinstance(n, int):
        raise Unsupported("unbind along a dynamic dimension")
    outs = []
    for i in range(n):
        sizes = list(b.dims(x))
        sizes[d] = 1
        offsets = [0] * len(sizes)
        offsets[d] = i
        part = b.emit(lp.SliceOp(x, offsets, _static(sizes)), sizes)
        outs.append(b.reshape(part, b.out_dims(node, i)))
    return tuple(outs)


@converts(aten.cat.default)
def _cat(b: Builder, node: Node) -> SSAValue:
    a = b.args(node)
    dt = b.out_dtype(node)
    out_dims = b.out_dims(node)
    parts = []
    for t in a["tensors"]:
        v = b.tensor(t)
        if len(_shape(v)) == 1 and _shape(v)[0] == 0 and len(out_dims) != 1:
            continue  # torch's legacy: empty 1-D tensors are skipped
        parts.append(b.cast(v, dt))
    d = _norm(b.int(a["dim"]), len(out_dims))
    if len(parts) == 1:
        return parts[0]
    return b.emit(lp.ConcatOp(parts, d), out_dims)


# -- creation --------------------------------------------------------------------------


def _filled(b: Builder, node: Node, value: Any) -> SSAValue:
    dt = b.out_dtype(node)
    dims = b.out_dims(node)
    if all(isinstance(d, int) for d in dims):
        return b.full(b.scalar(value), dt, dims)  # type: ignore[arg-type]
    return b.broadcast(b.splat(b.scalar(value), dt, len(dims)), dims)


@converts(aten.full.default, aten.full_like.default, aten.new_full.default)
def _full(b: Builder, node: Node) -> SSAValue:
    return _filled(b, node, b.args(node)["fill_value"])


@converts(
    aten.zeros.default,
    aten.zeros_like.default,
    aten.new_zeros.default,
    aten.empty.memory_format,
    aten.empty_like.default,
    aten.new_empty.default,
)
def _zeros(b: Builder, node: Node) -> SSAValue:
    return _filled(b, node, 0)


@converts(aten.ones.default, aten.ones_like.default, aten.new_ones.default)
def _ones(b: Builder, node: Node) -> SSAValue:
    return _filled(b, node, 1)


@converts(aten.fill.Scalar)
def _fill(b: Builder, node: Node) -> SSAValue:
    return _filled(b, node, b.args(node)["value"])


@converts(aten.scalar_tensor.default)
def _scalar_tensor(b: Builder, node: Node) -> SSAValue:
    return b.full(b.scalar(b.args(node)["s"]), b.out_dtype(node), ())


@converts(aten.arange.start_step, aten.arange.start, aten.arange.default)
def _arange(b: Builder, node: Node) -> SSAValue:
    """start + step * iota, in the result type (dynamic length allowed)."""
    a = b.args(node)
    dt = b.out_dtype(node)
    dims = b.out_dims(node)
    start = 0 if node.target is aten.arange.default else b.scalar(a["start"])
    step = b.scalar(a["step"]) if "step" in a else 1
    iota = b.emit(lp.IotaOp(dt, _static(dims), 0), dims)
    out = iota
    if step != 1:
        out = b.emit(lp.MulOp(out, b.splat(step, dt, 1)))
    if start != 0:
        out = b.emit(lp.AddOp(out, b.splat(start, dt, 1)))
    return out


# -- convolution and pooling -----------------------------------------------------------


def _pair(b: Builder, v: Any, default: int, what: str) -> list[int]:
    if v is None or (isinstance(v, list | tuple) and len(v) == 0):
        return [default, default]
    vals = [b.int(i) for i in v] if isinstance(v, list | tuple) else [b.int(v)]
    if len(vals) == 1:
        vals *= 2
    if len(vals) != 2:
        raise Unsupported(f"{what} {vals}: lpcc supports 2-D windows only")
    return vals


@converts(aten.convolution.default, aten.conv2d.default)
def _convolution(b: Builder, node: Node) -> SSAValue:
    a = b.args(node)
    a.setdefault("transposed", False)
    x, w = b.tensor(a["input"]), b.tensor(a["weight"])
    if len(_shape(x)) != 4 or len(_shape(w)) != 4:
        raise Unsupported(
            f"a {len(_shape(w)) - 2}-D convolution (input rank {len(_shape(x))}); "
            "lpcc supports batched 2-D convolution (NCHW)",
            "use conv2d on a batched NCHW input (unsqueeze a conv1d input)",
        )
    if a["transposed"]:
        raise Unsupported("transposed convolution (conv_transpose2d)")
    dt = b.out_dtype(node)
    bias = None if a["bias"] is None else b.cast(b.tensor(a["bias"]), dt)
    return b.emit(
        lp.Conv2dOp(
            b.cast(x, dt),
            b.cast(w, dt),
            bias,
            stride=_pair(b, a["stride"], 1, "stride"),
            padding=_pair(b, a["padding"], 0, "padding"),
            dilation=_pair(b, a["dilation"], 1, "dilation"),
            groups=b.int(a["groups"]),
        ),
        b.out_dims(node, 0 if isinstance(b.fake(node), tuple) else None),
    )


def _batched(b: Builder, x: SSAValue) -> tuple[SSAValue, bool]:
    if len(_shape(x)) == 3:
        return b.reshape(x, (1, *b.dims(x))), True
    if len(_shape(x)) != 4:
        raise Unsupported(f"2-D pooling of a rank-{len(_shape(x))} input")
    return x, False


@converts(aten.max_pool2d_with_indices.default, aten.max_pool2d.default)
def _max_pool(b: Builder, node: Node) -> Any:
    a = b.args(node)
    x, unbatched = _batched(b, b.opmath(b.tensor(a["self"])))
    kernel = _pair(b, a["kernel_size"], 1, "kernel_size")
    stride = _pair(b, a["stride"], 0, "stride")
    op = lp.MaxPool2dOp(
        x,
        kernel,
        kernel if stride == [0, 0] else stride,
        _pair(b, a["padding"], 0, "padding"),
        _pair(b, a["dilation"], 1, "dilation"),
        bool(a["ceil_mode"]),
    )
    index = 0 if node.target is aten.max_pool2d_with_indices.default else None
    dims = b.out_dims(node, index)
    out = b.emit(op, (1, *dims) if unbatched else dims)
    if unbatched:
        out = b.reshape(out, dims)
    if index is None:
        return out
    return (out, Unusable("the indices output of max_pool2d is not supported"))


@converts(aten.avg_pool2d.default)
def _avg_pool(b: Builder, node: Node) -> SSAValue:
    a = b.args(node)
    if a["divisor_override"] is not None:
        raise Unsupported("avg_pool2d with divisor_override")
    x, unbatched = _batched(b, b.opmath(b.tensor(a["self"])))
    kernel = _pair(b, a["kernel_size"], 1, "kernel_size")
    stride = _pair(b, a["stride"], 0, "stride")
    dims = b.out_dims(node)
    op = lp.AvgPool2dOp(
        x,
        kernel,
        kernel if stride == [0, 0] else stride,
        _pair(b, a["padding"], 0, "padding"),
        bool(a["ceil_mode"]),
        bool(a["count_include_pad"]),
    )
    out = b.emit(op, (1, *dims) if unbatched else dims)
    return b.reshape(out, dims) if unbatched else out


@converts(aten._adaptive_avg_pool2d.default, aten.adaptive_avg_pool2d.default)
def _adaptive_avg_pool(b: Builder, node: Node) -> SSAValue:
    a = b.args(node)
    x, unbatched = _batched(b, b.opmath(b.tensor(a["self"])))
    oh, ow = _pair(b, a["output_size"], 1, "output_size")
    dims = b.out_dims(node)
    h, w = b.dims(x)[2:]
    if (oh, ow) == (1, 1):
        out = b.emit(lp.ReduceMeanOp(x, [2, 3], True))
    elif isinstance(h, int) and isinstance(w, int) and h % oh == 0 and w % ow == 0:
        k = [h // oh, w // ow]
        out = b.emit(lp.AvgPool2dOp(x, k, k), (1, *dims) if unbatched else dims)
    else:
        raise Unsupported(
            f"adaptive_avg_pool2d from {h}x{w} to {oh}x{ow}: lpcc needs the "
            "output size to divide the input size (or 1x1)",
            "pick an input size that the output size divides",
        )
    return b.reshape(out, dims) if unbatched else out


# -- tuples ----------------------------------------------------------------------------


@converts(operator.getitem)
def _getitem(b: Builder, node: Node) -> Any:
    src, index = node.args
    parts = b.values.get(src)  # type: ignore[arg-type]
    if not isinstance(parts, tuple | list):
        raise Unsupported(f"getitem on {src!r}, which is not a tuple of tensors")
    part = parts[index]  # type: ignore[index]
    if isinstance(part, Unusable):
        if not node.users:
            return None
        raise Unsupported(
            part.reason,
            "use only output 0 (e.g. max_pool2d(..., return_indices=False), "
            "x.max(dim).values, x.amax(dim))",
        )
    return part
