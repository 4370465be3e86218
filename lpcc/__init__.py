"""lpcc: a deep-learning compiler for numbers narrower than a byte.

Importing `lpcc` is cheap and needs only NumPy: the compiler parts that use
xDSL, torch or llvmlite are imported where they are used, so a saved program
can run with `lpcc.runtime` alone.
"""

from lpcc import config
from lpcc._version import __version__
from lpcc.api import CompiledModel, compile, load
from lpcc.errors import CodecError, DTypeError, IRError, LayoutError, LpccError
from lpcc.ir.dtypes import (
    DType,
    E8M0Type,
    FloatType,
    IntType,
    dtype,
    float_,
    int_,
    named_dtypes,
    uint_,
)
from lpcc.ir.layout import Layout
from lpcc.jit import jit

config.setup_logs()  # LPCC_LOGS=help lists the knobs; =compile,jit shows logs

__all__ = [
    "CodecError",
    "CompiledModel",
    "DType",
    "DTypeError",
    "E8M0Type",
    "FloatType",
    "IRError",
    "IntType",
    "Layout",
    "LayoutError",
    "LpccError",
    "QuantConfig",
    "__version__",
    "compile",
    "dtype",
    "float_",
    "int_",
    "jit",
    "load",
    "named_dtypes",
    "uint_",
]


def __getattr__(name: str) -> object:
    if name == "QuantConfig":  # numpy-only, but loaded on first use
        from lpcc.quant import QuantConfig

        return QuantConfig
    raise AttributeError(f"module 'lpcc' has no attribute {name!r}")
