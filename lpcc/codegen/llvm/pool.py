"""A persistent worker pool that splits a kernel's rows over threads.

CPU kernels take a row range: `fn(row_begin, row_end, *args)` computes rows
[row_begin, row_end) of their output. `Pool.run` cuts [0, n_rows) into one
contiguous chunk per thread, aligned to a `granule` (a kernel's row tile, so
no tile straddles two threads), hands all chunks but the first to persistent
worker threads and runs the first on the calling thread. Generated kernels
are ctypes CFUNCTYPE functions, which release the GIL while they run, so the
chunks run in parallel.

Two ways to hand a chunk to a worker, measured by
`benchmarks/pool_overhead.py` (2 threads, empty kernel, 2-core Zen 3 VM):
Python workers sleeping on a lock cost 15-30 us a call (two OS wake-ups and
two GIL hand-offs); native workers cost about 4 us. A native worker is a thread
that enters a small LLVM-compiled loop (`_NATIVE_IR`) and stays there with
the GIL released: it spins on its slot for a while (`spin_ticks`, with
`pause` and `sched_yield`), then sleeps on a futex, and calls the kernel's
address itself, so neither side takes the GIL or sleeps while kernels come
back to back. The native path
serves kernels loaded by `loader.Library` whose arguments are all integers
or pointers (x86-64 Linux); other callables (and exceptions) go the Python
way.
"""

from __future__ import annotations

import ctypes
import functools
import operator
import os
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

from lpcc import config
from lpcc.errors import LpccError

Kernel = Callable[..., Any]


