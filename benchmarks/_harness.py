"""Shared pieces of the kernel benchmarks (gemv.py, later decode.py); not a test.

* `time_calls`: warm-up, then the median of many timed calls, rotating over
  a list of callables (one per weight copy, so "cold" calls stream their
  weights from DRAM instead of the 32 MiB L3).
* `copies_for`: how many distinct weight copies make a cold rotation
  (>= `COLD_BYTES` in all, 5x the L3 of the project's machines).
* `DramProbe`: the machine's DRAM read bandwidth, measured in the same run as
  the kernels (it drifts by tens of percent over minutes on these VMs), with
  a streaming-read kernel compiled by lpcc's own LLVM path and split over
  threads by lpcc's worker pool. NumPy cannot stream at full speed (its
  pairwise sum is compute-bound at about 60 % of DRAM speed), so it is not
  used for this.
* `roofline_us`: weight bytes / bandwidth, the time no weight-streaming
  kernel can beat.
* `table`: plain-text tables.
"""

from __future__ import annotations

import ctypes
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

COLD_BYTES = 160e6  # rotate through at least this many bytes of weight copies


@dataclass(frozen=True)
class Timing:
    """Per-call times of one measured point, in microseconds."""

    median_us: float
    min_us: float
    p90_us: float
    reps: int

    def as_dict(self) -> dict[str, float]:
        return {
            "med_us": self.median_us,
            "min_us": self.min_us,
            "p90_us": self.p90_us,
            "reps": self.reps,
        }


def time_calls(
    calls: Sequence[Callable[[], object]],
    *,
    target_s: float = 1.0,
    min_reps: int = 20,
    max_reps: int = 5000,
    warmup_s: float = 0.1,
    per_call_div: int = 1,
) -> Timing:
    """Median time of one call, rotating round-robin over `calls`.

    Every callable runs once (first-call work such as lazy set-up stays out
    of the timings), then the rotation runs for `warmup_s`; the number of
    timed calls is what fits in `target_s`, within [min_reps, max_reps].
    The rotation index runs on from the warm-up into the timed calls, so a
    timed call never reuses a copy touched fewer than len(calls) calls ago
    (what keeps a cold rotation cold). `per_call_div` divides each time (a
    call that runs R kernels at once, like a ggml graph of R nodes).
    """
    if not calls:
        raise ValueError("time_calls: no callables to time")
    n = len(calls)
    for c in calls:
        c()
    i = 0
    t_end = time.perf_counter() + warmup_s
    while time.perf_counter() < t_end:
        calls[i % n]()
        i += 1
    probe = max(3, min(n, 50))
    t0 = time.perf_counter()
    for _ in range(probe):
        calls[i % n]()
        i += 1
    est = (time.perf_counter() - t0) / probe
    reps = int(min(max_reps, max(min_reps, target_s / max(est, 1e-7))))
    clock = time.perf_counter_ns
    ts = np.empty(reps)
    for j in range(reps):
        c = calls[(i + j) % n]
        a = clock()
        c()
        ts[j] = clock() - a
    ts = np.sort(ts) / 1e3 / per_call_div
    return Timing(
        median_us=float(np.median(ts)),
        min_us=float(ts[0]),
        p90_us=float(ts[int(0.9 * (reps - 1))]),
        reps=reps,
    )


def copies_for(nbytes: int, cold: bool, cold_bytes: float = COLD_BYTES) -> int:
    """Weight copies for a point: 1 when hot, else enough for `cold_bytes`."""
    if not cold or nbytes <= 0:
        return 1
    return max(1, math.ceil(cold_bytes / nbytes))


def roofline_us(nbytes: float, gbs: float) -> float:
    """Microseconds to read `nbytes` at `gbs` GB/s (10^9 bytes per second)."""
    return nbytes / (gbs * 1e3)


def bench_weights(n: int, k: int, seed: int = 0) -> np.ndarray:
    """The benchmark's weight matrix W[n, k]: N(0, 0.02^2) float32, seeded.

    Every column (and the ggml subprocess) regenerates it from the seed, so
    all kernels multiply the same matrix.
    """
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, k), dtype=np.float32) * np.float32(0.02)


def bench_activations(m: int, k: int, seed: int = 1) -> np.ndarray:
    """The activations x[m, k]: N(0, 1) float32, seeded."""
    return np.random.default_rng(seed).standard_normal((m, k), dtype=np.float32)


def nmse(y: np.ndarray, ref: np.ndarray) -> float:
    """Normalized mean squared error ||y - ref||^2 / ||ref||^2 (float64)."""
    y = np.asarray(y, np.float64)
    ref = np.asarray(ref, np.float64)
    den = float((ref**2).sum())
    return float(((y - ref) ** 2).sum()) / den if den else float("nan")


# -- the DRAM read probe ------------------------------------------------------------

_BLOCK = 4096  # bytes per row of the probe kernel

