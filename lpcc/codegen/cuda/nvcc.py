"""Ahead-of-time CUDA compilation with nvcc, and what ptxas and cuobjdump say.

Compiling for CUDA must not need a GPU: nvcc turns CUDA C into PTX or a cubin
for any `sm_XX` on a machine without one. The tests use it to check that every
generated kernel compiles for sm_80 and sm_90 and that ptxas reports no
register spills (`ptxas_info`), and `benchmarks/cuda_sass.py` reads the
machine code (`sass`) to count instructions per decoded weight.

Tools are found on PATH, then under `$CUDA_HOME/bin` (and `$CUDA_PATH/bin`,
`/usr/local/cuda/bin`); cuobjdump and nvdisasm also in the `nvidia-cuda-cuobjdump` and
`nvidia-cuda-nvdisasm` wheels (`nvidia/cu13/bin`), which ship them apart
from nvcc.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from lpcc.errors import LpccError

__all__ = [
    "CudaCompileError",
    "CudaToolNotFound",
    "compile_cuda",
    "find_tool",
    "ptxas_info",
    "sass",
]


class CudaToolNotFound(LpccError, RuntimeError):
    """nvcc (or cuobjdump) is not installed where lpcc looks for it."""


class CudaCompileError(LpccError, ValueError):
    """nvcc rejected a generated CUDA source; the message holds nvcc's log."""


def _search_dirs() -> list[Path]:
    dirs = [Path(p) for p in os.environ.get("PATH", "").split(os.pathsep) if p]
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            dirs.append(Path(os.environ[var]) / "bin")
    dirs.append(Path("/usr/local/cuda/bin"))
    for site in sys.path:  # pip's nvidia-* wheels (cuobjdump, nvdisasm)
        for sub in (
            "nvidia/cu13/bin",
            "nvidia/cuda_cuobjdump/bin",
            "nvidia/cuda_nvdisasm/bin",
        ):
            dirs.append(Path(site) / sub)
    return dirs


@functools.cache
def find_tool(name: str) -> str:
    """Absolute path of a CUDA tool (`nvcc`, `cuobjdump`, `ptxas`).

    Raises CudaToolNotFound naming where it looked and how to get it.
    """
    found = shutil.which(name)
    if found:
        return found
    for d in _search_dirs():
        cand = d / name
        if cand.is_file() and os.access(cand, os.X_OK):
            return str(cand)
    hint = (
        f"pip install nvidia-cuda-{name}"
        if name in ("cuobjdump", "nvdisasm")
        else "install the CUDA toolkit or set CUDA_HOME to it"
    )
    raise CudaToolNotFound(
        f"lpcc cuda: `{name}` not found on PATH, in $CUDA_HOME/bin, "
        f"/usr/local/cuda/bin or pip's nvidia wheels; {hint}"
    )


def _check_arch(arch: str) -> None:
    if not re.fullmatch(r"sm_\d+[a-z]?", arch):
        raise CudaCompileError(
            f"lpcc cuda: arch={arch!r} is not an `sm_XX` name; pass e.g. "
            "'sm_80' (A100) or 'sm_90' (H100)"
        )


