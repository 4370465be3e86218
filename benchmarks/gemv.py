"""Low-bit GEMV/GEMM on the CPU: lpcc vs torch vs llama.cpp vs the DRAM roofline.

    python benchmarks/gemv.py [--shapes 4096x4096,4096x11008,11008x4096]
        [--m 1,16,64] [--bits 1,2,3,4,5,6,7,8,f4e2m1,f8e4m3fn] [--threads 1,2]
        [--regimes cold,hot] [--columns lpcc,torch,ggml] [--group 128]
        [--quick] [--png gemv.png] [--json gemv.jsonl]

Headline subset (about 5 minutes on a 2-core machine):

    python benchmarks/gemv.py --shapes 4096x4096 --m 1 --bits 2,3,4 \\
        --threads 1,2 --regimes cold --quick --png gemv.png

y = x W^T with W[N, K] (shapes are given K x N), x[M, K] float32, measured
side by side in one run:

* lpcc: `lpcc.compile(nn.Linear(K, N), (x,), quant="int<b>-g<G>",
  target="cpu")` for each width b ("uint1" for 1 bit: symmetric int1 has no
  nonzero level; float formats as named), run with `VM(program).run([x])`.
  The time includes the VM's Python overhead (reported separately as "VM
  floor": a 1x1 program). A kernel with no native generator runs in the
  interpreter; such methods are marked "[k/n interp]" and their times say
  nothing about lpcc's kernels.
* torch 2.x eager: `F.linear` in bf16 (the dense anchor: torch's fp32 GEMV
  goes to single-threaded MKL on AMD) and `aten._weight_int4pack_mm_for_cpu`
  (int4, groups of G, bf16 activations: its fp32 path is ~55x slower).
* llama.cpp: ggml's Q4_0, Q4_K, Q3_K, Q2_K, TQ2_0 `mul_mat` (plain, and
  repacked where llama.cpp repacks on this CPU) through ctypes in a child
  process (`_ggml.py`); needs llama-cpp-python (the `bench` extra), else the
  column is skipped with a note.
* the DRAM read bandwidth (`_harness.DramProbe`), before and after the
  kernels; roofline time = weight bytes / bandwidth (the median of all
  samples of that thread count), and "% roof" = roofline time / measured
  time.

Regimes: cold rotates through distinct weight copies totalling >= 160 MB (5x
L3), so weights stream from DRAM as in LLM decode; hot calls one copy again
and again (a 4096x4096 int4 matrix then sits in L3, so hot % roof can pass
100 %). Bytes per weight count codes + scales + zero points as each kernel
stores them (lpcc: the program's packed constants). Each point: warm-up,
then the median (with --stat min: the fastest) of >= 10 calls (about 1 s,
0.3 s with --quick); the roofline then uses the median (fastest) probe
sample. NMSE is against x @ W^T with the unquantized fp32 weights, so it
includes the format's quantization error (RTN on N(0, s^2) weights: about
1e-2 at 4 bits, 0.6 for symmetric int2, whose levels are -1, 0, 1); it
checks that each kernel computes the product, not its precision (NaN or
> 1.5 is flagged). This VM's DRAM bandwidth drifts over minutes, and other
processes on the 2 cores slow 2-thread kernels a lot (ggml's spinning
OpenMP barriers most): the run prints the load average; compare points
measured in one run only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    COLD_BYTES,
    DramProbe,
    Timing,
    bench_activations,
    bench_weights,
    copies_for,
    cpu_line,
    nmse,
    roofline_us,
    table,
    time_calls,
)

FLOAT_FORMATS = ("f4e2m1", "f8e4m3fn")
DEFAULT_BITS = ("1", "2", "3", "4", "5", "6", "7", "8", *FLOAT_FORMATS)
DEFAULT_SHAPES = ((4096, 4096), (4096, 11008), (11008, 4096))
GGML_SCRIPT = Path(__file__).resolve().parent / "_ggml.py"


@dataclass
class Point:
    """One measured (method, shape, M, threads, regime)."""

    family: str  # "lpcc", "torch", "ggml"
    method: str
    bit_class: int  # the width class it competes in (16 for bf16)
    k: int
    n: int
    m: int
    threads: int
    regime: str
    weight_bytes: int
    copies: int
    timing: Timing
    nmse: float | None = None
    native: bool = True  # lpcc: every kernel compiled (none interpreted)
    extra: dict[str, Any] = field(default_factory=dict)
    stat: str = "median"  # which per-call time `us` reports: median or min

    @property
    def bpw(self) -> float:
        return 8 * self.weight_bytes / (self.n * self.k)

    @property
    def us(self) -> float:
        return self.timing.min_us if self.stat == "min" else self.timing.median_us

    @property
    def gflops(self) -> float:
        return 2 * self.m * self.n * self.k / self.us / 1e3

    def record(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("timing")
        return d | self.timing.as_dict() | {"bpw": self.bpw}


@dataclass
class Run:
    """Everything one benchmark run measured, and what it could not."""

    points: list[Point] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    bandwidth: dict[int, list[float]] = field(default_factory=dict)
    floors: dict[str, float] = field(default_factory=dict)
    ggml_described: bool = False
    stat: str = "median"

    def bw(self, threads: int) -> float | None:
        """Bandwidth for the roofline: median sample (max with --stat min)."""
        s = self.bandwidth.get(threads)
        if not s:
            return None
        return float(max(s) if self.stat == "min" else np.median(s))

    def note(self, text: str) -> None:
        print(f"note: {text}", flush=True)
        self.notes.append(text)


# -- options ------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--shapes", default=",".join(f"{k}x{n}" for k, n in DEFAULT_SHAPES))
    p.add_argument("--m", default="1,16,64", help="rows of x (1 = GEMV)")
    p.add_argument(
        "--bits",
        default=",".join(DEFAULT_BITS),
        help="lpcc weight widths 1..8 and float formats; also filters the ggml "
        "types (4: Q4_0/Q4_K, 3: Q3_K, 2: Q2_K/TQ2_0) and torch int4 (4)",
    )
    p.add_argument("--threads", default="1,2")
    p.add_argument("--regimes", default="cold,hot")
    p.add_argument("--columns", default="lpcc,torch,ggml")
    p.add_argument("--group", type=int, default=128, help="lpcc and torch int4 G")
    p.add_argument(
        "--lpcc-kernels",
        default="auto",
        help="lpcc kernel kinds to measure: auto (the kernel-choice rule), lut, "
        "dequant (kernels={'*': kind}); e.g. auto,lut,dequant for an A/B run",
    )
    p.add_argument("--target-s", type=float, default=1.0, help="timing per point")
    p.add_argument(
        "--cold-mb",
        type=float,
        default=COLD_BYTES / 1e6,
        help="MB of weight copies a cold rotation covers (default 160: 5x L3)",
    )
    p.add_argument("--quick", action="store_true", help="0.3 s per point, 5 samples")
    p.add_argument(
        "--stat",
        choices=("median", "min"),
        default="median",
        help="per-call time the tables use; min is the better estimate of a "
        "kernel's speed when other processes share the cores",
    )
    p.add_argument("--probe-mib", type=int, default=512)
    p.add_argument("--png", default=None, help="plot time vs bits per weight")
    p.add_argument("--json", default=None, help="write every point as JSON lines")
    a = p.parse_args(argv)
    try:
        a.shapes = [tuple(int(v) for v in s.split("x")) for s in a.shapes.split(",")]
        a.m = [int(v) for v in a.m.split(",")]
        a.threads = [int(v) for v in a.threads.split(",")]
    except ValueError as err:
        p.error(f"--shapes KxN[,..], --m and --threads take integers: {err}")
    if any(len(s) != 2 for s in a.shapes):
        p.error("--shapes: each shape is KxN, e.g. 4096x11008")
    a.bits = [b.strip() for b in a.bits.split(",") if b.strip()]
    for b in a.bits:
        if b not in DEFAULT_BITS:
            p.error(f"--bits: {b!r} is not one of {','.join(DEFAULT_BITS)}")
    a.regimes = a.regimes.split(",")
    if not set(a.regimes) <= {"cold", "hot"}:
        p.error("--regimes: cold and/or hot")
    a.columns = set(a.columns.split(","))
    if not a.columns <= {"lpcc", "torch", "ggml"}:
        p.error("--columns: any of lpcc,torch,ggml")
    a.lpcc_kernels = [v.strip() for v in a.lpcc_kernels.split(",") if v.strip()]
    if not a.lpcc_kernels or not set(a.lpcc_kernels) <= {"auto", "lut", "dequant"}:
        p.error("--lpcc-kernels: any of auto,lut,dequant")
    a.samples = 5 if a.quick else 9
    if a.quick:
        a.target_s = min(a.target_s, 0.3)
    return a


def quant_spec(width: str, group: int) -> str:
    """The lpcc quant string of a --bits entry."""
    if width in FLOAT_FORMATS:
        return f"{width}-g{group}"
    if width == "1":
        return f"uint1-g{group}"  # symmetric int1 has no nonzero level
    return f"int{width}-g{group}"


def bit_class(width: str) -> int:
    return {"f4e2m1": 4, "f8e4m3fn": 8}.get(width) or int(width)


def ggml_types(bits: Iterable[str]) -> list[str]:
    """The llama.cpp types competing with the requested integer widths."""
    want = set(bits)
    types = []
    if "4" in want:
        types += ["Q4_0", "Q4_K"]
    if "3" in want:
        types += ["Q3_K"]
    if "2" in want:
        types += ["Q2_K", "TQ2_0"]
    return types


# -- bandwidth ----------------------------------------------------------------------


def measure_bandwidth(run: Run, a: argparse.Namespace, when: str) -> None:
    try:
        probe = DramProbe(a.probe_mib)
    except Exception as err:  # no LLVM: report, keep the rest of the run
        run.note(f"DRAM probe unavailable ({type(err).__name__}: {err})")
        return
    try:
        for th in a.threads:
            bw = probe.measure(th, samples=a.samples)
            run.bandwidth.setdefault(th, []).extend(bw.samples)
            print(
                f"DRAM read ({when}), {th}T: median {bw.median:.1f} GB/s "
                f"(samples {min(bw.samples):.1f}-{max(bw.samples):.1f}, "
                f"{a.probe_mib} MiB buffer)",
                flush=True,
            )
    finally:
        probe.close()


# -- lpcc ---------------------------------------------------------------------------


def _linear(k: int, n: int) -> Any:
    import torch

    lin = torch.nn.Linear(k, n, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(bench_weights(n, k)))
    return lin


def vm_floor(run: Run, a: argparse.Namespace) -> None:
    """Time VM.run of a 1x1 linear program: the VM's per-call overhead."""
    import torch
    from lpcc.runtime import VM

    import lpcc
    from lpcc.errors import LpccError

    try:
        cm = lpcc.compile(
            torch.nn.Linear(1, 1, bias=False), (torch.ones(1, 1),), target="cpu"
        )
    except LpccError as err:
        run.note(f"VM floor not measured: {err}")
        return
    vm, x = VM(cm.program), np.ones((1, 1), np.float32)
    t = time_calls([lambda: vm.run([x])], target_s=0.3)
    native = all(k.target == "cpu" for k in cm.program.kernels)
    run.floors["lpcc VM.run, 1x1 linear" + ("" if native else " (interpreted)")] = (
        t.median_us
    )


