"""CUDA kernels for elementwise ops and `lp.fused elementwise` regions.

Every elementwise op (add .. pow, cmp, the unary math ops, select, cast),
lp.iota and lp.broadcast, and every fused elementwise region (a chain of
those with splat constants, possibly with sum/mean/max/min reductions whose
results later ops use) becomes one kernel; the per-element math is
`scalar.emit_body` (the interpreter's semantics, see scalar.py).

Shapes. Every value of the body gets an *aligned shape* over the iteration
space S (the broadcast of all shapes): right-aligned (an lp.broadcast may
add leading dims), and a non-keepdim reduction's result (and what is
computed from it) has 1s put back at the reduced dims, which does not move
any element of its row-major buffer. Sizes may be symbolic; two sizes agree
when equal as expressions, or one is the literal 1.

Schedules:

* no reduction: one thread per element of S (256-thread blocks, grid-stride
  loop over the linear index); a yielded value smaller than S is written by
  the threads at index 0 of its broadcast dims.
* reductions (all over the same dims R of S): one block per *row* (a point
  of the other dims, grid-stride over rows). The body splits into stages:
  a reduction's stage is one more than the stages of the reductions its
  input depends on. Pass p loops the block's threads over the reduced
  extent (thread t takes elements t, t + blockDim, ..), computes what the
  stage-p reductions need and accumulates per thread; a warp-shuffle tree
  and a fixed-order sum over the warps' partials (shared memory) give every
  thread the result. Values constant along R ("row" values: row inputs,
  reduction results and what follows from them) are computed once per row
  between passes. A last pass computes and stores the full-size results.
  Full-size inputs are re-read per pass (a softmax reads its row 3 times),
  with fixed order, so results are deterministic. Sums reassociate: f32
  sums are within n * 2^-24 * sum|x| of the interpreter's pairwise sum
  (both are within that of the exact sum; tests check that bound).
  mean divides in f64 and rounds once, as NumPy's mean does.

Returns None (the region is split, each op asked again; a single op runs in
the interpreter) for: element types scalar.py does not handle, non-splat
constants, ops other than elementwise/iota/broadcast/constant/reductions,
reductions over different dims, reductions of a broadcast along a reduced
dim, reductions of reduced-rank values, lp.reduce_mean of ints, and
dynamic sizes that cannot be proven equal or broadcast.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

from xdsl.ir import Operation, SSAValue

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
from lpcc.codegen.cuda.kernels import scalar
from lpcc.codegen.cuda.kernels.scalar import CExpr
from lpcc.ir.dialect import ops as lp
from lpcc.ir.dialect.fused import FusedOp, YieldOp
from lpcc.ir.dtypes import FloatType, IntType
from lpcc.ir.symbolic import Dim

__all__ = ["elementwise_kernel"]

THREADS = 256  # threads per block of the one-thread-per-element schedule
MAX_GRID = 65535  # blocks at most; grid-stride loops cover the rest

_ELEMENTWISE = (
    lp.ElementwiseBinaryOp,
    lp.ElementwiseUnaryOp,
    lp.SelectOp,
    lp.CastOp,
)
_REDUCE = (lp.ReduceSumOp, lp.ReduceMeanOp, lp.ReduceMaxOp, lp.ReduceMinOp)


def _one(d: Dim) -> bool:
    return isinstance(d, int) and d == 1


def _bcast(a: Dim, b: Dim) -> Dim | None:
    if a == b or _one(b):
        return a
    if _one(a):
        return b
    return None


@dataclass
class _Plan:
    """A body to run: its ops, where each value lives, and what it yields."""

    ops: list[Operation]
    args: list[SSAValue]  # body values read from inputs (block args / func args)
    arg_index: dict[SSAValue, int]  # body value -> kernel input index
    outs: list[SSAValue]  # body values written to out0, out1, ..
    rank: int = 0
    space: list[Dim] = field(default_factory=list)  # S
    aligned: dict[SSAValue, list[Dim]] = field(default_factory=dict)
    red_dims: tuple[int, ...] = ()  # R, positions in S


def _align(p: _Plan) -> bool:
    """Aligned shapes for every value and the iteration space; False if none."""
    rank = max(
        [len(shape(v)) for v in p.args]
        + [len(shape(r)) for op in p.ops for r in op.results]
        + [len(shape(o)) for op in p.ops for o in op.operands],
        default=0,
    )
    reds = [op for op in p.ops if isinstance(op, _REDUCE)]
    red_sets = {tuple(lp._array(op.dims)) for op in reds}
    if len(red_sets) > 1:
        return False
    # Reductions' inputs are full rank: their dims are positions in S.
    if any(len(shape(op.input)) != rank for op in reds):
        return False
    red = next(iter(red_sets)) if red_sets else ()
    p.rank, p.red_dims = rank, red
    reduced_rank = rank - len(red)

    def in_reduced_space(s: Sequence[Dim]) -> list[Dim]:
        it = iter(s)
        return [1 if d in red else next(it) for d in range(rank)]

    def right(s: Sequence[Dim]) -> list[Dim]:
        return [1] * (rank - len(s)) + list(s)

    aligned = p.aligned
    reduced_vals: set[SSAValue] = set()
    for op in p.ops:
        if isinstance(op, _REDUCE):
            if op.keepdim is None and reduced_rank != rank:
                reduced_vals.add(op.result)
            continue
        if isinstance(op, _ELEMENTWISE) and any(o in reduced_vals for o in op.operands):
            if any(len(shape(o)) != reduced_rank for o in op.operands):
                return False
            reduced_vals.update(op.operands)
            reduced_vals.update(op.results)
        elif any(o in reduced_vals for o in op.operands):
            return False  # broadcast etc. of a reduced-rank value
    for v in [*p.args, *(r for op in p.ops for r in op.results)]:
        s = shape(v)
        if v in reduced_vals:
            aligned[v] = in_reduced_space(s)
        else:
            aligned[v] = right(s)
    space: list[Dim] = [1] * rank
    for s in aligned.values():
        for d in range(rank):
            b = _bcast(space[d], s[d])
            if b is None:
                return False
            space[d] = b
    p.space = space
    for op in reds:
        s = aligned[op.input]
        if any(s[d] != space[d] for d in red):
            return False  # a broadcast along a reduced dim
    # every op's operands must broadcast to its result (checked by the verifier
    # for literal sizes); an op result must not be smaller than its operands
    for op in p.ops:
        if isinstance(op, _REDUCE):
            continue
        for r in op.results:
            for o in op.operands:
                for d in range(rank):
                    if _bcast(aligned[r][d], aligned[o][d]) != aligned[r][d]:
                        return False
    return True


def _row_valued(p: _Plan, v: SSAValue) -> bool:
    """Constant along the reduced dims (computed once per row)."""
    return all(_one(p.aligned[v][d]) for d in p.red_dims)


@dataclass
class _Writer:
    """Source text and naming for one kernel."""

    req: CudaRequest
    used: list[str] = field(default_factory=list)
    counter: itertools.count = field(default_factory=itertools.count)

    def fresh(self, stem: str) -> str:
        return f"{stem}_{next(self.counter)}"


def _load(w: _Writer, p: _Plan, v: SSAValue, idx: Sequence[str], lines: list[str]):
    off = scalar.offset_expr(p.aligned[v], p.space, idx, w.used)
    name = w.fresh("in")
    dt = elem(v)
    lines.append(f"const {ctype(dt)} {name} = in{p.arg_index[v]}[{off}];")
    return CExpr(name, dt)


def _iota(w: _Writer, p: _Plan, op: lp.IotaOp, idx: Sequence[str], lines: list[str]):
    d = op.dim.data + (p.rank - len(shape(op.result)))
    src = CExpr(f"((lp_i64){idx[d]})", IntType(64, True))
    dt = elem(op.result)
    if dt == src.dtype:
        return src
    return scalar._cast(src, dt, lines, w.fresh)


def _store(
    w: _Writer,
    p: _Plan,
    j: int,
    val: CExpr,
    idx: Sequence[str],
    lines: list[str],
    full: Sequence[int],
):
    """out_j[offset] = val, by the threads at index 0 of its broadcast dims
    among `full` (the dims of S whose index varies in this code)."""
    v = p.outs[j]
    s = p.aligned[v]
    off = scalar.offset_expr(s, p.space, idx, w.used)
    guard = [f"{idx[d]} == 0" for d in full if _one(s[d]) and not _one(p.space[d])]
    st = f"out{j}[{off}] = {val.text};"
    lines.append(f"if ({' && '.join(guard)}) {st}" if guard else st)


def _emit(
    w: _Writer,
    p: _Plan,
    env: dict[SSAValue, CExpr],
    targets: Sequence[SSAValue],
    idx: Sequence[str],
    lines: list[str],
) -> bool:
    """Compute `targets` into env: loads, iotas and ops they depend on."""
    need: set[SSAValue] = set()
    stack = [t for t in targets if t not in env]
    defs = {r: op for op in p.ops for r in op.results}
    while stack:
        v = stack.pop()
        if v in need or v in env:
            continue
        need.add(v)
        if v in defs:
            stack.extend(defs[v].operands)
    for v in p.args:
        if v in need and v not in env:
            env[v] = _load(w, p, v, idx, lines)
    body = []
    for op in p.ops:
        if not any(r in need for r in op.results):
            continue
        if isinstance(op, _REDUCE):
            return False  # a reduction not yet computed: caller's bug
        if isinstance(op, lp.IotaOp):
            c = _iota(w, p, op, idx, lines)
            if c is None:
                return False
            env[op.result] = c
            continue
        body.append(op)
    return scalar.emit_body(body, env, lines, w.fresh)


def _grid(n: Dim, per_block: int) -> Dim:
    if isinstance(n, int):
        return min(-(-n // per_block), MAX_GRID)
    return f"Min(CeilDiv({n}, {per_block}), {MAX_GRID})"


def _prod(dims: Sequence[Dim]) -> Dim:
    ints = 1
    syms: list[str] = []
    for d in dims:
        if isinstance(d, int):
            ints *= d
        else:
            syms.append(f"({d})")
    if not syms:
        return ints
    if ints == 0:
        return 0
    return "*".join(([str(ints)] if ints != 1 else []) + syms)


def _no_reduce(w: _Writer, p: _Plan) -> list[str] | None:
    rank = p.rank
    idx = [f"i{d}" for d in range(rank)]
    total = c_dim(_prod(p.space), w.used)
    body: list[str] = []
    body += scalar.unravel("lin", p.space, idx, w.used) if rank else []
    env: dict[SSAValue, CExpr] = {}
    if not _emit(w, p, env, p.outs, idx, body):
        return None
    for j, v in enumerate(p.outs):
        _store(w, p, j, env[v], idx, body, range(rank))
    return [
        f"  const long long total = {total};",
        f"  for (long long lin = (long long)blockIdx.x * {THREADS} + threadIdx.x; "
        f"lin < total; lin += (long long)gridDim.x * {THREADS}) {{",
        *("    " + ln for ln in body),
        "  }",
    ]


# -- reductions ----------------------------------------------------------------------


def _acc_type(op: Operation) -> str:
    return "float" if isinstance(elem(op.input), FloatType) else "lp_i64"


def _identity(op: Operation) -> str:
    is_f = isinstance(elem(op.input), FloatType)
    if isinstance(op, lp.ReduceMaxOp):
        return (
            "__uint_as_float(0xff800000u)" if is_f else "(-9223372036854775807LL - 1LL)"
        )
    if isinstance(op, lp.ReduceMinOp):
        return "__uint_as_float(0x7f800000u)" if is_f else "9223372036854775807LL"
    return "0.0f" if is_f else "0LL"


def _combine(op: Operation, a: str, b: str) -> str:
    is_f = isinstance(elem(op.input), FloatType)
    if isinstance(op, lp.ReduceSumOp | lp.ReduceMeanOp):
        return (
            f"__fadd_rn({a}, {b})" if is_f else f"(lp_i64)((lp_u64){a} + (lp_u64){b})"
        )
    c = ">" if isinstance(op, lp.ReduceMaxOp) else "<"
    if is_f:  # NaN wins
        return f"(({a} != {a}) ? {a} : ({b} != {b}) ? {b} : ({a} {c} {b}) ? {a} : {b})"
    return f"(({a} {c} {b}) ? {a} : {b})"


def _finish(
    w: _Writer, op: Operation, acc: str, n: str, lines: list[str]
) -> CExpr | None:
    """The reduction's value (rounded to its type) from the block's total."""
    dt = elem(op.result)
    if isinstance(dt, FloatType):
        x = acc
        if isinstance(op, lp.ReduceMeanOp):
            x = w.fresh("mean")
            lines.append(f"float {x} = (float)((double){acc} / (double)({n}));")
        return CExpr(scalar.round_float(x, dt, lines, w.fresh), dt)
    if isinstance(op, lp.ReduceMeanOp):
        return None  # lp.reduce_mean takes floats only
    v = w.fresh("r")
    if isinstance(op, lp.ReduceSumOp) and dt.value_dtype.itemsize < 8:
        lo, hi = f"({int(dt.min)}LL)", f"{int(dt.max)}LL"
        lines.append(
            f"{ctype(dt)} {v} = ({ctype(dt)})({acc} < {lo} ? {lo} : {acc} > {hi} "
            f"? {hi} : {acc});"
        )
    else:
        lines.append(f"{ctype(dt)} {v} = ({ctype(dt)}){acc};")
    return CExpr(v, dt)


def _block_reduce(op: Operation, acc: str, warps: int, slot: int) -> list[str]:
    """All threads end with the block's combined `acc` (fixed order)."""
    t = _acc_type(op)
    sh = "lp_shf" if t == "float" else "lp_shi"
    base = f"{slot * warps}"
    lines = [f"{{ {t} lp_o;"]
    for off in (16, 8, 4, 2, 1):  # every lane shuffles: no divergence here
        lines.append(f"  lp_o = __shfl_xor_sync(0xffffffffu, {acc}, {off});")
        lines.append(f"  {acc} = {_combine(op, acc, 'lp_o')};")
    lines.append(
        f"  if ((threadIdx.x & 31) == 0) {sh}[{base} + (threadIdx.x >> 5)] = {acc};"
    )
    lines.append("  __syncthreads();")
    lines.append(f"  {acc} = {sh}[{base}];")
    for k in range(1, warps):
        lines.append(f"  lp_o = {sh}[{base} + {k}];")
        lines.append(f"  {acc} = {_combine(op, acc, 'lp_o')};")
    lines.append("}")
    return lines


