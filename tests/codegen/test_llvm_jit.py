"""The CPU backend's infrastructure: ISA levels, compiling, loading, the pool.

Hand-written LLVM IR kernels run through compile -> object code -> load and
are compared with NumPy, for every ISA level this machine can run; the other
levels are still compiled to object code (LLVM targets AVX-512 from any x86
host), and loading them where the features are missing is a clear error.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from lpcc import config
from lpcc.codegen.llvm import isa, jit, loader
from lpcc.codegen.llvm.pool import (
    Pool,
    PoolError,
    default_pool,
    native_available,
    split_rows,
)

pytestmark = pytest.mark.skipif(
    loader.host_arch() not in ("x86_64", "amd64"), reason="x86-64 host only"
)

P, I64 = ctypes.c_void_p, ctypes.c_int64

SAXPY = r"""
define void @saxpy(i64 %n, float %a, ptr noalias %x, ptr noalias %y) {
entry:
  %c = icmp sgt i64 %n, 0
  br i1 %c, label %loop, label %done
loop:
  %i = phi i64 [0, %entry], [%i1, %loop]
  %px = getelementptr inbounds float, ptr %x, i64 %i
  %py = getelementptr inbounds float, ptr %y, i64 %i
  %vx = load float, ptr %px
  %vy = load float, ptr %py
  %m = fmul float %a, %vx
  %s = fadd float %m, %vy
  store float %s, ptr %py
  %i1 = add i64 %i, 1
  %e = icmp slt i64 %i1, %n
  br i1 %e, label %loop, label %done
done:
  ret void
}
"""

# out[k] = table[idx[k] & 15] for 32 bytes: vpshufb on ymm (AVX2).
PSHUFB = r"""
declare <32 x i8> @llvm.x86.avx2.pshuf.b(<32 x i8>, <32 x i8>)

