"""CUDA low-bit GEMV: layout, decode math and nvcc/ptxas checks (no GPU needed).

The NumPy tests pin the weight layout and the magic-number decode to
hand-derived references; the compile tests need nvcc (skipped, with the reason,
when it is absent) and check every width/sign/zero-point variant for sm_80 and
sm_90 with no register spills.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from lpcc.codegen.cuda import nvcc
from lpcc.codegen.cuda.kernels import gemv
from lpcc.errors import CompileError, LpccError

try:
    nvcc.find_tool("nvcc")
    HAVE_NVCC = True
except nvcc.CudaToolNotFound:
    HAVE_NVCC = False
needs_nvcc = pytest.mark.skipif(not HAVE_NVCC, reason="nvcc not installed")

WIDTHS = range(1, 9)


def _bit_reference(codes: np.ndarray, bits: int, signed: bool) -> np.ndarray:
    """The layout spelled out bit by bit: code k of column n (offset-binary)
    is chunk k // 32, element e = k % 32; its bits go to stream bit
    (e // 2) * bits + j of the low (even e) or high (odd e) halves."""
    n, k = codes.shape
    words = np.zeros((n, k // 32 * bits), np.uint64)
    for r in range(n):
        for col in range(k):
            u = int(codes[r, col]) ^ ((1 << (bits - 1)) if signed else 0)
            c, e = divmod(col, 32)
            for j in range(bits):
                s = (e // 2) * bits + j
                word = c * bits + s // 16
                words[r, word] |= ((u >> j) & 1) << ((s % 16) + 16 * (e % 2))
    return words.astype(np.uint32)


@pytest.mark.parametrize("bits", WIDTHS)
@pytest.mark.parametrize("signed", [False, True])
def test_repack_layout_and_roundtrip(bits: int, signed: bool) -> None:
    rng = np.random.default_rng(bits)
    codes = rng.integers(0, 1 << bits, size=(3, 64))
    words = gemv.repack(codes, bits, signed)
    assert words.dtype == np.uint32 and words.shape == (3, 2 * bits)
    np.testing.assert_array_equal(words, _bit_reference(codes, bits, signed))
    np.testing.assert_array_equal(gemv.unpack(words, bits, signed, 64), codes)


def test_int4_matches_bitblas_lop3_permutation() -> None:
    # BitBLAS LOP3Permutate: element e of a word at bit (e % 2) * 16 + (e // 2) * 4
    codes = np.arange(32).reshape(1, 32) % 16
    w = gemv.repack(codes, 4, signed=False)[0]
    for e in range(32):
        word, e8 = divmod(e, 8)
        bit = (e8 % 2) * 16 + (e8 // 2) * 4
        assert (int(w[word]) >> bit) & 0xF == codes[0, e]
    # the worked example of the note: bits 0-3 hold 3, bits 16-19 hold 12
    assert (int(w[0]) & 0xF, (int(w[0]) >> 16) & 0xF) == (0, 1)


def _h2(bits32: np.ndarray) -> np.ndarray:
    return np.asarray(bits32, np.uint32).view(np.float16).astype(np.float64)


def test_lop3_magic_int4_values() -> None:
    """The note's int4 decode: lop3(w, 0x000F000F, 0x64006400) - 0x6408 for
    low nibbles; mask 0x00F000F0 then * 1/16 - 72 for high nibbles."""
    for lo, hi in itertools.product(range(16), repeat=2):
        # offset-binary nibbles (code XOR 8) at bits 0-3 / 16-19 and 4-7 / 20-23
        w = np.uint32(lo | (hi << 16) | (lo << 4) | (hi << 20))
        h = _h2(np.array([(w & 0x000F000F) | 0x64006400]))
        assert tuple(h) == (1024 + lo, 1024 + hi)
        assert tuple(h - 1032) == (lo - 8, hi - 8)  # int4 values -8..7
        g = _h2(np.array([(w & 0x00F000F0) | 0x64006400]))
        assert tuple(g / 16 - 72) == (lo - 8, hi - 8)
    # the note's worked example: 3 and 12 -> (-5, 4)
    assert tuple(_h2(np.array([0x640C6403])) - 1032) == (-5.0, 4.0)


def _emulate_chunk(words: np.ndarray, bits: int, zr: int) -> np.ndarray:
    """Run the generator's pair plan in NumPy fp16 bit patterns: the values
    the kernel's lop3 + hfma2 produce for one chunk (32 weights)."""
    w = [int(x) for x in words]
    out = np.empty(32)
    for p, st in enumerate(gemv.pair_plan(bits)):
        h = ((w[st.q] >> st.sh) & st.mask) | gemv.MAGIC
        if st.sh2:
            h |= ((w[st.q + 1] << st.sh2) & 0xFFFFFFFF) & st.mask2
        # hfma2(h, 2**-rel, -(1024 * 2**-rel + zr)) in fp16: every step exact
        c = np.float16(2.0**-st.rel)
        d = np.float16(-(1024 * 2.0**-st.rel + zr))
        pair = np.array([h], np.uint32).view(np.float16)
        res = pair * c + d
        assert res.dtype == np.float16
        out[2 * p : 2 * p + 2] = res.astype(np.float64)
    return out


@pytest.mark.parametrize("bits", WIDTHS)
@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("zero_point", [False, True])
def test_pair_plan_decodes_every_code(
    bits: int, signed: bool, zero_point: bool
) -> None:
    rng = np.random.default_rng(10 * bits + signed)
    codes = rng.integers(0, 1 << bits, size=(4, 32))
    codes[0] = np.arange(32) % (1 << bits)  # every code at some position
    codes[1] = (1 << bits) - 1 - codes[0]
    words = gemv.repack(codes, bits, signed)
    half = 1 << (bits - 1)
    vals = np.where(signed & (codes >= half), codes - (1 << bits), codes)
    for r in range(4):
        z = int(rng.integers(0, 1 << bits)) if zero_point else 0
        zval = (z - (1 << bits) if signed and z >= half else z) if zero_point else 0
        if zero_point:
            zr = int(gemv.zero_codes(np.array([z]), bits, signed)[0])
        else:
            zr = half if signed else 0
        got = _emulate_chunk(words[r], bits, zr)
        np.testing.assert_array_equal(got, vals[r] - zval)


def test_source_rejects_bad_parameters() -> None:
    with pytest.raises(CompileError, match=r"widths 1\.\.8"):
        gemv.gemv_source(9, True, 32, False, "f16", 64, 4)
    with pytest.raises(CompileError, match="multiple of 32"):
        gemv.gemv_source(4, True, 32, False, "f16", 80, 4)
    with pytest.raises(CompileError, match="group=48"):
        gemv.gemv_source(4, True, 48, False, "f16", 96, 4)
    with pytest.raises(CompileError, match="act="):
        gemv.gemv_source(4, True, 32, False, "f32", 64, 4)
    with pytest.raises(CompileError, match=r"M = 1\.\.8"):
        gemv.gemv_source(4, True, 32, False, "f16", 64, 4, ms=(9,))
    with pytest.raises(CompileError, match="outside"):
        gemv.repack(np.full((1, 32), 16), 4, False)


def test_missing_tool_is_an_lpcc_error() -> None:
    with pytest.raises(LpccError, match="not found"):
        nvcc.find_tool("lpcc-no-such-cuda-tool")


def _variants() -> list[tuple]:
    out = []
    for i, (bits, signed, zp) in enumerate(
        itertools.product(WIDTHS, [True, False], [False, True])
    ):
        group = (32, 64, 128)[i % 3]
        act = "bf16" if i % 2 else "f16"
        out.append((bits, signed, group, zp, act, 4096, 4096))
    return out


@needs_nvcc
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_every_variant_compiles_without_spills(arch: str) -> None:
    # one source with every width/sign/zero-point (M = 1 and 8) per nvcc call
    sources, names = [], []
    for v in _variants():
        src, _, launch = gemv.gemv_source(*v, ms=(1, 8))
        sources.append(src)
        names += list(launch["kernels"].values())
    info = nvcc.ptxas_info("\n".join(sources), arch)
    assert sorted(info) == sorted(names)
    for name, k in info.items():
        assert k["spill_stores"] == 0 and k["spill_loads"] == 0, (name, k)
        assert k["local_bytes"] == 0, (name, k)
        assert 0 < k["registers"] <= 255, (name, k)


@needs_nvcc
def test_all_m_kernels_and_ptx() -> None:
    src, name, launch = gemv.gemv_source(3, True, 64, True, "bf16", 192, 5)
    assert launch["grid"] == (2, 1, 1) and launch["block"] == (128, 1, 1)
    assert sorted(launch["kernels"]) == list(range(1, 9))
    ptx = nvcc.compile_cuda(src, "sm_80", kind="ptx").decode()
    assert "lop3.b32" in ptx
    for kname in launch["kernels"].values():
        assert f".entry {kname}(" in ptx
    assert name in launch["kernels"][1]


@needs_nvcc
def test_compile_error_carries_nvcc_log() -> None:
    with pytest.raises(nvcc.CudaCompileError, match="undefined_thing"):
        nvcc.compile_cuda('extern "C" __global__ void f() { undefined_thing(); }')
    with pytest.raises(nvcc.CudaCompileError, match="sm_XX"):
        nvcc.compile_cuda("", arch="ampere")


@needs_nvcc
def test_int4_sass_uses_lop3_magic() -> None:
    try:
        nvcc.find_tool("cuobjdump")
        nvcc.find_tool("nvdisasm")
    except nvcc.CudaToolNotFound as e:
        pytest.skip(str(e))
    src, name, _ = gemv.gemv_source(4, True, 128, False, "f16", 1024, 8, ms=(1,))
    text = nvcc.sass(src, "sm_90")
    assert f"Function : {name}_m1" in text
    assert "LOP3.LUT" in text and "0xf000f" in text and "HFMA2" in text


def _emu_available() -> bool:
    try:
        from lpcc.codegen.cuda import emu
    except ImportError:
        return False
    return emu.available()


def _act_ulp(v: np.ndarray, act: str) -> np.ndarray:
    """Spacing of f16 / bf16 at |v| (normal range)."""
    e = np.floor(np.log2(np.maximum(np.abs(v), 2.0**-14)))
    return 2.0 ** (e - (10 if act == "f16" else 7))


@pytest.mark.skipif(not _emu_available(), reason="host CUDA emulator (g++) missing")
@pytest.mark.parametrize(
    ("bits", "signed", "zp", "act", "m"),
    [
        (4, True, False, "f16", 1),
        (3, True, True, "bf16", 3),
        (7, False, True, "f16", 8),
    ],
)
def test_gemv_under_host_emulator(
    bits: int, signed: bool, zp: bool, act: str, m: int
) -> None:
    from lpcc.codegen.cuda import emu

    rng = np.random.default_rng(bits)
    k, n, g = 128, 6, 64
    codes = rng.integers(0, 1 << bits, size=(n, k))
    half = 1 << (bits - 1)
    q = np.where(signed & (codes >= half), codes - (1 << bits), codes)
    s = (rng.random((n, k // g)) * 0.1 + 0.01).astype(np.float16)
    zc = rng.integers(0, 1 << bits, size=(n, k // g))
    zv = np.where(signed & (zc >= half), zc - (1 << bits), zc) if zp else 0 * zc
    zbuf = gemv.zero_codes(zc, bits, signed) if zp else np.zeros(zc.shape, np.uint8)
    xf = rng.standard_normal((m, k)).astype(np.float32)
    if act == "f16":
        xb = xf.astype(np.float16).view(np.uint16)
        xv = xb.view(np.float16).astype(np.float64)
    else:  # bf16 by truncation: any bf16 values will do
        xb = (xf.view(np.uint32) >> 16).astype(np.uint16)
        xv = (xb.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    wdq = (q - np.repeat(zv, g, axis=1)) * np.repeat(s.astype(np.float64), g, axis=1)
    ref = xv @ wdq.T  # float64 reference of the same dequantized weights
    src, _, launch = gemv.gemv_source(bits, signed, g, zp, act, k, n)
    y = np.zeros((m, n), np.uint16)
    args = [gemv.repack(codes, bits, signed).ravel(), s.view(np.uint16).ravel()]
    args += [zbuf.ravel(), xb.ravel(), y]
    emu.emulate(src, launch["kernels"][m], launch["grid"], launch["block"], args)
    if act == "f16":
        got = y.view(np.float16).astype(np.float64)
    else:
        got = (y.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    # decode is exact; f32 products/sums err <= 2 k 2**-24 sum|x w|; then one
    # rounding to the output type: half an ulp of the larger of got/ref
    f32_bound = 2 * k * 2.0**-24 * (np.abs(xv) @ np.abs(wdq).T)
    bound = 0.5 * _act_ulp(np.maximum(np.abs(got), np.abs(ref)), act) + f32_bound
    assert np.all(np.abs(got - ref) <= bound), np.abs(got - ref) / bound
