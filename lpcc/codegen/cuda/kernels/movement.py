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

The C helpers here (`Kern`, `generator`, `grid_1d`, `index_type`, ...) are
shared with `reduce.py`, `conv.py` and `group_matmul.py`; the shape and
stride planning (which dims merge, each dim's source stride) is
`lpcc.codegen.shapes`, shared with the CPU kernels.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

from xdsl.ir import SSAValue

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
from lpcc.codegen.shapes import (
    MaybeOne,
    broadcast_strides,
    contiguous,
    esize,
    gather_strides,
    index_source,
    is_f32,
    merge_dims,
    slice_plan,
    split_at,
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


def generator(*op_types: type) -> Callable[[GenFn], GenFn]:
    """Register `gen` for each op type, with `Unsupported` read as None."""

    def deco(gen: GenFn) -> GenFn:
        wrapped = or_none(gen)
        for op_type in op_types:
            register(op_type)(wrapped)
        return wrapped

    return deco


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


# -- strided copies (permute, broadcast, slice) ---------------------------------------


def strided_copy(
    req: CudaRequest,
    x: SSAValue,
    out_shape: Sequence[Dim],
    sstr: Sequence[Stride],
    sbase: Stride,
    note: str,
    guard: str | None = None,
) -> CudaKernel:
    """out[i...] = x[sbase + sum i_k * sstr_k]; `out` contiguous of `out_shape`.

    With `guard` (a C condition), the output is zero-filled where it is false.
    """
    k = Kern(req)
    src, dt, src_total = req.arg_index(x), elem(x), dim_prod(shape(x))
    total_d = dim_prod(out_shape)
    # the output is contiguous: only the source strides decide merges
    sizes, (ss,) = merge_dims(out_shape, sstr)
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


@generator(lp.PermuteOp)
def gen_permute(req: CudaRequest) -> CudaKernel | None:
    """out[o] = in[sum o_i * stride[perm_i]]: a strided gather copy."""
    op = req.op
    assert isinstance(op, lp.PermuteOp)
    src_shape = list(shape(op.input))
    perm = list(lp._array(op.perm))
    st = contiguous(src_shape)
    out_shape = [src_shape[p] for p in perm]
    sstr = [st[p] for p in perm]
    return strided_copy(req, op.input, out_shape, sstr, 0, f"permute {perm}")


@generator(lp.BroadcastOp)
def gen_broadcast(req: CudaRequest) -> CudaKernel | None:
    """A strided copy whose broadcast dims have source stride 0."""
    op = req.op
    assert isinstance(op, lp.BroadcastOp)
    src_shape, out_shape = list(shape(op.input)), list(shape(op.result))
    k = Kern(req)
    sstr: list[Stride] = []
    for s in broadcast_strides(src_shape, out_shape):
        if isinstance(s, MaybeOne):
            s = CText(f"({k.dim(s.n)} == 1LL ? 0LL : {k.dim(s.stride)})")
        sstr.append(s)
    return strided_copy(req, op.input, out_shape, sstr, 0, "broadcast")


@generator(lp.SliceOp)
def gen_slice(req: CudaRequest) -> CudaKernel | None:
    """A strided copy from offset sum off_d * st_d with strides step_d * st_d."""
    op = req.op
    assert isinstance(op, lp.SliceOp)
    src_shape, out_shape = list(shape(op.input)), list(shape(op.result))
    sp = slice_plan(op, src_shape, out_shape)
    st, offsets, steps = sp.strides, sp.offsets, sp.steps
    k = Kern(req)
    sstr: list[Stride] = []
    for s, step in zip(st, steps, strict=True):
        sstr.append(s * step if isinstance(s, int) else CText(f"{k.dim(s)} * {step}"))
    if sp.base is not None:
        base: Stride = sp.base
    else:
        terms = [f"{o}LL * {k.dim(s)}" for s, o in zip(st, offsets, strict=True) if o]
        base = CText(" + ".join(terms)) if terms else 0
    conds = []
    for d in sp.checks:  # (the verifier checked the static ones)
        sz = k.dim(out_shape[d])
        last = f"({offsets[d]}LL + ({sz} - 1LL) * {steps[d]}LL)"
        conds.append(f"({sz} <= 0LL || {last} < {k.dim(src_shape[d])})")
    guard = " && ".join(conds) if conds else None
    return strided_copy(req, op.input, out_shape, sstr, base, sp.note, guard)


# -- concat ---------------------------------------------------------------------------


@generator(lp.ConcatOp)
def gen_concat(req: CudaRequest) -> CudaKernel | None:
    """out[o, r] (r along dim x inner) from the input whose block holds r."""
    op = req.op
    assert isinstance(op, lp.ConcatOp)
    dt = elem(op.result)
    d = op.dim.data
    out_shape = list(shape(op.result))
    k = Kern(req)
    parts = list(op.inputs)
    outer_d, _, inner_d = split_at(out_shape, d)
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
    if outer_d == 1:
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


def _indexed_copy(
    req: CudaRequest,
    k: Kern,
    op: lp.TakeOp | lp.GatherOp,
    d: int,
    ity: str,
    total_d: Dim,
    split: list[str],
    at: str,
    off: str,
) -> CudaKernel:
    """dst[i] = src[off] for i < total, `ix` = indices[at] wrapped and checked
    (`split`: the lines unravelling i into the names `at` and `off` use)."""
    what = "take" if isinstance(op, lp.TakeOp) else "gather"
    dt, idt = elem(op.input), elem(op.indices)
    t = _UINT[esize(dt)]
    lines = [
        f"  const {t}* __restrict__ src = (const {t}*)in{req.arg_index(op.input)};",
        f"  const {ctype(idt)}* __restrict__ ind = in{req.arg_index(op.indices)};",
        f"  {t}* __restrict__ dst = ({t}*)out0;",
        f"  const long long n = {k.dim(shape(op.input)[d])};",
        grid_loop(ity, k.idx(total_d, ity)) + " {",
        *split,
        *_load_index(idt, "ind", at, "n"),
        f"    if (n <= 0) {{ atomicExch(status, {ERR_INDEX}); dst[i] = ({t})0; "
        "continue; }",
        f"    dst[i] = src[{off}];",
        "  }",
    ]
    return k.kernel(
        "\n".join(lines) + "\n",
        grid_1d(total_d),
        THREADS,
        f"{what} dim {d} [thread per element, {ity} indices]",
        errors={ERR_INDEX: index_message(f"lp.{what} (dim {d})")},
    )


@generator(lp.TakeOp)
def gen_take(req: CudaRequest) -> CudaKernel | None:
    """np.take along dim: out[o, k, j] = x[o, idx[k], j]."""
    op = req.op
    assert isinstance(op, lp.TakeOp)
    if (xs := index_source(op)) is None:
        return None
    d = op.dim.data
    k = Kern(req)
    outer_d, _, inner_d = split_at(xs, d)
    nidx_d = dim_prod(shape(op.indices))
    total_d = dim_prod([outer_d, nidx_d, inner_d])
    ity = index_type(total_d, dim_prod(xs))
    split = unravel(k, "i", [outer_d, nidx_d, inner_d], ["o", "kk", "j"], ity)
    off = f"(o * ({ity})n + ({ity})ix) * {k.idx(inner_d, ity)} + j"
    return _indexed_copy(req, k, op, d, ity, total_d, split, "kk", off)


@generator(lp.GatherOp)
def gen_gather(req: CudaRequest) -> CudaKernel | None:
    """torch.gather: out[i] = x[i with i_dim replaced by idx[i]]."""
    op = req.op
    assert isinstance(op, lp.GatherOp)
    if (xs := index_source(op)) is None:
        return None
    d, ish = op.dim.data, list(shape(op.indices))
    eff = gather_strides(xs, ish, d)
    if eff is None:
        return None  # sizes that may differ: the interpreter checks them
    k = Kern(req)
    total_d = dim_prod(ish)
    ity = index_type(total_d, dim_prod(xs))
    names = [f"i{j}" for j in range(len(ish))]
    terms = [f"{names[j]} * {k.idx(s, ity)}" for j, s in enumerate(eff) if s != 0]
    terms.append(f"({ity})ix * {k.idx(contiguous(xs)[d], ity)}")
    split = unravel(k, "i", ish, names, ity)
    return _indexed_copy(req, k, op, d, ity, total_d, split, "i", " + ".join(terms))


# -- cumsum ---------------------------------------------------------------------------


def saturate(dt: IntType, x: str) -> str:
    """C: the 64-bit integer `x` clamped into `dt` (no-op for 64-bit types)."""
    if dt.bits >= 64:
        return x
    return f"({x} < {dt.min}LL ? {dt.min}LL : {x} > {dt.max}LL ? {dt.max}LL : {x})"


@generator(lp.CumsumOp)
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
    outer_d, n_d, inner_d = split_at(dims, d)
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
