"""Run-time CUDA compilation with NVRTC (what CuPy uses on a GPU machine).

lpcc compiles its generated CUDA C with NVRTC at run time, so every kernel
must be valid NVRTC input (no system headers; `cuda_fp16.h` from an include
path). NVRTC needs no GPU: the `nvidia-cuda-nvrtc` wheel (CUDA 13:
`nvidia/cu13/lib/libnvrtc.so.13`) compiles to PTX anywhere, and the
`nvidia-cuda-runtime` wheel ships `cuda_fp16.h`/`cuda_bf16.h`
(`nvidia/cu13/include`), which NVRTC does not have built in. This module finds
both (wheels first, then `$CUDA_HOME`/`$CUDA_PATH`/`/usr/local/cuda`) and
calls NVRTC through ctypes, so the tests need neither cupy nor a GPU.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from pathlib import Path

from lpcc.codegen.cuda.nvcc import CudaCompileError
from lpcc.errors import LpccError

__all__ = ["NvrtcNotFound", "available", "compile_ptx", "include_dir", "library"]


class NvrtcNotFound(LpccError, RuntimeError):
    """libnvrtc (or the CUDA headers it needs) is not installed."""


def _roots() -> list[Path]:
    roots = [Path(p) / "nvidia" / "cu13" for p in sys.path if p]
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            roots.append(Path(os.environ[var]))
    roots.append(Path("/usr/local/cuda"))
    return roots


@functools.lru_cache(maxsize=1)
def library() -> Path | None:
    """Path of libnvrtc (CUDA 13 wheel or toolkit), or None."""
    for root in _roots():
        for sub in ("lib", "lib64"):
            d = root / sub
            for name in ("libnvrtc.so.13", "libnvrtc.so"):
                if (d / name).is_file():
                    return d / name
    return None


@functools.lru_cache(maxsize=1)
def include_dir() -> Path | None:
    """A directory holding `cuda_fp16.h` (runtime wheel or toolkit), or None."""
    for root in _roots():
        if (root / "include" / "cuda_fp16.h").is_file():
            return root / "include"
    return None


def available() -> str | None:
    """None when NVRTC can be used here, else the reason it cannot."""
    if library() is None:
        return (
            "libnvrtc not found: `pip install nvidia-cuda-nvrtc==13.*` or set "
            "CUDA_HOME to a CUDA 13 toolkit"
        )
    if include_dir() is None:
        return (
            "cuda_fp16.h not found: `pip install nvidia-cuda-runtime==13.*` or set "
            "CUDA_HOME to a CUDA 13 toolkit"
        )
    return None


@functools.lru_cache(maxsize=1)
def _lib() -> ctypes.CDLL:
    why = available()
    if why is not None:
        raise NvrtcNotFound(f"NVRTC: {why}.")
    lib = ctypes.CDLL(str(library()))
    vp, sz = ctypes.c_void_p, ctypes.c_size_t
    lib.nvrtcCreateProgram.argtypes = [
        ctypes.POINTER(vp),
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_int,
        vp,
        vp,
    ]
    lib.nvrtcCompileProgram.argtypes = [
        vp,
        ctypes.c_int,
        ctypes.POINTER(ctypes.c_char_p),
    ]
    lib.nvrtcGetProgramLogSize.argtypes = [vp, ctypes.POINTER(sz)]
    lib.nvrtcGetProgramLog.argtypes = [vp, ctypes.c_char_p]
    lib.nvrtcGetPTXSize.argtypes = [vp, ctypes.POINTER(sz)]
    lib.nvrtcGetPTX.argtypes = [vp, ctypes.c_char_p]
    lib.nvrtcDestroyProgram.argtypes = [ctypes.POINTER(vp)]
    lib.nvrtcGetErrorString.restype = ctypes.c_char_p
    return lib


def compile_ptx(source: str, arch: str = "sm_80", name: str = "kernel.cu") -> str:
    """PTX of `source` for `arch` ("sm_80" -> compute_80), compiled by NVRTC.

    Raises CudaCompileError with NVRTC's log when the source is rejected, and
    NvrtcNotFound when NVRTC or the CUDA headers are missing.
    """
    if not arch.startswith("sm_") or not arch[3:].isdigit():
        raise CudaCompileError(f"NVRTC: arch={arch!r} must look like 'sm_80'.")
    lib = _lib()
    prog = ctypes.c_void_p()
    rc = lib.nvrtcCreateProgram(
        ctypes.byref(prog), source.encode(), name.encode(), 0, None, None
    )
    if rc != 0:
        raise CudaCompileError(
            f"NVRTC: nvrtcCreateProgram failed: {lib.nvrtcGetErrorString(rc).decode()}"
        )
    try:
        opts = [
            f"-arch=compute_{arch[3:]}".encode(),
            b"-std=c++17",
            f"-I{include_dir()}".encode(),
        ]
        argv = (ctypes.c_char_p * len(opts))(*opts)
        rc = lib.nvrtcCompileProgram(prog, len(opts), argv)
        n = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(n))
        log = ctypes.create_string_buffer(n.value + 1)
        lib.nvrtcGetProgramLog(prog, log)
        if rc != 0:
            text = log.value.decode(errors="replace").strip()
            raise CudaCompileError(
                f"NVRTC could not compile {name} for {arch} "
                f"({lib.nvrtcGetErrorString(rc).decode()}):\n{text[:8000]}"
            )
        lib.nvrtcGetPTXSize(prog, ctypes.byref(n))
        ptx = ctypes.create_string_buffer(n.value + 1)
        lib.nvrtcGetPTX(prog, ptx)
        return ptx.value.decode()
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))
