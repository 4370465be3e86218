"""SASS instructions per decoded weight in the inner loops of the CUDA low-bit GEMMs.

    python benchmarks/cuda_sass.py [--kernel gemv|simt|tc|simt-a8|tc-a8|all]
        [--arch sm_90] [--k 4096] [--n 4096] [--group 128] [--m M] [--dump DIR]

Without a GPU the cost of the decode is read off the machine code: each
kernel is compiled with nvcc for `--arch` and disassembled with `cuobjdump
-sass`; nothing runs. Kernels (`--kernel`):

* `gemv`: the standalone GEMV of `lpcc.codegen.cuda.kernels.gemv` (f16
  activations, signed codes, no zero point; M = `--m`, default 1);
* `simt` / `simt-a8`: what the models run for small M, the `lp.fused
  epilogue` region group_matmul -> group_dequant_reduce lowered by
  `kernels/group_matmul.py` (warp per column; f32 x with the f32
  magic-number decode, or int8 x with dp4a); M = `--m`, default 1;
* `tc` / `tc-a8`: the same region for static M >= 16 lowered by
  `kernels/gemm_tc.py` (mma.sync m16n8k16 f16 / m16n8k32 s8); M default 64.

Rows: widths 1..8 with signed codes and no zero point, plus uint4 with a zero
point ("uint4+z"; the gemv kernel has no such row). The fused regions are
built as the tests build them (x [M, K], w [N, K] constant, f16 scale [N,
K/G] constant, for uint4+z an int zero [N, K/G] constant and the group sums
[M, K/G]) and lowered with `lpcc.codegen.cuda.lower.lower_kernel(fn,
"sm_80", const_inputs)`; the kernel's note is checked so the wanted
generator, not a fallback, is measured.

Method. The main K loop is found from the backward `BRA`s (self-branches,
the trailing `BRA .` padding, are ignored):

* gemv: the only backward branch (one iteration = one lane's chunk of 32
  weights);
* simt: one loop per row-tile variant (MT = 4, 3, 2, 1 rows; nvcc drops
  those it proves dead); the variant that runs for M = `--m` (MT = min(M,
  4)) is the loop whose FFMA (f32 x) or IDP (dp4a) count is closest to MT
  times that of the smallest loop (the MT = 1 variant). One iteration = one
  chunk of 32 weights per lane. For simt-a8 the per-group work (parking the
  int32 sums) lies outside this loop and is not counted;
* tc: the outermost loop (one 128-k chunk: 2 n8 tiles x 32 codes = 64
  weights per lane). It contains the A-staging loop (global -> shared, f32
  -> f16 for tc), which nvcc unrolls U times behind a remainder jump table;
  the count follows one lane's path through the chunk: straight-line code
  once, guards (bounds, "too few iterations") fall through, the remainder
  dispatch jumps to the unrolled loop (its trip count T = rows * 128 / (4 or
  16 per thread step) / 128 threads is checked to be a multiple of U, U = the
  number of STS in its body), and the unrolled body counts T / U times.

Counted instructions are divided by the weights one iteration decodes per
lane: "all/w" is everything on that path (address arithmetic, loop control,
barriers, the per-group scale epilogue that tc and simt run inside the loop).
Classes (by opcode; columns do not add up to "all"):

* "decode": LOP3, SHF/SHL, PRMT, BFE/BFI, f16x2 HFMA2/HADD2/HMUL2 (not the
  .F32 widening), IMAD.SHL (byte packing for dp4a), IADD3 with a byte-splat
  immediate (IADD3/VIADD; the A8 bias subtract), and in simt f32 the FADD of the
  magic-number decode ((2^23 | u) - (2^23 + bias + z)). This is what the
  BitBLAS/Tilus target counts; a few address LOP3/SHFs fall in it too;
* "cvt": HADD2.F32 (f16 -> f32 widening), F2F, F2FP (f32 -> f16 pack), I2F;
* "fma": FFMA/FMUL/FADD (other than the decode FADD), DFMA/DMUL/DADD (tc-a8's
  exact f64 group epilogue), IDP (dp4a);
* "ld": LDG (weights, activations, scales); "smem": LDS/LDSM/STS;
  "mma": HMMA/IMMA; "stage": everything inside an A-staging loop (tc), when
  the staging is a loop (short last chunks, huge x); `gemm_tc` stages full
  chunks with straight-line code, whose instructions count in their own
  columns (its F2FP under cvt, STS under smem, LDG under ld).

The target is the LOP3 int4 path: 2 instructions per 2 weights (lop3 +
sub/fma) = 1.0 decode instruction per weight. For tc the decoded weight is
shared by the M = 64 rows of the block tile; for simt by MT rows. Counts are
static (one loop iteration of one lane), not measured time: a GPU run is
needed for bandwidth and issue-rate figures.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lpcc
from lpcc.codegen.cuda import nvcc
from lpcc.codegen.cuda.kernels import gemm_tc, gemv
from lpcc.codegen.cuda.kernels import group_matmul as gmm

_INSN = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")
_BRA = re.compile(r"\bBRA\s+(?:`\(\.L_x_\d+\)\s*)?0x([0-9a-f]+)")
COLUMNS = ("all", "decode", "cvt", "fma", "ld", "smem", "mma", "stage")
KINDS = ("gemv", "simt", "tc", "simt-a8", "tc-a8")


@dataclass(frozen=True)
class Kind:
    """One kernel family: how to build its region and read its loop."""

    xint: bool  # int8 activations (A8)
    tc: bool  # tensor-core kernel (gemm_tc) vs SIMT (group_matmul)
    m: int  # default M
    note: str  # substring of CudaKernel.note that proves the generator
    per: int  # weights one main-loop iteration decodes per lane


FUSED = {
    "simt": Kind(False, False, 1, "simt group gemm", gmm.CHUNK),
    "simt-a8": Kind(True, False, 1, "simt group gemm", gmm.CHUNK),
    "tc": Kind(False, True, 64, "m16n8k16", gemm_tc.NT * 32),
    "tc-a8": Kind(True, True, 64, "m16n8k32", gemm_tc.NT * 32),
}


# -- reading the listing -------------------------------------------------------------


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


def opcode(text: str) -> str:
    """The opcode with its modifiers (`LDG.E.128`), predicate guard dropped."""
    parts = text.split()
    return parts[1] if parts[0].startswith("@") else parts[0]


def branch_target(text: str) -> int | None:
    m = _BRA.search(text)
    if m is None:
        m = re.search(r"\bBRA\b.*?0x([0-9a-f]+)", text)
    return int(m.group(1), 16) if m else None


def loops(insns: list[tuple[int, str]]) -> list[tuple[int, int]]:
    """(head, branch address) of every backward branch, self-branches excluded."""
    out = []
    for addr, text in insns:
        t = branch_target(text)
        if t is not None and t < addr:
            out.append((t, addr))
    return out


def loop_body(insns: list[tuple[int, str]]) -> list[str]:
    """Instructions from the target of the only backward branch to the branch."""
    found = loops(insns)
    if len(found) != 1:
        raise SystemExit(f"cuda_sass: expected one backward branch, found {found}")
    lo, hi = found[0]
    return [t for a, t in insns if lo <= a <= hi]


def _splat(imm: str) -> bool:
    """A byte-splat immediate (0x08080808) or its negation (0xf7f7f7f8) with
    a byte of at most 0x80 (the A8 biases; not -1 = 0xffffffff)."""
    v = int(imm, 16) & 0xFFFFFFFF
    return any(
        0 < (u & 0xFF) <= 0x80 and u == (u & 0xFF) * 0x01010101
        for u in (v, -v & 0xFFFFFFFF)
    )


def classify_one(text: str, magic_fadd: bool = False) -> str | None:
    """The class of one instruction (see the module docstring), or None."""
    op = opcode(text)
    base = op.split(".")[0]
    if op.startswith("HADD2.F32") or base in ("F2F", "F2FP", "I2F", "I2FP"):
        return "cvt"
    if base in ("LOP3", "SHF", "SHL", "PRMT", "BFE", "BFI", "HFMA2", "HADD2", "HMUL2"):
        return "decode"
    if op.startswith("IMAD.SHL"):
        return "decode"
    if base in ("IADD3", "VIADD"):
        m = re.search(r",\s*-?0x([0-9a-f]+)\s*(?:,|$)", text)
        if m and _splat(m.group(1)):
            return "decode"
        return None
    if base == "FADD" and magic_fadd:
        return "decode"
    if base in ("FFMA", "FADD", "FMUL", "DFMA", "DMUL", "DADD", "IDP"):
        return "fma"
    if base in ("LDG", "LD"):
        return "ld"
    if base in ("LDS", "LDSM", "STS"):
        return "smem"
    if base in ("HMMA", "IMMA"):
        return "mma"
    return None


def classify(body: Sequence[str], magic_fadd: bool = False) -> Counter:
    """Counter of classes (and "all") over a list of instructions."""
    c: Counter = Counter()
    for text in body:
        k = classify_one(text, magic_fadd)
        if k:
            c[k] += 1
        c["all"] += 1
    return c


def walk(
    insns: list[tuple[int, str]],
    lo: int,
    hi: int,
    trips: int | None,
    magic_fadd: bool = False,
) -> Counter:
    """Classes along one lane's path through one iteration of loop [lo, hi].

    Nested loops (the A staging) run `trips` times original iterations
    divided by their unroll (STS count); conditional forward branches are
    taken only where they jump to or before the next nested loop's head (the
    unroll-remainder dispatch), other guards fall through (module docstring).
    """
    inner = [(h, b) for h, b in loops(insns) if lo < h and b < hi]
    if inner and trips is None:
        raise SystemExit(f"cuda_sass: unexpected nested loops {inner} in [{lo}, {hi}]")
    text_at = dict(insns)
    addrs = [a for a, _ in insns if lo <= a <= hi]
    index = {a: i for i, a in enumerate(addrs)}
    left: dict[int, int] = {}
    for h, b in inner:
        body = [text_at[a] for a in addrs if h <= a <= b]
        unroll = sum(opcode(t).startswith("STS") for t in body)
        if unroll == 0 or trips % unroll:
            raise SystemExit(
                f"cuda_sass: staging loop at 0x{h:x} stores {unroll} times per "
                f"iteration; {trips} trips are not a whole number of iterations"
            )
        left[b] = trips // unroll
    c: Counter = Counter()
    i, steps = 0, 0
    while True:
        steps += 1
        if steps > 1_000_000:
            raise SystemExit("cuda_sass: the path walk does not end")
        a = addrs[i]
        text = text_at[a]
        nested = any(h <= a <= b for h, b in inner)
        k = "stage" if nested else classify_one(text, magic_fadd)
        if k:
            c[k] += 1
        c["all"] += 1
        if a == hi:
            return c
        t = branch_target(text)
        if t is None or t == a:
            i += 1
            continue
        guarded = text.lstrip().startswith("@")
        if t < a:  # a nested loop's back edge
            left[a] -= 1
            if left[a] > 0:
                i = index[t]
                continue
            i += 1
            continue
        heads = [h for h, _ in inner if h > a]
        if not guarded or (heads and t <= min(heads)):
            if t > hi:
                raise SystemExit(f"cuda_sass: the walk leaves the loop at 0x{a:x}")
            i = index[t]
        else:
            i += 1


# -- building the kernels --------------------------------------------------------------


def _t(dims: Sequence[int], elt: object) -> str:
    return "tensor<" + "x".join(str(d) for d in dims) + f"x{elt}>"


def fused_fn(m: int, n: int, k: int, g: int, wt: str, xint: bool, zero: bool):
    """func @kernel(x, w, s[, z, S]) { lp.fused epilogue { group_matmul; reduce } }
    and its constant argument indices (w, s[, z])."""
    from xdsl.dialects import func

    from lpcc.ir.dialect import parse_module, to_attr

    gn = -(-k // g)
    xe, pe = ("!lp.int<8>", "!lp.int<32>") if xint else ("f32", "f32")
    w = to_attr(lpcc.dtype(wt))
    x_t, p_t, y_t = _t((m, k), xe), _t((m, n, gn), pe), _t((m, n), "f32")
    args = [("x", x_t), ("w", _t((n, k), w)), ("s", _t((n, gn), "f16"))]
    red = f"%r = lp.group_dequant_reduce %p : {p_t} scale %s1 : {args[2][1]}"
    if zero:
        args += [("z", _t((n, gn), w)), ("S", _t((m, gn), pe))]
        red += f" zero %z1 : {args[3][1]} sums %S1 : {args[4][1]}"
    red += f" -> {y_t}"
    sig = ", ".join(f"%{a}: {t}" for a, t in args)
    names = ", ".join(f"%{a}" for a, _ in args)
    types = ", ".join(t for _, t in args)
    bargs = ", ".join(f"%{a}1: {t}" for a, t in args)
    text = f"""func.func @kernel({sig}) -> {y_t} {{
  %y = lp.fused epilogue({names}) : ({types}) -> {y_t} {{
  ^bb0({bargs}):
    %p = lp.group_matmul %x1, %w1 group {g} : ({x_t}, {args[1][1]}) -> {p_t}
    {red}
    lp.yield %r : {y_t}
  }}
  func.return %y : {y_t}
}}"""
    module = parse_module("builtin.module {\n" + text + "\n}")
    fn = next(op for op in module.ops if isinstance(op, func.FuncOp))
    return fn, ((1, 2, 3) if zero else (1, 2))


def widths(kind: str) -> list[tuple[str, str, bool]]:
    """(row label, weight type, zero point) of each row."""
    rows = [(f"int{b}", f"int{b}", False) for b in range(1, 9)]
    return rows if kind == "gemv" else [*rows, ("uint4+z", "uint4", True)]


@dataclass
class Row:
    label: str
    counts: Counter
    per: int


def _staging_trips(kind: Kind, m: int) -> int:
    """Original iterations of the A-staging loop per thread (gemm_tc._stage)."""
    mt = min(gemm_tc.MAX_MT, -(-m // 16))
    per_row = gemm_tc.CHUNK_K // (16 if kind.xint else 4)
    total, threads = 16 * mt * per_row, 32 * gemm_tc.WARPS
    if total % threads:
        raise SystemExit(f"cuda_sass: staging of {total} items over {threads}")
    return total // threads


def _pick_simt_loop(
    insns: list[tuple[int, str]], xint: bool, m: int
) -> tuple[int, int]:
    """The row-tile variant's loop for M = m (module docstring)."""
    found = loops(insns)
    if not found:
        raise SystemExit("cuda_sass: no loop in the simt kernel")
    key = "IDP" if xint else "FFMA"

    def work(lp: tuple[int, int]) -> int:
        return sum(opcode(t).startswith(key) for a, t in insns if lp[0] <= a <= lp[1])

    unit = min(work(lp) for lp in found)
    mt = min(gmm.MT, m)
    return min(found, key=lambda lp: (abs(work(lp) - mt * unit), lp[0]))


