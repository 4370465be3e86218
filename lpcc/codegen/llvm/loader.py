"""Load compiled kernel object code into this process (no compiler needed).

Saved programs carry their CPU kernels as native object code. Loading one
must not need LLVM's optimizer or code generator, nor torch or xDSL, so this
module imports only llvmlite's MCJIT linker (`add_object_file`), ctypes and
`lpcc.errors`: the runtime imports it to run saved programs. Before linking,
it checks that this CPU has every feature the code was compiled for, since
running AVX-512 code on an AVX2 machine would kill the process (SIGILL)
instead of raising an error.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

import llvmlite.binding as llvm

from lpcc.errors import LpccError

_initialized = False


class CpuFeatureError(LpccError, RuntimeError):
    """Code compiled for CPU features (or an architecture) this machine lacks."""


class SymbolError(LpccError, KeyError):
    """A function name that a loaded object does not define."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0])


def init_llvm() -> None:
    """Initialize LLVM's native target once (`llvm.initialize()` raises in 0.50)."""
    global _initialized
    if not _initialized:
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        _initialized = True


def host_features() -> frozenset[str]:
    """The CPU features LLVM detects on this machine (e.g. "avx2", "fma")."""
    init_llvm()
    try:
        features = llvm.get_host_cpu_features()
    except RuntimeError:  # LLVM cannot detect features on some hosts
        return frozenset()
    return frozenset(name for name, enabled in features.items() if enabled)


def host_arch() -> str:
    """The architecture part of this process's target triple, e.g. "x86_64"."""
    return llvm.get_process_triple().split("-", 1)[0]


@dataclass(frozen=True)
class CompiledObject:
    """Native object code for one ISA level, and what it needs to run.

    `features` are the CPU features the code may use (checked at load time),
    `symbols` the functions it exports, `triple` the LLVM target triple.
    """

    object_code: bytes
    isa: str
    features: frozenset[str]
    symbols: tuple[str, ...]
    triple: str

    def metadata(self) -> dict[str, Any]:
        """Everything but the code, as JSON-friendly values (for saved programs)."""
        return {
            "isa": self.isa,
            "features": sorted(self.features),
            "symbols": list(self.symbols),
            "triple": self.triple,
        }

    @classmethod
    def from_metadata(cls, object_code: bytes, meta: dict[str, Any]) -> CompiledObject:
        """The inverse of `metadata()`."""
        return cls(
            object_code=bytes(object_code),
            isa=str(meta["isa"]),
            features=frozenset(meta["features"]),
            symbols=tuple(meta["symbols"]),
            triple=str(meta["triple"]),
        )


def check_runnable(obj: CompiledObject) -> None:
    """Raise CpuFeatureError unless this machine can run `obj`'s code."""
    arch, obj_arch = host_arch(), obj.triple.split("-", 1)[0]
    if arch != obj_arch:
        raise CpuFeatureError(
            f"loading CPU kernels: the object code was compiled for {obj_arch} "
            f"({obj.triple}) but this machine is {arch}; recompile the program "
            "on this machine"
        )
    missing = obj.features - host_features()
    if missing:
        raise CpuFeatureError(
            f"loading CPU kernels: the object code was compiled for ISA level "
            f"{obj.isa!r} and needs CPU features this machine lacks: "
            f"{', '.join(sorted(missing))}; recompile the program on this machine, "
            "or compile it with LPCC_CPU_ISA set to a level this machine has "
            "(lpcc.codegen.llvm.isa.host_isa() names the best one)"
        )


class Library:
    """Object code linked into this process; hands out its functions.

    It owns the MCJIT engine holding the code: keep the Library (or a function
    from it, which references it) alive as long as the code may run.
    """

    def __init__(self, obj: CompiledObject) -> None:
        check_runnable(obj)
        init_llvm()
        target = llvm.Target.from_triple(llvm.get_process_triple())
        # Only a container for the object; no code is generated for it.
        self._tm = target.create_target_machine(
            cpu=llvm.get_host_cpu_name(), opt=0, jit=True
        )
        self._engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), self._tm)
        self._engine.add_object_file(llvm.ObjectFileRef.from_data(obj.object_code))
        self._engine.finalize_object()
        self.object = obj

    def address(self, name: str) -> int:
        """The address of function `name` in this process."""
        addr = self._engine.get_function_address(name)
        if not addr:
            raise SymbolError(
                f"loading CPU kernels: the object code defines no function "
                f"{name!r}; it defines {', '.join(self.object.symbols) or 'none'}"
            )
        return addr

    def function(self, name: str, restype: Any, *argtypes: Any) -> Any:
        """`name` as a ctypes function; calls release the GIL (CFUNCTYPE)."""
        fn = ctypes.CFUNCTYPE(restype, *argtypes)(self.address(name))
        fn._lpcc_library = self  # the code lives as long as the function
        return fn


def load_object(obj: CompiledObject) -> Library:
    """Link `obj` into this process after checking the CPU can run it."""
    return Library(obj)
