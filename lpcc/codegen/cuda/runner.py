"""Calling CUDA kernels from the VM: on the GPU (CuPy) or on the host emulator.

A saved CUDA kernel is its CUDA C source, the JSON meta `lower.kernel_meta`
writes (launches, symbols, scratch, errors) and, when nvcc was there at
compile time, a fatbin with a cubin per architecture. Where it runs is the
`cuda_device` knob (`LPCC_CUDA_DEVICE`):

* "gpu": CuPy loads the fatbin when it has a cubin this GPU runs (same
  major version, minor not above the GPU's), else NVRTC compiles the source
  for the GPU. Inputs are copied to the device per call, constants once (by
  host address), outputs copied back: the VM plans host memory, so a CUDA
  program today pays a copy per kernel (device-resident plans are next).
* "emulate": `emu.emulate` runs each launch on the host: the tests' way of
  running target="cuda" programs end to end without a GPU.
* "auto" (default): the GPU, or a clear error naming both ways out.

Importing this module needs numpy only; CuPy is imported when a GPU kernel
loads.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from lpcc import config
from lpcc.ir.symbolic import evaluate
from lpcc.runtime.kernels import ExecutionError, RuntimeDependencyError

KernelFn = Callable[[list[np.ndarray], list[np.ndarray], dict[str, int]], None]

NO_GPU = (
    "this program's kernels are CUDA kernels ({what}). Run it on a machine with "
    "an NVIDIA GPU and CuPy (pip install 'lpcc[cuda]'), or set "
    "LPCC_CUDA_DEVICE=emulate to run them on lpcc's host emulator (slow; g++ "
    "needed), or recompile with target='cpu'"
)


def gpu_available() -> bool:
    """Whether CuPy imports and sees at least one CUDA device."""
    try:
        import cupy

        return int(cupy.cuda.runtime.getDeviceCount()) > 0
    except Exception:  # any failure means no usable GPU
        return False


def resolve_device(device: str | None = None) -> str:
    """ "gpu" or "emulate" for `device` (None: the `cuda_device` knob)."""
    want = device or config.get("cuda_device")
    if want not in ("auto", "gpu", "emulate"):
        raise RuntimeDependencyError(
            f"cuda device {want!r}: choose auto, gpu or emulate (LPCC_CUDA_DEVICE)"
        )
    if want == "emulate":
        from . import emu

        if not emu.available():
            raise RuntimeDependencyError(
                "LPCC_CUDA_DEVICE=emulate runs CUDA kernels on the host with g++, "
                "which is not on PATH; install g++ (or run on a GPU)"
            )
        return "emulate"
    try:
        import cupy  # noqa: F401
    except ImportError as err:
        raise RuntimeDependencyError(
            NO_GPU.format(what=f"CuPy is not installed: {err}")
        ) from None
    if not gpu_available():
        raise RuntimeDependencyError(NO_GPU.format(what="CuPy sees no CUDA device"))
    return "gpu"


@dataclass(frozen=True)
class _Spec:
    """A kernel's meta, checked once: what every way of running it reads."""

    name: str
    source: str
    binaries: dict[str, bytes]
    archs: tuple[str, ...]
    launches: tuple[tuple[str, tuple[Any, ...], tuple[int, ...], int], ...]
    symbols: tuple[str, ...]
    scratch: tuple[Any, ...]
    errors: dict[int, str]
    const_inputs: frozenset[int]

    @classmethod
    def parse(
        cls, name: str, source: str, meta: dict[str, Any], binaries: dict[str, bytes]
    ) -> _Spec:
        try:
            return cls(
                name,
                source,
                binaries,
                tuple(str(a) for a in meta.get("archs", ())),
                tuple(
                    (
                        str(la["entry"]),
                        tuple(la["grid"]),
                        tuple(int(b) for b in la["block"]),
                        int(la.get("shared_bytes", 0)),
                    )
                    for la in meta["launches"]
                ),
                tuple(str(s) for s in meta.get("symbols", ())),
                tuple(meta.get("scratch", ())),
                {int(c): str(m) for c, m in meta.get("errors", {}).items()},
                frozenset(int(i) for i in meta.get("const_inputs", ())),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"bad CUDA kernel meta ({err})") from None

    def grids(
        self, env: dict[str, int]
    ) -> list[tuple[str, tuple[int, ...], tuple[int, ...], int]]:
        """The launches of one call, grids evaluated, empty ones dropped."""
        out = []
        for entry, grid, block, shared in self.launches:
            g = tuple(evaluate(d, env) for d in grid)
            if min(g) > 0:
                out.append((entry, g, block, shared))
        return out

    def check(self, status: int) -> None:
        """Raise the kernel's error for a nonzero status."""
        if status:
            why = self.errors.get(status, f"unknown status code {status}")
            raise ExecutionError(f"kernel {self.name!r}: {why}")


def cuda_kernel_fn(
    name: str,
    source: str,
    meta: dict[str, Any],
    binaries: dict[str, bytes],
    *,
    device: str | None = None,
) -> KernelFn:
    """The VM-callable function of one CUDA kernel (see the module docstring)."""
    spec = _Spec.parse(name, source, meta, binaries)
    impls: dict[str, KernelFn] = {}

    def run(
        inputs: list[np.ndarray], outputs: list[np.ndarray], env: dict[str, int]
    ) -> None:
        # The device is chosen at the first call on it, not at load: a program
        # compiles and loads anywhere; only running needs a GPU (or emulation).
        where = resolve_device(device)
        if where not in impls:
            impls[where] = _emulated(spec) if where == "emulate" else _on_gpu(spec)
        impls[where](inputs, outputs, env)

    return run


