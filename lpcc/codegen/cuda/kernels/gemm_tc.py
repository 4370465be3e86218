"""Tensor-core GEMM for quantized group GEMMs (mma.sync), static M >= 16.

Takes `lp.fused epilogue` regions `lp.group_matmul` -> `lp.group_dequant_reduce`
(-> optional elementwise tail, through `scalar.emit_body`) whose M (the
product of x's leading dims, all static) is >= 16 and whose weight is a
program constant of int/uint 1..8-bit codes. Everything else is declined
(None) and goes to `matmul.py`'s SIMT/GEMV kernels: dynamic or small M, float
weight codes, short last groups, non-f32 results of the reduce, a tail that
reads the repacked weight.

Two paths, chosen by x's type:

* W{1..8}A16 (x float, f32 values): the A tile is rounded to f16 when it is
  staged in shared memory, as every GPU W4A16 kernel does, so P is the group
  GEMM of f16(x) (|x| above 65504 becomes inf): the error against the
  interpreter's f32 P is at most 2^-11 sum |x q| per group plus the f32
  accumulation's. Weights are decoded to exact f16 integers with the
  magic-number LOP3 path of `gemv.py` (`pair_plan`: one lop3 + one hfma2 per
  two weights, int4: plus one shift per eight) straight into B fragment
  registers; `mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32` with f32
  accumulators per K-group; at the end of a group, in f32,
  y += s (acc - z S) (a when act_scale is given), exactly the reduce's terms.
* W{1..8}A8 (x int8 codes from lp.quantize): `mma.sync.aligned.m16n8k32.row.
  col.s32.s8.{s8,u8}.s32` (u8 B for unsigned weights) gives P exactly in
  int32 per group; the epilogue is the interpreter's, in f64 and without
  FMA contraction: y += ((P - z S) s) a per group, summed in group order
  (the interpreter sums with NumPy's pairwise order: the f64 sums may differ
  in the last bits, the f32 result by one rounding at most).

Tiling: a block is 4 warps side by side along N (so each weight is decoded
by exactly one warp), a warp tile is (16 MT) x 16 (MT = min(4, ceil(M/16))
m16 tiles, 2 n8 tiles), the block tile (16 MT) x 64. K is walked in chunks
of 128 (the last one shorter): the block stages the chunk of A (f16 or int8)
in shared memory (row stride padded by 16 bytes: ldmatrix rows hit distinct
banks), each lane loads its weight words of the chunk with 128/64/32-bit
loads, then per k-step (16 or 32) `ldmatrix.x4` gives A fragments and the
decode gives B fragments. No cp.async pipeline yet (the loads of a chunk are
issued before the barrier, so they overlap the A staging). The staging of a
full chunk is straight-line code: each thread copies the same column vector
of the same rows every chunk, from addresses set up once before the K loop
(`_stage_setup`: constant offsets from one pointer when M is a multiple of
the block tile, else 32-bit offsets per slot with rows past M clamped to row
M - 1, whose products only reach output rows that are never stored), f32 ->
f16 by `__floats2half2_rn` (one F2FP per two values) and 8-byte stores;
about 1 SASS instruction per weight (A16, M = 64) instead of 6.6.

Weight layout (`repack`; N padded to 64, K to 128 with code 0): for each n8
tile, chunk and lane, the lane's 32 codes of the chunk in B fragment order
(`mma.B_F16` / `mma.B_S8`, k-step by k-step), stored as

* A16: gemv's chunk layout (`gemv.repack` of those 32 codes: `bits` words,
  even codes in the low halves, odd codes in the high halves, signed codes
  offset-binary), so pair p decodes to B register p;
* A8: `fw` words (fw = 1, 2, 4, 8: the power of two >= bits) where register
  R (4 codes) is field h = R % (8 / fw) of word R // (8 / fw), byte j at bit
  8 j + fw h: one shift and one AND per register; signed codes below 8 bits
  are offset-binary and become two's complement bytes with
  ((t | 0x80..) - bias..) ^ 0x80.. (no borrow crosses a byte).

Lane l's words of (n8 tile T, chunk c) are at ((T * chunks + c) * 32 + l) *
words: a warp reads one contiguous 128 * words bytes.

Emulation: the helpers in `mma.py` (PTX on the GPU, C under LPCC_EMU).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from xdsl.ir import BlockArgument, Operation, SSAValue

import lpcc
from lpcc.codegen.cuda.kernel import (
    CudaKernel,
    CudaRequest,
    Launch,
    Repack,
    ctype,
    elem,
    register,
    shape,
    signature,
)
from lpcc.codegen.cuda.kernels import gemv, mma, scalar
from lpcc.codegen.cuda.kernels.scalar import CExpr
from lpcc.ir.dialect import lowp
from lpcc.ir.dialect.fused import FusedOp, YieldOp
from lpcc.ir.dtypes import FloatType, IntType
from lpcc.ir.layout import Layout, local, spatial

__all__ = [
    "CHUNK_K",
    "Plan",
    "a8_codes_order",
    "a16_codes_order",
    "block_tile",
    "gen_fused",
    "plan",
    "repack_a8",
    "repack_a16",
    "select_mma",
    "source",
]

CHUNK_K = 128  # K per staged chunk (32 codes per lane and n8 tile)
WARPS = 4
NT = 2  # n8 tiles per warp
BN = WARPS * NT * 8  # 64 columns per block
MAX_MT = 4
_F32 = np.dtype(np.float32)


# -- the weight layouts ----------------------------------------------------------------


def _chunk_codes(codes: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, int, int]:
    """codes [N, K] -> [N8 tiles, chunks, 32 lanes, 32] in `order`.

    order[lane, e] = (k within one chunk, n within the n8 tile); N is padded
    to BN columns and K to CHUNK_K with code 0.
    """
    n, k = codes.shape
    np_, kp = -(-n // BN) * BN, -(-k // CHUNK_K) * CHUNK_K
    pad = np.zeros((np_, kp), np.int64)
    pad[:n, :k] = codes
    t = np.arange(np_ // 8)[:, None, None, None]
    c = np.arange(kp // CHUNK_K)[None, :, None, None]
    kk = c * CHUNK_K + order[None, None, :, :, 0]
    nn = t * 8 + order[None, None, :, :, 1]
    return pad[nn, kk], np_ // 8, kp // CHUNK_K


def a16_codes_order() -> np.ndarray:
    """[32 lanes, 32, 2]: (k in chunk, n in n8 tile) of each lane's codes (A16).

    Code e of a lane is k-step e // 4, element e % 4 of the B fragment.
    """
    frag = mma.lane_order(mma.B_F16)  # [32, 4, 2]
    steps = np.arange(CHUNK_K // 16)[None, :, None, None]
    out = np.broadcast_to(frag[:, None], (32, CHUNK_K // 16, 4, 2)).copy()
    out[..., 0] += 16 * steps[..., 0]
    return out.reshape(32, 32, 2)


def a8_codes_order() -> np.ndarray:
    """[32 lanes, 32, 2]: (k in chunk, n) of each lane's codes (A8).

    Code e is register R = e // 4 (k-step R // 2, fragment register R % 2),
    byte e % 4, i.e. k-step e // 8, fragment element e % 8.
    """
    frag = mma.lane_order(mma.B_S8)  # [32, 8, 2]
    steps = np.arange(CHUNK_K // 32)[None, :, None, None]
    out = np.broadcast_to(frag[:, None], (32, CHUNK_K // 32, 8, 2)).copy()
    out[..., 0] += 32 * steps[..., 0]
    return out.reshape(32, 32, 2)


def _encode(w: np.ndarray, dt: IntType) -> np.ndarray:
    return np.asarray(dt.encode(np.asarray(w)), np.int64)


def repack_a16(w: np.ndarray, dt: IntType) -> np.ndarray:
    """Weight values [N, K] -> the A16 layout's bytes (module docstring)."""
    bits, bias = dt.bits, (1 << (dt.bits - 1)) if dt.is_signed else 0
    chunks, _, _ = _chunk_codes(_encode(w, dt), a16_codes_order())
    u = chunks.reshape(-1, 16, 2) ^ bias  # offset-binary; [rows, pair, parity]
    ut = lpcc.dtype(f"uint{bits}")
    halves = []
    for parity in (0, 1):
        # 16 codes of `bits` bits are 2 * bits whole bytes: pack all rows at once
        stream = ut.pack(u[:, :, parity].reshape(-1))
        halves.append(stream.view("<u2").astype(np.uint32).reshape(len(u), bits))
    words = (halves[0] | (halves[1] << 16)).astype("<u4")
    return words.reshape(-1).view(np.uint8)


