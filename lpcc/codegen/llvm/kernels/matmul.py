"""CPU kernels for f32 `lp.matmul`: a tiled, register-blocked, vectorized GEMM.

The GEMM is the classic Goto/BLIS loop nest, generated per ISA level:

* a microkernel computes an MR x NR tile of C with MR * NR / VW vector
  accumulators: per k, NR / VW vector loads of a packed B row, MR broadcasts
  of A, MR * NR / VW multiply-adds (`llvm.fmuladd`: FMA on avx2/avx512,
  mul + add on generic). avx2: 6 x 16 (ymm), avx512: 8 x 32 (zmm),
  generic: 4 x 8 (xmm);
* B is read in panels of KC x NR floats (KC such that a panel is 16 KiB and
  stays in L1 while every M tile of a group uses it). A constant B (a
  weight) is repacked once at compile time into panel order (`Repack`);
  any other B is packed per panel into a stack buffer, which also handles
  `transpose_b` (VW x VW shuffle transposes) and the zero padding of a
  short last panel; a row-major B is read in place when a unit has at most
  two M tiles (packing would not pay off);
* the kernel's parallel rows are *units*: (batch, group of M tiles, group of
  N panels). M groups are as large as an L2-sized A block allows (a
  non-constant B is packed once per group); N groups, which cost nothing
  extra, bring the count up to `_TARGET_UNITS` (so a GEMV, M = 1, splits
  the weight's panels over the threads); M groups shrink only when N is
  too narrow. A unit with few M tiles runs panel by panel (each B panel
  one contiguous stream, C in L1), others K block by K block (A's block
  in L2 across the panels);
* `lp.fused epilogue` regions (matmul, then elementwise ops on its result)
  run the ops (`elementwise.emit_elementwise`) over each unit's block of C
  while it is still in cache, before the unit ends.

`conv.py` drives the same microkernels with an implicit-im2col packer.
Floats are summed in a different order than NumPy's BLAS, so results agree
within the f32 reassociation bound (tests state it), not bit for bit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from llvmlite import ir
from xdsl.ir import SSAValue

from lpcc.codegen.llvm.kernel import (
    F32,
    I1,
    I32,
    I64,
    PTR,
    KernelBuilder,
    KernelRequest,
    NativeKernel,
    Repack,
    counted_loop,
    declare,
    elem,
    register,
    shape,
)
from lpcc.ir.dialect import ops as lp
from lpcc.ir.dialect.fused import FusedOp, YieldOp
from lpcc.ir.symbolic import Dim
from lpcc.ir.symbolic import dim_ceil_div as d_cdiv
from lpcc.ir.symbolic import dim_max as d_max
from lpcc.ir.symbolic import dim_min as d_min
from lpcc.ir.symbolic import dim_mul as d_mul
from lpcc.ir.symbolic import dim_prod as d_prod

_FEW_ROWS = 4  # M tiles up to which a unit streams B panel by panel (GEMV-like)
# Below this many flops a kernel runs on one thread: handing a chunk to a
# worker costs ~4 us (pool.py), ~200k flops of GEMM on one core.
_MIN_PARALLEL_FLOPS = 1 << 18
_TARGET_UNITS = 32  # enough units to balance 2..16 threads within a few %


@dataclass(frozen=True)
class Tiling:
    """Register and cache blocking of one ISA level."""

    vw: int  # f32 lanes per vector
    mr: int  # microkernel rows
    nr: int  # microkernel columns (a multiple of vw)
    kc: int  # K block: a KC x NR panel of B is 16 KiB
    mct: int  # M tiles per group: an MC x KC block of A is <= 128 KiB


def tiling(isa: str) -> Tiling:
    """The blocking for `isa` ("avx512", "avx2" or "generic")."""
    vw, mr, nv = {"avx512": (16, 8, 2), "avx2": (8, 6, 2), "generic": (4, 4, 2)}[isa]
    nr = vw * nv
    kc = 4096 // nr
    return Tiling(vw, mr, nr, kc, max(1, 32768 // (kc * mr)))


# -- size arithmetic on ints and size expressions -----------------------------------


# -- llvmlite helpers -----------------------------------------------------------------


def c64(v: int) -> ir.Constant:
    return ir.Constant(I64, v)


def imin(b: ir.IRBuilder, x: ir.Value, y: ir.Value) -> ir.Value:
    return b.select(b.icmp_signed("<", x, y), x, y)


def imax(b: ir.IRBuilder, x: ir.Value, y: ir.Value) -> ir.Value:
    return b.select(b.icmp_signed(">", x, y), x, y)


def gep(b: ir.IRBuilder, ptr: ir.Value, idx: ir.Value | int, ty: ir.Type = F32):
    if isinstance(idx, int):
        idx = c64(idx)
    return b.gep(ptr, [idx], inbounds=True, source_etype=ty)


def load(b: ir.IRBuilder, ptr: ir.Value, idx: ir.Value | int, ty: ir.Type = F32):
    elt = ty.element if isinstance(ty, ir.VectorType) else ty
    return b.load(gep(b, ptr, idx, elt), typ=ty, align=4)


def store(b: ir.IRBuilder, v: ir.Value, ptr: ir.Value, idx: ir.Value | int) -> None:
    ty = v.type
    elt = ty.element if isinstance(ty, ir.VectorType) else ty
    b.store(v, gep(b, ptr, idx, elt), align=4)


loop = counted_loop  # conv.py and this module's microkernels use the name


@contextlib.contextmanager
def if_then(b: ir.IRBuilder, cond: ir.Value) -> Iterator[None]:
    with b.if_then(cond):
        yield


def entry_alloca(b: ir.IRBuilder, ty: ir.Type, name: str, align: int = 64):
    """A stack slot in the function's entry block (so it is allocated once)."""
    fn = b.function
    with b.goto_block(fn.entry_basic_block):
        b.position_at_start(fn.entry_basic_block)
        slot = b.alloca(ty, name=name)
        slot.align = align
    slot.type = PTR  # opaque, as every kernel pointer (llvmlite types it)
    return slot


