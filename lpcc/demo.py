"""`lpcc demo`: compile a Llama-style decoder with int4 weights and run it.

The main job of the README: it shows, in a few seconds, the whole path a
user takes (torch module -> lpcc.compile with quant= -> a program that
generates tokens) and the numbers that matter: compile time, fp32 vs packed
weight size, the error against torch eager run with the same dequantized
weights (the compiler's error, ~1e-6) and against the fp32 model (the
quantization's error), and time per token against torch eager.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable
from typing import Any


def dequantized_copy(model: Any, cfg: Any) -> Any:
    """The model with every quantized weight replaced by its dequantized value.

    Uses `lpcc.quant.quantize_weight`, the function the quantize pass calls,
    so torch eager on this copy is the reference the program must match. As
    the pass does, it quantizes Linear weights (and Conv2d weights, as
    [O, C*kh*kw] rows, when `cfg.conv`), and a weight tied to an embedding
    is quantized for the Linear only: the module gets its own parameter.
    """
    import copy

    import torch

    from lpcc.quant import quantize_weight

    ref = copy.deepcopy(model)
    with torch.no_grad():
        for name, mod in ref.named_modules():
            kinds = (torch.nn.Linear, torch.nn.Conv2d) if cfg.conv else torch.nn.Linear
            if isinstance(mod, kinds) and cfg.selects(f"{name}.weight"):
                w = mod.weight.detach().numpy()
                dq = quantize_weight(w.reshape(w.shape[0], -1), cfg).dequantize()
                new = torch.from_numpy(dq.reshape(w.shape))
                mod.weight = torch.nn.Parameter(new, requires_grad=False)
    return ref


def _timed_generation(
    step: Callable[[Any], Any], ids: Any, tokens: int, repeat: int
) -> tuple[list[int], float]:
    """The generated tokens and the median seconds per token over `repeat` runs."""
    times, out = [], []
    for _ in range(repeat):
        start = time.perf_counter()
        out = _generate(step, ids, tokens)
        times.append((time.perf_counter() - start) / tokens)
    return out, statistics.median(times)


def _generate(step: Callable[[Any], Any], ids: Any, tokens: int) -> list[int]:
    """Greedy decoding by re-running the whole prefix (no KV cache yet)."""
    import torch

    out = []
    for _ in range(tokens):
        logits = step(ids)
        nxt = int(torch.as_tensor(logits)[0, -1].argmax())
        out.append(nxt)
        ids = torch.cat([ids, torch.tensor([[nxt]], dtype=ids.dtype)], dim=1)
    return out


def run(args: argparse.Namespace) -> int:
    import torch
    from torch.export import Dim

    import lpcc
    from lpcc.models import LlamaConfig, TinyLlama
    from lpcc.quant import parse_quant

    cfg = parse_quant(args.quant)
    assert cfg is not None
    mcfg = LlamaConfig(
        vocab_size=args.vocab,
        dim=args.dim,
        n_layers=args.layers,
        n_heads=args.heads,
        n_kv_heads=max(1, args.heads // 4),
        hidden_dim=args.dim * 8 // 3 // 32 * 32,
        max_seq_len=256,
    )
    torch.manual_seed(args.seed)
    model = TinyLlama(mcfg, seed=args.seed).eval()
    prompt = torch.randint(0, args.vocab, (1, args.prompt))
    print(
        f"lpcc {lpcc.__version__} demo: Llama-style decoder, {mcfg.n_layers} layers, "
        f"dim {mcfg.dim}, {mcfg.n_heads} heads / {mcfg.n_kv_heads} KV heads, "
        f"vocab {mcfg.vocab_size}; weights {cfg}; target {_describe(args.target)}"
    )
    start = time.perf_counter()
    seq = Dim("seq", min=2, max=mcfg.max_seq_len)
    program = lpcc.compile(
        model,
        (prompt,),
        quant=cfg,
        target=args.target,
        dynamic_shapes={"ids": {1: seq}},
    )
    compile_s = time.perf_counter() - start
    report = program.quant_report()
    print(f"compile (export, import, quantize, passes, lower): {compile_s:.2f} s")
    chosen = program.ir("select-kernels")
    kinds = {k: chosen.count(f'lp.kernel = "{k}"') for k in ("lut", "dequant", "dense")}
    print(
        f"-O2: quantized matmuls as {kinds['dequant']} dequant-after-group-GEMM, "
        f"{kinds['lut']} LUT GEMM, {kinds['dense']} dense; "
        f"{program.program.stats()['calls']} kernel calls per forward"
    )
    if args.target == "cpu":
        native = sum(k.target == "cpu" for k in program.program.kernels)
        print(
            f"kernels: {native} native ({program.program.meta.get('isa')}), "
            f"{len(program.program.kernels) - native} in the interpreter"
        )
    ratio = report.fp32_bytes / report.packed_bytes
    print(
        f"linear weights: fp32 {report.fp32_bytes / 2**20:.2f} MiB -> packed "
        f"{report.packed_bytes / 2**20:.2f} MiB ({ratio:.1f}x, "
        f"{report.bits_per_weight:.2f} bits/weight with scales, "
        f"{len(report.rows)} layers)"
    )
    reference = dequantized_copy(model, cfg)
    with torch.no_grad():
        got = program(prompt)
        want = reference(prompt)
        fp32 = model(prompt)
    err = float((got - want).abs().max())
    qerr = float((got - fp32).abs().max())
    scale = float(want.abs().max())
    # The LUT kernel's activation tables are int8 (each entry rounds by up to
    # 1/254 of its group's range, as llama.cpp's Q8 activations): about 1e-2
    # relative on the logits. Float activations stay within f32 rounding.
    bound = 5e-2 if kinds["lut"] else 1e-3
    print(
        f"max |logit error| vs torch eager, same dequantized weights: {err:.2e} "
        f"(relative {err / scale:.1e}; bound {bound:.0e}"
        + (", int8 LUT tables)" if kinds["lut"] else ")")
    )
    print(f"max |logit difference| vs the fp32 model (quantization): {qerr:.3f}")

    with torch.no_grad():
        ours, t_lpcc = _timed_generation(program, prompt, args.tokens, args.repeat)
        theirs, t_torch = _timed_generation(reference, prompt, args.tokens, args.repeat)
        bf16 = copy.deepcopy(reference).to(torch.bfloat16)
        _, t_bf16 = _timed_generation(bf16, prompt, args.tokens, args.repeat)
    same = "same tokens as" if ours == theirs else "TOKENS DIFFER from"
    print(
        f"greedy decoding, {args.prompt}-token prompt, {args.tokens} new tokens: "
        f"{ours} ({same} torch)"
    )
    print(
        f"time per token (median of {args.repeat} runs, no KV cache): lpcc "
        f"{t_lpcc * 1e3:.1f} ms, torch eager f32 {t_torch * 1e3:.1f} ms, torch "
        f"eager bf16 {t_bf16 * 1e3:.1f} ms (lpcc is {t_bf16 / t_lpcc:.2f}x as fast "
        "as bf16)"
    )
    return 0 if ours == theirs and err <= bound * max(scale, 1.0) else 1


def _describe(target: str) -> str:
    if target != "cpu":
        return f"{target} (NumPy interpreter)"
    from lpcc.codegen.llvm import isa

    return f"cpu ({isa.selected_isa(to_run=True)} kernels, {isa.host_isa()} host)"


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="compile a Llama-style model with int4 weights and run it",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    p.add_argument(
        "--quant", default="int4-g32", help="weight format (default int4-g32)"
    )
    p.add_argument(
        "--target",
        default="cpu",
        choices=("cpu", "reference"),
        help="where kernels run (default cpu: native LLVM kernels)",
    )
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--vocab", type=int, default=2048)
    p.add_argument("--prompt", type=int, default=16, help="prompt length in tokens")
    p.add_argument("--tokens", type=int, default=8, help="tokens to generate")
    p.add_argument("--repeat", type=int, default=5, help="timing repetitions")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)
