"""The VM: runs a `Program` on NumPy arrays.

`VM(program)` validates the program, loads each kernel once (through the
loader of its target, `lpcc.runtime.kernels`) and turns each constant's
packed codes into values once. `run(inputs)` then

1. checks the inputs (count, rank, sizes, dtype), binding the size symbols
   from their shapes, and raises `InputError` naming the parameter; inputs
   that already are C-contiguous arrays of a static shape and an exact dtype
   skip the checks (`_fast_inputs`);
2. runs the `RunPlan` of those sizes (`plan.py`, made on the first run with
   them and kept per thread): temporaries live in one reused arena, native
   kernels get pre-filled argvs, and only the addresses of the inputs and
   of the storages that hold outputs change between runs;
3. returns the outputs as arrays that nothing else refers to (each output
   owns its storage, a fresh one per run; anything else is copied).

Plans and arenas are per thread, so one VM may run from several threads.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from lpcc.errors import DTypeError, LpccError
from lpcc.ir.dtypes import IntType, dtype
from lpcc.ir.symbolic import ShapeError, bind, evaluate_shape

from .kernels import KernelFn, load_kernel
from .plan import RunPlan
from .program import Program, value_dtype

_MAX_PLANS = 16  # run plans kept per thread (one per set of input sizes)


class InputError(LpccError, ValueError):
    """Inputs that do not match the program's parameters (count, shape, dtype)."""


