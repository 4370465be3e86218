"""CUDA kernels for data movement: permute, slice, broadcast, concat, take,
gather and cumsum.

Moving data does not look at the values, so every copy goes by element
*size* (an unsigned integer of 1, 2, 4 or 8 bytes: NaN payloads and -0.0
survive) and one generator serves every element type. Each kernel is one
thread per output element in a grid-stride loop (256 threads a block, at
most `MAX_BLOCKS` blocks): consecutive threads write consecutive outputs, so
stores are coalesced, and the output index is split into per-dimension
indices with unsigned division (sizes are never negative; static sizes are
constants the compiler turns into multiply-shifts). Size-1 dimensions are
dropped and neighbours that stay adjacent in both buffers are merged first,
so a permute that keeps the last dimension costs one division per element
and an identity none. Indices are 32-bit when every size is static and the
tensor has fewer than 2**31 elements, else 64-bit.

Inputs the interpreter rejects must not make a kernel read outside its
buffers: take/gather indices wrap once (negative indices, as NumPy); an
out-of-range one stores status code 1 (the caller raises the message in
`errors`, the CPU kernels' text) and reads element 0 of the dimension
meanwhile; a dynamic slice that overruns its input writes zeros (as the CPU
kernel). cumsum adds in order along its dimension, one thread per column
(the interpreter's order: f32 sums are bit for bit), integers in 64 bits,
saturated to the result type. Anything else (cumsum results that need a
narrow float's rounding, gathers whose non-indexed sizes may differ,
expressions C cannot write) returns None and runs in the interpreter.

The helpers here (`Kern`, `grid_1d`, `index_type`, ...) are shared with
`reduce.py` and `conv.py`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

from lpcc.codegen.cuda.kernel import (
    CudaKernel,
    CudaRequest,
    Launch,
    c_dim,
    ctype,
    elem,
    register,
    shape,
    signature,
)
from lpcc.errors import IRError
from lpcc.ir.dialect import ops as lp
from lpcc.ir.dtypes import DType, FloatType, IntType
from lpcc.ir.symbolic import Dim, dim_ceil_div, dim_min, dim_mul, dim_prod

THREADS = 256  # threads per block of the one-thread-per-element kernels
MAX_BLOCKS = 65535  # grid cap: more elements loop (grid-stride)
INT32_LIMIT = 1 << 31

ERR_INDEX = 1  # status code: a take/gather index out of range

_UINT = {1: "lp_u8", 2: "lp_u16", 4: "lp_u32", 8: "lp_u64"}


class Unsupported(Exception):
    """Raised inside a generator for a case it does not handle (-> None)."""


GenFn = Callable[[CudaRequest], CudaKernel | None]


def or_none(gen: GenFn) -> GenFn:
    """Turn `Unsupported` (and size expressions C cannot write) into None."""

    @functools.wraps(gen)
    def wrapper(req: CudaRequest) -> CudaKernel | None:
        try:
            return gen(req)
        except Unsupported:
            return None

    return wrapper


class CText(str):
    """A stride or offset already written as C (a `long long` expression)."""


Stride = int | str  # an int, a size expression, or CText


class Kern:
    """Collects the symbols a kernel's C text uses and writes sizes as C."""

    def __init__(self, req: CudaRequest) -> None:
        self.req = req
        self.used: list[str] = []

    def dim(self, d: Dim) -> str:
        """`d` as a C `long long` expression."""
        try:
            return c_dim(d, self.used)
        except IRError as err:
            raise Unsupported(str(err)) from None

    def idx(self, d: Stride, ity: str) -> str:
        """`d` as a C expression of the index type `ity`."""
        if isinstance(d, CText):
            return f"(({ity})({d}))"
        if isinstance(d, int):
            return f"{d}u" if ity == "unsigned" else f"{d}ull"
        return f"(({ity}){self.dim(d)})"

    def sig(self, **kw: object) -> str:
        """The entry's parameter list; call after every size has been written."""
        return signature(self.req, self.used, **kw)  # type: ignore[arg-type]

    def kernel(
        self,
        body: str,
        grid: tuple[Dim, Dim, Dim],
        block: int,
        note: str,
        *,
        errors: dict[int, str] | None = None,
        shared_bytes: int = 0,
        head: str = "",
    ) -> CudaKernel:
        """One `extern "C"` entry named `req.entry` whose body is `body`."""
        entry = self.req.entry
        src = (
            f"{head}\n"
            f'extern "C" __global__ void __launch_bounds__({block}) '
            f"{entry}({self.sig()}) {{\n{body}}}\n"
        )
        return CudaKernel(
            source=src,
            launches=[Launch(entry, grid, (block, 1, 1), shared_bytes)],
            symbols=tuple(self.used),
            errors=dict(errors or {}),
            note=note,
        )


