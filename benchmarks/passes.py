"""What each low-precision pass buys on a Llama-style model (not a test).

    python benchmarks/passes.py [--dim 512] [--layers 2] [--quant int3-g64]

For one decode step (M = 1 token) of `lpcc.models.TinyLlama`, quantized, it
compiles the model with each default pipeline and with each pass removed
from it, and reports from the resulting program (`lpcc.runtime.Program`):

* kernels: kernel calls per forward (each one reads its inputs from memory
  and writes its outputs);
* intermediates: bytes written by those calls that are not the model's
  outputs (what fusion keeps in registers instead); "(weights)" is the part
  that is dequantized weights, f32 copies the low-precision rewrites remove;
* tables: bytes of LUT tables per forward, with and without
  `symmetrize-tables`;
* ops/weight: arithmetic operations per weight of the quantized matmuls
  (cost model below), for the naive dequant path (`-O1`), dequant after the
  group GEMM, and the LUT path.

Cost model (operations counted per element of each op; one multiply-add =
2): dequantize 1 (scale) + 1 (zero); matmul and group_matmul 2 per weight
and row; group_sum 1 per activation; group_dequant_reduce 2 per (row,
output, group), +2 with zero points, +1 with activation scales; quantize 2
per activation; lut_scale 2 per activation; lut_precompute g - 1 adds per
entry (+2 to quantize it); lut_accumulate 2 per lookup (look up, add; B
lookups per g weights) + 2 per (row, output, group). Times need the CPU
backend (issue 6); the reference target's NumPy times say nothing about
kernels and are not reported.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_packing import cpu_description
from lpcc.frontends.torch_export import import_module
from lpcc.runtime.program import Call

import lpcc
from lpcc.codegen.program import build_program
from lpcc.ir.dialect import lowp
from lpcc.ir.dialect import ops as lp
from lpcc.ir.dialect.types import DYNAMIC
from lpcc.models import LlamaConfig, TinyLlama
from lpcc.passes.pipeline import default_pipeline, run_pipeline
from lpcc.passes.quantize import quantize_module

LOWP_PASSES = (
    "select-kernels",
    "dequant-after-group-gemm",
    "lut-gemm",
    "symmetrize-tables",
    "fuse-table-precompute",
)


def without(spec: str, name: str) -> str:
    return ",".join(p for p in spec.split(",") if p.split("{")[0] != name)


def numel(value) -> int:
    shape = value.type.get_shape()
    assert DYNAMIC not in shape, "the benchmark compiles static shapes"
    return math.prod(shape)


def walk_ops(module):
    """Every lp op, inside fused regions too."""
    for op in module.walk():
        if op.name.startswith("lp.") and op.name not in ("lp.fused", "lp.yield"):
            yield op


def op_cost(op) -> tuple[str, float]:
    """(category, operations) of one op under the cost model of the docstring."""
    n_out = numel(op.results[0])
    if isinstance(op, lp.DequantizeOp):
        return "dequant", n_out * (2 if op.zero is not None else 1)
    if isinstance(op, lp.MatmulOp):
        k = op.lhs.type.get_shape()[-1]
        return "matmul", 2 * n_out * k
    if isinstance(op, lowp.GroupMatmulOp):
        return "matmul", 2 * n_out * op.group.data
    if isinstance(op, lowp.GroupSumOp):
        return "sums", n_out * op.group.data
    if isinstance(op, lowp.GroupDequantReduceOp):
        gn = op.partial.type.get_shape()[-1]
        per = 2 + 2 * (op.zero is not None) + (op.act_scale is not None)
        return "epilogue", n_out * gn * per
    if isinstance(op, lp.QuantizeOp):
        return "act-quant", 2 * n_out
    if isinstance(op, lowp.LutScaleOp):
        return "table", 2 * numel(op.input)
    if isinstance(op, lowp.LutPrecomputeOp):
        g = op.group.data
        return "table", n_out * (g - 1 + (2 if op.scale is not None else 0))
    if isinstance(op, lowp.LutAccumulateOp):
        bits, _, j = op.planes.type.get_shape()
        rows_out = n_out  # [..., M, N, Gn]
        gn = op.result.type.get_shape()[-1]
        return "lookup", 2 * bits * j * (rows_out // gn) + 2 * rows_out
    return "other", 0.0


def measure(module_text: str, spec: str) -> dict[str, float]:
    from lpcc.ir.dialect import parse_module

    module = parse_module(module_text)
    t0 = time.perf_counter()
    run_pipeline(module, spec)
    seconds = time.perf_counter() - t0
    program = build_program(module)
    outputs = {
        b
        for ins in program.instructions
        if type(ins).__name__ == "Return"
        for b in ins.buffers
    }
    calls = [ins for ins in program.instructions if isinstance(ins, Call)]
    ops_of = {k.name: k.meta.get("op") for k in program.kernels}
    inter = widened = 0
    for ins in calls:
        for b in ins.outputs:
            if b in outputs:
                continue
            info = program.buffers[b]
            size = lpcc.dtype(info.dtype).nbytes(math.prod(int(d) for d in info.shape))
            inter += size
            if ops_of.get(ins.kernel) == "lp.dequantize":
                widened += size
    tables = sum(
        numel(op.result) * (1 if op.scale is not None else 4)  # int8 or f32
        for op in walk_ops(module)
        if isinstance(op, lowp.LutPrecomputeOp)
    )
    cost: dict[str, float] = defaultdict(float)
    for op in walk_ops(module):
        cat, n = op_cost(op)
        cost[cat] += n
    return {
        "kernels": len(calls),
        "intermediate_bytes": inter,
        "widened_bytes": widened,
        "table_bytes": tables,
        "pass_seconds": seconds,
        **{f"ops:{k}": v for k, v in cost.items()},
    }


def quantized_weights(module) -> int:
    return sum(
        numel(op.results[0])
        for op in module.walk()
        if isinstance(op, lp.ConstantOp)
        and op.dtype.bits < 16
        and op.dtype.kind == "int"
        and op.attributes.get("lp.name") is not None
        and not op.attributes["lp.name"].data.endswith((".zero", ".scale"))
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument(
        "--quant", nargs="+", default=["int2-g64", "int3-g64", "int4-g64"]
    )
    parser.add_argument("--tokens", type=int, default=1, help="M (rows per matmul)")
    args = parser.parse_args()
    from lpcc.ir.dialect import print_module

    cfg = LlamaConfig(
        vocab_size=1024,
        dim=args.dim,
        n_layers=args.layers,
        n_heads=8,
        n_kv_heads=4,
        hidden_dim=args.dim * 8 // 3 // 64 * 64,
        max_seq_len=64,
    )
    model = TinyLlama(cfg, seed=0).eval()
    ids = torch.zeros((1, args.tokens), dtype=torch.long)
    print(f"lpcc {lpcc.__version__}, {cpu_description()}")
    print(
        f"TinyLlama dim {cfg.dim}, hidden {cfg.hidden_dim}, {cfg.n_layers} layers, "
        f"vocab {cfg.vocab_size}, M = {args.tokens} token(s)"
    )
    for quant in args.quant:
        imported = import_module(model, (ids,))
        quantize_module(imported.module, quant)
        text = print_module(imported.module)
        weights = quantized_weights(imported.module)
        o1 = default_pipeline(1)
        o2 = default_pipeline(2)
        rows = [
            ("-O0", ""),
            ("-O1", o1),
            ("-O1 - fuse-epilogue", without(o1, "fuse-epilogue")),
            ("-O1 - fuse-elementwise", without(o1, "fuse-elementwise")),
            ("-O2", o2),
            *((f"-O2 - {p}", without(o2, p)) for p in LOWP_PASSES[1:]),
            ("-O2, all dequant", default_pipeline(2, kernels={"*": "dequant"})),
            ("-O2, all LUT", default_pipeline(2, kernels={"*": "lut"})),
        ]
        print(f"\n{quant}: {weights:,} quantized weights")
        head = (
            f"{'pipeline':<34}{'kernels':>8}{'interm. KiB':>12}{'(weights)':>10}"
            f"{'tables KiB':>11}"
            f"{'ops/weight':>11}  {'of which: matmul/lookup/other':<30}"
        )
        print(head)
        for label, spec in rows:
            try:
                r = measure(text, spec)
            except lpcc.LpccError as err:
                print(f"{label:<34} failed: {err}")
                continue
            mm = r.get("ops:matmul", 0) + r.get("ops:lookup", 0)
            rest = sum(v for k, v in r.items() if k.startswith("ops:")) - mm
            per = (mm + rest - r.get("ops:other", 0)) / weights
            print(
                f"{label:<34}{r['kernels']:>8}{r['intermediate_bytes'] / 1024:>12.1f}"
                f"{r['widened_bytes'] / 1024:>10.1f}"
                f"{r['table_bytes'] / 1024:>11.2f}{per:>11.2f}  "
                f"{r.get('ops:matmul', 0) / weights:.2f} / "
                f"{r.get('ops:lookup', 0) / weights:.2f} / "
                f"{(rest - r.get('ops:other', 0)) / weights:.2f}"
            )


if __name__ == "__main__":
    main()