def lpcc_points(run: Run, a: argparse.Namespace, k: int, n: int, tmp: Path) -> None:
    import torch
    from lpcc.runtime import VM
    from lpcc.runtime import format as fmt

    import lpcc
    from lpcc import config
    from lpcc.codegen.llvm.pool import default_pool
    from lpcc.errors import LpccError

    lin = _linear(k, n)
    w64 = bench_weights(n, k).astype(np.float64)
    for width, kind in ((w, kd) for w in a.bits for kd in a.lpcc_kernels):
        q = quant_spec(width, a.group)
        if kind == "lut" and width in FLOAT_FORMATS:
            continue  # float codes have no bit planes
        for m in a.m:
            x = bench_activations(m, k)
            t0 = time.perf_counter()
            try:
                cm = lpcc.compile(
                    lin,
                    (torch.from_numpy(x),),
                    quant=q,
                    target="cpu",
                    kernels=None if kind == "auto" else {"*": kind},
                )
            except LpccError as err:
                run.note(f"lpcc {q} {kind} {k}x{n} M={m}: not compiled ({err})")
                continue
            compile_s = time.perf_counter() - t0
            prog = cm.program
            nbytes = sum(len(c.data) for c in prog.constants)
            interp = [kn.name for kn in prog.kernels if kn.target != "cpu"]
            method = f"lpcc {q}" + ("" if kind == "auto" else f" {kind}")
            if interp:
                method += f" [{len(interp)}/{len(prog.kernels)} interp]"
            path = tmp / f"gemv_{q}_{kind}_{k}x{n}_m{m}.lpcc"
            cm.save(path)
            del cm, prog
            ref = x.astype(np.float64) @ w64.T
            for regime in a.regimes:
                copies = copies_for(nbytes, regime == "cold", a.cold_mb * 1e6)
                # Each load reads its own bytes: distinct weight memory per VM.
                vms = [VM(fmt.load(path)) for _ in range(copies)]
                err = nmse(vms[0].run([x])[0], ref)
                calls = [(lambda vm=vm, x=x: vm.run([x])) for vm in vms]
                for th in a.threads:
                    with config.override(num_threads=th):
                        t = time_calls(calls, target_s=a.target_s, min_reps=10)
                        pool_threads = default_pool().num_threads
                    run.points.append(
                        Point(
                            "lpcc",
                            method,
                            bit_class(width),
                            k,
                            n,
                            m,
                            th,
                            regime,
                            nbytes,
                            copies,
                            t,
                            err,
                            native=not interp,
                            extra={
                                "quant": q,
                                "compile_s": round(compile_s, 2),
                                "interpreted": interp,
                                "pool_threads": pool_threads,
                            },
                        )
                    )
                    _progress(run.points[-1])
                del vms, calls
            path.unlink(missing_ok=True)


