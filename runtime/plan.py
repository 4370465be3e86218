"""The VM's fast path: a program's instructions resolved once per set of sizes.

`VM.run` used to walk the instruction list every call: evaluate size
expressions, allocate each storage, make NumPy views, and (for native
kernels) read every array's address and fill a fresh argv. For a decode-step
GEMV that was ~100 us of Python around a ~300 us kernel. A `RunPlan` does
that walk once for given sizes (`env`) and keeps the result:

* every temporary storage gets an offset in one arena (first fit over the
  program's alloc/free order, 64-byte aligned), allocated once per plan; a
  plan belongs to one thread (`VM` keeps them thread-local), so runs on
  several threads never share an arena;
* a storage that holds a returned buffer is "fresh": allocated each run, so
  outputs own their memory as before;
* a native kernel's argv (`runner.NativeEntry`) is a ctypes array filled
  once: constants and arena buffers have fixed addresses, and only the slots
  of inputs and fresh storages are patched per run;
* other kernels and copies get NumPy views, made once for arena buffers;
* when every kernel is native, the whole program goes to the pool's native
  driver in one call (`Pool.run_steps`, a table of kernel address, argv and
  row chunks per call): no Python runs between kernels, and a kernel's
  status slot stops the run.

A run then costs about 10-20 us of Python in all (input checks, output
allocation, one ctypes call), however many kernels the program has. The plan is pure
bookkeeping: it runs exactly the kernels, in the order, with the values of
the instruction walk it replaces (which `VM.run_checked` still does).
"""

from __future__ import annotations

import ctypes
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from lpcc.ir.symbolic import Dim, evaluate

from .kernels import ExecutionError, KernelFn, RuntimeDependencyError
from .program import Alloc, Call, Copy, Free, Program, Return, View

_ALIGN = 64

# Where a buffer's bytes live: ("in", i) input i, ("const", j) constant j,
# ("arena", offset), ("fresh", f) the f-th per-run storage.
Root = tuple[str, int]


