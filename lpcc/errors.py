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


class CompileError(LpccError, ValueError):
    """A model, option or input that `lpcc.compile` (or a call) cannot take."""


DUMP_HINT = (
    "LPCC_DUMP_IR=<dir> (or lpcc.compile(..., dump_ir=<dir>)) writes the IR "
    "after every stage and a repro.py"
)


def error_message(
    what: str,
    *,
    why: str,
    hint: str,
    stage: str | None = None,
    module: str | None = None,
    source: tuple[str, int] | None = None,
    function: str | None = None,
    code: str | None = None,
    explanation: str | None = None,
    debug: bool = True,
) -> str:
    """The one layout of lpcc's compile errors (what, where, why, what to try).

    Every compile error reads the same way, so a user learns it once:

        lpcc <stage>: <what failed>
          in module  <module path (class)>
          at         <file>:<line>, in <function>
            <line> | <the source line>
        Reason: <why>
        Explanation: <background, optional>
        Hint: <an option or an escape hatch>
        Debug: LPCC_DUMP_IR=<dir> ...

    `source` is (file, line); the line's text is read from the file when it
    can be (else `code`). Lines without a value are left out.
    """
    import linecache

    lines = [f"lpcc {stage}: {what}" if stage else f"lpcc: {what}"]
    if module is not None:
        lines.append(f"  in module  {module}")
    if source is not None:
        file, line = source
        at = f"  at         {file}:{line}"
        lines.append(f"{at}, in {function}" if function else at)
        text = linecache.getline(file, line).rstrip() or (code or "")
        if text:
            lines.append(f"    {line:>5} | {text}")
    lines.append(f"Reason: {why}")
    if explanation:
        lines.append(f"Explanation: {explanation}")
    lines.append(f"Hint: {hint}")
    if debug:
        lines.append(f"Debug: {DUMP_HINT}")
    return "\n".join(lines)
