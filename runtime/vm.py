"""The VM: runs a `Program` on NumPy arrays.

`VM(program)` validates the program, loads each kernel once (through the
loader of its target, `lpcc.runtime.kernels`) and turns each constant's
packed codes into values once. `run(inputs)` then

1. checks the inputs (count, rank, sizes, dtype), binding the size symbols
   from their shapes, and raises `InputError` naming the parameter;
2. walks the instructions: `alloc` makes a uint8 storage of the evaluated
   size, a buffer is placed in its storage (a typed view of the storage's
   first bytes) just before a kernel or copy writes it, `view` reshapes,
   `free` drops the storage and every buffer placed in it;
3. returns the outputs as arrays that nothing else refers to (each output
   owns its storage, a fresh one per run; anything else is copied).

Storages are allocated per run, so one VM may run from several threads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lpcc.errors import DTypeError, LpccError
from lpcc.ir.dtypes import IntType, dtype
from lpcc.ir.symbolic import Dim, ShapeError, bind, evaluate, evaluate_shape

from .kernels import ExecutionError, KernelFn, load_kernel
from .program import (
    Alloc,
    Call,
    Copy,
    Free,
    Program,
    Return,
    View,
    value_dtype,
)


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
        p = self.program
        arrays_in, env = self._check_inputs(inputs)
        arrays: list[np.ndarray | None] = [None] * len(p.buffers)
        for b, arr in zip(self._input_buf, arrays_in, strict=True):
            arrays[b] = arr
        for b, arr in zip(self._const_buf, self._constants, strict=True):
            arrays[b] = arr
        storages: dict[int, np.ndarray] = {}
        memo: dict[str, int] = {}

        def size(d: Dim) -> int:
            """`d` under this run's sizes; each expression is parsed once a run."""
            if isinstance(d, int):
                return d
            v = memo.get(d)
            if v is None:
                v = memo[d] = evaluate(d, env)
            return v

        def place(b: int) -> np.ndarray:
            info = p.buffers[b]
            shape = tuple(map(size, info.shape))
            dt = self._np_dtypes[b]
            n = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
            assert info.storage is not None  # validate() checked it
            store = storages[info.storage]
            if n > store.size:
                raise ExecutionError(
                    f"buffer %{b} ({list(shape)} {dt}) needs {n} bytes, storage "
                    f"st{info.storage} has {store.size}"
                )
            arr = store[:n].view(dt).reshape(shape)
            arrays[b] = arr
            return arr

        for pc, ins in enumerate(p.instructions):
            try:
                if isinstance(ins, Call):
                    ins_arrays = [arrays[b] for b in ins.inputs]
                    outs = [place(b) for b in ins.outputs]
                    self._kernels[ins.kernel](ins_arrays, outs, env)  # type: ignore[arg-type]
                elif isinstance(ins, Alloc):
                    nbytes = size(ins.nbytes)
                    if nbytes < 0:
                        raise ExecutionError(f"negative size {nbytes}")
                    storages[ins.storage] = np.empty(nbytes, np.uint8)
                elif isinstance(ins, View):
                    src = arrays[ins.src]
                    assert src is not None
                    arrays[ins.dst] = src.reshape(tuple(map(size, ins.shape)))
                elif isinstance(ins, Copy):
                    np.copyto(place(ins.dst), arrays[ins.src])  # type: ignore[arg-type]
                elif isinstance(ins, Free):
                    del storages[ins.storage]
                    for b in self._in_storage.get(ins.storage, ()):
                        arrays[b] = None
                elif isinstance(ins, Return):
                    return self._outputs(ins, arrays)
            except ExecutionError as err:
                raise ExecutionError(f"{self._where(pc)}: {err}") from err
            except Exception as err:  # a kernel's bug: say which instruction
                raise ExecutionError(
                    f"{self._where(pc)}: {type(err).__name__}: {err}"
                ) from err
        raise AssertionError("unreachable: validate() requires a ret")

    def _where(self, pc: int) -> str:
        text = self.program.show_instruction(self.program.instructions[pc])
        return f"instruction #{pc} `{text}`"

    def _outputs(
        self, ret: Return, arrays: list[np.ndarray | None]
    ) -> list[np.ndarray]:
        """The returned buffers; a copy unless the array owns a fresh storage."""
        out: list[np.ndarray] = []
        seen: set[int] = set()
        for b in ret.buffers:
            arr = arrays[b]
            assert arr is not None
            storage = self.program.buffers[b].storage
            if storage is None or storage in seen:
                arr = arr.copy()
            else:
                seen.add(storage)
            out.append(arr)
        return out
