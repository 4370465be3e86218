"""Kernel loaders: one per target, turning a `Kernel` into a callable.

Every target uses one calling convention (destination passing, as Relax):

    fn(inputs: list[np.ndarray], outputs: list[np.ndarray], env: dict[str, int])

writes the results into `outputs` (arrays the VM placed in planned storage)
and returns None; `env` holds the values of the size symbols of this call.
A loader is `loader(kernel: Kernel) -> fn`. The "reference" loader is built
in; backends (and tests) add theirs with `register_kernel_loader`. Loaders
import what they need lazily, so `import lpcc.runtime` stays numpy-only.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lpcc.errors import LpccError

from .program import Kernel, ProgramError

KernelFn = Callable[[list[np.ndarray], list[np.ndarray], dict[str, int]], None]
Loader = Callable[[Kernel], KernelFn]

_LOADERS: dict[str, Loader] = {}


class RuntimeDependencyError(LpccError, RuntimeError):
    """A program's kernels need a package that is not installed."""


class ExecutionError(LpccError, RuntimeError):
    """A kernel or instruction failed while a program ran."""


def register_kernel_loader(target: str, loader: Loader) -> None:
    """Make the VM load kernels of `target` with `loader` (replaces any other)."""
    if not isinstance(target, str) or not target:
        raise ProgramError(f"register_kernel_loader: bad target name {target!r}")
    if not callable(loader):
        raise ProgramError(
            f"register_kernel_loader({target!r}): the loader must be callable, "
            f"got {type(loader).__name__}"
        )
    _LOADERS[target] = loader


def kernel_targets() -> list[str]:
    """The targets whose kernels this process can load."""
    return sorted(_LOADERS)


def load_kernel(kernel: Kernel) -> KernelFn:
    """The callable for `kernel`, from the loader of its target."""
    loader = _LOADERS.get(kernel.target)
    if loader is None:
        raise ProgramError(
            f"kernel {kernel.name!r} is for target {kernel.target!r}, which this "
            f"lpcc cannot load (it knows {', '.join(kernel_targets())}); recompile "
            "for one of those, or register a loader with "
            "lpcc.runtime.register_kernel_loader"
        )
    return loader(kernel)


# -- the reference target: lpcc's NumPy interpreter ---------------------------------

REFERENCE_NEEDS_COMPILER = (
    "this program was compiled for the 'reference' target, whose kernels run in "
    "lpcc's NumPy interpreter, which needs the lpcc compiler (xdsl) installed: "
    "pip install lpcc (or recompile with target='cpu')"
)


def _reference_loader(kernel: Kernel) -> KernelFn:
    """Parse the kernel's MLIR (one `func.func @kernel`); run it in the interpreter."""
    if kernel.kind != "lp" or not isinstance(kernel.source, str):
        raise ProgramError(
            f"kernel {kernel.name!r}: the reference target runs kernels of kind "
            f"'lp' (MLIR text), not {kernel.kind!r}"
        )
    try:
        from xdsl.dialects import func

        from lpcc.ir import interp
        from lpcc.ir.dialect import parse_module
    except ImportError as err:
        raise RuntimeDependencyError(f"{REFERENCE_NEEDS_COMPILER} [{err}]") from None
    module = parse_module(kernel.source, f"kernel {kernel.name}")
    fns = [
        op
        for op in module.ops
        if isinstance(op, func.FuncOp) and op.sym_name.data == "kernel"
    ]
    if len(fns) != 1:
        raise ProgramError(
            f"kernel {kernel.name!r}: its source must hold one func.func @kernel"
        )
    fn = fns[0]
    name = kernel.name

    def run(
        inputs: list[np.ndarray], outputs: list[np.ndarray], env: dict[str, int]
    ) -> None:
        results = interp.run_function(fn, inputs, dict(env))
        if len(results) != len(outputs):
            raise ExecutionError(
                f"kernel {name!r} returned {len(results)} results for "
                f"{len(outputs)} outputs"
            )
        for i, (out, res) in enumerate(zip(outputs, results, strict=True)):
            res = np.asarray(res)
            if res.shape != out.shape or res.dtype != out.dtype:
                raise ExecutionError(
                    f"kernel {name!r} result #{i} is {res.dtype}{list(res.shape)}, "
                    f"the program planned {out.dtype}{list(out.shape)}"
                )
            np.copyto(out, res)

    return run


register_kernel_loader("reference", _reference_loader)


# -- the cpu target: native object code from lpcc.codegen.llvm --------------------

CPU_NEEDS_LLVMLITE = (
    "this program's kernels are native CPU code, which lpcc links with llvmlite: "
    "pip install llvmlite"
)


def _cpu_loader(kernel: Kernel) -> KernelFn:
    """Link the kernel's object code (after checking the CPU's features)."""
    if kernel.kind != "llvm-object" or not isinstance(kernel.source, bytes):
        raise ProgramError(
            f"kernel {kernel.name!r}: the cpu target runs kernels of kind "
            f"'llvm-object' (object code), not {kernel.kind!r}"
        )
    try:
        from lpcc.codegen.llvm.runner import native_kernel_fn
    except ImportError as err:
        raise RuntimeDependencyError(f"{CPU_NEEDS_LLVMLITE} [{err}]") from None
    try:
        return native_kernel_fn(kernel.source, kernel.meta)
    except (KeyError, TypeError, ValueError) as err:
        raise ProgramError(
            f"kernel {kernel.name!r}: its metadata does not describe a native "
            f"kernel ({type(err).__name__}: {err}); recompile the program"
        ) from None


register_kernel_loader("cpu", _cpu_loader)


# -- the cuda target: CUDA C (+ fatbins) from lpcc.codegen.cuda --------------------


def _cuda_loader(kernel: Kernel) -> KernelFn:
    """Load a CUDA kernel on the GPU (CuPy) or the host emulator (`cuda_device`)."""
    if kernel.kind != "cuda-c" or not isinstance(kernel.source, str):
        raise ProgramError(
            f"kernel {kernel.name!r}: the cuda target runs kernels of kind "
            f"'cuda-c' (CUDA C text), not {kernel.kind!r}"
        )
    from lpcc.codegen.cuda.runner import cuda_kernel_fn

    try:
        return cuda_kernel_fn(kernel.name, kernel.source, kernel.meta, kernel.binaries)
    except ValueError as err:
        raise ProgramError(
            f"kernel {kernel.name!r}: its metadata does not describe a CUDA "
            f"kernel ({err}); recompile the program"
        ) from None


register_kernel_loader("cuda", _cuda_loader)
