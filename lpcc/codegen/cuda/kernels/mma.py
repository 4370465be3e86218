"""Tensor-core fragments: mma.sync / ldmatrix helpers as CUDA C, with emulation.

The PTX `mma.sync.aligned` instructions spread a warp-wide matrix product
over the 32 lanes' registers in fixed *fragment layouts*. They are Tilus
layouts (`lpcc.ir.layout`, worker = lane, local = element index of the
lane's registers, two f16 or four 8-bit elements per 32-bit register):

* m16n8k16 f16: A 16x16 `column_local(2,2).spatial(8,4).local(1,2)`,
  B 16x8 `local(2,1).column_spatial(4,8).local(2,1)`, C/D 16x8
  `local(2,1).spatial(8,4).local(1,2)` (f32 accumulators);
* m16n8k32 s8/u8: A 16x32 `column_local(2,2).spatial(8,4).local(1,4)`,
  B 32x8 `local(2,1).column_spatial(4,8).local(4,1)`, C/D as above (s32).

Everything a generator needs about those maps is derived here from the layouts
(the kernel's repack orders, the emulator's gather tables), so one definition
drives the GPU code, the host emulation and the tests (which compare the maps
with the PTX ISA's tables, written out by hand).

`HELPERS` is the CUDA C of the device functions:

* `lpcc_mma_m16n8k16_f16(float d[4], const unsigned a[4], const unsigned b[2])`
  (d += A B, accumulating), `lpcc_mma_m16n8k32_s8(int d[4], ...)` (s8 x s8)
  and `lpcc_mma_m16n8k32_s8u8` (s8 x u8): inline PTX on the GPU. Under
  `LPCC_EMU` (the host emulator cannot run PTX) each lane gathers the A rows
  and B columns of its four outputs from the other lanes' registers with
  `__shfl_sync` (one 32-bit shuffle per register pair it needs) and computes
  them: f16 products are exact in f32, and they are added to d[i] one at a
  time, k = 0..15 in order, rounding to nearest each time (the hardware's
  internal order and precision are unspecified; kernels are tested with
  bounds that hold for any order). The integer forms are exact.
* `lpcc_tc_ldsm_x4(unsigned r[4], const unsigned char* tile, int ld)`:
  `ldmatrix.sync.aligned.m8n8.x4.b16` of the 16x16 f16 (or 16x32 byte) tile
  at `tile` (row stride `ld` bytes): lane l supplies the address of row
  l % 16, byte column 16 * (l / 16), and register j of lane l receives
  matrix j's row l / 4, bytes 4 (l % 4)..+3. Emulated by computing the
  supplying lane's address (the address function is the same for every
  lane), so the emulation checks the addressing as well.
* `lpcc_tc_mma_tile_f16<MT, NT>(acc, a, b, xw)` and `lpcc_tc_mma_tile_s8<MT,
  NT, BU>`: the MT x NT mma.sync of one k-step of a warp tile. On the GPU a
  loop over the single-instruction helpers. Under `LPCC_EMU` every lane
  stores its fragments into the warp's exchange buffer `xw` (32 lanes x
  (4 MT + 2 NT) words), one `__syncwarp`, and computes its outputs from the
  gather tables (same sum order as the single helper), one more
  `__syncwarp`: two warp barriers per k-step instead of dozens of shuffles,
  which is what makes emulating whole GEMMs affordable.
* `lpcc_tc_lop3`, `lpcc_tc_hfma2`, `lpcc_tc_h2` (two floats to an f16x2,
  round to nearest even), `lpcc_tc_dmul`/`lpcc_tc_dadd` (uncontracted f64).
"""

from __future__ import annotations

import numpy as np

from lpcc.ir.layout import Layout, column_local, column_spatial, local, spatial

__all__ = [
    "A_F16",
    "A_S8",
    "B_F16",
    "B_S8",
    "C_ACC",
    "HELPERS",
    "gather_table",
    "lane_order",
]

A_F16: Layout = column_local(2, 2) * spatial(8, 4) * local(1, 2)
B_F16: Layout = local(2, 1) * column_spatial(4, 8) * local(2, 1)
C_ACC: Layout = local(2, 1) * spatial(8, 4) * local(1, 2)
A_S8: Layout = column_local(2, 2) * spatial(8, 4) * local(1, 4)
B_S8: Layout = local(2, 1) * column_spatial(4, 8) * local(4, 1)


