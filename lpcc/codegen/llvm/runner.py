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

from .loader import CompiledObject, load_object
from .pool import default_pool


class NativeEntry(NamedTuple):
    """What the VM's run plan needs to call a kernel without `run`'s checks.

    `entry(begin, end, argv)` computes rows [begin, end) of `rows` (an int or
    a size expression), split over the pool in multiples of `granule`; argv
    holds the inputs' and outputs' addresses, then the `symbols`' values.
    """

    entry: Any
    rows: int | str
    granule: int
    symbols: tuple[str, ...]


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

    def run(
        inputs: list[np.ndarray], outputs: list[np.ndarray], env: dict[str, int]
    ) -> None:
        argv = (ctypes.c_int64 * max(n_slots, 1))()
        k = 0
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
            default_pool().run(entry, n, ctypes.addressof(argv), granule=granule)

    run.library = lib  # type: ignore[attr-defined]
    run.native = NativeEntry(entry, rows, granule, tuple(symbols))  # type: ignore[attr-defined]
    return run