def _field_width(bits: int) -> int:
    return 1 << (bits - 1).bit_length()


def repack_a8(w: np.ndarray, dt: IntType) -> np.ndarray:
    """Weight values [N, K] -> the A8 layout's bytes (module docstring)."""
    bits, fw = dt.bits, _field_width(dt.bits)
    codes = _encode(w, dt)
    if dt.is_signed and bits < 8:
        codes = codes ^ (1 << (bits - 1))  # offset-binary
    chunks, _, _ = _chunk_codes(codes, a8_codes_order())
    per = 8 // fw  # registers per word
    r = chunks.reshape(-1, fw, per, 4).astype(np.uint64)  # [rows, word, h, byte]
    shift = (
        8 * np.arange(4)[None, None, None, :] + fw * np.arange(per)[None, None, :, None]
    )
    words = (r << shift.astype(np.uint64)).sum(axis=(2, 3)).astype("<u4")
    return words.reshape(-1).view(np.uint8)


# -- matching the region ---------------------------------------------------------------


@dataclass
class Plan:
    """What the kernel computes (argument slots are kernel input indices)."""

    path: str  # "a16" or "a8"
    x: int
    w: int
    wdt: IntType
    lead: tuple[int, ...]
    m: int
    n: int
    k: int
    g: int
    scale: int
    zero: int | None = None
    sums: int | None = None
    act: int | None = None
    tail: list[Operation] = field(default_factory=list)
    result: SSAValue | None = None  # the yielded value
    reduce: Operation | None = None
    loads: dict[SSAValue, int] = field(default_factory=dict)  # tail block args

    @property
    def mt(self) -> int:
        return min(MAX_MT, -(-self.m // 16))

    @property
    def bm(self) -> int:
        return 16 * self.mt

    @property
    def kstep(self) -> int:
        return 16 if self.path == "a16" else 32


def _static(dims) -> bool:
    return all(isinstance(d, int) for d in dims)


def _bcast_ok(s: tuple, y: tuple) -> bool:
    """Whether shape s broadcasts to y (same or lower rank, 1 or equal dims)."""
    if not _static(s) or len(s) > len(y):
        return False
    return all(a in (1, b) for a, b in zip(s[::-1], y[::-1], strict=False))


def plan(req: CudaRequest) -> Plan | None:
    """The kernel's plan for `req`, or None when this generator declines it."""
    op = req.op
    if not isinstance(op, FusedOp) or op.kind.data != "epilogue":
        return None
    ops = list(op.body.block.ops)
    if len(ops) < 3:
        return None
    gm, red, yld = ops[0], ops[1], ops[-1]
    if not isinstance(gm, lowp.GroupMatmulOp) or not isinstance(
        red, lowp.GroupDequantReduceOp
    ):
        return None
    if not isinstance(yld, YieldOp) or len(yld.values) != 1:
        return None
    if red.partial is not gm.result or len(list(gm.result.uses)) != 1:
        return None

    def arg(v: SSAValue | None) -> int | None:
        if not isinstance(v, BlockArgument) or v.block is not op.body.block:
            return None
        return req.arg_index(op.operands[v.index])

    xi, wi, si = arg(gm.input), arg(gm.weight), arg(red.scale)
    if xi is None or wi is None or si is None or wi not in req.const_inputs:
        return None
    xdt, wdt = elem(gm.input), elem(gm.weight)
    if not isinstance(wdt, IntType) or not 1 <= wdt.bits <= 8:
        return None
    if isinstance(xdt, FloatType) and xdt.value_dtype == _F32:
        path = "a16"
    elif isinstance(xdt, IntType) and xdt.bits == 8 and xdt.is_signed:
        path = "a8"
    else:
        return None
    xs, ws = shape(gm.input), shape(gm.weight)
    if not _static(xs) or not _static(ws) or len(ws) != 2:
        return None
    m = int(np.prod(xs[:-1], dtype=np.int64))
    n, k = ws
    g = gm.group.data
    step = 16 if path == "a16" else 32
    if m < 16 or m >= 2**31 or n < 1 or k % step or g % step or k % g:
        return None
    if elem(red.result).name != "f32" or elem(red.scale).value_dtype != _F32:
        return None
    p = Plan(path, xi, wi, wdt, tuple(xs[:-1]), m, n, k, g, si)
    if red.zero is not None:
        p.zero, p.sums = arg(red.zero), arg(red.sums)
        if p.zero is None or p.sums is None:
            return None
        zdt = elem(red.zero)
        if not (isinstance(zdt, IntType) and zdt.bits <= 16) and not (
            isinstance(zdt, FloatType) and zdt.value_dtype == _F32
        ):
            return None
        if elem(red.sums).name != ("f32" if path == "a16" else "int32"):
            return None
    if red.act_scale is not None:
        p.act = arg(red.act_scale)
        if p.act is None:
            return None
    p.reduce, p.result = red, yld.values[0]
    p.tail = ops[2:-1]
    if p.tail and not _tail_ok(p, op, arg):
        return None
    if not p.tail and p.result is not red.result:
        return None
    return p


def _tail_ok(p: Plan, op: FusedOp, arg: Callable[[SSAValue], int | None]) -> bool:
    """Check the elementwise tail: shapes broadcast to y's, no repacked reads."""
    y = (*p.lead, p.n)
    for t in p.tail:
        if len(t.results) != 1 or not _bcast_ok(tuple(shape(t.results[0])), y):
            return False
        if not scalar.can_emit(t):
            return False
        for v in t.operands:
            if isinstance(v, BlockArgument):
                slot = arg(v)
                if slot is None or slot == p.w or not _bcast_ok(tuple(shape(v)), y):
                    return False
                p.loads[v] = slot
    return tuple(shape(p.result)) == y and p.result is p.tail[-1].results[0]


# -- code generation -------------------------------------------------------------------


def _h2(x: float) -> int:
    """f16x2 bits of (x, x) for an exactly representable x."""
    h = np.float16(x)
    if float(h) != x:
        raise AssertionError(f"{x} is not exact in fp16")
    return int(np.array(h).view(np.uint16)) * 0x10001


def _decode_a16(p: Plan, nt: int, pair: int) -> str:
    """C expression: B register `pair` of the chunk for n8 tile nt (f16x2)."""
    st = gemv.pair_plan(p.wdt.bits)[pair]
    bias = 1 << (p.wdt.bits - 1) if p.wdt.is_signed else 0
    w = f"w{nt}_{st.q}"
    src = w if st.sh == 0 else f"({w} >> {st.sh})"
    tail = f"0x{gemv.MAGIC:08x}u"
    if st.sh2:
        tail = f"lpcc_tc_lop3(w{nt}_{st.q + 1} << {st.sh2}, 0x{st.mask2:08x}u, {tail})"
    word = f"lpcc_tc_lop3({src}, 0x{st.mask:08x}u, {tail})"
    mult = _h2(2.0**-st.rel)
    add = _h2(-(1024 / 2**st.rel + bias))
    return f"lpcc_tc_hfma2({word}, 0x{mult:08x}u, 0x{add:08x}u)"


def _decode_a8(p: Plan, nt: int, reg: int) -> str:
    """C expression: B register `reg` (0..7) of the chunk for n8 tile nt (4 bytes)."""
    bits, fw = p.wdt.bits, _field_width(p.wdt.bits)
    per = 8 // fw
    q, h = divmod(reg, per)
    w = f"w{nt}_{q}"
    v = w if h == 0 else f"({w} >> {fw * h})"
    if fw < 8:
        v = f"({v} & 0x{((1 << fw) - 1) * 0x01010101:08x}u)"
    if p.wdt.is_signed and bits < 8:
        bias = (1 << (bits - 1)) * 0x01010101
        v = f"((({v} | 0x80808080u) - 0x{bias:08x}u) ^ 0x80808080u)"
    return v


def _loads(nt: int, words: int) -> list[str]:
    """Statements loading the lane's `words` words w{nt}_* from wp{nt}."""
    out = []
    if words % 4 == 0:
        for v in range(words // 4):
            out.append(
                f"const uint4 v{nt}_{v} = reinterpret_cast<const uint4*>(wp{nt})[{v}];"
            )
            out += [
                f"const unsigned w{nt}_{4 * v + j} = v{nt}_{v}.{'xyzw'[j]};"
                for j in range(4)
            ]
    elif words % 2 == 0:
        for v in range(words // 2):
            out.append(
                f"const uint2 v{nt}_{v} = reinterpret_cast<const uint2*>(wp{nt})[{v}];"
            )
            out += [
                f"const unsigned w{nt}_{2 * v + j} = v{nt}_{v}.{'xy'[j]};"
                for j in range(2)
            ]
    else:
        out += [f"const unsigned w{nt}_{j} = wp{nt}[{j}];" for j in range(words)]
    return out


def _slots(p: Plan) -> tuple[int, int, int]:
    """(vectors per row, row step, slots per thread) of a full chunk's staging.

    A full chunk's A tile is bm rows of `per_row` 16-byte vectors; vector i =
    threadIdx.x + 128 j goes to thread i % 128, so each thread stages the same
    column vector (threadIdx.x % per_row) of rows threadIdx.x / per_row + step
    j, j < slots, in every chunk: its addresses are set up once (`_stage_setup`).
    """
    per_row = CHUNK_K // (4 if p.path == "a16" else 16)
    step = 32 * WARPS // per_row
    return per_row, step, p.bm // step


def _stage_mode(p: Plan) -> str:
    """How full chunks stage A: "even" (every block's rows < M: constant offsets
    from one pointer), "clamp" (rows past M re-read row M - 1, whose products
    land in rows the epilogue drops; 32-bit offsets per slot) or "loop" (the
    generic loop, when x holds 2^31 bytes or more)."""
    xbytes = p.m * p.k * (4 if p.path == "a16" else 1)
    if p.m % p.bm == 0 and p.bm * p.k * (4 if p.path == "a16" else 1) < 2**31:
        return "even"
    return "clamp" if xbytes < 2**31 else "loop"


def _stage_setup(p: Plan) -> list[str]:
    """Per-thread staging addresses, computed once before the K loop."""
    mode = _stage_mode(p)
    if mode == "loop":
        return []
    per_row, step, slots = _slots(p)
    vec = 4 if p.path == "a16" else 16  # x elements per 16-byte vector
    sv = 8 if p.path == "a16" else 16  # bytes per vector in shared memory
    out = [
        f"const int xsq = threadIdx.x % {per_row}, xsr = threadIdx.x / {per_row};",
        f"unsigned char* const xsd = lpcc_tc_as + xsr * {_lda(p)} + {sv} * xsq;",
    ]
    if mode == "even":
        out.append(
            f"const {_xt(p)}* __restrict__ xsp = xin + (m0 + xsr) * {p.k}LL"
            f" + {vec} * xsq;"
        )
    else:
        out.append(f"const {_xt(p)}* __restrict__ xsp = xin + {vec} * xsq;")
        for j in range(slots):
            out.append(
                f"const unsigned xso{j} = (unsigned)(min(m0 + xsr + {step * j}, "
                f"{p.m - 1}LL) * {p.k});"
            )
    return out


def _xt(p: Plan) -> str:
    return "float" if p.path == "a16" else "lp_i8"


def _stage_full(p: Plan) -> list[str]:
    """Staging of a full chunk from the addresses of `_stage_setup` (unrolled)."""
    _, step, slots = _slots(p)
    even = _stage_mode(p) == "even"
    lda = _lda(p)
    out = [f"const {_xt(p)}* __restrict__ xsc = xsp + ch * {CHUNK_K};"]
    for j in range(slots):
        off = f"{step * j * p.k}" if even else f"xso{j}"
        dst = f"xsd + {step * j * lda}"
        if p.path == "a16":
            out += [
                f"const float4 xv{j} = *reinterpret_cast<const float4*>(xsc + {off});",
                f"*reinterpret_cast<uint2*>({dst}) = make_uint2("
                f"lpcc_tcs_h2(xv{j}.x, xv{j}.y), lpcc_tcs_h2(xv{j}.z, xv{j}.w));",
            ]
        else:
            out.append(
                f"*reinterpret_cast<uint4*>({dst}) = "
                f"*reinterpret_cast<const uint4*>(xsc + {off});"
            )
    return out


_H2 = """/* two floats to an f16x2 word (round to nearest even): one F2FP on the GPU */
__device__ __forceinline__ unsigned lpcc_tcs_h2(float lo, float hi) {
#ifdef LPCC_EMU
  return lpcc_tc_h2(lo, hi);
#else
  const __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const unsigned*>(&h);
#endif
}
"""


def _stage(p: Plan, steps: int, chunks: int) -> list[str]:
    """C statements of one K chunk with `steps` k-steps (variable `ch` in scope)."""
    a16 = p.path == "a16"
    words = p.wdt.bits if a16 else _field_width(p.wdt.bits)
    kc = steps * p.kstep  # k in this chunk
    lda = _lda(p)
    out = ["__syncthreads();"]
    for nt in range(NT):
        out.append(
            f"const lp_u32* wp{nt} = wsrc + ((size_t)((t0 + {nt}) * {chunks} + ch) "
            f"* 32 + lane) * {words};"
        )
        out += _loads(nt, words)
    if kc == CHUNK_K and _stage_mode(p) != "loop":
        out += _stage_full(p)
    elif a16:
        per_row = kc // 4  # float4 per row
        out += [
            f"for (int i = threadIdx.x; i < {p.bm * per_row}; i += {32 * WARPS}) {{",
            f"  const int r = i / {per_row}, q = i % {per_row};",
            "  const long long m = m0 + r;",
            "  float4 v = make_float4(0.f, 0.f, 0.f, 0.f);",
            f"  if (m < {p.m}) v = *reinterpret_cast<const float4*>("
            f"xin + m * {p.k}LL + (long long)ch * {CHUNK_K} + 4 * q);",
            "  uint2 hv;",
            "  hv.x = lpcc_tc_h2(v.x, v.y);",
            "  hv.y = lpcc_tc_h2(v.z, v.w);",
            f"  *reinterpret_cast<uint2*>(lpcc_tc_as + r * {lda} + 8 * q) = hv;",
            "}",
        ]
    else:
        per_row = kc // 16  # uint4 per row
        out += [
            f"for (int i = threadIdx.x; i < {p.bm * per_row}; i += {32 * WARPS}) {{",
            f"  const int r = i / {per_row}, q = i % {per_row};",
            "  const long long m = m0 + r;",
            "  uint4 v = make_uint4(0u, 0u, 0u, 0u);",
            f"  if (m < {p.m}) v = *reinterpret_cast<const uint4*>("
            f"xin + m * {p.k}LL + (long long)ch * {CHUNK_K} + 16 * q);",
            f"  *reinterpret_cast<uint4*>(lpcc_tc_as + r * {lda} + 16 * q) = v;",
            "}",
        ]
    out.append("__syncthreads();")
    per_group = p.g // p.kstep  # k-steps per group
    steps_full = CHUNK_K // p.kstep
    for s in range(steps):
        out.append("{")
        out.append(f"  unsigned a[{p.mt}][4], b[{NT}][2];")
        for mt in range(p.mt):
            off = 16 * mt * lda + 32 * s
            out.append(f"  lpcc_tc_ldsm_x4(a[{mt}], lpcc_tc_as + {off}, {lda});")
        for nt in range(NT):
            for r in range(2):
                idx = 2 * s + r
                expr = _decode_a16(p, nt, idx) if a16 else _decode_a8(p, nt, idx)
                out.append(f"  b[{nt}][{r}] = {expr};")
        if a16:
            out.append(f"  lpcc_tc_mma_tile_f16<{p.mt}, {NT}>(acc, a, b, xw);")
        else:
            bu = "false" if p.wdt.is_signed else "true"
            out.append(f"  lpcc_tc_mma_tile_s8<{p.mt}, {NT}, {bu}>(acc, a, b, xw);")
        # group boundary after this k-step: (ch * steps_full + s + 1) % per_group == 0
        if steps_full % per_group == 0:
            cond = "1" if (s + 1) % per_group == 0 else None
        else:
            cond = f"((ch * {steps_full} + {s + 1}) % {per_group} == 0)"
        if cond is not None:
            gi = f"((long long)ch * {steps_full} + {s}) / {per_group}"
            out.append(f"  if ({cond}) {{")
            out.append(f"    const long long gi = {gi};")
            out += ["    " + line for line in _flush(p)]
            out.append("  }")
        out.append("}")
    return out


def _lda(p: Plan) -> int:
    """Row stride of the staged A tile in bytes (+16: conflict-free ldmatrix)."""
    return CHUNK_K * (2 if p.path == "a16" else 1) + 16


def _flush(p: Plan) -> list[str]:
    """Statements applying the reduce's terms of group `gi` and clearing acc."""
    gn = p.k // p.g
    a16 = p.path == "a16"
    out = [
        "#pragma unroll",
        f"for (int nt = 0; nt < {NT}; ++nt) {{",
        "  #pragma unroll",
        "  for (int e = 0; e < 2; ++e) {",
        "    long long n = nw0 + nt * 8 + 2 * cq + e;",
        f"    n = n < {p.n} ? n : {p.n - 1};",
        f"    const float sc = (float)in{p.scale}[n * {gn} + gi];",
    ]
    if p.zero is not None:
        out.append(f"    const float zp = (float)in{p.zero}[n * {gn} + gi];")
    out += [
        "    #pragma unroll",
        f"    for (int mt = 0; mt < {p.mt}; ++mt) {{",
        "      #pragma unroll",
        "      for (int h = 0; h < 2; ++h) {",
        "        long long m = m0 + 16 * mt + gq + 8 * h;",
        f"        m = m < {p.m} ? m : {p.m - 1};",
        "        const int i = 2 * h + e;",
    ]
    if a16:
        t = "acc[mt][nt][i]"
        if p.zero is not None:
            out.append(f"        const float sm = in{p.sums}[m * {gn} + gi];")
            t = f"({t} - zp * sm)"
        f = "sc"
        if p.act is not None:
            out.append(f"        const float act = in{p.act}[m * {gn} + gi];")
            f = "(sc * act)"
        out.append(f"        y[mt][nt][i] = fmaf({f}, {t}, y[mt][nt][i]);")
        out.append("        acc[mt][nt][i] = 0.0f;")
    else:
        t = "(double)acc[mt][nt][i]"
        if p.zero is not None:
            out.append(f"        const double sm = (double)in{p.sums}[m * {gn} + gi];")
            t = f"({t} - lpcc_tc_dmul((double)zp, sm))"
        t = f"lpcc_tc_dmul({t}, (double)sc)"
        if p.act is not None:
            out.append(f"        const double act = (double)in{p.act}[m * {gn} + gi];")
            t = f"lpcc_tc_dmul({t}, act)"
        out.append(f"        y[mt][nt][i] = lpcc_tc_dadd(y[mt][nt][i], {t});")
        out.append("        acc[mt][nt][i] = 0;")
    out += ["      }", "    }", "  }", "}"]
    return out


def _epilogue(p: Plan, used: list[str]) -> tuple[list[str], dict[int, str]]:
    """Statements storing y (through the tail) for m < M, n < N."""
    counter = iter(range(1 << 30))

    def fresh(stem: str) -> str:
        return f"{stem}_{next(counter)}"

    body = ["const float yv = (float)y[mt][nt][i];"]
    result = "yv"
    errors: dict[int, str] = {}
    if p.tail:
        ydims = (*p.lead, p.n)
        names = [f"ix{d}" for d in range(len(ydims))]
        body += scalar.unravel("m", p.lead, names[:-1], used)
        body.append(f"const long long {names[-1]} = n;")
        assert p.reduce is not None
        env: dict[SSAValue, CExpr] = {
            p.reduce.results[0]: CExpr("yv", elem(p.reduce.results[0]))
        }
        for v, slot in p.loads.items():
            off = scalar.offset_expr(shape(v), ydims, names, used)
            env[v] = CExpr(f"in{slot}[{off}]", elem(v))
        lines: list[str] = []
        if not scalar.emit_body(p.tail, env, lines, fresh):
            raise AssertionError("tail checked by can_emit but emit_body failed")
        body += lines
        assert p.result is not None
        result = env[p.result].text
        errors = dict(scalar.ERRORS)
    body.append(f"out0[m * {p.n}LL + n] = {result};")
    out = [
        "#pragma unroll",
        f"for (int mt = 0; mt < {p.mt}; ++mt)",
        "#pragma unroll",
        f"for (int nt = 0; nt < {NT}; ++nt)",
        "#pragma unroll",
        "for (int i = 0; i < 4; ++i) {",
        "  const long long m = m0 + 16 * mt + gq + 8 * (i >> 1);",
        "  const long long n = nw0 + nt * 8 + 2 * cq + (i & 1);",
        f"  if (m < {p.m} && n < {p.n}) {{",
        *["    " + line for line in body],
        "  }",
        "}",
    ]
    return out, errors


def source(req: CudaRequest, p: Plan) -> tuple[str, tuple[str, ...], dict[int, str]]:
    """The kernel's CUDA C (without the prelude), symbols and error codes."""
    a16 = p.path == "a16"
    used: list[str] = []
    epi, errors = _epilogue(p, used)
    sig = signature(req, used, repacked=(p.w,))
    full, tail_k = divmod(p.k, CHUNK_K)
    chunks = -(-p.k // CHUNK_K)
    xw_words = 4 * p.mt + 2 * NT
    acc_t, y_t = ("float", "float") if a16 else ("int", "double")
    zero = "0.0f" if a16 else "0"
    lines = [
        f'extern "C" __global__ void __launch_bounds__({32 * WARPS}, 1) {req.entry}(',
        f"    {sig}) {{",
        f"  __shared__ __align__(16) unsigned char lpcc_tc_as[{p.bm * _lda(p)}];",
        "#ifdef LPCC_EMU",
        f"  __shared__ unsigned lpcc_tc_xchg[{WARPS * 32 * xw_words}];",
        f"  unsigned* const xw = lpcc_tc_xchg + (threadIdx.x >> 5) * {32 * xw_words};",
        "#else",
        "  unsigned* const xw = nullptr;",
        "#endif",
        "  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;",
        "  const int gq = lane >> 2, cq = lane & 3;",
        f"  const long long m0 = (long long)blockIdx.y * {p.bm};",
        f"  const int t0 = blockIdx.x * {BN // 8} + warp * {NT};",
        "  const long long nw0 = (long long)t0 * 8;",
        "  const lp_u32* __restrict__ wsrc =",
        f"      reinterpret_cast<const lp_u32*>(in{p.w});",
        f"  const {ctype(elem(req.args[p.x]))}* __restrict__ xin = in{p.x};",
        f"  {acc_t} acc[{p.mt}][{NT}][4];",
        f"  {y_t} y[{p.mt}][{NT}][4];",
        "#pragma unroll",
        f"  for (int mt = 0; mt < {p.mt}; ++mt)",
        "#pragma unroll",
        f"    for (int nt = 0; nt < {NT}; ++nt)",
        "#pragma unroll",
        "      for (int i = 0; i < 4; ++i) {",
        f"        acc[mt][nt][i] = {zero};",
        "        y[mt][nt][i] = 0;",
        "      }",
    ]
    lines += ["  " + s for s in _stage_setup(p)]
    if full:
        lines += ["#pragma unroll 1", f"  for (int ch = 0; ch < {full}; ++ch) {{"]
        lines += ["    " + s for s in _stage(p, CHUNK_K // p.kstep, chunks)]
        lines.append("  }")
    if tail_k:
        lines += ["  {", f"    const int ch = {full};"]
        lines += ["    " + s for s in _stage(p, tail_k // p.kstep, chunks)]
        lines.append("  }")
    lines += ["  " + s for s in epi]
    lines.append("}")
    src = mma.HELPERS + "\n" + _H2 + "\n".join(lines) + "\n"
    return src, tuple(used), errors


def block_tile(mt: int) -> Layout:
    """The block's accumulator tile, in the layout algebra: WARPS warps side
    by side along N, each repeating a thread mapping of MT x NT accumulator
    fragments: (16 MT) x 64 elements over 32 * WARPS threads."""
    return spatial(1, WARPS) * local(mt, NT) * mma.C_ACC


# The instructions whose accumulator a tile may be made of, best first.
MMA_FRAGMENTS: tuple[tuple[str, Layout], ...] = (("mma.m16n8", mma.C_ACC),)


def select_mma(tile: Layout) -> tuple[str, Layout] | None:
    """Instruction selection by layout division: the first mma whose
    accumulator fragment divides `tile`, and the quotient (how warps and
    per-thread repeats tile the fragments); None: no tensor-core mapping."""
    for name, frag in MMA_FRAGMENTS:
        quotient = tile.divide(frag)
        if quotient is not None:
            return name, quotient
    return None


@register(FusedOp, kind="epilogue")
def gen_fused(req: CudaRequest) -> CudaKernel | None:
    """The tensor-core kernel of a group-GEMM epilogue region, or None."""
    p = plan(req)
    if p is None:
        return None
    chosen = select_mma(block_tile(p.mt))
    if chosen is None:
        return None
    _, tiling = chosen  # the source below is written for exactly this tiling
    assert tiling.num_workers == WARPS and tiling.local_size == p.mt * NT, tiling
    src, symbols, errors = source(req, p)
    wdt = p.wdt
    if p.path == "a16":
        layout = f"tc-a16-{wdt.name}[n8 x k128 x lane]"

        def fn(w: np.ndarray, dt: IntType = wdt) -> np.ndarray:
            return repack_a16(w, dt)

    else:
        layout = f"tc-a8-{wdt.name}[n8 x k128 x lane]"

        def fn(w: np.ndarray, dt: IntType = wdt) -> np.ndarray:
            return repack_a8(w, dt)

    grid = (-(-p.n // BN), -(-p.m // p.bm), 1)
    what = "m16n8k16 f16" if p.path == "a16" else "m16n8k32 s8"
    return CudaKernel(
        source=src,
        launches=[Launch(req.entry, grid, (32 * WARPS, 1, 1))],
        symbols=symbols,
        repack={p.w: Repack(layout, fn)},
        errors=errors,
        note=(
            f"tensor-core group GEMM ({what}), {wdt.name} g{p.g}, "
            f"tile {p.bm}x{BN}, M={p.m} N={p.n} K={p.k}"
            + (f", tail of {len(p.tail)} ops" if p.tail else "")
        ),
    )
