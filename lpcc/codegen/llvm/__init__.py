"""The CPU backend (llvmlite): ISA levels, compiling to object code, loading it.

Submodules, imported where used so that loading compiled kernels does not pull
in the compiler:

* `isa`: the instruction-set levels ("avx512", "avx2", "generic") and the
  LLVM target machine for each;
* `jit`: LLVM IR text -> optimized object code for one level (`compile_ir`);
* `loader`: object code -> callable functions, after checking the CPU has
  the features the code needs (only llvmlite and ctypes; the runtime uses it);
* `pool`: persistent worker threads that split a kernel's rows.
"""
