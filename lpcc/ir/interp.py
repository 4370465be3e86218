"""The NumPy reference interpreter: the semantics of every lp op.

Each op class has exactly one implementation, registered with `@impl(Op)`
(as xDSL's `register_impls`): a function `(op, args, frame) -> ndarray`. It is
the oracle that the torch frontend is checked against (torch eager == this)
and that passes and backends are checked by (before == after, backend ==
this).

Tensors are held in their *value domain*: `DType.value_dtype` (float32 for
f32 and every narrower float, the smallest NumPy integer for ints, bool for
i1). An implementation computes in float32 (float64 where the op's docstring
asks for exact math) and `run_op` then rounds the result once to the result
element type with the type's own codec (`DType.to_values`), so an f16 or f8
result holds exactly representable values. Constants, casts and
(de)quantization go through `lpcc.ir.dtypes`; nothing here re-implements a
codec.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Block, Operation, SSAValue

from lpcc.errors import IRError
from lpcc.ir.dialect import lowp
from lpcc.ir.dialect import ops as lp
from lpcc.ir.dialect.fused import FusedOp, YieldOp
from lpcc.ir.dtypes import DType
from lpcc.ir.symbolic import ShapeError, bind, evaluate_shape

Impl = Callable[[Any, list[np.ndarray], "Frame"], np.ndarray]
IMPLS: dict[type[Operation], Impl] = {}
_F = TypeVar("_F", bound=Impl)


@dataclass
class Frame:
    """What an implementation may ask besides its operands: concrete sizes."""

    env: dict[str, int] = field(default_factory=dict)

    def shape(self, value: SSAValue) -> tuple[int, ...]:
        """The concrete shape of `value` (its `?` sizes evaluated in `env`)."""
        return evaluate_shape(lp.value_dims(value), self.env)


def impl(*classes: type[Operation]) -> Callable[[_F], _F]:
    """Register the reference implementation of one or more op classes."""

    def register(fn: _F) -> _F:
        for cls in classes:
            if cls in IMPLS:
                raise IRError(f"{cls.name} already has a reference implementation")
            IMPLS[cls] = fn
        return fn

    return register


def elem(value: SSAValue) -> DType:
    """The lp element type of `value` (`ops.value_elem`, under the name impls use)."""
    return lp.value_elem(value)


def run_op_results(
    op: Operation, args: Sequence[np.ndarray], env: dict[str, int] | None = None
) -> list[np.ndarray]:
    """Run one op (any number of results) on value-domain arrays.

    Each result is rounded to its own type's domain.
    """
    fn = IMPLS.get(type(op))
    if fn is None:
        raise IRError(f"{op.name}: the reference interpreter has no implementation")
    frame = Frame({} if env is None else env)
    try:
        with np.errstate(all="ignore"):
            out = fn(op, list(args), frame)
    except (ValueError, IndexError, TypeError, ShapeError) as err:
        raise IRError(f"{op.name}: {err}") from err
    outs = list(out) if isinstance(out, list | tuple) else [out]
    if len(outs) != len(op.results):
        raise IRError(
            f"{op.name}: the implementation gave {len(outs)} values for "
            f"{len(op.results)} results"
        )
    return [elem(r).to_values(o) for r, o in zip(op.results, outs, strict=True)]


def run_op(
    op: Operation, args: Sequence[np.ndarray], env: dict[str, int] | None = None
) -> np.ndarray:
    """Run one single-result op on value-domain arrays; the result is in its
    type's domain. Ops with several results go through `run_op_results`."""
    if len(op.results) != 1:
        raise IRError(f"{op.name}: has {len(op.results)} results; call run_op_results")
    return run_op_results(op, args, env)[0]


def run_block(
    block: Block, inputs: Sequence[np.ndarray], env: dict[str, int], where: str
) -> list[np.ndarray]:
    """Bind `block`'s arguments to `inputs`, run its ops in order, and return
    the values its terminator (func.return or lp.yield) passes on."""
    values: dict[SSAValue, np.ndarray] = dict(zip(block.args, inputs, strict=True))
    for op in block.ops:
        if isinstance(op, func.ReturnOp | YieldOp):
            return [values[v] for v in op.operands]
        results = run_op_results(op, [values[v] for v in op.operands], env)
        values.update(zip(op.results, results, strict=True))
    raise IRError(f"{where}: no terminator (func.return or lp.yield)")


