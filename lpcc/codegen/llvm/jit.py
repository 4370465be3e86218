"""Compile LLVM IR text to optimized native object code for one ISA level.

There is one path from IR to running code: optimize at O3 with LLVM's new
pass manager (loop and SLP vectorizers on), emit an object file for the
level's target machine, and link that object with `loader.load_object`.
"Just in time" and "ahead of time" differ only in whether the bytes are
saved in between, so the code a saved program runs is the code its tests ran.
"""

from __future__ import annotations

import llvmlite.binding as llvm

from lpcc.codegen.llvm import isa as isa_mod
from lpcc.codegen.llvm.loader import CompiledObject, Library, load_object
from lpcc.errors import IRError


def _optimized(llvm_ir: str, tm: llvm.targets.TargetMachine, opt: int) -> object:
    """Parse, verify and optimize `llvm_ir` for `tm` (a ModuleRef)."""
    try:
        mod = llvm.parse_assembly(llvm_ir)
    except RuntimeError as err:
        raise IRError(f"CPU codegen: the LLVM IR does not parse: {err}") from None
    try:
        mod.verify()
    except RuntimeError as err:
        raise IRError(f"CPU codegen: the LLVM IR does not verify: {err}") from None
    mod.triple = tm.triple
    mod.data_layout = str(tm.target_data)
    if opt > 0:
        pto = llvm.PipelineTuningOptions(speed_level=opt)
        pto.loop_vectorization = True
        pto.slp_vectorization = True
        pto.loop_unrolling = True
        pb = llvm.PassBuilder(tm, pto)
        pb.getModulePassManager().run(mod, pb)
    return mod


def _resolve(isa: str | None) -> str:
    return isa_mod.selected_isa(to_run=False) if isa is None else isa


def compile_ir(llvm_ir: str, isa: str | None = None, opt: int = 3) -> CompiledObject:
    """Object code for `llvm_ir` on level `isa` (default: the `cpu_isa` knob).

    Any level compiles on any x86-64 host; only running needs the features.
    """
    isa = _resolve(isa)
    tm = isa_mod.target_machine(isa, opt=opt)
    mod = _optimized(llvm_ir, tm, opt)
    symbols = tuple(
        fn.name
        for fn in mod.functions
        if not fn.is_declaration and fn.linkage == llvm.Linkage.external
    )
    return CompiledObject(
        object_code=bytes(tm.emit_object(mod)),
        isa=isa,
        features=isa_mod.isa_features(isa),
        symbols=symbols,
        triple=tm.triple,
    )


def asm(llvm_ir: str, isa: str | None = None, opt: int = 3) -> str:
    """The assembly `compile_ir` emits for the same input (for dumps and checks)."""
    isa = _resolve(isa)
    tm = isa_mod.target_machine(isa, opt=opt)
    return tm.emit_assembly(_optimized(llvm_ir, tm, opt))


def jit(llvm_ir: str, isa: str | None = None, opt: int = 3) -> Library:
    """Compile and load in one step, for the level the `cpu_isa` knob selects."""
    if isa is None:
        isa = isa_mod.selected_isa(to_run=True)
    return load_object(compile_ir(llvm_ir, isa, opt))