def static(*dims: Dim) -> bool:
    return all(isinstance(d, int) for d in dims)


def index_type(*totals: Dim) -> str:
    """32-bit indices when every total is static and below 2**31."""
    if all(isinstance(t, int) and t < INT32_LIMIT for t in totals):
        return "unsigned"
    return "unsigned long long"


def grid_1d(total: Dim, threads: int = THREADS) -> tuple[Dim, Dim, Dim]:
    """Blocks for `total` work items of `threads` each, capped (grid-stride)."""
    return (dim_min(dim_ceil_div(total, threads), MAX_BLOCKS), 1, 1)


def grid_loop(ity: str, total: str, var: str = "i") -> str:
    """The head of a grid-stride loop over [0, total) (a `for` line)."""
    return (
        f"  for ({ity} {var} = ({ity})blockIdx.x * blockDim.x + threadIdx.x; "
        f"{var} < {total}; {var} += ({ity})gridDim.x * blockDim.x)"
    )


def unravel(
    k: Kern, lin: str, sizes: Sequence[Dim], names: Sequence[str], ity: str
) -> list[str]:
    """C lines splitting `lin` into row-major indices `names` over `sizes`."""
    lines: list[str] = []
    if not sizes:
        return lines
    if len(sizes) == 1:
        return [f"    const {ity} {names[0]} = {lin};"]
    lines.append(f"    {ity} rem_ = {lin};")
    for d in range(len(sizes) - 1, 0, -1):
        n = k.idx(sizes[d], ity)
        lines.append(f"    const {ity} {names[d]} = rem_ % {n}; rem_ /= {n};")
    lines.append(f"    const {ity} {names[0]} = rem_;")
    return lines


def contiguous(dims: Sequence[Dim]) -> list[Dim]:
    """Row-major element strides of a contiguous buffer of shape `dims`."""
    out: list[Dim] = [1] * len(dims)
    for i in range(len(dims) - 2, -1, -1):
        out[i] = dim_mul(out[i + 1], dims[i + 1])
    return out


def esize(dt: DType) -> int:
    return int(dt.value_dtype.itemsize)


def is_f32(dt: DType) -> bool:
    return (
        isinstance(dt, FloatType)
        and dt.value_dtype.name == "float32"
        and (
            dt.exp,
            dt.man,
            dt.variant,
        )
        == (8, 23, "ieee")
    )


# -- strided copies (permute, broadcast, slice) ---------------------------------------


def _simplify(
    sizes: Sequence[Dim], sstr: Sequence[Stride]
) -> tuple[list[Dim], list[Stride]]:
    """Drop size-1 dims; merge neighbours adjacent in both buffers (the output
    is contiguous, so only the source strides need checking)."""
    keep = [i for i, n in enumerate(sizes) if n != 1]
    sz = [sizes[i] for i in keep]
    ss = [sstr[i] for i in keep]
    k = len(sz) - 2
    while k >= 0:
        n1, a, b = sz[k + 1], ss[k], ss[k + 1]
        ints = isinstance(n1, int) and isinstance(a, int) and isinstance(b, int)
        if ints and a == b * n1:  # type: ignore[operator]
            sz[k] = dim_mul(sz[k], n1)
            ss[k] = b
            del sz[k + 1], ss[k + 1]
        k -= 1
    return sz, ss