def _run(
    cmd: list[str], what: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0:
        log = (proc.stdout + proc.stderr).strip()
        raise CudaCompileError(
            f"lpcc cuda: {what} failed (exit {proc.returncode}):\n{log}\n"
            "Hint: this is a code-generation bug in lpcc's CUDA backend; "
            "report it with the source (compile_cuda(..., kind='ptx') shows "
            "how far it gets)"
        )
    return proc


def _nvcc(source: str, arch: str, kind: str, extra: list[str]) -> tuple[bytes, str]:
    _check_arch(arch)
    if kind not in ("cubin", "ptx"):
        raise CudaCompileError(
            f"lpcc cuda: compile_cuda kind={kind!r}; use 'cubin' or 'ptx'"
        )
    nvcc = find_tool("nvcc")
    with tempfile.TemporaryDirectory(prefix="lpcc_nvcc_") as tmp:
        src = Path(tmp) / "kernel.cu"
        out = Path(tmp) / f"kernel.{kind}"
        src.write_text(source)
        cmd = [nvcc, f"--{kind}", f"-arch={arch}", "-O3", "-std=c++17"]
        cmd += [*extra, "-o", str(out), str(src)]
        proc = _run(cmd, f"nvcc --{kind} -arch={arch}")
        return out.read_bytes(), proc.stdout + proc.stderr


def compile_cuda(source: str, arch: str = "sm_90", kind: str = "cubin") -> bytes:
    """CUDA C source to a cubin (or PTX text as bytes) for `arch`; no GPU needed."""
    return _nvcc(source, arch, kind, [])[0]


def compile_fatbin(source: str, archs: Sequence[str]) -> bytes:
    """One fatbin with a cubin for each of `archs` (what saved programs carry).

    A cubin runs on its architecture's later minor versions (sm_80 on sm_86
    and sm_89); the loader picks the best cubin for the GPU, else NVRTC.
    """
    if not archs:
        raise CudaCompileError("lpcc cuda: compile_fatbin needs at least one arch")
    for arch in archs:
        _check_arch(arch)
    nvcc = find_tool("nvcc")
    with tempfile.TemporaryDirectory(prefix="lpcc_nvcc_") as tmp:
        src = Path(tmp) / "kernel.cu"
        out = Path(tmp) / "kernel.fatbin"
        src.write_text(source)
        cmd = [nvcc, "--fatbin", "-O3", "-std=c++17"]
        for arch in archs:
            num = arch.removeprefix("sm_")
            cmd.append(f"-gencode=arch=compute_{num},code={arch}")
        cmd += ["-o", str(out), str(src)]
        _run(cmd, f"nvcc --fatbin for {', '.join(archs)}")
        return out.read_bytes()


_FATBIN_MAGIC = b"\x50\xed\x55\xba"


@functools.lru_cache(maxsize=4)
def _nvcc_version(nvcc: str) -> str:
    return subprocess.run(
        [nvcc, "--version"], capture_output=True, text=True, check=False
    ).stdout


def cached_fatbin(source: str, archs: Sequence[str]) -> bytes:
    """`compile_fatbin`, kept on disk under the `cache_dir` knob (`cuda/`).

    The key is the SHA-256 of nvcc's version, the archs and the source, so
    the identical kernels of many programs (and recompiles) cost nvcc once.
    Writes are atomic; an unwritable or corrupt cache is ignored (the
    fatbin is compiled again), never an error.
    """
    from lpcc import config

    nvcc = find_tool("nvcc")
    key = hashlib.sha256(
        "\0".join([_nvcc_version(nvcc), ",".join(archs), source]).encode()
    ).hexdigest()
    root = Path(os.path.expanduser(config.get("cache_dir"))) / "cuda"
    path = root / f"{key}.fatbin"
    try:
        data = path.read_bytes()
        if data[:4] == _FATBIN_MAGIC:
            return data
    except OSError:
        pass
    data = compile_fatbin(source, archs)
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / f".{key}.{os.getpid()}.{threading.get_ident()}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError:
        pass  # a cache we cannot write only costs time
    return data


_FUNC = re.compile(r"Compiling entry function '(\w+)'|Function properties for (\w+)")
_SPILL = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes")
_REGS = re.compile(r"Used (\d+) registers")


def ptxas_info(source: str, arch: str = "sm_90") -> dict[str, dict[str, int]]:
    """Per kernel: registers, spill store/load bytes, local (stack) bytes.

    Parsed from `nvcc -Xptxas -v`, which prints per entry function a
    "N bytes stack frame, S bytes spill stores, L bytes spill loads" line and
    a "Used R registers" line.
    """
    _, log = _nvcc(source, arch, "cubin", ["-Xptxas", "-v"])
    info: dict[str, dict[str, int]] = {}
    cur: str | None = None
    for line in log.splitlines():
        m = _FUNC.search(line)
        if m:
            cur = m.group(1) or m.group(2)
            info.setdefault(
                cur,
                {"registers": 0, "spill_stores": 0, "spill_loads": 0, "local_bytes": 0},
            )
            continue
        if cur is None:
            continue
        m = _SPILL.search(line)
        if m:
            info[cur]["local_bytes"] = int(m.group(1))
            info[cur]["spill_stores"] = int(m.group(2))
            info[cur]["spill_loads"] = int(m.group(3))
        m = _REGS.search(line)
        if m:
            info[cur]["registers"] = int(m.group(1))
    if not info:
        raise CudaCompileError(
            f"lpcc cuda: ptxas -v printed no kernel information:\n{log}\n"
            "Hint: the source defines no __global__ function, or nvcc's output "
            "format changed"
        )
    return info


def sass(source: str, arch: str = "sm_90") -> str:
    """The SASS (machine code) listing of every kernel, via `cuobjdump -sass`."""
    cubin = compile_cuda(source, arch, "cubin")
    tool = find_tool("cuobjdump")
    # cuobjdump runs nvdisasm, which pip ships in a separate wheel
    env = dict(os.environ)
    env.setdefault("NVDISASM_PATH", str(Path(find_tool("nvdisasm")).parent))
    with tempfile.TemporaryDirectory(prefix="lpcc_sass_") as tmp:
        path = Path(tmp) / "kernel.cubin"
        path.write_bytes(cubin)
        return _run([tool, "-sass", str(path)], "cuobjdump -sass", env).stdout
