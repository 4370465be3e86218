"""CPU kernels for dequant-after-group-GEMM: the weight stream read once, narrow.

What runs natively (anything else returns None and runs in the interpreter):

* `lp.fused epilogue` whose body is `lp.group_matmul`, then
  `lp.group_dequant_reduce` (scale, optional zero + sums, optional act_scale;
  result f32), then optionally elementwise ops on y (bias, activation: any op
  `elementwise.can_emit` takes, reading y, splat constants, and inputs shaped
  like y, like a row of y, or like a scalar): y = sum_g s a (P - z S) in one
  pass over the weights, the tail applied in registers before the store;
* `lp.group_matmul` alone (P [..., M, N, Gn], f32 or int32);
* `lp.group_dequant_reduce` alone and `lp.group_sum` (exact: they replicate
  NumPy's pairwise summation order, so they equal the interpreter bit for bit).

Weights must be program constants (`const_inputs`, repacked at compile time);
so must the scale and zero of the fused form. Weight types: int/uint of 1..8
bits, and float formats of at most 8 bits with float activations.

Two activation paths:

* float x (f32 values): each weight code becomes an f32 lane (`sitofp` of
  the field; float formats through a 16-entry `vpermps` table, else a gather
  from the 2^b-entry table), one FMA per weight and row of x; P per group in
  f32, then the epilogue y += s (P - z S) in f32. Int codes of <= 4 bits are
  masked in place (u 2^(w t)) against x pre-scaled by 2^(-w t) once per tile,
  which saves a shift per weight. The error is f32 reassociation only
  (tests/codegen/test_group_matmul.py derives the bound).
* int8 x (W4A8 from `dequant-after-group-gemm{act="int8"}`): P is exact int32
  (`vpmaddubsw`+`vpmaddwd` on AVX2, `vpdpbusd` on AVX-512, `vpmaddwd` on
  sign-extended bytes for 8-bit AVX2 weights, i32 multiplies on "generic");
  the epilogue runs in float64 in the interpreter's order (terms
  ((P - z S) s) a, then NumPy's pairwise sum over groups), so the result equals
  the interpreter's bit for bit.

Layouts (the `Repack` of the weight constant; `R` output rows per block, `VL`
rows per vector, `V = R / VL`). Rows are padded to blocks of R and every
group to whole units, with code 0 (value 0, or `min` for biased codes, whose
products the kernel never adds: padded k slots are skipped or meet x = 0).
* "kmajor" (float x; int x on generic), compute-bound, so every code sits
  in one power-of-two field of w bits (3 bits in 4, 5..7 in 8; measured
  faster than planes, see `_plan`): for each block, group and unit of
  U = 32 / w k values, V vectors of VL dwords, lane = row, bits [w j, w j + w)
  = k = U u + j. Codes of <= 4 bits are biased to unsigned (q - min, masked
  in place, P = sum u x + min S); signed bytes are two's complement (shl +
  ashr sign-extends); unsigned and float-format codes plain (lshr + and).
* "quads" (int8 x on AVX2/AVX-512), memory-bound, so a code of b bits is
  split into power-of-two planes (3 = 2+1, 5 = 4+1, 6 = 4+2, 7 = 4+2+1): a
  byte vector is VL rows x 4 consecutive k (one dword per row: what
  `vpmaddubsw`/`vpdpbusd` want); a plane of width w packs 8 / w byte vectors
  into the bits of one. Codes u = q - min (the unsigned operand) and
  P = sum u X + min S_X. 8-bit weights on AVX2 keep raw bytes (sign-extended
  to i16 for `vpmaddwd`) with rows in slot order 0,1,4,5,2,3,6,7 so that the
  closing `vphaddd` puts them back in order.

Scales (and zeros) are repacked the same way as their own streams, [block]
[group][R] (f16 for f16 scales on AVX2/AVX-512, bf16 for bf16, else f32), so
each thread reads up to three contiguous ranges (a `Repack` sees one
constant, so they cannot share the code stream). The kernel's rows are the blocks
(granule 1); inside a block, rows of x go in tiles of up to 4 that reuse each
unpacked weight vector, and a software prefetch runs 1 KiB ahead of the codes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from llvmlite import ir
from xdsl.ir import BlockArgument, Operation, SSAValue

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
from lpcc.codegen.shapes import group_act_ok as _x_ok
from lpcc.codegen.shapes import group_weight_ok as _weight_ok
from lpcc.codegen.shapes import static
from lpcc.ir.dialect import lowp
from lpcc.ir.dialect import ops as lp
from lpcc.ir.dialect.fused import FusedOp, YieldOp
from lpcc.ir.dtypes import DType, FloatType, IntType
from lpcc.ir.symbolic import Dim
from lpcc.ir.symbolic import dim_prod as _prod

__all__ = ["emit_pairwise"]

_VL = {"avx512": 16, "avx2": 8, "generic": 8}
# Accumulator vectors one tile may keep in registers (16 ymm / 32 zmm; the
# "generic" <8 x float> is two xmm each).
_ACC_MAX = {"avx512": 24, "avx2": 12, "generic": 6}
_PREFETCH = 1024  # bytes ahead on the code stream
_PW_BLOCK = 128  # NumPy's PW_BLOCKSIZE (pairwise summation)
_TERMS_LIMIT = 256 * 1024  # stack bytes for the f64 terms of an int8 tile
_XS_MAX_K = 16384  # pre-scaled x of a tile on the stack: 4 rows x K floats
_F32 = np.dtype(np.float32)


# -- NumPy's pairwise summation ---------------------------------------------------


def emit_pairwise(
    kb: KernelBuilder,
    n: int,
    load: Callable[[ir.Value | int], ir.Value],
    ty: ir.Type,
    load8: Callable[[ir.Value | int], ir.Value] | None = None,
    valid: int | None = None,
) -> ir.Value:
    """sum(terms[0:n]) in exactly the order of NumPy's `add.reduce` (pairwise).

    `load(i)` gives term i (a scalar, or a vector: lanes are independent
    sums); with `load8(i)` (scalar terms only) terms i..i+7 come as one
    <8 x T>, whose lanes are NumPy's eight partial sums. n is static. With
    `valid`, terms from `valid` on are zeros that are still added (a short
    group the interpreter pads with zeros; adding 0.0 can turn -0.0 into 0.0).
    """
    b = kb.b
    valid = n if valid is None else valid
    vty = ty if load8 is None else _vec(ty, 8)
    zero = _splat(ty, 0.0) if isinstance(ty, ir.VectorType) else ir.Constant(ty, 0.0)

    def term(i: int) -> ir.Value:
        return load(i) if i < valid else zero

    def chunk(i: int) -> list[ir.Value] | ir.Value:
        """Terms i..i+7: eight values, or one <8 x T> with load8."""
        if load8 is None:
            return [term(i + j) for j in range(8)]
        if i + 8 <= valid:
            return load8(i)
        vec = _splat(vty, 0.0)
        for j in range(8):
            if i + j < valid:
                vec = b.insert_element(vec, load(i + j), ir.Constant(I32, j))
        return vec

    def leaf(start: int, m: int) -> ir.Value:
        if m < 8:
            res = zero
            for i in range(m):
                res = b.fadd(res, term(start + i))
            return res
        m8 = m - m % 8
        # chunks after the first that are all real terms run in a loop
        full_end = start + 8 + max(0, min(m8 - 8, (valid - start - 8) // 8 * 8))
        if load8 is not None:
            accs = [_var(kb, vty, "pw8")]
            b.store(chunk(start), accs[0])
        else:
            accs = [_var(kb, ty, "pw") for _ in range(8)]
            for a, t in zip(accs, chunk(start), strict=True):
                b.store(t, a)

        def add(vals: list[ir.Value] | ir.Value) -> None:
            vals = [vals] if load8 is not None else vals
            for a, t in zip(accs, vals, strict=True):
                b.store(b.fadd(b.load(a), t), a)

        if full_end > start + 8:
            with kb.loop(start + 8, full_end, 8, "pw") as i:
                if load8 is not None:
                    add(load8(i))
                else:
                    add([load(b.add(i, ir.Constant(I64, j))) for j in range(8)])
        for i in range(full_end, start + m8, 8):
            add(chunk(i))
        if load8 is not None:
            r = b.load(accs[0])
            lanes = [b.extract_element(r, ir.Constant(I32, j)) for j in range(8)]
        else:
            lanes = [b.load(a) for a in accs]
        res = b.fadd(
            b.fadd(b.fadd(lanes[0], lanes[1]), b.fadd(lanes[2], lanes[3])),
            b.fadd(b.fadd(lanes[4], lanes[5]), b.fadd(lanes[6], lanes[7])),
        )
        for i in range(start + m8, start + m):
            res = b.fadd(res, term(i))
        return res

    def rec(start: int, m: int) -> ir.Value:
        if m <= _PW_BLOCK:
            return leaf(start, m)
        m2 = m // 2
        m2 -= m2 % 8
        left = rec(start, m2)
        return b.fadd(left, rec(start + m2, m - m2))

    return rec(0, n)


# -- small IR helpers -----------------------------------------------------------------


def _vec(elt: ir.Type, n: int) -> ir.VectorType:
    return ir.VectorType(elt, n)


def _splat(ty: ir.VectorType, v: float | int) -> ir.Constant:
    return ir.Constant(ty, [ir.Constant(ty.element, v)] * ty.count)


def _var(kb: KernelBuilder, ty: ir.Type, name: str = "v", count: int = 0) -> ir.Value:
    """A stack slot (an array of `count` when > 0) allocated in the entry block.

    Scalar and vector slots become SSA values again (LLVM's mem2reg), so loop
    accumulators need no hand-written phis.
    """
    b = kb.b
    with b.goto_entry_block():
        b.position_at_start(kb.fn.entry_basic_block)
        if count:  # an opaque pointer to the first element
            slot = b.alloca(ir.ArrayType(ty, count), name=name)
            slot.align = 64
            slot.type = PTR  # llvmlite checks pointee types; LLVM's are opaque
        else:
            slot = b.alloca(ty, name=name)
    return slot


def _suffix(ty: ir.Type) -> str:
    """LLVM's overload suffix of a type ("v8f32", "f64", "i32")."""
    if isinstance(ty, ir.VectorType):
        return f"v{ty.count}{_suffix(ty.element)}"
    if isinstance(ty, ir.FloatType):
        return "f32"
    if isinstance(ty, ir.DoubleType):
        return "f64"
    return f"i{ty.width}"


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def _planes(bits: int) -> tuple[tuple[int, int], ...]:
    """(width, bit offset) of the power-of-two planes of a `bits`-bit code."""
    out, off = [], 0
    for w in (8, 4, 2, 1):
        while bits - off >= w:
            out.append((w, off))
            off += w
    return tuple(out)


# -- what a request asks for -----------------------------------------------------------


@dataclass(frozen=True)
class _Problem:
    """A group GEMM kernel: inputs (argument slots), sizes, types, mode."""

    mode: str  # "fused" (output y) | "partial" (output P)
    x: int
    w: int
    lead: tuple[Dim, ...]  # x's leading dims (flattened to M)
    n: int
    k: int
    g: int
    xdt: DType
    wdt: DType
    scale: int | None = None
    zero: int | None = None
    sums: int | None = None
    act: int | None = None
    sdt: DType | None = None
    zdt: DType | None = None
    tail: _Tail | None = None

    @property
    def gn(self) -> int:
        return _ceil(self.k, self.g)

    @property
    def last(self) -> int:
        return self.k - (self.gn - 1) * self.g

    @property
    def xint(self) -> bool:
        return isinstance(self.xdt, IntType)


def _gm_problem(
    req: KernelRequest, gm: lowp.GroupMatmulOp, arg: Callable[[SSAValue], int | None]
) -> dict | None:
    """The group_matmul part of a problem, or None when not handled."""
    xi, wi = arg(gm.input), arg(gm.weight)
    if xi is None or wi is None or wi not in req.const_inputs:
        return None
    xdt, wdt = elem(gm.input), elem(gm.weight)
    if not _x_ok(xdt) or not _weight_ok(wdt, isinstance(xdt, IntType)):
        return None
    xs, ws = shape(gm.input), shape(gm.weight)
    if len(ws) != 2 or not static(*ws) or not isinstance(xs[-1], int):
        return None
    n, k = ws
    g = gm.group.data
    if n < 1 or k < 1 or g < 1 or _ceil(k, g) > 65536:
        return None
    pdt = elem(gm.result)
    if pdt.name not in ("f32", "int32"):
        return None
    return {
        "x": xi,
        "w": wi,
        "lead": tuple(xs[:-1]),
        "n": n,
        "k": k,
        "g": g,
        "xdt": xdt,
        "wdt": wdt,
    }


def _block_arg(req: KernelRequest, op: FusedOp) -> Callable[[SSAValue], int | None]:
    def arg(v: SSAValue | None) -> int | None:
        if not isinstance(v, BlockArgument) or v.block is not op.body.block:
            return None
        return req.arg_index(op.operands[v.index])

    return arg


@dataclass(frozen=True, eq=False)
class _Tail:
    """Elementwise ops after the reduce, applied to y in registers.

    `args` classifies each block argument a tail op reads by its shape
    against y's: "scalar" (all ones), "row" ([1, .., 1, N]) or "full" (y's
    shape); `consts` are splat constants.
    """

    start: SSAValue
    ops: tuple[Operation, ...]
    consts: dict[SSAValue, Operation]
    args: dict[SSAValue, tuple[int, str]]
    final: SSAValue


def _same_dims(a: Sequence[Dim], b: Sequence[Dim]) -> bool:
    return len(a) == len(b) and all(x == y for x, y in zip(a, b, strict=True))


def _tail(
    req: KernelRequest,
    red: lowp.GroupDequantReduceOp,
    ops: Sequence[Operation],
    consts: Sequence[Operation],
    arg: Callable[[SSAValue], int | None],
    final: SSAValue,
) -> _Tail | None:
    from lpcc.codegen.llvm.kernels.elementwise import can_emit

    ys = shape(red.result)
    known: set[SSAValue] = {red.result}
    cmap = {c.results[0]: c for c in consts}
    args: dict[SSAValue, tuple[int, str]] = {}
    for op in ops:
        if isinstance(op, lp.BroadcastOp) or len(op.results) != 1 or not can_emit(op):
            return None
        for v in op.operands:
            if v in known or v in cmap:
                continue
            slot = arg(v)
            if slot is None or elem(v).value_dtype != _F32:
                return None
            vs = shape(v)
            if len(vs) != len(ys):
                return None
            if all(d == 1 for d in vs):
                args[v] = (slot, "scalar")
            elif all(d == 1 for d in vs[:-1]) and vs[-1] == ys[-1]:
                args[v] = (slot, "row")
            elif _same_dims(vs, ys):
                args[v] = (slot, "full")
            else:
                return None
        if not _same_dims(shape(op.results[0]), ys):
            return None
        known.add(op.results[0])
    if final not in known or elem(final).value_dtype != _F32:
        return None
    return _Tail(red.result, tuple(ops), cmap, args, final)


def _fused_problem(req: KernelRequest) -> _Problem | None:
    from lpcc.codegen.llvm.kernels.elementwise import can_emit

    op = req.op
    assert isinstance(op, FusedOp)
    ops = list(op.body.block.ops)
    yld = ops[-1]
    if not isinstance(yld, YieldOp) or len(yld.operands) != 1:
        return None
    consts = [o for o in ops[:-1] if isinstance(o, lp.ConstantOp)]
    rest = [o for o in ops[:-1] if not isinstance(o, lp.ConstantOp)]
    if len(rest) < 2 or not all(c.is_splat and can_emit(c) for c in consts):
        return None
    gm, red, *tail_ops = rest
    if not (
        isinstance(gm, lowp.GroupMatmulOp)
        and isinstance(red, lowp.GroupDequantReduceOp)
    ):
        return None
    if red.partial is not gm.result or len(list(gm.result.uses)) != 1:
        return None
    if elem(red.result).name != "f32":
        return None
    arg = _block_arg(req, op)
    base = _gm_problem(req, gm, arg)
    if base is None:
        return None
    extra = _reduce_args(req, red, arg, base["n"], base["xdt"])
    if extra is None:
        return None
    tail = None
    if tail_ops or yld.operands[0] is not red.result:
        tail = _tail(req, red, tail_ops, consts, arg, yld.operands[0])
        repacked = {base["w"], extra["scale"], extra.get("zero")}
        if tail is None or any(slot in repacked for slot, _ in tail.args.values()):
            return None  # (a tail reading a repacked input would see its bytes)
    return _Problem(mode="fused", **base, **extra, tail=tail)


def _reduce_args(
    req: KernelRequest,
    red: lowp.GroupDequantReduceOp,
    arg: Callable[[SSAValue], int | None],
    n: int,
    xdt: DType,
) -> dict | None:
    si = arg(red.scale)
    if si is None or si not in req.const_inputs:
        return None
    sdt = elem(red.scale)
    if sdt.value_dtype != _F32:
        return None
    out: dict = {"scale": si, "sdt": sdt}
    if red.zero is not None:
        zi, ti = arg(red.zero), arg(red.sums)
        if zi is None or ti is None or zi not in req.const_inputs:
            return None
        zdt = elem(red.zero)
        if not _f32_exact(zdt):
            return None
        want = "int32" if isinstance(xdt, IntType) else "f32"
        if elem(red.sums).name != want:
            return None
        out.update(zero=zi, sums=ti, zdt=zdt)
    if red.act_scale is not None:
        ai = arg(red.act_scale)
        if ai is None:
            return None
        out["act"] = ai
    return out


def _f32_exact(dt: DType) -> bool:
    """Whether every value of `dt` is an f32 (a zero point stored as f32)."""
    if isinstance(dt, IntType):
        return dt.bits <= 24
    return dt.value_dtype == _F32


# Tests only: plan kernels for this ISA level whatever the request's level,
# with portable IR standing in for instructions the target lacks, so the
# AVX-512 layouts (16-lane vectors, vpdpbusd quads) run on an AVX2 host.
_PLAN_ISA: str | None = None


# -- the kernel's plan ---------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """Static choices: vector widths, layout, tiles (see the module docstring)."""

    isa: str
    path: str  # "f32" | "kmajor-int" (generic) | "maddubs" | "pmaddwd" | "vnni"
    layout: str  # "kmajor" | "quads"
    vl: int
    v: int
    planes: tuple[tuple[int, int], ...]
    unit: int  # k values per unit
    stored: str  # "raw" (two's complement), "biased" (q - min), "float" (codes)
    perm: bool  # AVX2 8-bit slot order
    scaled: bool = False  # kmajor f32: fields masked in place, x pre-scaled

    @property
    def step(self) -> int:
        """k values unrolled per step of the kmajor loop."""
        return min(8, 32 // max(w for w, _ in self.planes))

    @property
    def r(self) -> int:
        return self.v * self.vl

    @property
    def dwords(self) -> int:
        """Packed vectors per unit and row vector (sum over planes)."""
        if self.layout == "kmajor":
            return sum(self.unit * w // 32 for w, _ in self.planes)
        return sum((self.unit // 4) * w // 8 for w, _ in self.planes)

    def plane_base(self, p: int) -> int:
        if self.layout == "kmajor":
            return sum(self.unit * w // 32 for w, _ in self.planes[:p])
        return sum((self.unit // 4) * w // 8 for w, _ in self.planes[:p])

    @property
    def unit_bytes(self) -> int:
        return self.dwords * self.v * self.vl * 4

    def units(self, length: int) -> int:
        return _ceil(length, self.unit)


def _plan(prob: _Problem, isa: str) -> _Plan:
    wdt = prob.wdt
    bits = wdt.bits
    vl = _VL[isa]
    v = max(1, min(4, _ceil(prob.n, vl)))
    if not prob.xint or isa == "generic":
        # Compute-bound (unpack, convert and an FMA per weight and row of x):
        # one power-of-two field per code, 3 bits in 4 and 5..7 in 8, beats
        # planes, whose unpacking doubles or triples (measured 4096x4096 g128
        # M=1 cold, 1 thread, Zen 3: int3 1.63 ms in planes, 1.0 ms in
        # nibbles; int5/int7 2.1/3.1 ms in planes, 1.2/1.1 ms in bytes).
        width = 1 << (bits - 1).bit_length()
        planes = ((width, 0),)
        step = min(8, 32 // width)
        # Float x, int codes of <= 4 bits: fields are masked in place
        # (u 2^(w t), exact in f32) and x pre-scaled by 2^(-w t) once per
        # tile, so the FMA's product is unchanged and no shift per weight is
        # needed (codes biased to unsigned, P = sum u x + min S). Measured
        # (4096x4096 g128, 1 thread, hot): int4 M=1 0.93 -> 0.72 ms, int2
        # 1.00 -> 0.72 ms; no gain for bytes (sign-extending shifts stay).
        # Needs steps aligned to groups.
        scaled = (
            not prob.xint
            and isinstance(wdt, IntType)
            and width <= 4
            and prob.g % step == 0
            and prob.k <= _XS_MAX_K
        )
        if isinstance(wdt, FloatType):
            stored = "float"
        else:
            stored = "raw" if wdt.signed and not scaled else "biased"
        path = "f32" if not prob.xint else "kmajor-int"
        unit = 32 // width
        return _Plan(isa, path, "kmajor", vl, v, planes, unit, stored, False, scaled)
    planes = _planes(bits)
    minw = min(w for w, _ in planes)
    if isa == "avx2" and bits == 8:
        return _Plan(isa, "pmaddwd", "quads", vl, v, planes, 4, "raw8", True)
    path = "vnni" if isa == "avx512" else "maddubs"
    return _Plan(isa, path, "quads", vl, v, planes, 4 * (8 // minw), "biased", False)


# -- repacking (NumPy, at compile time) -------------------------------------------


def _stored_codes(w: np.ndarray, wdt: DType, plan: _Plan) -> np.ndarray:
    """[N, K] int64 codes as the layout stores them (see _Plan.stored)."""
    stored = plan.stored
    if stored == "float":
        return np.asarray(wdt.encode(w), np.int64)
    q = np.asarray(w).astype(np.int64)
    if stored == "raw":  # two's complement in the field (sign-extended)
        return q & ((1 << sum(w_ for w_, _ in plan.planes)) - 1)
    if stored == "raw8":
        return q & 0xFF
    return q - int(wdt.min)


def _group_slices(prob: _Problem, plan: _Plan, codes: np.ndarray):
    """Per group: the codes [N_pad, units * U], rows and k zero-padded."""
    nb = _ceil(prob.n, plan.r)
    for gi in range(prob.gn):
        k0 = gi * prob.g
        length = min(prob.g, prob.k - k0)
        out = np.zeros((nb * plan.r, plan.units(length) * plan.unit), np.int64)
        out[: prob.n, :length] = codes[:, k0 : k0 + length]
        yield out


def _repack_codes(prob: _Problem, plan: _Plan) -> Callable[[np.ndarray], np.ndarray]:
    def fn(w: np.ndarray) -> np.ndarray:
        codes = _stored_codes(w, prob.wdt, plan)
        nb, vv, vl = _ceil(prob.n, plan.r), plan.v, plan.vl
        groups = []
        for cg in _group_slices(prob, plan, codes):
            nu = cg.shape[1] // plan.unit
            if plan.perm:  # AVX2 8-bit: slot s of each 8-row vector holds row perm[s]
                perm = np.array([0, 1, 4, 5, 2, 3, 6, 7])
                cg = cg.reshape(nb, vv, vl, -1)[:, :, perm].reshape(cg.shape)
            parts = []
            for w_, off in plan.planes:
                bits = (cg >> off) & ((1 << w_) - 1)
                if plan.layout == "kmajor":
                    per = 32 // w_
                    bits = bits.reshape(nb, vv, vl, nu, plan.unit // per, per)
                    sh = (w_ * np.arange(per)).astype(np.int64)
                    word = (bits << sh).sum(axis=-1).astype("<u4")
                    word = np.ascontiguousarray(word.transpose(0, 3, 4, 1, 2))
                    parts.append(word.view(np.uint8))  # nb nu d v vl*4
                else:
                    per = 8 // w_
                    nbv = plan.unit // 4
                    bits = bits.reshape(nb, vv, vl, nu, nbv // per, per, 4)
                    sh = (w_ * np.arange(per)).astype(np.int64)[:, None]
                    byte = (bits << sh).sum(axis=-2).astype(np.uint8)
                    byte = np.ascontiguousarray(byte.transpose(0, 3, 4, 1, 2, 5))
                    parts.append(
                        byte.reshape(*byte.shape[:4], vl * 4)
                    )  # nb nu d v vl*4
            unit = np.concatenate(parts, axis=2)
            groups.append(unit.reshape(nb, -1))
        return np.ascontiguousarray(np.concatenate(groups, axis=1)).reshape(-1)

    return fn


def _scale_storage(sdt: DType, isa: str) -> str:
    if sdt.name == "f16" and isa != "generic":
        return "f16"
    if sdt.name == "bf16":
        return "bf16"
    return "f32"


def _repack_rows(prob: _Problem, plan: _Plan, storage: str):
    """[N, Gn] per-(row, group) values -> [block][group][R] in `storage`."""

    def fn(a: np.ndarray) -> np.ndarray:
        a = np.asarray(a, np.float32).reshape(prob.n, prob.gn)
        nb = _ceil(prob.n, plan.r)
        pad = np.zeros((nb * plan.r, prob.gn), np.float32)
        pad[: prob.n] = a
        t = np.ascontiguousarray(pad.reshape(nb, plan.r, prob.gn).transpose(0, 2, 1))
        if storage == "f16":
            out = t.astype("<f2")
        elif storage == "bf16":
            out = (t.astype("<f4").view("<u4") >> 16).astype("<u2")
        else:
            out = t.astype("<f4")
        return np.ascontiguousarray(out).reshape(-1).view(np.uint8)

    return fn


# -- the generator ---------------------------------------------------------------------


class _Gen:
    """Emits one group GEMM kernel (fused or partial) for a `_Problem`."""

    def __init__(self, req: KernelRequest, prob: _Problem) -> None:
        self.req, self.prob = req, prob
        self.isa = req.isa
        self.plan = _plan(prob, _PLAN_ISA or req.isa)
        # AVX-512 instructions only where the target has them (see _PLAN_ISA)
        self.native512 = req.isa == "avx512"
        self.kb = KernelBuilder(req)
        self.b = self.kb.b
        self.mod = self.kb.module
        p, pl = prob, self.plan
        self.nb = _ceil(p.n, pl.r)
        self.group_bytes = pl.units(p.g) * pl.unit_bytes
        self.block_bytes = (p.gn - 1) * self.group_bytes + pl.units(
            p.last
        ) * pl.unit_bytes
        self.sstore = _scale_storage(p.sdt, req.isa) if p.scale is not None else "f32"
        self.vf = _vec(F32, pl.vl)
        self.vi = _vec(I32, pl.vl)
        self.vd = _vec(F64, pl.vl)
        self.m_total = self.kb.dim(_prod(p.lead))

    # ---- plan-level numbers
    def tiles(self) -> list[int]:
        p, pl = self.prob, self.plan
        cap = 4
        if p.mode == "fused" and p.xint:
            per_m = p.gn * pl.r * 8
            cap = max(1, min(4, _TERMS_LIMIT // per_m))
        return [t for t in (4, 2, 1) if t <= cap]

    def fits(self) -> bool:
        """Whether one tile's f64 terms (int8 x, fused) fit the stack budget."""
        p = self.prob
        return not (p.mode == "fused" and p.xint) or (
            p.gn * self.plan.r * 8 <= _TERMS_LIMIT
        )

    def quad_run(self, mt: int) -> int:
        """`vpmaddubsw` results summed in i16 before one `vpmaddwd`: as many
        as cannot overflow (2 * umax * 128 each), at most 4 (2 for tiles of
        several rows, whose x broadcasts all stay in registers)."""
        umax = (1 << self.prob.wdt.bits) - 1
        return max(1, min(32767 // (2 * umax * 128), 4 if mt == 1 else 2))

    def chunk(self, mt: int) -> int:
        """Row vectors processed at once by a tile of mt rows of x."""
        pl = self.plan
        per = 2 if pl.path == "pmaddwd" else 1
        held = 0  # x broadcasts live across the chunk's vectors
        if pl.path == "maddubs":
            held = mt * min(pl.unit // 4, self.quad_run(mt))
        for vc in range(pl.v, 0, -1):
            if pl.v % vc == 0 and mt * vc * per + held <= _ACC_MAX[self.isa]:
                return vc
        return 1

    # ---- top level
    def emit(self) -> NativeKernel:
        kb, b, p, pl = self.kb, self.b, self.prob, self.plan
        self.terms = self.xs_buf = self.xsum_buf = None
        top = self.tiles()[0]
        if p.mode == "fused" and p.xint:
            self.terms = _var(kb, F64, "terms", top * p.gn * pl.r)
        if pl.scaled:  # shared by the tile sizes
            self.xs_buf = _var(kb, F32, "xs", top * p.k)
            if int(p.wdt.min):
                self.xsum_buf = _var(kb, F32, "xsum", top * p.gn)
        with kb.loop(kb.begin, kb.end, 1, "blk") as blk:
            self.blk = blk
            self.wblk = kb.gep(
                kb.inp(p.w), b.mul(blk, ir.Constant(I64, self.block_bytes)), I8
            )
            self.tile_dispatch()
        repack = {p.w: Repack(self.layout_name(), _repack_codes(p, pl))}
        if p.scale is not None:
            tag = f"[{p.n}x{p.gn} rows of {pl.r}]"
            repack[p.scale] = Repack(
                f"gscale-{self.sstore}{tag}", _repack_rows(p, pl, self.sstore)
            )
            if p.zero is not None:
                repack[p.zero] = Repack(f"gzero-f32{tag}", _repack_rows(p, pl, "f32"))
        note = (
            f"group-gemm {pl.path} {p.wdt.name} g{p.g} x{p.xdt.name} {p.mode}: "
            f"{self.layout_name()}, tiles {self.tiles()}"
        )
        return kb.kernel(rows=self.nb, granule=1, note=note, repack=repack)

    def layout_name(self) -> str:
        p, pl = self.prob, self.plan
        planes = "+".join(str(w) for w, _ in pl.planes)
        return (
            f"gg-{pl.layout}-{pl.isa}[{p.wdt.name} {p.n}x{p.k} g{p.g} "
            f"planes {planes} {pl.stored} rows {pl.r}/{pl.vl} unit {pl.unit}]"
        )

    def tile_dispatch(self) -> None:
        """Rows of x in tiles of 4, then 2, then 1 (M may be dynamic).

        With a static M only the tiles it needs are generated (M = 1, the
        decode case, is one tile of 1).
        """
        kb, b = self.kb, self.b
        tiles = self.tiles()
        big = tiles[0]
        total = _prod(self.prob.lead)
        if isinstance(total, int):
            nbig, done = divmod(total, big)
            if nbig:
                with kb.loop(0, nbig, 1, "mt") as t:
                    self.tile(big, b.mul(t, ir.Constant(I64, big)))
            done = nbig * big
            for t in tiles[1:]:
                if total - done >= t:
                    self.tile(t, ir.Constant(I64, done))
                    done += t
            return
        m = self.m_total
        nbig = b.sdiv(m, ir.Constant(I64, big))
        with kb.loop(0, nbig, 1, "mt") as t:
            self.tile(big, b.mul(t, ir.Constant(I64, big)))
        done = b.mul(nbig, ir.Constant(I64, big))
        for t in tiles[1:]:
            fits = b.icmp_signed(">=", b.sub(m, done), ir.Constant(I64, t))
            with b.if_then(fits):
                self.tile(t, done)
            done = b.select(fits, b.add(done, ir.Constant(I64, t)), done)

    # ---- one tile: rows [m0, m0+mt) of x, one block of R outputs
    def tile(self, mt: int, m0: ir.Value) -> None:
        p, pl = self.prob, self.plan
        b = self.b
        vc = self.chunk(mt)
        if not p.xint:
            self.yacc = [
                [_var(self.kb, self.vf, "y") for _ in range(pl.v)] for _ in range(mt)
            ]
            for row in self.yacc:
                for slot in row:
                    b.store(_splat(self.vf, 0.0), slot)
        # x comes from the input, or (scaled codes) from the tile's buffer
        self.xsrc, self.xlocal, self.sbuf = self.kb.inp(p.x), False, None
        if pl.scaled:
            self.prescale(mt, m0)
        starts = list(range(0, pl.v, vc))
        if pl.layout == "kmajor":
            # chunk by chunk: only that chunk's y accumulators stay live
            for v0 in starts:
                self.groups(mt, m0, vc, [v0])
        else:  # all chunks per group: S_X once per group
            self.groups(mt, m0, vc, starts)
        if p.mode == "fused":
            if p.xint:
                self.reduce_terms(mt, m0)
            else:
                self.store_y(mt, m0, [[b.load(s) for s in row] for row in self.yacc])

    def prescale(self, mt: int, m0: ir.Value) -> None:
        """The tile's rows of x times 2^(-w t) (t = k's field in its step)
        into a stack buffer, and their group sums S when codes are biased.

        Scaling by a power of two is exact, so x' (u 2^(w t)) = x u; x below
        2^-100 would lose bits as a subnormal, far below anything a model
        feeds a quantized layer.
        """
        kb, b, p, pl = self.kb, self.b, self.prob, self.plan
        ((w, _),) = pl.planes
        step = pl.step
        scale = [1.0 if w * (t + 1) == 32 else 2.0 ** (-w * t) for t in range(step)]
        xs, sbuf = self.xs_buf, self.xsum_buf
        assert xs is not None
        vty = _vec(F32, step)
        pat = ir.Constant(vty, [ir.Constant(F32, c) for c in scale])
        red = declare(self.mod, f"llvm.vector.reduce.fadd.v{step}f32", F32, [F32, vty])
        x = kb.inp(p.x)
        for i in range(mt):
            src = b.mul(b.add(m0, ir.Constant(I64, i)), ir.Constant(I64, p.k))

            def one_group(gi: ir.Value, glen: int, i=i, src=src) -> None:
                k0 = b.mul(gi, ir.Constant(I64, p.g))
                total = ir.Constant(F32, 0.0)
                nvec = glen // step
                if nvec:
                    acc = _var(kb, vty, "xsacc")
                    b.store(_splat(vty, 0.0), acc)
                    with kb.loop(0, nvec, 1, "xs") as c:
                        kk = b.add(k0, b.mul(c, ir.Constant(I64, step)))
                        v = kb.load(x, b.add(src, kk), vty, align=4)
                        dst = b.add(ir.Constant(I64, i * p.k), kk)
                        kb.store(b.fmul(v, pat), xs, dst, align=4)
                        b.store(b.fadd(b.load(acc), v), acc)
                    total = b.call(red, [total, b.load(acc)])
                for t in range(nvec * step, glen):
                    kk = b.add(k0, ir.Constant(I64, t))
                    v = kb.load(x, b.add(src, kk), F32, align=4)
                    dst = b.add(ir.Constant(I64, i * p.k), kk)
                    kb.store(b.fmul(v, ir.Constant(F32, scale[t % step])), xs, dst)
                    total = b.fadd(total, v)
                if sbuf is not None:
                    kb.store(total, sbuf, b.add(ir.Constant(I64, i * p.gn), gi))

            full = p.gn - 1 if p.last != p.g else p.gn
            if full:
                with kb.loop(0, full, 1, "xg") as gi:
                    one_group(gi, p.g)
            if full < p.gn:
                one_group(ir.Constant(I64, p.gn - 1), p.last)
        self.xsrc, self.xlocal, self.sbuf = xs, True, sbuf

    def groups(self, mt: int, m0: ir.Value, vc: int, starts: list[int]) -> None:
        kb, p = self.kb, self.prob
        full = p.gn - 1 if p.last != p.g else p.gn
        if full:
            with kb.loop(0, full, 1, "g") as gi:
                self.group(mt, m0, vc, starts, gi, p.g)
        if full < p.gn:
            self.group(mt, m0, vc, starts, ir.Constant(I64, p.gn - 1), p.last)

    def group(
        self, mt: int, m0: ir.Value, vc: int, starts: list[int], gi: ir.Value, glen: int
    ) -> None:
        """One group of K for the tile: the chunks of vc row vectors at `starts`."""
        kb, b, p, pl = self.kb, self.b, self.prob, self.plan
        gbase = kb.gep(self.wblk, b.mul(gi, ir.Constant(I64, self.group_bytes)), I8)
        kbase = b.mul(gi, ir.Constant(I64, p.g))  # first k of the group
        rows = [
            ir.Constant(I64, i) if self.xlocal else b.add(m0, ir.Constant(I64, i))
            for i in range(mt)
        ]
        # element index of x[m0+i, g*G] in self.xsrc
        xrows = [b.add(b.mul(r, ir.Constant(I64, p.k)), kbase) for r in rows]
        wmin = int(p.wdt.min) if isinstance(p.wdt, IntType) else 0
        corr = None
        if pl.layout == "quads" and wmin != 0:  # P = sum u X + min S_X
            corr = [b.mul(self.sum_x(xr, glen), ir.Constant(I32, wmin)) for xr in xrows]
        elif self.sbuf is not None:  # scaled f32 codes: P = sum u x + min S
            corr = []
            for i in range(mt):
                idx = b.add(ir.Constant(I64, i * p.gn), gi)
                ssum = kb.load(self.sbuf, idx, F32, align=4)
                corr.append(b.fmul(ssum, ir.Constant(F32, float(wmin))))
        for v0 in starts:
            accs = self.acc_init(mt, vc)
            if pl.layout == "kmajor":
                steps, rem = divmod(glen, pl.step)
                if steps:
                    with kb.loop(0, steps, 1, "st") as i:
                        self.step_kmajor(accs, gbase, i, xrows, pl.step, v0, vc)
                if rem:
                    last = ir.Constant(I64, steps)
                    self.step_kmajor(accs, gbase, last, xrows, rem, v0, vc)
            else:
                nu, rem = divmod(glen, pl.unit)
                if nu:
                    with kb.loop(0, nu, 1, "u") as u:
                        ub = pl.unit_bytes
                        uptr = kb.gep(gbase, b.mul(u, ir.Constant(I64, ub)), I8)
                        self.prefetch(uptr)
                        koff = b.mul(u, ir.Constant(I64, pl.unit))
                        self.unit(accs, uptr, xrows, koff, pl.unit, v0, vc)
                if rem:
                    uptr = kb.gep(gbase, nu * pl.unit_bytes, I8)
                    koff = ir.Constant(I64, nu * pl.unit)
                    self.unit(accs, uptr, xrows, koff, rem, v0, vc)
            ps = self.group_p(accs, corr)
            self.finish_group(ps, mt, m0, v0, vc, gi)

    def step_kmajor(self, accs, gbase, i: ir.Value, xrows, count: int, v0, vc) -> None:
        """k = S i .. S i + count - 1 of the group (S = plan.step), kmajor codes.

        A unit is one dword per row holding 32 / w fields; it spans one or
        more steps, so its dword is shifted (one variable shift) to put the
        step's first field at bit 0, and the step's k values are unrolled.
        """
        kb, b, pl = self.kb, self.b, self.plan
        ((w, _),) = pl.planes
        q = pl.unit // pl.step  # steps per unit
        u = b.udiv(i, ir.Constant(I64, q))
        ubase = kb.gep(gbase, b.mul(u, ir.Constant(I64, pl.unit_bytes)), I8)
        step_bytes = pl.unit_bytes // q
        self.prefetch(
            kb.gep(gbase, b.mul(i, ir.Constant(I64, step_bytes)), I8), step_bytes
        )
        shv = None
        if q > 1:
            sh = b.mul(b.urem(i, ir.Constant(I64, q)), ir.Constant(I64, w * pl.step))
            shv = broadcast(b, b.trunc(sh, I32), pl.vl)
        words = {}
        for v in range(v0, v0 + vc):
            word = kb.load(ubase, v * pl.vl, self.vi, align=4)
            words[v] = b.lshr(word, shv) if shv is not None else word
        koff = b.mul(i, ir.Constant(I64, pl.step))
        self.unit_kmajor(accs, words, xrows, koff, count, v0, vc)

    def prefetch(self, uptr: ir.Value, nbytes: int | None = None) -> None:
        fn = declare(self.mod, "llvm.prefetch.p0", ir.VoidType(), [PTR, I32, I32, I32])
        nbytes = self.plan.unit_bytes if nbytes is None else nbytes
        for off in range(0, max(nbytes, 1), 64):
            ptr = self.kb.gep(uptr, _PREFETCH + off, I8)
            self.b.call(
                fn, [ptr, ir.Constant(I32, 0), ir.Constant(I32, 3), ir.Constant(I32, 1)]
            )

    # ---- accumulators
    def acc_type(self) -> ir.Type:
        return self.vf if self.plan.path == "f32" else self.vi

    def acc_init(self, mt: int, vc: int) -> list[list[list[ir.Value]]]:
        per = 2 if self.plan.path == "pmaddwd" else 1
        ty = self.acc_type()
        accs = [
            [[_var(self.kb, ty, "acc") for _ in range(per)] for _ in range(vc)]
            for _ in range(mt)
        ]
        zero = _splat(ty, 0.0 if ty is self.vf else 0)
        for row in accs:
            for slots in row:
                for s in slots:
                    self.b.store(zero, s)
        return accs

    # ---- one unit of codes: `count` k values from k offset koff within the group
    def unit(self, accs, uptr, xrows, koff, count: int, v0: int, vc: int) -> None:
        pl = self.plan
        words = {}  # (plane, d, v) -> loaded packed vector

        def word(p: int, d: int, v: int) -> ir.Value:
            key = (p, d, v)
            if key not in words:
                idx = (pl.plane_base(p) + d) * pl.v + v
                ty = self.vi if pl.layout == "kmajor" else _vec(I8, pl.vl * 4)
                ptr = self.kb.gep(uptr, idx * pl.vl * 4, I8)
                words[key] = self.b.load(ptr, typ=ty, align=4)
            return words[key]

        if pl.layout == "kmajor":
            self.unit_kmajor(accs, word, xrows, koff, count, v0, vc)
        elif pl.path == "pmaddwd":
            self.unit_pmaddwd(accs, uptr, xrows, koff, count, v0, vc)
        else:
            self.unit_quads(accs, word, xrows, koff, count, v0, vc)

    def x_elem(self, xrow: ir.Value, koff: ir.Value, t: int) -> ir.Value:
        """x[m, group start + koff + t] (f32 or i8 scalar)."""
        ty = F32 if not self.prob.xint else I8
        idx = self.b.add(self.b.add(xrow, koff), ir.Constant(I64, t))
        return self.kb.load(self.xsrc, idx, ty, align=1)

    def unit_kmajor(self, accs, words, xrows, koff, count, v0, vc) -> None:
        b, pl = self.b, self.plan
        for t in range(count):
            xs = []
            for xr in xrows:
                xv = self.x_elem(xr, koff, t)
                if self.prob.xint:
                    xv = b.sext(xv, I32)
                xs.append(broadcast(b, xv, pl.vl))
            for j in range(vc):
                code = self.extract_kmajor(words, t, v0 + j)
                if pl.path == "f32":
                    wv = self.decode(code)
                    for i, xv in enumerate(xs):
                        slot = accs[i][j][0]
                        b.store(self.fma(xv, wv, b.load(slot)), slot)
                else:
                    for i, xv in enumerate(xs):
                        slot = accs[i][j][0]
                        b.store(b.add(b.load(slot), b.mul(xv, code)), slot)

    def fma(self, a: ir.Value, x: ir.Value, c: ir.Value) -> ir.Value:
        fn = declare(self.mod, f"llvm.fmuladd.{_suffix(a.type)}", a.type, [a.type] * 3)
        return self.b.call(fn, [a, x, c])

    def extract_kmajor(self, words: dict[int, ir.Value], t: int, v: int) -> ir.Value:
        """Field t of row vector v's (shifted) dword: <VL x i32> code values.

        Signed fields hold two's complement (shl + ashr sign-extends);
        others are unsigned (lshr + and).
        """
        b, pl = self.b, self.plan
        ((w, _),) = pl.planes
        src = words[v]

        def c(x: int) -> ir.Constant:
            return _splat(self.vi, x)

        if pl.scaled:  # in place: u 2^(w t) (the top field shifted down)
            if w * (t + 1) == 32:
                return b.lshr(src, c(w * t))
            return b.and_(src, c(((1 << w) - 1) << (w * t)))
        if pl.stored == "raw":
            sh = 32 - w * (t + 1)
            x = b.shl(src, c(sh)) if sh else src
            return b.ashr(x, c(32 - w))
        x = b.lshr(src, c(w * t)) if t else src
        return b.and_(x, c((1 << w) - 1)) if w * (t + 1) < 32 else x

    def decode(self, code: ir.Value) -> ir.Value:
        """Codes -> f32 weight values (ints convert; float formats look up)."""
        b, pl = self.b, self.plan
        wdt = self.prob.wdt
        if not isinstance(wdt, FloatType):
            return b.sitofp(code, self.vf)
        table = np.asarray(
            wdt.decode(np.arange(2**wdt.bits, dtype=np.uint64)), np.float32
        )
        if wdt.bits <= 4 and self.native512 and pl.vl == 16:
            t16 = np.zeros(16, np.float32)
            t16[: table.size] = table
            fn = declare(
                self.mod, "llvm.x86.avx512.permvar.sf.512", self.vf, [self.vf, self.vi]
            )
            return b.call(fn, [ir.Constant(self.vf, [float(x) for x in t16]), code])
        if wdt.bits <= 4 and self.isa != "generic" and pl.vl == 8:
            t16 = np.zeros(16, np.float32)
            t16[: table.size] = table
            fn = declare(self.mod, "llvm.x86.avx2.permps", self.vf, [self.vf, self.vi])
            lo = b.call(fn, [ir.Constant(self.vf, [float(x) for x in t16[:8]]), code])
            if wdt.bits <= 3:
                return lo
            hi = b.call(fn, [ir.Constant(self.vf, [float(x) for x in t16[8:]]), code])
            top = b.icmp_signed(
                "<", b.shl(code, _splat(self.vi, 28)), _splat(self.vi, 0)
            )
            return b.select(top, hi, lo)
        # a gather from the 2^b-entry table (vgatherdps; scalar loads on SSE2)
        glob = self._table(table)
        vl = pl.vl
        v64 = _vec(I64, vl)
        base = broadcast(b, b.ptrtoint(glob, I64), vl)
        addr = b.add(base, b.shl(b.zext(code, v64), _splat(v64, 2)))
        ptrs = b.inttoptr(addr, _vec(PTR, vl))
        vp = _vec(PTR, vl)
        name = f"llvm.masked.gather.v{vl}f32.v{vl}p0"
        fn = declare(
            self.mod, name, self.vf, [vp, I32, _vec(ir.IntType(1), vl), self.vf]
        )
        mask = ir.Constant(_vec(ir.IntType(1), vl), [1] * vl)
        undef = ir.Constant(self.vf, ir.Undefined)
        return b.call(fn, [ptrs, ir.Constant(I32, 4), mask, undef])

    def _table(self, table: np.ndarray) -> ir.GlobalVariable:
        name = "gg_table"
        if name in self.mod.globals:
            return self.mod.globals[name]
        ty = ir.ArrayType(F32, table.size)
        glob = ir.GlobalVariable(self.mod, ty, name)
        glob.initializer = ir.Constant(ty, [float(x) for x in table])
        glob.global_constant = True
        glob.linkage = "internal"
        glob.align = 64
        return glob

    # ---- int8 activations on quads
    def x_quad(self, xr: ir.Value, koff: ir.Value, j: int, count: int) -> ir.Value:
        """x bytes k = koff + 4j .. +3 as one i32 (missing bytes are 0)."""
        b, kb = self.b, self.kb
        valid = min(4, count - 4 * j)
        idx = b.add(b.add(xr, koff), ir.Constant(I64, 4 * j))
        if valid == 4:
            return b.load(kb.gep(kb.inp(self.prob.x), idx, I8), typ=I32, align=1)
        word = ir.Constant(I32, 0)
        for i in range(valid):
            byte = self.x_elem(xr, koff, 4 * j + i)
            part = b.shl(b.zext(byte, I32), ir.Constant(I32, 8 * i))
            word = b.or_(word, part)
        return word

    def extract_quads(self, word, j: int, v: int) -> ir.Value:
        """Byte vector j of the unit, row vector v: <4 VL x i8> unsigned codes."""
        b, pl = self.b, self.plan
        ty = _vec(I8, pl.vl * 4)
        val = None
        for p, (w, off) in enumerate(pl.planes):
            per = 8 // w
            src = word(p, j // per, v)
            if w == 8:
                return src
            sh = w * (j % per) - off
            x = (
                src
                if sh == 0
                else (
                    b.lshr(src, _splat(ty, sh))
                    if sh > 0
                    else b.shl(src, _splat(ty, -sh))
                )
            )
            part = b.and_(x, _splat(ty, ((1 << w) - 1) << off))
            val = part if val is None else b.or_(val, part)
        assert val is not None
        return val

    def unit_quads(self, accs, word, xrows, koff, count, v0, vc) -> None:
        b, pl = self.b, self.plan
        nq = _ceil(count, 4)
        bv = _vec(I8, pl.vl * 4)
        if pl.path == "vnni":
            if self.native512:
                fn = declare(
                    self.mod, "llvm.x86.avx512.vpdpbusd.512", self.vi, [self.vi, bv, bv]
                )

                def dot(acc: ir.Value, u: ir.Value, xq: ir.Value) -> ir.Value:
                    return b.call(fn, [acc, u, xq])
            else:
                dot = self.dpbusd_portable
            for j in range(nq):
                xs = [
                    b.bitcast(broadcast(b, self.x_quad(xr, koff, j, count), pl.vl), bv)
                    for xr in xrows
                ]
                for jj in range(vc):
                    codes = self.extract_quads(word, j, v0 + jj)
                    for i, xq in enumerate(xs):
                        slot = accs[i][jj][0]
                        b.store(dot(b.load(slot), codes, xq), slot)
            return
        v16 = _vec(I16, pl.vl * 2)
        ubs = declare(self.mod, "llvm.x86.avx2.pmadd.ub.sw", v16, [bv, bv])
        wd = declare(self.mod, "llvm.x86.avx2.pmadd.wd", self.vi, [v16, v16])
        run = self.quad_run(len(xrows))
        ones = _splat(v16, 1)
        for j0 in range(0, nq, run):
            js = range(j0, min(nq, j0 + run))
            xs = {
                j: [
                    b.bitcast(broadcast(b, self.x_quad(xr, koff, j, count), pl.vl), bv)
                    for xr in xrows
                ]
                for j in js
            }
            for jj in range(vc):
                codes = {j: self.extract_quads(word, j, v0 + jj) for j in js}
                for i in range(len(xrows)):
                    s16 = None
                    for j in js:
                        prod = b.call(ubs, [codes[j], xs[j][i]])
                        s16 = prod if s16 is None else b.add(s16, prod)
                    slot = accs[i][jj][0]
                    b.store(b.add(b.load(slot), b.call(wd, [s16, ones])), slot)

    def dpbusd_portable(self, acc: ir.Value, u: ir.Value, xq: ir.Value) -> ir.Value:
        """vpdpbusd in portable IR (the AVX-512 plan run on a host without it)."""
        b = self.b
        n = u.type.count
        wide = _vec(I32, n)
        prod = b.mul(b.zext(u, wide), b.sext(xq, wide))
        undef = ir.Constant(wide, ir.Undefined)
        for c in range(4):
            mask = ir.Constant(_vec(I32, n // 4), [4 * i + c for i in range(n // 4)])
            acc = b.add(acc, b.shuffle_vector(prod, undef, mask))
        return acc

    def unit_pmaddwd(self, accs, uptr, xrows, koff, count, v0, vc) -> None:
        """AVX2, 8-bit weights: i16 products of raw bytes, two i32 halves."""
        b = self.b
        v16 = _vec(I16, 16)
        wd = declare(self.mod, "llvm.x86.avx2.pmadd.wd", self.vi, [v16, v16])
        ext = b.sext if self.prob.wdt.signed else b.zext
        xs = []
        for xr in xrows:
            q = b.bitcast(self.x_quad(xr, koff, 0, count), _vec(I8, 4))
            q16 = b.sext(q, _vec(I16, 4))
            xs.append(
                b.shuffle_vector(
                    q16,
                    ir.Constant(_vec(I16, 4), ir.Undefined),
                    ir.Constant(_vec(I32, 16), [0, 1, 2, 3] * 4),
                )
            )
        for jj in range(vc):
            v = v0 + jj
            halves = []
            for h in range(2):
                ptr = self.kb.gep(uptr, v * 32 + 16 * h, I8)
                halves.append(ext(b.load(ptr, typ=_vec(I8, 16), align=4), v16))
            for i, xq in enumerate(xs):
                for h in range(2):
                    slot = accs[i][jj][h]
                    b.store(b.add(b.load(slot), b.call(wd, [halves[h], xq])), slot)

    # ---- per-group results
    def group_p(self, accs, corr) -> list[list[ir.Value]]:
        """P vectors [mt][vc]: f32 for float x, exact i32 for int8 x.

        `corr` (quads with signed codes): min * S_X per row of x.
        """
        b, pl = self.b, self.plan
        if pl.path == "pmaddwd":
            hadd = declare(
                self.mod, "llvm.x86.avx2.phadd.d", self.vi, [self.vi, self.vi]
            )
            return [
                [b.call(hadd, [b.load(s[0]), b.load(s[1])]) for s in row]
                for row in accs
            ]
        ps = [[b.load(s[0]) for s in row] for row in accs]
        if corr is not None:
            for i, c in enumerate(corr):
                cv = broadcast(b, c, pl.vl)
                add = b.fadd if c.type == F32 else b.add
                ps[i] = [add(pv, cv) for pv in ps[i]]
        return ps

    def sum_x(self, xr: ir.Value, glen: int) -> ir.Value:
        """Sum of the int8 x of one group (i32): 32 bytes per step through
        `vpmaddubsw` with ones (AVX2) or a dot with ones (AVX-512 plans)."""
        b, kb, pl = self.b, self.kb, self.plan
        xp = kb.gep(kb.inp(self.prob.x), xr, I8)
        total = ir.Constant(I32, 0)
        n32 = glen // 32
        if n32:
            v8, b32 = _vec(I32, 8), _vec(I8, 32)
            acc = _var(kb, v8, "sx")
            b.store(_splat(v8, 0), acc)
            ones8 = _splat(b32, 1)
            with kb.loop(0, n32, 1, "sx") as i:
                ptr = kb.gep(xp, b.mul(i, ir.Constant(I64, 32)), I8)
                xv = b.load(ptr, typ=b32, align=1)
                if pl.path == "maddubs":
                    v16 = _vec(I16, 16)
                    ubs = declare(
                        self.mod, "llvm.x86.avx2.pmadd.ub.sw", v16, [b32, b32]
                    )
                    wd = declare(self.mod, "llvm.x86.avx2.pmadd.wd", v8, [v16, v16])
                    part = b.call(wd, [b.call(ubs, [ones8, xv]), _splat(v16, 1)])
                else:
                    part = self.dpbusd_portable(_splat(v8, 0), ones8, xv)
                b.store(b.add(b.load(acc), part), acc)
            red = declare(self.mod, "llvm.vector.reduce.add.v8i32", I32, [v8])
            total = b.call(red, [b.load(acc)])
        for t in range(n32 * 32, glen):
            byte = b.load(kb.gep(xp, t, I8), typ=I8)
            total = b.add(total, b.sext(byte, I32))
        return total

    def finish_group(self, ps, mt, m0, v0, vc, gi) -> None:
        b, p, pl = self.b, self.prob, self.plan
        if p.mode == "partial":
            self.store_p(ps, mt, m0, v0, gi)
            return
        rows_idx = [b.add(m0, ir.Constant(I64, i)) for i in range(mt)]
        if p.xint:
            self.store_terms(ps, rows_idx, v0, gi, mt)
            return
        for jj in range(vc):
            s = self.row_vec(p.scale, gi, v0 + jj, self.sstore)
            z = self.row_vec(p.zero, gi, v0 + jj, "f32") if p.zero is not None else None
            for i in range(mt):
                t = ps[i][jj]
                if z is not None:
                    ssum = self.per_mg(p.sums, rows_idx[i], gi, F32)
                    t = self.fma(b.fneg(z), broadcast(b, ssum, pl.vl), t)
                if p.act is not None:
                    t = b.fmul(
                        t, broadcast(b, self.per_mg(p.act, rows_idx[i], gi, F32), pl.vl)
                    )
                slot = self.yacc[i][v0 + jj]
                b.store(self.fma(t, s, b.load(slot)), slot)

    def row_vec(self, arg: int, gi: ir.Value, v: int, storage: str) -> ir.Value:
        """A repacked per-(row, group) vector (scale or zero) as <VL x float>."""
        b, kb, pl = self.b, self.kb, self.plan
        size = {"f16": 2, "bf16": 2, "f32": 4}[storage]
        idx = b.add(
            b.mul(
                b.add(b.mul(self.blk, ir.Constant(I64, self.prob.gn)), gi),
                ir.Constant(I64, pl.r),
            ),
            ir.Constant(I64, v * pl.vl),
        )
        ptr = kb.gep(kb.inp(arg), b.mul(idx, ir.Constant(I64, size)), I8)
        if storage == "f16":
            return b.fpext(
                b.load(ptr, typ=_vec(ir.HalfType(), pl.vl), align=2), self.vf
            )
        if storage == "bf16":
            raw = b.zext(b.load(ptr, typ=_vec(I16, pl.vl), align=2), self.vi)
            return b.bitcast(b.shl(raw, _splat(self.vi, 16)), self.vf)
        return b.load(ptr, typ=self.vf, align=4)

    def per_mg(self, arg: int, m: ir.Value, gi: ir.Value, ty: ir.Type) -> ir.Value:
        """sums[m, g] or act_scale[m, g] (a scalar)."""
        b = self.b
        idx = b.add(b.mul(m, ir.Constant(I64, self.prob.gn)), gi)
        return self.kb.load(self.kb.inp(arg), idx, ty, align=4)

    def store_terms(self, ps, rows_idx, v0, gi, mt) -> None:
        """int8 path: ((P - z S) s) a in f64 into the tile's terms buffer."""
        b, p, pl = self.b, self.prob, self.plan
        assert self.terms is not None
        for jj, v in enumerate(range(v0, v0 + len(ps[0]))):
            s = b.fpext(self.row_vec(p.scale, gi, v, self.sstore), self.vd)
            z = None
            if p.zero is not None:
                z = b.fpext(self.row_vec(p.zero, gi, v, "f32"), self.vd)
            for i in range(mt):
                t = b.sitofp(ps[i][jj], self.vd)
                if z is not None:
                    ssum = b.sitofp(self.per_mg(p.sums, rows_idx[i], gi, I32), F64)
                    t = b.fsub(t, b.fmul(z, broadcast(b, ssum, pl.vl)))
                t = b.fmul(t, s)
                if p.act is not None:
                    a = b.fpext(self.per_mg(p.act, rows_idx[i], gi, F32), F64)
                    t = b.fmul(t, broadcast(b, a, pl.vl))
                idx = b.add(
                    b.mul(
                        b.add(ir.Constant(I64, i * p.gn), gi), ir.Constant(I64, pl.r)
                    ),
                    ir.Constant(I64, v * pl.vl),
                )
                self.kb.store(t, self.terms, idx, align=8)

    def reduce_terms(self, mt: int, m0: ir.Value) -> None:
        """y = NumPy's pairwise sum over groups of the f64 terms, per lane."""
        b, p, pl = self.b, self.prob, self.plan
        cw = 8 if self.isa == "avx512" else 4
        ty = _vec(F64, cw)
        rows = []
        for i in range(mt):
            vals = []
            for c in range(pl.r // cw):

                def load(g, i=i, c=c):
                    g = ir.Constant(I64, g) if isinstance(g, int) else g
                    idx = b.add(
                        b.mul(
                            b.add(ir.Constant(I64, i * p.gn), g), ir.Constant(I64, pl.r)
                        ),
                        ir.Constant(I64, c * cw),
                    )
                    return self.kb.load(self.terms, idx, ty, align=8)

                vals.append(
                    b.fptrunc(emit_pairwise(self.kb, p.gn, load, ty), _vec(F32, cw))
                )
            rows.append(vals)
        self.store_y(mt, m0, rows)

    def store_y(self, mt: int, m0: ir.Value, rows: list[list[ir.Value]]) -> None:
        """y[m0+i, blk*R + ...] = the tile's vectors (valid rows of N only)."""
        b, kb, p, pl = self.b, self.kb, self.prob, self.plan
        yout = kb.out(0)

        def put(full: bool) -> None:
            for i in range(mt):
                base = b.add(
                    b.mul(b.add(m0, ir.Constant(I64, i)), ir.Constant(I64, p.n)),
                    b.mul(self.blk, ir.Constant(I64, pl.r)),
                )
                lane0 = 0
                for vec in rows[i]:
                    width = vec.type.count
                    if p.tail is not None:
                        valid = pl.r if full else p.n - (self.nb - 1) * pl.r
                        mrow = b.add(m0, ir.Constant(I64, i))
                        nidx = b.add(
                            b.mul(self.blk, ir.Constant(I64, pl.r)),
                            ir.Constant(I64, lane0),
                        )
                        vec = self.apply_tail(
                            vec, mrow, nidx, min(width, max(0, valid - lane0))
                        )
                    if full:
                        kb.store(
                            vec, yout, b.add(base, ir.Constant(I64, lane0)), align=4
                        )
                    else:
                        valid = p.n - (self.nb - 1) * pl.r
                        for lane in range(width):
                            if lane0 + lane < valid:
                                val = b.extract_element(vec, ir.Constant(I32, lane))
                                kb.store(
                                    val,
                                    yout,
                                    b.add(base, ir.Constant(I64, lane0 + lane)),
                                    align=4,
                                )
                    lane0 += width

        self._full_or_tail(put)

    def apply_tail(
        self, y: ir.Value, m: ir.Value, n0: ir.Value, valid: int
    ) -> ir.Value:
        """The fused region's elementwise ops on y[m, n0 : n0 + width].

        `valid` lanes are real outputs; the others (past N) read no input.
        """
        from lpcc.codegen.llvm.kernels.elementwise import emit_elementwise

        b, kb, p = self.b, self.kb, self.prob
        tail = p.tail
        assert tail is not None
        width = y.type.count
        vals: dict[SSAValue, ir.Value] = {tail.start: y}

        def operand(v: SSAValue) -> ir.Value:
            if v in vals:
                return vals[v]
            if v in tail.consts:
                return emit_elementwise(kb, tail.consts[v], [])
            slot, kind = tail.args[v]
            if kind == "scalar":
                return kb.load(kb.inp(slot), 0, F32, align=4)
            idx = n0 if kind == "row" else b.add(b.mul(m, ir.Constant(I64, p.n)), n0)
            if valid == width:
                return kb.load(kb.inp(slot), idx, _vec(F32, width), align=4)
            vec = _splat(_vec(F32, width), 0.0)
            for lane in range(valid):
                x = kb.load(
                    kb.inp(slot), b.add(idx, ir.Constant(I64, lane)), F32, align=4
                )
                vec = b.insert_element(vec, x, ir.Constant(I32, lane))
            return vec

        def lanes(x: ir.Value) -> ir.Value:
            return x if isinstance(x.type, ir.VectorType) else broadcast(b, x, width)

        for op in tail.ops:
            args = [lanes(operand(v)) for v in op.operands]
            vals[op.results[0]] = emit_elementwise(kb, op, args)
        return vals[tail.final]

    def _full_or_tail(self, put: Callable[[bool], None]) -> None:
        b, p, pl = self.b, self.prob, self.plan
        if p.n % pl.r == 0:
            put(True)
            return
        last = b.icmp_signed("==", self.blk, ir.Constant(I64, self.nb - 1))
        with b.if_else(last) as (tail, full):
            with tail:
                put(False)
            with full:
                put(True)

    def store_p(self, ps, mt, m0, v0, gi) -> None:
        """partial mode: P[m0+i, n, g] for the rows of this chunk that exist.

        The vectors go through a small stack buffer and a loop scatters the
        valid rows (stride Gn), which keeps the code short.
        """
        b, kb, p, pl = self.b, self.kb, self.prob, self.plan
        ety = self.vi.element if p.xint else F32
        vc = len(ps[0])
        buf = _var(kb, ety, "pbuf", mt * vc * pl.vl)
        for i in range(mt):
            for jj, vec in enumerate(ps[i]):
                kb.store(vec, buf, (i * vc + jj) * pl.vl, align=4)
        row0 = b.add(
            b.mul(self.blk, ir.Constant(I64, pl.r)), ir.Constant(I64, v0 * pl.vl)
        )
        left = b.sub(ir.Constant(I64, p.n), row0)
        want = ir.Constant(I64, vc * pl.vl)
        count = b.select(b.icmp_signed("<", left, want), left, want)
        for i in range(mt):
            m = b.add(m0, ir.Constant(I64, i))
            with kb.loop(0, count, 1, "pr") as r:
                val = kb.load(
                    buf, b.add(r, ir.Constant(I64, i * vc * pl.vl)), ety, align=4
                )
                n = b.add(row0, r)
                idx = b.add(
                    b.mul(
                        b.add(b.mul(m, ir.Constant(I64, p.n)), n),
                        ir.Constant(I64, p.gn),
                    ),
                    gi,
                )
                kb.store(val, kb.out(0), idx, align=4)


# -- standalone group_dequant_reduce and group_sum ------------------------------------


def _load_f64(kb: KernelBuilder, arg: int, dt: DType, idx: ir.Value) -> ir.Value:
    """Element `idx` of a value-domain buffer, converted exactly to f64."""
    b = kb.b
    vd = dt.value_dtype
    if vd.kind == "f":
        x = kb.load(
            kb.inp(arg), idx, F32 if vd.itemsize == 4 else F64, align=vd.itemsize
        )
        return b.fpext(x, F64) if vd.itemsize == 4 else x
    x = kb.load(kb.inp(arg), idx, ir.IntType(8 * vd.itemsize), align=vd.itemsize)
    return (b.uitofp if vd.kind in "ub" else b.sitofp)(x, F64)


def _gen_dequant_reduce(req: KernelRequest) -> NativeKernel | None:
    op = req.op
    assert isinstance(op, lowp.GroupDequantReduceOp)
    if elem(op.result).name != "f32":
        return None
    ps = shape(op.partial)
    if len(ps) < 3 or not static(*ps[-2:]):
        return None
    n, gn = ps[-2], ps[-1]
    if (
        elem(op.partial).name not in ("f32", "int32")
        or elem(op.scale).value_dtype != _F32
    ):
        return None
    if op.zero is not None and not _f32_exact(elem(op.zero)):
        return None
    kb = KernelBuilder(req)
    b = kb.b

    def val(v: SSAValue, idx: ir.Value) -> ir.Value:
        return _load_f64(kb, req.arg_index(v), elem(v), idx)

    with kb.loop(kb.begin, kb.end, 1, "m") as m, kb.loop(0, n, 1, "n") as nn:
        row = b.add(b.mul(m, ir.Constant(I64, n)), nn)

        def term(g: ir.Value | int, row=row, nn=nn, m=m) -> ir.Value:
            g = _i64(g)
            t = val(op.partial, b.add(b.mul(row, ir.Constant(I64, gn)), g))
            widx = b.add(b.mul(nn, ir.Constant(I64, gn)), g)
            midx = b.add(b.mul(m, ir.Constant(I64, gn)), g)
            if op.zero is not None:
                assert op.sums is not None
                t = b.fsub(t, b.fmul(val(op.zero, widx), val(op.sums, midx)))
            t = b.fmul(t, val(op.scale, widx))
            if op.act_scale is not None:
                t = b.fmul(t, val(op.act_scale, midx))
            return t

        y = emit_pairwise(kb, gn, term, F64)
        kb.store(b.fptrunc(y, F32), kb.out(0), row, align=4)
    note = f"group_dequant_reduce {n}x{gn}: f64, NumPy's pairwise order"
    return kb.kernel(rows=_prod(ps[:-2]), granule=1, note=note)


def _gen_group_sum(req: KernelRequest) -> NativeKernel | None:
    op = req.op
    assert isinstance(op, lowp.GroupSumOp)
    xs = shape(op.input)
    if not isinstance(xs[-1], int):
        return None
    k, g = xs[-1], op.group.data
    gn = _ceil(k, g)
    xdt = elem(op.input)
    vd = xdt.value_dtype
    if vd == _F32:
        ity = F32
    elif vd.kind in "iu" and vd.itemsize <= 2 and g <= 32768:
        ity = ir.IntType(8 * vd.itemsize)
    else:
        return None
    kb = KernelBuilder(req)
    b = kb.b
    x = kb.inp(0)
    with kb.loop(kb.begin, kb.end, 1, "m") as m, kb.loop(0, gn, 1, "g") as gi:
        start = b.add(b.mul(m, ir.Constant(I64, k)), b.mul(gi, ir.Constant(I64, g)))
        oidx = b.add(b.mul(m, ir.Constant(I64, gn)), gi)

        def body(length: int, start=start, oidx=oidx) -> None:
            if ity == F32:

                def load(i):
                    return kb.load(x, b.add(start, _i64(i)), F32, align=4)

                def load8(i):
                    return kb.load(x, b.add(start, _i64(i)), _vec(F32, 8), align=4)

                total = emit_pairwise(kb, g, load, F32, load8, valid=length)
                kb.store(total, kb.out(0), oidx, align=4)
                return
            acc = _var(kb, I32, "gs")
            b.store(ir.Constant(I32, 0), acc)
            ext = b.sext if vd.kind == "i" else b.zext
            with kb.loop(0, length, 1, "k") as kk:
                xv = ext(kb.load(x, b.add(start, kk), ity, align=vd.itemsize), I32)
                b.store(b.add(b.load(acc), xv), acc)
            kb.store(b.load(acc), kb.out(0), oidx, align=4)

        last = k - (gn - 1) * g
        if last == g:
            body(g)
        else:
            is_last = b.icmp_signed("==", gi, ir.Constant(I64, gn - 1))
            with b.if_else(is_last) as (tail, full):
                with tail:
                    body(last)
                with full:
                    body(g)
    return kb.kernel(rows=_prod(xs[:-1]), granule=1, note=f"group_sum g{g} pairwise")


def _i64(i: ir.Value | int) -> ir.Value:
    return ir.Constant(I64, i) if isinstance(i, int) else i


# -- registration ----------------------------------------------------------------


@register(FusedOp, kind="epilogue")
def gen_fused(req: KernelRequest) -> NativeKernel | None:
    """group_matmul + group_dequant_reduce in one pass over the weights."""
    prob = _fused_problem(req)
    if prob is None:
        return None
    gen = _Gen(req, prob)
    return gen.emit() if gen.fits() else None


@register(lowp.GroupMatmulOp)
def gen_group_matmul(req: KernelRequest) -> NativeKernel | None:
    """P per group (f32, or exact int32 for int8 x), weights repacked."""
    op = req.op
    assert isinstance(op, lowp.GroupMatmulOp)
    base = _gm_problem(req, op, lambda v: req.arg_index(v))
    if base is None:
        return None
    return _Gen(req, _Problem(mode="partial", **base)).emit()


@register(lowp.GroupDequantReduceOp)
def gen_dequant_reduce(req: KernelRequest) -> NativeKernel | None:
    """y = sum_g ((P - z S) s) a, exactly as the interpreter (f64, pairwise)."""
    return _gen_dequant_reduce(req)


@register(lowp.GroupSumOp)
def gen_group_sum(req: KernelRequest) -> NativeKernel | None:
    """S per group: f32 in NumPy's pairwise order, or an exact int32 sum."""
    return _gen_group_sum(req)
