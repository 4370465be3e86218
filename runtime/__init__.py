"""The runtime (imported as `lpcc.runtime`): the VM that runs saved programs.

It must import without the compiler, torch or xDSL: a saved program runs with
NumPy plus llvmlite (CPU) or CuPy (GPU) alone. Filled by the runtime issue.
"""
