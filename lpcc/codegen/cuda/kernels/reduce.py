"""CUDA kernels for reductions, softmax and log-softmax.

lp.reduce_sum/mean/max/min: size-1 dimensions are dropped and neighbouring
dimensions of the same kind (kept or reduced) merged, which leaves
alternating groups. Two schedules:

* rows: one reduced group that ends the shape (x viewed as [rows, n],
  n > `SMALL` or dynamic): a block per output row (grid-stride over rows);
  its threads stride along the row (coalesced loads), then combine with
  `__shfl_xor_sync` within each warp and through shared memory across
  warps (a butterfly, so every thread ends with the total). The block size
  follows n: 32..256 threads, four or more elements a thread.
* general: one thread per output element, a loop nest over the reduced
  groups in row-major order. When kept dimensions follow the reduced ones,
  adjacent threads read adjacent addresses (coalesced column sums).

Floats (f32) sum in f32: the order differs from NumPy's pairwise sum, so
sums agree to a few f32 roundings per element added (the tests derive the
bound); mean divides the f32 sum by the count once, as NumPy. max/min
propagate NaN as NumPy does and serve every float type (their result is one
of the inputs, nothing to round). Integers sum exactly in 64 bits (int64
wraps as NumPy's int64 does) and saturate to the result type, as the
interpreter; bool sums are "any". Narrow-float sums and means (the result
needs the codec's rounding) and uint64 sums return None.

lp.softmax / lp.log_softmax along `dim` view x as [outer, n, inner]:
inner == 1 and n > `SMALL` (or dynamic) is a block per row with the block
reduction above for the NaN-propagating max m and for sum(exp(x - m'))
(m' = m if finite, else 0, as the interpreter), then exp(x - m') / sum or
(x - m') - log(sum); otherwise a thread per column runs the same three
passes in order down the strided dimension (adjacent threads, adjacent
columns). f32 only; expf/logf are CUDA's accurate ones (no fast math).
"""

from __future__ import annotations

from dataclasses import dataclass

from lpcc.codegen.cuda.kernel import (
    CudaKernel,
    CudaRequest,
    ctype,
    elem,
    shape,
)
from lpcc.codegen.cuda.kernels.movement import (
    MAX_BLOCKS,
    Kern,
    generator,
    grid_1d,
    grid_loop,
    index_type,
    saturate,
    unravel,
)
from lpcc.codegen.shapes import contiguous, is_f32
from lpcc.ir.dialect import ops as lp
from lpcc.ir.dtypes import DType, FloatType, IntType
from lpcc.ir.symbolic import Dim, dim_min, dim_mul, dim_prod

SMALL = 32  # rows of at most this many static elements: a thread per output
MAX_THREADS = 256


@dataclass(frozen=True)
class Combine:
    """How one reduction accumulates: C type, identity, a op b, and the end."""

    acc: str  # the accumulator's C type
    init: str
    op: str  # C expression over {a} and {b}
    load: str  # C expression turning an element {x} into an accumulator value
    final: str  # C expression of the stored value from {acc} (and {count})


_NAN_MAX = "(({b}) > ({a}) || ({b}) != ({b})) ? ({b}) : ({a})"
_NAN_MIN = "(({b}) < ({a}) || ({b}) != ({b})) ? ({b}) : ({a})"


def _int_min(dt: IntType) -> str:
    if dt.is_signed and dt.bits >= 64:
        return "(-9223372036854775807LL - 1LL)"
    return f"{dt.min}LL"


