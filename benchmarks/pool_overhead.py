"""Per-call overhead of the CPU kernel worker pool (not a test).

    python benchmarks/pool_overhead.py [--calls 200] [--repeats 50]

Calls an empty LLVM kernel `empty(begin, end, ptr)` (compiled and loaded
like every CPU kernel) directly through ctypes, and through
`lpcc.codegen.llvm.pool.Pool.run` with 1 and 2 threads, plus a
`concurrent.futures` thread pool doing the same split for comparison. Each
figure is the median over `repeats` batches of the mean time per call in a
batch of `calls`. The overhead is what a kernel must amortize: at 2 threads
a kernel shorter than about twice the pool's figure gains nothing from the
second thread. On a machine where other processes hold the cores, the
2-thread figures grow (a worker waits for a core to wake on).
"""

from __future__ import annotations

import argparse
import ctypes
import platform
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from lpcc.codegen.llvm import isa, jit
from lpcc.codegen.llvm.pool import Pool

EMPTY = """
define void @empty(i64 %b, i64 %e, ptr %p) {
  ret void
}
"""


def per_call(fn: Callable[[], None], calls: int, repeats: int) -> float:
    """Median over `repeats` batches of seconds per call of `fn`."""
    for _ in range(calls):  # warm up threads and caches
        fn()
    batches = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        batches.append((time.perf_counter() - start) / calls)
    return statistics.median(batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--rows", type=int, default=4096)
    opts = parser.parse_args()

    kernel = jit.jit(EMPTY).function(
        "empty", None, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p
    )
    buf = np.zeros(16, np.float32)
    ptr, n = buf.ctypes.data, opts.rows
    rows: list[tuple[str, float]] = []
    rows.append(("direct ctypes call", per_call(lambda: kernel(0, n, ptr), **_r(opts))))
    for threads, native in ((1, None), (2, None), (2, False)):
        with Pool(threads, native=native) as pool:
            name = f"Pool({threads}).run" + (
                ", Python workers" if native is False else ""
            )
            if threads > 1 and pool.native:
                name += ", native workers"
            rows.append(
                (name, per_call(lambda p=pool: p.run(kernel, n, ptr), **_r(opts)))
            )
    with ThreadPoolExecutor(1) as ex:

        def futures_run() -> None:
            half = n // 2
            fut = ex.submit(kernel, half, n, ptr)
            kernel(0, half, ptr)
            fut.result()

        rows.append(
            ("ThreadPoolExecutor, 2 threads", per_call(futures_run, **_r(opts)))
        )

    print(f"CPU: {platform.processor() or platform.machine()}, ISA {isa.host_isa()}")
    print(f"empty kernel over {n} rows; median of {opts.repeats} x {opts.calls} calls")
    print(f"{'':32}{'us/call':>10}{'overhead us':>14}")
    base = rows[0][1]
    for name, t in rows:
        print(f"{name:32}{t * 1e6:>10.2f}{(t - base) * 1e6:>14.2f}")


def _r(opts: argparse.Namespace) -> dict[str, int]:
    return {"calls": opts.calls, "repeats": opts.repeats}


if __name__ == "__main__":
    main()