def strided_copy(
    req: CudaRequest,
    out_shape: Sequence[Dim],
    sstr: Sequence[Stride],
    sbase: Stride,
    src: int,
    dt: DType,
    note: str,
    src_total: Dim,
    guard: str | None = None,
) -> CudaKernel:
    """out[i...] = in[sbase + sum i_k * sstr_k]; `out` contiguous of `out_shape`.

    With `guard` (a C condition), the output is zero-filled where it is false.
    """
    k = Kern(req)
    total_d = dim_prod(out_shape)
    sizes, ss = _simplify(out_shape, sstr)
    # a dynamic size might make the 32-bit index overflow: 64-bit then
    ity = index_type(total_d, src_total, *ss)
    if any(isinstance(s, CText) for s in [*ss, sbase]):
        ity = "unsigned long long"
    t = _UINT[esize(dt)]
    total = k.idx(total_d, ity)
    names = [f"i{d}" for d in range(len(sizes))]
    lines = [
        f"  const {t}* __restrict__ src = (const {t}*)in{src};",
        f"  {t}* __restrict__ dst = ({t}*)out0;",
    ]
    if guard is not None:
        lines.append(f"  const bool ok = {guard};")
    lines.append(grid_loop(ity, total) + " {")
    if guard is not None:
        lines.append(f"    if (!ok) {{ dst[i] = ({t})0; continue; }}")
    lines += unravel(k, "i", sizes, names, ity)
    terms = [k.idx(sbase, ity)] if sbase != 0 else []
    for name, s in zip(names, ss, strict=True):
        if s == 1 and not isinstance(s, CText):
            terms.append(name)
        elif s != 0 or isinstance(s, CText):
            terms.append(f"{name} * {k.idx(s, ity)}")
    off = " + ".join(terms) if terms else "0"
    lines.append(f"    dst[i] = src[{off}];")
    lines.append("  }")
    how = f"{len(sizes)}-d strided copy, {ity} indices"
    return k.kernel(
        "\n".join(lines) + "\n", grid_1d(total_d), THREADS, f"{note} [{how}]"
    )


@register(lp.PermuteOp)
@or_none
def gen_permute(req: CudaRequest) -> CudaKernel | None:
    """out[o] = in[sum o_i * stride[perm_i]]: a strided gather copy."""
    op = req.op
    assert isinstance(op, lp.PermuteOp)
    src_shape = list(shape(op.input))
    perm = list(lp._array(op.perm))
    st = contiguous(src_shape)
    out_shape = [src_shape[p] for p in perm]
    return strided_copy(
        req,
        out_shape,
        [st[p] for p in perm],
        0,
        req.arg_index(op.input),
        elem(op.input),
        f"permute {perm}",
        dim_prod(src_shape),
    )


@register(lp.BroadcastOp)
@or_none
def gen_broadcast(req: CudaRequest) -> CudaKernel | None:
    """A strided copy whose broadcast dims have source stride 0."""
    op = req.op
    assert isinstance(op, lp.BroadcastOp)
    src_shape, out_shape = list(shape(op.input)), list(shape(op.result))
    lead = len(out_shape) - len(src_shape)
    st = contiguous(src_shape)
    k = Kern(req)
    sstr: list[Stride] = [0] * lead
    for n, d, s in zip(src_shape, out_shape[lead:], st, strict=True):
        if n == 1:
            sstr.append(0)
        elif n == d or isinstance(n, int):
            sstr.append(s)  # (a static n != 1 must equal d: the verifier)
        else:  # a dynamic size that may be 1 at run time
            sstr.append(CText(f"({k.dim(n)} == 1LL ? 0LL : {k.dim(s)})"))
    return strided_copy(
        req,
        out_shape,
        sstr,
        0,
        req.arg_index(op.input),
        elem(op.input),
        "broadcast",
        dim_prod(src_shape),
    )


