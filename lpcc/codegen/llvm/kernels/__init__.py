"""CPU kernel generators, one module per family; each registers on import.

See `lpcc.codegen.llvm.kernel` for the contract (requests, the calling
convention, repacked constants).
"""