class VM:
    """Runs one program; construct once, call `run` many times."""

    def __init__(self, program: Program) -> None:
        program.validate()
        self.program = program
        self._kernels: dict[str, KernelFn] = {
            k.name: load_kernel(k) for k in program.kernels
        }
        self._constants: list[np.ndarray] = []
        for c in program.constants:
            values = c.values()
            values.setflags(write=False)  # shared by every run: kernels only read
            self._constants.append(values)
        self._input_buf = [0] * len(program.inputs)
        self._const_buf = [0] * len(program.constants)
        self._in_storage: dict[int, list[int]] = {}
        for b, info in enumerate(program.buffers):
            if info.input is not None:
                self._input_buf[info.input] = b
            elif info.constant is not None:
                self._const_buf[info.constant] = b
            elif info.storage is not None:
                self._in_storage.setdefault(info.storage, []).append(b)
        self._np_dtypes = [value_dtype(info.dtype) for info in program.buffers]
        self._specs = [(s, dtype(s.dtype)) for s in program.inputs]
        self._fast = self._fast_specs()
        self._native = any(
            getattr(fn, "native", None) is not None for fn in self._kernels.values()
        )
        self._local = threading.local()  # per thread: its RunPlans

    def _fast_specs(self) -> list[tuple[np.dtype, tuple[int, ...]]] | None:
        """(value dtype, shape) per input if every input may skip the checks.

        Inputs with symbolic sizes bind symbols, and narrow ints and sub-f32
        floats need a range check or rounding: those go the checked way.
        """
        fast = []
        for spec, dt in self._specs:
            if not all(isinstance(d, int) for d in spec.shape):
                return None
            want = dt.value_dtype
            if isinstance(dt, IntType):
                ok = want.kind == "b" or dt.bits == 8 * want.itemsize
            else:
                ok = dt.name == "f32"
            if not ok:
                return None
            fast.append((want, tuple(spec.shape)))
        return fast

    @staticmethod
    def _pool() -> Any:
        """The native worker pool (imported here: numpy-only VMs never load it)."""
        from lpcc.codegen.llvm.pool import default_pool

        return default_pool()

    # -- inputs -----------------------------------------------------------------
    def _check_inputs(
        self, inputs: Sequence[Any]
    ) -> tuple[list[np.ndarray], dict[str, int]]:
        specs = self.program.inputs
        if isinstance(inputs, np.ndarray) or not isinstance(inputs, Sequence):
            raise InputError(
                "VM.run takes a list of input arrays, got "
                f"{type(inputs).__name__}; pass [x] for one input"
            )
        if len(inputs) != len(specs):
            names = ", ".join(s.name for s in specs)
            raise InputError(
                f"the program takes {len(specs)} inputs ({names}), got {len(inputs)}"
            )
        env: dict[str, int] = {}
        arrays = []
        for i, ((spec, dt), x) in enumerate(zip(self._specs, inputs, strict=True)):
            what = f"input {spec.name!r} (#{i})"
            arr = self._convert(what, spec.dtype, dt, x)
            before = set(env)
            try:
                bind(spec.shape, arr.shape, env, what)
            except ShapeError as err:
                raise InputError(str(err)) from None
            for sym in set(env) - before:
                self._check_range(what, sym, env[sym])
            arrays.append(np.ascontiguousarray(arr))
        for i, (spec, arr) in enumerate(zip(specs, arrays, strict=True)):
            what = f"input {spec.name!r} (#{i})"
            try:
                want = evaluate_shape(spec.shape, env)
            except ShapeError as err:
                raise InputError(f"{what}: {err}") from None
            if want != arr.shape:
                raise InputError(
                    f"{what}: expected shape {list(want)} ({list(spec.shape)}), "
                    f"got {list(arr.shape)}"
                )
        return arrays, env

    def _check_range(self, what: str, sym: str, value: int) -> None:
        rng = self.program.dim_ranges.get(sym)
        if rng is None:
            return
        lo, hi = rng
        if value < lo or (hi is not None and value > hi):
            top = "inf" if hi is None else hi
            raise InputError(
                f"{what}: size {sym} = {value} is outside the range [{lo}, {top}] "
                "this program was compiled for; recompile with a wider dynamic "
                "dimension"
            )

    @staticmethod
    def _convert(what: str, name: str, dt: Any, x: Any) -> np.ndarray:
        """`x` as values of `dt` in its value dtype, or an InputError saying why."""
        if not isinstance(x, np.ndarray | np.generic):
            raise InputError(
                f"{what}: expected a NumPy array of {name}, got {type(x).__name__}"
            )
        arr = np.asarray(x)
        want = dt.value_dtype
        if arr.dtype != want:
            try:
                same = dtype(arr.dtype) == dt
            except DTypeError:
                same = False
            if not same:
                raise InputError(
                    f"{what}: expected dtype {name} (NumPy {want}), got "
                    f"{arr.dtype} with shape {list(arr.shape)}; convert with "
                    f".astype(np.{want})"
                )
            return arr.astype(want)  # e.g. float16 for f16: exact in float32
        if not isinstance(dt, IntType):
            return dt.to_values(arr)  # rounds to sub-f32 floats and to e8m0
        if want.kind != "b" and dt.bits != 8 * want.itemsize:  # int4, int1 in int8
            lo, hi = arr.min(initial=dt.min), arr.max(initial=dt.max)
            if lo < dt.min or hi > dt.max:
                raise InputError(
                    f"{what}: values must lie in [{dt.min}, {dt.max}] for {name}, "
                    f"got values in [{lo}, {hi}]"
                )
        return arr

    # -- running ----------------------------------------------------------------
    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Run the program; returns one new array per output."""
        arrays = self._fast_inputs(inputs)
        if arrays is None:
            arrays, env = self._check_inputs(inputs)
        else:
            env = {}
        plans = getattr(self._local, "plans", None)
        if plans is None:
            plans = self._local.plans = {}
        key = tuple(sorted(env.items()))
        plan = plans.get(key)
        if plan is None:
            if len(plans) >= _MAX_PLANS:  # e.g. a growing sequence length
                del plans[next(iter(plans))]
            plan = plans[key] = RunPlan(
                self.program,
                self._kernels,
                self._constants,
                self._np_dtypes,
                env,
                self._where,
            )
        return plan.run(arrays, self._pool() if self._native else None)

    def _fast_inputs(self, inputs: Sequence[Any]) -> list[np.ndarray] | None:
        """`inputs` as they are if each already is what `_check_inputs` returns.

        That is: a C-contiguous array of the parameter's value dtype and static
        shape, of a type whose values need no rounding or range check. Else
        None, and the full check runs (and explains any error).
        """
        fast = self._fast
        if fast is None or type(inputs) not in (list, tuple):
            return None
        if len(inputs) != len(fast):
            return None
        for x, (want, shape) in zip(inputs, fast, strict=True):
            if (
                type(x) is not np.ndarray
                or x.dtype != want
                or x.shape != shape
                or not x.flags.c_contiguous
            ):
                return None
        return list(inputs)

    def _where(self, pc: int) -> str:
        text = self.program.show_instruction(self.program.instructions[pc])
        return f"instruction #{pc} `{text}`"
