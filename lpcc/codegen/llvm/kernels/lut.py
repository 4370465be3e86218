"""CPU kernels for T-MAC LUT GEMV: `lp.lut_accumulate` (+ its dequant epilogue).

What runs where (one generator per op; see `lpcc.codegen.llvm.kernel`):

* `lp.fused epilogue` whose body is exactly `lp.lut_accumulate` feeding
  `lp.group_dequant_reduce`: y[m, n] = sum_g s[n,g] (P[m,n,g] - z[n,g] S[m,g])
  in one pass over the repacked weights, P never written;
* `lp.lut_accumulate` alone (writes P), `lp.lut_precompute`, `lp.lut_scale`,
  `lp.group_sum` and an `lp.fused precompute` made only of those three.

The fast path (avx2: `vpshufb` ymm; avx512: `vpermb` zmm on a table
replicated to every 16-byte lane, so no index masking) takes int8 tables of
g = 4 with constant planes and scales; it follows
../shared/notes/lut_avx2_zen3.md:

* Weights are repacked at compile time (`Repack`) into streaming order
  [row block][quad j]{B*R/2 bytes of index nibbles}; a row block is R = W
  rows (W = vector bytes, 32 or 64; 2W rows for B <= 2). Each W-byte chunk
  holds two lookup vectors: its low nibbles and its high nibbles (one
  `vpand`, one `vpsrlw`+`vpand`). Scales (and zero points) are repacked
  beside it as [row block][group]{R values}, f16 when the type is f16.
* The planes of one row sit side by side so that one `vpmaddubsw` with
  coefficients (1, 2) widens two lookups to int16 and weights the planes:
  a *quartet* vector holds planes 4q..4q+3 of W/4 rows (bytes 4e..4e+3 = one
  row, so `vpmaddwd` with (4^2q, 4^2q+1) gives int32 per row in row order);
  a *pair* vector (B = 2, 3, 6, 7: the planes past the quartets) holds one
  plane pair of W/2 rows; a *single* vector (odd B: the top plane) holds the
  top plane of W rows, widened by two `vpmaddubsw` with (1, 0) and (0, 1).
  `plan` computes the byte map; `repack_planes` writes it.
* int16 accumulators hold at most 85 quads (|1*T0 + 2*T1| <= 3 * 128, and
  85 * 384 < 2^15); then `vpmaddwd` to int32 (exact), and at the end of a
  table-scale unit (min(G, act group) activations) int32 -> f32 and one FMA
  with ls/2 per 8 (16) rows. Per group the f32 accumulator starts at
  ((2^B-1)/2 - off) S (minus z S with zero points) and is scaled by s[n,g]
  into y with one more FMA.
* Half tables (`symmetrize-tables`) are read through the stored nibble:
  the repack writes n' = i for i >= 8 and 7 - i below, so the 16-byte table
  [-H, H] gives T[i] exactly (T[~i] = -T[i], |T| <= 127). Each thread builds
  the [-H, H] tables of its table rows once per call on its stack (K/4 * 16
  bytes a row, measured ~10 % faster hot than rebuilding them per quad and
  row block); past `_EXPAND_LIMIT` bytes it builds them per quad in
  registers (broadcast load + `vpsignb`).
* Software prefetch `_PREFETCH` bytes ahead in the index stream.
* Rows of the kernel are row blocks (granule 1); a short last block is
  computed in full (zero padding) and stored row by row. Table rows (M, may
  be dynamic) run in tiles of up to 8 inside each block, so the weights
  stream once from DRAM for M <= 8 and are reused from L1 per group.

Everything else (f32 tables, g != 4, planes or scales that are not
constants, the "generic" level) runs a portable scalar kernel on the
value-domain arrays, in float64 where the interpreter uses float64 so it
matches it closely. Integer table sums are exact on every path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
from llvmlite import ir
from xdsl.ir import Operation, SSAValue

from lpcc.codegen.llvm.kernel import (
    F32,
    F64,
    I8,
    I16,
    I32,
    I64,
    PTR,
    KernelBuilder,
    KernelRequest,
    NativeKernel,
    Repack,
    broadcast,
    declare,
    elem,
    register,
    shape,
)
from lpcc.ir.dialect import lowp
from lpcc.ir.dialect.fused import FusedOp, YieldOp
from lpcc.ir.dtypes import IntType
from lpcc.ir.symbolic import Dim
from lpcc.ir.symbolic import dim_prod as _prod

__all__ = ["Plan", "plan", "repack_planes", "repack_rows"]

_PREFETCH = 1024  # bytes ahead in the index stream (the note: 15-20 % cold, 1T)
_MAX_QUADS_I16 = 85  # quads per int16 accumulation: 85 * 3 * 128 < 2^15
_MAX_M_TILE = 8  # table rows per pass over a weight block (y kept on the stack)
_EXPAND_LIMIT = 512 * 1024  # bytes of expanded tables on a thread's stack (>= 2 MiB)
HALF = ir.HalfType()


# -- sizes --------------------------------------------------------------------------


# -- what a request asks for --------------------------------------------------------


@dataclass(frozen=True)
class _Lut:
    """The static facts of one `lp.lut_accumulate` (+ its dequant epilogue).

    Argument slots (`i_*`) are kernel input indices; -1 where absent.
    """

    g: int  # activations per table
    bits: int  # B, bit planes
    signed: bool
    group: int  # G
    half: bool
    int8: bool  # int8 tables with a scale (else f32 tables)
    n: int
    j: int  # K / g
    act: int  # act group A (K for f32 tables: one "unit" per group)
    lead: tuple[Dim, ...]  # dims before [J, E] of the table (M = their product)
    i_table: int
    i_planes: int
    i_sums: int
    i_ls: int
    # the dequant epilogue (out = "y"), or P (out = "p")
    out: str = "p"
    i_scale: int = -1
    i_zero: int = -1
    i_sums2: int = -1
    scale_f16: bool = False
    zero_kind: str = ""  # value-domain kind of the zero point: "i", "u" or "f"
    zero_bits: int = 0
    zero_size: int = 0  # bytes of one value-domain zero point

    @property
    def k(self) -> int:
        return self.j * self.g

    @property
    def gn(self) -> int:
        return self.k // self.group

    @property
    def unit(self) -> int:
        """Activations summed exactly before one table scale applies."""
        return min(self.group, self.act)

    @property
    def corr(self) -> float:
        off = 2 ** (self.bits - 1) if self.signed else 0
        return (2**self.bits - 1) / 2 - off

    @property
    def entries(self) -> int:
        return 2 ** (self.g - 1) if self.half else 2**self.g


def _f32_values(v: SSAValue) -> bool:
    return elem(v).value_dtype == np.dtype(np.float32)


def _parse_accumulate(
    op: lowp.LutAccumulateOp, slot: Callable[[SSAValue], int | None]
) -> _Lut | None:
    """The facts of `op` whose operands map to kernel inputs by `slot`."""
    slots = [slot(v) for v in (op.table, op.planes, op.sums)]
    ls = slot(op.scale) if op.scale is not None else -1
    if any(s is None for s in slots) or ls is None:
        return None
    tshape = shape(op.table)
    pshape = shape(op.planes)
    if not all(isinstance(d, int) for d in (*tshape[-2:], *pshape)):
        return None
    bits, n, j = pshape
    g = elem(op.planes).bits
    e = tshape[-1]
    int8 = op.scale is not None
    if not _f32_values(op.sums) or (int8 and not _f32_values(op.scale)):
        return None
    if int8 and elem(op.table).value_dtype != np.dtype(np.int8):
        return None
    if not int8 and not _f32_values(op.table):
        return None
    k = j * g
    act = k // shape(op.scale)[-1] if int8 else k
    return _Lut(
        g=g,
        bits=bits,
        signed=op.signed is not None,
        group=op.group.data,
        half=e != 2**g,
        int8=int8,
        n=n,
        j=j,
        act=act,
        lead=tuple(tshape[:-2]),
        i_table=slots[0],  # type: ignore[arg-type]
        i_planes=slots[1],  # type: ignore[arg-type]
        i_sums=slots[2],  # type: ignore[arg-type]
        i_ls=ls,
    )


def _parse_epilogue(fused: FusedOp, req: KernelRequest) -> _Lut | None:
    """The facts of a fused body that is exactly lut_accumulate -> dequant reduce."""
    ops = list(fused.body.block.ops)
    if len(ops) != 3 or len(fused.outs) != 1:
        return None
    acc, dq, yld = ops
    if not (
        isinstance(acc, lowp.LutAccumulateOp)
        and isinstance(dq, lowp.GroupDequantReduceOp)
        and isinstance(yld, YieldOp)
    ):
        return None
    if dq.partial is not acc.result or list(yld.operands) != [dq.result]:
        return None
    if dq.act_scale is not None or not _f32_values(dq.result):
        return None
    args = list(fused.body.block.args)

    def slot(v: SSAValue) -> int | None:
        if v not in args:
            return None
        return req.arg_index(fused.inputs[args.index(v)])

    spec = _parse_accumulate(acc, slot)
    if spec is None:
        return None
    i_scale = slot(dq.scale)
    if i_scale is None or not _f32_values(dq.scale):
        return None
    i_zero = i_sums2 = -1
    zero_kind, zero_bits, zero_size = "", 0, 0
    if dq.zero is not None:
        assert dq.sums is not None
        z, s2 = slot(dq.zero), slot(dq.sums)
        if z is None or s2 is None or not _f32_values(dq.sums):
            return None
        zd = elem(dq.zero).value_dtype
        if zd.kind not in "iufb" or (zd.kind == "f" and zd != np.float32):
            return None
        kind = "u" if zd.kind == "b" else zd.kind  # uint1 (i1) is one byte 0/1
        i_zero, i_sums2, zero_kind, zero_size = z, s2, kind, zd.itemsize
        zt = elem(dq.zero)
        zero_bits = zt.bits if isinstance(zt, IntType) else 32
    return replace(
        spec,
        out="y",
        i_scale=i_scale,
        i_zero=i_zero,
        i_sums2=i_sums2,
        scale_f16=elem(dq.scale).name == "f16",
        zero_kind=zero_kind,
        zero_bits=zero_bits,
        zero_size=zero_size,
    )


# -- the weight layout of the fast path -------------------------------------------


@dataclass(frozen=True)
class Plan:
    """Where each (row, plane) index of a quad sits, and how lookups combine.

    `vectors` lists the lookup vectors of one step (`qs` quads), in memory
    order: vector 2c is the low nibbles of chunk c, 2c+1 its high nibbles.
    Each is (quad in step, role); a role is ("quartet", q, rr), ("pair", rr)
    or ("single", rr). Accumulators are named like roles ("sa"/"sb" for the
    two halves of a single vector).
    """

    bits: int
    w: int  # bytes per vector
    rm: int  # R = rm * w rows per block

    @property
    def r(self) -> int:
        return self.w * self.rm

    @property
    def lanes(self) -> int:
        """int32 (f32) lanes per vector: rows per output vector."""
        return self.w // 4

    @property
    def qs(self) -> int:
        """Quads per step (2 when a quad's vectors do not fill whole chunks)."""
        return 1 if (self.rm * self.bits) % 2 == 0 else 2

    @property
    def quad_bytes(self) -> int:
        return self.r * self.bits // 2

    @property
    def step_bytes(self) -> int:
        return self.qs * self.quad_bytes

    @cached_property
    def roles(self) -> tuple[tuple, ...]:
        p = self.bits // 2
        roles: list[tuple] = []
        for q in range(p // 2):
            roles += [("quartet", q, rr) for rr in range(4 * self.rm)]
        if p % 2:
            roles += [("pair", rr) for rr in range(2 * self.rm)]
        if self.bits % 2:
            roles += [("single", rr) for rr in range(self.rm)]
        assert len(roles) == self.rm * self.bits
        return tuple(roles)

    @cached_property
    def vectors(self) -> tuple[tuple[int, tuple], ...]:
        return tuple((qd, role) for qd in range(self.qs) for role in self.roles)

    def place(self, role: tuple) -> tuple[np.ndarray, np.ndarray]:
        """(row in block, plane) of each of the W positions of a role's vector."""
        w, pos = self.w, np.arange(self.w)
        if role[0] == "quartet":
            _, q, rr = role
            return rr * (w // 4) + pos // 4, 4 * q + pos % 4
        i, t = pos // 2, pos % 2
        e, h = i // 2, i % 2
        if role[0] == "pair":
            rr = role[1]
            k = self.bits // 2 - 1
            return rr * (w // 2) + h * (w // 4) + e, 2 * k + t
        rr = role[1]  # single: t picks accumulator a or b
        row = rr * w + t * (w // 2) + h * (w // 4) + e
        return row, np.full(w, self.bits - 1)

    def widen(self, role: tuple) -> list[tuple[tuple[int, int], tuple]]:
        """`vpmaddubsw` coefficient pairs and the accumulator each result adds to."""
        if role[0] == "single":
            return [((1, 0), ("sa", role[1])), ((0, 1), ("sb", role[1]))]
        return [((1, 2), role)]

    @cached_property
    def accumulators(self) -> tuple[tuple, ...]:
        accs: list[tuple] = []
        for role in self.roles:
            for _, acc in self.widen(role):
                accs.append(acc)
        return tuple(accs)

    def flush(self, acc: tuple) -> list[tuple[tuple[int, int], int]]:
        """`vpmaddwd` coefficient pairs and the output vector (row order) each
        int32 result adds to: output vector v holds rows v*W/4 .. (v+1)*W/4-1."""
        if acc[0] == "quartet":
            _, q, rr = acc
            return [((4 ** (2 * q), 4 ** (2 * q + 1)), rr)]
        if acc[0] == "pair":
            c = 4 ** (self.bits // 2 - 1)
            return [((c, 0), 2 * acc[1]), ((0, c), 2 * acc[1] + 1)]
        c = 2 ** (self.bits - 1)
        base = 4 * acc[1] + (2 if acc[0] == "sb" else 0)
        return [((c, 0), base), ((0, c), base + 1)]

    @property
    def outputs(self) -> int:
        return self.r // self.lanes


def plan(bits: int, w: int, rm: int) -> Plan:
    """The layout for B = `bits` planes, `w`-byte vectors, blocks of rm*w rows."""
    return Plan(bits, w, rm)


def _stored_nibble(idx: np.ndarray, half: bool) -> np.ndarray:
    """The nibble the kernel looks up in [-H, H] for table index i (half tables)."""
    return np.where(idx >= 8, idx, 7 - idx) if half else idx


def repack_planes(pl: Plan, planes: np.ndarray, half: bool) -> np.ndarray:
    """planes [B, N, J] (g = 4 indices) -> the fast path's index stream (bytes).

    Order: [row block][step of qs quads][chunk][W bytes]; rows past N are 0.
    """
    bits, n, j = planes.shape
    r, qs = pl.r, pl.qs
    nb = -(-n // r)
    p = np.zeros((bits, nb * r, j), np.uint8)
    p[:, :n] = _stored_nibble(planes.astype(np.int64), half)
    p = p.reshape(bits, nb, r, j // qs, qs)
    rows = np.stack([pl.place(role)[0] for _, role in pl.vectors])  # [V, W]
    planes_of = np.stack([pl.place(role)[1] for _, role in pl.vectors])
    quads = np.array([qd for qd, _ in pl.vectors])[:, None].repeat(pl.w, axis=1)
    x = p[planes_of, :, rows, :, quads]  # [V, W, nb, steps]
    x = x.transpose(2, 3, 0, 1)  # [nb, steps, V, W]
    out = x[:, :, 0::2] | (x[:, :, 1::2] << 4)
    return np.ascontiguousarray(out, np.uint8).reshape(-1)


def repack_rows(values: np.ndarray, r: int, f16: bool) -> np.ndarray:
    """[N, Gn] per-row constants -> [row block][group]{r values} as f16 or f32."""
    n, gn = values.shape
    nb = -(-n // r)
    x = np.zeros((nb * r, gn), np.float32)
    x[:n] = values
    x = x.reshape(nb, r, gn).transpose(0, 2, 1)
    return np.ascontiguousarray(x, np.float16 if f16 else np.float32).view(np.uint8)


def _fast_plan(spec: _Lut, w: int) -> tuple[Plan, int] | None:
    """The layout and the quads per int16 flush, or None (use the scalar path)."""
    uq = spec.unit // 4
    for rm in (2, 1) if spec.bits <= 2 else (1, 2):
        pl = plan(spec.bits, w, rm)
        if uq % pl.qs:
            continue
        f = max(
            d
            for d in range(1, min(uq, _MAX_QUADS_I16) + 1)
            if uq % d == 0 and d % pl.qs == 0
        )
        return pl, f
    return None


# -- LLVM IR helpers -----------------------------------------------------------------


def _vt(t: ir.Type, n: int) -> ir.VectorType:
    return ir.VectorType(t, n)


def _const(t: ir.Type, n: int, values: Sequence[float] | float) -> ir.Constant:
    vals = list(values) if isinstance(values, Sequence) else [values] * n
    assert len(vals) == n
    return ir.Constant(_vt(t, n), vals)


def _c64(v: int) -> ir.Constant:
    return ir.Constant(I64, v)


class _Gen:
    """KernelBuilder plus loops that carry values (phis) and a few helpers."""

    def __init__(self, kb: KernelBuilder) -> None:
        self.kb = kb
        self.b = kb.b
        self._n = 0

    def loop(
        self,
        start: ir.Value | int,
        stop: ir.Value | int,
        body: Callable[[ir.Value, list[ir.Value]], list[ir.Value]],
        carry: Sequence[ir.Value] = (),
        step: int = 1,
        name: str = "l",
    ) -> list[ir.Value]:
        """for i in range(start, stop, step): carry = body(i, carry); the final carry.

        A loop of one static iteration is emitted inline.
        """
        b = self.b
        if isinstance(start, int) and isinstance(stop, int):
            if stop <= start:
                return list(carry)
            if stop - start <= step:
                return body(_c64(start), list(carry))
        start = _c64(start) if isinstance(start, int) else start
        stop = _c64(stop) if isinstance(stop, int) else stop
        self._n += 1
        tag = f"{name}{self._n}"
        fn = self.kb.fn
        pre = b.block
        head = fn.append_basic_block(f"{tag}.head")
        loop = fn.append_basic_block(f"{tag}.body")
        done = fn.append_basic_block(f"{tag}.done")
        b.branch(head)
        b.position_at_end(head)
        i = b.phi(I64, name=tag)
        i.add_incoming(start, pre)
        phis = []
        for v in carry:
            p = b.phi(v.type)
            p.add_incoming(v, pre)
            phis.append(p)
        b.cbranch(b.icmp_signed("<", i, stop), loop, done)
        b.position_at_end(loop)
        nxt = body(i, list(phis))
        i.add_incoming(b.add(i, _c64(step), flags=["nsw"]), b.block)
        for p, v in zip(phis, nxt, strict=True):
            p.add_incoming(v, b.block)
        b.branch(head)
        b.position_at_end(done)
        return phis

    def gep8(self, ptr: ir.Value, off: ir.Value | int) -> ir.Value:
        return self.kb.gep(ptr, off, I8)

    def alloca(self, ty: ir.Type, n: int, align: int = 64) -> ir.Value:
        b = self.b
        with b.goto_entry_block():
            b.position_at_start(self.kb.fn.entry_basic_block)
            p = b.alloca(ir.ArrayType(ty, n))
            p.align = align
        p.type = PTR  # opaque, as every other buffer (llvmlite types allocas)
        return p

    def imin(self, x: ir.Value, y: ir.Value) -> ir.Value:
        return self.b.select(self.b.icmp_signed("<", x, y), x, y)


class _Simd:
    """The three byte ops of the fast path for one vector width.

    avx2: `vpshufb` (indices masked to a nibble), `vpmaddubsw`, `vpmaddwd`.
    avx512: `vpermb` on a table replicated to all four lanes (reads index bits
    0-5 only, so no mask), and the 512-bit `vpmaddubsw`/`vpmaddwd`.
    `emulate` runs the avx512 schedule (W = 64) on avx2 instructions, half a
    vector at a time, with the same results (tests run it on AVX2 hosts).
    """

    def __init__(self, module: ir.Module, isa: str, emulate: bool = False) -> None:
        self.module = module
        self.w = 64 if isa == "avx512" or emulate else 32
        self.emulate = emulate
        self.mask_index = self.w == 32  # vpermb ignores bits 6-7 of the index
        self.native512 = isa == "avx512" and not emulate

    def _avx2(self, name: str, ret: ir.Type, a: ir.Value, c: ir.Value, b: ir.IRBuilder):
        fn = declare(self.module, name, ret, [a.type, c.type])
        return b.call(fn, [a, c])

    def _halves(self, b: ir.IRBuilder, v: ir.Value) -> tuple[ir.Value, ir.Value]:
        n = v.type.count // 2
        und = ir.Constant(v.type, None)
        return (
            b.shuffle_vector(v, und, _const(I32, n, list(range(n)))),
            b.shuffle_vector(v, und, _const(I32, n, list(range(n, 2 * n)))),
        )

    def _concat(self, b: ir.IRBuilder, lo: ir.Value, hi: ir.Value) -> ir.Value:
        n = lo.type.count
        return b.shuffle_vector(lo, hi, _const(I32, 2 * n, list(range(2 * n))))

    def _split(self, b, fn: Callable, x: ir.Value, y: ir.Value) -> ir.Value:
        (x0, x1), (y0, y1) = self._halves(b, x), self._halves(b, y)
        return self._concat(b, fn(x0, y0), fn(x1, y1))

    def negate_low(self, b: ir.IRBuilder, x: ir.Value) -> ir.Value:
        """Negate bytes 0-7 of every 16-byte lane: [H, H] -> [-H, H].

        avx2: one `vpsignb`; avx512 (no vpsignb): (x ^ m) - m, m = -1 there.
        Both leave the shuffle ports to the lookups.
        """
        pattern = [-1] * 8 + [1] * 8
        if self.w == 32:
            sign = _const(I8, 32, pattern * 2)
            return self._avx2("llvm.x86.avx2.psign.b", _vt(I8, 32), x, sign, b)
        m = _const(I8, self.w, [0xFF if s < 0 else 0 for s in pattern] * (self.w // 16))
        return b.sub(b.xor(x, m), m)

    def lookup(self, b: ir.IRBuilder, table: ir.Value, idx: ir.Value) -> ir.Value:
        """table[idx] per byte; `table` is a 16-byte table in every lane."""
        if self.native512:
            fn = declare(
                self.module,
                "llvm.x86.avx512.permvar.qi.512",
                _vt(I8, 64),
                [_vt(I8, 64), _vt(I8, 64)],
            )
            return b.call(fn, [table, idx])
        if self.w == 64:  # emulated vpermb: T[idx & 15] in every lane

            def one(t: ir.Value, i: ir.Value) -> ir.Value:
                i = b.and_(i, _const(I8, 32, 15))
                return self._avx2("llvm.x86.avx2.pshuf.b", _vt(I8, 32), t, i, b)

            return self._split(b, one, table, idx)
        return self._avx2("llvm.x86.avx2.pshuf.b", _vt(I8, 32), table, idx, b)

    def maddubs(self, b: ir.IRBuilder, coef: ir.Value, x: ir.Value) -> ir.Value:
        """int16 pairs coef[2i] * x[2i] + coef[2i+1] * x[2i+1] (coef unsigned)."""
        if self.native512:
            fn = declare(
                self.module,
                "llvm.x86.avx512.pmaddubs.w.512",
                _vt(I16, 32),
                [_vt(I8, 64), _vt(I8, 64)],
            )
            return b.call(fn, [coef, x])

        def one(c: ir.Value, v: ir.Value) -> ir.Value:
            return self._avx2("llvm.x86.avx2.pmadd.ub.sw", _vt(I16, 16), c, v, b)

        return self._split(b, one, coef, x) if self.w == 64 else one(coef, x)

    def maddwd(self, b: ir.IRBuilder, x: ir.Value, coef: ir.Value) -> ir.Value:
        """int32 pairs x[2i] * coef[2i] + x[2i+1] * coef[2i+1]."""
        if self.native512:
            fn = declare(
                self.module,
                "llvm.x86.avx512.pmaddw.d.512",
                _vt(I32, 16),
                [_vt(I16, 32), _vt(I16, 32)],
            )
            return b.call(fn, [x, coef])

        def one(v: ir.Value, c: ir.Value) -> ir.Value:
            return self._avx2("llvm.x86.avx2.pmadd.wd", _vt(I32, 8), v, c, b)

        return self._split(b, one, x, coef) if self.w == 64 else one(x, coef)


# -- the fast kernel ---------------------------------------------------------------


def _fast_kernel(
    req: KernelRequest, spec: _Lut, isa: str, emulate: bool = False
) -> NativeKernel | None:
    """The vpshufb / vpermb kernel (see the module docstring)."""
    kb = KernelBuilder(req)
    gen = _Gen(kb)
    b = kb.b
    simd = _Simd(kb.module, isa, emulate)
    chosen = _fast_plan(spec, simd.w)
    if chosen is None:
        return None
    pl, fq = chosen
    w, lanes, r = pl.w, pl.lanes, pl.r
    nout, qs = pl.outputs, pl.qs
    accs = pl.accumulators
    vi8, vi16, vi32, vf = _vt(I8, w), _vt(I16, w // 2), _vt(I32, lanes), _vt(F32, lanes)
    n, j = spec.n, spec.j
    unit, uq = spec.unit, spec.unit // 4
    units = spec.group // unit
    nls = spec.k // spec.act
    e = spec.entries
    nb = -(-n // r)
    gn = spec.gn
    sb = 2 if spec.scale_f16 else 4
    zero = spec.i_zero >= 0
    zf16 = zero and spec.zero_kind in "iu" and spec.zero_bits <= 11
    zb = 2 if zf16 else 4

    tbl, wts = kb.inp(spec.i_table), kb.inp(spec.i_planes)
    s1, lsp = kb.inp(spec.i_sums), kb.inp(spec.i_ls)
    out = kb.out(0)
    m_dim = _prod(spec.lead)
    m_total = kb.dim(m_dim)
    mt = m_dim if isinstance(m_dim, int) and m_dim <= _MAX_M_TILE else _MAX_M_TILE
    ytmp = gen.alloca(F32, mt * r) if spec.out == "y" else None
    ptmp = gen.alloca(F32, r) if spec.out == "p" else None
    # Half tables become full ones once per call (a stack buffer of mt*K/4*16
    # bytes) when it is small, else per quad in registers (vpsignb).
    expand = spec.half and mt * j * 16 <= _EXPAND_LIMIT
    texp = gen.alloca(I8, mt * j * 16) if expand else None
    fma = declare(kb.module, f"llvm.fma.v{lanes}f32", vf, [vf, vf, vf])
    prefetch = declare(
        kb.module, "llvm.prefetch.p0", ir.VoidType(), [PTR, I32, I32, I32]
    )
    zeros_f = ir.Constant(vf, None)
    coef_b = {c: _const(I8, w, list(c) * (w // 2)) for c in ((1, 2), (1, 0), (0, 1))}
    nib = _const(I8, w, 0x0F)
    four = _const(I16, w // 2, 4)

    def load_rows(base: ir.Value, off: ir.Value, f16: bool) -> ir.Value:
        """8 (16) per-row constants at element `off` of a repacked row buffer."""
        if f16:
            v = kb.load(base, off, _vt(HALF, lanes), align=2)
            return b.fpext(v, vf)
        return kb.load(base, off, vf, align=4)

    def broadcast16(ptr: ir.Value, at: ir.Value) -> ir.Value:
        t16 = kb.load(ptr, at, _vt(I8, 16), align=1)
        return b.shuffle_vector(
            t16,
            ir.Constant(_vt(I8, 16), None),
            _const(I32, w, list(range(16)) * (w // 16)),
        )

    def mirrored(m: ir.Value, jq: ir.Value) -> ir.Value:
        """[-H, H] in every lane from the half table H of quad jq of row m."""
        at = b.mul(b.add(b.mul(m, _c64(j)), jq), _c64(e))
        h = kb.load(gen.gep8(tbl, at), 0, I64, align=1)
        q = b.bitcast(broadcast(b, h, w // 8), vi8)  # H in every 8 bytes
        return simd.negate_low(b, q)

    def table(m: ir.Value, i: ir.Value, jq: ir.Value) -> ir.Value:
        """The 16-byte table of quad jq of row m (row i of the m tile), every lane."""
        if expand:
            return broadcast16(texp, b.mul(b.add(b.mul(i, _c64(j)), jq), _c64(16)))
        if spec.half:
            return mirrored(m, jq)
        return broadcast16(tbl, b.mul(b.add(b.mul(m, _c64(j)), jq), _c64(e)))

    def expand_tables(mc: ir.Value, count: ir.Value) -> None:
        """The m tile's half tables as full [-H, H] ones, once per call."""

        def one(i: ir.Value, _: list) -> list:
            def quad(jq: ir.Value, _: list) -> list:
                full = mirrored(b.add(mc, i), jq)
                low = b.shuffle_vector(
                    full, ir.Constant(vi8, None), _const(I32, 16, list(range(16)))
                )
                at = b.mul(b.add(b.mul(i, _c64(j)), jq), _c64(16))
                kb.store(low, texp, at, align=16)
                return []

            gen.loop(0, j, quad, name="expand")
            return []

        gen.loop(0, count, one, name="expandm")

    def step(
        m: ir.Value, i: ir.Value, jq: ir.Value, wblk: ir.Value, acc: list[ir.Value]
    ) -> list[ir.Value]:
        """One step: qs quads starting at quad jq of the block at wblk."""
        wp = gen.gep8(wblk, b.mul(jq, _c64(pl.quad_bytes)))
        for off in range(0, pl.step_bytes, 64):
            b.call(
                prefetch,
                [
                    # not inbounds: the address may lie past the stream's end
                    b.gep(wp, [_c64(_PREFETCH + off)], source_etype=I8),
                    ir.Constant(I32, 0),
                    ir.Constant(I32, 3),
                    ir.Constant(I32, 1),
                ],
            )
        tables = [table(m, i, b.add(jq, _c64(qd))) for qd in range(qs)]
        acc = list(acc)
        for c in range(len(pl.vectors) // 2):
            raw = kb.load(wp, c * w, vi8, align=1)
            hi = b.bitcast(b.lshr(b.bitcast(raw, vi16), four), vi8)
            lo = raw
            if simd.mask_index:
                lo, hi = b.and_(lo, nib), b.and_(hi, nib)
            for half_vec, (qd, role) in zip(
                (lo, hi), pl.vectors[2 * c : 2 * c + 2], strict=True
            ):
                looked = simd.lookup(b, tables[qd], half_vec)
                for coef, name in pl.widen(role):
                    a = accs.index(name)
                    acc[a] = b.add(acc[a], simd.maddubs(b, coef_b[coef], looked))
        return acc

    def flush(acc: list[ir.Value], y32: list[ir.Value]) -> list[ir.Value]:
        y32 = list(y32)
        for a, name in enumerate(accs):
            for coef, v in pl.flush(name):
                cw = _const(I16, w // 2, list(coef) * (w // 4))
                y32[v] = b.add(y32[v], simd.maddwd(b, acc[a], cw))
        return y32

    def unit_sums(
        m: ir.Value, i: ir.Value, jq0: ir.Value, wblk: ir.Value
    ) -> list[ir.Value]:
        """int32 sums of one table-scale unit starting at quad jq0."""
        zero16 = [ir.Constant(vi16, None)] * len(accs)

        def one_flush(f: ir.Value, y32: list[ir.Value]) -> list[ir.Value]:
            jf = b.add(jq0, b.mul(f, _c64(fq)))
            steps = fq // qs
            unroll = 2 if steps % 2 == 0 and steps > 2 else 1

            def body(s: ir.Value, acc: list[ir.Value]) -> list[ir.Value]:
                for k in range(unroll):
                    jq = b.add(jf, b.mul(b.add(s, _c64(k)), _c64(qs)))
                    acc = step(m, i, jq, wblk, acc)
                return acc

            acc = gen.loop(0, steps, body, zero16, step=unroll, name="step")
            return flush(acc, y32)

        return gen.loop(
            0, uq // fq, one_flush, [ir.Constant(vi32, None)] * nout, name="flush"
        )

    def group_acc(
        m: ir.Value, i: ir.Value, g: ir.Value, wblk: ir.Value, zblk: ir.Value | None
    ) -> list[ir.Value]:
        """f32 vectors of 0.5 * sum_u ls_u C_u + corr S1 (- z S2) for group g."""
        mg = b.add(b.mul(m, _c64(gn)), g)
        init = b.fmul(ir.Constant(F32, spec.corr), kb.load(s1, mg, F32, align=4))
        init_v = broadcast(b, init, lanes)
        if zblk is not None:
            s2 = broadcast(b, kb.load(kb.inp(spec.i_sums2), mg, F32, align=4), lanes)
            zoff = b.mul(g, _c64(r))
            accf = [
                b.call(
                    fma,
                    [
                        b.fneg(load_rows(zblk, b.add(zoff, _c64(v * lanes)), zf16)),
                        s2,
                        init_v,
                    ],
                )
                for v in range(nout)
            ]
        else:
            accf = [init_v] * nout

        def one_unit(u: ir.Value, accf: list[ir.Value]) -> list[ir.Value]:
            a0 = b.add(b.mul(g, _c64(spec.group)), b.mul(u, _c64(unit)))
            y32 = unit_sums(m, i, b.sdiv(a0, _c64(4)), wblk)
            ls = kb.load(
                lsp,
                b.add(b.mul(m, _c64(nls)), b.sdiv(a0, _c64(spec.act))),
                F32,
                align=4,
            )
            hls = broadcast(b, b.fmul(ir.Constant(F32, 0.5), ls), lanes)
            return [
                b.call(fma, [b.sitofp(y32[v], vf), hls, accf[v]]) for v in range(nout)
            ]

        return gen.loop(0, units, one_unit, accf, name="unit")

    def block(rb: ir.Value, mc: ir.Value, count: ir.Value) -> None:
        """Rows [rb*R, rb*R+R) of y (or P) for table rows [mc, mc+count)."""
        wblk = gen.gep8(wts, b.mul(rb, _c64(j * pl.quad_bytes)))
        row0 = b.mul(rb, _c64(r))
        valid = gen.imin(b.sub(_c64(n), row0), _c64(r))
        if spec.out == "y":
            sblk = gen.gep8(kb.inp(spec.i_scale), b.mul(rb, _c64(gn * r * sb)))
            zblk = (
                gen.gep8(kb.inp(spec.i_zero), b.mul(rb, _c64(gn * r * zb)))
                if zero
                else None
            )
        else:
            sblk = zblk = None

        if ytmp is not None:
            for k in range(mt * r // lanes):
                kb.store(zeros_f, ytmp, k * lanes, align=32)

        def one_group(g: ir.Value, _: list) -> list:
            def one_m(i: ir.Value, _: list) -> list:
                m = b.add(mc, i)
                accf = group_acc(m, i, g, wblk, zblk)
                if spec.out == "y":
                    assert sblk is not None
                    base = b.mul(i, _c64(r))
                    for v in range(nout):
                        sv = load_rows(
                            sblk,
                            b.add(b.mul(g, _c64(r)), _c64(v * lanes)),
                            spec.scale_f16,
                        )
                        at = b.add(base, _c64(v * lanes))
                        yv = kb.load(ytmp, at, vf, align=32)
                        kb.store(b.call(fma, [accf[v], sv, yv]), ytmp, at, align=32)
                else:
                    for v in range(nout):
                        kb.store(accf[v], ptmp, v * lanes, align=32)

                    def put(rr: ir.Value, _: list) -> list:
                        nn = b.add(row0, rr)
                        at = b.add(b.mul(b.add(b.mul(m, _c64(n)), nn), _c64(gn)), g)
                        kb.store(kb.load(ptmp, rr, F32, align=4), out, at, align=4)
                        return []

                    gen.loop(0, valid, put, name="putp")
                return []

            if mt == 1:
                one_m(_c64(0), [])
            else:
                gen.loop(0, count, one_m, name="m")
            return []

        gen.loop(0, gn, one_group, name="group")
        if spec.out == "y":

            def store_m(i: ir.Value, _: list) -> list:
                dst = b.add(b.mul(b.add(mc, i), _c64(n)), row0)
                full = b.icmp_signed("==", valid, _c64(r))
                with b.if_else(full) as (then, other):
                    with then:
                        for v in range(nout):
                            yv = kb.load(
                                ytmp,
                                b.add(b.mul(i, _c64(r)), _c64(v * lanes)),
                                vf,
                                align=32,
                            )
                            kb.store(yv, out, b.add(dst, _c64(v * lanes)), align=4)
                    with other:

                        def put(rr: ir.Value, _: list) -> list:
                            y = kb.load(
                                ytmp, b.add(b.mul(i, _c64(r)), rr), F32, align=4
                            )
                            kb.store(y, out, b.add(dst, rr), align=4)
                            return []

                        gen.loop(0, valid, put, name="puty")
                return []

            if mt == 1:
                store_m(_c64(0), [])
            else:
                gen.loop(0, count, store_m, name="store")

    def m_tile(mc: ir.Value, _: list) -> list:
        """Table rows [mc, mc + mt): expand their tables, then every block.

        (For M > mt the weights stream once per tile; M <= 8 streams once.)
        """
        count = gen.imin(b.sub(m_total, mc), _c64(mt)) if mt != m_dim else _c64(mt)
        if expand:
            expand_tables(mc, count)
        with kb.loop(kb.begin, kb.end) as rb:
            block(rb, mc, count)
        return []

    if mt == m_dim:
        m_tile(_c64(0), [])
    else:
        gen.loop(_c64(0), m_total, m_tile, step=mt, name="mtile")
    kind = "vpermb" if simd.native512 or emulate else "vpshufb"
    repack = {
        spec.i_planes: Repack(
            f"lut-g4-{'half' if spec.half else 'full'}-b{spec.bits}-w{w}-r{r}",
            lambda x, pl=pl, half=spec.half: repack_planes(pl, x, half),
        )
    }
    if spec.out == "y":
        repack[spec.i_scale] = Repack(
            f"lut-rows-r{r}-{'f16' if spec.scale_f16 else 'f32'}",
            lambda x, r=r, f=spec.scale_f16: repack_rows(x, r, f),
        )
        if zero:
            repack[spec.i_zero] = Repack(
                f"lut-rows-r{r}-{'f16' if zf16 else 'f32'}",
                lambda x, r=r, f=zf16: repack_rows(x, r, f),
            )
    note = (
        f"lut {kind} {isa}{' (emulated)' if emulate else ''}: B={spec.bits} "
        f"{'half' if spec.half else 'full'} int8 tables, {r}-row blocks, "
        f"G={spec.group} unit={unit}, {'y' if spec.out == 'y' else 'P'}"
    )
    return kb.kernel(rows=nb, granule=1, repack=repack, note=note)


# -- the portable scalar kernel ----------------------------------------------------


def _scalar_kernel(req: KernelRequest, spec: _Lut) -> NativeKernel:
    """Rows of y (or P) from the value-domain arrays; float64 epilogue.

    Table sums are exact integers (int8 tables) or float64 sums (f32 tables);
    P is rounded to f32 before the dequant epilogue as the interpreter does.
    """
    kb = KernelBuilder(req)
    gen = _Gen(kb)
    b = kb.b
    n, j, g, gn = spec.n, spec.j, spec.g, spec.gn
    e = spec.entries
    unit = spec.unit if spec.int8 else spec.group
    uq = unit // g
    nls = spec.k // spec.act if spec.int8 else 1
    tbl, pln = kb.inp(spec.i_table), kb.inp(spec.i_planes)
    s1 = kb.inp(spec.i_sums)
    lsp = kb.inp(spec.i_ls) if spec.int8 else None
    out = kb.out(0)
    m_total = kb.dim(_prod(spec.lead))
    acc_t = I32 if spec.int8 else F64
    tval_t = I8 if spec.int8 else F32
    mask = 2 ** (g - 1) - 1
    zero = spec.i_zero >= 0
    z_t = ir.IntType(8 * spec.zero_size) if zero and spec.zero_kind in "iu" else F32

    def lookup(m: ir.Value, jq: ir.Value, idx: ir.Value) -> ir.Value:
        base = b.mul(b.add(b.mul(m, _c64(j)), jq), _c64(e))
        if not spec.half:
            v = kb.load(tbl, b.add(base, b.zext(idx, I64)), tval_t)
            return b.sext(v, I32) if spec.int8 else b.fpext(v, F64)
        top = b.icmp_unsigned(
            "!=", b.and_(idx, ir.Constant(I32, mask + 1)), ir.Constant(I32, 0)
        )
        k = b.select(
            top,
            b.and_(idx, ir.Constant(I32, mask)),
            b.and_(b.not_(idx), ir.Constant(I32, mask)),
        )
        v = kb.load(tbl, b.add(base, b.zext(k, I64)), tval_t)
        if spec.int8:
            v = b.sext(v, I32)
            return b.select(top, v, b.neg(v))
        v = b.fpext(v, F64)
        return b.select(top, v, b.fneg(v))

    def row(nn: ir.Value) -> None:
        def one_m(m: ir.Value, _: list) -> list:
            def one_group(gi: ir.Value, y: list[ir.Value]) -> list[ir.Value]:
                def one_unit(u: ir.Value, pg: list[ir.Value]) -> list[ir.Value]:
                    j0 = b.add(b.mul(gi, _c64(spec.group // g)), b.mul(u, _c64(uq)))

                    def quad(jj: ir.Value, c: list[ir.Value]) -> list[ir.Value]:
                        jq = b.add(j0, jj)
                        acc = c[0]
                        for bit in range(spec.bits):
                            at = b.add(b.mul(b.add(_c64(bit * n), nn), _c64(j)), jq)
                            idx = b.zext(kb.load(pln, at, I8), I32)
                            v = lookup(m, jq, idx)
                            if spec.int8:
                                acc = b.add(acc, b.shl(v, ir.Constant(I32, bit)))
                            else:
                                acc = b.fadd(acc, b.fmul(v, ir.Constant(F64, 2.0**bit)))
                        return [acc]

                    zero_acc = ir.Constant(acc_t, 0 if spec.int8 else 0.0)
                    (c,) = gen.loop(0, uq, quad, [zero_acc], name="quad")
                    if spec.int8:
                        assert lsp is not None
                        a = b.sdiv(b.mul(j0, _c64(g)), _c64(spec.act))
                        ls = b.fpext(
                            kb.load(lsp, b.add(b.mul(m, _c64(nls)), a), F32), F64
                        )
                        c = b.fmul(b.sitofp(c, F64), ls)
                    return [b.fadd(pg[0], c)]

                (pg,) = gen.loop(
                    0,
                    spec.group // unit,
                    one_unit,
                    [ir.Constant(F64, 0.0)],
                    name="unit",
                )
                mg = b.add(b.mul(m, _c64(gn)), gi)
                sv = b.fpext(kb.load(s1, mg, F32), F64)
                p = b.fadd(
                    b.fmul(ir.Constant(F64, 0.5), pg),
                    b.fmul(ir.Constant(F64, spec.corr), sv),
                )
                p32 = b.fptrunc(p, F32)
                if spec.out == "p":
                    at = b.add(b.mul(b.add(b.mul(m, _c64(n)), nn), _c64(gn)), gi)
                    kb.store(p32, out, at)
                    return y
                p = b.fpext(p32, F64)
                ng = b.add(b.mul(nn, _c64(gn)), gi)
                if zero:
                    zr = kb.load(kb.inp(spec.i_zero), ng, z_t)
                    zv = {"i": b.sitofp, "u": b.uitofp}.get(spec.zero_kind, b.fpext)(
                        zr, F64
                    )
                    s2 = b.fpext(kb.load(kb.inp(spec.i_sums2), mg, F32), F64)
                    p = b.fsub(p, b.fmul(zv, s2))
                sc = b.fpext(kb.load(kb.inp(spec.i_scale), ng, F32), F64)
                return [b.fadd(y[0], b.fmul(p, sc))]

            (y,) = gen.loop(0, gn, one_group, [ir.Constant(F64, 0.0)], name="group")
            if spec.out == "y":
                kb.store(b.fptrunc(y, F32), out, b.add(b.mul(m, _c64(n)), nn))
            return []

        gen.loop(_c64(0), m_total, one_m, name="m")

    with kb.loop(kb.begin, kb.end) as nn:
        row(nn)
    note = (
        f"lut scalar: B={spec.bits} g={spec.g} {'half' if spec.half else 'full'} "
        f"{'int8' if spec.int8 else 'f32'} tables, {'y' if spec.out == 'y' else 'P'}"
    )
    return kb.kernel(rows=n, granule=16, note=note)


def _lut_kernel(req: KernelRequest, spec: _Lut) -> NativeKernel | None:
    consts = req.const_inputs
    need = [spec.i_planes] + ([spec.i_scale] if spec.out == "y" else [])
    need += [spec.i_zero] if spec.i_zero >= 0 else []
    fast = (
        req.isa in ("avx2", "avx512")
        and spec.int8
        and spec.g == 4
        and all(i in consts for i in need)
    )
    if fast:
        kernel = _fast_kernel(req, spec, req.isa)
        if kernel is not None:
            return kernel
    return _scalar_kernel(req, spec)


@register(FusedOp, kind="epilogue")
def lut_epilogue(req: KernelRequest) -> NativeKernel | None:
    """y = group_dequant_reduce(lut_accumulate(...)) in one pass over the weights."""
    fused = req.op
    assert isinstance(fused, FusedOp)
    spec = _parse_epilogue(fused, req)
    return None if spec is None else _lut_kernel(req, spec)


@register(lowp.LutAccumulateOp)
def lut_accumulate(req: KernelRequest) -> NativeKernel | None:
    """P of one `lp.lut_accumulate` (no epilogue fused)."""
    op = req.op
    assert isinstance(op, lowp.LutAccumulateOp)
    args = req.args

    def slot(v: SSAValue) -> int | None:
        return req.arg_index(v) if v in args else None

    spec = _parse_accumulate(op, slot)
    return None if spec is None else _lut_kernel(req, spec)


# -- table precompute, table scale and group sums ------------------------------------


@dataclass(frozen=True)
class _Pre:
    """One op of the precompute family on x [lead..., K] (f32 values)."""

    op: Operation
    x: int  # input slot of x
    out: int  # output index
    scale: int = -1  # lut_precompute: input slot of ls, or -(1 + output) of ls


def _x_ok(v: SSAValue) -> bool:
    k = shape(v)[-1]
    return _f32_values(v) and isinstance(k, int)


def _emit_group_sum(kb: KernelBuilder, gen: _Gen, p: _Pre, m: ir.Value) -> None:
    op = p.op
    assert isinstance(op, lowp.GroupSumOp)
    b = kb.b
    k, grp = shape(op.input)[-1], op.group.data
    assert isinstance(k, int)
    gn = -(-k // grp)
    x, out = kb.inp(p.x), kb.out(p.out)
    base = b.mul(m, _c64(k))

    v8 = _vt(F32, 8)

    def one(gi: ir.Value, _: list) -> list:
        # 8 partial sums (the interpreter's NumPy sum pairs terms up too), then
        # a tree over the lanes and the tail of a short group.
        k0 = b.add(base, b.mul(gi, _c64(grp)))
        size = gen.imin(_c64(grp), b.sub(_c64(k), b.mul(gi, _c64(grp))))
        body = b.mul(b.sdiv(size, _c64(8)), _c64(8))

        def add8(kk: ir.Value, acc: list[ir.Value]) -> list[ir.Value]:
            return [b.fadd(acc[0], kb.load(x, b.add(k0, kk), v8, align=4))]

        (acc,) = gen.loop(0, body, add8, [ir.Constant(v8, None)], step=8, name="sum8")
        s = _tree(b, acc, b.fadd)

        def add(kk: ir.Value, t: list[ir.Value]) -> list[ir.Value]:
            return [b.fadd(t[0], kb.load(x, b.add(k0, kk), F32, align=4))]

        (s,) = gen.loop(body, size, add, [s], name="sum")
        kb.store(s, out, b.add(b.mul(m, _c64(gn)), gi), align=4)
        return []

    gen.loop(0, gn, one, name="gsum")


def _tree(b: ir.IRBuilder, v: ir.Value, op: Callable) -> ir.Value:
    """op over the lanes of v, pairwise."""
    lanes = [b.extract_element(v, ir.Constant(I32, i)) for i in range(v.type.count)]
    while len(lanes) > 1:
        lanes = [op(lanes[i], lanes[i + 1]) for i in range(0, len(lanes), 2)]
    return lanes[0]


def _fmax(b: ir.IRBuilder, x: ir.Value, y: ir.Value) -> ir.Value:
    return b.select(b.fcmp_ordered(">", x, y), x, y)


def _quad_sums(b: ir.IRBuilder, xs: list[ir.Value]) -> ir.Value:
    """|x0| + |x1| + ... added left to right in f32 (NumPy's order for < 8 terms)."""
    fabs = declare(b.module, "llvm.fabs.f32", F32, [F32])
    s = b.call(fabs, [xs[0]])
    for v in xs[1:]:
        s = b.fadd(s, b.call(fabs, [v]))
    return s


def _emit_lut_scale(kb: KernelBuilder, gen: _Gen, p: _Pre, m: ir.Value) -> None:
    op = p.op
    assert isinstance(op, lowp.LutScaleOp)
    b = kb.b
    k = shape(op.input)[-1]
    assert isinstance(k, int)
    g, a = op.group.data, op.act_group.data
    na = k // a
    x, out = kb.inp(p.x), kb.out(p.out)
    base = b.mul(m, _c64(k))

    vec = (a // g) % 8 == 0  # 8 quads at a time, each lane summing in order
    fabs = declare(
        kb.module, f"llvm.fabs.v{8 * g}f32", _vt(F32, 8 * g), [_vt(F32, 8 * g)]
    )

    def one(ai: ir.Value, _: list) -> list:
        a0 = b.add(base, b.mul(ai, _c64(a)))

        def quad(jj: ir.Value, mx: list[ir.Value]) -> list[ir.Value]:
            at = b.add(a0, b.mul(jj, _c64(g)))
            s = _quad_sums(
                b, [kb.load(x, b.add(at, _c64(t)), F32, align=4) for t in range(g)]
            )
            return [_fmax(b, s, mx[0])]

        def octet(jj: ir.Value, mx: list[ir.Value]) -> list[ir.Value]:
            xs = b.call(
                fabs,
                [kb.load(x, b.add(a0, b.mul(jj, _c64(g))), _vt(F32, 8 * g), align=4)],
            )
            und = ir.Constant(xs.type, None)
            cols = [
                b.shuffle_vector(xs, und, _const(I32, 8, [t + g * i for i in range(8)]))
                for t in range(g)
            ]
            s = cols[0]
            for c in cols[1:]:
                s = b.fadd(s, c)
            return [_fmax(b, s, mx[0])]

        if vec:
            zero8 = ir.Constant(_vt(F32, 8), None)
            (mx8,) = gen.loop(0, a // g, octet, [zero8], step=8, name="amax8")
            mx = _tree(b, mx8, lambda p, q: _fmax(b, p, q))
        else:
            (mx,) = gen.loop(0, a // g, quad, [ir.Constant(F32, 0.0)], name="amax")
        ls = b.fdiv(mx, ir.Constant(F32, float(lowp.TABLE_LIMIT)))
        kb.store(ls, out, b.add(b.mul(m, _c64(na)), ai), align=4)
        return []

    gen.loop(0, na, one, name="ls")


def _emit_precompute(kb: KernelBuilder, gen: _Gen, p: _Pre, m: ir.Value) -> None:
    op = p.op
    assert isinstance(op, lowp.LutPrecomputeOp)
    b = kb.b
    k = shape(op.input)[-1]
    assert isinstance(k, int)
    g = op.group.data
    j = k // g
    half = op.half is not None
    first = 2 ** (g - 1) if half else 0
    e = 2**g - first
    signs = [
        _const(F32, e, [float(2 * ((i >> t) & 1) - 1) for i in range(first, 2**g)])
        for t in range(g)
    ]
    x, out = kb.inp(p.x), kb.out(p.out)
    base = b.mul(m, _c64(k))
    if op.scale is not None:
        ls_ptr = kb.inp(p.scale) if p.scale >= 0 else kb.out(-1 - p.scale)
        na = shape(op.scale)[-1]
        assert isinstance(na, int)
        act = k // na

    def quad(jj: ir.Value, _: list) -> list:
        at = b.add(base, b.mul(jj, _c64(g)))
        # The interpreter's order: t = s0 x0, then t = t + s_k x_k (exact products).
        t = b.fmul(signs[0], broadcast(b, kb.load(x, at, F32, align=4), e))
        for tt in range(1, g):
            xv = broadcast(b, kb.load(x, b.add(at, _c64(tt)), F32, align=4), e)
            t = b.fadd(t, b.fmul(signs[tt], xv))
        dst = b.mul(b.add(b.mul(m, _c64(j)), jj), _c64(e))
        if op.scale is None:
            kb.store(t, out, dst, align=4)
            return []
        ai = b.sdiv(b.mul(jj, _c64(g)), _c64(act))
        ls = kb.load(ls_ptr, b.add(b.mul(m, _c64(na)), ai), F32, align=4)
        q = b.fdiv(t, broadcast(b, ls, e))
        # rint(q) clamped to +-127: clamp to +-256 first, round half to even with
        # the 1.5 * 2^23 trick (exact there, any ISA), clamp again.
        q = _clamp(b, q, 256.0)
        magic = _const(F32, e, 12582912.0)
        q = _clamp(b, b.fsub(b.fadd(q, magic), magic), float(lowp.TABLE_LIMIT))
        qi = b.fptosi(q, _vt(I8, e))
        pos = b.fcmp_ordered(">", ls, ir.Constant(F32, 0.0))
        qi = b.select(pos, qi, ir.Constant(_vt(I8, e), None))
        kb.store(qi, out, dst, align=1)
        return []

    gen.loop(0, j, quad, name="table")


def _clamp(b: ir.IRBuilder, v: ir.Value, lim: float) -> ir.Value:
    n = v.type.count
    hi, lo = _const(F32, n, lim), _const(F32, n, -lim)
    v = b.select(b.fcmp_ordered(">", v, hi), hi, v)
    return b.select(b.fcmp_ordered("<", v, lo), lo, v)


_EMIT = {
    lowp.GroupSumOp: _emit_group_sum,
    lowp.LutScaleOp: _emit_lut_scale,
    lowp.LutPrecomputeOp: _emit_precompute,
}


def _pre_ok(op: Operation) -> bool:
    """Ops of the family whose f32 results this file reproduces."""
    if isinstance(op, lowp.GroupSumOp):
        return _x_ok(op.input) and _f32_values(op.result)
    if isinstance(op, lowp.LutScaleOp):
        # NumPy sums fewer than 8 terms left to right; 8 it may pair up.
        return _x_ok(op.input) and op.group.data < 8
    if isinstance(op, lowp.LutPrecomputeOp):
        return _x_ok(op.input) and (op.scale is None or _f32_values(op.scale))
    return False


def _pre_kernel(req: KernelRequest, pres: list[_Pre], x: SSAValue) -> NativeKernel:
    """Rows = the leading rows of x; each row runs every op in order."""
    kb = KernelBuilder(req)
    gen = _Gen(kb)
    with kb.loop(kb.begin, kb.end) as m:
        for p in pres:
            _EMIT[type(p.op)](kb, gen, p, m)
    names = ", ".join(p.op.name for p in pres)
    return kb.kernel(
        rows=_prod(shape(x)[:-1]), granule=1, note=f"lut precompute: {names}"
    )


@register(lowp.LutScaleOp)
@register(lowp.LutPrecomputeOp)
def lut_precompute(req: KernelRequest) -> NativeKernel | None:
    """One table-family op on x: a row of x per parallel row.

    A lone `lp.group_sum` is group_matmul.py's (one generator per op); this
    file emits group sums only inside a fused precompute region.
    """
    op = req.op
    if not _pre_ok(op):
        return None
    x = op.operands[0]
    scale = -1
    if isinstance(op, lowp.LutPrecomputeOp) and op.scale is not None:
        scale = req.arg_index(op.scale)
    return _pre_kernel(req, [_Pre(op, req.arg_index(x), 0, scale)], x)


@register(FusedOp, kind="precompute")
def lut_precompute_fused(req: KernelRequest) -> NativeKernel | None:
    """A precompute region of only group_sum / lut_scale / lut_precompute on one x,
    every result yielded (the shape `fuse-table-precompute` makes for a plain x)."""
    fused = req.op
    assert isinstance(fused, FusedOp)
    block = fused.body.block
    ops = list(block.ops)
    yld = ops[-1]
    body = ops[:-1]
    if not body or not isinstance(yld, YieldOp) or len(block.args) != 1:
        return None
    x = block.args[0]
    results = list(yld.operands)
    if len(results) != len(body) or {r.owner for r in results} != set(body):
        return None
    pres = []
    for op in body:
        if type(op) not in _EMIT or not _pre_ok(op) or op.operands[0] is not x:
            return None
        scale = -1
        if isinstance(op, lowp.LutPrecomputeOp) and op.scale is not None:
            if op.scale.owner not in body:
                return None
            scale = -1 - results.index(op.scale)
        pres.append(
            _Pre(op, req.arg_index(fused.inputs[0]), results.index(op.result), scale)
        )
    return _pre_kernel(req, pres, fused.inputs[0])