def _with_reduce(w: _Writer, p: _Plan) -> tuple[list[str], int, Dim] | None:
    rank, red = p.rank, p.red_dims
    idx = [f"i{d}" for d in range(rank)]
    outer = [d for d in range(rank) if d not in red]
    rows = _prod([p.space[d] for d in outer])
    extent = _prod([p.space[d] for d in red])
    threads = THREADS
    if isinstance(extent, int):
        threads = 32
        while threads < min(extent, THREADS):
            threads *= 2
    warps = threads // 32
    reds = [op for op in p.ops if isinstance(op, _REDUCE)]
    # stage of each reduction: 1 + the stages of the reductions it depends on
    defs = {r: op for op in p.ops for r in op.results}
    stage: dict[Operation, int] = {}

    def depth(v: SSAValue) -> int:
        op = defs.get(v)
        if op is None:
            return 0
        if isinstance(op, _REDUCE):
            return stage[op]
        return max((depth(o) for o in op.operands), default=0)

    for op in reds:
        stage[op] = depth(op.input) + 1
    n_stages = max(stage.values())
    n_c = c_dim(extent, w.used)
    lines: list[str] = []
    env: dict[SSAValue, CExpr] = {}  # row-level values known so far
    full_outs = [j for j, v in enumerate(p.outs) if not _row_valued(p, v)]
    row_outs = [j for j, v in enumerate(p.outs) if _row_valued(p, v)]
    stored: set[int] = set()
    n_f = sum(1 for op in reds if _acc_type(op) == "float")
    n_i = len(reds) - n_f
    slot_of: dict[Operation, int] = {}
    kf = ki = 0
    for op in reds:
        if _acc_type(op) == "float":
            slot_of[op], kf = kf, kf + 1
        else:
            slot_of[op], ki = ki, ki + 1

    def row_values() -> bool:
        """Emit row values computable now; store row outputs that are ready."""
        for op in p.ops:
            if isinstance(op, _REDUCE) or all(r in env for r in op.results):
                continue
            if not all(_row_valued(p, r) for r in op.results):
                continue
            ready = all(
                o in env or (o in p.arg_index and _row_valued(p, o))
                for o in op.operands
            )
            if ready and not _emit(w, p, env, list(op.results), idx, lines):
                return False
        for j in row_outs:
            v = p.outs[j]
            if j in stored:
                continue
            if v in p.arg_index and v not in env:
                env[v] = _load(w, p, v, idx, lines)
            if v in env:
                tmp: list[str] = []
                _store(w, p, j, env[v], idx, tmp, outer)
                lines.append(f"if (threadIdx.x == 0) {{ {' '.join(tmp)} }}")
                stored.add(j)
        return True

    if not row_values():
        return None
    inner_idx = [idx[d] for d in red]
    for s in range(1, n_stages + 2):
        mine = [op for op in reds if stage[op] == s]
        final = s == n_stages + 1
        if final and not full_outs:
            break
        accs = {op: w.fresh("acc") for op in mine}
        for op, a in accs.items():
            lines.append(f"{_acc_type(op)} {a} = {_identity(op)};")
        body: list[str] = scalar.unravel(
            "k", [p.space[d] for d in red], inner_idx, w.used
        )
        loop_env = dict(env)
        targets = (
            [op.input for op in mine] if not final else [p.outs[j] for j in full_outs]
        )
        if not _emit(w, p, loop_env, targets, idx, body):
            return None
        for op, a in accs.items():
            body.append(f"{a} = {_combine(op, a, loop_env[op.input].text)};")
        if final:
            for j in full_outs:
                _store(w, p, j, loop_env[p.outs[j]], idx, body, range(rank))
        lines.append(f"for (long long k = threadIdx.x; k < n_red; k += {threads}) {{")
        lines += ["  " + ln for ln in body]
        lines.append("}")
        for op, a in accs.items():
            lines += _block_reduce(op, a, warps, slot_of[op])
            val = _finish(w, op, a, "n_red", lines)
            if val is None:
                return None
            env[op.result] = val
        if mine:
            lines.append("__syncthreads();  // the partials' slots are free again")
            if not row_values():
                return None
    if len(stored) != len(row_outs):
        return None
    out = [f"  const long long n_red = {n_c};"]
    if n_f:
        out.append(f"  __shared__ float lp_shf[{n_f * warps}];")
    if n_i:
        out.append(f"  __shared__ long long lp_shi[{n_i * warps}];")
    out.append(
        f"  for (long long row = blockIdx.x; row < {c_dim(rows, w.used)}; "
        "row += gridDim.x) {"
    )
    out += [
        "    " + ln
        for ln in scalar.unravel(
            "row", [p.space[d] for d in outer], [idx[d] for d in outer], w.used
        )
    ]
    out += ["    " + ln for ln in lines]
    out.append("  }")
    grid = rows if isinstance(rows, int) else f"Min({rows}, {MAX_GRID})"
    if isinstance(grid, int):
        grid = min(grid, MAX_GRID)
    return out, threads, grid