def _first_fit(live: list[tuple[int, int]], size: int) -> int:
    """Lowest 64-aligned offset where `size` bytes miss every live block."""
    at = 0
    for start, end in sorted(live):
        if at + size <= start:
            break
        at = max(at, -(-end // _ALIGN) * _ALIGN)
    return at


class RunPlan:
    """`program` under the sizes `env`, ready to run many times on one thread."""

    def __init__(
        self,
        program: Program,
        kernels: dict[str, KernelFn],
        constants: list[np.ndarray],
        np_dtypes: list[np.dtype],
        env: dict[str, int],
        where: Callable[[int], str],
    ) -> None:
        self.env = env
        self._where = where
        self._pc = 0  # the instruction being planned, for errors
        try:
            self._build(program, kernels, constants, np_dtypes)
        except ExecutionError as err:
            raise ExecutionError(f"{where(self._pc)}: {err}") from err
        except Exception as err:  # e.g. a size expression that does not evaluate
            raise ExecutionError(
                f"{where(self._pc)}: {type(err).__name__}: {err}"
            ) from err

    def _build(
        self,
        p: Program,
        kernels: dict[str, KernelFn],
        constants: list[np.ndarray],
        np_dtypes: list[np.dtype],
    ) -> None:
        env = self.env
        memo: dict[str, int] = {}

        def size(d: Dim) -> int:
            if isinstance(d, int):
                return d
            v = memo.get(d)
            if v is None:
                v = memo[d] = evaluate(d, env)
            return v

        # 1. Storage instances: which hold outputs (fresh), arena offsets.
        returned = self._returned_storages(p)
        live: dict[int, tuple[int, int]] = {}  # storage -> (offset, end)
        storage_root: dict[int, Root] = {}
        storage_size: dict[int, int] = {}
        fresh_sizes: list[int] = []
        arena_bytes = 0
        for pc, ins in enumerate(p.instructions):
            self._pc = pc
            if isinstance(ins, Alloc):
                n = size(ins.nbytes)
                if n < 0:
                    raise ExecutionError(f"alloc st{ins.storage}: negative size {n}")
                storage_size[ins.storage] = n
                if ins.storage in returned:
                    storage_root[ins.storage] = ("fresh", len(fresh_sizes))
                    fresh_sizes.append(n)
                else:
                    at = _first_fit(list(live.values()), n)
                    live[ins.storage] = (at, at + n)
                    storage_root[ins.storage] = ("arena", at)
                    arena_bytes = max(arena_bytes, at + n)
            elif isinstance(ins, Free):
                live.pop(ins.storage, None)
        self._arena = np.empty(max(arena_bytes, 1), np.uint8)
        self._fresh_sizes = fresh_sizes

        # 2. Each buffer's root, shape and (for fixed roots) its array.
        nb = len(p.buffers)
        self._root: list[Root | None] = [None] * nb
        self._shape: list[tuple[int, ...]] = [()] * nb
        self._nbytes: list[int] = [0] * nb
        static: list[np.ndarray | None] = [None] * nb
        self._input_bufs: list[tuple[int, int]] = []
        for b, info in enumerate(p.buffers):
            if info.input is not None:
                self._root[b] = ("in", info.input)
                self._input_bufs.append((b, info.input))
            elif info.constant is not None:
                self._root[b] = ("const", info.constant)
                const = constants[info.constant]
                if not const.flags.c_contiguous:  # a splat: kernels read memory
                    const = np.ascontiguousarray(const)
                    const.setflags(write=False)
                static[b] = const
        self._np_dtypes = np_dtypes

        def place(b: int) -> None:
            info = p.buffers[b]
            assert info.storage is not None  # validate() checked it
            root = storage_root[info.storage]
            shape = tuple(map(size, info.shape))
            dt = np_dtypes[b]
            n = math.prod(shape) * dt.itemsize
            self._root[b], self._shape[b], self._nbytes[b] = root, shape, n
            if n > storage_size[info.storage]:
                raise ExecutionError(
                    f"buffer %{b} ({list(shape)} {dt}) needs {n} bytes, storage "
                    f"st{info.storage} has {storage_size[info.storage]}"
                )
            if root[0] == "arena":
                start = root[1]
                static[b] = self._arena[start : start + n].view(dt).reshape(shape)

        # 3. The steps.
        self._steps: list[tuple[Any, ...]] = []
        self._natives: list[tuple[Any, ...]] = []
        for pc, ins in enumerate(p.instructions):
            self._pc = pc
            if isinstance(ins, Call):
                for b in ins.outputs:
                    place(b)
                fn = kernels[ins.kernel]
                native = getattr(fn, "native", None)
                if native is not None:
                    self._steps.append(("native", pc, len(self._natives)))
                    self._natives.append(self._native_step(native, ins, static, env))
                else:
                    self._steps.append(("call", pc, fn, ins.inputs, ins.outputs))
            elif isinstance(ins, View):
                shape = tuple(map(size, ins.shape))
                self._root[ins.dst], self._shape[ins.dst] = self._root[ins.src], shape
                self._nbytes[ins.dst] = self._nbytes[ins.src]
                src = static[ins.src]
                if src is not None:
                    static[ins.dst] = src.reshape(shape)
                else:
                    self._steps.append(("view", pc, ins.dst, ins.src, shape))
            elif isinstance(ins, Copy):
                place(ins.dst)
                self._steps.append(("copy", pc, ins.dst, ins.src))
            elif isinstance(ins, Return):
                self._steps.append(("ret", pc, ins.buffers))
                break
        self._static = static
        self._only_native: bool | None = None  # every step native (or a view)?
        # Pool.run_steps rows per thread count: (array, (address, n, width))
        self._tables: dict[int, tuple[np.ndarray, tuple[int, int, int]]] = {}
        self._table_pc: list[int] = []

    @staticmethod
    def _returned_storages(p: Program) -> set[int]:
        """Storages that hold a returned buffer (through views)."""
        owner: dict[int, int | None] = {
            b: info.storage for b, info in enumerate(p.buffers)
        }
        for ins in p.instructions:
            if isinstance(ins, View):
                owner[ins.dst] = owner.get(ins.src)
        out: set[int] = set()
        for ins in p.instructions:
            if isinstance(ins, Return):
                out.update(s for b in ins.buffers if (s := owner[b]) is not None)
        return out

    def _native_step(
        self,
        native: Any,
        ins: Call,
        static: list[np.ndarray | None],
        env: dict[str, int],
    ) -> tuple[Any, ...]:
        """(native, rows, argv, argv address, patches) of one call.

        argv[0] is the kernel's status slot (`runner.NativeEntry`); the
        kernel gets the address of argv[1].
        """
        buffers = [*ins.inputs, *ins.outputs]
        argv = (ctypes.c_int64 * (1 + len(buffers) + len(native.symbols)))()
        patches: list[tuple[int, Root]] = []
        for k, b in enumerate(buffers, start=1):
            arr = static[b]
            root = self._root[b]
            if arr is not None:
                argv[k] = arr.ctypes.data
            else:
                assert root is not None
                patches.append((k, root))
        for k, s in enumerate(native.symbols, start=1 + len(buffers)):
            argv[k] = env[s]
        rows = (
            native.rows if isinstance(native.rows, int) else evaluate(native.rows, env)
        )
        return (native, rows, argv, ctypes.addressof(argv) + 8, patches)

    # -- running ----------------------------------------------------------------
    def _table(self, pool: Any) -> tuple[int, int, int] | None:
        """The native calls as `Pool.run_steps` rows, when every step is one.

        Made once per thread count: each call's rows split as the pool would.
        """
        if self._only_native is False:
            return None
        if self._only_native is None:
            kinds = {step[0] for step in self._steps}
            self._only_native = kinds <= {"native", "view", "ret"}
            if not self._only_native:
                return None
        threads = pool.num_threads
        if self._tables.get(threads) is None:
            from lpcc.codegen.llvm.pool import split_rows

            calls = [i for i, n in enumerate(self._natives) if n[1] > 0]
            table = np.zeros((len(calls), 3 + 2 * threads), np.int64)
            self._table_pc = calls  # table row -> native call index
            for r, i in enumerate(calls):
                native, rows, _, argv_addr, _ = self._natives[i]
                chunks = split_rows(rows, threads, native.granule)
                table[r, :3] = (native.address, argv_addr, len(chunks))
                table[r, 3 : 3 + 2 * len(chunks)] = np.ravel(chunks)
            self._tables[threads] = (table, (table.ctypes.data, *table.shape))
        return self._tables[threads][1]

    def run(self, inputs: list[np.ndarray], pool: Any) -> list[np.ndarray]:
        """Run on checked, C-contiguous inputs; returns the outputs."""
        fresh = [np.empty(n, np.uint8) for n in self._fresh_sizes]
        addr: dict[Root, int] = {}
        for i, x in enumerate(inputs):
            addr["in", i] = x.ctypes.data
        for f, store in enumerate(fresh):
            addr["fresh", f] = store.ctypes.data
        for _, _, argv, _, patches in self._natives:
            for k, root in patches:
                argv[k] = addr[root]
        arrays = list(self._static)
        for b, i in self._input_bufs:
            arrays[b] = inputs[i]
        if pool is not None:
            table = self._table(pool)
            done = None if table is None else pool.run_steps(*table)
            if done is not None:  # every kernel ran, natively, back to back
                if done:
                    self._failed(self._table_pc[done - 1])
                ret = self._steps[-1]
                assert ret[0] == "ret"
                for step in self._steps[:-1]:
                    if step[0] == "view":
                        _, _, dst, src, shape = step
                        arrays[dst] = self._array(src, arrays, inputs, fresh).reshape(
                            shape
                        )
                return self._outputs(ret[2], arrays, inputs, fresh)
        natives = self._natives
        for step in self._steps:
            kind = step[0]
            try:
                if kind == "native":
                    native, rows, argv, argv_addr, _ = natives[step[2]]
                    if rows > 0:
                        pool.run(native.entry, rows, argv_addr, granule=native.granule)
                        if argv[0]:
                            status, argv[0] = argv[0], 0
                            native.check_status(status)
                elif kind == "call":
                    _, _, fn, ins_b, outs_b = step
                    fn(
                        [self._array(b, arrays, inputs, fresh) for b in ins_b],
                        [self._array(b, arrays, inputs, fresh) for b in outs_b],
                        self.env,
                    )
                elif kind == "view":
                    _, _, dst, src, shape = step
                    arrays[dst] = self._array(src, arrays, inputs, fresh).reshape(shape)
                elif kind == "copy":
                    _, _, dst, src = step
                    np.copyto(
                        self._array(dst, arrays, inputs, fresh),
                        self._array(src, arrays, inputs, fresh),
                    )
                else:  # "ret"
                    return self._outputs(step[2], arrays, inputs, fresh)
            except ExecutionError as err:
                raise ExecutionError(f"{self._where(step[1])}: {err}") from err
            except RuntimeDependencyError:  # no GPU, no cupy: not this program's bug
                raise
            except Exception as err:  # a kernel's bug: say which instruction
                raise ExecutionError(
                    f"{self._where(step[1])}: {type(err).__name__}: {err}"
                ) from err
        raise AssertionError("unreachable: validate() requires a ret")

    def _failed(self, i: int) -> None:
        """Raise the error native call `i` reported (and clear its status)."""
        native, _, argv, _, _ = self._natives[i]
        status, argv[0] = argv[0], 0
        pc = next(s[1] for s in self._steps if s[0] == "native" and s[2] == i)
        try:
            native.check_status(status)
        except ExecutionError as err:
            raise ExecutionError(f"{self._where(pc)}: {err}") from err

    def _array(
        self,
        b: int,
        arrays: list[np.ndarray | None],
        inputs: list[np.ndarray],
        fresh: list[np.ndarray],
    ) -> np.ndarray:
        """Buffer `b` of this run (made from its root once per run)."""
        arr = arrays[b]
        if arr is None:
            kind, i = self._root[b]  # type: ignore[misc]
            shape, dt = self._shape[b], self._np_dtypes[b]
            if kind == "in":
                arr = inputs[i].reshape(shape)
            else:  # "fresh": a buffer placed at its storage's first bytes
                arr = fresh[i][: self._nbytes[b]].view(dt).reshape(shape)
            arrays[b] = arr
        return arr

    def _outputs(
        self,
        buffers: tuple[int, ...],
        arrays: list[np.ndarray | None],
        inputs: list[np.ndarray],
        fresh: list[np.ndarray],
    ) -> list[np.ndarray]:
        """The returned buffers: a fresh storage's first return is handed out."""
        out: list[np.ndarray] = []
        seen: set[Root] = set()
        for b in buffers:
            arr = self._array(b, arrays, inputs, fresh)
            root = self._root[b]
            if root is None or root[0] != "fresh" or root in seen:
                arr = arr.copy()
            else:
                seen.add(root)
            out.append(arr)
        return out
