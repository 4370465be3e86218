"""Calling native CPU kernels from the VM (no compiler needed).

A saved CPU kernel is its object code plus the JSON meta that
`lpcc.codegen.program` writes (`entry`, `rows`, `granule`, `symbols`,
`num_inputs`, `num_outputs`, `object`: the `CompiledObject` metadata). The
loader links the object after checking the CPU's features, then each call
fills the argv slots (see `kernel.py`) and runs the entry over the worker
pool. This module imports llvmlite's binding, ctypes and numpy only.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from lpcc.ir.symbolic import evaluate
from lpcc.runtime.kernels import ExecutionError

from .loader import CompiledObject, load_object
from .pool import default_pool


class NativeEntry(NamedTuple):
    """What the VM's run plan needs to call a kernel without `run`'s checks.

    `entry(begin, end, argv)` computes rows [begin, end) of `rows` (an int or
    a size expression), split over the pool in multiples of `granule`; argv
    holds the inputs' and outputs' addresses, then the `symbols`' values,
    and `argv[-1]` is the status slot (`check_status`).
    """

    entry: Any
    rows: int | str
    granule: int
    symbols: tuple[str, ...]
    errors: dict[int, str]
    address: int  # entry's code address (for Pool.run_steps)

    def check_status(self, status: int) -> None:
        """Raise the kernel's error for a nonzero status slot."""
        if status:
            why = self.errors.get(status, f"unknown status code {status}")
            raise ExecutionError(why)


KernelFn = Callable[[list[np.ndarray], list[np.ndarray], dict[str, int]], None]


def native_kernel_fn(object_code: bytes, meta: dict[str, Any]) -> KernelFn:
    """The VM-callable function of one saved native kernel."""
    obj = CompiledObject.from_metadata(object_code, meta["object"])
    lib = load_object(obj)
    entry = lib.function(
        meta["entry"], None, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p
    )
    n_in = int(meta["num_inputs"])
    n_out = int(meta["num_outputs"])
    symbols = list(meta.get("symbols", ()))
    rows = meta.get("rows", 1)
    granule = int(meta.get("granule", 1))
    n_slots = n_in + n_out + len(symbols)
    static_rows = rows if isinstance(rows, int) else None
    errors = {int(c): str(m) for c, m in meta.get("errors", {}).items()}
    address = ctypes.cast(entry, ctypes.c_void_p).value or 0
    native = NativeEntry(entry, rows, granule, tuple(symbols), errors, address)

    def run(
        inputs: list[np.ndarray], outputs: list[np.ndarray], env: dict[str, int]
    ) -> None:
        argv = (ctypes.c_int64 * (n_slots + 1))()  # [0]: the status slot
        k = 1
        keep = []  # contiguous copies (splat constants) live through the call
        for arr in inputs:
            if not arr.flags.c_contiguous:
                arr = np.ascontiguousarray(arr)
                keep.append(arr)
            argv[k] = arr.ctypes.data
            k += 1
        for arr in outputs:
            argv[k] = arr.ctypes.data
            k += 1
        for s in symbols:
            argv[k] = env[s]
            k += 1
        n = static_rows if static_rows is not None else evaluate(rows, env)
        if n > 0:
            default_pool().run(entry, n, ctypes.addressof(argv) + 8, granule=granule)
            native.check_status(argv[0])

    run.library = lib  # type: ignore[attr-defined]
    run.native = native  # type: ignore[attr-defined]
    return run
