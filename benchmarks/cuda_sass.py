"""SASS instructions per decoded weight in the CUDA low-bit GEMV's inner loop.

    python benchmarks/cuda_sass.py [--arch sm_90] [--k 4096] [--n 4096]
        [--group 128] [--m 1] [--dump DIR]

Without a GPU the cost of the decode is read off the machine code. For each
width 1..8 (signed int, no zero point, f16 activations) the GEMV source from
`lpcc.codegen.cuda.kernels.gemv.gemv_source` is compiled with nvcc for
`--arch` and disassembled with `cuobjdump -sass`. Method:

* take the M = `--m` kernel's listing; its main loop (`#pragma unroll 1`, one
  iteration = one lane's chunk of 32 weights) is the body between the target
  of the only backward `BRA` and that branch, both included;
* count every instruction there (loads, address arithmetic, decode, f32
  conversions, FMAs, the per-chunk scale, the branch) and divide by the 32
  weights one iteration decodes: "all/w";
* split that count by opcode class: "decode/w" = LOP3 + SHF/SHL + the f16x2
  HFMA2/HADD2/HMUL2 (not the .F32 widening), which is what the BitBLAS/Tilus
  target counts; "cvt/w" = HADD2.F32 (fp16 -> f32 widening, of weights and
  activations); "fma/w" = FFMA/FADD/FMUL; "ld/w" = LDG.

The target is the LOP3 int4 path: 2 instructions per 2 weights (lop3 +
sub/fma) = 1.0 decode instruction per weight. Counts are static (one loop
iteration), not measured time; a GPU run is needed for bandwidth figures.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lpcc.codegen.cuda import nvcc
from lpcc.codegen.cuda.kernels import gemv

_INSN = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")


def kernel_listing(sass: str, name: str) -> list[tuple[int, str]]:
    """(address, instruction text) of one function in a cuobjdump listing."""
    out: list[tuple[int, str]] = []
    inside = False
    for line in sass.splitlines():
        if "Function :" in line:
            inside = line.split("Function :")[1].strip() == name
            continue
        if inside:
            m = _INSN.search(line)
            if m:
                out.append((int(m.group(1), 16), m.group(2)))
    if not out:
        raise SystemExit(f"cuda_sass: function {name} not in the listing")
    return out


def loop_body(insns: list[tuple[int, str]]) -> list[str]:
    """Instructions from the target of the backward branch to the branch."""
    loops = []
    for addr, text in insns:
        m = re.search(r"\bBRA\s+(?:`\(\.L_x_\d+\)\s*)?0x([0-9a-f]+)", text)
        if m is None:
            m = re.search(r"\bBRA\b.*?0x([0-9a-f]+)", text)
        if m and int(m.group(1), 16) < addr:
            loops.append((int(m.group(1), 16), addr))
    if len(loops) != 1:
        raise SystemExit(f"cuda_sass: expected one backward branch, found {loops}")
    lo, hi = loops[0]
    return [t for a, t in insns if lo <= a <= hi]


def classify(body: list[str]) -> Counter:
    c: Counter = Counter()
    for text in body:
        op = text.split()[0]
        if op.startswith("@"):
            op = text.split()[1]
        base = op.split(".")[0]
        if op.startswith("HADD2.F32"):
            c["cvt"] += 1
        elif base in ("LOP3", "SHF", "SHL", "HFMA2", "HADD2", "HMUL2", "PRMT"):
            c["decode"] += 1
        elif base in ("FFMA", "FADD", "FMUL"):
            c["fma"] += 1
        elif base in ("LDG", "LD"):
            c["ld"] += 1
        c["all"] += 1
    return c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="sm_90")
    ap.add_argument("--k", type=int, default=4096)
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--group", type=int, default=128)
    ap.add_argument("--m", type=int, default=1)
    ap.add_argument("--dump", type=Path, default=None, help="write the SASS here")
    args = ap.parse_args()
    per = gemv.CHUNK
    rows = []
    for bits in range(1, 9):
        src, name, _ = gemv.gemv_source(
            bits, True, args.group, False, "f16", args.k, args.n, ms=(args.m,)
        )
        text = nvcc.sass(src, args.arch)
        if args.dump:
            args.dump.mkdir(parents=True, exist_ok=True)
            (args.dump / f"{name}.sass").write_text(text)
        c = classify(loop_body(kernel_listing(text, f"{name}_m{args.m}")))
        ratios = [c[k] / per for k in ("all", "decode", "cvt", "fma", "ld")]
        rows.append((f"int{bits}", c["all"], *ratios))
    head = ("width", "loop insns", "all/w", "decode/w", "cvt/w", "fma/w", "ld/w")
    print(
        f"SASS per decoded weight, {args.arch}, GEMV M={args.m}, K={args.k}, "
        f"N={args.n}, group {args.group}, signed, f16 act; {per} weights/iteration"
    )
    print("  ".join(f"{h:>10}" for h in head))
    for r in rows:
        print(f"{r[0]:>10}  {r[1]:>10}  " + "  ".join(f"{v:>10.3f}" for v in r[2:]))
    print(f"{'target':>10}  {'':>10}  {'':>10}  {1.0:>10.3f}  (int4 LOP3: 2 per 2)")


if __name__ == "__main__":
    main()
