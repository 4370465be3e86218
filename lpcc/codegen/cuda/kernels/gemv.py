"""CUDA C for low-bit GEMV: y[m, n] = sum_k x[m, k] * dequant(W[n, k]), M = 1..8.

Why a generator: every (bits, signed, group, zero point, activation type, K,
N) gets straight-line decode code with its masks, shifts and magic constants
folded in, so the inner loop has no width-dependent branches.

Weight layout (`repack`, one layout for every width 1..8): each column n's K
codes are cut into chunks of 32 consecutive k; a chunk is `bits` uint32 words
(32 * bits bits: a multiple of 32 for odd widths too, so no code straddles a
thread's words and no lane reads another lane's bits). Inside a chunk the even
codes (k = 0, 2, .., 30) form a dense LSB-first bit stream in the LOW 16-bit
halves of the words (word j's low half holds stream bits 16j..16j+15) and the
odd codes (k = 1, 3, .., 31) the same stream in the HIGH halves. So pair p =
(code 2p, code 2p+1) sits at the same bit offset in both halves, and one
shift + one `lop3` ((a & mask) | 0x64006400) turns it into the half2
(1024 + u_2p, 1024 + u_2p+1): fp16 has ULP 1 in [1024, 2048), so OR-ing an
integer u < 1024 into the mantissa gives exactly 1024 + u (the BitBLAS/Tilus
magic number). For int4 this is BitBLAS's LOP3Permutate order (element e at
bit (e % 2) * 16 + (e // 2) * 4). A pair whose bits cross a 16-bit half
(widths 3, 5, 6, 7) takes a second shift and lop3 from the next word.
Signed codes are stored offset-binary (code XOR 2**(bits-1)), so signed and
unsigned share the decode and differ only in the constant subtracted.
Chunk c of column n is words [(n * K/32 + c) * bits, +bits): consecutive lanes
read consecutive chunks, so a warp's loads are coalesced; widths 4 and 8 load
128-bit words, 2 and 6 64-bit words, the rest 32-bit words.

Decode of a pair at in-half bit offset o: when o + bits <= 10 no shift is
needed: mask in place to get 1024 + u * 2**o (exact) and one `hfma2` by
2**-o minus (1024 * 2**-o + zero) gives u - zero; else shift by 8 (shared by
all pairs in the upper byte, as in BitBLAS) or by o, then `hsub2`. So int4 is
the two-instructions-per-two-weights LOP3 path (lop3 + hsub2/hfma2, one `shf`
per 8 weights). Every step is exact: the half2 holds the integer u - z.

The kernel: one warp per output column (4 warps a block), split-K across the
warp's lanes (lane l takes chunks l, l+32, ..), the decoded integers are
widened to f32 and multiplied with f32-widened activations into per-chunk f32
partial sums, scaled once per chunk by the group scale (groups are whole
chunks) into f32 accumulators, reduced across the warp with `__shfl_xor_sync`,
rounded once to f16/bf16. One `extern "C"` kernel per M = 1..8 (`_m<M>`) in
the same source.

`LPCC_EMU` (the host emulator compiles the source as C++): the inline-PTX
`lop3` becomes `(a & b) | c` and the fp16 steps are done in float with
portable bit conversions; the values are identical (all steps are exact
except the final rounding, which is RNE in both).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

import lpcc
from lpcc.codegen.cuda.kernel import PRELUDE
from lpcc.errors import CompileError

__all__ = [
    "CHUNK",
    "MAGIC",
    "WARPS",
    "PairStep",
    "gemv_source",
    "pair_plan",
    "repack",
    "unpack",
    "zero_codes",
]

CHUNK = 32  # weights one lane decodes per loop iteration
WARPS = 4  # warps (= output columns) per block
MAX_M = 8


def _f16(x: float) -> int:
    """fp16 bit pattern of an exactly representable value."""
    h = np.float16(x)
    if float(h) != x:
        raise AssertionError(f"{x} is not exact in fp16")
    return int(np.array(h).view(np.uint16))


def _h2(x: float) -> int:
    return _f16(x) * 0x10001


def _bias(bits: int, signed: bool) -> int:
    return 1 << (bits - 1) if signed else 0


def _check(bits: int, signed: bool, group: int, act: str, k: int, n: int) -> None:
    where = "lpcc cuda gemv_source"
    if not 1 <= bits <= 8:
        raise CompileError(f"{where}: bits={bits}; the GEMV takes widths 1..8")
    if act not in ("f16", "bf16"):
        raise CompileError(f"{where}: act={act!r}; use 'f16' or 'bf16'")
    if k <= 0 or k % CHUNK:
        raise CompileError(
            f"{where}: k={k} must be a positive multiple of {CHUNK} (one chunk "
            "per lane iteration); pad K with zero weights"
        )
    if group <= 0 or group % CHUNK or k % group:
        raise CompileError(
            f"{where}: group={group} must be a multiple of {CHUNK} that divides "
            f"k={k}; use a group size like 32, 64 or 128"
        )
    if n <= 0:
        raise CompileError(f"{where}: n={n} must be positive")
    del signed


# -- the weight layout ---------------------------------------------------------


def repack(codes: np.ndarray, bits: int, signed: bool) -> np.ndarray:
    """Codes [N, K] (two's-complement bit patterns in [0, 2**bits)) -> uint32
    words [N, K // 32 * bits] in the layout of the module docstring."""
    c = np.asarray(codes)
    if c.ndim != 2 or c.shape[1] % CHUNK:
        raise CompileError(
            f"lpcc cuda gemv repack: codes of shape {c.shape}; need [N, K] with "
            f"K a multiple of {CHUNK}"
        )
    if c.size and (c.min() < 0 or c.max() >= 1 << bits):
        raise CompileError(
            f"lpcc cuda gemv repack: codes outside [0, {1 << bits}) for "
            f"{bits}-bit weights; pass dtype.encode(...) codes"
        )
    n, k = c.shape
    u = c.astype(np.int64) ^ _bias(bits, signed)  # offset-binary for signed
    pairs = u.reshape(n, k // CHUNK, CHUNK // 2, 2)
    ut = lpcc.dtype(f"uint{bits}")
    halves = []
    for parity in (0, 1):
        stream = pairs[..., parity].reshape(-1, CHUNK // 2)
        # 16 codes of `bits` bits = 2 * bits bytes = `bits` little-endian u16
        packed = np.stack([ut.pack(row) for row in stream]) if len(stream) else None
        if packed is None:
            return np.zeros((n, 0), np.uint32)
        halves.append(packed.view("<u2").astype(np.uint32))
    words = halves[0] | (halves[1] << 16)
    return words.reshape(n, k // CHUNK * bits)


def unpack(words: np.ndarray, bits: int, signed: bool, k: int) -> np.ndarray:
    """Inverse of `repack`: words [N, K // 32 * bits] -> codes [N, K]."""
    w = np.asarray(words, dtype=np.uint32)
    n = w.shape[0]
    chunks = w.reshape(-1, bits)
    ut = lpcc.dtype(f"uint{bits}")
    out = np.empty((chunks.shape[0], CHUNK // 2, 2), np.int64)
    for parity in (0, 1):
        half = ((chunks >> (16 * parity)) & 0xFFFF).astype("<u2")
        for r in range(chunks.shape[0]):
            out[r, :, parity] = ut.unpack(half[r].view(np.uint8), CHUNK // 2)
    return (out.reshape(n, k) ^ _bias(bits, signed)).astype(np.int64)


def zero_codes(zero: np.ndarray, bits: int, signed: bool) -> np.ndarray:
    """Zero points (codes of the weight type, [N, K // G]) -> the kernel's Z
    buffer: uint8 offset-binary codes (what is subtracted from the stored u)."""
    z = np.asarray(zero).astype(np.int64) ^ _bias(bits, signed)
    return z.astype(np.uint8)


# -- code generation -----------------------------------------------------------


MAGIC = 0x64006400  # half2 (1024.0, 1024.0)


@dataclass(frozen=True)
class PairStep:
    """How pair p (codes 2p, 2p+1 of a chunk) is decoded.

    In place: h = ((w[q] >> sh) & mask) | MAGIC, the half2 1024 + u * 2**rel.
    Across halves (straddle, sh2 > 0): h = ((w[q] >> sh) & mask) |
    ((w[q+1] << sh2) & mask2) | MAGIC. Then u - z = h * 2**-rel - (1024 *
    2**-rel + z), one hfma2.
    """

    q: int
    sh: int
    mask: int
    rel: int
    sh2: int = 0
    mask2: int = 0


def pair_plan(bits: int) -> list[PairStep]:
    """The decode steps of the 16 pairs of a chunk of `bits`-bit codes."""
    plan = []
    for p in range(CHUNK // 2):
        q, o = divmod(p * bits, 16)
        if o + bits <= 16:
            if o + bits <= 10:  # 1024 + u * 2**o stays exact: no shift
                sh, rel = 0, o
            elif o >= 8:  # one shift by 8 serves the upper byte
                sh, rel = 8, o - 8
            else:
                sh, rel = o, 0
            mask = (((1 << bits) - 1) << rel) * 0x10001
            plan.append(PairStep(q, sh, mask, rel))
        else:
            lo = 16 - o
            m1 = ((1 << lo) - 1) * 0x10001
            m2 = (((1 << bits) - 1) ^ ((1 << lo) - 1)) * 0x10001
            plan.append(PairStep(q, o, m1, 0, lo, m2))
    return plan


def _pair_code(st: PairStep) -> str:
    """C expression of a pair's lop3 word (the half2 bits of 1024 + u*2**rel)."""
    src = f"w{st.q}" if st.sh == 0 else f"(w{st.q} >> {st.sh})"
    tail = f"0x{MAGIC:08x}u"
    if st.sh2:
        tail = f"lpcc_lop3(w{st.q + 1} << {st.sh2}, 0x{st.mask2:08x}u, {tail})"
    return f"lpcc_lop3({src}, 0x{st.mask:08x}u, {tail})"


_PRELUDE = (
    PRELUDE
    + r"""
#ifdef LPCC_EMU
#include <string.h>
#endif

#ifndef LPCC_GEMV_HELPERS
#define LPCC_GEMV_HELPERS
/* (a & b) | c in one instruction. */
__device__ __forceinline__ lp_u32 lpcc_lop3(lp_u32 a, lp_u32 b, lp_u32 c) {
#ifdef LPCC_EMU
  return (a & b) | c;
#else
  lp_u32 d;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
  return d;
#endif
}

#ifdef LPCC_EMU
__device__ __forceinline__ float lpcc_u2f(lp_u32 u) {
  float f; memcpy(&f, &u, 4); return f;
}
__device__ __forceinline__ lp_u32 lpcc_f2u(float f) {
  lp_u32 u; memcpy(&u, &f, 4); return u;
}
/* fp16 bits -> float (normal, subnormal, inf/nan). */
__device__ __forceinline__ float lpcc_h2f(lp_u32 h) {
  lp_u32 s = (h & 0x8000u) << 16, e = (h >> 10) & 0x1F, m = h & 0x3FF;
  if (e == 0x1F) return lpcc_u2f(s | 0x7F800000u | (m << 13));
  if (e == 0) { float v = (float)m * (1.0f / 16777216.0f); return s ? -v : v; }
  return lpcc_u2f(s | ((e + 112) << 23) | (m << 13));
}
/* float -> fp16 bits, round to nearest even. */
__device__ __forceinline__ lp_u32 lpcc_f2h(float f) {
  lp_u32 u = lpcc_f2u(f), s = (u >> 16) & 0x8000u, a = u & 0x7FFFFFFFu;
  if (a >= 0x7F800000u) return s | 0x7C00u | (a > 0x7F800000u ? 0x200u : 0u);
  if (a >= 0x477FF000u) return s | 0x7C00u; /* rounds past 65504 */
  if (a < 0x38800000u) { /* fp16 subnormal or zero: units of 2^-24 */
    float v = lpcc_u2f(a) * 16777216.0f;
    lp_u32 r = (lp_u32)v; float fr = v - (float)r;
    if (fr > 0.5f || (fr == 0.5f && (r & 1u))) r++;
    return s | r;
  }
  lp_u32 r = a - 0x38000000u; /* rebias exponent 127 -> 15 */
  lp_u32 lsb = (r >> 13) & 1u;
  r += 0xFFFu + lsb;
  return s | (r >> 13);
}
__device__ __forceinline__ lp_u32 lpcc_f2bf(float f) {
  lp_u32 u = lpcc_f2u(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (u >> 16) | 0x40u;
  return (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
}
/* half2 (h * c + d), all exact small integers / powers of two, as float2. */
__device__ __forceinline__ float2 lpcc_dq(lp_u32 h, lp_u32 c, lp_u32 d) {
  return make_float2(
      lpcc_h2f(h & 0xFFFF) * lpcc_h2f(c & 0xFFFF) + lpcc_h2f(d & 0xFFFF),
      lpcc_h2f(h >> 16) * lpcc_h2f(c >> 16) + lpcc_h2f(d >> 16));
}
/* half2 (a - b) bits; exact for the small integers it is used on. */
__device__ __forceinline__ lp_u32 lpcc_hsub2(lp_u32 a, lp_u32 b) {
  return lpcc_f2h(lpcc_h2f(a & 0xFFFF) - lpcc_h2f(b & 0xFFFF)) |
         (lpcc_f2h(lpcc_h2f(a >> 16) - lpcc_h2f(b >> 16)) << 16);
}
__device__ __forceinline__ float lpcc_scale(lp_u16 s) { return lpcc_h2f(s); }
__device__ __forceinline__ float2 lpcc_x_f16(lp_u32 w) {
  return make_float2(lpcc_h2f(w & 0xFFFF), lpcc_h2f(w >> 16));
}
__device__ __forceinline__ float2 lpcc_x_bf16(lp_u32 w) {
  return make_float2(lpcc_u2f(w << 16), lpcc_u2f(w & 0xFFFF0000u));
}
__device__ __forceinline__ lp_u16 lpcc_y_f16(float v) {
  return (lp_u16)lpcc_f2h(v);
}
__device__ __forceinline__ lp_u16 lpcc_y_bf16(float v) {
  return (lp_u16)lpcc_f2bf(v);
}
#else
__device__ __forceinline__ __half2 lpcc_as_h2(lp_u32 u) {
  return *reinterpret_cast<__half2*>(&u);
}
__device__ __forceinline__ float2 lpcc_dq(lp_u32 h, lp_u32 c, lp_u32 d) {
  return __half22float2(__hfma2(lpcc_as_h2(h), lpcc_as_h2(c), lpcc_as_h2(d)));
}
__device__ __forceinline__ lp_u32 lpcc_hsub2(lp_u32 a, lp_u32 b) {
  __half2 r = __hsub2(lpcc_as_h2(a), lpcc_as_h2(b));
  return *reinterpret_cast<lp_u32*>(&r);
}
__device__ __forceinline__ float lpcc_scale(lp_u16 s) {
  return __half2float(__ushort_as_half(s));
}
__device__ __forceinline__ float2 lpcc_x_f16(lp_u32 w) {
  return __half22float2(lpcc_as_h2(w));
}
__device__ __forceinline__ float2 lpcc_x_bf16(lp_u32 w) {
  return make_float2(__uint_as_float(w << 16), __uint_as_float(w & 0xFFFF0000u));
}
__device__ __forceinline__ lp_u16 lpcc_y_f16(float v) {
  return __half_as_ushort(__float2half_rn(v));
}
__device__ __forceinline__ lp_u16 lpcc_y_bf16(float v) {
  return __bfloat16_as_ushort(__float2bfloat16_rn(v));
}
#endif
#endif /* LPCC_GEMV_HELPERS */
"""
)


def _loads(bits: int) -> list[str]:
    """Statements loading the lane's `bits` words w0.. from `wp`."""
    if bits in (4, 8):
        out = []
        for v in range(bits // 4):
            out.append(f"const uint4 v{v} = reinterpret_cast<const uint4*>(wp)[{v}];")
            out += [f"const lp_u32 w{4 * v + j} = v{v}.{'xyzw'[j]};" for j in range(4)]
        return out
    if bits in (2, 6):
        out = []
        for v in range(bits // 2):
            out.append(f"const uint2 v{v} = reinterpret_cast<const uint2*>(wp)[{v}];")
            out += [f"const lp_u32 w{2 * v + j} = v{v}.{'xy'[j]};" for j in range(2)]
        return out
    return [f"const lp_u32 w{j} = wp[{j}];" for j in range(bits)]


def gemv_source(
    bits: int,
    signed: bool,
    group: int,
    zero_point: bool,
    act: str,
    k: int,
    n: int,
    ms: Sequence[int] = tuple(range(1, MAX_M + 1)),
) -> tuple[str, str, dict]:
    """CUDA C of the GEMV for one weight format and shape.

    Returns (source, kernel_name, launch). The source defines one
    `extern "C"` kernel per M = 1..8, named `f"{kernel_name}_m{M}"`, each
    taking (const uint32 *W [repack], const uint16 *S [N, K/G fp16 bits],
    const uint8 *Z [N, K/G, `zero_codes`; unused without zero points],
    const uint16 *X [M, K act bits], uint16 *Y [M, N act bits]). `launch`
    gives grid/block and the per-M kernel names. `ms` limits which M get a
    kernel (tests compile fewer to stay fast).
    """
    _check(bits, signed, group, act, k, n)
    ng = k // group
    chunks = k // CHUNK
    base = (
        f"lpcc_gemv_{'i' if signed else 'u'}{bits}_g{group}"
        f"{'_z' if zero_point else ''}_{act}_k{k}_n{n}"
    )
    plan = pair_plan(bits)
    rels = sorted({st.rel for st in plan})
    b = _bias(bits, signed)
    body = []
    ind = "    "
    # per-chunk constants: d_rel = -(1024 * 2**-rel + z) as half2 bits
    if zero_point:
        body.append(
            f"{ind}const lp_u32 mz = (0x6400u + (lp_u32)Z[n * {ng} + g]) * 0x10001u;"
        )
        for rel in rels:
            body.append(
                f"{ind}const lp_u32 d{rel} = "
                f"lpcc_hsub2(0x{_h2(1024 - 1024 / 2**rel):08x}u, mz);"
            )
    else:
        for rel in rels:
            body.append(
                f"{ind}const lp_u32 d{rel} = 0x{_h2(-(1024 / 2**rel + b)):08x}u;"
            )
    body += [f"{ind}{s}" for s in _loads(bits)]
    for sb in range(CHUNK // 8):
        body.append(f"{ind}{{")
        for j in range(4):
            i = 4 * sb + j
            expr, rel = _pair_code(plan[i]), plan[i].rel
            body.append(
                f"{ind}  const float2 f{j} = "
                f"lpcc_dq({expr}, 0x{_h2(2.0**-rel):08x}u, d{rel});"
            )
        body.append(f"{ind}  #pragma unroll")
        body.append(f"{ind}  for (int m = 0; m < M; ++m) {{")
        body.append(
            f"{ind}    const uint4 xv = *reinterpret_cast<const uint4*>("
            f"X + m * {k} + c * {CHUNK} + {8 * sb});"
        )
        for j in range(4):
            comp = "xyzw"[j]
            body.append(f"{ind}    const float2 x{j} = lpcc_x_{act}(xv.{comp});")
            body.append(f"{ind}    p0[m] = fmaf(x{j}.x, f{j}.x, p0[m]);")
            body.append(f"{ind}    p1[m] = fmaf(x{j}.y, f{j}.y, p1[m]);")
        body.append(f"{ind}  }}")
        body.append(f"{ind}}}")
    body_text = "\n".join(body)
    wpc = bits  # words per chunk
    zp = " zero-point" if zero_point else ""
    what = f"W{bits}{'s' if signed else 'u'} group {group}{zp}, {act} act"
    src = f"""{_PRELUDE}
/* {base}: {what}, K={k}, N={n}. */
template <int M>
__device__ __forceinline__ void {base}_body(
    const lp_u32* __restrict__ W, const lp_u16* __restrict__ S,
    const lp_u8* __restrict__ Z, const lp_u16* __restrict__ X,
    lp_u16* __restrict__ Y) {{
  const int lane = threadIdx.x & 31;
  const int n = blockIdx.x * {WARPS} + (threadIdx.x >> 5);
  if (n >= {n}) return;
  float acc[M];
  #pragma unroll
  for (int m = 0; m < M; ++m) acc[m] = 0.0f;
  #pragma unroll 1
  for (int c = lane; c < {chunks}; c += 32) {{
    const int g = c / {group // CHUNK};
    const lp_u32* wp = W + ((size_t)n * {chunks} + c) * {wpc};
    float p0[M], p1[M];
    #pragma unroll
    for (int m = 0; m < M; ++m) {{ p0[m] = 0.0f; p1[m] = 0.0f; }}
{body_text}
    const float s = lpcc_scale(S[n * {ng} + g]);
    #pragma unroll
    for (int m = 0; m < M; ++m) acc[m] = fmaf(s, p0[m] + p1[m], acc[m]);
  }}
  #pragma unroll
  for (int m = 0; m < M; ++m) {{
    #pragma unroll
    for (int off = 16; off > 0; off >>= 1)
      acc[m] += __shfl_xor_sync(0xffffffffu, acc[m], off);
  }}
  if (lane == 0) {{
    #pragma unroll
    for (int m = 0; m < M; ++m) Y[m * {n} + n] = lpcc_y_{act}(acc[m]);
  }}
}}
"""
    names = {}
    if not ms or any(not 1 <= m <= MAX_M for m in ms):
        raise CompileError(
            f"lpcc cuda gemv_source: ms={tuple(ms)}; the GEMV handles M = 1..{MAX_M} "
            "(larger M goes to the tensor-core matmul)"
        )
    for m in sorted(set(ms)):
        name = f"{base}_m{m}"
        names[m] = name
        src += (
            # min 4 blocks/SM = a 128-register budget: with no minimum ptxas
            # aimed at 64 registers and spilled M = 8 (i5, i7 on sm_80)
            f'extern "C" __global__ void __launch_bounds__({32 * WARPS}, 4) '
            f"{name}(\n"
            "    const lp_u32* __restrict__ W, const lp_u16* __restrict__ S,\n"
            "    const lp_u8* __restrict__ Z, const lp_u16* __restrict__ X,\n"
            "    lp_u16* __restrict__ Y) {\n"
            f"  {base}_body<{m}>(W, S, Z, X, Y);\n"
            "}\n"
        )
    launch = {
        "grid": ((n + WARPS - 1) // WARPS, 1, 1),
        "block": (32 * WARPS, 1, 1),
        "shared_bytes": 0,
        "kernels": names,
        "params": ("W", "S", "Z", "X", "Y"),
        "weights_per_iteration": CHUNK,
        "words_per_chunk": wpc,
    }
    return src, base, launch