@dataclass
class Job:
    """One row's kernel source, ready to compile."""

    kind: str
    label: str
    m: int
    source: str
    entry: str


def build(kind: str, label: str, wt: str, zero: bool, args, m: int) -> Job:
    """Generate one row's CUDA source (xDSL work: done serially)."""
    from lpcc.codegen.cuda.lower import lower_kernel

    if kind == "gemv":
        bits = lpcc.dtype(wt).bits
        src, name, _ = gemv.gemv_source(
            bits, True, args.group, False, "f16", args.k, args.n, ms=(m,)
        )
        return Job(kind, label, m, src, f"{name}_m{m}")
    kd = FUSED[kind]
    fn, const = fused_fn(m, args.n, args.k, args.group, wt, kd.xint, zero)
    ck = lower_kernel(fn, "sm_80", const)
    if ck is None or kd.note not in ck.note:
        got = None if ck is None else ck.note
        raise SystemExit(
            f"cuda_sass: --kernel {kind} {label}, M={m}: expected a kernel whose "
            f"note has {kd.note!r}, the generators gave {got!r}; pick another --m "
            "(tc needs M >= 16, simt is taken below) or --k/--group (multiples "
            "of 128)"
        )
    return Job(kind, label, m, ck.source, ck.launches[0].entry)