# Rows [b, e) of a buffer of 4 KiB rows: 4 x 32-byte loads per step XORed into
# 4 accumulators (XOR: 1-cycle latency, so the loop is load-bound), then the
# reduced value stored to out[b] so nothing is optimized away. Generic vector
# IR: AVX2 registers at the avx2 level, SSE pairs at generic.
_PROBE_IR = f"""
declare i32 @llvm.vector.reduce.xor.v8i32(<8 x i32>)

define void @lpcc_bench_read(i64 %b, i64 %e, ptr %base, ptr %out) {{
entry:
  %start = mul i64 %b, {_BLOCK}
  %stop = mul i64 %e, {_BLOCK}
  %empty = icmp uge i64 %start, %stop
  br i1 %empty, label %done, label %loop
loop:
  %off = phi i64 [%start, %entry], [%next, %loop]
  %a0 = phi <8 x i32> [zeroinitializer, %entry], [%x0, %loop]
  %a1 = phi <8 x i32> [zeroinitializer, %entry], [%x1, %loop]
  %a2 = phi <8 x i32> [zeroinitializer, %entry], [%x2, %loop]
  %a3 = phi <8 x i32> [zeroinitializer, %entry], [%x3, %loop]
  %p0 = getelementptr i8, ptr %base, i64 %off
  %p1 = getelementptr i8, ptr %p0, i64 32
  %p2 = getelementptr i8, ptr %p0, i64 64
  %p3 = getelementptr i8, ptr %p0, i64 96
  %v0 = load <8 x i32>, ptr %p0, align 32
  %v1 = load <8 x i32>, ptr %p1, align 32
  %v2 = load <8 x i32>, ptr %p2, align 32
  %v3 = load <8 x i32>, ptr %p3, align 32
  %x0 = xor <8 x i32> %a0, %v0
  %x1 = xor <8 x i32> %a1, %v1
  %x2 = xor <8 x i32> %a2, %v2
  %x3 = xor <8 x i32> %a3, %v3
  %next = add i64 %off, 128
  %more = icmp ult i64 %next, %stop
  br i1 %more, label %loop, label %exit
exit:
  %m0 = xor <8 x i32> %x0, %x1
  %m1 = xor <8 x i32> %x2, %x3
  %m = xor <8 x i32> %m0, %m1
  %r = call i32 @llvm.vector.reduce.xor.v8i32(<8 x i32> %m)
  %po = getelementptr i32, ptr %out, i64 %b
  store i32 %r, ptr %po, align 4
  br label %done
done:
  ret void
}}
"""


@dataclass(frozen=True)
class Bandwidth:
    """DRAM read bandwidth samples (GB/s) of one thread count."""

    threads: int
    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


class DramProbe:
    """Streams a large buffer with an LLVM-compiled kernel over lpcc's pool.

    The buffer (512 MiB by default, 16x the L3) is allocated and touched
    once; each sample is one full read, timed; `measure` returns spaced
    samples after a warm-up read. After a read, `results[b]` holds the XOR
    of the 32-bit words of the rows [b, e) one thread read (a check that
    every byte was loaded).
    """

    def __init__(self, mib: int = 512) -> None:
        from lpcc.codegen.llvm import jit

        self._lib = jit.jit(_PROBE_IR)
        self._fn = self._lib.function(
            "lpcc_bench_read",
            None,
            ctypes.c_int64,
            ctypes.c_int64,
            ctypes.c_void_p,
            ctypes.c_void_p,
        )
        self.nbytes = mib << 20
        self.rows = self.nbytes // _BLOCK
        # 4 KiB-aligned view of a touched buffer (aligned 32-byte loads).
        raw = np.empty(self.nbytes + _BLOCK, np.uint8)
        skip = (-raw.ctypes.data) % _BLOCK
        self.buffer = raw[skip : skip + self.nbytes]
        self.buffer[:] = 1
        self.results = np.zeros(self.rows, np.int32)

    def measure(self, threads: int, samples: int = 7, gap_s: float = 0.05) -> Bandwidth:
        """`samples` timed full reads on `threads` threads (GB/s each)."""
        from lpcc.codegen.llvm.pool import Pool

        base, out = self.buffer.ctypes.data, self.results.ctypes.data
        got = []
        with Pool(threads, granule=1) as pool:
            pool.run(self._fn, self.rows, base, out)  # warm-up read
            for _ in range(samples):
                t0 = time.perf_counter()
                pool.run(self._fn, self.rows, base, out)
                dt = time.perf_counter() - t0
                got.append(self.nbytes / dt / 1e9)
                time.sleep(gap_s)
        return Bandwidth(threads, tuple(got))

    def close(self) -> None:
        """Free the buffer."""
        self.buffer = np.empty(0, np.uint8)
        self.results = np.empty(0, np.int32)
        self.rows = self.nbytes = 0


# -- reporting ----------------------------------------------------------------------


def cpu_line() -> str:
    """CPU model with family/model (Zen 3 and Zen 5 both say 'AMD EPYC'), ISA."""
    from lpcc.codegen.llvm.isa import host_isa

    model, family, number = platform.machine(), "?", "?"
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = ln.partition(":")
            key, value = key.strip(), value.strip()
            if key == "model name":
                model = value
            elif key == "cpu family":
                family = value
            elif key == "model" and number == "?":
                number = value
            elif not ln.strip() and model != platform.machine():
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0
    return (
        f"{model} (family {family}, model {number}), {cores or os.cpu_count()} "
        f"cores, lpcc ISA level {host_isa()}"
    )


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A left-aligned first column, right-aligned others, 2 spaces apart."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for r in cells:
        parts = [
            r[i].ljust(widths[i]) if i == 0 else r[i].rjust(widths[i])
            for i in range(len(headers))
        ]
        lines.append("  ".join(parts).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        if abs(v) >= 100:
            return f"{v:.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.2f}"
    return str(v)