def gather_table(layout: Layout) -> np.ndarray:
    """[rows, cols] uint8: lane * 16 + local index holding each element."""
    out = np.zeros(layout.shape, np.int64)
    for r in range(layout.shape[0]):
        for c in range(layout.shape[1]):
            lanes, loc = layout.locate((r, c))
            assert len(lanes) == 1 and loc < 16
            out[r, c] = lanes[0] * 16 + loc
    return out


def lane_order(layout: Layout) -> np.ndarray:
    """[32, local, 2]: (row, col) of each lane's fragment elements, in order."""
    return layout.table()


def _c_table(name: str, table: np.ndarray, ctype: str = "unsigned short") -> str:
    rows = ",\n  ".join(
        "{" + ", ".join(str(int(v)) for v in row) + "}" for row in table
    )
    r, c = table.shape
    return f"static const {ctype} {name}[{r}][{c}] = {{\n  {rows}}};"


def _emu_tables() -> str:
    c = C_ACC.table()  # [32, 4, 2]
    return "\n".join(
        [
            _c_table("lpcc_tc_a16", gather_table(A_F16)),
            _c_table("lpcc_tc_b16", gather_table(B_F16)),
            _c_table("lpcc_tc_a8", gather_table(A_S8)),
            _c_table("lpcc_tc_b8", gather_table(B_S8)),
            _c_table("lpcc_tc_crow", c[:, :, 0]),
            _c_table("lpcc_tc_ccol", c[:, :, 1]),
        ]
    )


