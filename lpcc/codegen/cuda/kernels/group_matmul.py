"""CUDA SIMT kernels for dequant-after-group-GEMM (GEMV-style, every M).

What runs here (anything else returns None and runs in the interpreter):

* `lp.fused epilogue` whose body is `lp.group_matmul` then
  `lp.group_dequant_reduce` (scale, optional zero + sums, optional
  act_scale; f32 result), then optional elementwise ops on y
  (`matmul.plan_tail`: bias, activation, residual);
* `lp.group_sum` alone (exact: NumPy's pairwise order, f32; int32 for ints).

The weight, scale and zero must be program constants (the weight is
repacked); K and N static; the group a multiple of 32 (one 32-code chunk
never straddles two groups); a short last group is fine (K is padded to
whole chunks with code 0, whose x is read as 0).

Weight layout: `gemv.repack`'s (each column's codes cut into chunks of 32
k, a chunk = `bits` uint32 words, even codes in the low 16-bit halves and
odd codes in the high halves; signed codes offset-binary), so every width
1..8 reads `bits` words per 32 weights and consecutive lanes read
consecutive chunks. A code is one shift + mask of a word (two for codes
straddling a 16-bit half, widths 3, 5, 6, 7).

Float activations (f32): the magic-number decode in f32 without a shift per
code: code u at bit `pos` of a word (even codes in w, odd codes in w >> 16,
one shift per word; `f32_code_plan`) OR-ed into the mantissa of 2^(23 -
pos) (whose ULP is 1) gives exactly 2^(23 - pos) + u, so one `lop3` and one
`fadd` of -(2^(23 - pos) + bias + z) give the exact integer q - z (zero
point folded in; no `I2F`); 8-bit codes take one `prmt` instead of the
`lop3`. x is read as float4 when K % 4 == 0 (tiles of 1-2 rows; 3-4 rows
read scalars, which keeps ptxas within the 80-register budget).
Float codes (f4e2m1, f8...) decode by shift-mask-multiply
(`fdecode.float_decode`: the code's bits moved onto f32's, times
2**(127 - bias), special codes selected), with no table. A warp computes one
output column n for a tile of up to 4 rows (a block = 4 warps = 4 columns;
grid.y walks the rows, which may be dynamic, the tile's row count picked at
run time); lane l takes chunks l, l + 32, ..; per chunk an f32 FMA chain per
row, scaled once by its group's scale (times act_scale), then a
`__shfl_xor_sync` tree. The result differs from the interpreter's (f32 group
sums, f64 epilogue) by f32 reassociation only (the tests derive the bound).

Int8 activations (W4A8): exact int32 partial sums per group with `__dp4a`
(four codes packed into a word: u for widths < 8, with -bias * sum(x) for
signed codes; u ^ 0x80 for 8 bits, +128 * sum(x) for unsigned); lane l takes
groups l, l + 32, .. and parks P in shared memory; then the epilogue runs
in f64 exactly as the interpreter's (((P - z S) s) a, NumPy's pairwise sum
over the groups, rounded once to f32), so y equals the interpreter's bit for
bit. (`lpcc_gm_dadd`/`_dmul` are `__dadd_rn`/`__dmul_rn`: no FMA
contraction.) Needs K % 4 == 0.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np
from xdsl.ir import Operation

from lpcc.codegen.cuda.kernel import (
    CudaKernel,
    CudaRequest,
    Launch,
    Repack,
    c_dim,
    ctype,
    elem,
    register,
    shape,
    signature,
)
from lpcc.codegen.cuda.kernels import gemv, scalar
from lpcc.codegen.cuda.kernels.fdecode import float_decode
from lpcc.codegen.cuda.kernels.matmul import Tail, block_slot, emit_tail, plan_tail
from lpcc.codegen.cuda.kernels.movement import grid_1d
from lpcc.codegen.shapes import group_weight_ok, static
from lpcc.ir.dialect import lowp
from lpcc.ir.dialect import ops as lp
from lpcc.ir.dialect.fused import FusedOp, YieldOp
from lpcc.ir.dtypes import DType, FloatType, IntType
from lpcc.ir.symbolic import Dim, dim_ceil_div, dim_prod

__all__ = ["code_expr", "pairwise_c"]

_F32 = np.dtype(np.float32)
CHUNK = 32
WARPS = 4  # output columns per block
MT = 4  # rows per tile
_PW_BLOCK = 128  # NumPy's PW_BLOCKSIZE
# min blocks per SM: an 80-register budget (with no minimum ptxas aims at
# 32-56 registers and spills some widths; 80 keeps 20 warps per SM in flight)
MIN_BLOCKS = 6
_SHARED_P_MAX = 32 * 1024  # bytes of parked int32 partials (int8 path)

_HELPERS = r"""
#ifndef LPCC_GM_HELPERS
#define LPCC_GM_HELPERS
/* f64 add/multiply rounded once each (never contracted into an FMA). */
__device__ __forceinline__ double lpcc_gm_dadd(double a, double b) {
#ifdef LPCC_EMU
  return a + b;
#else
  return __dadd_rn(a, b);
#endif
}
__device__ __forceinline__ double lpcc_gm_dmul(double a, double b) {
#ifdef LPCC_EMU
  return a * b;
#else
  return __dmul_rn(a, b);
#endif
}
/* (a & b) | c in one `lop3` (nvcc splits it in two when b and c are both
   immediates: the asm keeps c in a register). */
