"""IR surgery shared by the passes: replace one op by another, drop dead ops.

Every rewrite of a pass ends the same way: the new op goes where the old one
was, takes over its uses, its SSA name and the discardable attributes later
passes and dumps read (`lp.name`, `lp.kernel`), and the old op is erased.
Doing it in one place keeps those tags from being lost by one pass and not
another.
"""

from __future__ import annotations

from collections.abc import Iterable

from xdsl.ir import Operation
from xdsl.rewriter import Rewriter

from lpcc.errors import IRError
from lpcc.ir.dialect.ops import KERNEL_ATTR, NAME_ATTR

__all__ = ["erase_if_unused", "replace_op"]


def replace_op(
    old: Operation, new: Operation, keep: Iterable[str] = (NAME_ATTR, KERNEL_ATTR)
) -> None:
    """Put `new` in place of `old` (which must sit in a block) and erase `old`.

    `new` is inserted just before `old`; each attribute named in `keep` that
    `old` has and `new` does not is copied; a result of `new` without a name
    hint takes its counterpart's; every use of `old`'s results moves to
    `new`'s. Pass `keep=()` when the new op must not inherit tags.
    """
    block = old.parent_block()
    if block is None:
        raise IRError(f"replace_op: {old.name} is not in a block; nothing to replace")
    if len(old.results) != len(new.results):
        raise IRError(
            f"replace_op: {old.name} has {len(old.results)} result(s) but its "
            f"replacement {new.name} has {len(new.results)}; they must match"
        )
    block.insert_op_before(new, old)
    for key in keep:
        if key in old.attributes and key not in new.attributes:
            new.attributes[key] = old.attributes[key]
    for was, now in zip(old.results, new.results, strict=True):
        if now.name_hint is None:
            now.name_hint = was.name_hint
        was.replace_all_uses_with(now)
    Rewriter.erase_op(old)


def erase_if_unused(op: Operation) -> bool:
    """Erase `op` if none of its results is read; return whether it was."""
    if any(result.uses for result in op.results):
        return False
    Rewriter.erase_op(op)
    return True
