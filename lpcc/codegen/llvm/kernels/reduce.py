"""CPU kernels for reductions, softmax, log-softmax and cumsum.

lp.reduce_sum/mean/max/min over any dimensions run as the loop nest of
`elementwise.py` with a body of one op: reduced dimensions that end the
shape accumulate in vector lanes within a row (one row per output element),
reduced dimensions followed by kept ones accumulate whole vectors of output
columns (one row per block of columns). Floats sum in f32 lane by lane and
the lanes combine pairwise at the end, so sums are reassociated: they agree
with NumPy's pairwise sums to a few f32 roundings per element added (the
tests derive the bound); integer sums are exact in i64 and saturate, and
max/min propagate NaN as NumPy does.

lp.softmax / lp.log_softmax along `dim` view the input as [outer, n, inner]:

* inner == 1 (the last non-trivial dimension): one row per softmax; three
  vectorized passes over the row: the NaN-propagating max m, the sum of
  exp(x - m') (m' = m if finite, else 0, as the interpreter), then
  exp(x - m') / sum (softmax writes e in the first of them and divides it
  in place) or (x - m') - log(sum);
* otherwise vectors of adjacent columns run the same passes down the
  strided dimension (rows: outer x blocks of columns).

lp.cumsum adds in order along `dim` (the interpreter's order, so f32 sums
are bit for bit), one sequential chain per column: a scalar loop when the
dimension is the last one, vectors of columns otherwise. Integers sum in
i64 and each output saturates to its type.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from llvmlite import ir

from lpcc.codegen.llvm.kernel import (
    F32,
    I1,
    I64,
    KernelBuilder,
    KernelRequest,
    NativeKernel,
    elem,
    register,
    shape,
)
from lpcc.codegen.llvm.kernels.elementwise import (
    CHUNK,
    Emitter,
    Region,
    _ceil_div,
    _estimate,
    _is_bool,
    _prod,
    _vt,
    alloca,
    generate_region,
    lanes_for,
    load_value,
    store_value,
    supported_dtype,
    umin,
)
from lpcc.ir.dialect import ops as lp
from lpcc.ir.dtypes import FloatType

# Columns per row of the strided (inner > 1) softmax / cumsum schedule.
COLUMNS = 512


@register(lp.ReduceSumOp)
@register(lp.ReduceMeanOp)
@register(lp.ReduceMaxOp)
@register(lp.ReduceMinOp)
def _reduce(req: KernelRequest) -> NativeKernel | None:
    ret = req.func.body.block.last_op
    if ret is None or list(ret.operands) != list(req.op.results):
        return None
    return generate_region(req, Region.of_op(req))


class _Along:
    """The [outer, n, inner] view of an op along one dimension."""

    def __init__(self, req: KernelRequest) -> None:
        op = req.op
        self.op = op
        self.kb = KernelBuilder(req)
        self.b = self.kb.b
        self.em = Emitter(self.b, self.kb.fail_if)
        self.W = lanes_for(req.isa)
        self.dt_in = elem(op.input)
        self.dt_out = elem(op.result)
        dims = shape(op.input)
        d = op.dim.data
        self.outer_d = _prod(dims[:d])
        self.n_d = dims[d]
        self.inner_d = _prod(dims[d + 1 :])
        self.n = self.kb.dim(self.n_d)
        self.inner = self.kb.dim(self.inner_d)
        self.x = self.kb.inp(0)
        self.y = self.kb.out(0)
        # Lanes of a column vector in the strided schedule (whole cache lines).
        self.wide = 2 * self.W

    def contiguous(self) -> bool:
        return self.inner_d == 1

    def rows(self, body: Callable[[ir.Value], None]) -> NativeKernel:
        """Contiguous schedule: `body(base)` for each row starting at `base`."""
        kb, b = self.kb, self.b
        with kb.loop(kb.begin, kb.end, name="row") as r:
            body(b.mul(r, self.n))
        granule = max(1, CHUNK // max(_estimate(self.n_d), 1))
        return kb.kernel(rows=self.outer_d, granule=granule, note=self.note("rows"))

    def columns(self, body: Callable[[ir.Value, ir.Value, int], None]) -> NativeKernel:
        """Strided schedule: `body(base, col, w)` for each vector of `w`
        columns; element k of the vector's column is at base + k*inner + col."""
        kb, b = self.kb, self.b
        nbc_d = _ceil_div(self.inner_d, COLUMNS)
        nbc = kb.dim(nbc_d)
        with kb.loop(kb.begin, kb.end, name="row") as r:
            o = b.udiv(r, nbc)
            j = b.urem(r, nbc)
            base = b.mul(b.mul(o, self.n), self.inner)
            c0 = b.mul(j, ir.Constant(I64, COLUMNS))
            c1 = umin(b, b.add(c0, ir.Constant(I64, COLUMNS)), self.inner)
            cur = c0
            for w in (self.wide, 1):
                stop = b.sub(c1, ir.Constant(I64, w - 1))
                with kb.loop(cur, stop, w, name=f"c{w}_") as c:
                    body(base, c, w)
                cur = c
        per_row = min(COLUMNS, _estimate(self.inner_d)) * _estimate(self.n_d)
        granule = max(1, CHUNK // max(per_row, 1))
        rows = _prod([self.outer_d, nbc_d])
        return kb.kernel(rows=rows, granule=granule, note=self.note("columns"))

    def note(self, how: str) -> str:
        return f"{self.op.name} along dim {self.op.dim.data}: {how}, {self.W} f32 lanes"

    # -- passes over the n elements of a row (contiguous) or a column vector ----

    def each(
        self,
        base: ir.Value,
        col: ir.Value | None,
        w: int,
        body: Callable[[ir.Value, int], None],
    ) -> None:
        """`body(index, lanes)` over the line: vectors along it when contiguous
        (col is None), else one `w`-lane column vector per element."""
        kb, b = self.kb, self.b
        if col is None:
            cur: ir.Value = ir.Constant(I64, 0)
            for lanes in (self.W, 1):
                stop = b.sub(self.n, ir.Constant(I64, lanes - 1))
                with kb.loop(cur, stop, lanes, name=f"k{lanes}_") as k:
                    body(b.add(base, k), lanes)
                cur = k
        else:
            with kb.loop(0, self.n, name="k") as k:
                body(b.add(base, b.add(b.mul(k, self.inner), col)), w)

    def fold(
        self,
        base: ir.Value,
        col: ir.Value | None,
        w: int,
        value: Callable[[ir.Value, int], ir.Value],
        init: float,
        combine: Callable[[ir.Value, ir.Value], ir.Value],
    ) -> ir.Value:
        """Combine `value(index, lanes)` over the line: a scalar (contiguous)
        or a `w`-lane vector (columns)."""
        em, b = self.em, self.b
        widths = (self.W, 1) if col is None else (w,)
        slots = {}
        for lanes in widths:
            slots[lanes] = alloca(self.kb, _vt(F32, lanes))
            b.store(em.c(_vt(F32, lanes), init), slots[lanes])

        def body(i: ir.Value, lanes: int) -> None:
            s = slots[lanes]
            b.store(combine(b.load(s), value(i, lanes)), s)

        self.each(base, col, w, body)
        total = None
        for lanes in widths:
            v = b.load(slots[lanes])
            while col is None and isinstance(v.type, ir.VectorType):
                h = v.type.count // 2
                idx = ir.VectorType(ir.IntType(32), h)
                lo = b.shuffle_vector(v, v, ir.Constant(idx, list(range(h))))
                hi = b.shuffle_vector(v, v, ir.Constant(idx, list(range(h, 2 * h))))
                v = combine(lo, hi)
                if h == 1:
                    v = b.extract_element(v, ir.Constant(ir.IntType(32), 0))
            total = v if total is None else combine(total, v)
        assert total is not None
        return total


def _softmax(req: KernelRequest) -> NativeKernel | None:
    op = req.op
    if not (supported_dtype(elem(op.input)) and supported_dtype(elem(op.result))):
        return None
    al = _Along(req)
    em, b = al.em, al.b
    log = isinstance(op, lp.LogSoftmaxOp)

    def line(base: ir.Value, col: ir.Value | None, w: int) -> None:
        def x(i: ir.Value, lanes: int) -> ir.Value:
            return load_value(al.kb, al.x, i, al.dt_in, lanes)

        m = al.fold(base, col, w, x, -math.inf, lambda p, q: em.fmax(p, q, True))
        finite = b.fcmp_ordered("<", em.fabs(m), em.c(m, math.inf))
        m = em.sel(finite, m, em.c(m, 0.0))

        def shifted(i: ir.Value, lanes: int) -> ir.Value:
            return b.fsub(x(i, lanes), em.splat(m, lanes))

        def e_of(i: ir.Value, lanes: int) -> ir.Value:
            e = em.exp(shifted(i, lanes))
            if not log:  # keep e in the output; divided in the last pass
                al.kb.store(e, al.y, i)
            return e

        total = al.fold(base, col, w, e_of, -0.0, b.fadd)
        if log:
            lse = em.log(total)

            def out(i: ir.Value, lanes: int) -> None:
                v = b.fsub(shifted(i, lanes), em.splat(lse, lanes))
                store_value(al.kb, em.round_float(v, al.dt_out), al.y, i, al.dt_out)
        else:

            def out(i: ir.Value, lanes: int) -> None:
                e = al.kb.load(al.y, i, _vt(F32, lanes))
                v = b.fdiv(e, em.splat(total, lanes))
                store_value(al.kb, em.round_float(v, al.dt_out), al.y, i, al.dt_out)

        al.each(base, col, w, out)

    if al.contiguous():
        return al.rows(lambda base: line(base, None, 1))
    return al.columns(line)


register(lp.SoftmaxOp)(_softmax)
register(lp.LogSoftmaxOp)(_softmax)


@register(lp.CumsumOp)
def _cumsum(req: KernelRequest) -> NativeKernel | None:
    op = req.op
    dt, out_dt = elem(op.input), elem(op.result)
    if not (supported_dtype(dt) and supported_dtype(out_dt)):
        return None
    al = _Along(req)
    al.wide = 4 * al.W  # a light body: more columns per pass
    em, b = al.em, al.b
    is_float = isinstance(dt, FloatType)
    # A bool cumsum saturates to "any so far": an or-chain.
    acc_t = F32 if is_float else I1 if _is_bool(dt) else I64

    def line(base: ir.Value, col: ir.Value | None, w: int) -> None:
        slot = alloca(al.kb, _vt(acc_t, w))
        b.store(em.c(_vt(acc_t, w), -0.0 if is_float else 0), slot)

        def step(i: ir.Value, lanes: int) -> None:
            v = load_value(al.kb, al.x, i, dt, lanes)
            if is_float:
                acc = b.fadd(b.load(slot), v)
            elif acc_t == I1:
                acc = b.or_(b.load(slot), v)
            else:
                acc = b.add(b.load(slot), em.extend(v, dt, 64))
            b.store(acc, slot)
            if is_float:
                res = em.round_float(acc, out_dt)
            elif acc_t == I1 or out_dt.bits == 64:  # or-chain; int64 wraps
                res = acc
            else:
                res = em.saturate(acc, out_dt, True)
            store_value(al.kb, res, al.y, i, out_dt)

        # One chain per column, in order: scalar steps along a contiguous line.
        kb = al.kb
        if col is None:
            with kb.loop(0, al.n, name="k") as k:
                step(b.add(base, k), 1)
        else:
            with kb.loop(0, al.n, name="k") as k:
                step(b.add(base, b.add(b.mul(k, al.inner), col)), w)

    if al.contiguous():
        return al.rows(lambda base: line(base, None, 1))
    return al.columns(line)
