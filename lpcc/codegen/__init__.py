"""Code generation: `codegen.llvm` (CPU, llvmlite) and `codegen.cuda` (CuPy).

Nothing here yet; the CPU and CUDA backend issues fill it.
"""
