"""Run CUDA C kernels on the host: g++ plus `emu/lpcc_cuda_emu.h`.

CI has no GPU, so the logic of lpcc's CUDA kernels is checked by compiling the
same CUDA C source as C++ (`g++ -include lpcc_cuda_emu.h`) and running it on
the CPU: blocks one after another, a block's threads as fibers on one OS
thread, barriers for `__syncthreads`, slot arrays for the warp primitives. A
source that names no barrier or warp primitive runs in serial mode (threads
one after another; blocks on `PARALLEL_BLOCKS` OS threads when it has no
shared memory). The header's opening comment describes the model and its
limits (no PTX inline assembly: kernels give a C fallback under
`#ifdef LPCC_EMU`). g++ reads the header precompiled (`.gch` built once in
the cache directory).

`emulate(source, kernel, grid, block, args)` compiles `source` once (a shared
library cached by content hash under `<tmp>/lpcc-cuda-emu`) with one generated
`extern "C"` launcher per `__global__` function, and launches `kernel`:
NumPy arrays are passed as device pointers (the host memory itself, outputs
are written in place), Python numbers as scalars. The kernel's parameter types
come from the compiler (the launcher reports them), so a mismatch is caught
before the kernel runs.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lpcc.errors import LpccError

__all__ = [
    "HEADER",
    "PARALLEL_BLOCKS",
    "EmulationError",
    "available",
    "emulate",
    "kernels",
    "launch_plan",
]

HEADER = Path(__file__).with_name("emu") / "lpcc_cuda_emu.h"
# -fno-weak: `__shared__` statics of inline functions would otherwise live in
# COMDAT groups, which conflict with the `lpcc_shared` section of the others.
# -fvisibility=hidden: nothing but the launchers leaves the library.
FLAGS = (
    "-O1",
    "-std=c++17",
    "-shared",
    "-fPIC",
    "-pthread",
    "-fno-weak",
    "-fvisibility=hidden",
)
MAX_THREADS = 1024
MAX_SHARED_BYTES = 227 * 1024  # the per-block opt-in limit of sm_90
_ERR_CAP = 4096


class EmulationError(LpccError, RuntimeError):
    """A CUDA kernel that the host emulator cannot compile, launch or finish."""


def available() -> bool:
    """Whether g++ is on PATH (the emulator's only tool)."""
    return shutil.which("g++") is not None


@dataclass(frozen=True)
class _Kernel:
    name: str
    params: tuple[str, ...]  # parameter declarations as written (for messages)
    body: str  # the function body's text
    template: bool


def _strip_comments(src: str) -> str:
    """`src` with comments blanked (same length and line breaks)."""

    def blank(m: re.Match[str]) -> str:
        return re.sub(r"[^\n]", " ", m.group(0))

    return re.sub(r"//[^\n]*|/\*.*?\*/", blank, src, flags=re.S)


def _balanced(text: str, start: int, open_: str, close: str) -> int:
    """Index just past the bracket matching the one at `start` (-1 if none)."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == open_:
            depth += 1
        elif text[i] == close:
            depth -= 1
            if depth == 0:
                return i + 1
    return -1


_GLOBAL_RE = re.compile(
    r"\b__global__\b[^;{}()]*?\bvoid\s+"
    r"(?:__launch_bounds__\s*\([^)]*\)\s*)?(?P<name>[A-Za-z_]\w*)\s*\("
)


def kernels(source: str) -> dict[str, _Kernel]:
    """The `__global__` functions defined in `source`, by name."""
    text = _strip_comments(source)
    found: dict[str, _Kernel] = {}
    for m in _GLOBAL_RE.finditer(text):
        lp = m.end() - 1
        rp = _balanced(text, lp, "(", ")")
        if rp < 0:
            continue
        rest = text[rp:].lstrip()
        if not rest.startswith("{"):
            continue  # a declaration; the definition comes later
        bstart = rp + (len(text) - rp - len(rest))
        bend = _balanced(text, bstart, "{", "}")
        before = text[: m.start()]
        cut = max(before.rfind(";"), before.rfind("}"), before.rfind("{"))
        params, depth, cur = [], 0, ""
        for ch in text[lp + 1 : rp - 1]:
            depth += (ch in "(<[" and 1) or 0
            depth -= (ch in ")>]" and 1) or 0
            if ch == "," and depth == 0:
                params.append(cur.strip())
                cur = ""
            else:
                cur += ch
        if cur.strip() and cur.strip() != "void":
            params.append(cur.strip())
        found[m["name"]] = _Kernel(
            name=m["name"],
            params=tuple(" ".join(p.split()) for p in params),
            body=text[bstart:bend],
            template="template" in before[cut + 1 :],
        )
    return found


_EXTERN_SHARED_RE = re.compile(
    r"\bextern\s+__shared__\s+(?P<type>[^;\[\]]*?)\s*\b(?P<name>[A-Za-z_]\w*)"
    r"\s*\[\s*\]\s*;"
)


def _rewrite_extern_shared(source: str) -> str:
    """`extern __shared__ T name[];` -> a pointer to the launch's buffer.

    `__shared__` is `static` in the header, and `extern static` is not C++, so
    this one construct is rewritten (on the same lines, so g++'s line numbers
    still match the source).
    """

    def sub(m: re.Match[str]) -> str:
        ty = re.sub(r"__align__\s*\(\s*\d+\s*\)", "", m["type"]).strip()
        newlines = "\n" * m.group(0).count("\n")
        return f"LPCC_EMU_EXTERN_SHARED({ty}, {m['name']});{newlines}"

    return _EXTERN_SHARED_RE.sub(sub, source)


def _launchers(names: Sequence[str]) -> str:
    out = ["", "// ---- lpcc host-emulation launchers ----"]
    vis = 'extern "C" __attribute__((visibility("default")))'
    for n in names:
        out.append(
            f"{vis} int lpcc_emu_launch__{n}(const unsigned* dims, void** args, "
            "unsigned long long shared_bytes, double timeout_s, int mode, "
            "int workers, char* err, int errcap) {\n"
            "  return lpcc_emu::launch(dims, shared_bytes, timeout_s, mode, workers, "
            f"err, errcap, [args] {{ lpcc_emu::invoke(&{n}, args); }});\n}}"
        )
        out.append(
            f"{vis} int lpcc_emu_params__{n}(char* buf, int cap) "
            f"{{ return lpcc_emu::describe(&{n}, buf, cap); }}"
        )
    return "\n".join(out) + "\n"


_LOCK = threading.Lock()
_LIBS: dict[str, ctypes.CDLL] = {}

# A kernel whose source names none of these runs in serial mode: a block's
# threads one after another on one OS thread (no barrier can be reached, so no
# thread waits for another). Conservative: a name anywhere in the source
# (comments aside) selects OS threads for every kernel of that source.
_SYNC_RE = re.compile(
    r"\b(?:__syncthreads\w*|__syncwarp|__shfl\w*|__ballot_sync|__any_sync"
    r"|__all_sync|__uni_sync|__reduce_\w+_sync|__match_\w+_sync|__activemask"
    r"|__barrier_sync|cooperative_groups|this_thread_block|tiled_partition"
    r"|lpcc_emu\s*::)"
)
# Blocks of a serial-mode launch run on this many OS threads when the source
# has no `__shared__` memory (its one static instance serves one block only).
PARALLEL_BLOCKS = max(1, min(4, len(os.sched_getaffinity(0))))


@dataclass(frozen=True)
class _Source:
    """What `emulate` needs of one source, computed once per source text."""

    kernels: dict[str, _Kernel]
    full: str  # the C++ that g++ compiles (source + launchers)
    serial: bool  # no barrier or warp primitive: serial mode
    shared: bool  # declares `__shared__` memory


@functools.lru_cache(maxsize=256)
def _prepare(source: str) -> _Source:
    found = kernels(source)
    names = [k.name for k in found.values() if not k.template]
    text = _strip_comments(source)
    return _Source(
        kernels=found,
        full=_rewrite_extern_shared(source) + _launchers(names),
        serial=_SYNC_RE.search(text) is None,
        shared=re.search(r"\b__shared__\b", text) is not None,
    )


def launch_plan(
    source: str, grid: int | Sequence[int], shared_bytes: int = 0
) -> tuple[str, int]:
    """("serial" | "threads", OS threads for the blocks) of a launch of `source`.

    The header caps the workers at 1 again if the library has shared memory.
    """
    info = _prepare(source)
    if not info.serial:
        return "threads", 1
    g = _dims("grid", "?", grid)
    nblocks = g[0] * g[1] * g[2]
    if info.shared or shared_bytes > 0:
        return "serial", 1
    return "serial", max(1, min(PARALLEL_BLOCKS, nblocks))


def _cache_dir() -> Path:
    d = Path(tempfile.gettempdir()) / "lpcc-cuda-emu"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _library(source: str, kernel: str) -> ctypes.CDLL:
    """Compile `source` (+ launchers) once per content and load it."""
    full = _prepare(source).full
    header = HEADER.read_bytes()
    key = hashlib.sha256(
        b"\0".join([header, full.encode(), " ".join(FLAGS).encode()])
    ).hexdigest()[:32]
    with _LOCK:
        lib = _LIBS.get(key)
        if lib is not None:
            return lib
        so = _cache_dir() / f"{key}.so"
        if not so.exists():
            _compile(full, so, kernel)
        try:
            lib = ctypes.CDLL(str(so))
        except OSError as err:
            raise EmulationError(
                f"CUDA emulation: kernel {kernel!r}: the compiled library {so} "
                f"does not load: {err}. Delete it to rebuild."
            ) from None
        _LIBS[key] = lib
        return lib


def _gxx(kernel: str) -> str:
    gxx = shutil.which("g++")
    if gxx is None:
        raise EmulationError(
            f"CUDA emulation: kernel {kernel!r}: g++ is not on PATH. The host "
            "emulator compiles CUDA C as C++17 with g++; install it (e.g. "
            "`apt-get install g++`) or run the kernel on a GPU."
        )
    return gxx


# ---- precompiled header --------------------------------------------------------
# Parsing the header's C++ standard library includes is about half of g++'s
# time for a small kernel. The header is precompiled once (per header content,
# g++ build and flags) into the cache directory, next to a copy of the header;
# `-include <copy>` makes g++ take the .gch when it is valid and silently read
# the copy itself otherwise (a stale or foreign .gch only costs time).
USE_PCH = True
_PCH_FAILED: set[str] = set()  # PCH directories whose build failed (this process)


@functools.lru_cache(maxsize=8)
def _gxx_version(gxx: str) -> str:
    try:
        proc = subprocess.run(
            [gxx, "--version"], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{os.path.realpath(gxx)} {proc.stdout.strip()}"


def _pch_dir(gxx: str) -> Path:
    key = hashlib.sha256(
        b"\0".join(
            [
                HEADER.read_bytes(),
                _gxx_version(gxx).encode(),
                " ".join(FLAGS).encode(),
            ]
        )
    ).hexdigest()[:24]
    return _cache_dir() / f"pch-{key}"


def _pch_header(gxx: str) -> Path | None:
    """The header copy to `-include` (with its .gch beside it), or None.

    Builds the .gch on first use (atomic rename, so concurrent builders and
    readers are safe); any failure means None: compile with the plain header.
    """
    if not USE_PCH:
        return None
    d = _pch_dir(gxx)
    h = d / HEADER.name
    gch = d / (HEADER.name + ".gch")
    if str(d) in _PCH_FAILED:
        return None
    if h.exists() and gch.exists():
        return h
    try:
        d.mkdir(parents=True, exist_ok=True)
        tag = f"{os.getpid()}.{uuid.uuid4().hex[:8]}"
        if not h.exists():
            tmp_h = d / f"{HEADER.name}.{tag}"
            tmp_h.write_bytes(HEADER.read_bytes())
            os.replace(tmp_h, h)
        tmp = d / f"{HEADER.name}.{tag}.gch"
        flags = [f for f in FLAGS if f != "-shared"]
        cmd = [gxx, *flags, "-x", "c++-header", str(h), "-o", str(tmp)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            if proc.returncode != 0:
                raise OSError(proc.stderr[-2000:])
            os.replace(tmp, gch)
        finally:
            tmp.unlink(missing_ok=True)
    except (OSError, subprocess.SubprocessError):
        _PCH_FAILED.add(str(d))
        return None
    return h


def _compile(full: str, so: Path, kernel: str) -> None:
    gxx = _gxx(kernel)
    tag = f"{os.getpid()}.{uuid.uuid4().hex[:8]}"
    src = so.with_name(f"{so.stem}.{tag}.cpp")
    tmp = so.with_name(f"{so.stem}.{tag}.so")
    src.write_text(full)
    header = _pch_header(gxx) or HEADER
    cmd = [gxx, *FLAGS, "-include", str(header), "-x", "c++", str(src), "-o", str(tmp)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if (
            proc.returncode != 0
            and header != HEADER
            and re.search(r"\.gch|precompiled|PCH", proc.stderr)
        ):
            # A PCH problem g++ does not recover from by itself: plain compile.
            cmd[cmd.index(str(header))] = str(HEADER)
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            log = (proc.stderr + proc.stdout).strip()
            if len(log) > 8000:
                log = log[:8000] + "\n... (truncated)"
            raise EmulationError(
                f"CUDA emulation: kernel {kernel!r}: g++ could not compile the "
                f"source as C++ with the emulation header (PTX inline asm needs "
                f"an `#ifdef LPCC_EMU` fallback):\n{log}"
            )
        os.replace(tmp, so)  # atomic: a concurrent reader sees all or nothing
        os.replace(src, so.with_suffix(".cpp"))  # kept for debugging
    finally:
        for p in (tmp, src):
            p.unlink(missing_ok=True)


def _dims(what: str, kernel: str, value: int | Sequence[int]) -> tuple[int, int, int]:
    vals = [value] if isinstance(value, int | np.integer) else list(value)
    if not 1 <= len(vals) <= 3 or not all(
        isinstance(v, int | np.integer) and not isinstance(v, bool) for v in vals
    ):
        raise EmulationError(
            f"CUDA emulation: kernel {kernel!r}: {what}={value!r} must be an int "
            "or a tuple of 1 to 3 ints."
        )
    vals = [int(v) for v in vals] + [1] * (3 - len(vals))
    if min(vals) < 1:
        raise EmulationError(
            f"CUDA emulation: kernel {kernel!r}: {what}={value!r} has a size < 1."
        )
    return vals[0], vals[1], vals[2]


def _check_launch(
    kernel: str, grid: tuple[int, int, int], block: tuple[int, int, int]
) -> None:
    n = block[0] * block[1] * block[2]
    if n > MAX_THREADS:
        raise EmulationError(
            f"CUDA emulation: kernel {kernel!r}: a block of {block} has {n} threads;"
            f" CUDA allows at most {MAX_THREADS}. Use smaller blocks."
        )
    if block[2] > 64:
        raise EmulationError(
            f"CUDA emulation: kernel {kernel!r}: block.z={block[2]} exceeds 64."
        )
    if grid[0] > 2**31 - 1 or grid[1] > 65535 or grid[2] > 65535:
        raise EmulationError(
            f"CUDA emulation: kernel {kernel!r}: grid {grid} exceeds CUDA's limits "
            "(x < 2^31, y and z <= 65535)."
        )


def _f2bf_bits(x: float) -> int:
    """float -> bfloat16 bits, round to nearest even (as the header does)."""
    b = int(np.array(x, np.float32).view(np.uint32))
    if b & 0x7FFFFFFF > 0x7F800000:
        return (b >> 16) | 0x40
    return ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) & 0xFFFF


_INT_CTYPES = {
    ("i", 1): ctypes.c_int8,
    ("i", 2): ctypes.c_int16,
    ("i", 4): ctypes.c_int32,
    ("i", 8): ctypes.c_int64,
    ("u", 1): ctypes.c_uint8,
    ("u", 2): ctypes.c_uint16,
    ("u", 4): ctypes.c_uint32,
    ("u", 8): ctypes.c_uint64,
}


def _convert(kernel: str, i: int, decl: str, token: str, value: object) -> object:
    """One argument as the ctypes object the launcher's `void*` points to."""
    where = f"CUDA emulation: kernel {kernel!r}: argument {i} ({decl})"
    kind, rest = token[0], token[1:]
    if kind == "P":
        const = rest.endswith("c")
        align = int(rest.rstrip("c"))
        if value is None:
            return ctypes.c_void_p(None)
        if not isinstance(value, np.ndarray):
            raise EmulationError(
                f"{where} is a pointer: pass a NumPy array (or None), "
                f"not {type(value).__name__}."
            )
        if not value.flags.c_contiguous:
            raise EmulationError(
                f"{where}: the array is not C-contiguous; pass "
                "np.ascontiguousarray(x) (and copy outputs back)."
            )
        if not const and not value.flags.writeable:
            raise EmulationError(
                f"{where} points to non-const memory the kernel may write, but the "
                "array is read-only; pass a writeable copy."
            )
        addr = value.ctypes.data
        if align > 1 and addr % align:
            raise EmulationError(
                f"{where}: the array's address is not a multiple of {align} bytes, "
                "the alignment of the pointee type (a GPU would fault); pass an "
                "aligned copy."
            )
        return ctypes.c_void_p(addr)
    if kind in "iu":
        if isinstance(value, float | np.floating) or not isinstance(
            value, int | np.integer
        ):
            raise EmulationError(
                f"{where} is an integer: pass an int, not {type(value).__name__}."
            )
        size = int(rest)
        lo, hi = (
            (-(2 ** (8 * size - 1)), 2 ** (8 * size - 1) - 1)
            if kind == "i"
            else (0, 2 ** (8 * size) - 1)
        )
        if not lo <= int(value) <= hi:
            raise EmulationError(f"{where}: {value} is outside [{lo}, {hi}].")
        return _INT_CTYPES[kind, size](int(value))
    if kind in "fhb?":
        if isinstance(value, bool | np.bool_) and kind != "?":
            raise EmulationError(f"{where} is a float: pass a number, not a bool.")
        if not isinstance(value, int | float | np.integer | np.floating | np.bool_):
            raise EmulationError(
                f"{where} is a {'bool' if kind == '?' else 'float'}: pass a number, "
                f"not {type(value).__name__}."
            )
        if kind == "?":
            return ctypes.c_bool(bool(value))
        if kind == "h":
            bits = int(np.array(float(value), np.float16).view(np.uint16))
            return ctypes.c_uint16(bits)
        if kind == "b":
            return ctypes.c_uint16(_f2bf_bits(float(value)))
        return (ctypes.c_float if rest == "4" else ctypes.c_double)(float(value))
    raise EmulationError(
        f"{where} has a struct/class type ({rest} bytes); emulate() passes only "
        "pointers, integers, float/double and __half/__nv_bfloat16 scalars."
    )


def emulate(
    source: str,
    kernel: str,
    grid: int | Sequence[int],
    block: int | Sequence[int],
    args: Sequence[object],
    *,
    shared_bytes: int = 0,
    timeout: float = 60.0,
    mode: str = "auto",
) -> None:
    """Run `kernel` of the CUDA C `source` on the host, as `<<<grid, block>>>`.

    `args` follow the kernel's parameters: NumPy arrays (C-contiguous; written
    in place) for pointers, Python/NumPy numbers for scalars. `shared_bytes`
    is the dynamic shared memory (`extern __shared__`). A barrier that some
    threads never reach fails after `timeout` seconds instead of hanging.
    `mode`: "auto" (serial unless the source names a barrier or warp
    primitive, see `launch_plan`), "threads" (a block's threads as OS
    threads), "serial" (a barrier reached then is an error).
    """
    info = _prepare(source)
    found = info.kernels
    k = found.get(kernel)
    if k is None:
        raise EmulationError(
            f"CUDA emulation: no `__global__ void {kernel}(...)` is defined in the "
            f"source (it defines: {', '.join(sorted(found)) or 'none'})."
        )
    if k.template:
        raise EmulationError(
            f"CUDA emulation: kernel {kernel!r} is a template; launch an "
            '`extern "C"` wrapper kernel that instantiates it.'
        )
    g = _dims("grid", kernel, grid)
    b = _dims("block", kernel, block)
    _check_launch(kernel, g, b)
    if not 0 <= shared_bytes <= MAX_SHARED_BYTES:
        raise EmulationError(
            f"CUDA emulation: kernel {kernel!r}: shared_bytes={shared_bytes} is "
            f"outside [0, {MAX_SHARED_BYTES}]."
        )
    if shared_bytes == 0 and "extern __shared__" in " ".join(k.body.split()):
        raise EmulationError(
            f"CUDA emulation: kernel {kernel!r} declares `extern __shared__` "
            "memory but shared_bytes=0; pass the dynamic shared memory size."
        )
    if mode not in ("auto", "threads", "serial"):
        raise EmulationError(
            f"CUDA emulation: kernel {kernel!r}: mode={mode!r} must be 'auto', "
            "'threads' or 'serial'."
        )
    plan, workers = launch_plan(source, g, shared_bytes)
    if mode == "threads":
        plan, workers = "threads", 1
    elif mode == "serial" and plan != "serial":
        plan, workers = "serial", 1
    lib = _library(source, kernel)
    tokens, fn = _entry(lib, kernel)
    n = len(tokens)
    if len(args) != n:
        sig = ", ".join(k.params) if len(k.params) == n else f"{n} parameters"
        raise EmulationError(
            f"CUDA emulation: kernel {kernel!r} takes {n} arguments ({sig}), "
            f"got {len(args)}."
        )
    decls = k.params if len(k.params) == n else tokens
    objs = [
        _convert(kernel, i, decls[i], t, a)
        for i, (t, a) in enumerate(zip(tokens, args, strict=True))
    ]
    argv = (ctypes.c_void_p * max(n, 1))(
        *[ctypes.cast(ctypes.pointer(o), ctypes.c_void_p) for o in objs]
    )
    dims = (ctypes.c_uint * 6)(*g, *b)
    err = ctypes.create_string_buffer(_ERR_CAP)
    rc = fn(
        dims,
        argv,
        shared_bytes,
        float(timeout),
        1 if plan == "serial" else 0,
        workers,
        err,
        _ERR_CAP,
    )
    del objs  # the arrays themselves are kept alive by `args`
    if rc != 0:
        raise EmulationError(
            f"CUDA emulation: kernel {kernel!r} <<<{g}, {b}>>> failed: "
            f"{err.value.decode(errors='replace')}"
        )


_ENTRIES: dict[tuple[int, str], tuple[tuple[str, ...], ctypes._CFuncPtr]] = {}


def _entry(lib: ctypes.CDLL, kernel: str) -> tuple[tuple[str, ...], ctypes._CFuncPtr]:
    """(parameter tokens, launcher) of `kernel` in `lib`, looked up once."""
    key = (id(lib), kernel)
    hit = _ENTRIES.get(key)
    if hit is not None:
        return hit
    buf = ctypes.create_string_buffer(_ERR_CAP)
    describe = getattr(lib, f"lpcc_emu_params__{kernel}")
    describe.restype = ctypes.c_int
    describe(buf, _ERR_CAP)
    tokens = tuple(buf.value.decode().split())
    fn = getattr(lib, f"lpcc_emu_launch__{kernel}")
    fn.restype = ctypes.c_int
    fn.argtypes = [
        ctypes.POINTER(ctypes.c_uint),
        ctypes.POINTER(ctypes.c_void_p),
        ctypes.c_ulonglong,
        ctypes.c_double,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
    ]
    _ENTRIES[key] = (tokens, fn)
    return tokens, fn
