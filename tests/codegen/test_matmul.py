"""The CPU f32 GEMM (`lpcc/codegen/llvm/kernels/matmul.py`) against the interpreter.

Each kernel function holds one `lp.matmul`; the native result must match
`interp.run_function` (NumPy) within the f32 summation bound: both sides
sum K products in some order, each within gamma_K * sum_k |a_ik b_kj| of the
exact value (gamma_K = K u / (1 - K u), u = 2^-24), so they differ by at
most twice that. Operands holding small integers make every partial sum
exact, and then the results must agree bit for bit. Outputs start as NaN,
so an element the kernel fails to write shows up.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

import lpcc
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


def _ty(dims: Sequence[Dim], el: str = "f32") -> str:
    return (
        "tensor<"
        + "x".join("?" if isinstance(d, str) else str(d) for d in dims)
        + f"x{el}>"
    )


def _attr(dims: Sequence[Dim]) -> str:
    if any(isinstance(d, str) for d in dims):
        return ' {lp.dims = "' + ",".join(str(d) for d in dims) + '"}'
    return ""


def matmul_fn(
    a: Sequence[Dim],
    b: Sequence[Dim],
    out: Sequence[Dim],
    tb: bool = False,
    el: str = "f32",
    out_el: str = "f32",
):
    """func @kernel(a, b) { lp.matmul a, b } with the given (maybe symbolic) shapes."""
    text = (
        f"func.func @kernel(%a: {_ty(a, el)}{_attr(a)}, %b: {_ty(b, el)}{_attr(b)})"
        f" -> {_ty(out, out_el)} {{\n"
        f"  %c = lp.matmul %a, %b{' transpose_b' if tb else ''}{_attr(out)} : "
        f"({_ty(a, el)}, {_ty(b, el)}) -> {_ty(out, out_el)}\n"
        f"  func.return %c : {_ty(out, out_el)}\n}}"
    )
    return next(iter(parse_module(text).body.block.ops))


_COMPILED: dict[tuple[int, str, tuple[int, ...]], tuple[object, object, object]] = {}


def compiled(fn, isa: str, const_inputs=()):
    """(NativeKernel, callable) for `fn` on `isa`, compiled once per test session."""
    key = (id(fn), isa, tuple(const_inputs))
    if key not in _COMPILED:
        lowered = lower_kernel(fn, isa, const_inputs)
        assert lowered is not None, "no generator took the kernel"
        nk, obj = lowered
        n_out = len(fn.function_type.outputs.data)
        meta = kernel_meta(nk, obj, len(fn.body.block.args), n_out)
        _COMPILED[key] = (fn, nk, native_kernel_fn(obj.object_code, meta))
    _, nk, run = _COMPILED[key]
    return nk, run


def run_nan(fn, inputs, isa, const_inputs=()):
    """`run_native`, but the outputs start as NaN (every element must be written)."""
    nk, run = compiled(fn, isa, const_inputs)
    env: dict[str, int] = {}
    arrays = []
    for i, (arg, x) in enumerate(zip(fn.body.block.args, inputs, strict=True)):
        bind(shape(arg), x.shape, env, f"input #{i}")
        arrays.append(np.ascontiguousarray(nk.repack[i].fn(x)) if i in nk.repack else x)
    ret = fn.body.block.last_op
    outs = [
        np.full(evaluate_shape(shape(v), env), np.nan, np.float32) for v in ret.operands
    ]
    run(arrays, outs, env)
    return outs[0], nk


def bound(a: np.ndarray, b: np.ndarray, tb: bool) -> np.ndarray:
    """2 gamma_K (|A| @ |B|): the most two f32 summation orders can differ by."""
    k = a.shape[-1]
    g = k * U / (1 - k * U)
    bb = np.swapaxes(b, -1, -2) if tb else b
    return (
        2 * g * (np.abs(a).astype(np.float64) @ np.abs(bb).astype(np.float64)) + 1e-30
    )


def check(fn, a, b, tb, const=False, isas=RUNNABLE):
    ref = interp.run_function(fn, [a, b])[0]
    for isa in isas:
        out, nk = run_nan(fn, [a, b], isa, (1,) if const else ())
        assert out.shape == ref.shape
        err = np.abs(out.astype(np.float64) - ref)
        assert (err <= bound(a, b, tb)).all(), (isa, nk.note, err.max())
    return ref


rng = np.random.default_rng(7)


def rand(*shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def ints(*shape: int) -> np.ndarray:
    return rng.integers(-4, 5, shape).astype(np.float32)


# -- 2-D shapes: odd M, N and K around the tiles ---------------------------------------


@pytest.mark.parametrize(
    "m,k,n,tb,const",
    [
        (1, 1, 1, False, False),
        (1, 1, 1, True, True),
        (3, 5, 7, False, True),
        (3, 5, 7, True, False),
        (17, 520, 33, False, False),  # K over two K blocks, N over three panels
        (17, 520, 33, True, False),
        (17, 520, 33, False, True),
        (17, 520, 33, True, True),
        (1, 300, 16, False, False),  # GEMV, one full panel
        (1, 300, 16, True, True),
        (25, 9, 48, False, True),  # more M tiles than the small-M schedule takes
        (25, 9, 48, True, False),
    ],
)
def test_matmul_2d(m, k, n, tb, const):
    a, b = rand(m, k), rand(n, k) if tb else rand(k, n)
    fn = matmul_fn(a.shape, b.shape, (m, n), tb)
    check(fn, a, b, tb, const)


@pytest.mark.parametrize("tb", [False, True])
def test_exact_values_bit_for_bit(tb):
    """Small integers: every partial sum is exact, so any order gives the same bits."""
    m, k, n = 13, 270, 37
    a, b = ints(m, k), ints(n, k) if tb else ints(k, n)
    fn = matmul_fn(a.shape, b.shape, (m, n), tb)
    ref = interp.run_function(fn, [a, b])[0]
    for isa in RUNNABLE:
        for const in ((), (1,)):
            out, _ = run_nan(fn, [a, b], isa, const)
            np.testing.assert_array_equal(out, ref)


def test_many_units_split_m_and_n():
    """Enough rows and columns that the work splits into M and N groups."""
    a, b = rand(200, 40), rand(40, 300)
    fn = matmul_fn(a.shape, b.shape, (200, 300))
    check(fn, a, b, False)
    nk = generate(request_for(fn, "avx2"))
    assert "M groups" in nk.note and nk.rows >= 8 and nk.granule == 1
    tiny = generate(request_for(matmul_fn((3, 5), (5, 7), (3, 7)), "avx2"))
    assert tiny.granule == tiny.rows  # too little work to hand to a second thread


def test_gemv_splits_the_weight_over_units():
    """M = 1 with a constant weight: many units over N, each streams its panels."""
    a, w = rand(1, 256), rand(512, 256)
    fn = matmul_fn(a.shape, w.shape, (1, 512), tb=True)
    check(fn, a, w, True, const=True)
    nk = generate(request_for(fn, "avx2", (1,)))
    assert nk.rows >= 16 and 1 in nk.repack


# -- batches ---------------------------------------------------------------------------


@pytest.mark.parametrize("tb", [False, True])
@pytest.mark.parametrize("const", [False, True])
def test_batched_broadcast(tb, const):
    a = rand(2, 1, 5, 7)
    b = rand(3, 9, 7) if tb else rand(3, 7, 9)
    fn = matmul_fn(a.shape, b.shape, (2, 3, 5, 9), tb)
    check(fn, a, b, tb, const)


def test_lhs_broadcast_over_rhs_batch():
    a, b = rand(4, 3), rand(2, 3, 3, 5)
    fn = matmul_fn(a.shape, b.shape, (2, 3, 4, 5))
    check(fn, a, b, False)


def test_3d_input_times_shared_weight_folds_batch_into_m():
    a, w = rand(2, 7, 20), rand(11, 20)
    fn = matmul_fn(a.shape, w.shape, (2, 7, 11), tb=True)
    check(fn, a, w, True, const=True)
    assert generate(request_for(fn, "avx2", (1,))).rows == 1  # one GEMM, 14 rows


@pytest.mark.parametrize("tb", [False, True])
def test_attention_shapes(tb):
    """[B, H, S, D] @ [B, H, D, S] (or K^T via transpose_b) with small S."""
    q = rand(1, 3, 17, 16)
    kk = rand(1, 3, 17, 16) if tb else rand(1, 3, 16, 17)
    fn = matmul_fn(q.shape, kk.shape, (1, 3, 17, 17), tb)
    check(fn, q, kk, tb)
    p, v = rand(1, 3, 17, 17), rand(1, 3, 17, 16)
    fn = matmul_fn(p.shape, v.shape, (1, 3, 17, 16))
    check(fn, p, v, False)


# -- dynamic sizes ---------------------------------------------------------------------


@pytest.mark.parametrize("const", [False, True])
def test_dynamic_m(const):
    fn = matmul_fn(("s0", 20), (19, 20), ("s0", 19), tb=True)
    for m in (1, 7, 13, 40):
        a, w = rand(m, 20), rand(19, 20)
        check(fn, a, w, True, const)


def test_dynamic_batch_and_sequence():
    fn = matmul_fn(("s0", 2, "s1", 8), ("s0", 2, 8, "s1"), ("s0", 2, "s1", "s1"))
    for s0, s1 in ((1, 1), (2, 5), (1, 19)):
        a, b = rand(s0, 2, s1, 8), rand(s0, 2, 8, s1)
        check(fn, a, b, False)


def test_dynamic_k_and_n():
    fn = matmul_fn(("s0", "s1"), ("s1", "s2"), ("s0", "s2"))
    for m, k, n in ((3, 1, 17), (8, 300, 5), (1, 2, 1)):
        a, b = rand(m, k), rand(k, n)
        check(fn, a, b, False)


def test_zero_k_writes_zeros():
    fn = matmul_fn((3, 0), (0, 5), (3, 5))
    a, b = np.zeros((3, 0), np.float32), np.zeros((0, 5), np.float32)
    for isa in RUNNABLE:
        out, _ = run_nan(fn, [a, b], isa)
        np.testing.assert_array_equal(out, np.zeros((3, 5), np.float32))


# -- what the GEMM leaves to others ----------------------------------------------------


def test_declines_integer_and_non_f32_results():
    i8, i32 = "!lp.int<8>", "!lp.int<32>"
    fn = matmul_fn((2, 3), (3, 4), (2, 4), el=i8, out_el=i32)
    assert generate(request_for(fn, "avx2")) is None
    fn = matmul_fn((2, 3), (3, 4), (2, 4), el="f16", out_el="f16")
    assert generate(request_for(fn, "avx2")) is None  # rounds to f16: interpreter


def test_bf16_operands_into_f32_result():
    """bf16 values are f32 values at run time; the result is f32 exactly as asked."""
    fn = matmul_fn((5, 33), (33, 6), (5, 6), el="bf16", out_el="f32")
    bf16 = lpcc.dtype("bf16")
    a, b = (bf16.round(rand(*s)).astype(np.float32) for s in ((5, 33), (33, 6)))
    check(fn, a, b, False)


# -- AVX-512: compiles everywhere, runs where the host has it --------------------------


@pytest.mark.parametrize("tb,const", [(False, False), (True, False), (True, True)])
def test_avx512_compiles_to_zmm_fma(tb, const):
    fn = matmul_fn((9, 70), (40, 70) if tb else (70, 40), (9, 40), tb)
    lowered = lower_kernel(fn, "avx512", (1,) if const else ())
    assert lowered is not None and lowered[1].isa == "avx512"
    nk = lowered[0]
    text = asm(nk.ir, "avx512")
    assert "zmm" in text and "vfmadd" in text
    assert "8x32 tiles" in nk.note


# -- lp.fused epilogue: matmul + elementwise ops on its result -----------------------


def fused_fn(args: list[Sequence[Dim]], body: str, out: Sequence[Dim], out_el="f32"):
    """func @kernel(%0...) { lp.fused epilogue(%0...) { ^bb0(%a0...): body } }."""
    tys = [_ty(a) for a in args]
    params = ", ".join(
        f"%{i}: {t}{_attr(a)}" for i, (t, a) in enumerate(zip(tys, args, strict=True))
    )
    names = ", ".join(f"%{i}" for i in range(len(args)))
    bb = ", ".join(f"%a{i}: {t}" for i, t in enumerate(tys))
    ot = _ty(out, out_el)
    text = (
        f"func.func @kernel({params}) -> {ot} {{\n"
        f"  %r = lp.fused epilogue({names}){_attr(out)} : "
        f"({', '.join(tys)}) -> {ot} {{\n"
        f"  ^bb0({bb}):\n{body}\n  }}\n"
        f"  func.return %r : {ot}\n}}"
    )
    return next(iter(parse_module(text).body.block.ops))


def eighths(*shape: int) -> np.ndarray:
    """Multiples of 1/8 in [-1, 1]: with K <= 2^10 every product sum is exact."""
    return (rng.integers(-8, 9, shape) / 8).astype(np.float32)


def run_all(fn, ins, const=()):
    """The outputs on every runnable level (the matmul epilogue generator's)."""
    nk = generate(request_for(fn, "avx2", const))
    assert nk is not None and "+ epilogue" in nk.note
    return [run_nan(fn, ins, isa, const)[0] for isa in RUNNABLE]


def test_epilogue_bias_silu():
    """Linear + bias + silu. The matmul is exact (eighths), so the two sides
    differ only in sigmoid (the emitter's <= 3 ulp) and the roundings after
    it: 8 ulp of the result bound that."""
    m, k, n = 13, 40, 37
    mn = _ty((m, n))
    body = f"""
    %h = lp.matmul %a0, %a1 transpose_b : ({_ty((m, k))}, {_ty((n, k))}) -> {mn}
    %hb = lp.add %h, %a2 : ({_ty((m, n))}, {_ty((1, n))}) -> {_ty((m, n))}
    %sg = lp.sigmoid %hb : {_ty((m, n))}
    %y = lp.mul %hb, %sg : {_ty((m, n))}
    lp.yield %y : {_ty((m, n))}"""
    fn = fused_fn([(m, k), (n, k), (1, n)], body, (m, n))
    ins = [eighths(m, k), eighths(n, k), rand(1, n)]
    ref = interp.run_function(fn, ins)[0]
    nk = generate(request_for(fn, "avx2", (1, 2)))
    assert nk is not None and "epilogue (add, sigmoid, mul)" in nk.note
    for out in run_all(fn, ins, (1, 2)):
        np.testing.assert_allclose(out, ref, rtol=8 * 2.0**-23, atol=2.0**-126)


def test_epilogue_scale_residual_cast_f16_bit_for_bit():
    m, k = 9, 24
    t = _ty((m, k))
    body = f"""
    %half = lp.constant splat 0.5 : {_ty((1, 1))}
    %h = lp.matmul %a0, %a1 transpose_b : ({t}, {_ty((k, k))}) -> {t}
    %s = lp.mul %h, %half : ({t}, {_ty((1, 1))}) -> {t}
    %q = lp.add %a0, %s : {t}
    %c = lp.cast %q : {t} -> {_ty((m, k), "f16")}
    lp.yield %c : {_ty((m, k), "f16")}"""
    fn = fused_fn([(m, k), (k, k)], body, (m, k), out_el="f16")
    ins = [eighths(m, k), eighths(k, k)]
    ref = interp.run_function(fn, ins)[0]
    for out in run_all(fn, ins, (1,)):
        np.testing.assert_array_equal(out, ref)


def test_epilogue_batched_attention_scores():
    """scores = q @ k^T * scale + mask[1, 1, S, S], batched over heads."""
    s, d = 11, 8
    q, kt = _ty((1, 2, s, d)), _ty((1, 2, s, s))
    body = f"""
    %sc = lp.constant splat 0.25 : {_ty((1, 1, 1, 1))}
    %h = lp.matmul %a0, %a1 transpose_b : ({q}, {q}) -> {kt}
    %x = lp.mul %h, %sc : ({kt}, {_ty((1, 1, 1, 1))}) -> {kt}
    %y = lp.add %x, %a2 : ({kt}, {_ty((1, 1, s, s))}) -> {kt}
    lp.yield %y : {kt}"""
    fn = fused_fn([(1, 2, s, d), (1, 2, s, d), (1, 1, s, s)], body, (1, 2, s, s))
    ins = [eighths(1, 2, s, d), eighths(1, 2, s, d), eighths(1, 1, s, s)]
    ref = interp.run_function(fn, ins)[0]
    for out in run_all(fn, ins):
        np.testing.assert_array_equal(out, ref)


def test_epilogue_dynamic_rows_and_row_operand():
    """relu(x @ w + r) with r[M, 1] (one value per row) and M dynamic."""
    k, n = 16, 21
    tm, tr = _ty(("s0", n)), _ty(("s0", 1))
    body = f"""
    %z = lp.constant splat 0.0 : {_ty((1, 1))}
    %h = lp.matmul %a0, %a1 {_attr(("s0", n))} : ({_ty(("s0", k))}, {_ty((k, n))})
        -> {tm}
    %y = lp.add %h, %a2 {_attr(("s0", n))} : ({tm}, {tr}) -> {tm}
    %q = lp.max %y, %z {_attr(("s0", n))} : ({tm}, {_ty((1, 1))}) -> {tm}
    lp.yield %q : {tm}"""
    fn = fused_fn([("s0", k), (k, n), ("s0", 1)], body, ("s0", n))
    for m in (1, 5, 14):
        ins = [eighths(m, k), eighths(k, n), eighths(m, 1)]
        ref = interp.run_function(fn, ins)[0]
        for out in run_all(fn, ins, (1,)):
            np.testing.assert_array_equal(out, ref)


def test_epilogue_compiles_for_avx512():
    m, k, n = 5, 40, 70
    mn = _ty((m, n))
    body = f"""
    %h = lp.matmul %a0, %a1 transpose_b : ({_ty((m, k))}, {_ty((n, k))}) -> {mn}
    %hb = lp.add %h, %a2 : ({mn}, {_ty((1, n))}) -> {mn}
    %sg = lp.sigmoid %hb : {mn}
    lp.yield %sg : {mn}"""
    fn = fused_fn([(m, k), (n, k), (1, n)], body, (m, n))
    lowered = lower_kernel(fn, "avx512", (1, 2))
    assert lowered is not None and "+ epilogue" in lowered[0].note
    assert "zmm" in asm(lowered[0].ir, "avx512")