def run_function(
    fn: func.FuncOp,
    inputs: Sequence[np.ndarray],
    env: dict[str, int] | None = None,
) -> list[np.ndarray]:
    """Run `fn` on value-domain inputs; dynamic sizes bind from their shapes."""
    block = fn.body.block
    if len(inputs) != len(block.args):
        raise IRError(
            f"@{fn.sym_name.data}: takes {len(block.args)} inputs, got {len(inputs)}"
        )
    env = {} if env is None else env
    args = []
    for i, (arg, x) in enumerate(zip(block.args, inputs, strict=True)):
        x = np.asarray(x)
        try:
            bind(lp.value_dims(arg), x.shape, env, f"input #{i}")
        except ShapeError as err:
            raise IRError(f"@{fn.sym_name.data}: {err}") from None
        args.append(elem(arg).to_values(x))
    return run_block(block, args, env, f"@{fn.sym_name.data}")


def run_module(
    module: ModuleOp, inputs: Sequence[np.ndarray], name: str = "main"
) -> list[np.ndarray]:
    """Run the function `name` of `module`."""
    for op in module.ops:
        if isinstance(op, func.FuncOp) and op.sym_name.data == name:
            return run_function(op, inputs)
    raise IRError(f"the module has no function @{name}")


# -- fused regions -----------------------------------------------------------------


@impl(FusedOp)
def _fused(op: FusedOp, args: list[np.ndarray], f: Frame) -> list[np.ndarray]:
    """The body's ops, in order, on the operands: fusing never changes the math."""
    return run_block(op.body.block, args, f.env, f"lp.fused {op.kind.data}")


@impl(YieldOp)
def _yield(op: YieldOp, args: list[np.ndarray], f: Frame) -> np.ndarray:
    """Never run alone: `run_block` returns a yield's operands as the region's."""
    raise IRError("lp.yield only ends an lp.fused body; run the lp.fused op")


# -- constants ---------------------------------------------------------------------


@impl(lp.ConstantOp)
def _constant(op: lp.ConstantOp, args: list[np.ndarray], f: Frame) -> np.ndarray:
    return op.dtype.values(op.codes())


@impl(lp.IotaOp)
def _iota(op: lp.IotaOp, args: list[np.ndarray], f: Frame) -> np.ndarray:
    shape = f.shape(op.result)
    d = op.dim.data
    line = np.arange(shape[d]).reshape([-1 if i == d else 1 for i in range(len(shape))])
    return np.broadcast_to(line, shape)


# -- elementwise -------------------------------------------------------------------