def elementwise_kernel(req: CudaRequest, p: _Plan, note: str) -> CudaKernel | None:
    """The kernel running plan `p` (see the module docstring), or None."""
    if not all(scalar.supported_dtype(elem(v)) for v in p.args + p.outs):
        return None
    if not _align(p):
        return None
    w = _Writer(req)
    if p.red_dims:
        got = _with_reduce(w, p)
        if got is None:
            return None
        body, threads, grid = got
    else:
        body = _no_reduce(w, p)
        if body is None:
            return None
        threads = THREADS
        grid = _grid(_prod(p.space), THREADS)
    symbols = tuple(w.used)
    src = (
        f'extern "C" __global__ void __launch_bounds__({threads}) '
        f"{req.entry}({signature(req, symbols)}) {{\n" + "\n".join(body) + "\n}\n"
    )
    return CudaKernel(
        source=src,
        launches=[Launch(req.entry, (grid, 1, 1), (threads, 1, 1))],
        symbols=symbols,
        errors=dict(scalar.ERRORS) if "atomicExch(status" in src else {},
        note=note,
    )


# -- registrations --------------------------------------------------------------------


def _single(req: CudaRequest) -> CudaKernel | None:
    op = req.op
    args = list(req.args)
    index = {v: i for i, v in enumerate(args)}
    p = _Plan([op], args, index, list(op.results))
    return elementwise_kernel(req, p, f"elementwise {op.name}, thread per element")


