"""The lp dialect (xDSL): element types, layouts, graph-level ops, and text I/O.

`context()` makes an xDSL context that reads lp IR (with the builtin and func
dialects around it); `parse_module` and `print_module` are the text round
trip that `lpcc opt` and the tests use. Errors become `lpcc.IRError` with the
location xDSL reports.
"""

from __future__ import annotations

from io import StringIO

from xdsl.context import Context
from xdsl.dialects import arith, builtin, func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Dialect
from xdsl.parser import Parser
from xdsl.printer import Printer
from xdsl.utils.exceptions import ParseError, VerifyException

from lpcc.errors import IRError
from lpcc.ir.dialect.fused import FUSED_OPS
from lpcc.ir.dialect.lowp import LOWP_OPS
from lpcc.ir.dialect.ops import *  # noqa: F403
from lpcc.ir.dialect.ops import LP_OPS
from lpcc.ir.dialect.types import (
    LayoutAttr,
    LpE8M0Type,
    LpFloatType,
    LpIntType,
    LpUIntType,
    layout_of,
    tensor_type,
    to_attr,
    to_dtype,
)

LP = Dialect(
    "lp",
    [*LP_OPS, *LOWP_OPS, *FUSED_OPS],
    [LpIntType, LpUIntType, LpFloatType, LpE8M0Type, LayoutAttr],
)


def context() -> Context:
    """An xDSL context with the builtin, func, arith and lp dialects."""
    ctx = Context()
    for dialect in (builtin.Builtin, func.Func, arith.Arith, LP):
        ctx.load_dialect(dialect)
    return ctx


def parse_module(text: str, name: str = "<input>", verify: bool = True) -> ModuleOp:
    """Parse lp IR text into a module (verified unless `verify=False`)."""
    try:
        module = Parser(context(), text, name).parse_module()
    except ParseError as err:
        raise IRError(f"cannot parse {name}:\n{err}") from None
    except VerifyException as err:  # an attribute that cannot exist
        raise IRError(f"cannot parse {name}: {err}") from None
    if verify:
        verify_module(module, name)
    return module


def verify_module(module: ModuleOp, name: str = "<module>") -> None:
    """Run every verifier; raise IRError naming the failing op."""
    try:
        module.verify()
    except VerifyException as err:
        raise IRError(f"{name} does not verify: {err}") from None


def print_module(module: ModuleOp) -> str:
    """The custom-format text of `module`; parses back to an equal module."""
    out = StringIO()
    Printer(stream=out).print_op(module)
    return out.getvalue() + "\n"


__all__ = [
    "LP",
    "LayoutAttr",
    "LpE8M0Type",
    "LpFloatType",
    "LpIntType",
    "LpUIntType",
    "context",
    "layout_of",
    "parse_module",
    "print_module",
    "tensor_type",
    "to_attr",
    "to_dtype",
    "verify_module",
]