def combine_for(op: lp.ReduceOp, dt: DType, out: DType) -> Combine | None:
    """The accumulation of reduction `op` over elements of `dt`, or None."""
    kind = type(op)
    if isinstance(dt, FloatType):
        if dt.value_dtype.name != "float32":
            return None
        if kind in (lp.ReduceMaxOp, lp.ReduceMinOp):
            is_max = kind is lp.ReduceMaxOp
            return Combine(
                "float",
                "-INFINITY" if is_max else "INFINITY",
                _NAN_MAX if is_max else _NAN_MIN,
                "{x}",
                "{acc}",
            )
        if not (is_f32(dt) and is_f32(out)):
            return None  # the result needs the codec's rounding
        final = "{acc} / (float){count}" if kind is lp.ReduceMeanOp else "{acc}"
        return Combine("float", "-0.0f", "{a} + {b}", "{x}", final)
    if not isinstance(dt, IntType) or kind is lp.ReduceMeanOp:
        return None
    u64 = dt.value_dtype.name == "uint64"
    if kind is lp.ReduceSumOp:
        if u64:
            return None
        assert isinstance(out, IntType)
        final = f"({ctype(out)})" + saturate(out, "((long long){acc})")
        return Combine(
            "unsigned long long",
            "0ull",
            "{a} + {b}",  # wraps mod 2**64, as NumPy's int64 sum
            "(unsigned long long)(long long)({x})",
            final,
        )
    is_max = kind is lp.ReduceMaxOp
    acc = "unsigned long long" if u64 else "long long"
    if u64:
        init = "0ull" if is_max else "18446744073709551615ull"
    else:
        init = _int_min(dt) if is_max else f"{dt.max}LL"
    cmp = ">" if is_max else "<"
    return Combine(
        acc,
        init,
        f"({{b}}) {cmp} ({{a}}) ? ({{b}}) : ({{a}})",
        f"({acc})({{x}})",
        f"({ctype(out)})({{acc}})",
    )


def block_reduce(c: Combine, var: str, threads: int, tag: str) -> list[str]:
    """C lines combining `var` over the block's threads (all get the total).

    A butterfly of `__shfl_xor_sync` in each warp, then (more than one warp)
    the warp totals through shared memory `tag` and a second butterfly: every
    thread must reach it (no divergent callers)."""
    nw = threads // 32
    op = c.op.format(a=var, b="o_")
    lines = [
        "    for (int s_ = 16; s_ > 0; s_ >>= 1) {",
        f"      const {c.acc} o_ = __shfl_xor_sync(0xffffffffu, {var}, s_);",
        f"      {var} = {op};",
        "    }",
    ]
    if nw > 1:
        lines += [
            f"    if ((threadIdx.x & 31u) == 0u) {tag}[threadIdx.x >> 5] = {var};",
            "    __syncthreads();",
            f"    {var} = {tag}[threadIdx.x & {nw - 1}u];",
            f"    for (int s_ = {nw // 2}; s_ > 0; s_ >>= 1) {{",
            f"      const {c.acc} o_ = __shfl_xor_sync(0xffffffffu, {var}, s_);",
            f"      {var} = {op};",
            "    }",
            "    __syncthreads();",  # the next row may overwrite the totals
        ]
    return lines


def block_threads(n: Dim) -> int:
    """Threads for a row of n elements: 4+ elements a thread, 32..256."""
    if not isinstance(n, int):
        return MAX_THREADS
    t = 32
    while t < MAX_THREADS and 4 * t < n:
        t *= 2
    return t


def _groups(xs: list[Dim], dims: set[int]) -> list[tuple[Dim, bool]]:
    """(size, reduced) groups: size-1 dims dropped, same-kind neighbours merged."""
    out: list[tuple[Dim, bool]] = []
    for d, n in enumerate(xs):
        if n == 1:
            continue
        red = d in dims
        if out and out[-1][1] == red:
            out[-1] = (dim_mul(out[-1][0], n), red)
        else:
            out.append((n, red))
    return out