_SINGLE = (
    lp.AddOp,
    lp.SubOp,
    lp.MulOp,
    lp.DivOp,
    lp.MaxOp,
    lp.MinOp,
    lp.PowOp,
    lp.CmpOp,
    lp.NegOp,
    lp.AbsOp,
    lp.ExpOp,
    lp.LogOp,
    lp.SqrtOp,
    lp.RsqrtOp,
    lp.TanhOp,
    lp.SigmoidOp,
    lp.ErfOp,
    lp.CosOp,
    lp.SinOp,
    lp.SelectOp,
    lp.CastOp,
    lp.IotaOp,
    lp.BroadcastOp,
)
for _cls in _SINGLE:
    register(_cls)(_single)


@register(FusedOp, kind="elementwise")
def _fused(req: CudaRequest) -> CudaKernel | None:
    op = req.op
    assert isinstance(op, FusedOp)
    block = op.body.block
    index = {v: i for i, v in enumerate(req.args)}
    arg_index = {a: index[o] for a, o in zip(block.args, op.operands, strict=True)}
    ops = [o for o in block.ops if not isinstance(o, YieldOp)]
    allowed = (*_ELEMENTWISE, *_REDUCE, lp.IotaOp, lp.BroadcastOp, lp.ConstantOp)
    if not all(isinstance(o, allowed) for o in ops):
        return None
    p = _Plan(ops, list(block.args), arg_index, list(op.yield_op.operands))
    nred = sum(isinstance(o, _REDUCE) for o in ops)
    how = f"block per row, {nred} reductions" if nred else "thread per element"
    return elementwise_kernel(req, p, f"fused elementwise ({len(ops)} ops), {how}")