_NATIVE_IR = r"""
; The native side of lpcc's worker pool (see pool.py). A worker's state is
; 16 i64 slots: 0 posted generation (also the futex word, low 32 bits),
; 1 finished generation, 2 kernel address, 3 row begin, 4 row end,
; 5..12 kernel arguments, 13 stop flag, 14 sleeping flag, 15 spin budget in
; cycle-counter ticks before the worker sleeps on the futex.
declare i64 @syscall(i64, ...)
declare void @llvm.x86.sse2.pause()
declare i64 @llvm.readcyclecounter()

define void @lpcc_pool_worker(ptr %s) {
entry:
  %pdone = getelementptr i64, ptr %s, i64 1
  %pstop = getelementptr i64, ptr %s, i64 13
  %psleep = getelementptr i64, ptr %s, i64 14
  %pbudget = getelementptr i64, ptr %s, i64 15
  br label %idle
idle:
  %last = phi i64 [0, %entry], [%g, %work]
  %t0 = call i64 @llvm.readcyclecounter()
  br label %spin
spin:
  %g = load atomic i64, ptr %s acquire, align 8
  %posted = icmp ne i64 %g, %last
  br i1 %posted, label %got, label %pausing
pausing:
  call void @llvm.x86.sse2.pause()
  %yields = call i64 (i64, ...) @syscall(i64 24)
  %t = call i64 @llvm.readcyclecounter()
  %dt = sub i64 %t, %t0
  %budget = load i64, ptr %pbudget, align 8
  %over = icmp ugt i64 %dt, %budget
  br i1 %over, label %sleep, label %spin
sleep:
  store atomic i64 1, ptr %psleep seq_cst, align 8
  %g1 = load atomic i64, ptr %s seq_cst, align 8
  %posted1 = icmp ne i64 %g1, %last
  br i1 %posted1, label %woke, label %wait
wait:
  %word = and i64 %last, 4294967295
  %r = call i64 (i64, ...) @syscall(i64 202, ptr %s, i64 128, i64 %word, ptr null)
  br label %woke
woke:
  store atomic i64 0, ptr %psleep seq_cst, align 8
  br label %spin
got:
  %stop = load i64, ptr %pstop, align 8
  %stopping = icmp ne i64 %stop, 0
  br i1 %stopping, label %out, label %work
work:
  %pf = getelementptr i64, ptr %s, i64 2
  %f = load ptr, ptr %pf, align 8
  %pb = getelementptr i64, ptr %s, i64 3
  %b = load i64, ptr %pb, align 8
  %pe = getelementptr i64, ptr %s, i64 4
  %e = load i64, ptr %pe, align 8
  %p0 = getelementptr i64, ptr %s, i64 5
  %a0 = load i64, ptr %p0, align 8
  %p1 = getelementptr i64, ptr %s, i64 6
  %a1 = load i64, ptr %p1, align 8
  %p2 = getelementptr i64, ptr %s, i64 7
  %a2 = load i64, ptr %p2, align 8
  %p3 = getelementptr i64, ptr %s, i64 8
  %a3 = load i64, ptr %p3, align 8
  %p4 = getelementptr i64, ptr %s, i64 9
  %a4 = load i64, ptr %p4, align 8
  %p5 = getelementptr i64, ptr %s, i64 10
  %a5 = load i64, ptr %p5, align 8
  %p6 = getelementptr i64, ptr %s, i64 11
  %a6 = load i64, ptr %p6, align 8
  %p7 = getelementptr i64, ptr %s, i64 12
  %a7 = load i64, ptr %p7, align 8
  call void %f(i64 %b, i64 %e, i64 %a0, i64 %a1, i64 %a2, i64 %a3,
               i64 %a4, i64 %a5, i64 %a6, i64 %a7)
  store atomic i64 %g, ptr %pdone release, align 8
  br label %idle
out:
  ret void
}

define void @lpcc_pool_post(ptr %s, i64 %g) {
entry:
  store atomic i64 %g, ptr %s seq_cst, align 8
  %psleep = getelementptr i64, ptr %s, i64 14
  %asleep = load atomic i64, ptr %psleep seq_cst, align 8
  %must = icmp ne i64 %asleep, 0
  br i1 %must, label %wake, label %done
wake:
  %r = call i64 (i64, ...) @syscall(i64 202, ptr %s, i64 129, i64 1)
  br label %done
done:
  ret void
}


; Runs a whole program's native kernels back to back (see Pool.run_steps):
; `steps` holds n records of `width` i64: kernel address, argv address,
; number of chunks c, then c (begin, end) pairs. Chunks 1.. go to workers
; 0.. (state rows of 16 i64 from `states`), chunk 0 runs here. After each
; step the kernel's status slot argv[-1] is read: nonzero stops the run and
; returns the step's index + 1. `gencell` holds the workers' generation.
define i64 @lpcc_run_steps(ptr %steps, i64 %n, i64 %width, ptr %states, ptr %gencell) {
entry:
  br label %head
head:
  %k = phi i64 [0, %entry], [%k1, %checked]
  %more = icmp slt i64 %k, %n
  br i1 %more, label %step, label %ok
step:
  %roff = mul i64 %k, %width
  %rec = getelementptr i64, ptr %steps, i64 %roff
  %fi = load i64, ptr %rec, align 8
  %f = inttoptr i64 %fi to ptr
  %pa = getelementptr i64, ptr %rec, i64 1
  %argv = load i64, ptr %pa, align 8
  %pc = getelementptr i64, ptr %rec, i64 2
  %nc = load i64, ptr %pc, align 8
  %g0 = load i64, ptr %gencell, align 8
  %g = add i64 %g0, 1
  store i64 %g, ptr %gencell, align 8
  br label %posthead
posthead:
  %t = phi i64 [1, %step], [%t1, %post]
  %posting = icmp slt i64 %t, %nc
  br i1 %posting, label %post, label %mine
post:
  %w = sub i64 %t, 1
  %soff = mul i64 %w, 16
  %st = getelementptr i64, ptr %states, i64 %soff
  %bi = mul i64 %t, 2
  %bo = add i64 %bi, 3
  %pb = getelementptr i64, ptr %rec, i64 %bo
  %b = load i64, ptr %pb, align 8
  %pe = getelementptr i64, ptr %pb, i64 1
  %e = load i64, ptr %pe, align 8
  %s2 = getelementptr i64, ptr %st, i64 2
  store i64 %fi, ptr %s2, align 8
  %s3 = getelementptr i64, ptr %st, i64 3
  store i64 %b, ptr %s3, align 8
  %s4 = getelementptr i64, ptr %st, i64 4
  store i64 %e, ptr %s4, align 8
  %s5 = getelementptr i64, ptr %st, i64 5
  store i64 %argv, ptr %s5, align 8
  call void @lpcc_pool_post(ptr %st, i64 %g)
  %t1 = add i64 %t, 1
  br label %posthead
mine:
  %pb0 = getelementptr i64, ptr %rec, i64 3
  %b0 = load i64, ptr %pb0, align 8
  %pe0 = getelementptr i64, ptr %rec, i64 4
  %e0 = load i64, ptr %pe0, align 8
  call void %f(i64 %b0, i64 %e0, i64 %argv)
  br label %waithead
waithead:
  %u = phi i64 [1, %mine], [%u1, %waiting]
  %wmore = icmp slt i64 %u, %nc
  br i1 %wmore, label %waiting, label %status
waiting:
  %wu = sub i64 %u, 1
  %wo = mul i64 %wu, 16
  %wst = getelementptr i64, ptr %states, i64 %wo
  call void @lpcc_pool_wait(ptr %wst, i64 %g)
  %u1 = add i64 %u, 1
  br label %waithead
status:
  %ap = inttoptr i64 %argv to ptr
  %sp = getelementptr i64, ptr %ap, i64 -1
  %sv = load atomic i64, ptr %sp acquire, align 8
  %bad = icmp ne i64 %sv, 0
  %k1 = add i64 %k, 1
  br i1 %bad, label %failed, label %checked
checked:
  br label %head
failed:
  ret i64 %k1
ok:
  ret i64 0
}

define void @lpcc_pool_wait(ptr %s, i64 %g) {
entry:
  %pdone = getelementptr i64, ptr %s, i64 1
  br label %loop
loop:
  %d = load atomic i64, ptr %pdone acquire, align 8
  %ok = icmp eq i64 %d, %g
  br i1 %ok, label %out, label %again
again:
  call void @llvm.x86.sse2.pause()
  %yields = call i64 (i64, ...) @syscall(i64 24)
  br label %loop
out:
  ret void
}
"""
_SLOTS = 16  # i64 slots per native worker (see _NATIVE_IR)
_MAX_ARGS = 8  # kernel arguments after (begin, end) the native path passes
_INT_ARGTYPES = (
    ctypes.c_int64,
    ctypes.c_uint64,
    ctypes.c_int32,
    ctypes.c_uint32,
    ctypes.c_void_p,
)


