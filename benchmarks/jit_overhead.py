"""What `@lpcc.jit` costs on top of the program it runs (not a test).

    python benchmarks/jit_overhead.py [--target cpu] [--calls 2000] [--repeats 30]

1. Cache-hit call overhead: a small function (`torch.maximum(x + y, y) * 2`
   on 4x8 float32 tensors) called through the `@lpcc.jit` wrapper, against
   the same compiled program called bare: `CompiledModel(x, y)` (torch in,
   torch out, what the wrapper calls) and `VM.run([x, y])` (NumPy, the
   floor). Each figure is the median over `repeats` batches of the mean time
   per call in a batch of `calls`; the variants are measured interleaved, so
   drift on a shared machine hits them alike. Goal: jit - CompiledModel
   under 20 us.
2. Second-process start: a fresh Python process that imports torch and
   lpcc, then makes the first call of the jit function, with an empty cache
   directory (it compiles) and again with the entry the first one wrote (it
   loads the saved program). Times are the first call alone (measured in
   the child) and the whole process (measured here), median of `--starts`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

CHILD = """
import json, sys, time
t0 = time.perf_counter()
import torch, lpcc

@lpcc.jit(target=sys.argv[1])
def f(x, y):
    return torch.maximum(x + y, y) * 2.0

x, y = torch.ones(4, 8), torch.full((4, 8), 0.5)
t1 = time.perf_counter()
f(x, y)
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "first_call_s": t2 - t1, **f.stats}))
"""


def per_call(fn: Callable[[], object], calls: int) -> float:
    """Mean seconds per call over one batch of `calls` calls."""
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def hit_overhead(target: str, calls: int, repeats: int) -> dict[str, float]:
    """Median us per call of: VM.run, CompiledModel, jit (torch), jit (NumPy)."""
    import torch

    import lpcc

    @lpcc.jit(target=target)
    def f(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.maximum(x + y, y) * 2.0

    x, y = torch.randn(4, 8), torch.randn(4, 8)
    xn, yn = x.numpy(), y.numpy()
    model = f.warmup(x, y)
    assert torch.equal(f(x, y), model(x, y))
    vm = model._vm
    variants = {
        "VM.run (NumPy in/out)": lambda: vm.run([xn, yn]),
        "CompiledModel (torch in/out)": lambda: model(x, y),
        "@lpcc.jit hit (torch in/out)": lambda: f(x, y),
        "@lpcc.jit hit (NumPy in, torch out)": lambda: f(xn, yn),
    }
    samples: dict[str, list[float]] = {k: [] for k in variants}
    for fn in variants.values():  # warm up
        per_call(fn, calls // 4 or 1)
    for _ in range(repeats):
        for name, fn in variants.items():
            samples[name].append(per_call(fn, calls))
    return {k: statistics.median(v) * 1e6 for k, v in samples.items()}


def starts(target: str, n: int) -> dict[str, dict[str, float]]:
    """Median (first call s, process s) of cold (compile) and warm (load) starts."""
    rows: dict[str, list[tuple[float, float, dict[str, int]]]] = {
        "compile (empty cache)": [],
        "load from disk": [],
    }
    for _ in range(n):
        with tempfile.TemporaryDirectory(prefix="lpcc-jit-bench-") as cache:
            env = {**os.environ, "LPCC_CACHE_DIR": cache, "LPCC_PROGRESS": "never"}
            env.pop("LPCC_ALWAYS_COMPILE", None)
            env.pop("LPCC_DISABLE_JIT", None)
            for name in rows:
                start = time.perf_counter()
                out = subprocess.run(
                    [sys.executable, "-c", CHILD, target],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                wall = time.perf_counter() - start
                info = json.loads(out.stdout.strip().splitlines()[-1])
                rows[name].append((info["first_call_s"], wall, info))
    result = {}
    for name, runs in rows.items():
        stats = runs[-1][2]
        result[name] = {
            "first_call_s": statistics.median(r[0] for r in runs),
            "process_s": statistics.median(r[1] for r in runs),
            "compiles": stats["compiles"],
            "disk_loads": stats["disk_loads"],
        }
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", default="cpu", choices=("cpu", "reference"))
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--starts", type=int, default=3)
    args = ap.parse_args()

    import lpcc

    print(
        f"lpcc {lpcc.__version__}, Python {platform.python_version()}, "
        f"{platform.machine()}, {os.cpu_count()} cores, target={args.target}"
    )
    with tempfile.TemporaryDirectory(prefix="lpcc-jit-bench-") as cache:
        os.environ["LPCC_CACHE_DIR"] = cache  # never the user's real cache
        us = hit_overhead(args.target, args.calls, args.repeats)
    base = us["CompiledModel (torch in/out)"]
    print(
        f"\n1. cache-hit call, 4x8 f32 `maximum(x + y, y) * 2` "
        f"(median of {args.repeats} x {args.calls} calls)"
    )
    print(f"{'call':<38}{'us/call':>10}{'vs CompiledModel':>18}")
    for name, t in us.items():
        print(f"{name:<38}{t:>10.2f}{t - base:>+18.2f}")
    overhead = us["@lpcc.jit hit (torch in/out)"] - base
    print(f"jit overhead over CompiledModel: {overhead:.2f} us (goal < 20 us)")

    print(f"\n2. second-process start (median of {args.starts})")
    head = f"{'start':<24}{'first call s':>14}{'process s':>12}"
    print(f"{head}{'compiles':>10}{'loads':>7}")
    for name, r in starts(args.target, args.starts).items():
        print(
            f"{name:<24}{r['first_call_s']:>14.3f}{r['process_s']:>12.2f}"
            f"{r['compiles']:>10}{r['disk_loads']:>7}"
        )


if __name__ == "__main__":
    main()