def _int_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Integer division rounding toward zero (C, and lp.div on ints)."""
    if np.any(b == 0):
        raise ValueError("integer division by zero")
    if a.dtype.itemsize < 8:  # np.abs(int8 -128) wraps: divide exactly, saturate
        a, b = a.astype(np.int64), b.astype(np.int64)
    q = np.abs(a) // np.abs(b)
    return np.where((a < 0) ^ (b < 0), -q, q)


def _binary(np_fn: Callable[..., np.ndarray]) -> Impl:
    def run(op: Any, args: list[np.ndarray], f: Frame) -> np.ndarray:
        a, b = args
        if a.dtype.kind in "iu" and a.dtype.itemsize < 8:  # exact, then saturate
            a, b = a.astype(np.int64), b.astype(np.int64)
        return np_fn(a, b)

    return run


impl(lp.AddOp)(_binary(np.add))
impl(lp.SubOp)(_binary(np.subtract))
impl(lp.MulOp)(_binary(np.multiply))
impl(lp.MaxOp)(_binary(np.maximum))
impl(lp.MinOp)(_binary(np.minimum))


@impl(lp.DivOp)
def _div(op: lp.DivOp, args: list[np.ndarray], f: Frame) -> np.ndarray:
    a, b = args
    return _int_div(a, b) if a.dtype.kind in "iu" else np.true_divide(a, b)


@impl(lp.PowOp)
def _pow(op: lp.PowOp, args: list[np.ndarray], f: Frame) -> np.ndarray:
    a, b = args
    if a.dtype.kind in "iu" and np.any(b < 0):
        raise ValueError("integer power with a negative exponent")
    return np.power(a, b)


_CMP = {
    "eq": np.equal,
    "ne": np.not_equal,
    "lt": np.less,
    "le": np.less_equal,
    "gt": np.greater,
    "ge": np.greater_equal,
}


@impl(lp.CmpOp)
def _cmp(op: lp.CmpOp, args: list[np.ndarray], f: Frame) -> np.ndarray:
    return _CMP[op.predicate.data](args[0], args[1])


def _erf(x: np.ndarray) -> np.ndarray:
    """erf, exact to double precision (math.erf per element; no SciPy needed)."""
    return np.frompyfunc(math.erf, 1, 1)(x.astype(np.float64)).astype(np.float64)


_UNARY: dict[type[Operation], Callable[[np.ndarray], np.ndarray]] = {
    lp.NegOp: np.negative,
    lp.AbsOp: np.abs,
    lp.ExpOp: np.exp,
    lp.LogOp: np.log,
    lp.SqrtOp: np.sqrt,
    lp.RsqrtOp: lambda x: 1 / np.sqrt(x),
    lp.TanhOp: np.tanh,
    lp.SigmoidOp: lambda x: 1 / (1 + np.exp(-x)),
    lp.ErfOp: _erf,
    lp.CosOp: np.cos,
    lp.SinOp: np.sin,
}


def _unary(op: Any, args: list[np.ndarray], f: Frame) -> np.ndarray:
    return _UNARY[type(op)](args[0])


impl(*_UNARY)(_unary)


@impl(lp.SelectOp)
def _select(op: lp.SelectOp, args: list[np.ndarray], f: Frame) -> np.ndarray:
    return np.where(args[0], args[1], args[2])


# -- conversions and quantization ---------------------------------------------------


@impl(lp.CastOp)
def _cast(op: lp.CastOp, args: list[np.ndarray], f: Frame) -> np.ndarray:
    return args[0]  # run_op rounds to the result type with its codec


def _expand_blocks(v: np.ndarray, block: Sequence[int], shape: Sequence[int]):
    """Each scale (or zero) repeated over its block, cropped to `shape`."""
    for axis, b in enumerate(block):
        if b > 1:
            v = np.repeat(v, b, axis=axis)
    return v[tuple(slice(0, n) for n in shape)]


@impl(lp.QuantizeOp)
def _quantize(op: lp.QuantizeOp, args: list[np.ndarray], f: Frame) -> np.ndarray:
    x = args[0].astype(np.float64)
    block = lp._array(op.block)
    q = x / _expand_blocks(args[1].astype(np.float64), block, x.shape)
    if len(args) > 2:
        q = q + _expand_blocks(args[2].astype(np.float64), block, x.shape)
    return q  # encoded (rounded, saturated) to the result type by run_op


@impl(lp.DequantizeOp)
def _dequantize(op: lp.DequantizeOp, args: list[np.ndarray], f: Frame) -> np.ndarray:
    q = args[0].astype(np.float64)
    block = lp._array(op.block)
    if len(args) > 2:
        q = q - _expand_blocks(args[2].astype(np.float64), block, q.shape)
    return q * _expand_blocks(args[1].astype(np.float64), block, q.shape)


# -- contraction ---------------------------------------------------------------------


@impl(lp.MatmulOp)
def _matmul(op: lp.MatmulOp, args: list[np.ndarray], f: Frame) -> np.ndarray:
    a, b = args
    if op.transpose_b is not None:
        b = np.swapaxes(b, -1, -2)
    if a.dtype.kind in "iub":
        return np.matmul(a.astype(np.int64), b.astype(np.int64))
    return np.matmul(a.astype(np.float32), b.astype(np.float32))


# -- reductions and normalizations ------------------------------------------------


def _reduce(np_fn: Callable[..., np.ndarray]) -> Impl:
    def run(op: Any, args: list[np.ndarray], f: Frame) -> np.ndarray:
        x = args[0]
        dims = lp._array(op.dims)
        keep = op.keepdim is not None
        if x.dtype.kind == "f" and np_fn in (np.sum, np.mean):
            return np_fn(x, axis=dims, keepdims=keep, dtype=np.float32)
        if x.dtype.kind in "iu" and np_fn is np.sum:
            return np_fn(x, axis=dims, keepdims=keep, dtype=np.int64)
        return np_fn(x, axis=dims, keepdims=keep)

    return run


impl(lp.ReduceSumOp)(_reduce(np.sum))
impl(lp.ReduceMaxOp)(_reduce(np.max))
impl(lp.ReduceMinOp)(_reduce(np.min))
impl(lp.ReduceMeanOp)(_reduce(np.mean))


@impl(lp.CumsumOp)
def _cumsum(op: lp.CumsumOp, args: list[np.ndarray], f: Frame) -> np.ndarray:
    x = args[0]
    acc = np.float32 if x.dtype.kind == "f" else np.int64
    return np.cumsum(x, axis=op.dim.data, dtype=acc)


@impl(lp.SoftmaxOp)
def _softmax(op: lp.SoftmaxOp, args: list[np.ndarray], f: Frame) -> np.ndarray:
    x = args[0].astype(np.float32)
    d = op.dim.data
    m = np.max(x, axis=d, keepdims=True)
    e = np.exp(x - np.where(np.isfinite(m), m, 0))
    return e / np.sum(e, axis=d, keepdims=True)


@impl(lp.LogSoftmaxOp)
def _log_softmax(op: lp.LogSoftmaxOp, args: list[np.ndarray], f: Frame) -> np.ndarray:
    x = args[0].astype(np.float32)
    d = op.dim.data
    m = np.max(x, axis=d, keepdims=True)
    s = x - np.where(np.isfinite(m), m, 0)
    return s - np.log(np.sum(np.exp(s), axis=d, keepdims=True))


# -- data movement -------------------------------------------------------------------


@impl(lp.ReshapeOp)
def _reshape(op: lp.ReshapeOp, args: list[np.ndarray], f: Frame) -> np.ndarray:
    return args[0].reshape(f.shape(op.result))


@impl(lp.PermuteOp)
def _permute(op: lp.PermuteOp, args: list[np.ndarray], f: Frame) -> np.ndarray:
    return np.transpose(args[0], lp._array(op.perm))


@impl(lp.BroadcastOp)
def _broadcast(op: lp.BroadcastOp, args: list[np.ndarray], f: Frame) -> np.ndarray:
    return np.broadcast_to(args[0], f.shape(op.result))


@impl(lp.SliceOp)
def _slice(op: lp.SliceOp, args: list[np.ndarray], f: Frame) -> np.ndarray:
    x = args[0]
    sizes = f.shape(op.result)
    index = []
    for d, (off, size, step) in enumerate(
        zip(lp._array(op.offsets), sizes, lp._array(op.strides), strict=True)
    ):
        if size and off + (size - 1) * step >= x.shape[d]:
            raise ValueError(
                f"dim {d} reads index {off + (size - 1) * step} of size {x.shape[d]}"
            )
        index.append(slice(off, off + (size - 1) * step + 1 if size else off, step))
    return x[tuple(index)]


@impl(lp.ConcatOp)
def _concat(op: lp.ConcatOp, args: list[np.ndarray], f: Frame) -> np.ndarray:
    return np.concatenate(args, axis=op.dim.data)


def _check_indices(idx: np.ndarray, n: int) -> np.ndarray:
    if idx.size and (idx.min() < -n or idx.max() >= n):
        raise IndexError(
            f"index {int(idx.max() if idx.max() >= n else idx.min())} out of "
            f"range for a dimension of size {n}"
        )
    return idx.astype(np.int64)


@impl(lp.TakeOp)
def _take(op: lp.TakeOp, args: list[np.ndarray], f: Frame) -> np.ndarray:
    x, idx = args
    d = op.dim.data
    return np.take(x, _check_indices(idx, x.shape[d]), axis=d)


@impl(lp.GatherOp)
def _gather(op: lp.GatherOp, args: list[np.ndarray], f: Frame) -> np.ndarray:
    x, idx = args
    d = op.dim.data
    return np.take_along_axis(x, _check_indices(idx, x.shape[d]), axis=d)


# -- convolution and pooling -----------------------------------------------------------


def _windows(
    x: np.ndarray,
    kernel: Sequence[int],
    stride: Sequence[int],
    dilation: Sequence[int],
    out_hw: Sequence[int],
) -> np.ndarray:
    """[N, C, OH, OW, kh, kw] windows of an already padded NCHW array."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    span = ((kh - 1) * dh + 1, (kw - 1) * dw + 1)
    need_h = (out_hw[0] - 1) * sh + span[0]
    need_w = (out_hw[1] - 1) * sw + span[1]
    x = x[:, :, :need_h, :need_w]
    win = sliding_window_view(x, span, axis=(2, 3))
    return win[:, :, ::sh, ::sw, ::dh, ::dw][:, :, : out_hw[0], : out_hw[1]]


