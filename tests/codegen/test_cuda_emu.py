"""The CUDA host emulator on its own small kernels, against hand-derived values.

One source holds most kernels so that it compiles once (the emulator caches
the library by content hash, so reruns skip g++ altogether).
"""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from lpcc.codegen.cuda import emu
from lpcc.codegen.cuda.emu import EmulationError, emulate

pytestmark = pytest.mark.skipif(
    not emu.available(), reason="g++ is not on PATH: the CUDA host emulator needs it"
)

SRC = r"""
#include <cstdint>

__device__ __forceinline__ float warp_sum(float v) {
  #pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
  return v;
}

// Each thread writes its value, then reads its right neighbour's (wrapping).
extern "C" __global__ void neighbour(const int* __restrict__ x, int* __restrict__ y) {
  __shared__ int s[64];
  const int t = threadIdx.x, base = blockIdx.x * blockDim.x;
  s[t] = x[base + t];
  __syncthreads();
  y[base + t] = s[(t + 1) % blockDim.x];
}

// Tree reduction in shared memory: y[block] = sum of the block's 64 values.
extern "C" __global__ void block_sum(const float* x, float* y, int n) {
  __shared__ float s[64];
  const int t = threadIdx.x, i = blockIdx.x * 64 + t;
  s[t] = i < n ? x[i] : 0.0f;
  __syncthreads();
  for (int stride = 32; stride > 0; stride >>= 1) {
    if (t < stride) s[t] += s[t + stride];
    __syncthreads();
  }
  if (t == 0) y[blockIdx.x] = s[0];
}

// Per-lane results of the warp primitives; lane value v = lane * lane + warp.
extern "C" __global__ void shuffles(int* out) {
  const int t = threadIdx.x, lane = t % 32, warp = t / 32;
  const float v = float(lane * lane + warp);
  int* o = out + 8 * t;
  o[0] = int(warp_sum(v));
  o[1] = int(__shfl_down_sync(0xffffffff, v, 3));
  o[2] = int(__shfl_sync(0xffffffff, v, 0));
  o[3] = int(__shfl_up_sync(0xffffffff, v, 2));
  o[4] = int(__shfl_sync(0xffffffff, v, 5, 8));  // lane 5 of each group of 8
  o[5] = int(__ballot_sync(0xffffffff, lane % 3 == 0));
  o[6] = __reduce_add_sync(0xffffffff, lane);
  o[7] = __syncthreads_count(t % 5 == 0);
}

// 2-D grid of 2-D blocks: every element records its global (row, col).
extern "C" __global__ void index2d(int* out, int width, int height) {
  const unsigned col = blockIdx.x * blockDim.x + threadIdx.x;
  const unsigned row = blockIdx.y * blockDim.y + threadIdx.y;
  if (col < unsigned(width) && row < unsigned(height))
    out[row * width + col] = int(row * 1000 + col);
}

// Only block 0 writes shared memory; every block reads it back.
extern "C" __global__ void shared_leak(int* out) {
  __shared__ int s[32];
  if (blockIdx.x == 0) s[threadIdx.x] = 7;
  __syncthreads();
  out[blockIdx.x * 32 + threadIdx.x] = s[threadIdx.x];
}

// Every block fills shared memory with its own id and sums it.
extern "C" __global__ void shared_own(int* out) {
  __shared__ int s[32];
  s[threadIdx.x] = int(blockIdx.x) + 1;
  __syncthreads();
  if (threadIdx.x == 0) {
    int acc = 0;
    for (int i = 0; i < 32; ++i) acc += s[i];
    out[blockIdx.x] = acc;
  }
}

// Dynamic shared memory: reverse each block's slice.
extern "C" __global__ void reverse_dyn(const float* x, float* y) {
  extern __shared__ __align__(16) float buf[];
  const int t = threadIdx.x, n = blockDim.x, base = blockIdx.x * n;
  buf[t] = x[base + t];
  __syncthreads();
  y[base + t] = buf[n - 1 - t];
}

extern "C" __global__ void count_atomic(unsigned* counter, float* fsum) {
  atomicAdd(counter, 1u);
  atomicAdd(fsum, 0.5f);
}

// float -> half -> float, and the bits, for each input; plus __half args.
extern "C" __global__ void half_round(const float* x, uint16_t* bits, float* back,
                                      __half h, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) {
    const __half v = __float2half(x[i]);
    bits[i] = __half_as_ushort(v);
    back[i] = __half2float(v) + 0.0f * __half2float(h);
  }
  if (i == 0) back[n] = __half2float(h);
}

extern "C" __global__ void divergent_shuffle(float* y) {
  float v = threadIdx.x;
  if (threadIdx.x < 16) v = __shfl_xor_sync(0xffffffff, v, 1);
  __syncthreads();
  y[threadIdx.x] = v;
}

extern "C" __global__ void partial_mask(float* y) {
  y[threadIdx.x] = __shfl_sync(0x0000ffff, 1.0f, 0);
}
"""