@register(lp.SliceOp)
@or_none
def gen_slice(req: CudaRequest) -> CudaKernel | None:
    """A strided copy from offset sum off_d * st_d with strides step_d * st_d."""
    op = req.op
    assert isinstance(op, lp.SliceOp)
    src_shape, out_shape = list(shape(op.input)), list(shape(op.result))
    offsets, steps = lp._array(op.offsets), lp._array(op.strides)
    st = contiguous(src_shape)
    k = Kern(req)
    sstr: list[Stride] = []
    for s, step in zip(st, steps, strict=True):
        sstr.append(s * step if isinstance(s, int) else CText(f"{k.dim(s)} * {step}"))
    if static(*st):
        base: Stride = sum(int(s) * o for s, o in zip(st, offsets, strict=True))
    else:
        terms = [f"{o}LL * {k.dim(s)}" for s, o in zip(st, offsets, strict=True) if o]
        base = CText(" + ".join(terms)) if terms else 0
    conds = []
    for d, (n, size) in enumerate(zip(src_shape, out_shape, strict=True)):
        if static(n, size):
            continue  # the verifier checked it
        sz = k.dim(size)
        last = f"({offsets[d]}LL + ({sz} - 1LL) * {steps[d]}LL)"
        conds.append(f"({sz} <= 0LL || {last} < {k.dim(n)})")
    guard = " && ".join(conds) if conds else None
    note = f"slice offsets {list(offsets)} strides {list(steps)}"
    return strided_copy(
        req,
        out_shape,
        sstr,
        base,
        req.arg_index(op.input),
        elem(op.input),
        note,
        dim_prod(src_shape),
        guard,
    )


# -- concat ---------------------------------------------------------------------------


@register(lp.ConcatOp)
@or_none
def gen_concat(req: CudaRequest) -> CudaKernel | None:
    """out[o, r] (r along dim x inner) from the input whose block holds r."""
    op = req.op
    assert isinstance(op, lp.ConcatOp)
    dt = elem(op.result)
    d = op.dim.data
    out_shape = list(shape(op.result))
    k = Kern(req)
    parts = list(op.inputs)
    inner_d = dim_prod(out_shape[d + 1 :])
    blocks_d = [dim_mul(shape(v)[d], inner_d) for v in parts]
    total_d = dim_prod(out_shape)
    ity = index_type(total_d, *blocks_d)
    t = _UINT[esize(dt)]
    lines = [f"  {t}* __restrict__ dst = ({t}*)out0;"]
    for j, v in enumerate(parts):
        lines.append(
            f"  const {t}* __restrict__ src{j} = (const {t}*)in{req.arg_index(v)};"
        )
    blocks = [k.idx(b, ity) for b in blocks_d]
    offs = []
    acc = "0"
    for j, b in enumerate(blocks):
        lines.append(f"  const {ity} off{j} = {acc};")
        offs.append(f"off{j}")
        acc = f"off{j} + {b}"
    lines.append(f"  const {ity} row = {acc};")
    lines.append(grid_loop(ity, k.idx(total_d, ity)) + " {")
    outer_one = dim_prod(out_shape[:d]) == 1
    if outer_one:
        lines += [f"    const {ity} o = 0;", f"    const {ity} r = i;"]
    else:
        lines += [f"    const {ity} o = i / row;", f"    const {ity} r = i - o * row;"]
    for j, b in enumerate(blocks):
        cond = f"if (r < off{j + 1}) " if j + 1 < len(blocks) else ""
        pre = "    " if j == 0 else "    else "
        lines.append(f"{pre}{cond}dst[i] = src{j}[o * {b} + (r - off{j})];")
    lines.append("  }")
    return k.kernel(
        "\n".join(lines) + "\n",
        grid_1d(total_d),
        THREADS,
        f"concat dim {d} of {len(parts)} [thread per element, {ity} indices]",
    )


# -- take and gather ------------------------------------------------------------------


def index_message(what: str) -> str:
    """The CPU kernels' message for an out-of-range index."""
    return (
        f"{what}: an index is out of range for the indexed dimension; indices "
        "must lie in [-n, n) for a dimension of size n"
    )