__device__ __forceinline__ unsigned lpcc_gm_lop3(unsigned a, unsigned b, unsigned c) {
#ifdef LPCC_EMU
  return (a & b) | c;
#else
  unsigned d;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
  return d;
#endif
}
#endif
"""


# -- C text helpers ------------------------------------------------------------------


def code_expr(bits: int, e: int) -> str:
    """C (unsigned) of code e (0..31) of a chunk in `gemv.repack`'s layout,
    from the chunk's words w0..w{bits-1}: the unsigned (offset-binary) u."""
    p, par = divmod(e, 2)
    q, o = divmod(p * bits, 16)
    mask = (1 << bits) - 1
    pos = o + 16 * par
    if o + bits <= 16:
        x = f"w{q}" if pos == 0 else f"(w{q} >> {pos})"
        return f"({x} & {mask}u)" if pos + bits < 32 else x
    lo = 16 - o
    low = f"((w{q} >> {pos}) & {(1 << lo) - 1}u)"
    src = f"w{q + 1}" if par == 0 else f"(w{q + 1} >> 16)"
    high = f"(({src} << {lo}) & {mask ^ ((1 << lo) - 1)}u)"
    return f"({low} | {high})"


def _loads(bits: int) -> list[str]:
    """Statements loading a chunk's `bits` words w0.. from `wp` (vector loads
    where the chunk is 16- or 8-byte aligned, as gemv)."""
    if bits % 4 == 0:
        out = []
        for v in range(bits // 4):
            out.append(f"const uint4 v{v} = reinterpret_cast<const uint4*>(wp)[{v}];")
            out += [
                f"const unsigned w{4 * v + j} = v{v}.{'xyzw'[j]};" for j in range(4)
            ]
        return out
    if bits % 2 == 0:
        out = []
        for v in range(bits // 2):
            out.append(f"const uint2 v{v} = reinterpret_cast<const uint2*>(wp)[{v}];")
            out += [f"const unsigned w{2 * v + j} = v{v}.{'xy'[j]};" for j in range(2)]
        return out
    return [f"const unsigned w{j} = wp[{j}];" for j in range(bits)]


def pairwise_c(
    n: int,
    term: Callable[[str], str],
    ctype_: str,
    add: Callable[[str, str], str],
    lines: list[str],
    fresh: Callable[[str], str],
    valid: int | None = None,
    ind: str = "",
) -> str:
    """C statements (appended to `lines`) summing term(0..n-1) in the order of
    NumPy's pairwise `add.reduce` (as `llvm/kernels/group_matmul.emit_pairwise`);
    returns the variable holding the sum. `term(i)` takes a C index
    expression; terms from `valid` on are zeros that are still added (a
    short group the interpreter pads with zeros)."""
    valid = n if valid is None else valid
    zero = "0.0" if ctype_ == "double" else "0.0f"

    def t(i: int) -> str:
        return term(str(i)) if i < valid else zero

    def leaf(start: int, m: int) -> str:
        res = fresh("pw")
        if m < 8:
            lines.append(f"{ind}{ctype_} {res} = {zero};")
            for i in range(m):
                lines.append(f"{ind}{res} = {add(res, t(start + i))};")
            return res
        m8 = m - m % 8
        r = [fresh("pr") for _ in range(8)]
        for j in range(8):
            lines.append(f"{ind}{ctype_} {r[j]} = {t(start + j)};")
        full_end = start + 8 + max(0, min(m8 - 8, (valid - start - 8) // 8 * 8))
        if full_end > start + 8:
            i = fresh("pi")
            lines.append(
                f"{ind}for (int {i} = {start + 8}; {i} < {full_end}; {i} += 8) {{"
            )
            for j in range(8):
                lines.append(f"{ind}  {r[j]} = {add(r[j], term(f'({i} + {j})'))};")
            lines.append(f"{ind}}}")
        for i in range(full_end, start + m8, 8):
            for j in range(8):
                lines.append(f"{ind}{r[j]} = {add(r[j], t(i + j))};")
        a, b = add(r[0], r[1]), add(r[2], r[3])
        c, d = add(r[4], r[5]), add(r[6], r[7])
        lines.append(f"{ind}{ctype_} {res} = {add(add(a, b), add(c, d))};")
        for i in range(start + m8, start + m):
            lines.append(f"{ind}{res} = {add(res, t(i))};")
        return res

    def rec(start: int, m: int) -> str:
        if m <= _PW_BLOCK:
            return leaf(start, m)
        m2 = m // 2
        m2 -= m2 % 8
        left = rec(start, m2)
        right = rec(start + m2, m - m2)
        res = fresh("pw")
        lines.append(f"{ind}{ctype_} {res} = {add(left, right)};")
        return res

    return rec(0, n)


def _fadd(a: str, b: str) -> str:
    return f"__fadd_rn({a}, {b})"


def _dadd(a: str, b: str) -> str:
    return f"lpcc_gm_dadd({a}, {b})"


def _float_lit(v: float) -> str:
    return scalar.float_literal(float(v))


# -- the fused group GEMM ------------------------------------------------------------


class _Prob:
    """The checked pieces of a fused group GEMM request."""

    def __init__(self, **kw: object) -> None:
        self.__dict__.update(kw)

    x: int
    w: int
    s: int
    z: int | None
    t: int | None
    a: int | None
    lead: tuple[Dim, ...]
    n: int
    k: int
    g: int
    xdt: DType
    wdt: DType
    zdt: DType | None
    tail: Tail


def _problem(req: CudaRequest, generic: bool = False) -> _Prob | None:
    """The checked request; `generic` relaxes what only the fast kernels need
    (constant operands, 32-code chunks, K % 4, shared-memory space)."""
    op = req.op
    assert isinstance(op, FusedOp)
    ops = [o for o in op.body.block.ops if not isinstance(o, YieldOp)]
    gms = [o for o in ops if isinstance(o, lowp.GroupMatmulOp)]
    reds = [o for o in ops if isinstance(o, lowp.GroupDequantReduceOp)]
    if len(gms) != 1 or len(reds) != 1:
        return None
    gm, red = gms[0], reds[0]
    first = ops.index(gm)
    if ops.index(red) != first + 1:
        return None
    if any(not isinstance(o, lp.ConstantOp) for o in ops[:first]):
        return None
    if red.partial is not gm.result or len(list(gm.result.uses)) != 1:
        return None
    if elem(red.result) != scalar.F32_T:
        return None

    def slot(v: object) -> int | None:
        return block_slot(req, op, v)  # type: ignore[arg-type]

    xi, wi, si = slot(gm.input), slot(gm.weight), slot(red.scale)
    if xi is None or wi is None or si is None:
        return None
    if not generic and (wi not in req.const_inputs or si not in req.const_inputs):
        return None
    xdt, wdt = elem(gm.input), elem(gm.weight)
    xint = isinstance(xdt, IntType)
    if xint and not (xdt.bits == 8 and xdt.signed):
        return None
    if not xint and xdt.value_dtype != _F32:
        return None  # (any float held in f32: wider than the CPU's group_act_ok)
    if not group_weight_ok(wdt, xint):
        return None
    if elem(red.scale).value_dtype != _F32:
        return None
    xs, ws = shape(gm.input), shape(gm.weight)
    if len(ws) != 2 or not static(*ws):
        return None
    n, k = ws
    g = gm.group.data
    if not isinstance(xs[-1], int) or n < 1 or k < 1:
        return None
    if not generic and (g % CHUNK or (xint and k % 4)):
        return None
    zi = ti = ai = None
    zdt = None
    if red.zero is not None:
        zi, ti = slot(red.zero), slot(red.sums)
        if zi is None or ti is None:
            return None
        if not generic and zi not in req.const_inputs:
            return None
        zdt = elem(red.zero)
        if not isinstance(zdt, IntType) or zdt.bits > 8:
            return None
        if elem(red.sums).name != ("int32" if xint else "f32"):
            return None
    if red.act_scale is not None:
        ai = slot(red.act_scale)
        if ai is None or elem(red.act_scale) != scalar.F32_T:
            return None
    gn = -(-k // g)
    if not generic and xint and WARPS * MT * gn * 4 > _SHARED_P_MAX:
        return None
    rest = ops[:first] + ops[first + 2 :]
    forbidden = set() if generic else {wi, si} | ({zi} if zi is not None else set())
    tail = plan_tail(req, op, red.result, rest, forbidden)
    if tail is None or not scalar.supported_dtype(elem(tail.final)):
        return None
    return _Prob(
        x=xi,
        w=wi,
        s=si,
        z=zi,
        t=ti,
        a=ai,
        lead=tuple(xs[:-1]),
        n=n,
        k=k,
        g=g,
        xdt=xdt,
        wdt=wdt,
        zdt=zdt,
        tail=tail,
    )


def _repack_weight(wdt: DType, k: int) -> Callable[[np.ndarray], np.ndarray]:
    """Values [N, K] -> `gemv.repack` words (K padded to whole chunks), as bytes."""
    kp = -(-k // CHUNK) * CHUNK
    signed = isinstance(wdt, IntType) and wdt.signed

    def fn(values: np.ndarray) -> np.ndarray:
        codes = np.asarray(wdt.encode(np.asarray(values)), np.int64)
        if kp != k:
            codes = np.pad(codes, ((0, 0), (0, kp - k)))
        words = gemv.repack(codes, wdt.bits, signed)
        return np.ascontiguousarray(words, "<u4").view(np.uint8).reshape(-1)

    return fn


def _bias(wdt: DType) -> int:
    return 1 << (wdt.bits - 1) if isinstance(wdt, IntType) and wdt.signed else 0


def _store_lines(
    p: _Prob, yexpr: str, used: list[str], ind: str, stem: str
) -> list[str] | None:
    """Store y of row `row`, column `n` through the tail into out0."""
    names = [f"{stem}_l{i}" for i in range(len(p.lead))]
    ys = (*p.lead, p.n)
    lines = scalar.unravel("row", p.lead, names, used)
    ep = emit_tail(
        p.tail, scalar.CExpr(yexpr, scalar.F32_T), ys, [*names, "n"], used, stem
    )
    if ep is None:
        return None
    body, final = ep
    lines += body
    lines.append(f"out0[row * {p.n}LL + n] = {final.text};")
    return [ind + s for s in lines]


def _f32_magic(pos: int) -> int:
    """Bits of the f32 2**(23 - pos): its ULP is 2**-pos, so OR-ing u << pos
    (pos + bits <= 23) into its mantissa gives exactly 2**(23 - pos) + u."""
    return (127 + 23 - pos) << 23


def f32_code_plan(bits: int) -> list[tuple[str, int]]:
    """(C word, bit position) of each code e (0..31) of a chunk in
    `gemv.repack`'s layout for the f32 magic-number decode without a shift
    per code: even codes sit in the words w<q> at their in-half offset o,
    odd codes in h<q> = w<q> >> 16 (one shift per word) at o, and the few
    pairs that cross a 16-bit half (widths 3, 5, 6, 7) in j<q>_<parity>, the
    two halves joined (one `prmt`): always o + bits <= 23."""
    out = []
    for e in range(CHUNK):
        p, par = divmod(e, 2)
        q, o = divmod(p * bits, 16)
        if o + bits <= 16:
            out.append((f"w{q}" if par == 0 else f"h{q}", o))
        else:
            out.append((f"j{q}_{par}", o))
    return out


def _f32_words(bits: int, plan: list[tuple[str, int]]) -> list[str]:
    """Declarations of the shifted / joined words `plan` reads."""
    names = {w for w, _ in plan}
    out = []
    for q in range(bits):
        if f"h{q}" in names:
            out.append(f"const unsigned h{q} = w{q} >> 16;")
        if f"j{q}_0" in names:  # low halves of w<q>, w<q+1>
            out.append(f"const unsigned j{q}_0 = (w{q} & 0xffffu) | (w{q + 1} << 16);")
        if f"j{q}_1" in names:  # high halves
            out.append(
                f"const unsigned j{q}_1 = (w{q} >> 16) | (w{q + 1} & 0xffff0000u);"
            )
    return out


def _float_tile(p: _Prob, mt: int, used: list[str], cm: str) -> list[str] | None:
    """The float-x body for a tile of `mt` rows (inside `if`, at 4 spaces).

    Integer codes: code e at bit `pos` of its word (`f32_code_plan`) is one
    `lop3` ((word & mask << pos) | bits of 2**(23 - pos)) and one `fadd` of
    -(2**(23 - pos) + bias + z): the exact integer q - z, no shift per code.
    x is read as float4 (8 `LDG.128` per chunk and row) when K % 4 == 0 (the
    rows are 16-byte aligned then; a float4 lies wholly before or after K),
    else one float at a time. The products are the same f32 FMAs in the same
    order as a scalar decode would give."""
    k, g, bits = p.k, p.g, p.wdt.bits
    ch, gn = -(-k // CHUNK), -(-k // g)
    cpg = g // CHUNK
    is_float = isinstance(p.wdt, FloatType)
    vec = k % 4 == 0 and mt <= 2
    partial = k % CHUNK != 0
    ind = "    "
    out = [f"{ind}float acc[{mt}];"]
    out.append(f"{ind}#pragma unroll")
    out.append(f"{ind}for (int i = 0; i < {mt}; ++i) acc[i] = 0.0f;")
    out.append(f"{ind}const float* xr[{mt}];")
    for i in range(mt):
        out.append(f"{ind}xr[{i}] = X + (m0 + {i}) * {k}LL;")
    # per-column bases hoisted; in the loop 32-bit offsets (one IMAD.WIDE each)
    out.append(
        f"{ind}const unsigned* __restrict__ Wn = W + (long long)n * {ch * bits}LL;"
    )
    out.append(f"{ind}const float* __restrict__ Sn = S + n * {gn}LL;")
    if p.z is not None:
        out.append(f"{ind}const {ctype(p.zdt)}* __restrict__ Zn = Z + n * {gn}LL;")
    out.append(f"{ind}#pragma unroll 1")
    out.append(f"{ind}for (unsigned c = lane; c < {ch}u; c += 32u) {{")
    i2 = ind + "  "
    out.append(f"{i2}const unsigned g = c / {cpg}u;")
    out.append(f"{i2}const unsigned* __restrict__ wp = Wn + c * {bits}u;")
    out += [i2 + s for s in _loads(bits)]
    # 8-bit codes are whole bytes: one `prmt` puts byte j under the bytes of
    # 2**23 (no shift, no mask); narrower codes take `f32_code_plan`'s lop3
    plan = [("", 0)] * CHUNK if bits == 8 else f32_code_plan(bits)
    mask = (1 << bits) - 1
    if not is_float:
        out += [i2 + s for s in _f32_words(bits, plan)]
        b = _bias(p.wdt)
        poss = sorted({pos for _, pos in plan})
        if p.z is not None:
            out.append(f"{i2}const float zb = (float)(Zn[g] + {b});")
            for pos in poss:
                out.append(
                    f"{i2}const float k{pos} = "
                    f"__fadd_rn({_float_lit(2.0 ** (23 - pos))}, zb);"
                )
        else:
            for pos in poss:
                out.append(
                    f"{i2}const float k{pos} = {_float_lit(2.0 ** (23 - pos) + b)};"
                )
    out.append(f"{i2}float pp[{mt}];")
    out.append(f"{i2}#pragma unroll")
    out.append(f"{i2}for (int i = 0; i < {mt}; ++i) pp[i] = 0.0f;")
    for sb in range(CHUNK // 8):
        out.append(f"{i2}{{")
        i3 = i2 + "  "
        for j in range(8):
            e = 8 * sb + j
            if is_float:
                code = code_expr(bits, e)
                dec = float_decode(p.wdt, code)  # type: ignore[arg-type]
                out.append(f"{i3}const float f{j} = {dec or f'lut[{code}]'};")
            elif bits == 8:
                p_, par = divmod(e, 2)
                q, o = divmod(p_ * 8, 16)
                sel = 0x7440 | (o // 8 + 2 * par)
                out.append(
                    f"{i3}const float f{j} = __fadd_rn(__uint_as_float(__byte_perm("
                    f"w{q}, 0x{_f32_magic(0):08x}u, 0x{sel:x}u)), -k0);"
                )
            else:
                word, pos = plan[e]
                out.append(
                    f"{i3}const float f{j} = __fadd_rn(__uint_as_float(lpcc_gm_lop3("
                    f"{word}, 0x{mask << pos:x}u, 0x{_f32_magic(pos):08x}u)), -k{pos});"
                )
        out.append(f"{i3}#pragma unroll")
        out.append(f"{i3}for (int i = 0; i < {mt}; ++i) {{")
        if vec:
            out.append(
                f"{i3}  const float4* xp = reinterpret_cast<const float4*>("
                f"xr[i] + c * {CHUNK} + {8 * sb});"
            )
            for h in range(2):
                kk = f"c * {CHUNK} + {8 * sb + 4 * h}"
                xv = f"(({kk}) < {k} ? xp[{h}] : zero4)" if partial else f"xp[{h}]"
                out.append(f"{i3}  const float4 x{h} = {xv};")
            xs = [f"x{j // 4}.{'xyzw'[j % 4]}" for j in range(8)]
        else:
            out.append(f"{i3}  const float* xp = xr[i] + c * {CHUNK} + {8 * sb};")
            xs = []
            for j in range(8):
                kk = f"c * {CHUNK} + {8 * sb + j}"
                xs.append(f"(({kk}) < {k} ? xp[{j}] : 0.0f)" if partial else f"xp[{j}]")
        for j in range(8):
            out.append(f"{i3}  pp[i] = fmaf({xs[j]}, f{j}, pp[i]);")
        out.append(f"{i3}}}")
        out.append(f"{i2}}}")
    if vec and partial:
        out.insert(0, f"{ind}const float4 zero4 = make_float4(0.0f, 0.0f, 0.0f, 0.0f);")
    out.append(f"{i2}const float s = Sn[g];")
    out.append(f"{i2}#pragma unroll")
    out.append(f"{i2}for (int i = 0; i < {mt}; ++i) {{")
    sc = f"s * A[(m0 + i) * {gn}LL + g]" if p.a is not None else "s"
    out.append(f"{i2}  acc[i] = fmaf({sc}, pp[i], acc[i]);")
    out.append(f"{i2}}}")
    out.append(f"{ind}}}")
    out.append(f"{ind}#pragma unroll")
    out.append(f"{ind}for (int i = 0; i < {mt}; ++i) {{")
    out.append(f"{ind}  #pragma unroll")
    out.append(f"{ind}  for (int off = 16; off > 0; off >>= 1)")
    out.append(f"{ind}    acc[i] += __shfl_xor_sync(0xffffffffu, acc[i], off);")
    out.append(f"{ind}}}")
    out.append(f"{ind}if (lane == 0) {{")
    for i in range(mt):
        out.append(f"{ind}  {{")
        out.append(f"{ind}    const long long row = m0 + {i};")
        st = _store_lines(p, f"acc[{i}]", used, ind + "    ", f"e{mt}_{i}")
        if st is None:
            return None
        out += st
        out.append(f"{ind}  }}")
    out.append(f"{ind}}}")
    del cm
    return out


def _int_tile(p: _Prob, mt: int, used: list[str], cm: str) -> list[str] | None:
    """The int8-x body for a tile of `mt` rows: exact P per group, then the
    interpreter's f64 epilogue in NumPy's pairwise order."""
    k, g, bits = p.k, p.g, p.wdt.bits
    ch, gn = -(-k // CHUNK), -(-k // g)
    cpg = g // CHUNK
    signed = isinstance(p.wdt, IntType) and p.wdt.signed
    if bits < 8:
        flip, corr = "", -_bias(p.wdt)
    else:
        flip, corr = " ^ 0x80808080u", (0 if signed else 128)
    ind = "    "
    out = [f"{ind}#pragma unroll 1"]
    out.append(f"{ind}for (int g = lane; g < {gn}; g += 32) {{")
    i2 = ind + "  "
    out.append(f"{i2}int pa[{mt}], sx[{mt}];")
    out.append(f"{i2}#pragma unroll")
    out.append(f"{i2}for (int i = 0; i < {mt}; ++i) {{ pa[i] = 0; sx[i] = 0; }}")
    out.append(f"{i2}#pragma unroll 1")
    out.append(f"{i2}for (int cl = 0; cl < {cpg}; ++cl) {{")
    i3 = i2 + "  "
    out.append(f"{i3}const int c = g * {cpg} + cl;")
    out.append(f"{i3}if (c >= {ch}) break;")
    out.append(
        f"{i3}const unsigned* __restrict__ wp = W + ((long long)n * {ch} + c) * {bits};"
    )
    out += [i3 + s for s in _loads(bits)]
    for t in range(CHUNK // 4):
        us = [code_expr(bits, 4 * t + j) for j in range(4)]
        pack = f"({us[0]} | ({us[1]} << 8) | ({us[2]} << 16) | ({us[3]} << 24))"
        out.append(f"{i3}const int q{t} = (int)({pack}{flip});")
    partial = k % CHUNK != 0
    out.append(f"{i3}#pragma unroll")
    out.append(f"{i3}for (int i = 0; i < {mt}; ++i) {{")
    out.append(
        f"{i3}  const int* xq = reinterpret_cast<const int*>(X + (m0 + i) * {k}LL"
        f" + c * {CHUNK});"
    )
    for t in range(CHUNK // 4):
        xv = f"xq[{t}]"
        if partial:
            xv = f"(c * {CHUNK} + {4 * t} < {k} ? xq[{t}] : 0)"
        out.append(f"{i3}  {{ const int xw = {xv};")
        out.append(f"{i3}    pa[i] = __dp4a(xw, q{t}, pa[i]);")
        if corr:
            out.append(f"{i3}    sx[i] = __dp4a(xw, 0x01010101, sx[i]);")
        out.append(f"{i3}  }}")
    out.append(f"{i3}}}")
    out.append(f"{i2}}}")
    out.append(f"{i2}#pragma unroll")
    out.append(f"{i2}for (int i = 0; i < {mt}; ++i)")
    fix = f" + ({corr}) * sx[i]" if corr else ""
    out.append(f"{i2}  Ps[warp][i][g] = pa[i]{fix};")
    out.append(f"{ind}}}")
    out.append(f"{ind}__syncwarp();")
    for i in range(mt):
        out.append(f"{ind}if (lane == {i}) {{")
        i2 = ind + "  "
        out.append(f"{i2}const long long row = m0 + {i};")
        lines: list[str] = []
        counter = itertools.count()

        def fresh(s: str, _c: itertools.count = counter, _i: int = i) -> str:
            return f"{s}{_i}_{next(_c)}"

        def term(gi: str, _i: int = i) -> str:
            pv = f"(double)Ps[warp][{_i}][{gi}]"
            if p.z is not None:
                pv = (
                    f"({pv} - (double)Z[n * {gn}LL + {gi}] * "
                    f"(double)T[row * {gn}LL + {gi}])"
                )
            v = f"lpcc_gm_dmul({pv}, (double)S[n * {gn}LL + {gi}])"
            if p.a is not None:
                v = f"lpcc_gm_dmul({v}, (double)A[row * {gn}LL + {gi}])"
            return v

        total = pairwise_c(gn, term, "double", _dadd, lines, fresh)
        out += [i2 + s for s in lines]
        out.append(f"{i2}const float yv = (float){total};")
        st = _store_lines(p, "yv", used, i2, f"e{mt}_{i}")
        if st is None:
            return None
        out += st
        out.append(f"{ind}}}")
    del cm
    return out


def _operand_ptrs(req: CudaRequest, p: _Prob, scale: str) -> list[str]:
    """Declarations of X, the scale (named `scale`) and, where present, Z and
    its sums T, and the act_scale A (everything but the weight W)."""
    out = [
        f"const {ctype(p.xdt)}* __restrict__ X = in{p.x};",
        f"const float* __restrict__ {scale} = in{p.s};",
    ]
    if p.z is not None:
        out.append(f"const {ctype(p.zdt)}* __restrict__ Z = in{p.z};")
        out.append(f"const {ctype(elem(req.args[p.t]))}* __restrict__ T = in{p.t};")
    if p.a is not None:
        out.append(f"const float* __restrict__ A = in{p.a};")
    return out


def _fused_kernel(req: CudaRequest, p: _Prob) -> CudaKernel | None:
    used: list[str] = []
    rows = dim_prod(p.lead)
    cm = c_dim(rows, used)
    xint = isinstance(p.xdt, IntType)
    tile = _int_tile if xint else _float_tile
    variants = []
    for mt in range(MT, 0, -1):
        body = tile(p, mt, used, cm)
        if body is None:
            return None
        cond = f"rem >= {MT}" if mt == MT else f"rem == {mt}"
        variants.append((cond, body))
    sig = signature(req, used, repacked=(p.w,))
    gn = -(-p.k // p.g)
    head = [
        "  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;",
        f"  const long long n = (long long)blockIdx.x * {WARPS} + warp;",
        f"  const long long m0 = (long long)blockIdx.y * {MT};",
        f"  const long long rem = {cm} - m0;",
        "  const unsigned* __restrict__ W ="
        f" reinterpret_cast<const unsigned*>(in{p.w});",
        *("  " + line for line in _operand_ptrs(req, p, "S")),
    ]
    pre = ""
    if isinstance(p.wdt, FloatType) and float_decode(p.wdt, "c") is None:
        vals = p.wdt.values(np.arange(1 << p.wdt.bits, dtype=np.uint64))
        tab = ", ".join(_float_lit(v) for v in vals.astype(np.float32))
        pre = (
            f"  __shared__ float lut[{len(vals)}];\n"
            f"  {{ const float tab[{len(vals)}] = {{{tab}}};\n"
            f"    for (int i = threadIdx.x; i < {len(vals)}; i += blockDim.x) "
            "lut[i] = tab[i]; }\n"
            "  __syncthreads();\n"
        )
    if xint:
        pre += f"  __shared__ int Ps[{WARPS}][{MT}][{gn}];\n"
    head.append(f"  if (n >= {p.n} || rem <= 0) return;")
    branches = []
    for j, (cond, body) in enumerate(variants):
        kw = "if" if j == 0 else "} else if"
        branches.append(f"  {kw} ({cond}) {{")
        branches += body
    branches.append("  }")
    xs = "int8 x, dp4a, f64 epilogue" if xint else "f32 x"
    what = f"{p.wdt.name} g{p.g}{' zero' if p.z is not None else ''}"
    src = (
        _HELPERS
        + f"\n/* group GEMM {what}, {xs}: K={p.k}, N={p.n}; warp per column */\n"
        + f'extern "C" __global__ void __launch_bounds__({32 * WARPS}, {MIN_BLOCKS}) '
        + f"{req.entry}({sig}) {{\n"
        + pre
        + "\n".join(head + branches)
        + "\n}\n"
    )
    grid = (dim_ceil_div(p.n, WARPS), dim_ceil_div(rows, MT), 1)
    signed = isinstance(p.wdt, IntType) and p.wdt.signed
    layout = f"cuda-gemv-chunks[{p.wdt.name}{'s' if signed else ''} k{p.k}]"
    note = f"cuda simt group gemm {what} {xs}"
    if p.tail.ops:
        note += " + epilogue"
    return CudaKernel(
        src,
        [Launch(req.entry, grid, (32 * WARPS, 1, 1))],
        symbols=tuple(used),
        repack={p.w: Repack(layout, _repack_weight(p.wdt, p.k))},
        errors=dict(scalar.ERRORS) if p.tail.ops else {},
        note=note,
    )


@register(FusedOp, kind="epilogue")
def gen_fused_group_matmul(req: CudaRequest) -> CudaKernel | None:
    """group_matmul + group_dequant_reduce (+ elementwise tail) in one kernel."""
    p = _problem(req)
    if p is None:
        return None
    return _fused_kernel(req, p)


@register(FusedOp, kind="epilogue")
def gen_fused_group_matmul_any(req: CudaRequest) -> CudaKernel | None:
    """The same region for what the fast kernels decline (groups of 8 or 16,
    K not a multiple of 4, operands that are not constants): one thread per
    output, reading the value-domain operands as they are (no repack). The
    group sums run in order (f32, or exact int64 for int8 x), the epilogue in
    f64 with the interpreter's formula, so only the f32 group sums'
    association differs from the interpreter's."""
    p = _problem(req, generic=True)
    if p is None:
        return None
    op = req.op
    red = next(o for o in op.body.block.ops if isinstance(o, lowp.GroupDequantReduceOp))
    used: list[str] = []
    rows = c_dim(dim_prod(p.lead), used)
    n, k, g = p.n, p.k, p.g
    gn = -(-k // g)
    ys = shape(red.result)
    idx = [f"i{d}" for d in range(len(ys))]
    xint = isinstance(p.xdt, IntType)
    acc_t, zero_p = ("long long", "0") if xint else ("float", "0.0f")
    prod = (
        "(long long)X[r * K + kk] * (long long)W[n * K + kk]"
        if xint
        else "__fmul_rn(X[r * K + kk], (float)W[n * K + kk])"
    )
    step = "p += " + prod + ";" if xint else f"p = __fadd_rn(p, {prod});"
    body = [
        f"const long long K = {k}LL, N = {n}LL, G = {gn}LL;",
        f"const long long total = {rows} * N;",
        "for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x;"
        " t < total; t += (long long)gridDim.x * blockDim.x) {",
        "  const long long r = t / N, n = t % N;",
        "  double acc = 0.0;",
        "  for (long long gi = 0; gi < G; ++gi) {",
        f"    const long long k1 = lpcc_min(gi * {g}LL + {g}LL, K);",
        f"    {acc_t} p = {zero_p};",
        f"    for (long long kk = gi * {g}LL; kk < k1; ++kk) {step}",
        "    double d = (double)p;",
    ]
    if p.z is not None:
        body.append(
            "    d = lpcc_gm_dadd(d, -lpcc_gm_dmul((double)Z[n * G + gi],"
            " (double)T[r * G + gi]));"
        )
    body.append("    d = lpcc_gm_dmul(d, (double)SC[n * G + gi]);")
    if p.a is not None:
        body.append("    d = lpcc_gm_dmul(d, (double)A[r * G + gi]);")
    body += ["    acc = lpcc_gm_dadd(acc, d);", "  }", "  const float y = (float)acc;"]
    body += ["  " + line for line in scalar.unravel("t", ys, idx, used)]
    tail = emit_tail(p.tail, scalar.CExpr("y", scalar.F32_T), ys, idx, used)
    if tail is None:
        return None
    lines, final = tail
    body += ["  " + line for line in lines]
    body += [f"  out0[t] = {final.text};", "}"]
    ptrs = [
        f"const {ctype(p.wdt)}* __restrict__ W = in{p.w};",
        *_operand_ptrs(req, p, "SC"),
    ]
    sig = signature(req, used)
    source = (
        _HELPERS
        + f'extern "C" __global__ void __launch_bounds__(256) {req.entry}({sig}) {{\n'
        + "\n".join("  " + line for line in ptrs + body)
        + "\n}\n"
    )
    total = dim_prod([*p.lead, n])
    return CudaKernel(
        source,
        [Launch(req.entry, grid_1d(total, 256), (256, 1, 1))],  # grid-stride
        tuple(used),
        errors=dict(scalar.ERRORS),
        note=f"group GEMM, generic (thread per output, g{g})",
    )


# -- lp.group_sum ----------------------------------------------------------------------


def _group_sum_lines(
    op: Operation, xname: str, k: int, g: int, xdt: DType, lines: list[str], tag: str
) -> str:
    """Statements summing group `gi` of row pointer `xname`; returns the value."""
    counter = itertools.count()

    def fresh(s: str) -> str:
        return f"{tag}{s}{next(counter)}"

    del op
    if isinstance(xdt, IntType):
        res = fresh("gs")
        lines.append(f"long long {res} = 0;")
        lines.append(
            f"for (long long kk = gi * {g}LL;"
            f" kk < lpcc_min(gi * {g}LL + {g}, {k}); ++kk)"
        )
        lines.append(f"  {res} += (long long){xname}[kk];")
        return f"(lp_i32){res}"
    gn = -(-k // g)
    last = k - (gn - 1) * g
    if last == g:
        return pairwise_c(
            g, lambda i: f"{xname}[gi * {g}LL + {i}]", "float", _fadd, lines, fresh
        )
    # a short last group: its own straight-line sum (zeros still added)
    full = pairwise_c(
        g, lambda i: f"{xname}[gi * {g}LL + {i}]", "float", _fadd, lines, fresh
    )
    short_lines: list[str] = []
    short = pairwise_c(
        g,
        lambda i: f"{xname}[{(gn - 1) * g}LL + {i}]",
        "float",
        _fadd,
        short_lines,
        fresh,
        valid=last,
    )
    res = fresh("gs")
    lines.insert(0, f"float {res};")
    lines.insert(1, f"if (gi < {gn - 1}) {{")
    lines.append(f"  {res} = {full};")
    lines.append("} else {")
    lines += short_lines
    lines.append(f"  {res} = {short};")
    lines.append("}")
    return res


@register(lowp.GroupSumOp)
def gen_group_sum(req: CudaRequest) -> CudaKernel | None:
    """S[..., g] = sum of group g: one thread per (row, group), NumPy's order."""
    op = req.op
    assert isinstance(op, lowp.GroupSumOp)
    xs = shape(op.input)
    k, g = xs[-1], op.group.data
    xdt = elem(op.input)
    if not isinstance(k, int) or k < 1:
        return None
    if isinstance(xdt, IntType):
        if xdt.value_dtype.itemsize > 4 or xdt.bits == 1:
            return None
    elif xdt.value_dtype != _F32:
        return None
    if g > 4096:
        return None
    used: list[str] = []
    rows = dim_prod(xs[:-1])
    gn = -(-k // g)
    total = dim_prod([rows, gn])
    ct = c_dim(total, used)
    lines: list[str] = []
    val = _group_sum_lines(op, "xr", k, g, xdt, lines, "s")
    body = "\n".join("    " + s for s in lines)
    sig = signature(req, used)
    src = f"""
/* group_sum g{g} over K={k}: one thread per (row, group), NumPy's pairwise order */
extern "C" __global__ void __launch_bounds__(256) {req.entry}({sig}) {{
  for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < {ct};
       t += (long long)gridDim.x * blockDim.x) {{
    const long long r = t / {gn}LL, gi = t % {gn}LL;
    const {ctype(xdt)}* __restrict__ xr = in0 + r * {k}LL;
{body}
    out0[t] = {val};
  }}
}}
"""
    grid = (
        f"Min(CeilDiv({total}, 256), 65535)"
        if not isinstance(total, int)
        else max(0, min(-(-total // 256), 65535)),
        1,
        1,
    )
    return CudaKernel(
        src,
        [Launch(req.entry, grid, (256, 1, 1))],
        symbols=tuple(used),
        note=f"cuda group_sum g{g}",
    )


_ = (Sequence, lp)