def _pad(
    x: np.ndarray, pad: Sequence[int], out_hw: Sequence[int], span_hw, stride, value
):
    """Pad H and W by `pad`, plus enough on the far side for ceil-mode windows."""
    extra = [
        max(0, (o - 1) * s + k - (n + 2 * p))
        for o, s, k, n, p in zip(out_hw, stride, span_hw, x.shape[2:], pad, strict=True)
    ]
    widths = ((0, 0), (0, 0), (pad[0], pad[0] + extra[0]), (pad[1], pad[1] + extra[1]))
    return np.pad(x, widths, constant_values=value)


@impl(lp.Conv2dOp)
def _conv2d(op: lp.Conv2dOp, args: list[np.ndarray], f: Frame) -> np.ndarray:
    x, w = args[0].astype(np.float32), args[1].astype(np.float32)
    out_hw = f.shape(op.result)[2:]
    stride, pad = lp._array(op.stride), lp._array(op.padding)
    dil, groups = lp._array(op.dilation), op.groups.data
    o, cg, kh, kw = w.shape
    span = ((kh - 1) * dil[0] + 1, (kw - 1) * dil[1] + 1)
    win = _windows(_pad(x, pad, out_hw, span, stride, 0), (kh, kw), stride, dil, out_hw)
    n = x.shape[0]
    # [N, G, C/G, OH, OW, kh, kw] x [G, O/G, C/G, kh, kw] -> [N, G, O/G, OH, OW]
    win = win.reshape(n, groups, cg, *out_hw, kh, kw)
    cols = win.transpose(0, 1, 3, 4, 2, 5, 6).reshape(n, groups, -1, cg * kh * kw)
    wg = w.reshape(groups, o // groups, cg * kh * kw)
    out = np.matmul(cols, np.swapaxes(wg, -1, -2)[None])  # [N, G, OH*OW, O/G]
    out = out.transpose(0, 1, 3, 2).reshape(n, o, *out_hw)
    if len(args) > 2:
        out = out + args[2].astype(np.float32).reshape(1, o, 1, 1)
    return out


@impl(lp.MaxPool2dOp)
def _max_pool(op: lp.MaxPool2dOp, args: list[np.ndarray], f: Frame) -> np.ndarray:
    x = args[0].astype(np.float32)
    out_hw = f.shape(op.result)[2:]
    kernel, stride = lp._array(op.kernel), lp._array(op.stride)
    pad, dil = lp._array(op.padding), lp._array(op.dilation)
    span = [(k - 1) * d + 1 for k, d in zip(kernel, dil, strict=True)]
    xp = _pad(x, pad, out_hw, span, stride, -np.inf)
    return _windows(xp, kernel, stride, dil, out_hw).max(axis=(-2, -1))


@impl(lp.AvgPool2dOp)
def _avg_pool(op: lp.AvgPool2dOp, args: list[np.ndarray], f: Frame) -> np.ndarray:
    x = args[0].astype(np.float32)
    out_hw = f.shape(op.result)[2:]
    kernel, stride, pad = (lp._array(a) for a in (op.kernel, op.stride, op.padding))
    ones = (1, 1)
    total = _windows(
        _pad(x, pad, out_hw, kernel, stride, 0), kernel, stride, ones, out_hw
    )
    # The divisor counts the input cells of each window, plus the padding cells
    # (not the ceil-mode overhang) with count_include_pad, as torch does.
    h, w = x.shape[2:]
    mask = np.zeros((1, 1, h, w), np.float32) + 1
    fill = 1.0 if op.count_include_pad is not None else 0.0
    mask = np.pad(
        mask, ((0, 0), (0, 0), (pad[0],) * 2, (pad[1],) * 2), constant_values=fill
    )
    mask = _pad(mask, (0, 0), out_hw, kernel, stride, 0)
    count = _windows(mask, kernel, stride, ones, out_hw).sum(axis=(-2, -1))
    return total.sum(axis=(-2, -1)) / count


# -- low-precision ops (lpcc/ir/dialect/lowp.py) ------------------------------------


def _by_group(x: np.ndarray, group: int) -> np.ndarray:
    """[..., K] -> [..., ceil(K / group), group], a short last group 0-padded."""
    pad = -x.shape[-1] % group
    if pad:
        x = np.concatenate([x, np.zeros((*x.shape[:-1], pad), x.dtype)], axis=-1)
    return x.reshape(*x.shape[:-1], x.shape[-1] // group, group)


def _optional(op: Operation, names: Sequence[str], args: list[np.ndarray]):
    """The arrays of `op`'s optional operands by name (None where absent)."""
    it = iter(args)
    return {n: (next(it) if getattr(op, n) is not None else None) for n in names}


@impl(lowp.GroupMatmulOp)
def _group_matmul(op: lowp.GroupMatmulOp, args: list[np.ndarray], f: Frame):
    x, w = args
    g = op.group.data
    exact = x.dtype.kind in "iub"
    ct = np.float64 if exact else np.float32  # int products sum exactly in f64
    xg = np.moveaxis(_by_group(x.astype(ct), g), -2, -3)  # [..., Gn, M, G]
    wg = _by_group(w.astype(ct), g).transpose(1, 2, 0)  # [Gn, G, N]
    p = np.moveaxis(np.matmul(xg, wg), -3, -1)  # [..., M, N, Gn]
    return np.rint(p).astype(np.int64) if exact else p


@impl(lowp.GroupSumOp)
def _group_sum(op: lowp.GroupSumOp, args: list[np.ndarray], f: Frame):
    x = args[0]
    acc = np.int64 if x.dtype.kind in "iub" else np.float32
    return _by_group(x.astype(acc), op.group.data).sum(axis=-1)


@impl(lowp.GroupDequantReduceOp)
def _group_dequant_reduce(
    op: lowp.GroupDequantReduceOp, args: list[np.ndarray], f: Frame
):
    p, s = (a.astype(np.float64) for a in args[:2])
    opt = _optional(op, ("zero", "sums", "act_scale"), args[2:])
    if opt["zero"] is not None:
        z, sums = opt["zero"].astype(np.float64), opt["sums"].astype(np.float64)
        p = p - z * sums[..., None, :]
    y = p * s
    if opt["act_scale"] is not None:
        y = y * opt["act_scale"].astype(np.float64)[..., None, :]
    return y.sum(axis=-1)


def _unsigned_codes(w: np.ndarray, dt: DType) -> np.ndarray:
    """u = w - min(type): the weight's bits with the sign offset removed."""
    return w.astype(np.int64) - int(dt.min)


@impl(lowp.BitplanesOp)
def _bitplanes(op: lowp.BitplanesOp, args: list[np.ndarray], f: Frame):
    dt = elem(op.input)
    u = _unsigned_codes(args[0], dt)
    g = op.group.data
    bits = (u[None] >> np.arange(dt.bits)[:, None, None]) & 1  # [B, N, K]
    return (_by_group(bits, g) << np.arange(g)).sum(axis=-1)


def _lut_signs(g: int) -> np.ndarray:
    """signs[i, t] = 2 bit_t(i) - 1 (the +-1 weight encoding), [2^g, g]."""
    i = np.arange(2**g)[:, None]
    return (2 * ((i >> np.arange(g)) & 1) - 1).astype(np.float32)


def _expand_last(v: np.ndarray, n: int) -> np.ndarray:
    """Repeat each entry of the last axis so that it has n entries."""
    return np.repeat(v, n // v.shape[-1], axis=-1)


@impl(lowp.LutScaleOp)
def _lut_scale(op: lowp.LutScaleOp, args: list[np.ndarray], f: Frame):
    x = np.abs(args[0].astype(np.float32))
    sums = _by_group(x, op.group.data).sum(axis=-1)  # [..., K/g]
    per = op.act_group.data // op.group.data
    return _by_group(sums, per).max(axis=-1) / np.float32(lowp.TABLE_LIMIT)


@impl(lowp.LutPrecomputeOp)
def _lut_precompute(op: lowp.LutPrecomputeOp, args: list[np.ndarray], f: Frame):
    g = op.group.data
    xg = _by_group(args[0].astype(np.float32), g)  # [..., J, g]
    signs = _lut_signs(g)
    # Added term by term in a fixed order, so T[~i] == -T[i] exactly.
    t = signs[:, 0] * xg[..., 0:1]
    for k in range(1, g):
        t = t + signs[:, k] * xg[..., k : k + 1]  # [..., J, 2^g]
    if op.half is not None:
        t = t[..., 2 ** (g - 1) :]
    if op.scale is None:
        return t
    ls = _expand_last(args[1].astype(np.float32), t.shape[-2])[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(ls > 0, np.rint(t / ls), 0)
    return np.clip(q, -lowp.TABLE_LIMIT, lowp.TABLE_LIMIT)


def lut_lookup(table: np.ndarray, index: np.ndarray, g: int) -> np.ndarray:
    """table[..., j, index[n, j]] -> [..., N, J]; a half table is mirrored.

    Half tables hold H[i] = T[2^(g-1) + i]; T[i] = H[i & mask] if the top bit
    of i is set, else -H[~i & mask] (T[~i] = -T[i]).
    """
    j = np.arange(index.shape[-1])
    if table.shape[-1] == 2**g:
        return table[..., j, index]
    mask = 2 ** (g - 1) - 1
    top = (index >> (g - 1)) & 1
    idx = np.where(top == 1, index & mask, ~index & mask)
    v = table[..., j, idx]
    return np.where(top == 1, v, -v)


@impl(lowp.LutAccumulateOp)
def _lut_accumulate(op: lowp.LutAccumulateOp, args: list[np.ndarray], f: Frame):
    table, planes, sums = args[:3]
    ls = args[3].astype(np.float64) if op.scale is not None else None
    g = elem(op.planes).bits
    bits, _, jn = planes.shape
    exact = table.dtype.kind in "iu"
    acc = None
    for b in range(bits):
        v = lut_lookup(table, planes[b].astype(np.int64), g)  # [..., M, N, J]
        v = v.astype(np.int64) if exact else v.astype(np.float64)
        acc = v * 2**b if acc is None else acc + v * 2**b
    assert acc is not None
    # Sum exactly within units that share one table scale, then scale.
    k = jn * g
    unit = op.group.data if ls is None else min(op.group.data, k // ls.shape[-1])
    c = _by_group(acc, unit // g).sum(axis=-1).astype(np.float64)  # [..., M, N, U]
    if ls is not None:
        c = c * _expand_last(ls, c.shape[-1])[..., None, :]
    c = _by_group(c, op.group.data // unit).sum(axis=-1)  # [..., M, N, Gn]
    off = 2 ** (bits - 1) if op.signed is not None else 0
    corr = (2**bits - 1) / 2 - off
    return 0.5 * c + corr * sums.astype(np.float64)[..., None, :]


def missing_impls() -> list[str]:
    """Names of lp ops without a reference implementation (should be none)."""
    from lpcc.ir.dialect import LP

    return [cls.name for cls in LP.operations if cls not in IMPLS]