def _load_index(idt: DType, ptr: str, at: str, n: str) -> list[str]:
    """C lines: `long long ix` = indices[at] wrapped into [0, n); status 1
    (and 0) for one out of range."""
    if idt.is_signed:
        return [
            f"    long long ix = (long long){ptr}[{at}];",
            f"    if (ix < -{n} || ix >= {n}) {{ atomicExch(status, {ERR_INDEX}); "
            "ix = 0; }",
            f"    else if (ix < 0) ix += {n};",
        ]
    return [
        f"    unsigned long long ux = (unsigned long long){ptr}[{at}];",
        f"    if (ux >= (unsigned long long){n}) {{ atomicExch(status, {ERR_INDEX}); "
        "ux = 0; }",
        "    const long long ix = (long long)ux;",
    ]


@register(lp.TakeOp)
@or_none
def gen_take(req: CudaRequest) -> CudaKernel | None:
    """np.take along dim: out[o, k, j] = x[o, idx[k], j]."""
    op = req.op
    assert isinstance(op, lp.TakeOp)
    dt, idt = elem(op.input), elem(op.indices)
    if not isinstance(idt, IntType):
        return None
    d = op.dim.data
    xs = list(shape(op.input))
    if xs[d] == 0:
        return None  # every index is out of range: the interpreter says so
    k = Kern(req)
    inner_d, outer_d = dim_prod(xs[d + 1 :]), dim_prod(xs[:d])
    nidx_d = dim_prod(shape(op.indices))
    total_d = dim_prod([outer_d, nidx_d, inner_d])
    ity = index_type(total_d, dim_prod(xs))
    t = _UINT[esize(dt)]
    n = k.dim(xs[d])
    lines = [
        f"  const {t}* __restrict__ src = (const {t}*)in{req.arg_index(op.input)};",
        f"  const {ctype(idt)}* __restrict__ ind = in{req.arg_index(op.indices)};",
        f"  {t}* __restrict__ dst = ({t}*)out0;",
        f"  const long long n = {n};",
        grid_loop(ity, k.idx(total_d, ity)) + " {",
        *unravel(k, "i", [outer_d, nidx_d, inner_d], ["o", "kk", "j"], ity),
        *_load_index(idt, "ind", "kk", "n"),
        f"    if (n <= 0) {{ atomicExch(status, {ERR_INDEX}); dst[i] = ({t})0; "
        "continue; }",
        f"    dst[i] = src[(o * ({ity})n + ({ity})ix) * {k.idx(inner_d, ity)} + j];",
        "  }",
    ]
    return k.kernel(
        "\n".join(lines) + "\n",
        grid_1d(total_d),
        THREADS,
        f"take dim {d} [thread per element, {ity} indices]",
        errors={ERR_INDEX: index_message(f"lp.take (dim {d})")},
    )


@register(lp.GatherOp)
@or_none
def gen_gather(req: CudaRequest) -> CudaKernel | None:
    """torch.gather: out[i] = x[i with i_dim replaced by idx[i]]."""
    op = req.op
    assert isinstance(op, lp.GatherOp)
    dt, idt = elem(op.input), elem(op.indices)
    if not isinstance(idt, IntType):
        return None
    d = op.dim.data
    xs, ish = list(shape(op.input)), list(shape(op.indices))
    if xs[d] == 0:
        return None
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
            return None  # sizes that may differ: the interpreter checks them
    k = Kern(req)
    total_d = dim_prod(ish)
    ity = index_type(total_d, dim_prod(xs))
    t = _UINT[esize(dt)]
    names = [f"i{j}" for j in range(len(ish))]
    terms = [f"{names[j]} * {k.idx(s, ity)}" for j, s in enumerate(eff) if s != 0]
    terms.append(f"({ity})ix * {k.idx(xst[d], ity)}")
    lines = [
        f"  const {t}* __restrict__ src = (const {t}*)in{req.arg_index(op.input)};",
        f"  const {ctype(idt)}* __restrict__ ind = in{req.arg_index(op.indices)};",
        f"  {t}* __restrict__ dst = ({t}*)out0;",
        f"  const long long n = {k.dim(xs[d])};",
        grid_loop(ity, k.idx(total_d, ity)) + " {",
        *unravel(k, "i", ish, names, ity),
        *_load_index(idt, "ind", "i", "n"),
        f"    if (n <= 0) {{ atomicExch(status, {ERR_INDEX}); dst[i] = ({t})0; "
        "continue; }",
        f"    dst[i] = src[{' + '.join(terms)}];",
        "  }",
    ]
    return k.kernel(
        "\n".join(lines) + "\n",
        grid_1d(total_d),
        THREADS,
        f"gather dim {d} [thread per element, {ity} indices]",
        errors={ERR_INDEX: index_message(f"lp.gather (dim {d})")},
    )