define void @lut16(ptr %table, ptr %idx, ptr %out) {
  %t16 = load <16 x i8>, ptr %table, align 1
  %t = shufflevector <16 x i8> %t16, <16 x i8> %t16, <32 x i32> <i32 0, i32 1,
    i32 2, i32 3, i32 4, i32 5, i32 6, i32 7, i32 8, i32 9, i32 10, i32 11,
    i32 12, i32 13, i32 14, i32 15, i32 0, i32 1, i32 2, i32 3, i32 4, i32 5,
    i32 6, i32 7, i32 8, i32 9, i32 10, i32 11, i32 12, i32 13, i32 14, i32 15>
  %i = load <32 x i8>, ptr %idx, align 1
  %m = and <32 x i8> %i, splat (i8 15)
  %r = call <32 x i8> @llvm.x86.avx2.pshuf.b(<32 x i8> %t, <32 x i8> %m)
  store <32 x i8> %r, ptr %out, align 1
  ret void
}
"""

# y[i] = 3 i^2 + 1 for rows [begin, end): a kernel in the pool's convention.
FILL = r"""
define void @fill(i64 %b, i64 %e, ptr noalias %y) {
entry:
  %c = icmp slt i64 %b, %e
  br i1 %c, label %loop, label %done
loop:
  %i = phi i64 [%b, %entry], [%i1, %loop]
  %sq = mul i64 %i, %i
  %t = mul i64 %sq, 3
  %v = add i64 %t, 1
  %p = getelementptr inbounds i64, ptr %y, i64 %i
  store i64 %v, ptr %p
  %i1 = add i64 %i, 1
  %d = icmp slt i64 %i1, %e
  br i1 %d, label %loop, label %done
done:
  ret void
}
"""

ZEN5 = isa.isa_features("avx512") | {"avx512bf16", "sha", "vaes"}
ZEN3 = isa.isa_features("avx2") | {"sha", "vaes", "adx"}
RUNNABLE = [level for level in isa.LEVELS if isa.host_has(level)]


def _saxpy(lib: loader.Library) -> ctypes._CFuncPtr:
    return lib.function("saxpy", None, I64, ctypes.c_float, P, P)


# --- ISA levels ---------------------------------------------------------------


def test_host_isa_is_the_best_level_the_features_cover() -> None:
    best = isa.host_isa()
    assert isa.isa_features(best) <= isa.host_features()
    higher = isa.LEVELS[: isa.LEVELS.index(best)]
    assert all(not isa.isa_features(h) <= isa.host_features() for h in higher)
    assert "generic" in RUNNABLE


def test_levels_nest_and_name_their_extensions() -> None:
    assert isa.isa_features("generic") < isa.isa_features("avx2")
    assert isa.isa_features("avx2") < isa.isa_features("avx512")
    assert {"avx2", "fma"} <= isa.isa_features("avx2")
    assert not any(f.startswith("avx512") for f in isa.isa_features("avx2"))
    need = {"avx512f", "avx512bw", "avx512vl", "avx512vbmi", "avx512vnni"}
    assert need <= isa.isa_features("avx512")


def test_host_isa_follows_the_features(monkeypatch: pytest.MonkeyPatch) -> None:
    for features, expected in ((ZEN5, "avx512"), (ZEN3, "avx2"), (set(), "generic")):
        monkeypatch.setattr(loader, "host_features", lambda f=features: frozenset(f))
        assert isa.host_isa() == expected
    # AVX-512 without VBMI (Skylake-X) is not the avx512 level.
    monkeypatch.setattr(loader, "host_features", lambda: ZEN5 - {"avx512vbmi"})
    assert isa.host_isa() == "avx2"


def test_cpu_isa_knob(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "host_features", lambda: frozenset(ZEN3))
    monkeypatch.delenv("LPCC_CPU_ISA", raising=False)
    assert isa.selected_isa() == "avx2"
    monkeypatch.setenv("LPCC_CPU_ISA", "generic")
    assert isa.selected_isa() == "generic"
    with config.override(cpu_isa="avx512"):
        assert isa.selected_isa(to_run=False) == "avx512"
        with pytest.raises(loader.CpuFeatureError, match=r"ISA=avx512.*avx512"):
            isa.selected_isa()
    monkeypatch.setenv("LPCC_CPU_ISA", "sse")
    with pytest.raises(config.ConfigError, match="LPCC_CPU_ISA"):
        isa.selected_isa()
    with pytest.raises(loader.CpuFeatureError, match="does not exist"):
        isa.isa_features("avx10")


def test_num_threads_knob(monkeypatch: pytest.MonkeyPatch) -> None:
    from lpcc.codegen.llvm.pool import default_num_threads

    monkeypatch.setenv("LPCC_NUM_THREADS", "0")
    assert default_num_threads() >= 1
    monkeypatch.setenv("LPCC_NUM_THREADS", "3")
    assert default_num_threads() == 3
    monkeypatch.setenv("LPCC_NUM_THREADS", "-1")
    with pytest.raises(config.ConfigError, match="LPCC_NUM_THREADS"):
        default_num_threads()


# --- compiling and loading ----------------------------------------------------


@pytest.mark.parametrize("level", isa.LEVELS)
def test_every_level_compiles_to_object_code(level: str) -> None:
    obj = jit.compile_ir(SAXPY, level)
    assert obj.object_code[:4] == b"\x7fELF"
    assert obj.isa == level and obj.symbols == ("saxpy",)
    assert obj.features == isa.isa_features(level)
    text = jit.asm(SAXPY, level)
    # The level decides the vector registers: zmm only for avx512, ymm from avx2.
    assert ("zmm" in text) == (level == "avx512")
    assert ("ymm" in text) == (level != "generic")


@pytest.mark.parametrize("level", RUNNABLE)
def test_saxpy_matches_numpy(level: str) -> None:
    fn = _saxpy(jit.load_object(jit.compile_ir(SAXPY, level)))
    rng = np.random.default_rng(0)
    for n in (0, 1, 7, 33, 1001):
        x = rng.standard_normal(n).astype(np.float32)
        y = rng.standard_normal(n).astype(np.float32)
        expected = np.float32(1.5) * x + y  # no contraction: fmul, fadd as numpy
        fn(n, 1.5, x.ctypes.data, y.ctypes.data)
        np.testing.assert_array_equal(y, expected)


@pytest.mark.skipif(not isa.host_has("avx2"), reason="needs AVX2 to run")
@pytest.mark.parametrize("level", [lv for lv in RUNNABLE if lv != "generic"])
def test_pshufb_lookup_matches_numpy(level: str) -> None:
    assert "vpshufb" in jit.asm(PSHUFB, level)
    lib = jit.load_object(jit.compile_ir(PSHUFB, level))
    fn = lib.function("lut16", None, P, P, P)
    rng = np.random.default_rng(1)
    table = rng.integers(-128, 128, 16, dtype=np.int8)
    idx = rng.integers(0, 256, 32, dtype=np.uint8)  # high bits masked by the kernel
    out = np.zeros(32, np.int8)
    fn(table.ctypes.data, idx.ctypes.data, out.ctypes.data)
    np.testing.assert_array_equal(out, table[idx & 15])


def test_avx512_object_compiles_anywhere_and_refuses_to_load_without_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    obj = jit.compile_ir(PSHUFB, "avx512")
    assert obj.object_code[:4] == b"\x7fELF" and len(obj.object_code) > 64
    monkeypatch.setattr(loader, "host_features", lambda: frozenset(ZEN3))
    with pytest.raises(loader.CpuFeatureError) as info:
        jit.load_object(obj)
    message = str(info.value)
    for word in ("avx512", "avx512vbmi", "avx512vnni", "recompile", "LPCC_CPU_ISA"):
        assert word in message
    assert "avx2," not in message  # only what is missing is named


def test_object_for_another_architecture_is_refused() -> None:
    obj = jit.compile_ir(SAXPY, "generic")
    alien = loader.CompiledObject.from_metadata(
        obj.object_code, {**obj.metadata(), "triple": "aarch64-unknown-linux-gnu"}
    )
    with pytest.raises(loader.CpuFeatureError, match=r"aarch64.*x86_64"):
        loader.load_object(alien)


def test_bad_ir_and_missing_symbol_are_clear_errors() -> None:
    from lpcc.errors import IRError, LpccError

    with pytest.raises(IRError, match="does not parse"):
        jit.compile_ir("define void @f( {", "generic")
    bad = "define i32 @f() {\n  ret i64 0\n}\n"
    with pytest.raises(IRError, match="LLVM IR"):
        jit.compile_ir(bad, "generic")
    lib = jit.load_object(jit.compile_ir(SAXPY, "generic"))
    with pytest.raises(LpccError, match=r"no function 'nope'.*saxpy"):
        lib.function("nope", None)


def test_function_keeps_its_code_alive() -> None:
    fn = _saxpy(jit.load_object(jit.compile_ir(SAXPY, "generic")))
    import gc

    gc.collect()  # the Library is referenced only by the function now
    x, y = np.ones(4, np.float32), np.ones(4, np.float32)
    fn(4, 2.0, x.ctypes.data, y.ctypes.data)
    np.testing.assert_array_equal(y, 3.0)


LOAD_IN_FRESH_PROCESS = """
import ctypes, json, sys
import numpy as np
from lpcc.codegen.llvm.loader import CompiledObject, load_object
code = open(sys.argv[1], "rb").read()
meta = json.load(open(sys.argv[2]))
fn = load_object(CompiledObject.from_metadata(code, meta)).function(
    "saxpy", None, ctypes.c_int64, ctypes.c_float, ctypes.c_void_p, ctypes.c_void_p)
