"""Backend-neutral kernel planning: what a generator decides before it writes code.

The CPU (`llvm/kernels/`) and CUDA (`cuda/kernels/`) generators take the same
ops and must agree on what those ops mean in terms of buffers: the row-major
strides of a contiguous tensor, which dimensions a strided copy may drop or
merge, the source stride of every output dimension of a broadcast, slice,
gather or permute, the window attributes of a pool, and the type rules and
op tables the elementwise and group-GEMM kernels key on. This module holds
those decisions as plain Python over sizes (`int`, or a size expression of
`lpcc.ir.symbolic`) so that both backends call one copy; it emits no LLVM IR
and no C text. Size arithmetic goes through `lpcc.ir.symbolic`; codecs stay
in `lpcc.ir.dtypes`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from lpcc.codegen.contract import elem, shape
from lpcc.ir.dialect import ops as lp
from lpcc.ir.dtypes import DType, FloatType, IntType
from lpcc.ir.symbolic import Dim, dim_mul, dim_prod

S = TypeVar("S")  # a stride: an int, a size expression, or a backend's value

_F32 = np.dtype(np.float32)


# -- sizes and types -----------------------------------------------------------------


def static(*dims: object) -> bool:
    """True when every size is a known int (no size expression)."""
    return all(isinstance(d, int) for d in dims)


def contiguous(dims: Sequence[Dim]) -> list[Dim]:
    """Row-major element strides of a contiguous buffer of shape `dims`."""
    out: list[Dim] = [1] * len(dims)
    for i in range(len(dims) - 2, -1, -1):
        out[i] = dim_mul(out[i + 1], dims[i + 1])
    return out


def split_at(dims: Sequence[Dim], d: int) -> tuple[Dim, Dim, Dim]:
    """(outer, n, inner): the sizes before `d`, at `d` and after it, so an
    index of `dims` is (o * n + i) * inner + j (take, concat, cumsum)."""
    return dim_prod(dims[:d]), dims[d], dim_prod(dims[d + 1 :])


def esize(dt: DType) -> int:
    """Bytes per element of `dt`'s run-time (value-domain) buffer."""
    return int(dt.value_dtype.itemsize)


def is_f32(dt: DType) -> bool:
    """IEEE binary32 itself (not a narrower float held in f32 values)."""
    return (
        isinstance(dt, FloatType)
        and dt.exp == 8
        and dt.man == 23
        and dt.variant == "ieee"
    )


# -- strided copies ------------------------------------------------------------------


def merge_dims(
    sizes: Sequence[Dim], *strides: Sequence[S]
) -> tuple[list[Dim], list[list[S]]]:
    """Drop size-1 dims and merge neighbours adjacent in every stride list.

    Dims k and k+1 merge when n_{k+1} and both strides of each list are ints
    with s_k == s_{k+1} * n_{k+1}: the merged dim keeps s_{k+1}. A copy whose
    output is contiguous passes only the source strides; one that checks the
    destination as well passes both (a dynamic destination stride then
    blocks the merge).
    """
    keep = [i for i, n in enumerate(sizes) if n != 1]
    sz = [sizes[i] for i in keep]
    ss = [[s[i] for i in keep] for s in strides]
    k = len(sz) - 2
    while k >= 0:
        n1 = sz[k + 1]
        ok = isinstance(n1, int) and all(
            isinstance(s[k], int) and isinstance(s[k + 1], int) for s in ss
        )
        if ok and all(s[k] == s[k + 1] * n1 for s in ss):  # type: ignore[operator]
            sz[k] = dim_mul(sz[k], n1)
            for s in ss:
                s[k] = s[k + 1]
                del s[k + 1]
            del sz[k + 1]
        k -= 1
    return sz, ss


@dataclass(frozen=True)
class MaybeOne:
    """A broadcast source stride known only at run time: 0 where the dynamic
    size `n` is 1, else `stride`."""

    n: Dim
    stride: Dim


def broadcast_strides(src: Sequence[Dim], out: Sequence[Dim]) -> list[Dim | MaybeOne]:
    """The source stride of each output dim of `lp.broadcast` (0: repeated)."""
    lead = len(out) - len(src)
    res: list[Dim | MaybeOne] = [0] * lead
    for n, d, s in zip(src, out[lead:], contiguous(src), strict=True):
        if n == 1:
            res.append(0)
        elif n == d or isinstance(n, int):
            res.append(s)  # (a static n != 1 must equal d: the verifier)
        else:  # a dynamic size that may be 1 at run time
            res.append(MaybeOne(n, s))
    return res