def measure(job: Job, args: argparse.Namespace) -> Row:
    """Compile one row's kernel and count its main loop."""
    text = nvcc.sass(job.source, args.arch)
    _dump(args, f"{job.kind}_{job.label}", text)
    insns = kernel_listing(text, job.entry)
    if job.kind == "gemv":
        return Row(job.label, classify(loop_body(insns)), gemv.CHUNK)
    kd = FUSED[job.kind]
    if kd.tc:
        lo, hi = max(loops(insns), key=lambda lp: lp[1] - lp[0])
        c = walk(insns, lo, hi, _staging_trips(kd, job.m))
    else:
        lo, hi = _pick_simt_loop(insns, kd.xint, job.m)
        c = walk(insns, lo, hi, None, magic_fadd=not kd.xint)
    return Row(job.label, c, kd.per)


def _dump(args: argparse.Namespace, stem: str, text: str) -> None:
    if args.dump:
        args.dump.mkdir(parents=True, exist_ok=True)
        (args.dump / f"{stem}_{args.arch}.sass").write_text(text)


_TITLES = {
    "gemv": "standalone GEMV (kernels/gemv.py), f16 x, signed",
    "simt": "fused group GEMM, SIMT (kernels/group_matmul.py), f32 x",
    "simt-a8": "fused group GEMM, SIMT (kernels/group_matmul.py), int8 x (dp4a)",
    "tc": "fused group GEMM, tensor cores (kernels/gemm_tc.py), m16n8k16 f16",
    "tc-a8": "fused group GEMM, tensor cores (kernels/gemm_tc.py), m16n8k32 s8",
}


