"""CUDA conv2d (direct) and pooling on the host emulator vs the interpreter.

max_pool2d is compared bit for bit (it picks an input). conv2d and
avg_pool2d sum in another order than the interpreter (its im2col matmul,
NumPy's window sums), so they are compared within the derived bound: two
orders of summing K products (each exact in the fma, or rounded once: u =
2**-24) are within 2 (K + 1) u sum|x w| of each other, plus a rounding of
the bias add (u |y|) on each side; avg adds the division (u |y| each side)
after dividing the bound of its k*k-term sum by the count. All kernels of
the file are one CUDA source (`Batch`), as in test_cuda_movement.py.
"""

from __future__ import annotations

import numpy as np
import pytest

import lpcc
from lpcc.codegen.cuda.kernel import ARCHS
from lpcc.codegen.cuda.lower import lower_kernel
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
from tests.codegen.test_cuda_reduce import close

U = 2.0**-24

# name -> (input shape, weight shape, bias?, stride, padding, dilation, groups)
CONVS = {
    "smallcnn-conv1": ((1, 3, 9, 7), (8, 3, 3, 3), True, (1, 1), (1, 1), (1, 1), 1),
    "smallcnn-conv2": ((2, 8, 5, 4), (12, 4, 3, 3), True, (2, 2), (2, 2), (2, 2), 2),
    "pointwise": ((2, 5, 3, 3), (4, 5, 1, 1), False, (1, 1), (0, 0), (1, 1), 1),
    "depthwise-5x3": ((1, 4, 8, 9), (4, 1, 5, 3), True, (2, 1), (2, 1), (1, 1), 4),
}
# name -> (op, input shape, kernel, stride, padding, ceil_mode, extra)
POOLS = {
    "max-2x2-ceil": (lp.MaxPool2dOp, (2, 3, 9, 7), (2, 2), (2, 2), (0, 0), True, {}),
    "max-3x3-pad-dil": (
        lp.MaxPool2dOp,
        (1, 2, 11, 8),
        (3, 3),
        (2, 1),
        (1, 1),
        False,
        {"dilation": (2, 1)},
    ),
    "avg-3x3-pad-incl": (
        lp.AvgPool2dOp,
        (1, 3, 7, 6),
        (3, 3),
        (2, 2),
        (1, 1),
        True,
        {"count_include_pad": True},
    ),
    "avg-3x2-pad-excl": (
        lp.AvgPool2dOp,
        (2, 2, 7, 5),
        (3, 2),
        (2, 2),
        (1, 1),
        True,
        {"count_include_pad": False},
    ),
    "avg-global": (lp.AvgPool2dOp, (2, 5, 4, 3), (4, 3), (4, 3), (0, 0), False, {}),
}


def _cases() -> dict[str, Case]:
    c: dict[str, Case] = {}
    for name, (xs, ws, bias, st, pad, dil, g) in CONVS.items():
        args = [("f32", xs), ("f32", ws)] + ([("f32", (ws[0],))] if bias else [])

        def build(x, w, b=None, st=st, pad=pad, dil=dil, g=g):  # type: ignore[no-untyped-def]
            return lp.Conv2dOp(x, w, b, st, pad, dil, g)

        ins = [rand("f32", xs, 1) / 100, rand("f32", ws, 2) / 100]
        if bias:
            ins.append(rand("f32", (ws[0],), 3) / 100)
        c[name] = Case(make_fn(args, build), [ins])
    # N, H, W dynamic (SmallCNN's conv1 on any image size)
    fn = make_fn(
        [("f32", ("s0", 3, "s1", "s2")), ("f32", (8, 3, 3, 3)), ("f32", (8,))],
        lambda x, w, b: lp.Conv2dOp(x, w, b, (1, 1), (1, 1), (1, 1), 1),
        out_dims=["s0", 8, "s1", "s2"],
    )
    w, b = rand("f32", (8, 3, 3, 3), 2) / 100, rand("f32", (8,), 3) / 100
    c["conv-dynamic"] = Case(
        fn, [[rand("f32", s, 4) / 100, w, b] for s in ((1, 3, 4, 5), (2, 3, 6, 3))]
    )
    for name, (op, xs, k, st, pad, ceil, extra) in POOLS.items():
        fn = make_fn(
            [("f32", xs)],
            lambda x, op=op, k=k, st=st, pad=pad, ceil=ceil, extra=extra: op(
                x, k, st, pad, ceil_mode=ceil, **extra
            ),
        )
        x = rand("f32", xs, 5)
        x[0, 0, 1, 1] = np.nan  # NaN propagates as NumPy's max
        c[name] = Case(fn, [[x]])
    fn = make_fn(
        [("f16", (1, 2, 5, 5))], lambda x: lp.MaxPool2dOp(x, (2, 2), ceil_mode=True)
    )
    c["max-f16"] = Case(fn, [[lpcc.dtype("f16").to_values(rand("f32", (1, 2, 5, 5)))]])
    fn = make_fn(
        [("f32", (1, 2, "s0", "s0"))],
        lambda x: lp.MaxPool2dOp(x, (2, 2), ceil_mode=True),
        out_dims=[1, 2, "CeilDiv(s0, 2)", "CeilDiv(s0, 2)"],
    )
    c["max-dynamic"] = Case(fn, [[rand("f32", (1, 2, n, n), n)] for n in (2, 7)])
    return c


