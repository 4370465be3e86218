"""Quantized GEMV/GEMM on an NVIDIA GPU: lpcc's CUDA kernels vs f16 cuBLAS.

For each width (W4A16, W3A16, W2A16, W8A16), shape K x N and M, a one-layer
`nn.Linear` is compiled with `target="cuda"`; its one kernel (the fused
group GEMM) is launched on CuPy device arrays (`runner.device_launcher`, no
host copies), timed with CUDA events, median of `--repeat` runs, cycling
over enough weight copies to exceed the L2 cache ("cold", as the CPU
benchmarks). Printed side by side, from the same run: lpcc's time, f16
`cupy.matmul` (cuBLAS) on the same shape, the speedup, and the percent of
the HBM bandwidth this GPU reaches on a device-to-device copy (measured
here, not taken from a data sheet).

Needs a GPU and CuPy; without them it says so and exits 2 (the SASS
instruction counts of `benchmarks/cuda_sass.py` are the no-GPU figures).

    python benchmarks/gpu_gemm.py            # the issue's table
    python benchmarks/gpu_gemm.py --quick    # one shape, M = 1 and 16
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

SHAPES = [(4096, 4096), (8192, 8192), (4096, 14336)]
MS = [1, 16, 128]
WIDTHS = ["int4", "int3", "int2", "int8"]
L2_BYTES = 64 << 20  # above H100/H200's 50 MB L2


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--group", type=int, default=128)
    p.add_argument("--repeat", type=int, default=50)
    p.add_argument("--quick", action="store_true", help="4096x4096, M = 1 and 16")
    p.add_argument("--widths", default=",".join(WIDTHS))
    return p.parse_args(argv)


def _time(fn: Any, repeat: int) -> float:
    """Median seconds of `fn(i)` over `repeat` calls, CUDA events around each."""
    import cupy

    fn(0)  # warm up: module load, first launch
    times = []
    for i in range(repeat):
        start, stop = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        fn(i)
        stop.record()
        stop.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, stop) / 1e3)
    return statistics.median(times)


def hbm_bandwidth(repeat: int) -> float:
    """Bytes/s of a 1 GiB device-to-device copy (read + write counted)."""
    import cupy

    a = cupy.ones(1 << 28, cupy.float32)
    b = cupy.empty_like(a)
    t = _time(lambda i: b.__setitem__(slice(None), a), repeat)
    return 2 * a.nbytes / t


def lpcc_kernel(width: str, k: int, n: int, m: int, group: int) -> tuple:
    """(launch, device inputs, constant indices, outputs, weight bytes, note)."""
    import cupy
    import torch
    from lpcc.runtime import Call

    import lpcc
    from lpcc.codegen.cuda.runner import device_launcher

    torch.manual_seed(0)
    layer = torch.nn.Linear(k, n, bias=False).eval()
    x = torch.randn(m, k)
    cm = lpcc.compile(layer, (x,), quant=f"{width}-g{group}", target="cuda")
    program = cm.program
    calls = [ins for ins in program.instructions if isinstance(ins, Call)]
    gemm = [c for c in calls if program.kernel(c.kernel).target == "cuda"]
    if len(gemm) != 1:
        raise SystemExit(f"expected one CUDA kernel for {width} {k}x{n}, got {calls}")
    call = gemm[0]
    kernel = program.kernel(call.kernel)
    ins = []
    weights = []  # indices of the constant inputs (copied for cold runs)
    weight_bytes = 0
    for i, b in enumerate(call.inputs):
        info = program.buffers[b]
        if info.constant is not None:
            arr = program.constants[info.constant].values()  # as the VM decodes
            weight_bytes += arr.nbytes
            weights.append(i)
            ins.append(cupy.asarray(np.ascontiguousarray(arr)))
        else:
            ins.append(cupy.asarray(x.numpy()))
    outs = [cupy.empty((m, n), cupy.float32)]
    launch = device_launcher(kernel.name, kernel.source, kernel.meta, kernel.binaries)
    note = kernel.meta.get("note", "")
    return launch, ins, weights, outs, weight_bytes, note


def point(width: str, k: int, n: int, m: int, a: argparse.Namespace, bw: float) -> str:
    """One table row: lpcc and cuBLAS f16 on the same shape, cold weights."""
    import cupy

    from lpcc import config

    with config.override(cuda_device="gpu"):
        launch, ins, weights, outs, wbytes, note = lpcc_kernel(width, k, n, m, a.group)
    copies = max(1, -(-L2_BYTES // max(wbytes, 1)))
    sets = [ins] + [
        [c.copy() if j in weights else c for j, c in enumerate(ins)]
        for _ in range(copies - 1)
    ]
    t = _time(lambda i: launch(sets[i % copies], outs, {}), a.repeat)
    xa = cupy.random.standard_normal((m, k)).astype(cupy.float16)
    wa = [
        cupy.random.standard_normal((k, n)).astype(cupy.float16)
        for _ in range(max(1, -(-L2_BYTES // (2 * k * n))))
    ]
    tb = _time(lambda i: cupy.matmul(xa, wa[i % len(wa)]), a.repeat)
    moved = wbytes + 2 * m * k + 4 * m * n
    return (
        f"| {width} | {k}x{n} | {m} | {t * 1e6:.1f} | {tb * 1e6:.1f} | "
        f"{tb / t:.2f}x | {100 * moved / t / bw:.0f} | {note} |"
    )


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args(argv)
    from lpcc.codegen.cuda.runner import gpu_available

    if not gpu_available():
        print(
            "gpu_gemm: no GPU (CuPy missing or no CUDA device); the no-GPU "
            "figures are `python benchmarks/cuda_sass.py`",
            file=sys.stderr,
        )
        return 2
    import cupy

    dev = cupy.cuda.Device()
    props = cupy.cuda.runtime.getDeviceProperties(dev.id)
    bw = hbm_bandwidth(20)
    print(f"# {props['name'].decode()} sm_{dev.compute_capability}")
    print(f"# measured HBM copy bandwidth: {bw / 1e9:.0f} GB/s")
    print("| width | K x N | M | lpcc us | cuBLAS f16 us | speedup | % HBM | kernel |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    shapes = SHAPES[:1] if a.quick else SHAPES
    ms = [1, 16] if a.quick else MS
    for width in a.widths.split(","):
        for k, n in shapes:
            for m in ms:
                print(point(width, k, n, m, a, bw))
    return 0


if __name__ == "__main__":
    sys.exit(main())