x = np.arange(10, dtype=np.float32)
y = np.full(10, 0.5, np.float32)
fn(10, 2.0, x.ctypes.data, y.ctypes.data)
heavy = [m for m in ("torch", "xdsl", "lpcc.codegen.llvm.jit") if m in sys.modules]
print(json.dumps({"y": y.tolist(), "heavy": heavy}))
"""


def test_object_code_loads_in_a_fresh_process_without_the_compiler(tmp_path) -> None:
    obj = jit.compile_ir(SAXPY, isa.host_isa())
    (tmp_path / "k.o").write_bytes(obj.object_code)
    (tmp_path / "k.json").write_text(json.dumps(obj.metadata()))
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            LOAD_IN_FRESH_PROCESS,
            tmp_path / "k.o",
            tmp_path / "k.json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["heavy"] == []
    assert result["y"] == (2.0 * np.arange(10, dtype=np.float32) + 0.5).tolist()


# --- the pool -----------------------------------------------------------------


def test_split_rows_is_aligned_contiguous_and_balanced() -> None:
    for n_rows in (0, 1, 7, 8, 9, 100, 1001):
        for parts in (1, 2, 3, 5):
            for granule in (1, 8, 32):
                ranges = split_rows(n_rows, parts, granule)
                assert len(ranges) <= parts
                covered = [i for b, e in ranges for i in range(b, e)]
                assert covered == list(range(n_rows))
                assert all(b < e for b, e in ranges)
                assert all(b % granule == 0 for b, _ in ranges)
                sizes = [e - b for b, e in ranges[:-1]]
                assert not sizes or max(sizes) - min(sizes) <= granule


NATIVE = [False, True] if native_available() else [False]

# y[i] = the pthread id of the thread computing row i.
WHO = r"""
declare i64 @pthread_self()