# -- the microkernel and tile dispatch -------------------------------------------------


class Gemm:
    """Microkernels and the tile routine of one GEMM in one LLVM module.

    `tile(b, r, ...)` computes C[r rows, nvalid cols] (+)= A[r, kc] @ Bp[kc,
    NR] at the builder's position: `first` says this is the first K block
    (C starts at the row bias or 0 rather than at its stored value).
    """

    def __init__(self, module: ir.Module, t: Tiling, bias: bool, tag: str) -> None:
        self.module, self.t, self.bias, self.tag = module, t, bias, tag
        self.vt = ir.VectorType(F32, t.vw)
        self.fma = declare(module, f"llvm.fmuladd.v{t.vw}f32", self.vt, [self.vt] * 3)
        self._mk: dict[int, ir.Function] = {}
        self._tiles: dict[tuple[int, bool], ir.Function] = {}

    def splat(self, b: ir.IRBuilder, s: ir.Value) -> ir.Value:
        v = b.insert_element(ir.Constant(self.vt, ir.Undefined), s, ir.Constant(I32, 0))
        mask = ir.Constant(ir.VectorType(I32, self.t.vw), [0] * self.t.vw)
        return b.shuffle_vector(v, ir.Constant(self.vt, ir.Undefined), mask)

    def microkernel(self, r: int) -> ir.Function:
        """mk(a, lda, bp, ldb, c, ldc, kc, first, bias): an r x NR tile, full width."""
        if r in self._mk:
            return self._mk[r]
        t, vt = self.t, self.vt
        nv = t.nr // t.vw
        fty = ir.FunctionType(
            ir.VoidType(), [PTR, I64, PTR, I64, PTR, I64, I64, I1, PTR]
        )
        fn = ir.Function(self.module, fty, f"{self.tag}.mk{r}")
        fn.linkage = "internal"
        # one copy per tile height, called from every loop nest and edge path
        # (a call per MR x NR x KC tile costs nothing; copies cost compile time)
        fn.attributes.add("noinline")
        a, lda, bp, ldb, c, ldc, kc, first, bias = fn.args
        for p in (a, bp, c, bias):
            p.add_attribute("noalias")
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        accs = [[b.alloca(vt, name=f"acc{i}.{v}") for v in range(nv)] for i in range(r)]
        rows_a = [gep(b, a, b.mul(lda, c64(i))) for i in range(r)]
        rows_c = [gep(b, c, b.mul(ldc, c64(i))) for i in range(r)]
        with b.if_else(first) as (then, other):
            with then:
                for i in range(r):
                    init = (
                        self.splat(b, load(b, bias, i))
                        if self.bias
                        else ir.Constant(vt, None)
                    )
                    for v in range(nv):
                        b.store(init, accs[i][v])
            with other:
                for i in range(r):
                    for v in range(nv):
                        b.store(load(b, rows_c[i], v * t.vw, vt), accs[i][v])
        with loop(b, 0, kc, name="k") as k:
            kb_ = b.mul(k, ldb)
            bv = [load(b, bp, b.add(kb_, c64(v * t.vw)), vt) for v in range(nv)]
            for i in range(r):
                s = self.splat(b, load(b, rows_a[i], k))
                for v in range(nv):
                    acc = b.load(accs[i][v])
                    b.store(b.call(self.fma, [s, bv[v], acc]), accs[i][v])
        for i in range(r):
            for v in range(nv):
                store(b, b.load(accs[i][v]), rows_c[i], v * t.vw)
        b.ret_void()
        self._mk[r] = fn
        return fn

    def tile_fn(self, r: int, partial: bool) -> ir.Function:
        """tile(a, lda, bp, ldb, c, ldc, kc, first, bias, nvalid): an r-row tile.

        With `partial`, columns >= nvalid of C are neither read nor written
        (the microkernel runs on a stack copy when nvalid < NR).
        """
        key = (r, partial)
        if key in self._tiles:
            return self._tiles[key]
        t = self.t
        mk = self.microkernel(r)
        fty = ir.FunctionType(
            ir.VoidType(), [PTR, I64, PTR, I64, PTR, I64, I64, I1, PTR, I64]
        )
        name = f"{self.tag}.tile{r}{'p' if partial else ''}"
        fn = ir.Function(self.module, fty, name)
        fn.linkage = "internal"
        a, lda, bp, ldb, c, ldc, kc, first, bias, nvalid = fn.args
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        if not partial:
            b.call(mk, [a, lda, bp, ldb, c, ldc, kc, first, bias])
            b.ret_void()
            self._tiles[key] = fn
            return fn
        full = b.icmp_signed("==", nvalid, c64(t.nr))
        with b.if_else(full) as (then, other):
            with then:
                b.call(mk, [a, lda, bp, ldb, c, ldc, kc, first, bias])
            with other:
                tmp = entry_alloca(b, ir.ArrayType(F32, r * t.nr), "ctile")
                with if_then(b, b.not_(first)):
                    for i in range(r):
                        crow = gep(b, c, b.mul(ldc, c64(i)))
                        with loop(b, 0, nvalid, name=f"cin{i}") as j:
                            store(b, load(b, crow, j), tmp, b.add(j, c64(i * t.nr)))
                b.call(mk, [a, lda, bp, ldb, tmp, c64(t.nr), kc, first, bias])
                for i in range(r):
                    crow = gep(b, c, b.mul(ldc, c64(i)))
                    with loop(b, 0, nvalid, name=f"cout{i}") as j:
                        store(b, load(b, tmp, b.add(j, c64(i * t.nr))), crow, j)
        b.ret_void()
        self._tiles[key] = fn
        return fn