HELPERS = (
    r"""
#ifndef LPCC_TC_HELPERS
#define LPCC_TC_HELPERS
/* (a & b) | c in one instruction. */
__device__ __forceinline__ unsigned lpcc_tc_lop3(unsigned a, unsigned b, unsigned c) {
#ifdef LPCC_EMU
  return (a & b) | c;
#else
  unsigned d;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
  return d;
#endif
}
/* f16x2 a * b + c, one rounding per half. */
__device__ __forceinline__ unsigned lpcc_tc_hfma2(unsigned a, unsigned b, unsigned c) {
#ifdef LPCC_EMU
  __half2 x, y, z, r;
  memcpy(&x, &a, 4); memcpy(&y, &b, 4); memcpy(&z, &c, 4);
  r = __hfma2(x, y, z);
  unsigned u; memcpy(&u, &r, 4);
  return u;
#else
  unsigned d;
  asm("fma.rn.f16x2 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
  return d;
#endif
}
/* Two floats rounded to f16 (nearest even), lo in the low half. */
__device__ __forceinline__ unsigned lpcc_tc_h2(float lo, float hi) {
  return (unsigned)__half_as_ushort(__float2half_rn(lo)) |
         ((unsigned)__half_as_ushort(__float2half_rn(hi)) << 16);
}
__device__ __forceinline__ float lpcc_tc_h2f(unsigned bits) {
  return __half2float(__ushort_as_half((unsigned short)(bits & 0xFFFFu)));
}
/* f64 multiply / add that nvcc never contracts into an FMA. */
__device__ __forceinline__ double lpcc_tc_dmul(double a, double b) {
#ifdef LPCC_EMU
  return a * b;
#else
  return __dmul_rn(a, b);
#endif
}
__device__ __forceinline__ double lpcc_tc_dadd(double a, double b) {
#ifdef LPCC_EMU
  return a + b;
#else
  return __dadd_rn(a, b);
#endif
}
/* ldmatrix.x4: lane l addresses row l % 16, byte column 16 * (l / 16). */
__device__ __forceinline__ void lpcc_tc_ldsm_x4(unsigned r[4],
                                                const unsigned char* tile, int ld) {
  const int lane = threadIdx.x & 31;
#ifdef LPCC_EMU
  for (int j = 0; j < 4; ++j) {
    const int src = 8 * j + (lane >> 2); /* the lane supplying matrix j's row */
    const unsigned char* row = tile + (src & 15) * ld + (src >> 4) * 16;
    memcpy(&r[j], row + 4 * (lane & 3), 4);
  }
#else
  const unsigned addr = (unsigned)__cvta_generic_to_shared(
      tile + (lane & 15) * ld + (lane >> 4) * 16);
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
#endif
}
"""
    + "#ifdef LPCC_EMU\n"
    + _emu_tables()
    + r"""
/* Element (i & 15) of word-array lane slot: 16-bit or 8-bit fields. */
static inline float lpcc_tc_emu_h(unsigned word, int loc) {
  return lpcc_tc_h2f(word >> (16 * (loc & 1)));
}
static inline int lpcc_tc_emu_b(unsigned word, int loc, bool is_unsigned) {
  const unsigned v = (word >> (8 * (loc & 3))) & 0xFFu;
  return is_unsigned ? (int)v : (int)(signed char)v;
}
#endif
/* d += A B, m16n8k16, f16 inputs, f32 accumulators. */
__device__ __forceinline__ void lpcc_mma_m16n8k16_f16(float d[4], const unsigned a[4],
                                                      const unsigned b[2]) {
#ifdef LPCC_EMU
  const int lane = threadIdx.x & 31;
  /* Gather: A rows of this lane's outputs, B columns, one register at a time.
     The register index is the same in every lane at each step (the layouts
     put rows g and g + 8 in fixed registers), as a shuffle needs. */
  float A[2][16], B[2][16];
  for (int h = 0; h < 2; ++h)
    for (int k = 0; k < 16; k += 2) {
      const int row = lpcc_tc_crow[lane][2 * h];
      const int e = lpcc_tc_a16[row][k];
      const unsigned v = __shfl_sync(0xffffffffu, a[(e & 15) >> 1], e >> 4);
      A[h][k] = lpcc_tc_emu_h(v, lpcc_tc_a16[row][k] & 15);
      A[h][k + 1] = lpcc_tc_emu_h(v, lpcc_tc_a16[row][k + 1] & 15);
    }
  for (int c = 0; c < 2; ++c)
    for (int k = 0; k < 16; k += 2) {
      const int col = lpcc_tc_ccol[lane][c];
      const int e = lpcc_tc_b16[k][col];
      const unsigned v = __shfl_sync(0xffffffffu, b[(e & 15) >> 1], e >> 4);
      B[c][k] = lpcc_tc_emu_h(v, lpcc_tc_b16[k][col] & 15);
      B[c][k + 1] = lpcc_tc_emu_h(v, lpcc_tc_b16[k + 1][col] & 15);
    }
  for (int i = 0; i < 4; ++i) {
    float acc = d[i];
    for (int k = 0; k < 16; ++k) acc += A[i >> 1][k] * B[i & 1][k];
    d[i] = acc;
  }
#else
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, "
      "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}
#ifdef LPCC_EMU
static inline void lpcc_tc_emu_mma_s8(int d[4], const unsigned a[4],
                                      const unsigned b[2], bool bu) {
  const int lane = threadIdx.x & 31;
  int A[2][32], B[2][32];
  for (int h = 0; h < 2; ++h)
    for (int k = 0; k < 32; k += 4) {
      const int row = lpcc_tc_crow[lane][2 * h];
      const int e = lpcc_tc_a8[row][k];
      const unsigned v = __shfl_sync(0xffffffffu, a[(e & 15) >> 2], e >> 4);
      for (int j = 0; j < 4; ++j)
        A[h][k + j] = lpcc_tc_emu_b(v, lpcc_tc_a8[row][k + j] & 15, false);
    }
  for (int c = 0; c < 2; ++c)
    for (int k = 0; k < 32; k += 4) {
      const int col = lpcc_tc_ccol[lane][c];
      const int e = lpcc_tc_b8[k][col];
      const unsigned v = __shfl_sync(0xffffffffu, b[(e & 15) >> 2], e >> 4);
      for (int j = 0; j < 4; ++j)
        B[c][k + j] = lpcc_tc_emu_b(v, lpcc_tc_b8[k + j][col] & 15, bu);
    }
  for (int i = 0; i < 4; ++i) {
    int acc = d[i];
    for (int k = 0; k < 32; ++k) acc += A[i >> 1][k] * B[i & 1][k];
    d[i] = acc;
  }
}
#endif
/* d += A B, m16n8k32, s8 x s8 -> s32 (exact). */
__device__ __forceinline__ void lpcc_mma_m16n8k32_s8(int d[4], const unsigned a[4],
                                                     const unsigned b[2]) {
#ifdef LPCC_EMU
  lpcc_tc_emu_mma_s8(d, a, b, false);
#else
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, "
      "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}
/* d += A B, m16n8k32, s8 x u8 -> s32 (exact). */
__device__ __forceinline__ void lpcc_mma_m16n8k32_s8u8(int d[4], const unsigned a[4],
                                                       const unsigned b[2]) {
#ifdef LPCC_EMU
  lpcc_tc_emu_mma_s8(d, a, b, true);
#else
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.s8.u8.s32 {%0, %1, %2, %3}, "
      "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}
/* One k-step of a warp tile: MT x NT mma (see the module docstring). */
template <int MT, int NT>
__device__ __forceinline__ void lpcc_tc_mma_tile_f16(float acc[MT][NT][4],
                                                     const unsigned a[MT][4],
                                                     const unsigned b[NT][2],
                                                     unsigned* xw) {
#ifdef LPCC_EMU
  const int lane = threadIdx.x & 31, W = 4 * MT + 2 * NT;
  for (int mt = 0; mt < MT; ++mt)
    for (int j = 0; j < 4; ++j) xw[lane * W + 4 * mt + j] = a[mt][j];
  for (int nt = 0; nt < NT; ++nt)
    for (int j = 0; j < 2; ++j) xw[lane * W + 4 * MT + 2 * nt + j] = b[nt][j];
  __syncwarp();
  for (int mt = 0; mt < MT; ++mt)
    for (int nt = 0; nt < NT; ++nt)
      for (int i = 0; i < 4; ++i) {
        const int row = lpcc_tc_crow[lane][i], col = lpcc_tc_ccol[lane][i];
        float d = acc[mt][nt][i];
        for (int k = 0; k < 16; ++k) {
          const int ea = lpcc_tc_a16[row][k], eb = lpcc_tc_b16[k][col];
          const float x =
              lpcc_tc_emu_h(xw[(ea >> 4) * W + 4 * mt + ((ea & 15) >> 1)], ea);
          const float w = lpcc_tc_emu_h(
              xw[(eb >> 4) * W + 4 * MT + 2 * nt + ((eb & 15) >> 1)], eb);
          d += x * w;
        }
        acc[mt][nt][i] = d;
      }
  __syncwarp();
#else
  (void)xw;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) lpcc_mma_m16n8k16_f16(acc[mt][nt], a[mt], b[nt]);
#endif
}
template <int MT, int NT, bool BU>
__device__ __forceinline__ void lpcc_tc_mma_tile_s8(int acc[MT][NT][4],
                                                    const unsigned a[MT][4],
                                                    const unsigned b[NT][2],
                                                    unsigned* xw) {
#ifdef LPCC_EMU
  const int lane = threadIdx.x & 31, W = 4 * MT + 2 * NT;
  for (int mt = 0; mt < MT; ++mt)
    for (int j = 0; j < 4; ++j) xw[lane * W + 4 * mt + j] = a[mt][j];
  for (int nt = 0; nt < NT; ++nt)
    for (int j = 0; j < 2; ++j) xw[lane * W + 4 * MT + 2 * nt + j] = b[nt][j];
  __syncwarp();
  for (int mt = 0; mt < MT; ++mt)
    for (int nt = 0; nt < NT; ++nt)
      for (int i = 0; i < 4; ++i) {
        const int row = lpcc_tc_crow[lane][i], col = lpcc_tc_ccol[lane][i];
        int d = acc[mt][nt][i];
        for (int k = 0; k < 32; ++k) {
          const int ea = lpcc_tc_a8[row][k], eb = lpcc_tc_b8[k][col];
          const int x = lpcc_tc_emu_b(xw[(ea >> 4) * W + 4 * mt + ((ea & 15) >> 2)],
                                      ea, false);
          const int w = lpcc_tc_emu_b(
              xw[(eb >> 4) * W + 4 * MT + 2 * nt + ((eb & 15) >> 2)], eb, BU);
          d += x * w;
        }
        acc[mt][nt][i] = d;
      }
  __syncwarp();
#else
  (void)xw;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      if (BU)
        lpcc_mma_m16n8k32_s8u8(acc[mt][nt], a[mt], b[nt]);
      else
        lpcc_mma_m16n8k32_s8(acc[mt][nt], a[mt], b[nt]);
    }
#endif
}
#endif /* LPCC_TC_HELPERS */
"""
)
