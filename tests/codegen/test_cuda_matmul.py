"""CUDA SIMT dense matmul (kernels/matmul.py) on the host emulator vs the interpreter.

Float sums are compared within 2 gamma_K (|A| @ |B|) (two f32 summation
orders differ by at most that); inputs that are multiples of 1/8 make every
sum exact, and then the results (and add/mul epilogues) must agree bit for bit.
Every generated source also compiles with nvcc for sm_80 and sm_90 with no
register spills.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from lpcc.codegen.cuda import nvcc
from lpcc.codegen.cuda.lower import lower_kernel, run_cuda
from lpcc.ir import interp
from lpcc.ir.dialect import parse_module
from lpcc.ir.symbolic import Dim

U = 2.0**-24
rng = np.random.default_rng(11)
SOURCES: list[str] = []  # every source generated here (the nvcc test compiles them)


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


def matmul_fn(a, b, out, tb=False, out_el="f32"):
    text = (
        f"func.func @kernel(%a: {_ty(a)}{_attr(a)}, %b: {_ty(b)}{_attr(b)})"
        f" -> {_ty(out, out_el)} {{\n"
        f"  %c = lp.matmul %a, %b{' transpose_b' if tb else ''}{_attr(out)} : "
        f"({_ty(a)}, {_ty(b)}) -> {_ty(out, out_el)}\n"
        f"  func.return %c : {_ty(out, out_el)}\n}}"
    )
    return next(iter(parse_module(text).body.block.ops))


def fused_fn(args, body: str, out):
    tys = [_ty(a) for a in args]
    params = ", ".join(
        f"%{i}: {t}{_attr(a)}" for i, (t, a) in enumerate(zip(tys, args, strict=True))
    )
    names = ", ".join(f"%{i}" for i in range(len(args)))
    bb = ", ".join(f"%a{i}: {t}" for i, t in enumerate(tys))
    ot = _ty(out)
    text = (
        f"func.func @kernel({params}) -> {ot} {{\n"
        f"  %r = lp.fused epilogue({names}){_attr(out)}"
        f" : ({', '.join(tys)}) -> {ot} {{\n"
        f"  ^bb0({bb}):\n{body}\n  }}\n"
        f"  func.return %r : {ot}\n}}"
    )
    return next(iter(parse_module(text).body.block.ops))


def run(fn, ins, const=()):
    ck = lower_kernel(fn, "sm_80", const)
    assert ck is not None and "cuda simt matmul" in ck.note, "not the SIMT matmul"
    if ck.source not in SOURCES:
        SOURCES.append(ck.source)
    out = run_cuda(fn, ins, const_inputs=const, device="emulate")
    assert out is not None
    return out[0]


def bound(a, b, tb):
    """2 gamma_K (|A| @ |B|)."""
    k = a.shape[-1]
    g = k * U / (1 - k * U)
    bb = np.swapaxes(b, -1, -2) if tb else b
    return (
        2 * g * (np.abs(a).astype(np.float64) @ np.abs(bb).astype(np.float64)) + 1e-30
    )


def rand(*s):
    return rng.standard_normal(s).astype(np.float32)


def eighths(*s):
    return (rng.integers(-8, 9, s) / 8).astype(np.float32)


@pytest.mark.parametrize("tb", [False, True])
def test_dynamic_m_every_size(tb: bool) -> None:
    k, n = 40, 33
    fn = matmul_fn(["s0", k], [n, k] if tb else [k, n], ["s0", n], tb)
    for m in (1, 3, 17, 70):
        a, b = rand(m, k), rand(n, k) if tb else rand(k, n)
        ref = interp.run_function(fn, [a, b])[0]
        out = run(fn, [a, b])
        assert out.shape == ref.shape
        assert (np.abs(out - ref) <= bound(a, b, tb)).all(), m


def test_exact_values_bit_for_bit() -> None:
    fn = matmul_fn([17, 24], [24, 9], [17, 9])
    a, b = eighths(17, 24), eighths(24, 9)
    ref = interp.run_function(fn, [a, b])[0]
    np.testing.assert_array_equal(run(fn, [a, b]), ref)


def test_batched_broadcast_attention_shapes() -> None:
    # q @ k^T with batch dims broadcasting [2, 1] against [3]
    fn = matmul_fn([2, 1, 5, 8], [3, 6, 8], [2, 3, 5, 6], tb=True)
    a, b = rand(2, 1, 5, 8), rand(3, 6, 8)
    ref = interp.run_function(fn, [a, b])[0]
    assert (
        np.abs(run(fn, [a, b]) - ref)
        <= bound(a, np.broadcast_to(b, (2, 3, 6, 8)), True)
    ).all()


def test_dynamic_batch_and_k() -> None:
    fn = matmul_fn(["s0", 5, "s1"], ["s0", "s1", 7], ["s0", 5, 7])
    for bsz, k in ((1, 3), (3, 20)):
        a, b = rand(bsz, 5, k), rand(bsz, k, 7)
        ref = interp.run_function(fn, [a, b])[0]
        assert (np.abs(run(fn, [a, b]) - ref) <= bound(a, b, False)).all()


def test_epilogue_bias_silu_mul_residual() -> None:
    body = """
    %mm = lp.matmul %a0, %a1 transpose_b
      : (tensor<3x16xf32>, tensor<5x16xf32>) -> tensor<3x5xf32>
    %b = lp.add %mm, %a2 : (tensor<3x5xf32>, tensor<1x5xf32>) -> tensor<3x5xf32>
    %s = lp.sigmoid %b : tensor<3x5xf32>
    %t = lp.mul %b, %s : tensor<3x5xf32>
    %r = lp.add %a3, %t : tensor<3x5xf32>
    lp.yield %r : tensor<3x5xf32>"""
    fn = fused_fn([[3, 16], [5, 16], [1, 5], [3, 5]], body, [3, 5])
    ins = [eighths(3, 16), eighths(5, 16), eighths(1, 5), eighths(3, 5)]
    ref = interp.run_function(fn, ins)[0]
    out = run(fn, ins, const=(1,))
    # the matmul and bias are exact; sigmoid uses expf (within 2 ulp of numpy's),
    # 1/(1+e), mul and add add a few more roundings: 8 ulp of the magnitudes
    tol = 8 * 2.0**-23 * (np.abs(ref) + 4)
    assert (np.abs(out - ref) <= tol).all()


def test_epilogue_exact_add_mul_bit_for_bit() -> None:
    body = """
    %c = lp.constant splat 0.5 : tensor<1x1xf32>
    %mm = lp.matmul %a0, %a1 : (tensor<17x8xf32>, tensor<8x6xf32>) -> tensor<17x6xf32>
    %h = lp.mul %mm, %c : (tensor<17x6xf32>, tensor<1x1xf32>) -> tensor<17x6xf32>
    %r = lp.add %h, %a2 : (tensor<17x6xf32>, tensor<17x1xf32>) -> tensor<17x6xf32>
    lp.yield %r : tensor<17x6xf32>"""
    fn = fused_fn([[17, 8], [8, 6], [17, 1]], body, [17, 6])
    ins = [eighths(17, 8), eighths(8, 6), eighths(17, 1)]
    np.testing.assert_array_equal(run(fn, ins), interp.run_function(fn, ins)[0])


def test_declines_integer_matmul() -> None:
    text = (
        "func.func @kernel(%a: tensor<3x4x!lp.int<8>>, %b: tensor<4x5x!lp.int<8>>)"
        " -> tensor<3x5x!lp.int<32>> {\n"
        "  %c = lp.matmul %a, %b : (tensor<3x4x!lp.int<8>>, tensor<4x5x!lp.int<8>>)"
        " -> tensor<3x5x!lp.int<32>>\n"
        "  func.return %c : tensor<3x5x!lp.int<32>>\n}"
    )
    fn = next(iter(parse_module(text).body.block.ops))
    assert lower_kernel(fn) is None


def test_nvcc_compiles_without_spills() -> None:
    assert SOURCES, "run with the other tests of this module"
    for src in SOURCES:
        for arch in ("sm_80", "sm_90"):
            info = nvcc.ptxas_info(src, arch)
            assert info, arch
            for name, v in info.items():
                assert v["spill_stores"] == 0 and v["spill_loads"] == 0, (arch, name, v)