CASES = _cases()


def _abs_run(name: str, xs: list[np.ndarray]) -> np.ndarray:
    """The interpreter on |inputs| (no bias): sum |x w| per output, or the
    window sums of |x| (a float64 bound would need its own conv; the f32
    result is within a factor 1 + K u of the exact one, covered by the 2x)."""
    fn = CASES[name].fn
    op = fn.body.block.first_op
    if isinstance(op, lp.Conv2dOp):
        return interp.run_function(
            fn, [np.abs(xs[0]), np.abs(xs[1])] + [np.zeros_like(a) for a in xs[2:]]
        )[0].astype(np.float64)
    return interp.run_function(fn, [np.nan_to_num(np.abs(xs[0]))])[0].astype(np.float64)


def _bound(name: str, xs: list[np.ndarray], want: np.ndarray) -> np.ndarray:
    op = CASES[name].fn.body.block.first_op
    if isinstance(op, lp.Conv2dOp):
        kdim = int(np.prod(xs[1].shape[1:]))
        return 2 * (kdim + 1) * U * _abs_run(name, xs) + 2 * U * np.abs(want)
    kk = int(np.prod(lp._array(op.kernel)))  # avg: a mean of up to kk terms
    return 2 * (kk + 1) * U * _abs_run(name, xs) + 2 * U * np.abs(want)


@pytest.fixture(scope="module")
def batch() -> Batch:
    return Batch(CASES, "cv")


@pytest.mark.parametrize("name", list(CASES))
def test_matches_interpreter(batch: Batch, name: str) -> None:
    for xs in CASES[name].inputs:
        (want,) = interp.run_function(CASES[name].fn, xs)
        (got,) = batch.run(name, xs)
        if isinstance(CASES[name].fn.body.block.first_op, lp.MaxPool2dOp):
            same(got, want)
        else:
            close(got, want, _bound(name, xs, want))


@pytest.mark.parametrize("arch", ARCHS)
def test_nvcc_compiles_every_kernel(batch: Batch, arch: str) -> None:
    compile_all(batch.source, arch)


def test_unhandled_return_none() -> None:
    """Narrow-float convs and average pools round with the codec; dynamic
    weights: the interpreter."""
    assert (
        lower_kernel(
            make_fn(
                [("f16", (1, 2, 4, 4)), ("f16", (2, 2, 3, 3))],
                lambda x, w: lp.Conv2dOp(x, w),
            )
        )
        is None
    )
    assert (
        lower_kernel(
            make_fn([("bf16", (1, 2, 4, 4))], lambda x: lp.AvgPool2dOp(x, (2, 2)))
        )
        is None
    )


@pytest.mark.slow
def test_smallcnn_runs_on_the_cuda_target() -> None:
    """SmallCNN compiled for target="cuda" runs on the emulator (conv2d and
    max_pool2d through these kernels) and matches torch eager. Bound: each
    logit is a few hundred f32 roundings (72-term convs, BN, a 16-term
    linear) of values below ~1, i.e. ~1e-7 each; 1e-5 leaves 100x room."""
    torch = pytest.importorskip("torch")
    from lpcc import config
    from lpcc.models import CNNConfig, SmallCNN

    model = SmallCNN(CNNConfig(), seed=0).eval()
    x = torch.randn(2, 3, 12, 10, generator=torch.Generator().manual_seed(0))
    with config.override(cuda_device="emulate", cuda_archs=()):
        cm = lpcc.compile(model, (x,), target="cuda")
        notes = [str(k.meta.get("note", "")) for k in cm.program.kernels]
        assert any("conv2d" in n and "direct" in n for n in notes), notes
        assert any("max_pool2d" in n for n in notes), notes
        got = np.asarray(cm(x))
    want = model(x).detach().numpy()
    np.testing.assert_allclose(
        got, want, rtol=0, atol=1e-5 * max(1.0, np.abs(want).max())
    )