# -- torch --------------------------------------------------------------------------


def _int4_pack(w: Any, group: int) -> tuple[Any, Any, int]:
    """torch's CPU int4 layout (w = (q - 8) * scale + zero, bf16 scales/zeros).

    Asymmetric min/max RTN per group of `group` along K; returns (packed
    [N, K/2] uint8, scales_and_zeros [K/G, N, 2] bf16, bytes).
    """
    import torch

    aten = torch.ops.aten
    n, k = w.shape
    g = w.reshape(n, k // group, group)
    lo, hi = g.amin(-1), g.amax(-1)
    s = ((hi - lo) / 15).clamp(min=1e-8)
    q = ((g - lo[..., None]) / s[..., None]).round().clamp(0, 15).to(torch.int32)
    z = lo + 8 * s  # (q - 8) * s + z == q * s + lo
    packed = aten._convert_weight_to_int4pack_for_cpu(q.reshape(n, k).contiguous(), 2)
    sz = torch.stack([s, z], -1).transpose(0, 1).contiguous().to(torch.bfloat16)
    return packed, sz, packed.numel() + sz.numel() * 2


def torch_floor(run: Run) -> None:
    import torch
    import torch.nn.functional as F

    w, x = torch.randn(8, 8), torch.randn(1, 8)
    torch.set_num_threads(1)
    t = time_calls([lambda: F.linear(x, w)], target_s=0.3)
    run.floors["torch F.linear 1x8x8 eager call"] = t.median_us


def torch_points(run: Run, a: argparse.Namespace, k: int, n: int) -> None:
    import torch
    import torch.nn.functional as F

    aten = torch.ops.aten
    w = torch.from_numpy(bench_weights(n, k))
    w64 = w.double()
    methods: list[tuple[str, int, Any, Any]] = []  # name, class, make(), call
    methods.append(
        (
            "torch bf16 F.linear",
            16,
            lambda: (w.to(torch.bfloat16), n * k * 2),
            lambda x, st: F.linear(x, st),
        )
    )
    if "4" in a.bits and k % a.group == 0:
        g = a.group

        def make_int4() -> tuple[Any, int]:
            packed, sz, nb = _int4_pack(w, g)
            return (packed, sz), nb

        methods.append(
            (
                f"torch int4pack_mm g{g} (bf16 act)",
                4,
                make_int4,
                lambda x, st: aten._weight_int4pack_mm_for_cpu(x, st[0], g, st[1]),
            )
        )
    threads_before = torch.get_num_threads()
    try:
        with torch.inference_mode():
            for name, cls, make, call in methods:
                try:
                    st0, nbytes = make()
                except Exception as err:  # a torch build without the kernel
                    run.note(f"{name} {k}x{n}: unavailable ({err})")
                    continue
                for regime in a.regimes:
                    copies = copies_for(nbytes, regime == "cold", a.cold_mb * 1e6)
                    states = [st0] + [_clone(st0) for _ in range(copies - 1)]
                    for m in a.m:
                        xf = torch.from_numpy(bench_activations(m, k))
                        x = xf.to(torch.bfloat16)
                        err = nmse(call(x, st0).float().numpy(), (xf.double() @ w64.T))
                        calls = [(lambda s=s, x=x, f=call: f(x, s)) for s in states]
                        for th in a.threads:
                            torch.set_num_threads(th)
                            t = time_calls(calls, target_s=a.target_s, min_reps=10)
                            run.points.append(
                                Point(
                                    "torch",
                                    name,
                                    cls,
                                    k,
                                    n,
                                    m,
                                    th,
                                    regime,
                                    nbytes,
                                    copies,
                                    t,
                                    err,
                                )
                            )
                            _progress(run.points[-1])
                    del states
    finally:
        torch.set_num_threads(threads_before)
    time.sleep(0.2)  # let torch's OpenMP workers stop spinning before others run


def _clone(st: Any) -> Any:
    if isinstance(st, tuple):
        return tuple(_clone(s) for s in st)
    return st.clone()


# -- llama.cpp ----------------------------------------------------------------------


def ggml_points(run: Run, a: argparse.Namespace, k: int, n: int) -> None:
    types = ggml_types(a.bits)
    if not types:
        return
    spec = {
        "k": k,
        "n": n,
        "ms": a.m,
        "threads": a.threads,
        "regimes": a.regimes,
        "types": types,
        "target_s": a.target_s,
        "cold_bytes": a.cold_mb * 1e6,
    }
    proc = subprocess.Popen(
        [sys.executable, str(GGML_SCRIPT), "--spec", json.dumps(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    for line in proc.stdout:
        if not line.startswith("{"):
            continue
        rec = json.loads(line)
        if rec["kind"] == "unavailable":
            run.note(f"llama.cpp column skipped: {rec['why']}")
        elif rec["kind"] == "info":
            if not run.ggml_described:
                run.ggml_described = True
                run.note(
                    f"llama.cpp: llama-cpp-python {rec['version']}, ggml AVX2 "
                    f"{rec['avx2']}, AVX-512 {rec['avx512']}, CPU_REPACK buffer "
                    f"{rec['repack_buffer']}; one call = one graph of "
                    "R mul_mat nodes / R (R = copies cold, 8 hot)"
                )
        elif rec["kind"] == "point":
            t = Timing(rec["med_us"], rec["min_us"], rec["p90_us"], rec["reps"])
            run.points.append(
                Point(
                    "ggml",
                    rec["method"],
                    rec["bit_class"],
                    k,
                    n,
                    rec["m"],
                    rec["threads"],
                    rec["regime"],
                    rec["weight_bytes"],
                    rec["copies"],
                    t,
                    rec["nmse"],
                )
            )
            _progress(run.points[-1])
    err = proc.stderr.read()
    if proc.wait() != 0:
        tail = " | ".join(err.strip().splitlines()[-3:])
        run.note(
            f"llama.cpp child exited with {proc.returncode} at {k}x{n}; points "
            f"after the last one printed are missing ({tail})"
        )


# -- output -------------------------------------------------------------------------


def _load() -> str:
    """The 1-minute load average (other processes skew every timing)."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "?"


def _progress(p: Point) -> None:
    print(
        f"  {p.method}  {p.k}x{p.n} M={p.m} {p.threads}T {p.regime}: {p.us:.0f} us",
        flush=True,
    )


def report(run: Run, a: argparse.Namespace) -> str:
    out: list[str] = []
    bw_line = ", ".join(
        f"{th}T {run.bw(th):.1f} GB/s" for th in a.threads if run.bw(th) is not None
    )
    which = "fastest" if a.stat == "min" else "median of all"
    out.append(f"DRAM read bandwidth ({which} samples, this run): {bw_line}")
    for name, us in run.floors.items():
        out.append(f"per-call floor: {name}: {us:.1f} us")
    keys = sorted(
        {(p.k, p.n, p.m, p.regime) for p in run.points},
        key=lambda t: (a.shapes.index((t[0], t[1])), t[2], a.regimes.index(t[3])),
    )
    for k, n, m, regime in keys:
        sel = [p for p in run.points if (p.k, p.n, p.m, p.regime) == (k, n, m, regime)]
        methods: list[str] = []
        for p in sel:
            if p.method not in methods:
                methods.append(p.method)
        headers = ["method", "bpw", "MB"]
        for th in a.threads:
            headers += [f"us {th}T", f"%roof {th}T"]
        headers += ["GFLOP/s best", "NMSE"]
        rows = []
        for meth in methods:
            mine = {p.threads: p for p in sel if p.method == meth}
            any_p = next(iter(mine.values()))
            row: list[object] = [meth, any_p.bpw, any_p.weight_bytes / 1e6]
            for th in a.threads:
                p = mine.get(th)
                bw = run.bw(th)
                row.append(p.us if p else None)
                row.append(
                    f"{100 * roofline_us(p.weight_bytes, bw) / p.us:.0f}%"
                    if p and bw
                    else None
                )
            row.append(max(p.gflops for p in mine.values()))
            err = any_p.nmse
            if err is not None and not (err <= 1.5):  # NaN, or no product at all
                row[0] = f"{meth} (WRONG OUTPUT)"
            row.append(f"{err:.1e}" if err is not None else None)
            rows.append(row)
        copies = sorted({p.copies for p in sel})
        what = (
            f"cold ({copies[0]}-{copies[-1]} weight copies, >= {a.cold_mb:g} MB)"
            if regime == "cold"
            else "hot (one weight copy; % roof can pass 100 %)"
        )
        out.append(f"\nK={k} N={n} M={m}, {what}; {a.stat} us per call")
        out.append(table(headers, rows))
        per_bit = ", ".join(
            f"{th}T {roofline_us(k * n / 8, run.bw(th)):.0f} us"
            for th in a.threads
            if run.bw(th)
        )
        if per_bit:
            out.append(f"roofline per bit/weight at this shape: {per_bit}")
    return "\n".join(out)


def _pick(
    run: Run,
    family: str,
    k: int,
    n: int,
    m: int,
    th: int,
    regime: str = "cold",
    cls: int | None = None,
    method: str | None = None,
) -> list[Point]:
    return [
        p
        for p in run.points
        if p.family == family
        and (p.k, p.n, p.m, p.threads, p.regime) == (k, n, m, th, regime)
        and (cls is None or p.bit_class == cls)
        and (method is None or p.method.startswith(method))
    ]


def goals(run: Run, a: argparse.Namespace) -> str:
    """The issue's ratios, computed from this run's points."""
    out = ["\ngoals (cold weights; lpcc times include the VM's Python overhead)"]
    shape = (4096, 4096) if (4096, 4096) in a.shapes else a.shapes[0]
    k, n = shape
    interp = any(not p.native for p in run.points if p.family == "lpcc")
    if interp:
        out.append(
            "  (some lpcc kernels ran in the interpreter: lpcc ratios below do not "
            "measure native kernels)"
        )

    def lp(width: str, th: int, m: int = 1) -> Point | None:
        got = _pick(
            run, "lpcc", k, n, m, th, method=f"lpcc {quant_spec(width, a.group)}"
        )
        return got[0] if got else None

    # 1. int2/int3/int4 vs the roofline (goal: within 1.1-1.15x).
    for width in ("4", "3", "2"):
        for th in a.threads:
            p, bw = lp(width, th), run.bw(th)
            if p is None or bw is None:
                out.append(f"  int{width} g{a.group} {th}T vs roofline: not measured")
                continue
            roof = roofline_us(p.weight_bytes, bw)
            out.append(
                f"  int{width} g{a.group} {k}x{n} M=1 {th}T: {p.us:.0f} us = "
                f"{p.us / roof:.2f}x the roofline {roof:.0f} us at {bw:.1f} GB/s "
                f"(goal <= 1.10-1.15x)"
            )
    # 2./3. vs llama.cpp at the same width (goal: faster, ratio < 1).
    for width, types in (
        ("2", ("Q2_K", "TQ2_0")),
        ("3", ("Q3_K",)),
        ("4", ("Q4_0", "Q4_K")),
    ):
        for t in types:
            for th in a.threads:
                p = lp(width, th)
                base = _pick(run, "ggml", k, n, 1, th, method=f"ggml {t} ")
                if p is None or not base:
                    out.append(f"  int{width} vs {t} {th}T: not measured")
                    continue
                best = min(base, key=lambda b: b.us)
                out.append(
                    f"  int{width} vs {t} {th}T: lpcc {p.us:.0f} us / {best.method} "
                    f"{best.us:.0f} us = {p.us / best.us:.2f}x (goal < 1: faster)"
                )
    # 4. Linearity in width: t = a + b * bpw over the integer widths.
    for th in a.threads:
        pts = [
            p for w in a.bits if w not in FLOAT_FORMATS and (p := lp(w, th)) is not None
        ]
        if len(pts) < 3:
            out.append(f"  linearity {th}T: needs >= 3 integer widths (--bits)")
            continue
        x = np.array([p.bpw for p in pts])
        y = np.array([p.us for p in pts])
        slope, icpt = np.polyfit(x, y, 1)
        fit = slope * x + icpt
        r2 = 1 - ((y - fit) ** 2).sum() / max(((y - y.mean()) ** 2).sum(), 1e-30)
        worst = max(abs(y - fit) / y)
        roof = (
            f"; roofline slope {roofline_us(k * n / 8, run.bw(th)):.0f}"
            if run.bw(th)
            else ""
        )
        out.append(
            f"  linearity {th}T over {len(pts)} widths: t = {icpt:.0f} us + "
            f"{slope:.0f} us per bit/weight{roof} (R^2 {r2:.3f}, worst point "
            f"{100 * worst:.0f}% off the line)"
        )
    # 5. M = 16 / 64: GFLOP/s vs the best baseline.
    for k2, n2 in a.shapes:
        for m in (16, 64):
            if m not in a.m:
                continue
            for th in a.threads:
                base = _pick(run, "torch", k2, n2, m, th) + _pick(
                    run, "ggml", k2, n2, m, th
                )
                mine = _pick(run, "lpcc", k2, n2, m, th)
                if not base or not mine:
                    out.append(f"  M={m} {k2}x{n2} {th}T GFLOP/s: not measured")
                    continue
                best = max(base, key=lambda b: b.gflops)
                cells = ", ".join(
                    f"{p.method.split()[1]} {p.gflops:.0f} "
                    f"({p.gflops / best.gflops:.2f}x)"
                    for p in mine
                )
                out.append(
                    f"  M={m} {k2}x{n2} {th}T GFLOP/s: best baseline {best.method} "
                    f"{best.gflops:.0f}; lpcc {cells}"
                )
    return "\n".join(out)


def plot(run: Run, a: argparse.Namespace, path: str) -> None:
    """Time against bits per weight, one panel per shape and thread count."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        run.note("--png: matplotlib is not installed (the 'bench' extra); no plot")
        return
    regime = "cold" if "cold" in a.regimes else "hot"
    m = min(a.m)
    panels = [(k, n, th) for k, n in a.shapes for th in a.threads]
    fig, axes = plt.subplots(
        1, len(panels), figsize=(5 * len(panels), 4.2), squeeze=False
    )
    styles = {"lpcc": ("o", "C0"), "torch": ("s", "C1"), "ggml": ("^", "C2")}
    for ax, (k, n, th) in zip(axes[0], panels, strict=True):
        sel = [
            p
            for p in run.points
            if (p.k, p.n, p.m, p.threads, p.regime) == (k, n, m, th, regime)
        ]
        for fam, (marker, color) in styles.items():
            pts = [p for p in sel if p.family == fam]
            if not pts:
                continue
            ax.scatter(
                [p.bpw for p in pts],
                [p.us for p in pts],
                marker=marker,
                color=color,
                label=fam,
                facecolors="none"
                if fam == "lpcc" and not all(p.native for p in pts)
                else color,
            )
            for i, p in enumerate(pts):
                label = p.method.removeprefix(f"{fam} ").split(" [")[0]
                ax.annotate(
                    label,
                    (p.bpw, p.us),
                    fontsize=6,
                    xytext=(4, 8 * (i % 3) - 8),  # stagger: formats share a bpw
                    textcoords="offset points",
                )
        bw = run.bw(th)
        if bw:
            xs = np.linspace(0.5, 17, 50)
            ax.plot(
                xs,
                roofline_us(k * n * xs / 8, bw),
                "k--",
                lw=1,
                label=f"DRAM roofline {bw:.1f} GB/s",
            )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("bits per weight (incl. scales)")
        ax.set_ylabel(f"{a.stat} us per call")
        ax.set_title(f"K={k} N={n} M={m} {th}T, {regime}", fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot written to {path}")


# -- main ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> Run:
    a = parse_args(argv)
    run = Run(stat=a.stat)
    import torch

    import lpcc

    print(f"lpcc {lpcc.__version__}, torch {torch.__version__}, numpy {np.__version__}")
    print(f"CPU: {cpu_line()}")
    print(
        f"shapes {a.shapes} (KxN), M {a.m}, widths {a.bits} (g{a.group}), threads "
        f"{a.threads}, regimes {a.regimes}, columns {sorted(a.columns)}",
        flush=True,
    )
    started = time.perf_counter()
    print(f"load average at start: {_load()} (above ~0.3, others share the cores)")
    measure_bandwidth(run, a, "before")
    if "lpcc" in a.columns:
        vm_floor(run, a)
    if "torch" in a.columns:
        torch_floor(run)
    with tempfile.TemporaryDirectory(prefix="lpcc_gemv_") as tmp:
        for k, n in a.shapes:
            if "lpcc" in a.columns:
                lpcc_points(run, a, k, n, Path(tmp))
            if "torch" in a.columns:
                torch_points(run, a, k, n)
            if "ggml" in a.columns:
                ggml_points(run, a, k, n)
    measure_bandwidth(run, a, "after")
    print(f"load average at end: {_load()}")
    for p in run.points:
        p.stat = a.stat
    print()
    print(report(run, a))
    print(goals(run, a))
    for text in run.notes:
        print(f"note: {text}")
    if a.png:
        plot(run, a, a.png)
    if a.json:
        with open(a.json, "w") as f:
            for p in run.points:
                f.write(json.dumps(p.record()) + "\n")
            f.write(
                json.dumps({"bandwidth_gbs": run.bandwidth, "notes": run.notes}) + "\n"
            )
    print(f"total {time.perf_counter() - started:.0f} s")
    return run


if __name__ == "__main__":
    main()
