"""Decode speed of a Llama-style model: lpcc (target cpu) against torch eager.

A random-weight Llama (default 8 layers, hidden 2048, MLP 5632, 32 heads, 8
KV heads, vocab 32000) runs one decode step: a forward over one new token
(M = 1 in every matmul; the models here have no KV cache, so attention is
over that token alone, which is what the weight-streaming cost of a decode
step is). lpcc compiles it at int2, int3 and int4 (group 128 unless
--group) for target="cpu"; torch runs the same model eager in bf16 and
f32. Each number is the median over --repeat timed steps after warm-up, in
one process; the weights of every model are far larger than the L3, so
every step streams them from DRAM. Run:

    .venv/bin/python benchmarks/decode.py [--layers 8] [--bits 2,3,4]
"""

from __future__ import annotations

import argparse
import copy
import gc
import statistics
import time

import numpy as np
import torch

import lpcc
from lpcc.codegen.llvm import isa as isa_mod
from lpcc.models import LlamaConfig, TinyLlama


def _median_seconds(step, repeat: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def main(argv: list[str] | None = None) -> list[tuple[str, float, float]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--hidden", type=int, default=5632)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--bits", default="2,3,4")
    ap.add_argument("--group", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--threads", type=int, default=0, help="0: all cores")
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    args = ap.parse_args(argv)

    threads = args.threads or lpcc.config.get("num_threads") or torch.get_num_threads()
    torch.set_num_threads(threads)
    cfg = LlamaConfig(
        vocab_size=args.vocab,
        dim=args.dim,
        n_layers=args.layers,
        n_heads=args.heads,
        n_kv_heads=args.kv_heads,
        hidden_dim=args.hidden,
        max_seq_len=64,
    )
    model = TinyLlama(cfg, seed=0).eval()
    n_params = sum(p.numel() for p in model.parameters())
    ids = torch.randint(0, args.vocab, (1, 1))
    print(
        f"decode step of a Llama-style model: {args.layers} layers, dim {args.dim}, "
        f"MLP {args.hidden}, vocab {args.vocab}, {n_params / 1e6:.0f} M params; "
        f"{threads} threads; {_cpu_name()}, "
        f"lpcc ISA {isa_mod.selected_isa(to_run=True)}"
    )
    rows = []
    with torch.no_grad():
        t32 = _median_seconds(lambda: model(ids), args.repeat)
        rows.append(("torch f32 eager", 32.0, t32))
        bf16 = copy.deepcopy(model).to(torch.bfloat16)
        t16 = _median_seconds(lambda m=bf16: m(ids), args.repeat)
        rows.append(("torch bf16 eager", 16.0, t16))
        del bf16
        gc.collect()
        for bits in [int(b) for b in args.bits.split(",")]:
            quant = f"int{bits}-g{args.group}"
            start = time.perf_counter()
            cm = lpcc.compile(model, (ids,), quant=quant, target="cpu")
            compile_s = time.perf_counter() - start
            x = ids.numpy()
            vm_run = cm._vm.run  # the VM directly: no torch conversion per call
            t = _median_seconds(lambda r=vm_run, a=x: r([a]), args.repeat)
            native = sum(k.target == "cpu" for k in cm.program.kernels)
            bpw = cm.quant_report().bits_per_weight
            rows.append(
                (
                    f"lpcc {quant} (compile {compile_s:.0f} s, {native} "
                    f"native / {len(cm.program.kernels)} kernels)",
                    bpw,
                    t,
                )
            )
            got = cm(ids)
            assert np.isfinite(got.numpy()).all()
            del cm
            gc.collect()
    print(f"{'method':58} {'bits/w':>6} {'ms/token':>9} {'tok/s':>7} {'vs bf16':>8}")
    for name, bpw, t in rows:
        print(f"{name:58} {bpw:6.2f} {t * 1e3:9.1f} {1 / t:7.2f} {t16 / t:7.2f}x")
    return rows


if __name__ == "__main__":
    main()