class PoolError(LpccError, ValueError):
    """A pool or a run with parameters it cannot take."""


def default_num_threads() -> int:
    """The `num_threads` knob, with 0 meaning every core this process may use."""
    n = config.get("num_threads")
    return n or _usable_cores()


@functools.cache
def _usable_cores() -> int:
    """Cores this process may run on (read once: every VM call asks)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def split_rows(n_rows: int, parts: int, granule: int) -> list[tuple[int, int]]:
    """At most `parts` contiguous, non-empty ranges covering [0, n_rows).

    Every boundary but the end is a multiple of `granule`; the ranges differ
    by at most one granule in length.
    """
    if n_rows <= 0:
        return []
    units = -(-n_rows // granule)
    parts = max(1, min(parts, units))
    base, extra = divmod(units, parts)
    ranges, start = [], 0
    for p in range(parts):
        stop = min(n_rows, start + (base + (p < extra)) * granule)
        ranges.append((start, stop))
        start = stop
    return ranges


class _Worker:
    __slots__ = ("done", "error", "go", "job", "thread")

    def __init__(self, pool_name: str, index: int) -> None:
        self.go = threading.Lock()
        self.done = threading.Lock()
        self.go.acquire()
        self.done.acquire()
        self.job: tuple[Kernel, int, int, tuple[Any, ...]] | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(
            target=self._loop, name=f"{pool_name}-{index}", daemon=True
        )
        self.thread.start()

    def _loop(self) -> None:
        while True:
            self.go.acquire()
            job = self.job
            if job is None:
                self.done.release()
                return
            fn, begin, end, args = job
            try:
                fn(begin, end, *args)
            except BaseException as err:  # handed to the caller of run()
                self.error = err
            self.job = None
            self.done.release()


_native_lib: Any = None
_native_lock = threading.Lock()


@functools.cache
def native_available() -> bool:
    """Whether this host can run the native workers (x86-64 Linux)."""
    from lpcc.codegen.llvm.loader import host_arch

    return sys.platform.startswith("linux") and host_arch() in ("x86_64", "amd64")


def _native() -> Any:
    """The compiled native worker loop (compiled once per process, ~20 ms)."""
    global _native_lib
    with _native_lock:
        if _native_lib is None:
            from lpcc.codegen.llvm import jit

            _native_lib = jit.load_object(jit.compile_ir(_NATIVE_IR, "generic"))
        return _native_lib


def _native_address(fn: Kernel) -> int:
    """`fn`'s code address if it is loaded code callable natively, else 0."""
    if getattr(fn, "_lpcc_library", None) is None:
        return 0
    argtypes = getattr(fn, "argtypes", None)
    if argtypes is None or not 2 <= len(argtypes) <= 2 + _MAX_ARGS:
        return 0
    if not all(t in _INT_ARGTYPES for t in argtypes):
        return 0
    return ctypes.cast(fn, ctypes.c_void_p).value or 0


