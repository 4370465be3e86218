"""Symbolic tensor sizes: the dynamic dimensions of a program.

A dimension that `torch.export` leaves dynamic is a `?` in the IR's tensor
type; its value is an integer expression over named symbols ("s0",
"2*s0 + 1", "(s0//2)", "Max(1, s0)"), the text SymPy prints for torch's
`SymInt`s. A shape is a tuple whose entries are ints or such expressions.

The IR keeps the expressions in one place: an op whose result type has `?`
dimensions carries `lp.dims = "2,s0,4"` (one entry per dimension), and a
function argument carries the same attribute in its `arg_attrs`. The
runtime binds the symbols from the shapes of the inputs of a call and
evaluates every other size with `evaluate`; this module is pure Python, so
the runtime can use it without the compiler.
"""

from __future__ import annotations

import ast
import functools
import operator
from collections.abc import Mapping, Sequence

from lpcc.errors import LpccError

Dim = int | str
DIMS_ATTR = "lp.dims"
_LIMIT = 1 << 62  # no tensor has more elements; stops 2**2**2**99 early

_BINOPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_CALLS = {
    "Max": max,
    "Min": min,
    "FloorDiv": operator.floordiv,
    "Mod": operator.mod,
    "CeilDiv": lambda a, b: -(-a // b),
}


class ShapeError(LpccError, ValueError):
    """A dynamic size that is malformed, unbound or inconsistent."""


@functools.lru_cache(maxsize=4096)
def _check(expr: str) -> ast.expr:
    """Parse and vet an expression once (trees are only read, never changed)."""
    try:
        tree = ast.parse(expr.strip(), mode="eval").body
    except SyntaxError:
        raise ShapeError(f"size expression {expr!r} does not parse") from None
    for node in ast.walk(tree):
        ok = isinstance(
            node,
            ast.BinOp
            | ast.UnaryOp
            | ast.USub
            | ast.UAdd
            | ast.Name
            | ast.Load
            | ast.Constant
            | ast.Call
            | ast.operator,
        )
        if isinstance(node, ast.BinOp) and type(node.op) not in _BINOPS:
            ok = False
        if isinstance(node, ast.Constant) and type(node.value) is not int:
            ok = False
        if isinstance(node, ast.Call) and (
            not isinstance(node.func, ast.Name) or node.func.id not in _CALLS
        ):
            ok = False
        if not ok:
            raise ShapeError(
                f"size expression {expr!r}: only integers, symbols, + - * // % **"
                f" and {', '.join(_CALLS)} are allowed"
            )
    return tree


def symbols(expr: Dim) -> set[str]:
    """The symbol names an expression mentions (none for an int)."""
    if isinstance(expr, int):
        return set()
    return {
        n.id
        for n in ast.walk(_check(expr))
        if isinstance(n, ast.Name) and n.id not in _CALLS
    }


def evaluate(expr: Dim, env: Mapping[str, int]) -> int:
    """The value of a size under the symbol bindings `env`."""
    if isinstance(expr, int):
        return expr

    def ev(node: ast.expr) -> int:
        if isinstance(node, ast.Constant):
            return int(node.value)
        if isinstance(node, ast.Name):
            if node.id not in env:
                raise ShapeError(
                    f"size {expr!r} uses symbol {node.id!r}, which no input binds"
                )
            return int(env[node.id])
        if isinstance(node, ast.UnaryOp):
            v = ev(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp):
            left, right = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Pow) and (right < 0 or right > 64):
                raise ShapeError(f"size {expr!r}: exponent {right} out of range")
            value = int(_BINOPS[type(node.op)](left, right))
            if abs(value) > _LIMIT:
                raise ShapeError(f"size {expr!r} evaluates beyond 2**62")
            return value
        assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        return int(_CALLS[node.func.id](*(ev(a) for a in node.args)))

    return ev(_check(expr))


def dim_mul(a: Dim, b: Dim) -> Dim:
    """a * b as a size: an int when both are, else an expression."""
    if isinstance(a, int) and isinstance(b, int):
        return a * b
    if a == 0 or b == 0:
        return 0
    if a == 1:
        return b
    if b == 1:
        return a
    return f"({a})*({b})"


def dim_prod(dims: Sequence[Dim]) -> Dim:
    """The product of sizes (an int when all are static)."""
    out: Dim = 1
    for d in dims:
        out = dim_mul(out, d)
    return out


def dim_ceil_div(a: Dim, b: Dim) -> Dim:
    """ceil(a / b) as a size."""
    if isinstance(a, int) and isinstance(b, int):
        return -(-a // b)
    return f"CeilDiv({a}, {b})"


def dim_min(a: Dim, b: Dim) -> Dim:
    if isinstance(a, int) and isinstance(b, int):
        return min(a, b)
    return f"Min({a}, {b})"


def dim_max(a: Dim, b: Dim) -> Dim:
    if isinstance(a, int) and isinstance(b, int):
        return max(a, b)
    return f"Max({a}, {b})"


def evaluate_shape(shape: Sequence[Dim], env: Mapping[str, int]) -> tuple[int, ...]:
    return tuple(evaluate(d, env) for d in shape)


def parse_dims(text: str) -> tuple[Dim, ...]:
    """`"2,s0,4"` -> (2, "s0", 4); the text form of `lp.dims`."""
    if not text.strip():
        return ()
    out: list[Dim] = []
    for part in _split_top(text):
        part = part.strip()
        try:
            out.append(int(part))
        except ValueError:
            _check(part)
            out.append(part)
    return tuple(out)


def format_dims(shape: Sequence[Dim]) -> str:
    return ",".join(str(d).replace(" ", "") for d in shape)


def _split_top(text: str) -> list[str]:
    """Split on commas outside parentheses (Max(1, s0) is one entry)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def bind(
    shape: Sequence[Dim],
    actual: Sequence[int],
    env: dict[str, int],
    what: str,
) -> None:
    """Bind plain symbols of `shape` from `actual` into `env`; check the rest.

    Raises ShapeError naming `what` when the rank or a size disagrees.
    """
    if len(shape) != len(actual):
        raise ShapeError(
            f"{what}: expected rank {len(shape)} (shape {show(shape)}), "
            f"got shape {list(actual)}"
        )
    for d, n in zip(shape, actual, strict=True):
        if isinstance(d, str) and d.isidentifier() and d not in env:
            env[d] = int(n)
    for i, (d, n) in enumerate(zip(shape, actual, strict=True)):
        try:
            want = evaluate(d, env)
        except ShapeError:
            continue  # compound size over unbound symbols: checked later
        if want != n:
            raise ShapeError(
                f"{what}: dimension {i} is {n}, expected {want} "
                f"(shape {show(shape)}, got {list(actual)})"
            )


def show(shape: Sequence[Dim]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"
