"""CUDA reductions, softmax and log-softmax on the host emulator vs the
interpreter.

Integers, max and min are compared bit for bit (integer sums are exact in 64
bits and saturate as the interpreter's; max/min pick an input). Float sums,
means and softmaxes are reassociated (a thread's strided partial sums, then
a shuffle tree), so they are compared within bounds derived next to each
case (u = 2**-24, the f32 unit roundoff): any order of summing n terms is
within (n - 1) u sum|x| of the exact sum (first order), so two orders are
within 2 n u sum|x| of each other. All kernels of the file are one CUDA
source (`Batch`): one g++ compile for the emulator, one nvcc per arch.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

import lpcc
from lpcc.codegen.cuda.kernel import ARCHS
from lpcc.codegen.cuda.lower import lower_kernel, run_cuda
from lpcc.ir import interp
from lpcc.ir.dialect import ops as lp
from tests.codegen.test_cuda_movement import (
    Batch,
    Case,
    compile_all,
    make_fn,
    rand,
    same,
)

U = 2.0**-24
Tol = Callable[[list[np.ndarray], np.ndarray], np.ndarray]


def close(got: np.ndarray, want: np.ndarray, bound: np.ndarray) -> None:
    """Same dtype/shape, NaN and inf where the interpreter has them, and
    |got - want| <= bound elsewhere."""
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    fin = np.isfinite(want)
    np.testing.assert_array_equal(
        got[~fin & ~np.isnan(want)], want[~fin & ~np.isnan(want)]
    )
    with np.errstate(invalid="ignore"):
        err = np.abs(got.astype(np.float64) - want.astype(np.float64))
    bad = fin & (err > np.broadcast_to(bound, want.shape))
    assert not bad.any(), (
        f"{bad.sum()} elements off by more than the bound; worst {err[bad].max()}"
    )


def sum_tol(dims: tuple[int, ...], keep: bool, mean: bool = False) -> Tol:
    """2 n u sum|x| (two summation orders), / n for a mean, + one rounding."""

    def tol(xs: list[np.ndarray], want: np.ndarray) -> np.ndarray:
        a = np.abs(xs[0].astype(np.float64))
        n = max(int(np.prod([xs[0].shape[d] for d in dims])), 1)
        b = 2 * n * U * a.sum(axis=dims, keepdims=keep)
        if mean:
            b = b / n
        return b + 2 * U * np.abs(want) + 2.0**-149

    return tol


def softmax_tol(dim: int, log: bool) -> Tol:
    """Per side: e = exp(x - m) within 2 ulp (CUDA's expf; NumPy's within 1),
    their sum S within (n + 2) u relative, one division (u): softmax within
    (n + 5) u relative, so 2 (n + 5) u between the two. log_softmax: log S
    absolute error (n + 2) u + one ulp of log (|log S| 2u), then one rounding
    of the difference (u |y|): 2 ((n + 4) u + 2u |log S| + u |y|) between."""

    def tol(xs: list[np.ndarray], want: np.ndarray) -> np.ndarray:
        n = xs[0].shape[dim]
        if not log:
            return 2 * (n + 5) * U * np.abs(want) + 2.0**-126
        x = xs[0].astype(np.float64)
        with np.errstate(all="ignore"):  # the edge rows: NaN and inf
            m = np.max(x, axis=dim, keepdims=True)
            lse = np.log(np.sum(np.exp(x - m), axis=dim, keepdims=True))
        return 2 * ((n + 4) * U + 2 * U * np.abs(lse) + U * np.abs(want))

    return tol


TOL: dict[str, Tol] = {}


def _cases() -> dict[str, Case]:
    c: dict[str, Case] = {}

    def add(name: str, fn, inputs: list[list[np.ndarray]], tol: Tol | None = None):  # type: ignore[no-untyped-def]
        c[name] = Case(fn, inputs)
        if tol is not None:
            TOL[name] = tol

    def red(kind, dt, shp, dims, keep=False, out_dims=None):  # type: ignore[no-untyped-def]
        return make_fn([(dt, shp)], lambda x: kind(x, dims, keep), out_dims)

    # f32 sums: block per row (n = 37 -> 32 threads, 1000 -> 256), merged
    # trailing dims, small rows and leading/middle dims (thread per output)
    for shp, dims, keep in [
        ((5, 37), (1,), False),
        ((3, 1000), (1,), True),
        ((2, 3, 50), (1, 2), False),
        ((4, 7), (1,), False),
        ((6, 5, 4), (0,), False),
        ((3, 4, 5, 6), (1, 3), True),
        ((2, 3, 4), (0, 1, 2), False),  # to a scalar
        ((1, 9, 1), (1,), False),
    ]:
        x = rand("f32", shp, seed=len(shp))
        add(
            f"sum-f32-{shp}-{dims}-{keep}",
            red(lp.ReduceSumOp, "f32", shp, dims, keep),
            [[x]],
            sum_tol(dims, keep),
        )
    add(
        "sum-f32-dynamic-row",
        red(lp.ReduceSumOp, "f32", (4, "s0"), (1,), out_dims=None),
        [[rand("f32", (4, n), seed=n)] for n in (1, 33, 700, 0)],
        sum_tol((1,), False),
    )
    add(
        "sum-f32-dynamic-col",
        red(lp.ReduceSumOp, "f32", ("s0", 5), (0,), out_dims=None),
        [[rand("f32", (n, 5), seed=n)] for n in (1, 40)],
        sum_tol((0,), False),
    )
    for shp, dims, keep in [((3, 100), (1,), False), ((2, 3, 4, 5), (2, 3), True)]:
        add(
            f"mean-f32-{shp}-{dims}",
            red(lp.ReduceMeanOp, "f32", shp, dims, keep),
            [[rand("f32", shp, seed=3)]],
            sum_tol(dims, keep, mean=True),
        )
    # max / min: bit for bit, NaN and inf propagate as NumPy's
    x = rand("f32", (4, 60), seed=5)
    x[1, 7] = np.nan
    x[2, 59] = np.inf
    x[3, :] = -np.inf
    for kind in (lp.ReduceMaxOp, lp.ReduceMinOp):
        tag = kind.name.split("_")[1]
        add(f"{tag}-f32-rows", red(kind, "f32", (4, 60), (1,)), [[x]])
        add(f"{tag}-f32-cols", red(kind, "f32", (4, 60), (0,)), [[x]])
        h = lpcc.dtype("f16").to_values(rand("f32", (3, 40)))  # NaN-free codes
        add(f"{tag}-f16", red(kind, "f16", (3, 40), (1,)), [[h]])
    # integers: exact, saturated to the result type; bool sum is "any"
    for dt, shp, dims in [
        ("int8", (4, 300), (1,)),  # sums saturate at +-127
        ("int8", (3, 5), (1,)),
        ("uint4", (3, 70), (1,)),
        ("int64", (5, 3), (0,)),
        ("int32", (2, 3, 40), (2,)),
        ("uint1", (3, 50), (1,)),
        ("uint1", (3, 5), (0,)),
    ]:
        for kind in (lp.ReduceSumOp, lp.ReduceMaxOp, lp.ReduceMinOp):
            tag = kind.name.split("_")[1]
            add(f"{tag}-{dt}-{shp}-{dims}", red(kind, dt, shp, dims), [[rand(dt, shp)]])
    big = np.full((2, 40), 2**62, np.int64)  # int64 sums wrap, as NumPy's
    add("sum-int64-wraps", red(lp.ReduceSumOp, "int64", (2, 40), (1,)), [[big]])

    # softmax / log-softmax: block per row, small rows and strided columns
    for op in (lp.SoftmaxOp, lp.LogSoftmaxOp):
        tag = op.name.split(".")[1]
        log = op is lp.LogSoftmaxOp
        for shp, dim in [((3, 100), 1), ((5, 10), 1), ((4, 6, 5), 1), ((7, 3), 0)]:
            x = rand("f32", shp, seed=7) / 30  # spread ~ +-10: no underflow
            fn = make_fn([("f32", shp)], lambda v, op=op, d=dim: op(v, d))
            add(f"{tag}-{shp}-dim{dim}", fn, [[x]], softmax_tol(dim, log))
        x = rand("f32", (5, 77), seed=9) / 30
        x[1, 3] = np.nan  # a NaN row is NaN
        x[2, :] = -np.inf  # all -inf: 0 / 0
        x[3, 5] = np.inf  # inf / inf at the inf, 0 elsewhere
        fn = make_fn(
            [("f32", ("s0", 77))], lambda v, op=op: op(v, 1), out_dims=["s0", 77]
        )
        add(
            f"{tag}-dynamic-edge",
            fn,
            [[x], [x[:1]], [x[4:]]],
            softmax_tol(1, log),
        )
    return c


CASES = _cases()


@pytest.fixture(scope="module")
def batch() -> Batch:
    return Batch(CASES, "rd")


@pytest.mark.parametrize("name", list(CASES))
def test_matches_interpreter(batch: Batch, name: str) -> None:
    for xs in CASES[name].inputs:
        (want,) = interp.run_function(CASES[name].fn, xs)
        (got,) = batch.run(name, xs)
        if name in TOL:
            close(got, want, TOL[name](xs, want))
        else:
            same(got, want)


@pytest.mark.parametrize("arch", ARCHS)
def test_nvcc_compiles_every_kernel(batch: Batch, arch: str) -> None:
    compile_all(batch.source, arch)


def test_schedules(batch: Batch) -> None:
    """Trailing reduced dims of a long row: a block per row sized by n;
    short rows and leading dims: a thread per output."""
    k = batch.kernels
    assert "block of 32 per row of 37" in k["sum-f32-(5, 37)-(1,)-False"].note
    assert "block of 256 per row of 1000" in k["sum-f32-(3, 1000)-(1,)-True"].note
    assert "block of 64 per row of 150" in k["sum-f32-(2, 3, 50)-(1, 2)-False"].note
    assert "thread per output" in k["sum-f32-(4, 7)-(1,)-False"].note
    assert "2 reduced group(s)" in k["sum-f32-(3, 4, 5, 6)-(1, 3)-True"].note
    assert "block of 32 per row" in k["softmax-dynamic-edge"].note
    assert "block of 256 per row of s0" in k["sum-f32-dynamic-row"].note
    assert "thread per column" in k["log_softmax-(4, 6, 5)-dim1"].note


def test_unhandled_types_return_none() -> None:
    """Results that need a narrow float's rounding, and uint64 sums, stay
    with the interpreter."""
    for fn in (
        make_fn([("f16", (3, 40))], lambda x: lp.ReduceSumOp(x, (1,))),
        make_fn([("bf16", (3, 40))], lambda x: lp.ReduceMeanOp(x, (1,))),
        make_fn([("f16", (3, 40))], lambda x: lp.SoftmaxOp(x, 1)),
        make_fn([("uint64", (3, 4))], lambda x: lp.ReduceSumOp(x, (1,))),
        make_fn([("f32", (3, 0))], lambda x: lp.ReduceMaxOp(x, (1,))),
    ):
        assert lower_kernel(fn) is None


def test_run_cuda_softmax_rows() -> None:
    """Through `run_cuda` itself: each row of a softmax sums to 1 (within
    the bound of its n = 300 terms) and matches the interpreter."""
    fn = make_fn([("f32", (2, 300))], lambda x: lp.SoftmaxOp(x, 1))
    x = rand("f32", (2, 300), seed=11) / 30
    got = run_cuda(fn, [x], device="emulate")
    assert got is not None
    (want,) = interp.run_function(fn, [x])
    close(got[0], want, softmax_tol(1, False)([x], want))
    np.testing.assert_allclose(got[0].sum(axis=1), 1.0, rtol=0, atol=2 * 310 * U)
    assert lpcc.dtype("f32").value_dtype == got[0].dtype
