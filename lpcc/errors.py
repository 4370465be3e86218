"""The exceptions lpcc raises.

Every lpcc error derives from `LpccError`, so `except lpcc.LpccError` catches
them all; each also derives from the builtin exception a Python user would
expect (`ValueError` for bad values, `TypeError` for bad types), so generic
handlers keep working. Messages name the parameter or op, the stage, and what
to do about it.
"""

from __future__ import annotations


class LpccError(Exception):
    """Base class of every error lpcc raises on purpose."""


class DTypeError(LpccError, ValueError):
    """An element-type name that does not parse, or a type that cannot exist."""


class CodecError(LpccError, ValueError):
    """Bad input to an element type's encode/decode or pack/unpack."""


class LayoutError(LpccError, ValueError):
    """A layout that cannot be built, or an operation the algebra forbids."""


class IRError(LpccError, ValueError):
    """IR text that does not parse or verify, or a pipeline that cannot run."""
