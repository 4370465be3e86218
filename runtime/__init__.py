"""The runtime (imported as `lpcc.runtime`): the VM that runs saved programs.

It imports without the compiler, torch or xDSL: loading a saved program and
printing it needs NumPy alone, and running it needs only what its target's
kernel loader needs (the "reference" target: lpcc's interpreter, i.e. xDSL).

    program = lpcc.runtime.load("model.lpcc")
    print(program.as_text())
    outputs = lpcc.runtime.VM(program).run([x])
"""

from .format import FORMAT_VERSION, FormatError, dumps, load, loads, save
from .kernels import (
    REFERENCE_NEEDS_COMPILER,
    ExecutionError,
    RuntimeDependencyError,
    kernel_targets,
    load_kernel,
    register_kernel_loader,
)
from .program import (
    Alloc,
    BufferInfo,
    Call,
    Constant,
    Copy,
    Free,
    Instruction,
    Kernel,
    Program,
    ProgramError,
    Return,
    TensorSpec,
    View,
)
from .vm import VM, InputError

__all__ = [
    "FORMAT_VERSION",
    "REFERENCE_NEEDS_COMPILER",
    "VM",
    "Alloc",
    "BufferInfo",
    "Call",
    "Constant",
    "Copy",
    "ExecutionError",
    "FormatError",
    "Free",
    "InputError",
    "Instruction",
    "Kernel",
    "Program",
    "ProgramError",
    "Return",
    "RuntimeDependencyError",
    "TensorSpec",
    "View",
    "dumps",
    "kernel_targets",
    "load",
    "load_kernel",
    "loads",
    "register_kernel_loader",
    "save",
]
