"""Instruction-set levels of the CPU backend, and LLVM target machines for them.

The machines lpcc runs on differ (Zen 5 with AVX-512 VBMI/VNNI, Zen 3 with
AVX2 and FMA only, and anything else), so kernels are generated per level:

* "avx512": AVX-512 F/BW/CD/DQ/VL/VBMI/VNNI on top of "avx2" (Zen 4/5);
* "avx2": x86-64-v3, i.e. AVX2, FMA, BMI1/2, F16C, LZCNT, MOVBE (Zen 3);
* "generic": baseline x86-64 (SSE2), or the host's own baseline elsewhere.

A level is a fixed feature set, not "whatever this CPU has": code compiled
for "avx2" on a Zen 5 machine uses no AVX-512 and runs on a Zen 3 machine, and
the loader checks exactly that set. `LPCC_CPU_ISA` forces a lower level
(testing the AVX2 and generic paths on an AVX-512 machine); compiling for a
level the host lacks is allowed (object code for another machine), running
it is not.
"""

from __future__ import annotations

from typing import Literal

import llvmlite.binding as llvm

from lpcc import config
from lpcc.codegen.llvm import loader
from lpcc.codegen.llvm.loader import CpuFeatureError, host_arch, init_llvm

ISA = Literal["avx512", "avx2", "generic"]
LEVELS: tuple[ISA, ...] = ("avx512", "avx2", "generic")  # best first

_X86_64 = frozenset({"64bit", "cmov", "cx8", "fxsr", "mmx", "sse", "sse2"})
_V2 = _X86_64 | {"cx16", "crc32", "popcnt", "sahf", "sse3", "ssse3", "sse4.1", "sse4.2"}
_V3 = _V2 | {"avx", "avx2", "bmi", "bmi2", "f16c", "fma", "lzcnt", "movbe", "xsave"}
_AVX512 = _V3 | {
    "avx512f",
    "avx512bw",
    "avx512cd",
    "avx512dq",
    "avx512vl",
    "avx512vbmi",
    "avx512vnni",
}
_X86_FEATURES: dict[str, frozenset[str]] = {
    "avx512": _AVX512,
    "avx2": _V3,
    "generic": _X86_64,
}
# The CPU whose tuning code for a level gets when the host lacks that level.
_NAMED_CPU = {"avx512": "znver5", "avx2": "znver3", "generic": "x86-64"}
# Tuning on top of the features: full-width zmm vectors (Zen 5 has a 512-bit
# datapath; LLVM's default for AVX-512 targets prefers 256 bits).
_TUNING = {"avx512": ("-prefer-256-bit",)}


def _is_x86() -> bool:
    return host_arch() in ("x86_64", "amd64")


def _check_level(isa: str) -> None:
    if isa not in LEVELS:
        raise CpuFeatureError(
            f"CPU ISA level {isa!r} does not exist; use one of {', '.join(LEVELS)}"
        )


def host_features() -> frozenset[str]:
    """The CPU features of this machine (as LLVM names them)."""
    return loader.host_features()


def isa_features(isa: str) -> frozenset[str]:
    """The CPU features code generated for level `isa` needs, beyond its arch.

    Empty for "generic": its x86-64 baseline (SSE2) comes with the
    architecture, which the loader checks separately.
    """
    _check_level(isa)
    return frozenset() if isa == "generic" else _X86_FEATURES[isa]


def host_has(isa: str) -> bool:
    """Whether this machine can run code generated for level `isa`."""
    _check_level(isa)
    if isa == "generic":
        return True
    return _is_x86() and isa_features(isa) <= host_features()


def host_isa() -> ISA:
    """The best level this machine can run."""
    return next(isa for isa in LEVELS if host_has(isa))


def selected_isa(*, to_run: bool = True) -> ISA:
    """The level the `cpu_isa` knob selects ("auto": the host's best).

    With `to_run`, a forced level the host lacks is an error (compiling
    object code for it, `to_run=False`, is allowed).
    """
    choice = config.get("cpu_isa")
    if choice == "auto":
        return host_isa()
    _check_level(choice)
    if to_run and not host_has(choice):
        missing = sorted(isa_features(choice) - host_features())
        raise CpuFeatureError(
            f"LPCC_CPU_ISA={choice} asks for CPU code this machine cannot run "
            f"(it lacks {', '.join(missing) or 'the x86-64 architecture'}); "
            f"unset it or set it to {host_isa()} or a lower level"
        )
    return choice


def target_machine(
    isa: str, opt: int = 3, jit: bool = True
) -> llvm.targets.TargetMachine:
    """An LLVM TargetMachine emitting code that uses exactly `isa`'s features.

    The CPU name (which sets scheduling and tuning) is the host's when the
    host has the level, else a CPU of that level; every other feature LLVM
    knows is switched off, so a Zen 5 host compiling "avx2" emits no AVX-512.
    Code is position independent, so it links into MCJIT or a shared library.
    """
    _check_level(isa)
    init_llvm()
    if isa != "generic" and not _is_x86():
        raise CpuFeatureError(
            f"CPU ISA level {isa!r} is x86-64 only and this machine is "
            f"{host_arch()}; use LPCC_CPU_ISA=generic"
        )
    triple = llvm.get_process_triple()
    target = llvm.Target.from_triple(triple)
    if not _is_x86():  # "generic" on another architecture: its baseline
        cpu, features = "generic", ""
    else:
        cpu = llvm.get_host_cpu_name() if host_has(isa) else _NAMED_CPU[isa]
        wanted = _X86_FEATURES[isa]
        try:
            known = set(llvm.get_host_cpu_features())
        except RuntimeError:
            known = set()
        flags = [f"-{name}" for name in sorted(known - wanted)]
        flags += [f"+{name}" for name in sorted(wanted)]
        flags += _TUNING.get(isa, ())
        features = ",".join(flags)
    return target.create_target_machine(
        cpu=cpu, features=features, opt=opt, jit=jit, reloc="pic"
    )
