"""From a kernel function to object code, and running it on arrays.

`lower_kernel` asks the generators (`kernel.generate`) for a request and
compiles the answer to object code; `kernel_meta` is the JSON a saved
program keeps beside that code (what `runner.native_kernel_fn` reads).
`run_native` does everything at once on NumPy arrays: the tests compare it
with the interpreter on the same kernel function.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from xdsl.dialects import func

from lpcc.errors import IRError
from lpcc.ir.symbolic import bind, evaluate_shape

from . import isa as isa_mod
from .jit import compile_ir
from .kernel import KernelRequest, NativeKernel, elem, generate, shape
from .loader import CompiledObject
from .runner import native_kernel_fn


def lower_kernel(
    fn: func.FuncOp,
    isa: str,
    const_inputs: Sequence[int] = (),
    entry: str = "lpcc_kernel",
) -> tuple[NativeKernel, CompiledObject] | None:
    """Generate and compile `fn`'s kernel for `isa`; None if no generator can."""
    req = KernelRequest(fn, isa, frozenset(const_inputs), entry)
    nk = generate(req)
    if nk is None:
        return None
    bad = set(nk.repack) - set(const_inputs)
    if bad:
        raise AssertionError(
            f"generator for {req.op.name} repacks inputs {sorted(bad)}, which "
            "are not constants"
        )
    return nk, compile_ir(nk.ir, isa)


def kernel_meta(
    nk: NativeKernel, obj: CompiledObject, n_in: int, n_out: int
) -> dict[str, Any]:
    """The JSON meta of a native kernel (read back by `runner`)."""
    return {
        "entry": nk.entry,
        "rows": nk.rows,
        "granule": nk.granule,
        "symbols": list(nk.symbols),
        "num_inputs": n_in,
        "num_outputs": n_out,
        "note": nk.note,
        "repack": {str(i): r.layout for i, r in sorted(nk.repack.items())},
        "errors": {str(c): m for c, m in sorted(nk.errors.items())},
        "object": obj.metadata(),
    }


def run_native(
    fn: func.FuncOp,
    inputs: Sequence[np.ndarray],
    isa: str | None = None,
    const_inputs: Sequence[int] = (),
) -> list[np.ndarray] | None:
    """Run `fn` natively on value-domain `inputs` (None: no generator for it).

    Inputs in `const_inputs` are treated as constants (repacked if the
    kernel asks). `isa` defaults to the level this host runs.
    """
    if isa is None:
        isa = isa_mod.selected_isa(to_run=True)
    lowered = lower_kernel(fn, isa, const_inputs)
    if lowered is None:
        return None
    nk, obj = lowered
    args = fn.body.block.args
    env: dict[str, int] = {}
    arrays = []
    for i, (arg, x) in enumerate(zip(args, inputs, strict=True)):
        x = np.asarray(x, elem(arg).value_dtype)
        x = np.ascontiguousarray(x).reshape(x.shape)  # keeps rank 0
        bind(shape(arg), x.shape, env, f"input #{i}")
        if i in nk.repack:
            x = np.ascontiguousarray(nk.repack[i].fn(x), np.uint8)
        arrays.append(x)
    ret = fn.body.block.last_op
    if ret is None or tuple(ret.operands) != tuple(fn.body.block.first_op.results):
        raise IRError(  # outputs are sized from the return, written in op order
            "run_native: the kernel function must return its one op's results, "
            "in order (as `kernel_function` builds it)"
        )
    outputs = [
        np.zeros(evaluate_shape(shape(v), env), elem(v).value_dtype)
        for v in ret.operands
    ]
    run = native_kernel_fn(
        obj.object_code, kernel_meta(nk, obj, len(arrays), len(outputs))
    )
    run(arrays, outputs, env)
    return outputs