# -- the driver -----------------------------------------------------------------------

# pack(b, buf, batch, pc, kc, j0, nvalid): fill buf[kc][NR] with B[pc:pc+kc,
# j0:j0+nvalid] of batch `batch`, zeros in columns >= nvalid.
Packer = Callable[
    [ir.IRBuilder, ir.Value, ir.Value, ir.Value, ir.Value, ir.Value, ir.Value], None
]
# offset(b, batch) -> i64 element offset.
Offset = Callable[[ir.IRBuilder, ir.Value], ir.Value]
# direct(b, batch, pc, j0) -> pointer to B[pc, j0] of a row-major B read in place.
Direct = Callable[[ir.IRBuilder, ir.Value, ir.Value, ir.Value], ir.Value]


@dataclass
class GemmSpec:
    """One batched GEMM C[batch] = A[batch] @ B[batch] (+ bias per row).

    A is row-major [M, lda=K] at `a_ptr + a_off(batch)`, C row-major
    [M, ldc=N] at `c_ptr + c_off(batch)`. B comes either packed (`b_packed`:
    panels [np][K][NR] at `b_packed + b_off(batch)`) or from `pack`; with
    `direct`, a full panel is read in place (rows `ldb_direct` apart) when
    the unit has at most two M tiles, so packing would not pay off.
    """

    m: Dim
    n: Dim
    k: Dim
    batch: Dim
    a_ptr: ir.Value
    a_off: Offset
    c_ptr: ir.Value
    c_off: Offset
    b_packed: ir.Value | None = None
    b_off: Offset | None = None
    pack: Packer | None = None
    direct: Direct | None = None
    ldb_direct: Dim = 0
    bias_ptr: ir.Value | None = None
    bias_off: Offset | None = None
    # epilogue(b, batch, m0, m1, c0, c1): runs once a unit's block of C,
    # rows [m0, m1) x columns [c0, c1), is final
    epilogue: Callable[..., None] | None = None


@dataclass(frozen=True)
class Units:
    """How the GEMM's work is cut into parallel units (see the module doc)."""

    rows: Dim  # units = batch * mg * ng
    mg: Dim  # groups of M tiles
    mct: Dim  # M tiles per group
    ng: Dim  # groups of N panels
    ncp: Dim  # N panels per group
    note: str


