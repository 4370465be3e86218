"""The shared op-replacement helpers of the passes (lpcc.passes.rewrite)."""

from __future__ import annotations

import numpy as np
import pytest
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, StringAttr

from lpcc.errors import IRError
from lpcc.ir import interp
from lpcc.ir.dialect import ops as lp
from lpcc.ir.dialect import parse_module, verify_module
from lpcc.passes.rewrite import erase_if_unused, replace_op

TEXT = """
func.func @main(%x: tensor<2x3xf32>) -> tensor<2x3xf32> {
  %c = lp.constant {lp.name = "unused"} splat 2.0 : tensor<1x1xf32>
  %y = lp.neg %x {lp.name = "w", lp.kernel = "lut", lp.x = "o"} : tensor<2x3xf32>
  %z = lp.exp %y : tensor<2x3xf32>
  func.return %z : tensor<2x3xf32>
}
"""


def body(module: ModuleOp) -> list:
    fn = next(op for op in module.ops if isinstance(op, func.FuncOp))
    return list(fn.body.block.ops)


def neg_of(module: ModuleOp) -> lp.NegOp:
    return next(op for op in body(module) if isinstance(op, lp.NegOp))


def test_replace_op_moves_uses_name_and_tags() -> None:
    module = parse_module(TEXT)
    old = neg_of(module)
    new = lp.AbsOp(old.operands[0])
    replace_op(old, new)
    verify_module(module)
    ops = body(module)
    assert old not in ops and old.parent is None
    assert ops.index(new) == 1  # where the old op stood
    assert new.result.name_hint == "y"
    assert [u.operation.name for u in new.result.uses] == ["lp.exp"]
    assert new.attributes["lp.name"] == StringAttr("w")
    assert new.attributes["lp.kernel"] == StringAttr("lut")
    assert "lp.x" not in new.attributes  # only the kept keys travel
    x = np.array([[-1.0, 2.0, -3.0], [0.5, -0.25, 4.0]], np.float32)
    (got,) = interp.run_module(module, [x])
    np.testing.assert_array_equal(got, np.exp(np.abs(x)))


def test_replace_op_keeps_what_the_new_op_set() -> None:
    module = parse_module(TEXT)
    old = neg_of(module)
    new = lp.AbsOp(old.operands[0])
    new.attributes["lp.kernel"] = StringAttr("dense")
    new.result.name_hint = "mine"
    replace_op(old, new, keep=("lp.kernel", "lp.x"))
    assert new.attributes["lp.kernel"] == StringAttr("dense")
    assert new.attributes["lp.x"] == StringAttr("o")
    assert "lp.name" not in new.attributes
    assert new.result.name_hint == "mine"


def test_replace_op_keep_nothing() -> None:
    module = parse_module(TEXT)
    old = neg_of(module)
    new = lp.AbsOp(old.operands[0])
    replace_op(old, new, keep=())
    assert not new.attributes


def test_replace_op_rejects_mismatches() -> None:
    module = parse_module(TEXT)
    old = neg_of(module)
    with pytest.raises(IRError, match=r"lp\.neg has 1 result\(s\).*func\.return has 0"):
        replace_op(old, func.ReturnOp())
    loose = lp.AbsOp(old.operands[0])
    with pytest.raises(IRError, match=r"lp\.abs is not in a block"):
        replace_op(loose, lp.AbsOp(old.operands[0]))
    assert old.parent is not None  # nothing was changed


def test_erase_if_unused() -> None:
    module = parse_module(TEXT)
    const, neg = body(module)[:2]
    assert not erase_if_unused(neg)
    assert neg.parent is not None
    assert erase_if_unused(const)
    assert const.parent is None and const not in body(module)
    verify_module(module)