@dataclass(frozen=True)
class SlicePlan:
    """`lp.slice` as a strided copy: out[i] = in[base + sum_d i_d * st_d * step_d].

    `base` is sum_d off_d * st_d when every stride is static, else None (the
    backend adds it up at run time). `checks` are the dims whose fit
    (size <= 0 or off + (size - 1) * step < n) only the run time can check:
    where one fails the interpreter raises and the kernels write zeros.
    """

    strides: list[Dim]  # contiguous source strides st_d
    offsets: list[int]
    steps: list[int]
    base: int | None
    checks: list[int]

    @property
    def note(self) -> str:
        return f"slice offsets {self.offsets} strides {self.steps}"


def slice_plan(op: lp.SliceOp, src: Sequence[Dim], out: Sequence[Dim]) -> SlicePlan:
    """The strides, base offset and run-time checks of a slice of `src`."""
    offsets, steps = list(lp._array(op.offsets)), list(lp._array(op.strides))
    st = contiguous(src)
    base = None
    if static(*st):
        base = sum(int(s) * o for s, o in zip(st, offsets, strict=True))  # type: ignore[call-overload]
    checks = [
        d
        for d, (n, size) in enumerate(zip(src, out, strict=True))
        if not static(n, size)
    ]
    return SlicePlan(st, offsets, steps, base, checks)


def gather_strides(xs: Sequence[Dim], ish: Sequence[Dim], d: int) -> list[Dim] | None:
    """torch.gather's source stride per index dim, the gathered dim `d` as 0
    (its offset comes from the index); None where a non-indexed size may
    differ from the input's (the interpreter checks those)."""
    xst = contiguous(xs)
    eff: list[Dim] = []
    for i, (a, c) in enumerate(zip(xs, ish, strict=True)):
        if i == d:
            eff.append(0)
        elif a == c:
            eff.append(xst[i])
        elif a == 1:
            eff.append(0)  # NumPy broadcasts a size-1 input dim
        else:
            return None
    return eff


def index_source(op: lp.TakeOp | lp.GatherOp) -> list[Dim] | None:
    """The input shape of a take or gather the kernels handle, else None:
    integer indices, and an indexed dim not statically empty (every index
    would be out of range: the interpreter raises)."""
    xs = list(shape(op.input))
    if not isinstance(elem(op.indices), IntType) or xs[op.dim.data] == 0:
        return None
    return xs


def collapse_permute(
    src: Sequence[Dim], perm: Sequence[int]
) -> tuple[list[Dim], list[int]]:
    """(sizes, perm) of the same permute with size-1 input dims dropped and
    input dims that stay adjacent in the output merged."""
    keep = [i for i, n in enumerate(src) if n != 1]
    new_id = {old: k for k, old in enumerate(keep)}
    s = [src[i] for i in keep]
    p = [new_id[i] for i in perm if i in new_id]
    k = 0
    while k < len(p) - 1:
        a = p[k]
        if p[k + 1] == a + 1:  # input dims a, a+1 stay together: merge
            s[a] = dim_mul(s[a], s[a + 1])
            del s[a + 1]
            del p[k + 1]
            p = [x - 1 if x > a else x for x in p]
        else:
            k += 1
    return s, p


# -- op attributes, type rules and tables ---------------------------------------------


@dataclass(frozen=True)
class PoolWindow:
    """A pool's window attributes; avg_pool has no dilation (1, 1)."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    include_pad: bool  # avg_pool's count_include_pad (never for max)


def pool_window(op: lp.MaxPool2dOp | lp.AvgPool2dOp) -> PoolWindow:
    """The window of `op` as ints."""
    is_max = isinstance(op, lp.MaxPool2dOp)
    kh, kw = lp._array(op.kernel)
    sh, sw = lp._array(op.stride)
    ph, pw = lp._array(op.padding)
    dh, dw = lp._array(op.dilation) if is_max else (1, 1)
    include_pad = not is_max and op.count_include_pad is not None
    return PoolWindow((kh, kw), (sh, sw), (ph, pw), (dh, dw), include_pad)


BINARY_KIND: dict[type, str] = {
    lp.AddOp: "add",
    lp.SubOp: "sub",
    lp.MulOp: "mul",
    lp.DivOp: "div",
    lp.MaxOp: "max",
    lp.MinOp: "min",
    lp.PowOp: "pow",
}
"""The elementwise binary ops both backends emit, by the name they switch on."""


def group_weight_ok(wdt: DType, xint: bool) -> bool:
    """Weight codes a group GEMM kernel decodes: ints of 1..8 bits, or float
    formats of at most 8 bits held in f32 (float activations only)."""
    if isinstance(wdt, IntType):
        return 1 <= wdt.bits <= 8
    if isinstance(wdt, FloatType):
        return not xint and wdt.bits <= 8 and wdt.value_dtype == _F32
    return False


def group_act_ok(xdt: DType) -> bool:
    """Activations a group GEMM kernel takes: int8 (W4A8) or f32 values."""
    if isinstance(xdt, IntType):
        return xdt.bits == 8 and xdt.signed
    return isinstance(xdt, FloatType) and xdt.value_dtype == _F32