class _NativeWorkers:
    """Threads parked in the native worker loop, one state row each."""

    def __init__(self, count: int, spin_ticks: int) -> None:
        lib = _native()
        p, i64 = ctypes.c_void_p, ctypes.c_int64
        self.post = lib.function("lpcc_pool_post", None, p, i64)
        self.wait = lib.function("lpcc_pool_wait", None, p, i64)
        loop = lib.function("lpcc_pool_worker", None, p)
        # One 128-byte row per worker: no two workers share a cache line pair.
        self.state = np.zeros((count, _SLOTS), np.int64)
        self.state[:, 15] = spin_ticks
        self.slots = memoryview(self.state).cast("B").cast("q")  # fast stores
        self.ptrs = [self.state.ctypes.data + 8 * _SLOTS * i for i in range(count)]
        self.gen = np.zeros(1, np.int64)  # the generation (native code bumps it)
        self.gen_ptr = self.gen.ctypes.data
        self.threads = [
            threading.Thread(
                target=loop, args=(ptr,), name=f"lpcc-pool-native-{i}", daemon=True
            )
            for i, ptr in enumerate(self.ptrs)
        ]
        for thread in self.threads:
            thread.start()
        # Stop the threads before the code they run is freed (at exit or GC).
        self._finalizer = weakref.finalize(
            self, _stop_native, self.state, self.ptrs, self.threads, self.post
        )

    def close(self) -> None:
        self._finalizer()


def _stop_native(
    state: np.ndarray, ptrs: list[int], threads: list[threading.Thread], post: Any
) -> None:
    state[:, 13] = 1
    for ptr in ptrs:
        post(ptr, -1)  # generations are positive: -1 always wakes
    for thread in threads:
        thread.join()