define void @who(i64 %b, i64 %e, ptr noalias %y) {
entry:
  %me = call i64 @pthread_self()
  %c = icmp slt i64 %b, %e
  br i1 %c, label %loop, label %done
loop:
  %i = phi i64 [%b, %entry], [%i1, %loop]
  %p = getelementptr inbounds i64, ptr %y, i64 %i
  store i64 %me, ptr %p
  %i1 = add i64 %i, 1
  %d = icmp slt i64 %i1, %e
  br i1 %d, label %loop, label %done
done:
  ret void
}
"""


@pytest.mark.parametrize("native", NATIVE)
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_pool_runs_a_kernel_over_all_rows(threads: int, native: bool) -> None:
    fill = jit.load_object(jit.compile_ir(FILL, "generic")).function(
        "fill", None, I64, I64, P
    )
    with Pool(threads, granule=32, native=native) as pool:
        for n_rows in (0, 5, 32, 1001):  # 1001 is no multiple of the granule
            y = np.full(n_rows, -1, np.int64)
            pool.run(fill, n_rows, y.ctypes.data)
            i = np.arange(n_rows, dtype=np.int64)
            np.testing.assert_array_equal(y, 3 * i * i + 1)
            pool.run(fill, n_rows, y.ctypes.data, granule=8)
            np.testing.assert_array_equal(y, 3 * i * i + 1)


@pytest.mark.parametrize("native", NATIVE)
def test_native_kernels_run_on_the_workers_and_the_caller(native: bool) -> None:
    who = jit.load_object(jit.compile_ir(WHO, "generic")).function(
        "who", None, I64, I64, P
    )
    y = np.zeros(100, np.uint64)
    before = set(threading.enumerate())  # e.g. the default pool's workers
    with Pool(3, granule=8, native=native) as pool:
        for _ in range(3):  # the same workers serve every call
            pool.run(who, 100, y.ctypes.data)
            assert len(set(y[:40])) == len(set(y[40:72])) == len(set(y[72:])) == 1
            assert len({y[0], y[40], y[72]}) == 3
            assert int(y[0]) == threading.get_ident()  # pthread_self on Linux
        threads = [
            t
            for t in set(threading.enumerate()) - before
            if t.name.startswith("lpcc-pool")
        ]
        assert len(threads) >= 2
    assert not any(t.is_alive() for t in threads)  # close() stopped them


def test_pool_uses_its_threads_and_the_caller() -> None:
    seen: list[tuple[int, int, int]] = []
    lock = threading.Lock()

    def record(begin: int, end: int, tag: str) -> None:
        assert tag == "x"
        with lock:
            seen.append((begin, end, threading.get_ident()))

    with Pool(3, granule=8) as pool:
        pool.run(record, 100, "x")
    assert sorted((b, e) for b, e, _ in seen) == [(0, 40), (40, 72), (72, 100)]
    assert len({t for *_, t in seen}) == 3
    assert (0, 40, threading.get_ident()) in seen  # the caller takes the first


def test_pool_propagates_worker_exceptions_and_stays_usable() -> None:
    def boom(begin: int, end: int) -> None:
        if begin > 0:
            raise ZeroDivisionError(f"chunk {begin}")

    with Pool(2, granule=8) as pool:
        with pytest.raises(ZeroDivisionError, match="chunk 16"):
            pool.run(boom, 32)
        out = np.zeros(32, np.int64)

        def ok(begin: int, end: int) -> None:
            out[begin:end] = 1

        pool.run(ok, 32)
        assert out.sum() == 32


def test_pool_rejects_bad_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(PoolError, match="num_threads"):
        Pool(0)
    with pytest.raises(PoolError, match="granule"):
        Pool(1, granule=0)
    pool = Pool(2)
    pool.close()
    with pytest.raises(PoolError, match="closed"):
        pool.run(lambda b, e: None, 10)
    monkeypatch.setenv("LPCC_NUM_THREADS", "2")
    assert default_pool().num_threads == 2
    monkeypatch.setenv("LPCC_NUM_THREADS", "1")
    assert default_pool().num_threads == 1


@pytest.mark.skipif(not native_available(), reason="native workers: x86-64 Linux")
def test_native_workers_that_sleep_at_once_still_wake_for_every_call() -> None:
    fill = jit.load_object(jit.compile_ir(FILL, "generic")).function(
        "fill", None, I64, I64, P
    )
    i = np.arange(64, dtype=np.int64)
    with Pool(2, granule=8, native=True, spin_ticks=0) as pool:  # futex every time
        for _ in range(200):
            y = np.zeros(64, np.int64)
            pool.run(fill, 64, y.ctypes.data)
            np.testing.assert_array_equal(y, 3 * i * i + 1)


def test_a_process_with_live_native_workers_exits_cleanly() -> None:
    code = (
        "import numpy as np\n"
        "from lpcc.codegen.llvm.pool import default_pool\n"
        "from tests.codegen.test_llvm_jit import FILL, I64, P\n"
        "from lpcc.codegen.llvm import jit\n"
        "f = jit.jit(FILL).function('fill', None, I64, I64, P)\n"
        "y = np.zeros(64, np.int64)\n"
        "default_pool().run(f, 64, y.ctypes.data)\n"
        "print(int(y[63]))\n"
    )
    env = {**os.environ, "LPCC_NUM_THREADS": "2"}
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(3 * 63 * 63 + 1)


# argv = [status, y, digit, fail_row]: y[i] = 10 y[i] + digit for rows [b, e);
# a row equal to fail_row sets the status slot (argv[-1] from the kernel's side).
STEP = r"""
define void @step(i64 %b, i64 %e, ptr noalias %argv) {
entry:
  %yi = load i64, ptr %argv
  %y = inttoptr i64 %yi to ptr
  %pd = getelementptr i64, ptr %argv, i64 1
  %d = load i64, ptr %pd
  %pf = getelementptr i64, ptr %argv, i64 2
  %f = load i64, ptr %pf
  %c = icmp slt i64 %b, %e
  br i1 %c, label %loop, label %done
loop:
  %i = phi i64 [%b, %entry], [%i1, %next]
  %p = getelementptr inbounds i64, ptr %y, i64 %i
  %v = load i64, ptr %p
  %v10 = mul i64 %v, 10
  %w = add i64 %v10, %d
  store i64 %w, ptr %p
  %bad = icmp eq i64 %i, %f
  br i1 %bad, label %fail, label %next
fail:
  %ps = getelementptr i64, ptr %argv, i64 -1
  store atomic i64 7, ptr %ps monotonic, align 8
  br label %next
next:
  %i1 = add i64 %i, 1
  %more = icmp slt i64 %i1, %e
  br i1 %more, label %loop, label %done
done:
  ret void
}
"""


@pytest.mark.skipif(not native_available(), reason="native workers: x86-64 Linux")
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_run_steps_runs_kernels_in_order_and_stops_at_a_status(threads: int) -> None:
    """Pool.run_steps: every row of every step, steps in order (each digit
    lands after the previous one), and a nonzero status stops the run."""
    lib = jit.load_object(jit.compile_ir(STEP, "generic"))
    step = lib.function("step", None, I64, I64, P)
    address = ctypes.cast(step, ctypes.c_void_p).value
    n_rows = 1001
    y = np.zeros(n_rows, np.int64)

    def plan(fail_rows: list[int]) -> tuple[np.ndarray, list[np.ndarray]]:
        argvs = [
            np.array([0, y.ctypes.data, digit, fail], np.int64)
            for digit, fail in zip((1, 2, 3), fail_rows, strict=True)
        ]
        table = np.zeros((3, 3 + 2 * threads), np.int64)
        for r, argv in enumerate(argvs):
            chunks = split_rows(n_rows, threads, 8)
            table[r, :3] = (address, argv.ctypes.data + 8, len(chunks))
            table[r, 3 : 3 + 2 * len(chunks)] = np.ravel(chunks)
        return table, argvs

    with Pool(threads, native=True if threads > 1 else None) as pool:
        table, argvs = plan([-1, -1, -1])
        assert pool.run_steps(table.ctypes.data, *table.shape) == 0
        assert (y == 123).all()
        y[:] = 0
        table, argvs = plan([-1, 990, -1])  # step 2 fails on the last chunk
        assert pool.run_steps(table.ctypes.data, *table.shape) == 2
        assert (y == 12).all()  # step 2 finished every row, step 3 never ran
        assert argvs[1][0] == 7 and argvs[0][0] == argvs[2][0] == 0