@generator(lp.ReduceSumOp, lp.ReduceMeanOp, lp.ReduceMaxOp, lp.ReduceMinOp)
def gen_reduce(req: CudaRequest) -> CudaKernel | None:
    """A block per row (trailing reduced dims) or a thread per output."""
    op = req.op
    assert isinstance(op, lp.ReduceOp)
    dt, out = elem(op.input), elem(op.result)
    c = combine_for(op, dt, out)
    if c is None:
        return None
    xs = list(shape(op.input))
    dims = set(lp._array(op.dims))
    if any(xs[d] == 0 for d in dims) and c.init.endswith("INFINITY"):
        return None  # max/min of nothing: the interpreter raises
    groups = _groups(xs, dims)
    count_d = dim_prod([n for n, r in groups if r])
    out_d = dim_prod([n for n, r in groups if not r])
    reduced = [g for g in groups if g[1]]
    k = Kern(req)
    tin = ctype(dt)
    head = [
        f"  const {tin}* __restrict__ x = in0;",
        f"  {ctype(out)}* __restrict__ y = out0;",
    ]
    final = c.final.format(acc="acc", count=f"({k.dim(count_d)})")
    name = op.name
    if (
        len(reduced) == 1
        and groups[-1][1]
        and not (isinstance(count_d, int) and count_d <= SMALL)
    ):
        t = block_threads(count_d)
        ity = index_type(dim_prod(xs))
        n = k.idx(count_d, ity)
        lines = [
            *head,
            f"  __shared__ {c.acc} red_[{max(t // 32, 1)}];",
            f"  for ({ity} row = blockIdx.x; row < {k.idx(out_d, ity)}; "
            "row += gridDim.x) {",
            f"    const {tin}* __restrict__ xr = x + row * {n};",
            f"    {c.acc} acc = {c.init};",
            f"    for ({ity} j = threadIdx.x; j < {n}; j += {t}u) {{",
            f"      const {c.acc} v_ = {c.load.format(x='xr[j]')};",
            f"      acc = {c.op.format(a='acc', b='v_')};",
            "    }",
            *block_reduce(c, "acc", t, "red_"),
            f"    if (threadIdx.x == 0u) y[row] = {final};",
            "  }",
        ]
        grid = (dim_min(out_d, MAX_BLOCKS), 1, 1)
        note = f"{name} [block of {t} per row of {count_d}, shuffle tree]"
        return k.kernel("\n".join(lines) + "\n", grid, t, note)
    # general: a thread per output, loops over the reduced groups
    sizes = [n for n, _ in groups]
    st = contiguous(sizes)
    ity = index_type(dim_prod(xs))
    kept = [(i, n) for i, (n, r) in enumerate(groups) if not r]
    names = [f"o{j}" for j in range(len(kept))]
    base = " + ".join(
        f"{nm} * {k.idx(st[i], ity)}" for nm, (i, _) in zip(names, kept, strict=True)
    )
    lines = [
        *head,
        grid_loop(ity, k.idx(out_d, ity)) + " {",
        *unravel(k, "i", [n for _, n in kept], names, ity),
        f"    const {ity} base = {base or '0'};",
        f"    {c.acc} acc = {c.init};",
    ]
    off = ["base"]
    depth = 0
    for i, (n, r) in enumerate(groups):
        if not r:
            continue
        ind = "    " + "  " * depth
        lines.append(f"{ind}for ({ity} r{i} = 0; r{i} < {k.idx(n, ity)}; ++r{i}) {{")
        off.append(f"r{i} * {k.idx(st[i], ity)}")
        depth += 1
    ind = "    " + "  " * depth
    lines += [
        f"{ind}const {c.acc} v_ = {c.load.format(x='x[' + ' + '.join(off) + ']')};",
        f"{ind}acc = {c.op.format(a='acc', b='v_')};",
    ]
    for d in range(depth - 1, -1, -1):
        lines.append("    " + "  " * d + "}")
    lines += [f"    y[i] = {final};", "  }"]
    note = f"{name} [thread per output, {len(reduced)} reduced group(s) in order]"
    return k.kernel("\n".join(lines) + "\n", grid_1d(out_d), 256, note)


# -- softmax and log-softmax ----------------------------------------------------------

_MAXC = Combine("float", "-INFINITY", _NAN_MAX, "{x}", "{acc}")
_SUMC = Combine("float", "-0.0f", "{a} + {b}", "{x}", "{acc}")


