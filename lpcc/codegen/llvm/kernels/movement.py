"""CPU kernels for data movement, index and (de)quantization ops.

lp.iota, lp.permute, lp.broadcast, lp.slice, lp.concat, lp.take, lp.gather,
lp.quantize and lp.dequantize as native kernels (`kernel.py` is the contract).
Moving data does not look at the values, so copies go by element *size*
(1, 2, 4 or 8 bytes: an iN per element) and one generator serves every
element type. The work is expressed as rows of a row-major index space, so
the worker pool splits big tensors; a row's inner run is an `llvm.memcpy`
when it is contiguous in both buffers, a splat fill when the source stride
is 0, a strided loop otherwise, and a tiled transpose when a permute moves
the last dimension. Size-1 dimensions are dropped and dimensions that stay
adjacent in both buffers are merged first, so a permute that keeps the last
dimension is one memcpy per row and an identity is one flat copy.

Inputs the interpreter rejects must not make a kernel read outside its
buffers: take/gather indices wrap once (negative indices, as NumPy); an
out-of-range one sets the kernel's status (`KernelBuilder.fail_if`, so the
VM raises as the interpreter does) and is clamped meanwhile; a slice whose
dynamic sizes do not fit its input, and a take or gather from a dynamic
dimension of size 0, write zeros. Anything not
handled here (narrow-float results that need the codec's rounding, integer
quantization targets wider than 32 bits, gathers whose non-indexed sizes
may differ) returns None and runs in the interpreter. The shape and
stride planning is `lpcc.codegen.shapes`, shared with the CUDA kernels.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

from llvmlite import ir

from lpcc.codegen.llvm.kernel import (
    F32,
    F64,
    I1,
    I8,
    I32,
    I64,
    PTR,
    KernelBuilder,
    KernelRequest,
    NativeKernel,
    counted_loop,
    declare,
    elem,
    register,
    shape,
    storage_type,
)
from lpcc.codegen.shapes import (
    MaybeOne,
    broadcast_strides,
    collapse_permute,
    gather_strides,
    index_source,
    merge_dims,
    slice_plan,
    split_at,
)
from lpcc.codegen.shapes import contiguous as _contiguous
from lpcc.codegen.shapes import esize as _esize
from lpcc.codegen.shapes import is_f32 as _is_f32
from lpcc.ir.dialect import ops as lp
from lpcc.ir.dtypes import DType, FloatType, IntType
from lpcc.ir.symbolic import Dim, dim_ceil_div
from lpcc.ir.symbolic import dim_mul as _mul
from lpcc.ir.symbolic import dim_prod as _prod

# Each thread's share of a kernel is at least this many bytes (smaller
# tensors run as one chunk: the pool's hand-off costs more than the copy).
CHUNK_BYTES = 32 * 1024
# A flat contiguous copy is split into rows of this many bytes.
FLAT_ROW_BYTES = 64 * 1024
# A transpose block spans TQ_BYTES of JB_BYTES // esize input rows.
TQ_BYTES = 64
JB_BYTES = 1024
# A dynamic size counts as this many elements when choosing a granule.
GUESS = 64

Stride = int | str | ir.Value
_NOVEC_TAG = "lpcc.novec"


# -- size expressions ----------------------------------------------------------


def _guess(d: Dim) -> int:
    return d if isinstance(d, int) else GUESS


def _granule(row_bytes: int) -> int:
    """Rows per chunk so that each thread gets at least CHUNK_BYTES."""
    return max(1, CHUNK_BYTES // max(row_bytes, 1))


# -- the builder ---------------------------------------------------------------


class _Gen:
    """A KernelBuilder plus the loops and copies the movement kernels share."""

    def __init__(self, req: KernelRequest) -> None:
        self.req = req
        self.kb = KernelBuilder(req)
        self.b = self.kb.b
        self._dims: dict[Dim, ir.Value] = {}
        self._memcpy: ir.Function | None = None
        self._memset: ir.Function | None = None
        self._novec: ir.MDValue | None = None

    # values --------------------------------------------------------------------
    def val(self, x: Stride) -> ir.Value:
        """An i64 for an int, a size expression (cached) or an i64 value."""
        if isinstance(x, ir.Value):
            return x
        if x not in self._dims:
            self._dims[x] = self.kb.dim(x)
        return self._dims[x]

    def i64(self, n: int) -> ir.Constant:
        return ir.Constant(I64, n)

    def smin(self, a: ir.Value, b: ir.Value) -> ir.Value:
        return self.b.select(self.b.icmp_signed("<", a, b), a, b)

    def smax(self, a: ir.Value, b: ir.Value) -> ir.Value:
        return self.b.select(self.b.icmp_signed(">", a, b), a, b)

    def dot(self, idx: Sequence[ir.Value], strides: Sequence[ir.Value]) -> ir.Value:
        """Σ idx_i * strides_i (0 for none)."""
        acc: ir.Value = self.i64(0)
        for i, s in zip(idx, strides, strict=True):
            acc = self.b.add(acc, self.b.mul(i, s))
        return acc

    def var(self, ty: ir.Type, name: str) -> ir.AllocaInstr:
        """A stack slot in the entry block (promoted to registers by LLVM)."""
        with self.b.goto_entry_block():
            self.b.position_at_start(self.kb.fn.entry_basic_block)
            return self.b.alloca(ty, name=name)

    def intrinsic(self, name: str, params: list[ir.Type]) -> ir.Function:
        """`double name(params)` declared once (an LLVM intrinsic on doubles)."""
        return declare(self.kb.module, name, F64, params)

    # memory ----------------------------------------------------------------------
    def memcpy(self, dst: ir.Value, src: ir.Value, nbytes: ir.Value) -> None:
        if self._memcpy is None:
            self._memcpy = ir.Function(
                self.kb.module,
                ir.FunctionType(ir.VoidType(), [PTR, PTR, I64, I1]),
                "llvm.memcpy.p0.p0.i64",
            )
        self.b.call(self._memcpy, [dst, src, nbytes, ir.Constant(I1, 0)])

    def memzero(self, dst: ir.Value, nbytes: ir.Value) -> None:
        if self._memset is None:
            self._memset = ir.Function(
                self.kb.module,
                ir.FunctionType(ir.VoidType(), [PTR, I8, I64, I1]),
                "llvm.memset.p0.i64",
            )
        self.b.call(self._memset, [dst, ir.Constant(I8, 0), nbytes, ir.Constant(I1, 0)])

    def copy_run(
        self,
        dst: ir.Value,
        doff: ir.Value,
        src: ir.Value,
        soff: ir.Value,
        n: ir.Value,
        sstride: int | ir.Value,
        ety: ir.IntType,
    ) -> None:
        """dst[doff + j] = src[soff + j * sstride] for j < n (elements of `ety`)."""
        kb, b = self.kb, self.b
        esize = ety.width // 8
        if isinstance(sstride, ir.Constant) and isinstance(sstride.constant, int):
            sstride = sstride.constant
        if sstride == 1:
            self.memcpy(
                kb.gep(dst, doff, ety),
                kb.gep(src, soff, ety),
                b.mul(n, self.i64(esize)),
            )
        elif sstride == 0:
            v = kb.load(src, soff, ety)
            with kb.loop(0, n, name="f") as j:
                kb.store(v, dst, b.add(doff, j))
        elif isinstance(sstride, int):
            with kb.loop(0, n, name="s") as j:
                v = kb.load(src, b.add(soff, b.mul(j, self.i64(sstride))), ety)
                kb.store(v, dst, b.add(doff, j))
        else:  # dynamic stride: pick the path at run time
            one = b.icmp_signed("==", sstride, self.i64(1))
            with b.if_else(one) as (then, other):
                with then:
                    self.copy_run(dst, doff, src, soff, n, 1, ety)
                with other:
                    zero = b.icmp_signed("==", sstride, self.i64(0))
                    with b.if_else(zero) as (then0, other0):
                        with then0:
                            self.copy_run(dst, doff, src, soff, n, 0, ety)
                        with other0, kb.loop(0, n, name="s") as j:
                            v = kb.load(src, b.add(soff, b.mul(j, sstride)), ety)
                            kb.store(v, dst, b.add(doff, j))

    # loops -----------------------------------------------------------------------
    @contextlib.contextmanager
    def rows(
        self, dims: Sequence[ir.Value]
    ) -> Iterator[tuple[ir.Value, list[ir.Value]]]:
        """For r in [begin, end): (r, r's multi-index over `dims`, row-major).

        The index is divided out of `begin` once and then counted up with
        carries, so a row costs no division.
        """
        kb, b = self.kb, self.b
        slots = [self.var(I64, f"ix{k}") for k in range(len(dims))]
        rem = kb.begin
        for k in range(len(dims) - 1, -1, -1):
            if k == 0:
                b.store(rem, slots[k])
            else:
                b.store(b.urem(rem, dims[k]), slots[k])
                rem = b.udiv(rem, dims[k])
        with kb.loop(kb.begin, kb.end, name="r") as r:
            idx = [b.load(s) for s in slots]
            yield r, idx
            carry: ir.Value = self.i64(1)
            for k in range(len(dims) - 1, -1, -1):
                nxt = b.add(idx[k], carry)
                if k == 0:
                    b.store(nxt, slots[k])
                    break
                wrap = b.icmp_unsigned("==", nxt, dims[k])
                b.store(b.select(wrap, self.i64(0), nxt), slots[k])
                carry = b.zext(wrap, I64)

    @contextlib.contextmanager
    def scalar_loop(
        self, start: ir.Value, stop: ir.Value, name: str = "e"
    ) -> Iterator[ir.Value]:
        """`kb.loop` that LLVM must not vectorize: edge loops with strided
        loads, where it would emit long element-insert sequences that cost
        compile time and code size for a handful of elements."""
        if self._novec is None:
            self._novec = self.kb.module.add_metadata(
                [ir.MetaDataString(self.kb.module, _NOVEC_TAG)]
            )
        meta = ("llvm.loop", self._novec)
        with counted_loop(self.b, start, stop, 1, name, latch_metadata=meta) as i:
            yield i

    def kernel(self, rows: Dim, row_bytes: int, note: str) -> NativeKernel:
        nk = self.kb.kernel(rows=rows, granule=_granule(row_bytes), note=note)
        if self._novec is not None:  # make the tag a real loop ID (self-reference)
            ref = self._novec.get_reference()
            lines = []
            for line in nk.ir.splitlines():
                if line.startswith(f"{ref} = "):
                    line = (
                        f'{ref} = distinct !{{{ref}, !{{!"llvm.loop.vectorize.enable", '
                        "i1 false}}"
                    )
                lines.append(line)
            nk.ir = "\n".join(lines) + "\n"
        return nk


# -- strided copies (permute without transpose, broadcast, slice) --------------


def _strided_copy(
    g: _Gen,
    out_shape: Sequence[Dim],
    sstr: Sequence[Stride],
    sbase: Stride,
    src: int,
    dt: DType,
    note: str,
    guard: ir.Value | None = None,
) -> NativeKernel:
    """out[i...] = in[sbase + Σ i_k * sstr_k]; `out` contiguous of `out_shape`.

    With `guard` (an i1), rows where it is false are zero-filled instead.
    """
    esize = _esize(dt)
    ety = ir.IntType(8 * esize)
    sizes, (ss, _) = merge_dims(out_shape, sstr, _contiguous(out_shape))
    kb, b = g.kb, g.b
    sp, dp = kb.inp(src), kb.out(0)
    base = g.val(sbase)
    if not sizes:  # one element
        sizes, ss = [1], [1]
    inner, istride = sizes[-1], ss[-1]
    flat = len(sizes) == 1 and istride == 1
    if flat:  # split a long contiguous copy into fixed rows
        per = max(1, FLAT_ROW_BYTES // esize)
        total = g.val(inner)
        if isinstance(inner, int):
            rows: Dim = -(-inner // per)
        else:
            rows = f"CeilDiv({inner}, {per})"
        row_bytes = per * esize
        with g.rows([]) as (r, _):
            start = b.mul(r, g.i64(per))
            n = g.smin(g.i64(per), b.sub(total, start))
            _guarded(
                g,
                guard,
                dp,
                start,
                n,
                ety,
                lambda: g.copy_run(dp, start, sp, b.add(base, start), n, 1, ety),
            )
        return g.kernel(rows, row_bytes, note + " [flat memcpy]")
    row_dims = [g.val(d) for d in sizes[:-1]]
    row_ss = [g.val(s) for s in ss[:-1]]
    n = g.val(inner)
    st: int | ir.Value = istride if isinstance(istride, int) else g.val(istride)
    with g.rows(row_dims) as (r, idx):
        soff = b.add(base, g.dot(idx, row_ss))
        doff = b.mul(r, n)
        _guarded(
            g,
            guard,
            dp,
            doff,
            n,
            ety,
            lambda: g.copy_run(dp, doff, sp, soff, n, st, ety),
        )
    how = {1: "memcpy", 0: "fill"}.get(st, "strided") if isinstance(st, int) else "any"
    return g.kernel(_prod(sizes[:-1]), _guess(inner) * esize, f"{note} [rows x {how}]")


def _guarded(
    g: _Gen,
    guard: ir.Value | None,
    dp: ir.Value,
    doff: ir.Value,
    n: ir.Value,
    ety: ir.IntType,
    body: Callable[[], None],
) -> None:
    """body() if `guard` holds (or is None), else zero dp[doff : doff + n]."""
    if guard is None:
        body()
        return
    with g.b.if_else(guard) as (then, other):
        with then:
            body()
        with other:
            g.memzero(g.kb.gep(dp, doff, ety), g.b.mul(n, g.i64(ety.width // 8)))


# -- iota ----------------------------------------------------------------------


@register(lp.IotaOp)
def gen_iota(req: KernelRequest) -> NativeKernel | None:
    """result[..., i_dim, ...] = i_dim, saturated to an integer type."""
    op = req.op
    assert isinstance(op, lp.IotaOp)
    dt = elem(op.result)
    dims = list(shape(op.result))
    d = op.dim.data
    if isinstance(dt, IntType):
        lo, hi = dt.min, dt.max
    elif isinstance(dt, FloatType):
        n = dims[d]
        exact = _is_f32(dt) or (
            isinstance(n, int) and n - 1 <= min(2 ** (dt.man + 1), dt.max)
        )
        if not exact:
            return None  # values the type would round: the codec's job
        lo, hi = None, None
    else:
        return None
    ty = storage_type(dt)
    g = _Gen(req)
    b = g.b

    def convert(i: ir.Value) -> ir.Value:
        if lo is None:
            return b.sitofp(i, ty)
        if hi < 2**63 - 1:
            i = g.smin(i, g.i64(int(hi)))
        if lo > -(2**63):
            i = g.smax(i, g.i64(int(lo)))
        return i if ty.width == 64 else b.trunc(i, ty)

    out = g.kb.out(0)
    inner = g.val(dims[-1])
    row_dims = [g.val(x) for x in dims[:-1]]
    with g.rows(row_dims) as (r, idx):
        base = b.mul(r, inner)
        if d == len(dims) - 1:
            with g.kb.loop(0, inner, name="j") as j:
                g.kb.store(convert(j), out, b.add(base, j))
        else:
            v = convert(idx[d])
            with g.kb.loop(0, inner, name="j") as j:
                g.kb.store(v, out, b.add(base, j))
    esize = _esize(dt)
    return g.kernel(_prod(dims[:-1]), _guess(dims[-1]) * esize, "iota [rows]")


# -- permute -------------------------------------------------------------------


@register(lp.PermuteOp)
def gen_permute(req: KernelRequest) -> NativeKernel | None:
    """A strided copy, or a tiled transpose when the last dimension moves."""
    op = req.op
    assert isinstance(op, lp.PermuteOp)
    dt = elem(op.input)
    src_shape = list(shape(op.input))
    perm = list(lp._array(op.perm))
    s, p = collapse_permute(src_shape, perm)
    src = req.arg_index(op.input)
    m = len(s)
    st = _contiguous(s)
    out_shape = [s[x] for x in p]
    g = _Gen(req)
    if m <= 1 or p[-1] == m - 1:
        return _strided_copy(
            g, out_shape, [st[x] for x in p], 0, src, dt, f"permute {perm}"
        )
    return _transpose(g, s, p, src, dt, perm)


def _tile(esize: int) -> int:
    """Elements per tile side: one 32-byte vector per tile row (16 bytes for
    bytes: a 32x32 byte transpose compiles for a second and spills)."""
    return 16 if esize == 1 else 32 // esize


def _transpose(
    g: _Gen, s: list[Dim], p: list[int], src: int, dt: DType, perm: list[int]
) -> NativeKernel:
    """out[o] = in[Σ o_i * st[p_i]] where the input's last dim moves to `q`.

    A row is one block: (batch index, block of JB along the output's last
    dim, block of TQ along q), blocks along q innermost so a thread walks
    the output row by row while JB input rows stay hot (TLB and cache
    friendly for any size). TQ * esize is a cache line of the input. Inside
    a block, whole T x T tiles are T vector loads along q, a shuffle
    transpose and T vector stores along the last dim; edges go one by one.
    """
    kb, b = g.kb, g.b
    esize = _esize(dt)
    ety = ir.IntType(8 * esize)
    m = len(s)
    st = _contiguous(s)
    o = [s[x] for x in p]
    ost = _contiguous(o)
    q = p.index(m - 1)
    last = m - 1
    batch = [i for i in range(m) if i not in (q, last)]
    T = _tile(esize)
    TQ = max(T, TQ_BYTES // esize)
    JB = max(T, JB_BYTES // esize)
    oq, ol = g.val(o[q]), g.val(o[last])
    nq = b.udiv(b.add(oq, g.i64(TQ - 1)), g.i64(TQ))
    nj = b.udiv(b.add(ol, g.i64(JB - 1)), g.i64(JB))
    bdims = [g.val(o[i]) for i in batch]
    bsst = [g.val(st[p[i]]) for i in batch]
    bdst = [g.val(ost[i]) for i in batch]
    sp_ = g.val(st[p[last]])  # input stride along the output's last dim
    dq = g.val(ost[q])  # output stride along q
    sp, dp = kb.inp(src), kb.out(0)
    vty = ir.VectorType(ety, T)

    def whole(n: ir.Value, start: ir.Value, stop: ir.Value) -> ir.Value:
        return b.add(start, b.mul(b.udiv(b.sub(stop, start), g.i64(n)), g.i64(n)))

    with g.rows([*bdims, nj, nq]) as (_, idx):
        sbase = g.dot(idx[:-2], bsst)
        dbase = g.dot(idx[:-2], bdst)
        i0 = b.mul(idx[-1], g.i64(TQ))
        i1 = g.smin(b.add(i0, g.i64(TQ)), oq)
        ja = b.mul(idx[-2], g.i64(JB))
        jz = g.smin(b.add(ja, g.i64(JB)), ol)
        i_full, j_full = whole(T, i0, i1), whole(T, ja, jz)
        with (
            kb.loop(ja, j_full, step=T, name="jt") as j0,
            kb.loop(i0, i_full, step=T, name="it") as k0,
        ):
            src_rows = [
                kb.load(
                    sp,
                    b.add(b.add(sbase, k0), b.mul(b.add(j0, g.i64(jj)), sp_)),
                    vty,
                )
                for jj in range(T)
            ]
            for i, row in enumerate(_transpose_tile(b, src_rows)):
                kb.store(
                    row, dp, b.add(b.add(dbase, b.mul(b.add(k0, g.i64(i)), dq)), j0)
                )
        # the edges, element by element: columns past j_full, rows past i_full
        for ka, kz, jb, je in ((i0, i1, j_full, jz), (i_full, i1, ja, j_full)):
            with g.scalar_loop(ka, kz, name="ei") as i:
                srow = b.add(sbase, i)
                drow = b.add(dbase, b.mul(i, dq))
                with g.scalar_loop(jb, je, name="ej") as j:
                    v = kb.load(sp, b.add(srow, b.mul(j, sp_)), ety)
                    kb.store(v, dp, b.add(drow, j))
    rows = _prod(
        [*(o[i] for i in batch), dim_ceil_div(o[last], JB), dim_ceil_div(o[q], TQ)]
    )
    note = f"permute {perm} [tiled transpose {T}x{T} in {JB}x{TQ} blocks]"
    return g.kernel(rows, TQ * JB * esize, note)


def _transpose_tile(b: ir.IRBuilder, rows: list[ir.Value]) -> list[ir.Value]:
    """Transpose T vectors of T elements (T a power of two) with shuffles.

    log2(T) rounds of pairing row r with row r + T/2 and interleaving them
    (low halves into row 2r, high halves into row 2r+1): each round rotates
    the bits of (row, column) by one, so log2(T) rounds swap them. Generic
    shufflevector: LLVM picks unpck/perm instructions for the ISA.
    """
    T = len(rows)
    h = T // 2
    lo = ir.Constant(
        ir.VectorType(ir.IntType(32), T), [k // 2 + (k % 2) * T for k in range(T)]
    )
    hi = ir.Constant(
        ir.VectorType(ir.IntType(32), T), [h + k // 2 + (k % 2) * T for k in range(T)]
    )
    for _ in range(T.bit_length() - 1):
        new: list[ir.Value] = []
        for r in range(h):
            new.append(b.shuffle_vector(rows[r], rows[r + h], lo))
            new.append(b.shuffle_vector(rows[r], rows[r + h], hi))
        rows = new
    return rows


# -- broadcast and slice -------------------------------------------------------


@register(lp.BroadcastOp)
def gen_broadcast(req: KernelRequest) -> NativeKernel | None:
    """A strided copy whose broadcast dims have source stride 0."""
    op = req.op
    assert isinstance(op, lp.BroadcastOp)
    dt = elem(op.input)
    src_shape, out_shape = list(shape(op.input)), list(shape(op.result))
    g = _Gen(req)
    sstr: list[Stride] = []
    for s in broadcast_strides(src_shape, out_shape):
        if isinstance(s, MaybeOne):  # a dynamic size that may be 1 at run time
            is_one = g.b.icmp_signed("==", g.val(s.n), g.i64(1))
            s = g.b.select(is_one, g.i64(0), g.val(s.stride))
        sstr.append(s)
    return _strided_copy(
        g, out_shape, sstr, 0, req.arg_index(op.input), dt, "broadcast"
    )


@register(lp.SliceOp)
def gen_slice(req: KernelRequest) -> NativeKernel | None:
    """A strided copy from offset Σ off_d * st_d with strides step_d * st_d."""
    op = req.op
    assert isinstance(op, lp.SliceOp)
    dt = elem(op.input)
    src_shape, out_shape = list(shape(op.input)), list(shape(op.result))
    sp = slice_plan(op, src_shape, out_shape)
    st, offsets, steps = sp.strides, sp.offsets, sp.steps
    g = _Gen(req)
    b = g.b
    sstr: list[Stride] = []
    for s, step in zip(st, steps, strict=True):
        if isinstance(s, int):
            sstr.append(s * step)
        else:
            sstr.append(b.mul(g.val(s), g.i64(step)))
    base: Stride
    if sp.base is not None:
        base = sp.base
    else:
        base = g.dot([g.i64(o) for o in offsets], [g.val(s) for s in st])
    guard = None
    if sp.checks:  # the interpreter raises where a slice overruns: write zeros
        guard = ir.Constant(I1, 1)
        for d in sp.checks:
            size = g.val(out_shape[d])
            lastread = b.add(
                g.i64(offsets[d]), b.mul(b.sub(size, g.i64(1)), g.i64(steps[d]))
            )
            fits = b.or_(
                b.icmp_signed("<=", size, g.i64(0)),
                b.icmp_signed("<", lastread, g.val(src_shape[d])),
            )
            guard = b.and_(guard, fits)
    return _strided_copy(
        g, out_shape, sstr, base, req.arg_index(op.input), dt, sp.note, guard
    )


# -- concat --------------------------------------------------------------------


@register(lp.ConcatOp)
def gen_concat(req: KernelRequest) -> NativeKernel | None:
    """Rows (outer index, input): each copies one contiguous block."""
    op = req.op
    assert isinstance(op, lp.ConcatOp)
    dt = elem(op.result)
    d = op.dim.data
    out_shape = list(shape(op.result))
    esize = _esize(dt)
    ety = ir.IntType(8 * esize)
    g = _Gen(req)
    kb, b = g.kb, g.b
    outer_d, _, inner_d = split_at(out_shape, d)
    inner = g.val(inner_d)
    outer = g.val(outer_d)
    parts = list(op.inputs)
    sizes = [g.val(shape(v)[d]) for v in parts]
    blocks = [b.mul(n, inner) for n in sizes]  # elements per outer index
    offs: list[ir.Value] = []
    acc: ir.Value = g.i64(0)
    for blk in blocks:
        offs.append(acc)
        acc = b.add(acc, blk)
    row_out = acc  # = O[d] * inner
    dp = kb.out(0)
    with g.rows([outer, g.i64(len(parts))]) as (_, idx):
        o, t = idx
        done = kb.fn.append_basic_block("cat.next")
        sw = b.switch(t, done)
        for k, v in enumerate(parts):
            case = kb.fn.append_basic_block(f"cat.{k}")
            sw.add_case(ir.Constant(I64, k), case)
            b.position_at_end(case)
            sp = kb.inp(req.arg_index(v))
            n = blocks[k]
            g.memcpy(
                kb.gep(dp, b.add(b.mul(o, row_out), offs[k]), ety),
                kb.gep(sp, b.mul(o, n), ety),
                b.mul(n, g.i64(esize)),
            )
            b.branch(done)
        b.position_at_end(done)
    avg = sum(_guess(shape(v)[d]) for v in parts) // len(parts)
    rows = _mul(outer_d, len(parts))
    return g.kernel(rows, avg * _guess(inner_d) * esize, f"concat dim {d} [memcpy]")


# -- take and gather -----------------------------------------------------------


def _index(
    g: _Gen, idx_ptr: ir.Value, k: ir.Value, idt: DType, n: ir.Value, what: str
) -> ir.Value:
    """indices[k] as an i64 in [0, n): negative ones count from the end (NumPy).

    An out-of-range one sets the kernel's status (the VM raises, as the
    interpreter does) and is clamped meanwhile, so no read leaves the input.
    """
    b = g.b
    ty = storage_type(idt)
    v = g.kb.load(idx_ptr, k, ty)
    if ty.width < 64:
        v = b.sext(v, I64) if idt.is_signed else b.zext(v, I64)
    if idt.is_signed:
        bad = b.or_(b.icmp_signed("<", v, b.neg(n)), b.icmp_signed(">=", v, n))
    else:
        bad = b.icmp_unsigned(">=", v, n)
    g.kb.fail_if(
        bad,
        f"{what}: an index is out of range for the indexed dimension; indices "
        "must lie in [-n, n) for a dimension of size n",
    )
    if idt.is_signed:
        v = b.select(b.icmp_signed("<", v, g.i64(0)), b.add(v, n), v)
        v = g.smax(v, g.i64(0))
    hi = b.sub(n, g.i64(1))
    if idt.is_signed or ty.width < 64:
        return g.smin(v, hi)
    return b.select(b.icmp_unsigned("<", v, n), v, hi)  # uint64 indices


@register(lp.TakeOp)
def gen_take(req: KernelRequest) -> NativeKernel | None:
    """Rows (outer, index): each copies one inner block of the input."""
    op = req.op
    assert isinstance(op, lp.TakeOp)
    if (xs := index_source(op)) is None:
        return None
    dt, idt, d = elem(op.input), elem(op.indices), op.dim.data
    esize = _esize(dt)
    ety = ir.IntType(8 * esize)
    g = _Gen(req)
    kb, b = g.kb, g.b
    outer_d, _, inner_d = split_at(xs, d)
    nidx_d = _prod(shape(op.indices))
    inner, outer, nidx, n = (g.val(x) for x in (inner_d, outer_d, nidx_d, xs[d]))
    sp, ip, dp = (
        kb.inp(req.arg_index(op.input)),
        kb.inp(req.arg_index(op.indices)),
        kb.out(0),
    )
    guard = None if isinstance(xs[d], int) else b.icmp_signed(">", n, g.i64(0))
    with g.rows([outer, nidx]) as (r, (o, k)):
        doff = b.mul(r, inner)

        def body() -> None:
            i = _index(g, ip, k, idt, n, f"lp.take (dim {d})")
            soff = b.mul(b.add(b.mul(o, n), i), inner)
            g.copy_run(dp, doff, sp, soff, inner, 1, ety)

        _guarded(g, guard, dp, doff, inner, ety, body)
    rows = _mul(outer_d, nidx_d)
    return g.kernel(rows, _guess(inner_d) * esize, f"take dim {d} [rows x memcpy]")


@register(lp.GatherOp)
def gen_gather(req: KernelRequest) -> NativeKernel | None:
    """torch.gather: rows over the index's outer dims, a loop over its last."""
    op = req.op
    assert isinstance(op, lp.GatherOp)
    if (xs := index_source(op)) is None:
        return None
    dt, idt, d = elem(op.input), elem(op.indices), op.dim.data
    ish = list(shape(op.indices))
    eff = gather_strides(xs, ish, d)
    if eff is None:
        return None  # sizes that may differ: the interpreter checks them
    xst = _contiguous(xs)
    esize = _esize(dt)
    ety = ir.IntType(8 * esize)
    g = _Gen(req)
    kb, b = g.kb, g.b
    rank = len(xs)
    n = g.val(xs[d])
    sd = g.val(xst[d])
    estr = [g.val(x) for x in eff]
    inner = g.val(ish[-1])
    sp, ip, dp = (
        kb.inp(req.arg_index(op.input)),
        kb.inp(req.arg_index(op.indices)),
        kb.out(0),
    )
    guard = None if isinstance(xs[d], int) else b.icmp_signed(">", n, g.i64(0))
    with g.rows([g.val(x) for x in ish[:-1]]) as (r, idx):
        base = g.dot(idx, estr[: rank - 1])
        roff = b.mul(r, inner)

        def body() -> None:
            with kb.loop(0, inner, name="j") as j:
                k = b.add(roff, j)
                i = _index(g, ip, k, idt, n, f"lp.gather (dim {d})")
                soff = b.add(b.add(base, b.mul(j, estr[-1])), b.mul(i, sd))
                kb.store(kb.load(sp, soff, ety), dp, k)

        _guarded(g, guard, dp, roff, inner, ety, body)
    return g.kernel(_prod(ish[:-1]), _guess(ish[-1]) * esize, f"gather dim {d} [rows]")