class Pool:
    """`num_threads` threads (the caller and num_threads - 1 workers).

    `num_threads=None` reads the `num_threads` knob. `native=None` uses the
    native workers where the host has them (`native_available()`); False
    forces the Python workers. One `run` at a time: a `run` issued while
    another is in progress (another thread, or a kernel calling back into
    the pool) runs on its caller's thread alone. `spin_ticks`: how long an
    idle native worker spins (cycle-counter ticks, ~1 ms by default) before
    it sleeps on a futex; spinning makes back-to-back kernels cheap to hand
    out (on an idle machine a ~1 ms spin saved a futex wake-up per cold
    4096x4096 GEMV, 340 -> 230 us at int2, 2 threads, where a 30 us spin
    did not). Every spin step (and the caller's wait for the workers) also
    calls `sched_yield`: with the cores busy, a pure `pause` spin held a core
    that the other half of the kernel needed and made 2-thread calls 20x
    slower (6.5 ms vs 0.3 ms); yielding hands the core over instead.
    """

    def __init__(
        self,
        num_threads: int | None = None,
        granule: int = 8,
        *,
        native: bool | None = None,
        spin_ticks: int = 3_000_000,
    ) -> None:
        n = default_num_threads() if num_threads is None else num_threads
        if not isinstance(n, int) or n < 1:
            raise PoolError(f"Pool: num_threads must be an integer >= 1, got {n!r}")
        _check_granule(granule)
        if native and not native_available():
            raise PoolError(
                "Pool: native workers need x86-64 Linux; pass native=None or False"
            )
        self.num_threads = n
        self.granule = granule
        self.native = native_available() if native is None else native
        self._spin_ticks = spin_ticks
        self._busy = threading.Lock()
        self._workers: list[_Worker] | None = None  # created on first use
        self._native_workers: _NativeWorkers | None = None
        self._closed = False
        self._splits: dict[tuple[int, int], list[tuple[int, int]]] = {}
        self._driver: Any = None  # lpcc_run_steps, compiled on first use
        self._solo_gen = np.zeros(1, np.int64)  # run_steps' generation, 1 thread
        self._solo_gen_ptr = self._solo_gen.ctypes.data

    def run(
        self, fn: Kernel, n_rows: int, *args: Any, granule: int | None = None
    ) -> None:
        """Call `fn(begin, end, *args)` over chunks covering [0, n_rows).

        Returns when every chunk is done; an exception raised by any chunk
        is raised here (the first one, by chunk order) after all finished.
        """
        g = self.granule if granule is None else granule
        _check_granule(g)
        if self._closed:
            raise PoolError("Pool.run: the pool is closed; create a new Pool")
        key = (n_rows, g)
        chunks = self._splits.get(key)
        if chunks is None:
            chunks = split_rows(n_rows, self.num_threads, g)
            if len(self._splits) < 1024:
                self._splits[key] = chunks
        if len(chunks) <= 1 or not self._busy.acquire(blocking=False):
            if n_rows > 0:
                fn(0, n_rows, *args)
            return
        try:
            int_args = self._native_args(fn, args)
            if int_args is not None:
                self._run_native(fn, chunks, args, int_args)
            else:
                self._run_python(fn, chunks, args)
        finally:
            self._busy.release()

    def run_steps(self, steps: int, n: int, width: int) -> int | None:
        """Run a program's native kernels back to back without Python between.

        `steps` is the address of an int64 array [n, width] (C order), one
        row per kernel call:
        kernel address, argv address, chunk count c <= num_threads, then c
        (begin, end) row ranges (`split_rows`; width 3 + 2 num_threads).
        Returns 0, or i + 1 when kernel i set its status slot (argv[-1]);
        the run stops there. None when this pool cannot (no native workers
        on this host, or busy with another run): call the kernels one by one.
        """
        if self._closed:
            raise PoolError("Pool.run_steps: the pool is closed; create a new Pool")
        if not native_available() or (self.num_threads > 1 and not self.native):
            return None
        if not self._busy.acquire(blocking=False):
            return None
        try:
            if self._driver is None:
                p, i64 = ctypes.c_void_p, ctypes.c_int64
                self._driver = _native().function(
                    "lpcc_run_steps", i64, p, i64, i64, p, p
                )
            if self.num_threads > 1:
                workers = self._native_workers
                if workers is None:
                    workers = _NativeWorkers(self.num_threads - 1, self._spin_ticks)
                    self._native_workers = workers
                states, gen = workers.state.ctypes.data, workers.gen_ptr
            else:
                states, gen = 0, self._solo_gen_ptr
            return int(self._driver(steps, n, width, states, gen))
        finally:
            self._busy.release()

    def _native_args(self, fn: Kernel, args: tuple[Any, ...]) -> list[int] | None:
        """`args` as integers if the native workers can call `fn` with them."""
        if not self.native:
            return None
        address = getattr(fn, "_lpcc_native_address", None)
        if address is None:
            address = _native_address(fn)
            if getattr(fn, "_lpcc_library", None) is not None:
                fn._lpcc_native_address = address  # checked once per function
        if not address or len(fn.argtypes) != 2 + len(args):
            return None
        try:
            return [address, *map(operator.index, args)]
        except TypeError:
            return None

    def _run_native(
        self,
        fn: Kernel,
        chunks: list[tuple[int, int]],
        args: tuple[Any, ...],
        int_args: list[int],
    ) -> None:
        workers = self._native_workers
        if workers is None:
            workers = _NativeWorkers(self.num_threads - 1, self._spin_ticks)
            self._native_workers = workers
        address, *values = int_args
        gen = int(workers.gen[0]) + 1
        workers.gen[0] = gen
        slots, ptrs = workers.slots, workers.ptrs
        for i, (begin, stop) in enumerate(chunks[1:]):
            row = _SLOTS * i
            slots[row + 2] = address
            slots[row + 3] = begin
            slots[row + 4] = stop
            for k, value in enumerate(values):
                slots[row + 5 + k] = value
            workers.post(ptrs[i], gen)
        try:
            fn(chunks[0][0], chunks[0][1], *args)
        finally:
            for i in range(len(chunks) - 1):
                workers.wait(ptrs[i], gen)

    def _run_python(
        self, fn: Kernel, chunks: list[tuple[int, int]], args: tuple[Any, ...]
    ) -> None:
        if self._workers is None:
            self._workers = [
                _Worker("lpcc-pool", i) for i in range(1, self.num_threads)
            ]
        used = self._workers[: len(chunks) - 1]
        for worker, (begin, end) in zip(used, chunks[1:], strict=True):
            worker.job = (fn, begin, end, args)
            worker.go.release()
        error: BaseException | None = None
        try:
            fn(chunks[0][0], chunks[0][1], *args)
        except BaseException as err:
            error = err
        for worker in used:
            worker.done.acquire()
            if worker.error is not None:
                error = error or worker.error
                worker.error = None
        if error is not None:
            raise error

    def close(self) -> None:
        """Stop the worker threads (idempotent)."""
        if self._closed:
            return
        with self._busy:
            self._closed = True
            if self._native_workers is not None:
                self._native_workers.close()
            for worker in self._workers or ():
                worker.job = None
                worker.go.release()
            for worker in self._workers or ():
                worker.done.acquire()
                worker.thread.join()

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_granule(granule: int) -> None:
    if not isinstance(granule, int) or granule < 1:
        raise PoolError(f"Pool: granule must be an integer >= 1, got {granule!r}")


_default: Pool | None = None
_default_lock = threading.Lock()


def default_pool() -> Pool:
    """The process-wide pool, sized by the `num_threads` knob when first used.

    It is rebuilt when the knob's value has changed since.
    """
    global _default
    n = default_num_threads()
    with _default_lock:
        if _default is None or _default.num_threads != n:
            if _default is not None:
                _default.close()
            _default = Pool(n)
        return _default