def _softmax(req: CudaRequest) -> CudaKernel | None:
    op = req.op
    assert isinstance(op, lp.SoftmaxOp | lp.LogSoftmaxOp)
    if not (is_f32(elem(op.input)) and is_f32(elem(op.result))):
        return None
    log = isinstance(op, lp.LogSoftmaxOp)
    dims = list(shape(op.input))
    d = op.dim.data
    outer_d, n_d, inner_d = dim_prod(dims[:d]), dims[d], dim_prod(dims[d + 1 :])
    k = Kern(req)
    ity = index_type(dim_prod(dims))
    head = ["  const float* __restrict__ x = in0;", "  float* __restrict__ y = out0;"]
    n = k.idx(n_d, ity)
    max_m = _NAN_MAX.format(a="m", b="v_")
    if inner_d == 1 and not (isinstance(n_d, int) and n_d <= SMALL):
        t = block_threads(n_d)
        loop = f"    for ({ity} j = threadIdx.x; j < {n}; j += {t}u)"
        if log:
            last = [
                "    const float l_ = logf(s);",
                f"{loop} yr[j] = (xr[j] - m) - l_;",
            ]
        else:
            last = [f"{loop} yr[j] = yr[j] / s;"]
        lines = [
            *head,
            f"  __shared__ float red_[{max(t // 32, 1)}];",
            f"  for ({ity} row = blockIdx.x; row < {k.idx(outer_d, ity)}; "
            "row += gridDim.x) {",
            f"    const float* __restrict__ xr = x + row * {n};",
            f"    float* __restrict__ yr = y + row * {n};",
            "    float m = -INFINITY;",
            f"{loop} {{ const float v_ = xr[j]; m = {max_m}; }}",
            *block_reduce(_MAXC, "m", t, "red_"),
            "    if (!(fabsf(m) < INFINITY)) m = 0.0f;",
            "    float s = -0.0f;",
            f"{loop} {{",
            "      const float e_ = expf(xr[j] - m);",
            *([] if log else ["      yr[j] = e_;"]),
            "      s += e_;",
            "    }",
            *block_reduce(_SUMC, "s", t, "red_"),
            *last,
            "  }",
        ]
        grid = (dim_min(outer_d, MAX_BLOCKS), 1, 1)
        note = f"{op.name} dim {d} [block of {t} per row, shuffle tree]"
        return k.kernel("\n".join(lines) + "\n", grid, t, note)
    cols_d = dim_mul(outer_d, inner_d)
    inner = k.idx(inner_d, ity)
    loop = f"    for ({ity} kk = 0; kk < {n}; ++kk)"
    at = "base + kk * inner_"
    if log:
        last = [
            "    const float l_ = logf(s);",
            f"{loop} y[{at}] = (x[{at}] - m) - l_;",
        ]
    else:
        last = [f"{loop} y[{at}] = y[{at}] / s;"]
    lines = [
        *head,
        f"  const {ity} inner_ = {inner};",
        grid_loop(ity, k.idx(cols_d, ity), "c") + " {",
        f"    const {ity} o = c / inner_, j = c - o * inner_;",
        f"    const {ity} base = o * {n} * inner_ + j;",
        "    float m = -INFINITY;",
        f"{loop} {{ const float v_ = x[{at}]; m = {max_m}; }}",
        "    if (!(fabsf(m) < INFINITY)) m = 0.0f;",
        "    float s = -0.0f;",
        f"{loop} {{",
        f"      const float e_ = expf(x[{at}] - m);",
        *([] if log else [f"      y[{at}] = e_;"]),
        "      s += e_;",
        "    }",
        *last,
        "  }",
    ]
    note = f"{op.name} dim {d} [thread per column, in order]"
    return k.kernel("\n".join(lines) + "\n", grid_1d(cols_d), 256, note)


generator(lp.SoftmaxOp, lp.LogSoftmaxOp)(_softmax)