def table(kind: str, rows: list[Row], args: argparse.Namespace, m: int) -> str:
    """Markdown table of one kernel family."""
    per = rows[0].per
    head = (
        f"**{kind}**: {_TITLES[kind]}; {args.arch}, M={m}, K={args.k}, N={args.n}, "
        f"group {args.group}; {per} weights per lane per loop iteration"
    )
    cols = ["width", "loop insns", *(f"{c}/w" for c in COLUMNS)]
    lines = [head, "", "| " + " | ".join(cols) + " |"]
    lines.append("|" + "|".join("---:" if i else "---" for i in range(len(cols))) + "|")
    for r in rows:
        vals = [f"{r.counts[c] / r.per:.3f}" for c in COLUMNS]
        lines.append(f"| {r.label} | {r.counts['all']} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kernel", default="gemv", choices=[*KINDS, "all"])
    ap.add_argument("--arch", default="sm_90")
    ap.add_argument("--k", type=int, default=4096)
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--group", type=int, default=128)
    ap.add_argument(
        "--m", type=int, default=None, help="rows (default 1, or 64 for tc/tc-a8)"
    )
    ap.add_argument(
        "--widths", default=None, help="comma list of row labels (default: all)"
    )
    ap.add_argument("--jobs", type=int, default=2, help="nvcc runs in parallel")
    ap.add_argument("--dump", type=Path, default=None, help="write the SASS here")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, list[Row]]:
    args = parse_args(argv)
    kinds = list(KINDS) if args.kernel == "all" else [args.kernel]
    jobs = []
    for kind in kinds:
        m = args.m if args.m is not None else (1 if kind == "gemv" else FUSED[kind].m)
        for label, wt, zero in widths(kind):
            if args.widths and label not in args.widths.split(","):
                continue
            jobs.append(build(kind, label, wt, zero, args, m))
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        rows = list(pool.map(lambda j: measure(j, args), jobs))
    out: dict[str, list[Row]] = {}
    for job, row in zip(jobs, rows, strict=True):
        out.setdefault(job.kind, []).append(row)
    for kind, rs in out.items():
        m = next(j.m for j in jobs if j.kind == kind)
        print(table(kind, rs, args, m))
        print()
    print("target: 1.000 decode/w (int4 LOP3 path: lop3 + sub/fma per 2 weights)")
    return out


if __name__ == "__main__":
    main()
