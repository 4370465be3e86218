"""lpcc: a deep-learning compiler for numbers narrower than a byte.

Importing `lpcc` is cheap and needs only NumPy: the compiler parts that use
xDSL, torch or llvmlite are imported where they are used, so a saved program
can run with `lpcc.runtime` alone.
"""

from lpcc._version import __version__
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

__all__ = [
    "CodecError",
    "DType",
    "DTypeError",
    "E8M0Type",
    "FloatType",
    "IRError",
    "IntType",
    "Layout",
    "LayoutError",
    "LpccError",
    "__version__",
    "dtype",
    "float_",
    "int_",
    "named_dtypes",
    "uint_",
]
