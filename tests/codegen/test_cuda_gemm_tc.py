"""Tensor-core group GEMM (lpcc/codegen/cuda/kernels/gemm_tc.py, mma.py).

No GPU here: the fragment maps are checked against the PTX ISA tables
(written out by hand below), the emulated mma.sync / ldmatrix helpers against
NumPy, the whole kernels (host emulator) against the interpreter, and every
generated source compiles with nvcc for sm_80 and sm_90 without register
spills, with HMMA / IMMA / LDSM in its SASS.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from xdsl.dialects import func

from lpcc.codegen.cuda import emu, nvcc
from lpcc.codegen.cuda.kernel import PRELUDE, CudaRequest
from lpcc.codegen.cuda.kernels import gemm_tc, gemv, mma
from lpcc.codegen.cuda.lower import lower_kernel, run_cuda
from lpcc.ir import interp
from lpcc.ir.dialect import parse_module, to_attr
from lpcc.ir.dtypes import dtype
from lpcc.ir.layout import local, spatial

U = 2.0**-24  # f32 unit roundoff


# -- the fragment maps, from the PTX ISA's tables (mma.m16n8k16 / m16n8k32) ----------


def ptx_a16(lane: int, i: int) -> tuple[int, int]:
    """A (16x16 f16) element i (a0..a7) of lane: groupID = lane>>2, tig = lane%4."""
    g, t = lane >> 2, lane % 4
    row = g if i in (0, 1, 4, 5) else g + 8
    col = t * 2 + (i & 1) + (8 if i >= 4 else 0)
    return row, col


def ptx_b16(lane: int, i: int) -> tuple[int, int]:
    """B (16x8 f16) element i (b0..b3): row = tig*2 + (i&1) (+8 for i >= 2)."""
    g, t = lane >> 2, lane % 4
    return t * 2 + (i & 1) + (8 if i >= 2 else 0), g


def ptx_c(lane: int, i: int) -> tuple[int, int]:
    """C/D (16x8) element i (c0..c3): row g (+8 for i >= 2), col tig*2 + (i&1)."""
    g, t = lane >> 2, lane % 4
    return g + (8 if i >= 2 else 0), t * 2 + (i & 1)


def ptx_a8(lane: int, i: int) -> tuple[int, int]:
    """A (16x32 s8) element i (a0..a15)."""
    g, t = lane >> 2, lane % 4
    row = g if (i < 4 or 8 <= i < 12) else g + 8
    return row, t * 4 + (i & 3) + (16 if i >= 8 else 0)


def ptx_b8(lane: int, i: int) -> tuple[int, int]:
    """B (32x8 s8) element i (b0..b7)."""
    g, t = lane >> 2, lane % 4
    return t * 4 + (i & 3) + (16 if i >= 4 else 0), g


@pytest.mark.parametrize(
    "layout, ref, n_local",
    [
        (mma.A_F16, ptx_a16, 8),
        (mma.B_F16, ptx_b16, 4),
        (mma.C_ACC, ptx_c, 4),
        (mma.A_S8, ptx_a8, 16),
        (mma.B_S8, ptx_b8, 8),
    ],
)
def test_fragment_layouts_match_ptx(layout, ref, n_local: int) -> None:
    assert layout.num_workers == 32 and layout.local_size == n_local
    for lane in range(32):
        for i in range(n_local):
            assert layout.map(lane, i) == ref(lane, i)


# -- weight layouts ----------------------------------------------------------------


def _codes(rng, wt: str, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    dt = dtype(wt)
    w = rng.integers(int(dt.min), int(dt.max) + 1, (n, k)).astype(dt.value_dtype)
    return w, np.asarray(dt.encode(w), np.int64)


@pytest.mark.parametrize("wt", ["int4", "uint3", "int5", "uint8", "int1"])
def test_repack_a16_is_gemv_chunks_in_fragment_order(wt: str) -> None:
    """Lane l's words of (n8 tile T, chunk c) decode (gemv.unpack) to the codes
    of B fragments k-step by k-step: code e at k = 128c + 16(e//4) + the PTX B
    row of element e % 4, column 8T + l//4."""
    rng = np.random.default_rng(1)
    dt = dtype(wt)
    n, k = 20, 160  # N padded to 64, K to 256
    w, codes = _codes(rng, wt, n, k)
    words = gemm_tc.repack_a16(w, dt).view("<u4").reshape(-1, dt.bits)
    assert words.shape[0] == (64 // 8) * 2 * 32
    got = gemv.unpack(words, dt.bits, dt.is_signed, 32).reshape(8, 2, 32, 32)
    pad = np.zeros((64, 256), np.int64)
    pad[:n, :k] = codes
    for t in (0, 2, 7):
        for c in (0, 1):
            for lane in (0, 5, 31):
                for e in range(32):
                    kr, nc = ptx_b16(lane, e % 4)
                    want = pad[8 * t + nc, 128 * c + 16 * (e // 4) + kr]
                    assert got[t, c, lane, e] == want


@pytest.mark.parametrize("wt", ["int4", "uint4", "int3", "int8", "uint2", "int7"])
def test_repack_a8_fields(wt: str) -> None:
    """Register R of lane l (four bytes) is field R % (8/fw) of word R // (8/fw),
    byte j at bit 8j + fw h, holding k = 128c + 32(R//2) + PTX B row of
    element 4(R%2) + j; signed codes below 8 bits offset by 2^(bits-1)."""
    rng = np.random.default_rng(2)
    dt = dtype(wt)
    fw = {1: 1, 2: 2, 3: 4, 4: 4, 5: 8, 6: 8, 7: 8, 8: 8}[dt.bits]
    n, k = 9, 96
    w, codes = _codes(rng, wt, n, k)
    if dt.is_signed and dt.bits < 8:
        codes = codes ^ (1 << (dt.bits - 1))
    words = gemm_tc.repack_a8(w, dt).view("<u4").reshape(8, 1, 32, fw)
    pad = np.zeros((64, 128), np.int64)
    pad[:n, :k] = codes
    per = 8 // fw
    for t in (0, 1):
        for lane in range(32):
            for reg in range(8):
                q, h = divmod(reg, per)
                for j in range(4):
                    field = (int(words[t, 0, lane, q]) >> (8 * j + fw * h)) & (
                        (1 << fw) - 1
                    )
                    kr, nc = ptx_b8(lane, 4 * (reg % 2) + j)
                    assert field == pad[8 * t + nc, 32 * (reg // 2) + kr]


def test_repack_a16_equals_gemv_repack() -> None:
    """The vectorized packer gives gemv.repack's words for the same codes."""
    rng = np.random.default_rng(3)
    for wt in ("int3", "uint6"):
        dt = dtype(wt)
        w, codes = _codes(rng, wt, 64, 128)
        words = gemm_tc.repack_a16(w, dt).view("<u4").reshape(-1, dt.bits)
        order = gemm_tc.a16_codes_order()
        lanes = np.stack(
            [codes[8 * t + order[:, :, 1], order[:, :, 0]] for t in range(8)]
        ).reshape(-1, 32)
        np.testing.assert_array_equal(words, gemv.repack(lanes, dt.bits, dt.is_signed))


# -- the emulated mma.sync and ldmatrix helpers, alone --------------------------------

_MMA_SRC = (
    PRELUDE
    + mma.HELPERS
    + r"""
/* One warp: load fragments from row-major A/B by the hand-written PTX maps,
   multiply, store D by the C map. */
extern "C" __global__ void t_mma_f16(const lp_u16* A, const lp_u16* B, const float* C,
                                     float* D) {
  const int lane = threadIdx.x, g = lane >> 2, t = lane & 3;
  unsigned a[4], b[2];
  for (int r = 0; r < 4; ++r) {
    const int row = g + 8 * (r & 1), col = 2 * t + 8 * (r >> 1);
    a[r] = A[row * 16 + col] | ((unsigned)A[row * 16 + col + 1] << 16);
  }
  for (int r = 0; r < 2; ++r) {
    const int k = 2 * t + 8 * r;
    b[r] = B[k * 8 + g] | ((unsigned)B[(k + 1) * 8 + g] << 16);
  }
  float d[4];
  for (int i = 0; i < 4; ++i) d[i] = C[(g + 8 * (i >> 1)) * 8 + 2 * t + (i & 1)];
  lpcc_mma_m16n8k16_f16(d, a, b);
  for (int i = 0; i < 4; ++i) D[(g + 8 * (i >> 1)) * 8 + 2 * t + (i & 1)] = d[i];
}
extern "C" __global__ void t_mma_s8(const lp_i8* A, const lp_u8* B, int* D, int bu) {
  const int lane = threadIdx.x, g = lane >> 2, t = lane & 3;
  unsigned a[4], b[2];
  for (int r = 0; r < 4; ++r) {
    const int row = g + 8 * (r & 1), col = 4 * t + 16 * (r >> 1);
    a[r] = 0;
    for (int j = 0; j < 4; ++j)
      a[r] |= (unsigned)(lp_u8)A[row * 32 + col + j] << (8 * j);
  }
  for (int r = 0; r < 2; ++r) {
    b[r] = 0;
    for (int j = 0; j < 4; ++j)
      b[r] |= (unsigned)B[(4 * t + 16 * r + j) * 8 + g] << (8 * j);
  }
  int d[4] = {7, -3, 0, 1};
  if (bu) lpcc_mma_m16n8k32_s8u8(d, a, b); else lpcc_mma_m16n8k32_s8(d, a, b);
  for (int i = 0; i < 4; ++i) D[(g + 8 * (i >> 1)) * 8 + 2 * t + (i & 1)] = d[i];
}
extern "C" __global__ void t_ldsm(const lp_u16* A, unsigned* R) {
  __shared__ __align__(16) unsigned char tile[16 * 48];
  const int lane = threadIdx.x;
  for (int i = lane; i < 16 * 16; i += 32)
    memcpy(tile + (i / 16) * 48 + (i % 16) * 2, &A[i], 2);
  __syncwarp();
  unsigned r[4];
  lpcc_tc_ldsm_x4(r, tile, 48);
  for (int j = 0; j < 4; ++j) R[lane * 4 + j] = r[j];
}
"""
)


def _f16_bits(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.float16).view(np.uint16)


def test_emulated_mma_f16_matches_numpy() -> None:
    rng = np.random.default_rng(4)
    st = np.zeros(1, np.int32)
    # small integers: every partial sum is exact, so any order gives the same bits
    a = rng.integers(-64, 64, (16, 16)).astype(np.float16)
    b = rng.integers(-64, 64, (16, 8)).astype(np.float16)
    c = rng.integers(-1000, 1000, (16, 8)).astype(np.float32)
    d = np.zeros((16, 8), np.float32)
    emu.emulate(_MMA_SRC, "t_mma_f16", 1, 32, [_f16_bits(a), _f16_bits(b), c, d])
    exact = a.astype(np.float64) @ b.astype(np.float64) + c
    np.testing.assert_array_equal(d, exact.astype(np.float32))
    # general f16: products are exact in f32; 16 f32 additions to c, any order:
    # |err| <= 16 u (|c| + sum |a b|) (+ the final f32 rounding of the f64 value)
    a = rng.standard_normal((16, 16)).astype(np.float16)
    b = rng.standard_normal((16, 8)).astype(np.float16)
    c = rng.standard_normal((16, 8)).astype(np.float32)
    emu.emulate(_MMA_SRC, "t_mma_f16", 1, 32, [_f16_bits(a), _f16_bits(b), c, d])
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    exact = a64 @ b64 + c
    bound = 17 * U * (np.abs(c) + np.abs(a64) @ np.abs(b64))
    assert np.all(np.abs(d - exact) <= bound)
    assert st[0] == 0


@pytest.mark.parametrize("bu", [0, 1])
def test_emulated_mma_s8_matches_numpy(bu: int) -> None:
    rng = np.random.default_rng(5 + bu)
    a = rng.integers(-128, 128, (16, 32)).astype(np.int8)
    b = rng.integers(0, 256, (32, 8)).astype(np.uint8)
    if not bu:
        b = rng.integers(-128, 128, (32, 8)).astype(np.int8).view(np.uint8)
    d = np.zeros((16, 8), np.int32)
    emu.emulate(_MMA_SRC, "t_mma_s8", 1, 32, [a, b, d, bu])
    bv = b.astype(np.int64) if bu else b.view(np.int8).astype(np.int64)
    # C init per element i: rows g / g+8 use d[0..1] / d[2..3] at even/odd cols
    init = np.zeros((16, 8), np.int64)
    init[:8, 0::2], init[:8, 1::2], init[8:, 0::2], init[8:, 1::2] = 7, -3, 0, 1
    want = a.astype(np.int64) @ bv + init
    np.testing.assert_array_equal(d, want)


def test_emulated_ldmatrix_gives_the_a_fragment() -> None:
    """ldmatrix.x4 of a 16x16 f16 tile = the A fragment (PTX map) of each lane."""
    a = np.arange(256, dtype=np.uint16).reshape(16, 16)
    r = np.zeros(128, np.uint32)
    emu.emulate(_MMA_SRC, "t_ldsm", 1, 32, [a, r])
    for lane in range(32):
        for i in range(8):
            row, col = ptx_a16(lane, i)
            half = (int(r[lane * 4 + i // 2]) >> (16 * (i % 2))) & 0xFFFF
            assert half == a[row, col]


# -- whole kernels vs the interpreter --------------------------------------------------


def _t(dims, elt) -> str:
    return "tensor<" + "x".join(str(d) for d in dims) + f"x{elt}>"


def fused(
    lead, n, k, g, wt, *, xint=False, zero=None, act=False, tail=False
) -> func.FuncOp:
    """func @kernel(x, w, s[, z, S][, a][, bias]) { lp.fused epilogue {...} }."""
    gn = k // g
    xe, pe = ("!lp.int<8>", "!lp.int<32>") if xint else ("f32", "f32")
    x_t, p_t = _t((*lead, k), xe), _t((*lead, n, gn), pe)
    w_t, s_t, y_t = (
        _t((n, k), to_attr(dtype(wt))),
        _t((n, gn), "f16"),
        _t((*lead, n), "f32"),
    )
    args = [("x", x_t), ("w", w_t), ("s", s_t)]
    red = f"%r = lp.group_dequant_reduce %p : {p_t} scale %s1 : {s_t}"
    if zero:
        z_t, sum_t = _t((n, gn), to_attr(dtype(zero))), _t((*lead, gn), pe)
        args += [("z", z_t), ("S", sum_t)]
        red += f" zero %z1 : {z_t} sums %S1 : {sum_t}"
    if act:
        a_t = _t((*lead, gn), "f32")
        args.append(("a", a_t))
        red += f" act_scale %a1 : {a_t}"
    red += f" -> {y_t}"
    out, body = "%r", ""
    if tail:
        b_t = _t((*[1] * len(lead), n), "f32")
        one_t = _t([1] * (len(lead) + 1), "f32")
        args.append(("bias", b_t))
        body = (
            f"%c = lp.constant splat 0.5 : {one_t}\n"
            f"%t1 = lp.add %r, %bias1 : ({y_t}, {b_t}) -> {y_t}\n"
            f"%t2 = lp.mul %t1, %c : ({y_t}, {one_t}) -> {y_t}\n"
        )
        out = "%t2"
    sig = ", ".join(f"%{a}: {t}" for a, t in args)
    names = ", ".join(f"%{a}" for a, _ in args)
    types = ", ".join(t for _, t in args)
    bargs = ", ".join(f"%{a}1: {t}" for a, t in args)
    text = f"""func.func @kernel({sig}) -> {y_t} {{
  %y = lp.fused epilogue({names}) : ({types}) -> {y_t} {{
  ^bb0({bargs}):
    %p = lp.group_matmul %x1, %w1 group {g} : ({x_t}, {w_t}) -> {p_t}
    {red}
    {body}
    lp.yield {out} : {y_t}
  }}
  func.return %y : {y_t}
}}"""
    module = parse_module("builtin.module {\n" + text + "\n}")
    return next(op for op in module.ops if isinstance(op, func.FuncOp))


def inputs(
    rng, lead, n, k, g, wt, *, xint=False, zero=None, act=False, tail=False, f16_x=True
):
    gn = k // g
    if xint:
        x = rng.integers(-128, 128, (*lead, k)).astype(np.int8)
    else:
        x = rng.standard_normal((*lead, k)).astype(np.float32)
        if f16_x:
            x = x.astype(np.float16).astype(np.float32)
    s = rng.uniform(0.01, 0.2, (n, gn)) * rng.choice([-1, 1], (n, gn))
    s = s.astype(np.float16).astype(np.float32)
    dt = dtype(wt)
    w = rng.integers(int(dt.min), int(dt.max) + 1, (n, k)).astype(dt.value_dtype)
    ins = [x, w, s]
    if zero:
        zdt = dtype(zero)
        ins.append(rng.integers(0, int(zdt.max) + 1, (n, gn)).astype(zdt.value_dtype))
        xs = x.astype(np.int64 if xint else np.float64).reshape(*lead, gn, g).sum(-1)
        ins.append(xs.astype(np.int32 if xint else np.float32))  # the true group sums
    if act:
        ins.append(rng.uniform(1e-3, 1e-2, (*lead, gn)).astype(np.float32))
    if tail:
        ins.append(rng.standard_normal((*[1] * len(lead), n)).astype(np.float32))
    return ins


def f16_bound(ins, g: int, zero: bool, act: bool, f16_x: bool) -> np.ndarray:
    """|kernel - interpreter| bound for the A16 path, per output.

    With T_g = sum_{k in g} |x q| and Q_g = sum_{k in g} |q|: the interpreter's
    f32 P_g is within G u T_g of the exact sum, the kernel's f32 accumulation
    (any order) within G u T'_g of the sum over x' = f16(x), and
    |sum (x' - x) q| <= 2^-11 T_g + 2^-25 Q_g (f16 rounding, normal /
    subnormal); x' = x when the test feeds f16 values. The kernel's epilogue
    (z S, the subtraction, s a, the fma into y) rounds at most (Gn + 4) times
    per group term (u each, on |s a| (|acc| + |z S|)); the interpreter's f64
    epilogue rounds once to f32 (u |y|). So, with slack for the (1 + 2^-11)
    factors:
      |diff| <= sum_g |s a| ((r + (2G + Gn + 6) u) T_g + 2^-24 Q_g [f32 x]
                + (Gn + 6) u |z S|),   r = 2^-11 for f32 x, else 0.
    """
    x, w, s = (np.abs(np.asarray(a, np.float64)) for a in ins[:3])
    n, k = w.shape
    gn = k // g
    xg = x.reshape(*x.shape[:-1], gn, g)
    wg = w.reshape(n, gn, g)
    t = np.einsum("...gk,ngk->...ng", xg, wg)
    q = wg.sum(-1)  # [n, gn]
    r = 0.0 if f16_x else 2.0**-11
    mag = (r + (2 * g + gn + 6) * U) * t
    if not f16_x:
        mag = mag + 2.0**-24 * q
    i = 3
    if zero:
        z, sums = np.abs(np.asarray(ins[3], np.float64)), np.abs(np.asarray(ins[4]))
        mag = mag + (gn + 6) * U * z * sums[..., None, :]
        i = 5
    scale = s
    if act:
        scale = s * np.abs(np.asarray(ins[i], np.float64))[..., None, :]
    return (scale * mag).sum(-1) + 1e-30


def _run(fn: func.FuncOp, ins: list[np.ndarray], n_const: int = 2) -> np.ndarray:
    const = list(range(1, n_const + 1))
    ck = lower_kernel(fn, "sm_80", const)
    assert ck is not None and "tensor-core" in ck.note, "gemm_tc declined"
    out = run_cuda(fn, ins, const_inputs=const, device="emulate")
    assert out is not None
    return out[0]


A16_CASES = [
    # lead, n, k, g, wt, zero
    ((16,), 8, 64, 32, "int4", None),
    ((1, 48), 40, 256, 64, "int3", None),
    ((17,), 40, 192, 32, "int2", None),  # rows masked, a short last chunk
    ((2, 8), 24, 128, 32, "uint4", "uint4"),
    ((16,), 40, 256, 256, "int5", None),  # a group spans two chunks
]


@pytest.mark.parametrize("lead, n, k, g, wt, zero", A16_CASES)
def test_a16_kernel_matches_interpreter(lead, n, k, g, wt, zero) -> None:
    fn = fused(lead, n, k, g, wt, zero=zero)
    rng = np.random.default_rng(10)
    ins = inputs(rng, lead, n, k, g, wt, zero=zero)
    got = _run(fn, ins)
    ref = interp.run_function(fn, ins)[0]
    bound = f16_bound(ins, g, zero is not None, False, True)
    assert np.all(np.abs(got - ref) <= bound), np.max(np.abs(got - ref) / bound)
    # the bound is meaningful: far below the outputs themselves
    assert np.median(bound) < 1e-3 * np.median(np.abs(ref))


def test_a16_rounds_activations_to_f16() -> None:
    """f32 activations: the documented f16 rounding, within the derived bound."""
    lead, n, k, g = (16,), 40, 128, 64
    fn = fused(lead, n, k, g, "int4", act=True)
    rng = np.random.default_rng(11)
    ins = inputs(rng, lead, n, k, g, "int4", act=True, f16_x=False)
    got = _run(fn, ins)
    ref = interp.run_function(fn, ins)[0]
    bound = f16_bound(ins, g, False, True, False)
    assert np.all(np.abs(got - ref) <= bound)
    assert np.median(bound) < 0.05 * np.median(np.abs(ref))
    # with the activations rounded to f16 first the same kernel is much closer
    ins[0] = ins[0].astype(np.float16).astype(np.float32)
    got = run_cuda(fn, ins, const_inputs=[1, 2], device="emulate")[0]
    ref = interp.run_function(fn, ins)[0]
    assert np.all(np.abs(got - ref) <= f16_bound(ins, g, False, True, True))


def test_a16_with_elementwise_tail() -> None:
    lead, n, k, g = (16,), 40, 64, 32
    fn = fused(lead, n, k, g, "int4", tail=True)
    rng = np.random.default_rng(12)
    ins = inputs(rng, lead, n, k, g, "int4", tail=True)
    got = _run(fn, ins)
    ref = interp.run_function(fn, ins)[0]
    # t = (y + bias) * 0.5: add and exact halving each round once more
    bound = 0.5 * f16_bound(ins, g, False, False, True) + 2 * U * np.abs(ref)
    assert np.all(np.abs(got - ref) <= bound)


A8_CASES = [
    ((16,), 40, 128, 32, "int4", None),
    ((1, 48), 8, 256, 64, "int8", None),
    ((2, 9), 40, 96, 32, "uint4", "uint4"),  # K = 96: only a short chunk
    ((16,), 24, 256, 128, "int3", None),
    ((20,), 8, 256, 64, "int5", None),  # full chunks, rows past M clamped
]


@pytest.mark.parametrize("lead, n, k, g, wt, zero", A8_CASES)
def test_a8_kernel_is_exact(lead, n, k, g, wt, zero) -> None:
    """int32 partials are exact and the f64 epilogue forms the interpreter's terms
    ((P - z S) s) a; with fewer than 8 groups NumPy sums them in order too, so
    the results are equal bit for bit."""
    fn = fused(lead, n, k, g, wt, xint=True, zero=zero, act=True)
    assert k // g < 8
    rng = np.random.default_rng(13)
    ins = inputs(rng, lead, n, k, g, wt, xint=True, zero=zero, act=True)
    got = _run(fn, ins)
    np.testing.assert_array_equal(got, interp.run_function(fn, ins)[0])


def test_a8_many_groups_within_f64_reassociation() -> None:
    """Gn >= 8: NumPy's pairwise f64 sum vs the kernel's in-order sum; after the
    f32 rounding they differ by at most one f32 spacing (plus Gn 2^-52 of the
    sum of |terms|, far below it)."""
    lead, n, k, g = (16,), 16, 256, 32
    fn = fused(lead, n, k, g, "uint8", xint=True, act=True)
    rng = np.random.default_rng(14)
    ins = inputs(rng, lead, n, k, g, "uint8", xint=True, act=True)
    got = _run(fn, ins)
    ref = interp.run_function(fn, ins)[0]
    assert np.all(np.abs(got - ref) <= np.spacing(np.abs(ref)))


# -- what the generator declines -------------------------------------------------------


def _req(fn: func.FuncOp, const=(1, 2)) -> CudaRequest:
    return CudaRequest(fn, "sm_80", frozenset(const), "lpcc_kernel")


@pytest.mark.parametrize(
    "lead, n, k, g, wt, xint, const",
    [
        ((8,), 40, 64, 32, "int4", False, (1, 2)),  # M < 16
        ((16,), 40, 72, 24, "int4", False, (1, 2)),  # K, group not multiples of 16
        ((16,), 40, 64, 16, "int4", True, (1, 2)),  # A8 needs groups of 32
        ((16,), 40, 64, 32, "f4e2m1", False, (1, 2)),  # float weight codes
        ((16,), 40, 64, 32, "int4", False, (2,)),  # weight not a constant
    ],
)
def test_declines(lead, n, k, g, wt, xint, const) -> None:
    fn = fused(lead, n, k, g, wt, xint=xint)
    assert gemm_tc.gen_fused(_req(fn, const)) is None


def test_declines_dynamic_m() -> None:
    text = """func.func @kernel(%x: tensor<?x64xf32> {lp.dims = "s0,64"},
      %w: tensor<8x64x!lp.int<4>>, %s: tensor<8x2xf16>) -> tensor<?x8xf32> {
  %y = lp.fused epilogue(%x, %w, %s) {lp.dims = "s0,8"}
      : (tensor<?x64xf32>, tensor<8x64x!lp.int<4>>, tensor<8x2xf16>)
      -> tensor<?x8xf32> {
  ^bb0(%x1: tensor<?x64xf32>, %w1: tensor<8x64x!lp.int<4>>, %s1: tensor<8x2xf16>):
    %p = lp.group_matmul %x1, %w1 group 32 {lp.dims = "s0,8,2"}
      : (tensor<?x64xf32>, tensor<8x64x!lp.int<4>>) -> tensor<?x8x2xf32>
    %r = lp.group_dequant_reduce %p : tensor<?x8x2xf32> scale %s1 : tensor<8x2xf16>
      {lp.dims = "s0,8"} -> tensor<?x8xf32>
    lp.yield %r : tensor<?x8xf32>
  }
  func.return %y : tensor<?x8xf32>
}"""
    module = parse_module("builtin.module {\n" + text + "\n}")
    fn = next(op for op in module.ops if isinstance(op, func.FuncOp))
    assert gemm_tc.gen_fused(_req(fn)) is None


# -- nvcc: every kernel above, sm_80 and sm_90 ----------------------------------------


def test_nvcc_compiles_without_spills_and_uses_tensor_cores() -> None:
    """Representative kernels of the tests above (both paths, zero points, a
    short chunk, a group across chunks, a tail, every field width of the A8
    layout's classes): ptxas for sm_80 and sm_90 without spills, and the SASS
    holds the tensor-core instructions. (nvcc costs ~1 s per source and arch,
    so not every test's source is compiled.)"""
    picks = [
        fused((17,), 40, 192, 32, "int2"),
        fused((2, 8), 24, 128, 32, "uint4", zero="uint4"),
        fused((16,), 40, 256, 256, "int5", tail=True),
        fused((2, 9), 40, 96, 32, "uint4", xint=True, zero="uint4", act=True),
        fused((16,), 24, 256, 128, "int3", xint=True, act=True),
        fused((20,), 8, 256, 64, "int5", xint=True),  # clamped rows, full chunks
    ]
    sources = [lower_kernel(fn, "sm_80", [1, 2]).source for fn in picks]
    for src in sources:
        for arch in ("sm_80", "sm_90"):
            info = nvcc.ptxas_info(src, arch)["lpcc_kernel"]
            assert info["spill_stores"] == 0 and info["spill_loads"] == 0, (arch, info)
    s16, s8 = nvcc.sass(sources[0], "sm_80"), nvcc.sass(sources[3], "sm_90")
    assert "HMMA.16816.F32" in s16 and "LDSM" in s16
    # the A16 staging converts two activations per instruction
    # (F2FP.PACK_AB on sm_80, F2FP.F16.F32.PACK_AB on sm_90)
    assert re.search(r"F2FP\S*\.PACK_AB", s16)
    assert "IMMA.16832" in s8 and "LDSM" in s8


def test_helpers_compile_for_the_gpu() -> None:
    for arch in ("sm_80", "sm_90"):
        sass = nvcc.sass(_MMA_SRC, arch)
        assert "HMMA" in sass and "IMMA" in sass and "LDSM" in sass


@pytest.mark.parametrize("mt", [1, 2, 3, 4])
def test_tensor_cores_are_selected_by_layout_division(mt: int) -> None:
    """The block tile divides by the mma accumulator fragment; the quotient
    is the warps (4 workers) times each warp's MT x NT repeats, and
    multiplying back gives the tile (the algebra's own check)."""
    tile = gemm_tc.block_tile(mt)
    assert tile.shape == (16 * mt, 64) and tile.num_workers == 128
    name, quotient = gemm_tc.select_mma(tile)
    assert name == "mma.m16n8"
    assert quotient.num_workers == 4 and quotient.local_size == mt * 2
    assert quotient * mma.C_ACC == tile


def test_a_thread_per_element_tile_gets_no_tensor_cores() -> None:
    # 16 x 8 elements over 128 threads, one each: not a multiple of the
    # fragment's 32 lanes x 4 accumulators, so no mma divides it
    assert gemm_tc.select_mma(spatial(16, 8)) is None
    assert gemm_tc.select_mma(local(16, 8)) is None


@pytest.mark.parametrize(
    "m, k, path, mode",
    [
        (64, 4096, "a16", "even"),  # M a multiple of the 64-row tile
        (48, 256, "a8", "even"),  # one 48-row tile
        (17, 192, "a16", "clamp"),  # rows 17..31 of the tile re-read row 16
        (80, 4096, "a8", "clamp"),
        (2**16, 2**13, "a16", "even"),  # 2 GiB of x, but one tile's offsets fit
        (2**16 + 16, 2**13, "a16", "loop"),  # clamped offsets would not fit 32 bits
    ],
)
def test_staging_mode(m: int, k: int, path: str, mode: str) -> None:
    p = gemm_tc.Plan(path, 0, 1, dtype("int4"), (m,), m, 64, k, 32, 2)
    assert gemm_tc._stage_mode(p) == mode
