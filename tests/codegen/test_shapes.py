"""`lpcc.codegen.shapes`: the backend-neutral planning both kernel backends call.

Expected values are derived by hand in the comments (row-major strides,
which dims stay adjacent, torch's pool attributes); dynamic sizes are
checked by evaluating the expressions, not by their spelling.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from xdsl.ir import Block, SSAValue

from lpcc.codegen import shapes as sh
from lpcc.ir.dialect import ops as lp
from lpcc.ir.dialect import tensor_type
from lpcc.ir.dtypes import dtype
from lpcc.ir.symbolic import Dim, evaluate


def _args(*specs: tuple[str, Sequence[int]]) -> list[SSAValue]:
    """Block arguments of the given (dtype, shape); -1 is a dynamic size."""
    block = Block(arg_types=[tensor_type(dtype(t), s) for t, s in specs])
    return list(block.args)


def _ev(dims: Sequence[Dim], env: dict[str, int]) -> list[int]:
    return [evaluate(d, env) for d in dims]


def test_contiguous() -> None:
    assert sh.contiguous([2, 3, 4]) == [12, 4, 1]
    assert sh.contiguous([7]) == [1]
    assert sh.contiguous([]) == []
    # [2, s0, 4]: strides [s0 * 4, 4, 1]
    st = sh.contiguous([2, "s0", 4])
    assert st[1:] == [4, 1]
    assert _ev(st, {"s0": 5}) == [20, 4, 1]


def test_split_at() -> None:
    assert sh.split_at([2, 3, 4, 5], 1) == (2, 3, 20)
    assert sh.split_at([2, 3, 4, 5], 0) == (1, 2, 60)
    assert sh.split_at([2, 3, 4, 5], 3) == (24, 5, 1)
    outer, n, inner = sh.split_at(["s0", 3, 4], 1)
    assert (evaluate(outer, {"s0": 6}), n, inner) == (6, 3, 4)


def test_types() -> None:
    assert sh.is_f32(dtype("f32"))
    assert not sh.is_f32(dtype("f16"))  # held in f32 values, but not f32
    assert not sh.is_f32(dtype("bf16"))
    assert not sh.is_f32(dtype("int32"))
    # value-domain buffers: int4 in int8, f16 in f32, uint1 as bool
    assert [sh.esize(dtype(t)) for t in ("int4", "f16", "int64", "uint1")] == [
        1,
        4,
        8,
        1,
    ]
    assert sh.static(1, 2, 3) and sh.static()
    assert not sh.static(1, "s0")


def test_merge_dims_contiguous_collapses_to_one() -> None:
    assert sh.merge_dims([2, 3, 4], [12, 4, 1]) == ([24], [[1]])


def test_merge_dims_transposed_keeps_all() -> None:
    # out of permute [2, 1, 0] of a [2, 3, 4] input: no two dims adjacent
    assert sh.merge_dims([4, 3, 2], [1, 4, 12]) == ([4, 3, 2], [[1, 4, 12]])


def test_merge_dims_drops_size_one() -> None:
    # [2, 1, 3] strides [3, 3, 1] -> [2, 3] strides [3, 1] -> adjacent: [6] [1]
    assert sh.merge_dims([2, 1, 3], [3, 3, 1]) == ([6], [[1]])
    assert sh.merge_dims([1, 1], [1, 1]) == ([], [[]])


def test_merge_dims_broadcast() -> None:
    # repeated rows [5, 4, 3] strides [0, 0, 1]: dims 0 and 1 both stride 0
    # (0 == 0 * 4) merge; dim 2 (stride 1) cannot join a stride-0 dim
    assert sh.merge_dims([5, 4, 3], [0, 0, 1]) == ([20, 3], [[0, 1]])
    assert sh.merge_dims([5, 4], [0, 1]) == ([5, 4], [[0, 1]])


def test_merge_dims_every_list_must_agree() -> None:
    # source contiguous, destination stride of dim 0 dynamic: dims 1, 2 merge
    # in both lists, dim 0 stays apart
    sizes, (src, dst) = sh.merge_dims([2, 3, 4], [12, 4, 1], ["x", 4, 1])
    assert (sizes, src, dst) == ([2, 12], [12, 1], ["x", 1])
    # a dynamic size blocks a merge
    assert sh.merge_dims([2, "s0"], ["s0", 1]) == ([2, "s0"], [["s0", 1]])


def test_broadcast_strides() -> None:
    # [3, 1] -> [2, 3, 4]: new leading dim 0, kept dim stride 1, size-1 dim 0
    assert sh.broadcast_strides([3, 1], [2, 3, 4]) == [0, 1, 0]
    # equal dynamic sizes keep their stride
    assert sh.broadcast_strides(["s0", 4], [2, "s0", 4]) == [0, 4, 1]
    # a dynamic source size against another size may be 1 at run time
    assert sh.broadcast_strides(["s0", 4], ["s1", 4]) == [sh.MaybeOne("s0", 4), 1]


def test_slice_plan_static() -> None:
    (x,) = _args(("f32", [6, 10]))
    op = lp.SliceOp(x, [1, 2], [2, 3], [2, 3])
    plan = sh.slice_plan(op, [6, 10], [2, 3])
    # element (i, j) reads x[1 + 2 i, 2 + 3 j] = x_flat[12 + 20 i + 3 j]
    assert plan.strides == [10, 1]
    assert plan.base == 1 * 10 + 2 * 1
    assert plan.checks == []
    assert plan.note == "slice offsets [1, 2] strides [2, 3]"


def test_slice_plan_dynamic() -> None:
    (x,) = _args(("f32", [-1, 8]))
    op = lp.SliceOp(x, [0, 4], [-1, 2])
    plan = sh.slice_plan(op, ["s0", 8], ["s1", 2])
    assert plan.strides == [8, 1]
    assert plan.base == 4  # strides are static even though dim 0 is not
    assert plan.checks == [0]  # only dim 0's fit needs the run time
    (y,) = _args(("f32", [4, -1]))
    op = lp.SliceOp(y, [1, 0], [2, -1])
    plan = sh.slice_plan(op, [4, "s0"], [2, "s1"])
    assert plan.base is None  # 1 * s0: added up at run time
    assert plan.checks == [1]


def test_gather_strides() -> None:
    # x [4, 5, 6] (strides [30, 6, 1]), gathering dim 1
    assert sh.gather_strides([4, 5, 6], [4, 2, 6], 1) == [30, 0, 1]
    # a size-1 input dim broadcasts against the index (stride 0)
    assert sh.gather_strides([1, 5, 6], [3, 2, 6], 1) == [0, 0, 1]
    # sizes that differ: the interpreter's job
    assert sh.gather_strides([4, 5, 6], [3, 2, 6], 1) is None
    assert sh.gather_strides(["s0", 5], ["s1", 5], 1) is None


def test_index_source() -> None:
    # (float indices never get here: the op's verifier rejects them)
    x, i, empty = _args(("f32", [4, 5]), ("int32", [3]), ("f32", [0, 5]))
    assert sh.index_source(lp.TakeOp(x, i, 1)) == [4, 5]
    assert sh.index_source(lp.TakeOp(empty, i, 0)) is None  # nothing to index
    ig = _args(("int64", [4, 2]))[0]
    assert sh.index_source(lp.GatherOp(x, ig, 1)) == [4, 5]


@pytest.mark.parametrize(
    "shape, perm, want",
    [
        ([2, 3, 4], [0, 1, 2], ([24], [0])),  # identity: one flat copy
        # [2,3,4,5] -> [4,5,2,3]: a transpose of [6, 20]
        ([2, 3, 4, 5], [2, 3, 0, 1], ([6, 20], [1, 0])),
        # size-1 dim dropped; dims 2 and 3 swap, so nothing merges
        ([2, 1, 3, 4], [0, 1, 3, 2], ([2, 3, 4], [0, 2, 1])),
        ([3, 4], [1, 0], ([3, 4], [1, 0])),
    ],
)
def test_collapse_permute(
    shape: list[int], perm: list[int], want: tuple[list[int], list[int]]
) -> None:
    assert sh.collapse_permute(shape, perm) == want


def test_pool_window() -> None:
    (x,) = _args(("f32", [1, 2, 9, 9]))
    mx = lp.MaxPool2dOp(x, [3, 2], [2, 1], [1, 0], [2, 1])
    assert sh.pool_window(mx) == sh.PoolWindow((3, 2), (2, 1), (1, 0), (2, 1), False)
    avg = lp.AvgPool2dOp(x, [2, 2], None, [1, 1], count_include_pad=True)
    # stride defaults to the kernel; avg_pool has no dilation
    assert sh.pool_window(avg) == sh.PoolWindow((2, 2), (2, 2), (1, 1), (1, 1), True)
    avg = lp.AvgPool2dOp(x, [2, 2], [1, 1], count_include_pad=False)
    assert not sh.pool_window(avg).include_pad


def test_binary_kind() -> None:
    assert sh.BINARY_KIND[lp.AddOp] == "add"
    assert sh.BINARY_KIND[lp.PowOp] == "pow"
    assert sorted(sh.BINARY_KIND.values()) == sorted(
        ["add", "sub", "mul", "div", "max", "min", "pow"]
    )
    assert lp.CmpOp not in sh.BINARY_KIND  # compares have their own path


def test_group_type_rules() -> None:
    for t in ("int1", "int4", "uint8", "int8"):
        assert sh.group_weight_ok(dtype(t), xint=True)
    assert not sh.group_weight_ok(dtype("int16"), xint=False)
    assert sh.group_weight_ok(dtype("f4e2m1"), xint=False)
    assert not sh.group_weight_ok(dtype("f4e2m1"), xint=True)  # no int8 x path
    assert not sh.group_weight_ok(dtype("f16"), xint=False)  # wider than 8 bits
    assert sh.group_act_ok(dtype("int8")) and sh.group_act_ok(dtype("f32"))
    assert sh.group_act_ok(dtype("f16"))  # f16 values are held in f32
    for t in ("uint8", "int4", "e8m0"):
        assert not sh.group_act_ok(dtype(t))
