"""Pack and unpack 16 M int3 and int5 values; report medians (not a test).

    python benchmarks/bench_packing.py [--count N] [--repeat R]

The goal (issue 3) is under 0.2 s for each operation on the project machine.
Inputs are 16 M random codes, far larger than any cache, so every run is cold.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import lpcc


def cpu_description() -> str:
    """Model name and the widest SIMD the CPU has (Linux), for the record."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine()
    model = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in info.splitlines()
            if ln.startswith("model name")
        ),
        platform.machine(),
    )
    flags = next(
        (
            ln.split(":", 1)[1].split()
            for ln in info.splitlines()
            if ln.startswith("flags")
        ),
        [],
    )
    simd = "avx512f" if "avx512f" in flags else "avx2" if "avx2" in flags else "sse"
    return f"{model}, {simd}, {os.cpu_count()} cores"


def median_seconds(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description="pack/unpack throughput")
    parser.add_argument("--count", type=int, default=16 * 2**20)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    n = args.count
    rng = np.random.default_rng(0)
    print(f"lpcc {lpcc.__version__}, numpy {np.__version__}, {cpu_description()}")
    print(f"{n:,} values, median of {args.repeat} runs")
    print(
        f"{'type':<6} {'pack s':>8} {'unpack s':>9} {'pack MB/s':>10} "
        f"{'unpack MB/s':>12}  goal <0.2 s"
    )
    for name in ("int3", "int5", "int4", "uint6"):
        t = lpcc.dtype(name)
        codes = rng.integers(0, 2**t.bits, n, dtype=np.uint8)
        packed = t.pack(codes)
        assert np.array_equal(t.unpack(packed, n), codes)
        tp = median_seconds(lambda t=t, c=codes: t.pack(c), args.repeat)
        tu = median_seconds(lambda t=t, p=packed: t.unpack(p, n), args.repeat)
        mb = (n + packed.size) / 1e6  # code bytes plus packed bytes touched
        ok = "ok" if max(tp, tu) < 0.2 else "SLOW"
        print(f"{name:<6} {tp:8.3f} {tu:9.3f} {mb / tp:10.0f} {mb / tu:12.0f}  {ok}")


if __name__ == "__main__":
    main()
