"""CPU conv2d / max_pool2d / avg_pool2d kernels (`kernels/conv.py`) vs the interpreter.

conv2d is a GEMM with K = C/G * kh * kw (+ the bias): native and NumPy each
sum within gamma_{K+1} * (sum |x w| + |bias|) of the exact value (gamma_n =
n u / (1 - n u), u = 2^-24), so they differ by at most twice that. max_pool2d
picks an input element, so it matches bit for bit. avg_pool2d sums at most
kh * kw elements and divides once: both sides are within gamma_{kh kw} *
sum|x| / count + u |mean| of the exact mean. Outputs start as NaN, so an
element the kernel fails to write shows up.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from lpcc.codegen.llvm import isa as isa_mod
from lpcc.codegen.llvm.jit import asm
from lpcc.codegen.llvm.kernel import generate, request_for, shape
from lpcc.codegen.llvm.loader import host_arch
from lpcc.codegen.llvm.lower import kernel_meta, lower_kernel
from lpcc.codegen.llvm.runner import native_kernel_fn
from lpcc.ir import interp
from lpcc.ir.dialect import parse_module
from lpcc.ir.symbolic import Dim, bind, evaluate_shape

pytestmark = pytest.mark.skipif(
    host_arch() not in ("x86_64", "amd64"), reason="x86-64 host only"
)
RUNNABLE = [i for i in ("avx512", "avx2", "generic") if isa_mod.host_has(i)]
U = 2.0**-24
rng = np.random.default_rng(11)


def _ty(dims: Sequence[Dim], el: str = "f32") -> str:
    body = "x".join("?" if isinstance(d, str) else str(d) for d in dims)
    return f"tensor<{body}x{el}>"


def _attr(dims: Sequence[Dim]) -> str:
    if any(isinstance(d, str) for d in dims):
        return ' {lp.dims = "' + ",".join(str(d) for d in dims) + '"}'
    return ""


def kernel_fn(args: Sequence[Sequence[Dim]], op: str, out: Sequence[Dim], el="f32"):
    """func @kernel(%0, %1, ...) { %r = <op> %0... : (types) -> out }."""
    params = ", ".join(f"%{i}: {_ty(a, el)}{_attr(a)}" for i, a in enumerate(args))
    ins = ", ".join(_ty(a, el) for a in args)
    sig = f"({ins})" if len(args) > 1 else ins
    text = (
        f"func.func @kernel({params}) -> {_ty(out, el)} {{\n"
        f"  %r = {op}{_attr(out)} : {sig} -> {_ty(out, el)}\n"
        f"  func.return %r : {_ty(out, el)}\n}}"
    )
    return next(iter(parse_module(text).body.block.ops))


def conv_op(bias: bool, stride, padding, dilation, groups) -> str:
    b = " bias %2" if bias else ""
    return (
        f"lp.conv2d %0, %1{b} stride {list(stride)} padding {list(padding)} "
        f"dilation {list(dilation)} groups {groups}"
    )


def run_nan(fn, inputs, isa, const_inputs=()):
    """`run_native`, but the outputs start as NaN (every element must be written)."""
    lowered = lower_kernel(fn, isa, const_inputs)
    assert lowered is not None, "no generator took the kernel"
    nk, obj = lowered
    env: dict[str, int] = {}
    for i, (arg, x) in enumerate(zip(fn.body.block.args, inputs, strict=True)):
        bind(shape(arg), x.shape, env, f"input #{i}")
    (res,) = fn.body.block.last_op.operands
    out = np.full(evaluate_shape(shape(res), env), np.nan, np.float32)
    meta = kernel_meta(nk, obj, len(inputs), 1)
    native_kernel_fn(obj.object_code, meta)(list(inputs), [out], env)
    return out, nk


def rand(*s: int) -> np.ndarray:
    return rng.standard_normal(s).astype(np.float32)


def conv_bound(x, w, b, stride, padding, dilation, groups) -> np.ndarray:
    """2 gamma_{K+1} * (conv(|x|, |w|) + |bias|), computed by the interpreter."""
    k = w.shape[1] * w.shape[2] * w.shape[3] + 1
    g = k * U / (1 - k * U)
    shapes = [x.shape, w.shape] + ([b.shape] if b is not None else [])
    op = conv_op(b is not None, stride, padding, dilation, groups)
    out_shape = interp_shape(x, w, stride, padding, dilation)
    fn = kernel_fn(shapes, op, out_shape)
    absolute = [np.abs(x), np.abs(w)] + ([np.abs(b)] if b is not None else [])
    return 2 * g * interp.run_function(fn, absolute)[0].astype(np.float64) + 1e-30


def interp_shape(x, w, stride, padding, dilation) -> tuple[int, ...]:
    n, _, h, wd = x.shape
    o, _, kh, kw = w.shape
    oh = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (wd + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    return (n, o, oh, ow)


CONVS = [
    # x shape, w shape, bias, stride, padding, dilation, groups
    ((2, 4, 9, 11), (6, 4, 3, 3), True, (1, 1), (1, 1), (1, 1), 1),
    ((1, 3, 20, 40), (5, 3, 3, 3), False, (1, 1), (1, 1), (1, 1), 1),  # wide rows
    ((2, 3, 17, 16), (16, 3, 5, 5), True, (2, 2), (2, 2), (1, 1), 1),
    ((1, 6, 10, 7), (6, 3, 3, 2), False, (2, 1), (1, 0), (1, 2), 2),
    ((1, 8, 12, 20), (8, 1, 3, 3), True, (1, 1), (1, 1), (1, 1), 8),  # depthwise
    ((1, 8, 5, 40), (17, 8, 1, 1), True, (1, 1), (0, 0), (1, 1), 1),  # pointwise
    ((3, 4, 6, 6), (2, 2, 1, 1), False, (1, 1), (0, 0), (1, 1), 2),  # 1x1 grouped
    ((1, 2, 7, 5), (3, 2, 2, 2), False, (3, 2), (1, 1), (2, 1), 1),
]


@pytest.mark.parametrize("case", CONVS, ids=lambda c: f"x{c[0]}w{c[1]}s{c[3]}g{c[6]}")
@pytest.mark.parametrize("const_w", [True, False])
def test_conv2d(case, const_w):
    xs, ws, has_bias, stride, padding, dilation, groups = case
    x, w = rand(*xs), rand(*ws)
    b = rand(ws[0]) if has_bias else None
    ins = [x, w] + ([b] if b is not None else [])
    out_shape = interp_shape(x, w, stride, padding, dilation)
    op = conv_op(has_bias, stride, padding, dilation, groups)
    fn = kernel_fn([a.shape for a in ins], op, out_shape)
    ref = interp.run_function(fn, ins)[0]
    tol = conv_bound(x, w, b, stride, padding, dilation, groups)
    for isa in RUNNABLE:
        out, nk = run_nan(fn, ins, isa, (1, 2) if const_w else ())
        err = np.abs(out.astype(np.float64) - ref)
        assert (err <= tol).all(), (isa, nk.note, err.max())


def test_conv2d_dynamic_batch_and_image():
    """N, H, W symbolic: one kernel for every image size (3x3, pad 1, stride 2)."""
    ws = (4, 3, 3, 3)
    out = ("s0", 4, "(s1 - 1)//2 + 1", "(s2 - 1)//2 + 1")
    op = conv_op(True, (2, 2), (1, 1), (1, 1), 1)
    fn = kernel_fn([("s0", 3, "s1", "s2"), ws, (4,)], op, out)
    for n, h, wd in ((1, 5, 5), (2, 9, 30), (1, 1, 2)):
        x, w, b = rand(n, 3, h, wd), rand(*ws), rand(4)
        ref = interp.run_function(fn, [x, w, b])[0]
        tol = conv_bound(x, w, b, (2, 2), (1, 1), (1, 1), 1)
        for isa in RUNNABLE:
            got, _ = run_nan(fn, [x, w, b], isa, (1, 2))
            assert got.shape == ref.shape
            assert (np.abs(got.astype(np.float64) - ref) <= tol).all(), isa


def test_conv2d_small_integers_bit_for_bit():
    """Small integer inputs make every partial sum exact: any order, same bits."""
    x = rng.integers(-3, 4, (2, 4, 9, 21)).astype(np.float32)
    w = rng.integers(-3, 4, (6, 2, 3, 3)).astype(np.float32)
    b = rng.integers(-3, 4, (6,)).astype(np.float32)
    fn = kernel_fn(
        [x.shape, w.shape, b.shape],
        conv_op(True, (1, 2), (1, 1), (1, 1), 2),
        interp_shape(x, w, (1, 2), (1, 1), (1, 1)),
    )
    ref = interp.run_function(fn, [x, w, b])[0]
    for isa in RUNNABLE:
        np.testing.assert_array_equal(run_nan(fn, [x, w, b], isa, (1, 2))[0], ref)


# -- pooling --------------------------------------------------------------------------


def pool_out(h, k, s, p, d, ceil) -> int:
    span = h + 2 * p - d * (k - 1) - 1
    out = (-(-span // s) if ceil else span // s) + 1
    if ceil and (out - 1) * s >= h + p:
        out -= 1
    return out


POOLS = [
    # kernel, stride, padding, dilation (max only), ceil_mode
    ((3, 3), (2, 2), (1, 1), (1, 1), False),
    ((2, 3), (2, 2), (1, 1), (1, 1), True),
    ((3, 3), (1, 2), (0, 1), (2, 1), False),
    ((2, 2), (2, 2), (0, 0), (1, 1), True),
    ((3, 2), (3, 3), (1, 1), (1, 2), True),
]


def pool_fn(xs, kernel, stride, padding, dilation, ceil, is_max, include_pad=True):
    dil = [1, 1] if not is_max else list(dilation)
    oh = pool_out(xs[2], kernel[0], stride[0], padding[0], dil[0], ceil)
    ow = pool_out(xs[3], kernel[1], stride[1], padding[1], dil[1], ceil)
    name = "lp.max_pool2d" if is_max else "lp.avg_pool2d"
    op = (
        f"{name} %0 kernel {list(kernel)} stride {list(stride)} padding {list(padding)}"
    )
    if is_max:
        op += f" dilation {dil}"
    if ceil:
        op += " ceil_mode"
    if not is_max and include_pad:
        op += " count_include_pad"
    return kernel_fn([xs], op, (xs[0], xs[1], oh, ow))


@pytest.mark.parametrize("case", POOLS)
def test_max_pool2d_bit_for_bit(case):
    x = rand(2, 3, 9, 10)
    x[0, 0, 0, :3] = -np.inf
    x[1, 2, 4, 5] = np.nan  # propagates, as NumPy's max does
    fn = pool_fn(x.shape, *case, is_max=True)
    ref = interp.run_function(fn, [x])[0]
    for isa in RUNNABLE:
        np.testing.assert_array_equal(run_nan(fn, [x], isa)[0], ref)


@pytest.mark.parametrize("case", POOLS)
@pytest.mark.parametrize("include_pad", [True, False])
def test_avg_pool2d(case, include_pad):
    x = rand(2, 3, 9, 10)
    fn = pool_fn(x.shape, *case, is_max=False, include_pad=include_pad)
    ref = interp.run_function(fn, [x])[0].astype(np.float64)
    n = case[0][0] * case[0][1]
    g = n * U / (1 - n * U)
    fn_abs = pool_fn(x.shape, *case, is_max=False, include_pad=include_pad)
    mean_abs = interp.run_function(fn_abs, [np.abs(x)])[0].astype(np.float64)
    # |sum error| / count <= gamma_n * mean|x| (count <= n), plus the rounding
    # of the quotient, on both sides
    tol = 2 * (g * mean_abs * n + U * np.abs(ref)) + 1e-30
    for isa in RUNNABLE:
        out = run_nan(fn, [x], isa)[0]
        assert (np.abs(out - ref) <= tol).all(), isa


def test_pools_dynamic_sizes():
    xs = ("s0", 2, "s1", "s2")
    out = ("s0", 2, "(s1 - 1)//2 + 1", "(s2 - 1)//2 + 1")
    for name, extra in (("lp.max_pool2d", " dilation [1, 1]"), ("lp.avg_pool2d", "")):
        op = f"{name} %0 kernel [3, 3] stride [2, 2] padding [1, 1]{extra}"
        fn = kernel_fn([xs], op, out)
        for shp in ((1, 2, 5, 8), (3, 2, 1, 1), (1, 2, 12, 3)):
            x = rand(*shp)
            ref = interp.run_function(fn, [x])[0]
            for isa in RUNNABLE:
                got = run_nan(fn, [x], isa)[0]
                np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)


# -- what is left to the interpreter; AVX-512 compiles -------------------------------


def test_declines_non_f32():
    fn = kernel_fn(
        [(1, 2, 4, 4)],
        "lp.max_pool2d %0 kernel [2, 2] stride [2, 2] padding [0, 0] dilation [1, 1]",
        (1, 2, 2, 2),
        el="f16",
    )
    assert generate(request_for(fn, "avx2")) is None
    op = conv_op(False, (1, 1), (0, 0), (1, 1), 1)
    fn = kernel_fn([(1, 2, 4, 4), (3, 2, 1, 1)], op, (1, 3, 4, 4), el="bf16")
    assert generate(request_for(fn, "avx2")) is None


def test_avx512_compiles():
    op = conv_op(True, (1, 1), (1, 1), (1, 1), 1)
    conv = kernel_fn([(1, 3, 8, 40), (8, 3, 3, 3), (8,)], op, (1, 8, 8, 40))
    pool = pool_fn((1, 3, 8, 8), (2, 2), (2, 2), (0, 0), (1, 1), False, is_max=True)
    for fn, const in ((conv, (1, 2)), (pool, ())):
        lowered = lower_kernel(fn, "avx512", const)
        assert lowered is not None and lowered[1].isa == "avx512"
    assert "zmm" in asm(lower_kernel(conv, "avx512", (1, 2))[0].ir, "avx512")