# -- quantize and dequantize ---------------------------------------------------


def _to_f64(g: _Gen, v: ir.Value, dt: DType) -> ir.Value:
    """A loaded value-domain element as a double, exactly (NumPy's astype)."""
    b = g.b
    if isinstance(v.type, ir.DoubleType):
        return v
    if isinstance(v.type, ir.FloatType):
        return b.fpext(v, F64)
    signed = isinstance(dt, IntType) and dt.is_signed
    return b.sitofp(v, F64) if signed else b.uitofp(v, F64)


def _round_half_even(g: _Gen, x: ir.Value) -> ir.Value:
    """np.rint for doubles with plain arithmetic (no libm call on any ISA):
    adding and removing 2**52 rounds |x| < 2**52 to nearest, ties to even."""
    b = g.b
    fabs = g.intrinsic("llvm.fabs.f64", [F64])
    copysign = g.intrinsic("llvm.copysign.f64", [F64, F64])
    a = b.call(fabs, [x])
    big = ir.Constant(F64, 2.0**52)
    r = b.fsub(b.fadd(a, big), big)
    r = b.select(b.fcmp_ordered("<", a, big), r, a)
    return b.call(copysign, [r, x])


def _gen_quant(req: KernelRequest, quantize: bool) -> NativeKernel | None:
    """Rows over the outer dims; the last dim in groups of its block size,
    each group with its scale (and zero) in registers."""
    op = req.op
    assert isinstance(op, lp.QuantizeOp | lp.DequantizeOp)
    src_dt, dst_dt = elem(op.input), elem(op.result)
    s_dt = elem(op.scale)
    z_dt = elem(op.zero) if op.zero is not None else None
    if quantize:
        if isinstance(dst_dt, IntType):
            if dst_dt.bits > 32:
                return None
        elif not _is_f32(dst_dt):
            return None  # narrow float targets round with the codec
    elif not _is_f32(dst_dt):
        return None
    xs, block = list(shape(op.input)), list(lp._array(op.block))
    ss = list(shape(op.scale))
    zs = list(shape(op.zero)) if op.zero is not None else None
    g = _Gen(req)
    kb, b = g.kb, g.b
    xty, sty, oty = storage_type(src_dt), storage_type(s_dt), storage_type(dst_dt)
    zty = storage_type(z_dt) if z_dt is not None else None
    xp, sp, dp = (
        kb.inp(req.arg_index(op.input)),
        kb.inp(req.arg_index(op.scale)),
        kb.out(0),
    )
    zp = kb.inp(req.arg_index(op.zero)) if op.zero is not None else None
    rank = len(xs)
    if rank == 0:
        xs, block, ss, zs = [1], [1], [1], ([1] if zs is not None else None)
    sstr = [g.val(x) for x in _contiguous(ss)]
    zstr = [g.val(x) for x in _contiguous(zs)] if zs is not None else None
    inner = g.val(xs[-1])
    bl = block[-1]
    if isinstance(dst_dt, IntType):
        lo, hi = (
            ir.Constant(F64, float(dst_dt.min)),
            ir.Constant(F64, float(dst_dt.max)),
        )

    # Integer codes of <= 16 bits: q - z is exact in i32 and f32, and the f32
    # product rounds the exact product once, as the float64 math then the
    # cast to f32 does: same bits, twice the vector width.
    small = [isinstance(t, IntType) and t.bits <= 16 for t in (src_dt, z_dt)]
    f32_math = not quantize and small[0] and (z_dt is None or small[1]) and sty == F32

    def ext32(v: ir.Value, t: DType) -> ir.Value:
        if v.type.width == 32:  # type: ignore[attr-defined]
            return v
        return b.sext(v, I32) if t.is_signed else b.zext(v, I32)

    def f(x: ir.Value, s: ir.Value, z: ir.Value | None) -> ir.Value:
        if f32_math:
            d = ext32(x, src_dt)
            if z is not None:
                d = b.sub(d, ext32(z, z_dt))  # type: ignore[arg-type]
            return b.fmul(b.sitofp(d, F32), s)
        xd, sd = _to_f64(g, x, src_dt), _to_f64(g, s, s_dt)
        zd = _to_f64(g, z, z_dt) if z is not None else None  # type: ignore[arg-type]
        if not quantize:
            q = b.fsub(xd, zd) if zd is not None else xd
            return b.fptrunc(b.fmul(q, sd), F32)
        q = b.fdiv(xd, sd)
        if zd is not None:
            q = b.fadd(q, zd)
        if not isinstance(dst_dt, IntType):
            return b.fptrunc(q, F32)
        q = b.select(b.fcmp_unordered("uno", q, q), ir.Constant(F64, 0.0), q)
        q = _round_half_even(g, q)
        q = b.select(b.fcmp_ordered("<", q, lo), lo, q)
        q = b.select(b.fcmp_ordered(">", q, hi), hi, q)
        if dst_dt.is_signed:
            return b.fptosi(q, oty)
        return b.fptoui(q, oty)

    row_dims = [g.val(x) for x in xs[:-1]]
    with g.rows(row_dims) as (r, idx):
        xbase = b.mul(r, inner)
        blk = [
            b.udiv(i, g.i64(bs)) if bs > 1 else i
            for i, bs in zip(idx, block, strict=False)
        ]
        sbase = g.dot(blk, sstr[:-1])
        zbase = g.dot(blk, zstr[:-1]) if zstr is not None else None

        def scale_at(gidx: ir.Value) -> tuple[ir.Value, ir.Value | None]:
            s = kb.load(sp, b.add(sbase, gidx), sty)
            z = None
            if zp is not None:
                z = kb.load(zp, b.add(zbase, gidx), zty)  # type: ignore[arg-type]
            return s, z

        if bl == 1:
            with kb.loop(0, inner, name="j") as j:
                s, z = scale_at(j)
                kb.store(
                    f(kb.load(xp, b.add(xbase, j), xty), s, z), dp, b.add(xbase, j)
                )
        else:  # whole groups (a constant trip count), then the short last one
            ngroups = b.udiv(inner, g.i64(bl))
            with kb.loop(0, ngroups, name="g") as gi:
                s, z = scale_at(gi)
                gbase = b.add(xbase, b.mul(gi, g.i64(bl)))
                with kb.loop(0, bl, name="j") as j:
                    x = kb.load(xp, b.add(gbase, j), xty)
                    kb.store(f(x, s, z), dp, b.add(gbase, j))
            tail = b.mul(ngroups, g.i64(bl))
            with b.if_then(b.icmp_signed("<", tail, inner)):
                s, z = scale_at(ngroups)
                with g.scalar_loop(tail, inner, name="t") as j:
                    x = kb.load(xp, b.add(xbase, j), xty)
                    kb.store(f(x, s, z), dp, b.add(xbase, j))
    name = "quantize" if quantize else "dequantize"
    row_bytes = _guess(xs[-1]) * max(_esize(src_dt), _esize(dst_dt))
    math = "f32" if f32_math else "f64"
    return g.kernel(
        _prod(xs[:-1]), row_bytes, f"{name} block {block} [rows, {math} math]"
    )


@register(lp.QuantizeOp)
def gen_quantize(req: KernelRequest) -> NativeKernel | None:
    """q = encode(x / s + z) in float64 as the interpreter (int or f32 results)."""
    return _gen_quant(req, quantize=True)


@register(lp.DequantizeOp)
def gen_dequantize(req: KernelRequest) -> NativeKernel | None:
    """(q - z) * s in float64, rounded once to f32, as the interpreter."""
    return _gen_quant(req, quantize=False)