def _emulated(spec: _Spec) -> KernelFn:
    """Each launch through `emu.emulate`, on the VM's host arrays."""
    from . import emu

    def run(
        inputs: list[np.ndarray], outputs: list[np.ndarray], env: dict[str, int]
    ) -> None:
        ins = [np.ascontiguousarray(a) for a in inputs]
        outs = [o if o.flags.c_contiguous else np.empty_like(o) for o in outputs]
        bufs = [np.zeros(max(evaluate(s, env), 1), np.uint8) for s in spec.scratch]
        status = np.zeros(1, np.int32)
        args = [*ins, *outs, *bufs, *(int(env[s]) for s in spec.symbols), status]
        for entry, grid, block, shared in spec.grids(env):
            emu.emulate(spec.source, entry, grid, block, args, shared_bytes=shared)
        for o, t in zip(outputs, outs, strict=True):
            if o is not t:
                o[...] = t
        spec.check(int(status[0]))

    return run


def _on_gpu(spec: _Spec) -> KernelFn:
    """Each launch through CuPy; host arrays copied in and out per call."""
    import cupy

    launch = _device_launch(spec)
    consts: dict[tuple[int, int, int], Any] = {}

    def run_gpu(
        inputs: list[np.ndarray], outputs: list[np.ndarray], env: dict[str, int]
    ) -> None:
        ins = []
        for i, a in enumerate(inputs):
            if i in spec.const_inputs:
                key = (i, a.ctypes.data, a.nbytes)
                if key not in consts:
                    consts[key] = (cupy.asarray(np.ascontiguousarray(a)), a)
                ins.append(consts[key][0])
            else:
                ins.append(cupy.asarray(np.ascontiguousarray(a)))
        outs = [cupy.empty(o.shape, o.dtype) for o in outputs]
        status = launch(ins, outs, env)
        for o, d in zip(outputs, outs, strict=True):
            o[...] = cupy.asnumpy(d)
        spec.check(int(status.get()[0]))

    return run_gpu


def device_launcher(
    name: str, source: str, meta: dict[str, Any], binaries: dict[str, bytes]
) -> Callable[[list[Any], list[Any], dict[str, int]], Any]:
    """`launch(inputs, outputs, env) -> status`: a kernel on CuPy device arrays.

    No copies and no synchronization (the status array is returned on the
    device): what benchmarks time, and what a device-resident VM will call.
    """
    return _device_launch(_Spec.parse(name, source, meta, binaries))


def _device_launch(
    spec: _Spec,
) -> Callable[[list[Any], list[Any], dict[str, int]], Any]:
    import cupy

    fns = _gpu_functions(spec)
    for entry, _, _, shared in spec.launches:
        if shared > 48 * 1024:  # above the default needs an opt-in per function
            fns[entry].max_dynamic_shared_size_bytes = shared

    def launch(ins: list[Any], outs: list[Any], env: dict[str, int]) -> Any:
        bufs = [cupy.zeros(max(evaluate(s, env), 1), cupy.uint8) for s in spec.scratch]
        status = cupy.zeros(1, cupy.int32)
        syms = [np.int64(env[s]) for s in spec.symbols]
        for entry, grid, block, shared in spec.grids(env):
            args = (*ins, *outs, *bufs, *syms, status)
            fns[entry](grid, block, args, shared_mem=shared)
        return status

    return launch


def _gpu_functions(spec: _Spec) -> dict[str, Any]:
    """The entries' `cupy.RawKernel`s: from the fatbin when it has a cubin for
    this GPU, else compiled by NVRTC."""
    import cupy

    cc = int(cupy.cuda.Device().compute_capability)  # e.g. 90
    archs = [int(a.removeprefix("sm_")) for a in spec.archs]
    fits = [a for a in archs if a // 10 == cc // 10 and a <= cc]
    fat = spec.binaries.get("fatbin")
    name, source = spec.name, spec.source
    entries = [la[0] for la in spec.launches]
    if fat and fits:
        fd, path = tempfile.mkstemp(prefix=f"lpcc_{name}_", suffix=".fatbin")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(fat)
            module = cupy.RawModule(path=path)
            return {e: module.get_function(e) for e in entries}
        finally:
            os.unlink(path)
    try:
        from .nvrtc import include_dir

        options = ["-std=c++17"]
        inc = include_dir()  # cuda_fp16.h, where CuPy's own path lacks it
        if inc is not None:
            options.append(f"-I{inc}")
        module = cupy.RawModule(code=source, options=tuple(options))
        return {e: module.get_function(e) for e in entries}
    except Exception as err:  # NVRTC's compile errors are CuPy exceptions
        raise ExecutionError(
            f"kernel {name!r}: NVRTC could not compile its CUDA C for sm_{cc} "
            f"({type(err).__name__}: {err}); this is a bug in lpcc's CUDA backend"
        ) from None