def test_barrier_neighbour() -> None:
    x = np.arange(128, dtype=np.int32) * 3 + 1
    y = np.zeros_like(x)
    emulate(SRC, "neighbour", 2, 64, [x, y])
    want = np.concatenate([np.roll(x[:64], -1), np.roll(x[64:], -1)])
    np.testing.assert_array_equal(y, want)


def test_shared_tree_reduction() -> None:
    rng = np.random.default_rng(0)
    n = 150  # 3 blocks, the last one partial
    # Small integers: every partial sum is exact in float32, so == is fair.
    x = rng.integers(-50, 50, n).astype(np.float32)
    y = np.zeros(3, np.float32)
    emulate(SRC, "block_sum", 3, 64, [x, y, n])
    want = [x[0:64].sum(), x[64:128].sum(), x[128:].sum()]
    np.testing.assert_array_equal(y, np.array(want, np.float32))


def test_warp_shuffles() -> None:
    nthreads = 64  # two warps
    out = np.zeros((nthreads, 8), np.int32)
    emulate(SRC, "shuffles", 1, nthreads, [out])
    for t in range(nthreads):
        lane, warp = t % 32, t // 32

        def v(src: int, warp: int = warp) -> int:
            return src * src + warp

        assert out[t, 0] == sum(v(i) for i in range(32))  # 10416 + 32 * warp
        assert out[t, 1] == v(lane + 3 if lane + 3 < 32 else lane)
        assert out[t, 2] == v(0)
        assert out[t, 3] == v(lane - 2 if lane >= 2 else lane)
        assert out[t, 4] == v(lane // 8 * 8 + 5)
        assert out[t, 5] == sum(1 << i for i in range(0, 32, 3))
        assert out[t, 6] == 31 * 32 // 2
        assert out[t, 7] == len(range(0, nthreads, 5))


def test_index_2d() -> None:
    width, height = 21, 7  # blocks of 8 x 4 over a 3 x 2 grid, edges cut
    out = np.full((height, width), -1, np.int32)
    emulate(SRC, "index2d", (3, 2), (8, 4), [out, width, height])
    rows, cols = np.indices((height, width))
    np.testing.assert_array_equal(out, rows * 1000 + cols)


def test_shared_memory_is_per_block() -> None:
    out = np.zeros(4, np.int32)
    emulate(SRC, "shared_own", 4, 32, [out])
    np.testing.assert_array_equal(out, 32 * (np.arange(4) + 1))
    # Block 1 never writes its shared memory: it must not see block 0's 7s
    # (the emulator fills shared memory with 0xFF bytes before every block).
    leak = np.zeros(64, np.int32)
    emulate(SRC, "shared_leak", 2, 32, [leak])
    np.testing.assert_array_equal(leak[:32], 7)
    np.testing.assert_array_equal(leak[32:], -1)


def test_dynamic_shared_memory() -> None:
    x = np.arange(96, dtype=np.float32)
    y = np.zeros_like(x)
    emulate(SRC, "reverse_dyn", 2, 48, [x, y], shared_bytes=48 * 4)
    np.testing.assert_array_equal(y, np.concatenate([x[:48][::-1], x[48:][::-1]]))


def test_atomics_across_blocks() -> None:
    counter = np.zeros(1, np.uint32)
    fsum = np.zeros(1, np.float32)
    emulate(SRC, "count_atomic", 3, 40, [counter, fsum])
    assert counter[0] == 120
    assert fsum[0] == 60.0  # sums of 0.5 up to 60 are exact in float32


def test_half_conversion_matches_numpy() -> None:
    rng = np.random.default_rng(1)
    special = np.array(
        [0.0, -0.0, 1.0, 65504.0, 65519.99, 65520.0, 1e6, -1e6, np.inf, -np.inf,
         2.0**-24, 2.0**-25, 1.5 * 2.0**-25, 2.0**-26, 2.0**-14, 2.0**-14 - 2.0**-25,
         1.0 + 2.0**-11, 1.0 + 3 * 2.0**-11, 6.1e-5, 3.3e-8],
        np.float32,
    )  # fmt: skip
    big = rng.standard_normal(200).astype(np.float32) * 1e3
    tiny = (rng.standard_normal(100) * 1e-6).astype(np.float32)  # subnormal halves
    x = np.concatenate([special, big, tiny])
    n = x.size
    bits = np.zeros(n, np.uint16)
    back = np.zeros(n + 1, np.float32)
    emulate(SRC, "half_round", 3, 128, [x, bits, back, 0.333, n])
    with np.errstate(over="ignore"):  # 1e6 -> inf is the point
        want = x.astype(np.float16)
    np.testing.assert_array_equal(bits, want.view(np.uint16))
    np.testing.assert_array_equal(back[:n], want.astype(np.float32))
    assert back[n] == np.float32(np.float16(0.333))


def test_nan_half_stays_nan() -> None:
    x = np.array([np.nan, -np.nan], np.float32)
    bits = np.zeros(2, np.uint16)
    back = np.zeros(3, np.float32)
    emulate(SRC, "half_round", 1, 32, [x, bits, back, 1.0, 2])
    assert np.all((bits & 0x7C00) == 0x7C00) and np.all(bits & 0x3FF)
    assert np.isnan(back[:2]).all()


# ---- errors -----------------------------------------------------------------


def test_error_no_gxx(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory
    src = f'// {uuid.uuid4()}\nextern "C" __global__ void k(int* y) {{ y[0] = 1; }}'
    with pytest.raises(EmulationError, match=r"'k'.*g\+\+ is not on PATH"):
        emulate(src, "k", 1, 1, [np.zeros(1, np.int32)])


def test_error_compile_log() -> None:
    src = 'extern "C" __global__ void broken(int* y) { y[0] = undeclared_thing; }'
    with pytest.raises(EmulationError, match=r"(?s)'broken'.*undeclared_thing"):
        emulate(src, "broken", 1, 1, [np.zeros(1, np.int32)])


def test_error_unknown_kernel() -> None:
    with pytest.raises(EmulationError, match=r"no `__global__ void nope.*neighbour"):
        emulate(SRC, "nope", 1, 1, [])


def test_error_argument_count() -> None:
    with pytest.raises(EmulationError, match=r"'neighbour' takes 2 arguments.*got 1"):
        emulate(SRC, "neighbour", 1, 64, [np.zeros(64, np.int32)])


def test_error_argument_types() -> None:
    y = np.zeros(64, np.float32)
    with pytest.raises(EmulationError, match=r"argument 2 \(int n\) is an integer"):
        emulate(SRC, "block_sum", 1, 64, [y, y, 2.5])
    with pytest.raises(EmulationError, match=r"argument 0 .* is a pointer"):
        emulate(SRC, "block_sum", 1, 64, [[1.0] * 64, y, 64])
    with pytest.raises(EmulationError, match=r"outside"):
        emulate(SRC, "block_sum", 1, 64, [y, y, 2**40])
    ro = np.zeros(1, np.float32)
    ro.flags.writeable = False
    with pytest.raises(EmulationError, match=r"argument 1 .* read-only"):
        emulate(SRC, "block_sum", 1, 64, [y, ro, 64])
    with pytest.raises(EmulationError, match=r"not C-contiguous"):
        emulate(SRC, "block_sum", 1, 64, [np.zeros(128, np.float32)[::2], y, 64])


def test_error_block_too_large() -> None:
    y = np.zeros(1, np.float32)
    with pytest.raises(EmulationError, match=r"'block_sum'.*1056 threads.*1024"):
        emulate(SRC, "block_sum", 1, (33, 32), [y, y, 1])


def test_error_missing_dynamic_shared() -> None:
    x = np.zeros(48, np.float32)
    with pytest.raises(EmulationError, match=r"extern __shared__.*shared_bytes=0"):
        emulate(SRC, "reverse_dyn", 1, 48, [x, x])


def test_error_deadlock_is_reported() -> None:
    y = np.zeros(32, np.float32)
    with pytest.raises(EmulationError, match=r"'divergent_shuffle'.*deadlock"):
        emulate(SRC, "divergent_shuffle", 1, 32, [y], timeout=0.5)


def test_error_partial_mask() -> None:
    y = np.zeros(32, np.float32)
    with pytest.raises(EmulationError, match=r"mask 0x0000ffff.*every live lane"):
        emulate(SRC, "partial_mask", 1, 32, [y])


# ---- serial mode, parallel blocks, precompiled header --------------------------

SERIAL_SRC = r"""
// No barrier or warp primitive anywhere: the emulator runs it in serial mode.
extern "C" __global__ void serial_mix(const int* x, int* y, unsigned* hits,
                                      int* first, int n) {
  __shared__ int s[64];
  const int t = threadIdx.x, i = blockIdx.x * blockDim.x + t;
  if (blockIdx.x == 0) s[t] = 100 + t;     // only block 0 writes shared memory
  first[i] = s[t];                         // block 1 must read the 0xFF poison
  if (i >= n) return;                      // early return: the rest is skipped
  atomicAdd(hits, 1u);
  y[i] = x[i] * 2 + int(threadIdx.x);
}
"""

PARALLEL_SRC = r"""
// No shared memory: blocks of a serial-mode launch may run on several threads.
extern "C" __global__ void count_blocks(unsigned* hits, unsigned long long* sum,
                                        int* owner) {
  atomicAdd(hits, 1u);
  atomicAdd(sum, (unsigned long long)(blockIdx.x * blockDim.x + threadIdx.x));
  if (threadIdx.x == 0) owner[blockIdx.x] = int(blockIdx.x);
}

// Block 0 waits (bounded) for block 1's flag: it can only see it when another
// OS thread runs block 1 while block 0 spins.
extern "C" __global__ void handshake(int* flag, int* seen) {
  if (blockIdx.x == 1) {
    atomicExch(flag, 1);
    return;
  }
  const long long t0 = clock64();
  while (atomicAdd(flag, 0) == 0 && clock64() - t0 < 5000000000ll) {}
  seen[0] = atomicAdd(flag, 0);
}
"""


def test_launch_plan_picks_modes() -> None:
    assert emu.launch_plan(SRC, 8) == ("threads", 1)  # names __syncthreads
    assert emu.launch_plan(SERIAL_SRC, 8) == ("serial", 1)  # has __shared__
    workers = min(emu.PARALLEL_BLOCKS, 8)
    assert emu.launch_plan(PARALLEL_SRC, (4, 2)) == ("serial", workers)
    assert emu.launch_plan(PARALLEL_SRC, 1) == ("serial", 1)
    # A primitive named only in a comment does not count.
    assert emu.launch_plan("// __syncthreads()\n" + PARALLEL_SRC, 8)[0] == "serial"


@pytest.mark.parametrize("mode", ["auto", "threads"])
def test_serial_mode_matches_threads(mode: str) -> None:
    n = 100  # 2 blocks of 64: block 1 has 28 threads past n that return early
    x = np.arange(128, dtype=np.int32) * 3 - 50
    y = np.full(128, -7, np.int32)
    hits = np.zeros(1, np.uint32)
    first = np.zeros(128, np.int32)
    emulate(SERIAL_SRC, "serial_mix", 2, 64, [x, y, hits, first, n], mode=mode)
    t = np.arange(128) % 64
    np.testing.assert_array_equal(y[:n], x[:n] * 2 + t[:n])
    np.testing.assert_array_equal(y[n:], -7)  # returned before the store
    assert hits[0] == n
    np.testing.assert_array_equal(first[:64], 100 + np.arange(64))
    np.testing.assert_array_equal(first[64:], -1)  # poisoned, not block 0's


def test_serial_mode_reports_a_barrier() -> None:
    x = np.arange(64, dtype=np.int32)
    with pytest.raises(EmulationError, match=r"'neighbour'.*serial mode"):
        emulate(SRC, "neighbour", 1, 64, [x, np.zeros_like(x)], mode="serial")
    with pytest.raises(EmulationError, match=r"mode='fast'"):
        emulate(SRC, "neighbour", 1, 64, [x, np.zeros_like(x)], mode="fast")


def test_parallel_blocks_atomics() -> None:
    grid, block = 37, 96  # 3 warps per block, 37 blocks over the workers
    hits = np.zeros(1, np.uint32)
    total = np.zeros(1, np.uint64)
    owner = np.full(grid, -1, np.int32)
    emulate(PARALLEL_SRC, "count_blocks", grid, block, [hits, total, owner])
    m = grid * block
    assert hits[0] == m
    assert total[0] == m * (m - 1) // 2
    np.testing.assert_array_equal(owner, np.arange(grid))


@pytest.mark.skipif(emu.PARALLEL_BLOCKS < 2, reason="one CPU: no parallel blocks")
def test_parallel_blocks_run_concurrently() -> None:
    flag = np.zeros(1, np.int32)
    seen = np.zeros(1, np.int32)
    emulate(PARALLEL_SRC, "handshake", 2, 1, [flag, seen])
    assert seen[0] == 1


def _fresh_source() -> str:
    return (
        f"// {uuid.uuid4()}\n"
        'extern "C" __global__ void inc(int* y) { y[threadIdx.x] += threadIdx.x; }'
    )


def test_pch_is_built_and_used(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setattr(emu.tempfile, "gettempdir", lambda: str(tmp_path))
    y = np.ones(40, np.int32)
    emulate(_fresh_source(), "inc", 1, 40, [y])
    np.testing.assert_array_equal(y, 1 + np.arange(40))
    gch = list((tmp_path / "lpcc-cuda-emu").glob("pch-*/lpcc_cuda_emu.h.gch"))
    assert len(gch) == 1 and gch[0].stat().st_size > 1000


def test_pch_fallbacks(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setattr(emu.tempfile, "gettempdir", lambda: str(tmp_path))
    gxx = emu._gxx("inc")
    # A corrupt .gch beside the header copy: g++ reads the header text instead.
    d = emu._pch_dir(gxx)
    d.mkdir(parents=True)
    (d / emu.HEADER.name).write_bytes(emu.HEADER.read_bytes())
    (d / (emu.HEADER.name + ".gch")).write_bytes(b"not a precompiled header")
    y = np.zeros(8, np.int32)
    emulate(_fresh_source(), "inc", 1, 8, [y])
    np.testing.assert_array_equal(y, np.arange(8))
    # A PCH directory that cannot be created: plain compile, silently.
    monkeypatch.setattr(emu.tempfile, "gettempdir", lambda: str(tmp_path / "b"))
    d = emu._pch_dir(gxx)
    d.parent.mkdir(parents=True, exist_ok=True)
    d.write_text("a file where the directory should be")
    y = np.zeros(8, np.int32)
    emulate(_fresh_source(), "inc", 1, 8, [y])
    np.testing.assert_array_equal(y, np.arange(8))
    assert emu._pch_header(gxx) is None


def test_big_block_with_barriers() -> None:
    # 1024 threads as fibers: the tree reduction's barrier pattern on 16 blocks.
    x = np.arange(64 * 16, dtype=np.float32) % 7
    y = np.zeros(16, np.float32)
    emulate(SRC, "block_sum", 16, 64, [x, y, x.size])
    np.testing.assert_array_equal(y, x.reshape(16, 64).sum(1))