def plan_units(t: Tiling, m: Dim, n: Dim, batch: Dim) -> Units:
    """Cut batch x M x N into units.

    M groups are as large as the A block allows (a non-constant B is packed
    once per M group); N groups, which cost nothing extra, bring the count
    up to `_TARGET_UNITS`; when N is too narrow, M groups shrink (to two
    tiles at least) instead.
    """
    mt = d_cdiv(m, t.mr)
    npn1 = d_max(d_cdiv(n, t.nr), 1)
    mg = d_cdiv(mt, t.mct)
    ng = d_min(npn1, d_max(1, d_cdiv(_TARGET_UNITS, d_max(1, d_mul(batch, mg)))))
    if isinstance(mt, int) and isinstance(batch, int) and isinstance(ng, int):
        assert isinstance(mg, int)
        if batch * mg * ng < _TARGET_UNITS:
            want = -(-_TARGET_UNITS // max(1, batch * ng))
            mg = max(mg, min(want, mt // 2))
        mct: Dim = max(1, -(-mt // max(1, mg)))  # balanced groups
        mg = -(-mt // mct)
    else:
        mct = t.mct
    ncp = d_cdiv(npn1, ng)
    ng = d_cdiv(npn1, ncp)
    rows = d_mul(d_mul(batch, mg), ng)
    note = (
        f"{t.mr}x{t.nr} tiles, KC={t.kc}, units = batch x {mg} M groups x {ng} N groups"
    )
    return Units(rows, mg, mct, ng, ncp, note)


def granule_for(rows: Dim, flops: Dim) -> int:
    """The pool granule: all rows in one chunk when the work is too small to split."""
    if isinstance(rows, int) and isinstance(flops, int) and flops < _MIN_PARALLEL_FLOPS:
        return max(1, rows)
    return 1


def gemm_flops(spec: GemmSpec) -> Dim:
    return d_mul(2, d_mul(spec.batch, d_mul(spec.m, d_mul(spec.n, spec.k))))


def tile_rows_needed(t: Tiling, m: Dim, u: Units) -> list[int]:
    """The microkernel heights a static M needs (all of 1..MR otherwise)."""
    if not (isinstance(m, int) and isinstance(u.mct, int) and isinstance(u.mg, int)):
        return list(range(1, t.mr + 1))
    rs: set[int] = set()
    rows_per = u.mct * t.mr
    for g in range(u.mg):
        m0, m1 = g * rows_per, min(m, (g + 1) * rows_per)
        if m1 - m0 >= t.mr:
            rs.add(t.mr)
        if (m1 - m0) % t.mr:
            rs.add((m1 - m0) % t.mr)
    return sorted(rs) or [t.mr]


def emit_gemm(kb: KernelBuilder, t: Tiling, spec: GemmSpec, tag: str = "gemm") -> Units:
    """Emit the unit loop of `spec` into the kernel's entry; returns the plan."""
    b = kb.b
    u = plan_units(t, spec.m, spec.n, spec.batch)
    g = Gemm(kb.module, t, spec.bias_ptr is not None, tag)
    partial = not (isinstance(spec.n, int) and spec.n % t.nr == 0)
    rs = tile_rows_needed(t, spec.m, u)
    m, n, k = kb.dim(spec.m), kb.dim(spec.n), kb.dim(spec.k)
    mg, mct, ng, ncp = kb.dim(u.mg), kb.dim(u.mct), kb.dim(u.ng), kb.dim(u.ncp)
    npn = kb.dim(d_cdiv(spec.n, t.nr))
    nr = c64(t.nr)
    kmax = imax(b, k, c64(1))  # K = 0 still runs one (empty) block: C = bias or 0
    per_batch = b.mul(mg, ng)
    null = ir.Constant(PTR, None)
    buf = None
    if spec.b_packed is None:
        buf = entry_alloca(b, ir.ArrayType(F32, t.kc * t.nr), "bpanel")
    with kb.loop(kb.begin, kb.end, name="unit") as unit:
        bt = b.udiv(unit, per_batch)
        rem = b.urem(unit, per_batch)
        gm, gn = b.udiv(rem, ng), b.urem(rem, ng)
        m0 = b.mul(b.mul(gm, mct), c64(t.mr))
        m1 = imin(b, m, b.add(m0, b.mul(mct, c64(t.mr))))
        p0 = b.mul(gn, ncp)
        p1 = imin(b, npn, b.add(p0, ncp))
        a_base = gep(b, spec.a_ptr, spec.a_off(b, bt))
        c_base = gep(b, spec.c_ptr, spec.c_off(b, bt))
        bias_base = null
        if spec.bias_ptr is not None:
            assert spec.bias_off is not None
            bias_base = gep(b, spec.bias_ptr, spec.bias_off(b, bt))
        bpk_base = None
        if spec.b_packed is not None:
            assert spec.b_off is not None
            bpk_base = gep(b, spec.b_packed, spec.b_off(b, bt))
        few_rows = b.icmp_signed("<=", b.sub(m1, m0), c64(2 * t.mr))

        def block(pc: ir.Value, jp: ir.Value) -> None:
            """C[m0:m1, panel jp] (+)= A[m0:m1, K block pc] @ B[K block pc, jp]."""
            kc = imin(b, c64(t.kc), b.sub(k, pc))
            first = b.icmp_signed("==", pc, c64(0))
            j0 = b.mul(jp, nr)
            nvalid = imin(b, nr, b.sub(n, j0))
            if bpk_base is not None:
                off = b.add(b.mul(jp, b.mul(k, nr)), b.mul(pc, nr))
                bp, ldb = gep(b, bpk_base, off), nr
            else:
                assert spec.pack is not None and buf is not None
                if spec.direct is None:
                    spec.pack(b, buf, bt, pc, kc, j0, nvalid)
                    bp, ldb = buf, nr
                else:
                    direct = b.and_(few_rows, b.icmp_signed("==", nvalid, nr))
                    with b.if_then(b.not_(direct)):
                        spec.pack(b, buf, bt, pc, kc, j0, nvalid)
                    ptr_direct = spec.direct(b, bt, pc, j0)
                    bp = b.select(direct, ptr_direct, buf)
                    ldb = b.select(direct, kb.dim(spec.ldb_direct), nr)
            with kb.loop(m0, m1, t.mr, name="ir") as i0:
                r = imin(b, c64(t.mr), b.sub(m1, i0))
                a = gep(b, a_base, b.add(b.mul(i0, k), pc))
                c = gep(b, c_base, b.add(b.mul(i0, n), j0))
                bias = gep(b, bias_base, i0) if spec.bias_ptr is not None else null
                args = [a, k, bp, ldb, c, n, kc, first, bias, nvalid]
                if len(rs) == 1:
                    b.call(g.tile_fn(rs[0], partial), args)
                else:
                    after = b.append_basic_block("tile.done")
                    sw = b.switch(r, after)
                    for rr in rs:
                        blk = b.append_basic_block(f"tile.r{rr}")
                        sw.add_case(c64(rr), blk)
                        b.position_at_end(blk)
                        b.call(g.tile_fn(rr, partial), args)
                        b.branch(after)
                    b.position_at_end(after)

        def k_outer() -> None:  # A's K block stays in L2 across the panels
            with (
                kb.loop(0, kmax, t.kc, name="pc") as pc,
                kb.loop(p0, p1, name="jp") as jp,
            ):
                block(pc, jp)

        def n_outer() -> None:  # each B panel streams once, C's tiles stay in L1
            with (
                kb.loop(p0, p1, name="jp") as jp,
                kb.loop(0, kmax, t.kc, name="pc") as pc,
            ):
                block(pc, jp)

        if spec.b_packed is None:
            k_outer()
        elif isinstance(spec.m, int) and isinstance(u.mct, int):
            (n_outer if min(spec.m, u.mct * t.mr) <= _FEW_ROWS * t.mr else k_outer)()
        else:
            few = b.icmp_signed("<=", b.sub(m1, m0), c64(_FEW_ROWS * t.mr))
            with b.if_else(few) as (then, other):
                with then:
                    n_outer()
                with other:
                    k_outer()
        if spec.epilogue is not None:
            c1 = imin(b, n, b.mul(p1, nr))
            spec.epilogue(b, bt, m0, m1, b.mul(p0, nr), c1)
    return u


# -- B packers -------------------------------------------------------------------------


def pack_rowmajor(
    t: Tiling, src: ir.Value, b_off: Offset, ldb: Callable[[], ir.Value]
) -> Packer:
    """Packer for B row-major [K, ldb] (columns j0.. of rows pc..)."""
    vt = ir.VectorType(F32, t.vw)
    zero = ir.Constant(F32, 0.0)

    def pack(b, buf, bt, pc, kc, j0, nvalid):
        ld = ldb()
        base = gep(b, src, b.add(b_off(b, bt), b.add(b.mul(pc, ld), j0)))
        full = b.icmp_signed("==", nvalid, c64(t.nr))
        with b.if_else(full) as (then, other):
            with then, loop(b, 0, kc, name="pk") as kk:
                row = gep(b, base, b.mul(kk, ld))
                dst = b.mul(kk, c64(t.nr))
                for v in range(t.nr // t.vw):
                    vec = load(b, row, v * t.vw, vt)
                    store(b, vec, buf, b.add(dst, c64(v * t.vw)))
            with other, loop(b, 0, kc, name="pt") as kk:
                row = gep(b, base, b.mul(kk, ld))
                dst = b.mul(kk, c64(t.nr))
                with loop(b, 0, t.nr, name="pj") as j:
                    ok = b.icmp_signed("<", j, nvalid)
                    val = load(b, row, b.select(ok, j, c64(0)))
                    store(b, b.select(ok, val, zero), buf, b.add(dst, j))

    return pack


def transpose(b: ir.IRBuilder, rows: list[ir.Value]) -> list[ir.Value]:
    """Transpose a VW x VW block held as VW vectors (log2 VW shuffle stages)."""
    n = len(rows)
    h = n // 2
    while h >= 1:
        new = list(rows)
        for i in range(n):
            if i & h:
                continue
            lo: list[int] = []
            hi: list[int] = []
            for c in range(n // (2 * h)):
                base = c * 2 * h
                lo += [base + x for x in range(h)] + [n + base + x for x in range(h)]
                hi += [base + h + x for x in range(h)]
                hi += [n + base + h + x for x in range(h)]
            for dst, mask in ((i, lo), (i + h, hi)):
                m = ir.Constant(ir.VectorType(I32, n), mask)
                new[dst] = b.shuffle_vector(rows[i], rows[i + h], m)
        rows = new
        h //= 2
    return rows


def pack_transposed(
    t: Tiling, src: ir.Value, b_off: Offset, ldb: Callable[[], ir.Value]
) -> Packer:
    """Packer for B given transposed, row-major [N, ldb=K] (transpose_b).

    Full panels go VW x VW blocks at a time through a vector transpose; the
    K tail and a short last panel are copied element by element.
    """
    vt = ir.VectorType(F32, t.vw)
    zero = ir.Constant(F32, 0.0)

    def pack(b, buf, bt, pc, kc, j0, nvalid):
        ld = ldb()
        base = gep(b, src, b.add(b_off(b, bt), b.add(b.mul(j0, ld), pc)))
        full = b.icmp_signed("==", nvalid, c64(t.nr))
        kv = b.and_(kc, c64(-t.vw))  # the K prefix done in vector blocks
        k_scalar = b.select(full, kv, c64(0))
        with b.if_then(full), loop(b, 0, kv, t.vw, name="tk") as k0:
            for jg in range(t.nr // t.vw):
                rows = [
                    load(b, base, b.add(b.mul(c64(jg * t.vw + i), ld), k0), vt)
                    for i in range(t.vw)
                ]
                for i, vec in enumerate(transpose(b, rows)):
                    dst = b.add(b.mul(b.add(k0, c64(i)), c64(t.nr)), c64(jg * t.vw))
                    store(b, vec, buf, dst)
        with loop(b, 0, t.nr, name="tj") as j:
            ok = b.icmp_signed("<", j, nvalid)
            row = gep(b, base, b.mul(b.select(ok, j, c64(0)), ld))
            with loop(b, k_scalar, kc, name="tks") as kk:
                val = b.select(ok, load(b, row, kk), zero)
                store(b, val, buf, b.add(b.mul(kk, c64(t.nr)), j))

    return pack


# -- lp.matmul -------------------------------------------------------------------------


def batch_strides(
    out_b: Sequence[Dim], in_b: Sequence[Dim], mat: Dim
) -> list[Dim] | None:
    """Per output batch dim, the element stride of an operand (0: broadcast).

    `mat` is the size of one of the operand's matrices. None when a dim of
    the operand neither equals the output's nor is 1.
    """
    strides: list[Dim] = [0] * len(out_b)
    off = len(out_b) - len(in_b)
    acc: Dim = mat
    for i in range(len(in_b) - 1, -1, -1):
        d, o = in_b[i], out_b[off + i]
        if d == 1:
            strides[off + i] = 0
        elif d == o:
            strides[off + i] = acc
        else:
            return None
        acc = d_mul(acc, d)
    return strides


def batch_offset(
    kb: KernelBuilder, out_b: Sequence[Dim], strides: Sequence[Dim]
) -> Offset:
    """offset(batch): the flat output batch index mapped through `strides`."""

    def off(b: ir.IRBuilder, bt: ir.Value) -> ir.Value:
        total: ir.Value = c64(0)
        rest = bt
        for d, s in zip(reversed(out_b), reversed(strides), strict=True):
            if d == 1:
                continue
            dd = kb.dim(d)
            if s != 0:
                total = b.add(total, b.mul(b.urem(rest, dd), kb.dim(s)))
            rest = b.udiv(rest, dd)
        return total

    return off


def f32_only(*values: SSAValue) -> bool:
    """Whether every value holds f32 value-domain data (the GEMM's type)."""
    return all(
        elem(v).kind == "float" and elem(v).value_dtype == np.float32 for v in values
    )


def repack_panels(t: Tiling, k: int, n: int, transposed: bool) -> Repack:
    """Compile-time repack of a constant B into panels [batch][np][K][NR]."""
    npn = -(-n // t.nr)

    def fn(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        x = x.reshape(-1, n, k).swapaxes(-1, -2) if transposed else x.reshape(-1, k, n)
        p = np.zeros((x.shape[0], k, npn * t.nr), np.float32)
        p[:, :, :n] = x
        p = p.reshape(x.shape[0], k, npn, t.nr).transpose(0, 2, 1, 3)
        return np.ascontiguousarray(p).reshape(-1).view(np.uint8)

    kind = "nk" if transposed else "kn"
    return Repack(f"f32-panels{t.nr}[{kind} {k}x{n}]", fn)


@dataclass
class MatmulPlan:
    """A GEMM for one f32 lp.matmul, before its loops are emitted."""

    spec: GemmSpec
    repack: dict[int, Repack]
    how: str


def plan_matmul(
    kb: KernelBuilder,
    t: Tiling,
    op: lp.MatmulOp,
    slot: Callable[[SSAValue], int],
    const_inputs: frozenset[int],
) -> MatmulPlan | None:
    """The GEMM of `op` (operands in input slots `slot(v)`), or None if not f32.

    Batch dims broadcast as NumPy's; when B is shared by every batch and A
    is not broadcast, the batch folds into M (one GEMM over all rows). A
    constant B is repacked into panels, any other is packed per panel.
    """
    if not f32_only(op.lhs, op.rhs) or elem(op.result).name != "f32":
        return None
    tb = op.transpose_b is not None
    sa, sb, so = shape(op.lhs), shape(op.rhs), shape(op.result)
    m, k = sa[-2:]
    n, k_b = (sb[-2], sb[-1]) if tb else (sb[-1], sb[-2])
    if isinstance(k, str) and isinstance(k_b, int):
        k = k_b  # the same size (the verifier checks), known statically
    ob, ab, bb = so[:-2], sa[:-2], sb[:-2]
    a_strides = batch_strides(ob, ab, d_mul(m, k))
    b_strides = batch_strides(ob, bb, d_mul(k, n))
    if a_strides is None or b_strides is None:
        return None
    ia, ib = slot(op.lhs), slot(op.rhs)
    const_b = ib in const_inputs and ia != ib and all(isinstance(d, int) for d in sb)
    zero: Offset = lambda b, bt: c64(0)  # noqa: E731
    if all(d == 1 for d in bb) and tuple(ab) == tuple(ob):
        m, batch = d_mul(d_prod(ab), m), 1
        a_off = c_off = b_off = pb_off = zero
    else:
        batch = d_prod(ob)
        a_off = batch_offset(kb, ob, a_strides)
        c_strides = [d_mul(d_prod(ob[i + 1 :]), d_mul(m, n)) for i in range(len(ob))]
        c_off = batch_offset(kb, ob, c_strides)
        b_off = batch_offset(kb, ob, b_strides)
        pb_off = zero
        if const_b:
            assert isinstance(n, int) and isinstance(k, int)
            pb = batch_strides(ob, bb, -(-n // t.nr) * k * t.nr)
            assert pb is not None
            pb_off = batch_offset(kb, ob, pb)
    spec = GemmSpec(
        m=m,
        n=n,
        k=k,
        batch=batch,
        a_ptr=kb.inp(ia),
        a_off=a_off,
        c_ptr=kb.out(0),
        c_off=c_off,
    )
    repack: dict[int, Repack] = {}
    src = kb.inp(ib)
    if const_b:
        assert isinstance(n, int) and isinstance(k, int)
        spec.b_packed, spec.b_off = src, pb_off
        repack[ib] = repack_panels(t, k, n, tb)
    elif tb:
        spec.pack = pack_transposed(t, src, b_off, lambda: kb.dim(k))
    else:
        spec.pack = pack_rowmajor(t, src, b_off, lambda: kb.dim(n))

        def direct(b: ir.IRBuilder, bt: ir.Value, pc: ir.Value, j0: ir.Value):
            return gep(b, src, b.add(b_off(b, bt), b.add(b.mul(pc, kb.dim(n)), j0)))

        spec.direct, spec.ldb_direct = direct, n
    how = "B repacked to panels" if const_b else "B packed per panel"
    return MatmulPlan(spec, repack, how)


@register(lp.MatmulOp)
def gen_matmul(req: KernelRequest) -> NativeKernel | None:
    """f32 GEMM for lp.matmul (any batch broadcast, transpose_b, dynamic sizes)."""
    op = req.op
    assert isinstance(op, lp.MatmulOp)
    if op.lhs not in req.args or op.rhs not in req.args:
        return None
    t = tiling(req.isa)
    kb = KernelBuilder(req)
    plan = plan_matmul(kb, t, op, req.arg_index, req.const_inputs)
    if plan is None:
        return None
    u = emit_gemm(kb, t, plan.spec, tag="mm")
    return kb.kernel(
        rows=u.rows,
        granule=granule_for(u.rows, gemm_flops(plan.spec)),
        note=f"f32 GEMM {req.isa}: {u.note}; {plan.how}",
        repack=plan.repack,
    )


# -- lp.fused epilogue: matmul, then elementwise ops on its result --------------------


def _epilogue_ops(fused: FusedOp) -> tuple[list, lp.MatmulOp, list, SSAValue] | None:
    """(splat constants, the matmul, the elementwise ops, the yielded value)."""
    from lpcc.codegen.llvm.kernels import elementwise as ew

    consts: list[lp.ConstantOp] = []
    ops = list(fused.body.block.ops)
    while ops and isinstance(ops[0], lp.ConstantOp):
        consts.append(ops.pop(0))
    if not ops or not isinstance(ops[0], lp.MatmulOp):
        return None
    mm, rest = ops[0], ops[1:]
    if not rest or not isinstance(rest[-1], YieldOp) or len(rest[-1].operands) != 1:
        return None
    body = rest[:-1]
    if not all(ew.can_emit(o) for o in consts + body):
        return None
    if any(isinstance(o, lp.BroadcastOp) for o in body):
        return None
    return consts, mm, body, rest[-1].operands[0]


@register(FusedOp, kind="epilogue")
def gen_matmul_epilogue(req: KernelRequest) -> NativeKernel | None:
    """An f32 matmul whose elementwise epilogue runs on each unit's C block.

    The GEMM leaves the unit's block of C in cache; one more pass over it
    loads each vector, applies the epilogue ops (`emit_elementwise`, the
    interpreter's semantics op by op) with the other operands read
    broadcast as the ops broadcast them, and stores the final value.
    """
    from lpcc.codegen.llvm.kernels.elementwise import emit_elementwise

    fused = req.op
    assert isinstance(fused, FusedOp)
    parts = _epilogue_ops(fused)
    if parts is None:
        return None
    consts, mm, body, final = parts
    block_args = list(fused.body.block.args)
    outer = list(fused.operands)

    def slot(v: SSAValue) -> int:
        return req.arg_index(outer[block_args.index(v)])  # type: ignore[arg-type]

    if mm.lhs not in block_args or mm.rhs not in block_args:
        return None
    rshape = shape(mm.result)
    if elem(final).value_dtype != np.float32 or shape(final) != rshape:
        return None
    # every other operand an epilogue op reads: a body argument holding f32
    # values, of the result's rank, each dim the result's or 1
    loads: dict[SSAValue, list[Dim]] = {}
    for o in body:
        for v in o.operands:
            if v in block_args and v not in loads:
                sv = shape(v)
                ok = elem(v).value_dtype == np.float32 and len(sv) == len(rshape)
                if not ok or any(
                    d != r and d != 1 for d, r in zip(sv, rshape, strict=True)
                ):
                    return None
                loads[v] = list(sv)
    t = tiling(req.isa)
    kb = KernelBuilder(req)
    plan = plan_matmul(kb, t, mm, slot, req.const_inputs)
    if plan is None:
        return None
    spec = plan.spec
    b = kb.b
    vt = ir.VectorType(F32, t.vw)
    zero_i = ir.Constant(I32, 0)

    def splat(v: ir.Value, lanes: int) -> ir.Value:
        if lanes == 1 or isinstance(v.type, ir.VectorType):
            return v
        vec_t = ir.VectorType(v.type, lanes)
        one = b.insert_element(ir.Constant(vec_t, ir.Undefined), v, zero_i)
        mask = ir.Constant(ir.VectorType(I32, lanes), [0] * lanes)
        return b.shuffle_vector(one, ir.Constant(vec_t, ir.Undefined), mask)

    def row_offset(sv: Sequence[Dim], fr: ir.Value) -> ir.Value:
        """Element offset of (flat result row fr, column 0) in a broadcast operand."""
        total: ir.Value = c64(0)
        rest = fr
        stride: Dim = sv[-1]
        for d in range(len(rshape) - 2, -1, -1):
            if rshape[d] != 1:
                dd = kb.dim(rshape[d])
                if sv[d] != 1:
                    total = b.add(total, b.mul(b.urem(rest, dd), kb.dim(stride)))
                rest = b.udiv(rest, dd)
            stride = d_mul(stride, sv[d])
        return total

    def epilogue(b_, bt, m0, m1, c0, c1) -> None:
        n = kb.dim(spec.n)
        out = spec.c_ptr
        with kb.loop(m0, m1, name="er") as i:
            fr = b.add(b.mul(bt, kb.dim(spec.m)), i)  # row of the flat [*batch, M]
            crow = gep(b, out, b.mul(fr, n))
            rows = {
                v: gep(b, kb.inp(slot(v)), row_offset(sv, fr))
                for v, sv in loads.items()
            }
            cv = b.add(c0, b.mul(b.sdiv(b.sub(c1, c0), c64(t.vw)), c64(t.vw)))
            for lo, hi, step, lanes in ((c0, cv, t.vw, t.vw), (cv, c1, 1, 1)):
                ty = vt if lanes > 1 else F32
                with kb.loop(lo, hi, step, name="ej") as j:
                    env: dict[SSAValue, ir.Value] = {mm.result: load(b, crow, j, ty)}
                    for v, sv in loads.items():
                        if sv[-1] == 1 and rshape[-1] != 1:
                            env[v] = splat(load(b, rows[v], 0), lanes)
                        else:
                            env[v] = load(b, rows[v], j, ty)
                    for c in consts:
                        env[c.result] = splat(emit_elementwise(kb, c, []), lanes)
                    for o in body:
                        args = [splat(env[x], lanes) for x in o.operands]
                        env[o.results[0]] = emit_elementwise(kb, o, args)
                    store(b, env[final], crow, j)

    spec.epilogue = epilogue
    u = emit_gemm(kb, t, spec, tag="mm")
    names = ", ".join(o.name.removeprefix("lp.") for o in body)
    return kb.kernel(
        rows=u.rows,
        granule=granule_for(u.rows, gemm_flops(spec)),
        note=f"f32 GEMM {req.isa} + epilogue ({names}): {u.note}; {plan.how}",
        repack=plan.repack,
    )
