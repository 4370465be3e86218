"""From a kernel function to CUDA C (and fatbins), and running it on arrays.

`lower_kernel` asks the generators (`kernel.generate`) for a request and
checks the answer; `kernel_meta` is the JSON a saved program keeps beside
the source (what `runner.cuda_kernel_fn` reads); `fatbin` compiles the
source ahead of time for the architectures a program carries. `run_cuda`
does everything at once on NumPy arrays (on the GPU, or on the host
emulator): the tests compare it with the interpreter on the same function.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from xdsl.dialects import func

from lpcc.errors import IRError
from lpcc.ir.symbolic import bind, evaluate_shape

from .kernel import PRELUDE, CudaKernel, CudaRequest, elem, generate, shape


def lower_kernel(
    fn: func.FuncOp,
    arch: str = "sm_80",
    const_inputs: Sequence[int] = (),
    entry: str = "lpcc_kernel",
) -> CudaKernel | None:
    """Generate `fn`'s CUDA kernel; None if no generator takes it."""
    req = CudaRequest(fn, arch, frozenset(const_inputs), entry)
    ck = generate(req)
    if ck is None:
        return None
    bad = set(ck.repack) - set(const_inputs)
    if bad:
        raise AssertionError(
            f"CUDA generator for {req.op.name} repacks inputs {sorted(bad)}, "
            "which are not constants"
        )
    if not ck.launches:
        raise AssertionError(f"CUDA generator for {req.op.name} launches nothing")
    if "LPCC_PRELUDE" not in ck.source:
        ck.source = PRELUDE + ck.source
    for la in ck.launches:
        if f" {la.entry}(" not in ck.source:
            raise AssertionError(
                f"CUDA generator for {req.op.name}: entry {la.entry!r} is not "
                "defined in its source"
            )
    return ck


def kernel_meta(ck: CudaKernel, n_in: int, n_out: int, arch: str) -> dict[str, Any]:
    """The JSON meta of a CUDA kernel (read back by `runner`)."""
    return {
        "arch": arch,
        "launches": [
            {
                "entry": la.entry,
                "grid": list(la.grid),
                "block": list(la.block),
                "shared_bytes": la.shared_bytes,
            }
            for la in ck.launches
        ],
        "symbols": list(ck.symbols),
        "scratch": list(ck.scratch),
        "num_inputs": n_in,
        "num_outputs": n_out,
        "note": ck.note,
        "repack": {str(i): r.layout for i, r in sorted(ck.repack.items())},
        "errors": {str(c): m for c, m in sorted(ck.errors.items())},
    }


def fatbin(source: str, archs: Sequence[str]) -> bytes:
    """One fatbin holding a cubin per architecture in `archs` (nvcc)."""
    from .nvcc import compile_fatbin

    return compile_fatbin(source, archs)


def run_cuda(
    fn: func.FuncOp,
    inputs: Sequence[np.ndarray],
    *,
    const_inputs: Sequence[int] = (),
    arch: str = "sm_80",
    device: str | None = None,
) -> list[np.ndarray] | None:
    """Run `fn`'s CUDA kernel on value-domain `inputs` (None: no generator).

    `device` is "gpu", "emulate" or None (the `cuda_device` knob). Inputs in
    `const_inputs` are treated as constants (repacked if the kernel asks).
    """
    from .runner import cuda_kernel_fn

    ck = lower_kernel(fn, arch, const_inputs)
    if ck is None:
        return None
    args = fn.body.block.args
    env: dict[str, int] = {}
    arrays = []
    for i, (arg, x) in enumerate(zip(args, inputs, strict=True)):
        x = np.asarray(x, elem(arg).value_dtype)
        x = np.ascontiguousarray(x).reshape(x.shape)
        bind(shape(arg), x.shape, env, f"input #{i}")
        if i in ck.repack:
            x = np.ascontiguousarray(ck.repack[i].fn(x), np.uint8)
        arrays.append(x)
    ret = fn.body.block.last_op
    if ret is None or tuple(ret.operands) != tuple(fn.body.block.first_op.results):
        raise IRError(
            "run_cuda: the kernel function must return its one op's results, in "
            "order (as `kernel_function` builds it)"
        )
    outputs = [
        np.zeros(evaluate_shape(shape(v), env), elem(v).value_dtype)
        for v in ret.operands
    ]
    meta = kernel_meta(ck, len(arrays), len(outputs), arch)
    run = cuda_kernel_fn("run_cuda", ck.source, meta, {}, device=device)
    run(arrays, outputs, env)
    return outputs