# -- cumsum ---------------------------------------------------------------------------


def saturate(dt: IntType, x: str) -> str:
    """C: the 64-bit integer `x` clamped into `dt` (no-op for 64-bit types)."""
    if dt.bits >= 64:
        return x
    return f"({x} < {dt.min}LL ? {dt.min}LL : {x} > {dt.max}LL ? {dt.max}LL : {x})"


@register(lp.CumsumOp)
@or_none
def gen_cumsum(req: CudaRequest) -> CudaKernel | None:
    """One thread per column: an in-order chain down `dim` (the
    interpreter's order), columns adjacent in memory on adjacent threads."""
    op = req.op
    assert isinstance(op, lp.CumsumOp)
    dt, out_dt = elem(op.input), elem(op.result)
    if isinstance(dt, FloatType):
        if not (is_f32(dt) and is_f32(out_dt)):
            return None  # narrow results round with the codec
    elif not isinstance(dt, IntType) or dt.value_dtype.name == "uint64":
        return None
    dims = list(shape(op.input))
    d = op.dim.data
    outer_d, n_d, inner_d = dim_prod(dims[:d]), dims[d], dim_prod(dims[d + 1 :])
    cols_d = dim_mul(outer_d, inner_d)
    k = Kern(req)
    ity = index_type(dim_prod(dims))
    inner, n = k.idx(inner_d, ity), k.idx(n_d, ity)
    tin, tout = ctype(dt), ctype(out_dt)
    lines = [
        f"  const {tin}* __restrict__ x = in0;",
        f"  {tout}* __restrict__ y = out0;",
        grid_loop(ity, k.idx(cols_d, ity), "c") + " {",
        f"    const {ity} o = c / {inner}, j = c - o * {inner};",
        f"    const {ity} base = o * {n} * {inner} + j;",
    ]
    if isinstance(dt, FloatType):
        lines += [
            "    float acc = -0.0f;",
            f"    for ({ity} kk = 0; kk < {n}; ++kk) {{",
            f"      const {ity} at = base + kk * {inner};",
            "      acc += x[at]; y[at] = acc;",
            "    }",
        ]
    elif dt.value_dtype.name == "bool":  # saturating count: "any so far"
        lines += [
            "    lp_bool acc = 0;",
            f"    for ({ity} kk = 0; kk < {n}; ++kk) {{",
            f"      const {ity} at = base + kk * {inner};",
            "      acc = acc | (x[at] != 0); y[at] = acc;",
            "    }",
        ]
    else:
        assert isinstance(out_dt, IntType)
        sat = saturate(out_dt, "acc")
        lines += [
            "    unsigned long long uacc = 0;",  # int64 wraps as NumPy's does
            f"    for ({ity} kk = 0; kk < {n}; ++kk) {{",
            f"      const {ity} at = base + kk * {inner};",
            "      uacc += (unsigned long long)(long long)x[at];",
            "      const long long acc = (long long)uacc;",
            f"      y[at] = ({tout}){sat};",
            "    }",
        ]
    lines.append("  }")
    return k.kernel(
        "\n".join(lines) + "\n",
        grid_1d(cols_d),
        THREADS,
        f"cumsum dim {d} [thread per column, in order]",
    )
