"""CUDA group GEMM kernels (kernels/group_matmul.py) on the host emulator vs the
interpreter: float activations within a derived f32 bound, int8 activations
(W4A8) and group_sum bit for bit; every source compiles for sm_80 and sm_90
without spills."""

from __future__ import annotations

import numpy as np
import pytest

import lpcc
from lpcc.codegen.cuda import nvcc
from lpcc.codegen.cuda.kernel import CudaRequest
from lpcc.codegen.cuda.kernels import gemv
from lpcc.codegen.cuda.kernels.group_matmul import f32_code_plan, gen_fused_group_matmul
from lpcc.codegen.cuda.lower import lower_kernel, run_cuda
from lpcc.ir import interp
from lpcc.ir.dialect import parse_module, to_attr
from lpcc.ir.interp import _by_group

U = 2.0**-24
rng = np.random.default_rng(5)
SOURCES: list[str] = []


def _t(m, rest: str) -> str:
    return f"tensor<{'?' if isinstance(m, str) else m}x{rest}>"


def gemm_fn(m, k, n, g, wt, zero=False, xint=False, act=False, tail=""):
    """fused epilogue(x, w, s[, z, sums][, a][, res]) { group_matmul; reduce; tail }."""
    gn = -(-k // g)
    xt, pt = ("!lp.int<8>", "!lp.int<32>") if xint else ("f32", "f32")
    dims = ' {lp.dims = "s0"}' if isinstance(m, str) else ""
    dims2 = f' {{lp.dims = "s0,{n}"}}' if isinstance(m, str) else ""
    dims3 = f' {{lp.dims = "s0,{gn}"}}' if isinstance(m, str) else ""
    w = str(to_attr(lpcc.dtype(wt)))
    args = [
        (_t(m, f"{k}x{xt}"), f'{{lp.dims = "s0,{k}"}}' if dims else ""),
        (f"tensor<{n}x{k}x{w}>", ""),
        (f"tensor<{n}x{gn}xf16>", ""),
    ]
    pty = _t(m, f"{n}x{gn}x{pt}")
    red = f"lp.group_dequant_reduce %p : {pty} scale %b2 : {args[2][0]}"
    if zero:
        args += [(f"tensor<{n}x{gn}x{w}>", ""), (_t(m, f"{gn}x{pt}"), dims3)]
        red += f" zero %b3 : {args[3][0]} sums %b4 : {args[4][0]}"
    if act:
        args.append((_t(m, f"{gn}xf32"), dims3))
        red += f" act_scale %b{len(args) - 1} : {args[-1][0]}"
    yt = _t(m, f"{n}xf32")
    if tail:
        args.append((yt, dims2))
    red += f"{dims2} -> {yt}"
    params = ", ".join(f"%{i}: {t}{d}" for i, (t, d) in enumerate(args))
    tys = ", ".join(t for t, _ in args)
    bb = ", ".join(f"%b{i}: {t}" for i, (t, _) in enumerate(args))
    body = tail.replace("RES", f"%b{len(args) - 1}").replace("YT", yt)
    operands = ", ".join(f"%{i}" for i in range(len(args)))
    pdims = f' {{lp.dims = "s0,{n},{gn}"}}' if dims else ""
    text = f"""func.func @kernel({params}) -> {yt} {{
  %r = lp.fused epilogue({operands}){dims2} : ({tys}) -> {yt} {{
  ^bb0({bb}):
    %p = lp.group_matmul %b0, %b1 group {g}{pdims}
      : ({args[0][0]}, {args[1][0]}) -> {pty}
    %y = {red}
{body if tail else "    lp.yield %y : " + yt}
  }}
  func.return %r : {yt}
}}"""
    return next(iter(parse_module(text).body.block.ops))


def inputs(m, k, n, g, wt, zero=False, xint=False, act=False, exact=False):
    dt = lpcc.dtype(wt)
    gn = -(-k // g)
    if xint:
        x = rng.integers(-127, 128, (m, k)).astype(np.int8)
    elif exact:
        x = (rng.integers(-8, 9, (m, k)) / 8).astype(np.float32)
    else:
        x = rng.standard_normal((m, k)).astype(np.float32)
    if dt.kind == "float":
        w = dt.values(rng.integers(0, 1 << dt.bits, (n, k)).astype(np.uint64))
        w = np.nan_to_num(w, nan=0.0)
    else:
        w = rng.integers(int(dt.min), int(dt.max) + 1, (n, k)).astype(dt.value_dtype)
    if exact:
        s = (2.0 ** rng.integers(-6, -2, (n, gn))).astype(np.float32)
    else:
        s = lpcc.dtype("f16").to_values(rng.uniform(0.01, 0.1, (n, gn)))
    ins, const = [x, w, s], [1, 2]
    z = None
    if zero:
        z = rng.integers(int(dt.min), int(dt.max) + 1, (n, gn)).astype(dt.value_dtype)
        acc = np.int64 if xint else np.float32
        sums = (
            _by_group(x.astype(acc), g).sum(-1).astype(np.int32 if xint else np.float32)
        )
        ins += [z, sums]
        const.append(3)
    a = None
    if act:
        a = rng.uniform(0.01, 0.1, (m, gn)).astype(np.float32)
        ins.append(a)
    return ins, const, (x, w, s, z, a)


def run(fn, ins, const):
    ck = lower_kernel(fn, "sm_80", const)
    assert ck is not None and "group gemm" in ck.note, "not the group GEMM kernel"
    if ck.source not in SOURCES:
        SOURCES.append(ck.source)
    out = run_cuda(fn, ins, const_inputs=const, device="emulate")
    return out[0]


def bound(k, g, parts):
    """f32 reassociation: both sides sum the same products within gamma_(K+64)
    of sum_g |s a| sum_k |x| (|q| + |z|) (the interpreter's P and z S apart,
    ours x (q - z) chained per chunk, then across chunks and lanes)."""
    x, w, s, z, a = parts
    ax = np.abs(_by_group(x.astype(np.float64), g))  # [M, Gn, G]
    aw = np.abs(_by_group(w.astype(np.float64), g))  # [N, Gn, G]
    mag = np.einsum("mgk,ngk->mng", ax, aw)
    if z is not None:
        mag += ax.sum(-1)[:, None, :] * np.abs(z.astype(np.float64))[None]
    sc = np.abs(s.astype(np.float64))[None]
    if a is not None:
        sc = sc * np.abs(a)[:, None, :]
    return 2 * (k + 64) * U * (mag * sc).sum(-1) + 1e-30


# every width once in the fast set (alternating sign, zero points on some);
# the complementary combinations are `slow`
FAST = [
    (1, False, True),
    (2, True, False),
    (3, False, True),
    (4, True, False),
    (5, True, True),
    (6, False, False),
    (7, True, False),
    (8, False, True),
]
SLOW = [(b, not s, not z) for b, s, z in FAST]


def _check_float(bits, signed, zero, k=96, g=32, n=9):
    wt = f"{'int' if signed else 'uint'}{bits}"
    fn = gemm_fn("s0", k, n, g, wt, zero=zero)
    for m in (1, 3, 17):
        ins, const, parts = inputs(m, k, n, g, wt, zero=zero)
        ref = interp.run_function(fn, ins)[0]
        out = run(fn, ins, const)
        assert (np.abs(out - ref) <= bound(k, g, parts)).all(), (wt, m)


@pytest.mark.parametrize("bits", range(1, 8))
def test_f32_code_plan_reads_every_code(bits: int) -> None:
    """Each code's (word, position) from `f32_code_plan`, OR-ed into the
    mantissa of 2**(23 - pos) as the kernel does, is exactly 2**(23 - pos) + u
    for gemv.repack's layout (NumPy, independent of the C text)."""
    codes = rng.integers(0, 1 << bits, (3, 64))
    words = gemv.repack(codes, bits, False).reshape(3, 2, bits).astype(np.uint32)
    plan = f32_code_plan(bits)
    for n in range(3):
        for c in range(2):
            w = words[n, c]
            named = {f"w{q}": int(w[q]) for q in range(bits)}
            named |= {f"h{q}": int(w[q]) >> 16 for q in range(bits)}
            for q in range(bits - 1):
                named[f"j{q}_0"] = (int(w[q]) & 0xFFFF) | (int(w[q + 1]) << 16)
                named[f"j{q}_1"] = (int(w[q]) >> 16) | (int(w[q + 1]) & 0xFFFF0000)
            for e, (word, pos) in enumerate(plan):
                assert pos + bits <= 23
                bitsf = (named[word] & (((1 << bits) - 1) << pos)) | ((150 - pos) << 23)
                f = np.array([bitsf & 0xFFFFFFFF], np.uint32).view(np.float32)[0]
                assert float(f) - 2.0 ** (23 - pos) == codes[n, 32 * c + e], (e, pos)


@pytest.mark.parametrize(("bits", "signed", "zero"), FAST)
def test_float_x_every_width_dynamic_m(bits, signed, zero) -> None:
    _check_float(bits, signed, zero)


@pytest.mark.slow
@pytest.mark.parametrize(("bits", "signed", "zero"), SLOW)
def test_float_x_other_sign_and_zero(bits, signed, zero) -> None:
    _check_float(bits, signed, zero)


# (90, 32): K % 4 != 0, so x is read one float at a time (no float4)
@pytest.mark.parametrize(("k", "g"), [(80, 32), (160, 64), (48, 32), (90, 32)])
def test_short_last_group_and_partial_chunk(k, g) -> None:
    ins, const, parts = inputs(3, k, 7, g, "int4", zero=False)
    fn = gemm_fn(3, k, 7, g, "int4")
    ref = interp.run_function(fn, ins)[0]
    assert (np.abs(run(fn, ins, const) - ref) <= bound(k, g, parts)).all()


@pytest.mark.parametrize("wt", ["f4e2m1", "f6e3m2", "f6e2m3", "f8e4m3fn"])
def test_float_codes(wt) -> None:
    """Shift-mask-multiply decode (fdecode.py) inside the kernel."""
    fn = gemm_fn(5, 64, 11, 32, wt)
    ck = lower_kernel(fn, "sm_80", [1, 2])
    assert "lut[" not in ck.source and "__uint_as_float" in ck.source
    ins, const, parts = inputs(5, 64, 11, 32, wt)
    ref = interp.run_function(fn, ins)[0]
    assert (np.abs(run(fn, ins, const) - ref) <= bound(64, 32, parts)).all()


@pytest.mark.parametrize(
    ("wt", "zero"), [("int4", False), ("uint8", True), ("int8", False), ("uint3", True)]
)
def test_int8_activations_bit_exact(wt, zero) -> None:
    # K = 320, G = 32: 10 groups, so the f64 sum runs NumPy's 8-accumulator order
    fn = gemm_fn("s0", 320, 5, 32, wt, zero=zero, xint=True, act=True)
    for m in (1, 6):
        ins, const, _ = inputs(m, 320, 5, 32, wt, zero=zero, xint=True, act=True)
        np.testing.assert_array_equal(
            run(fn, ins, const), interp.run_function(fn, ins)[0]
        )


def test_epilogue_silu_mul_and_residual() -> None:
    tail = """    %sg = lp.sigmoid %y : YT
    %t = lp.mul %y, %sg : YT
    %r = lp.add RES, %t : YT
    lp.yield %r : YT"""
    fn = gemm_fn(3, 64, 6, 32, "int4", tail=tail)
    ins, const, _ = inputs(3, 64, 6, 32, "int4", exact=True)
    ins.append((rng.integers(-8, 9, (3, 6)) / 8).astype(np.float32))
    ref = interp.run_function(fn, ins)[0]
    out = run(fn, ins, const)
    # y is exact (eighths x, power-of-two scales); sigmoid's expf is within 2 ulp
    # of NumPy's, then 1/(1+e), mul and add round: 8 ulp of the magnitudes
    assert (np.abs(out - ref) <= 8 * 2.0**-23 * (np.abs(ref) + 8)).all()


def test_exact_data_bit_for_bit() -> None:
    fn = gemm_fn(4, 64, 5, 32, "uint4", zero=True)
    ins, const, _ = inputs(4, 64, 5, 32, "uint4", zero=True, exact=True)
    np.testing.assert_array_equal(run(fn, ins, const), interp.run_function(fn, ins)[0])


@pytest.mark.parametrize(
    ("k", "g", "const", "zero", "xint"),
    [
        (64, 16, [1, 2], False, False),  # group below one 32-code chunk
        (64, 32, [2], False, False),  # the weight is not a constant
        (40, 8, [1, 2, 3], True, False),  # groups of 8, zero point
        (42, 16, [1, 2], False, True),  # int8 x with K % 4 != 0
    ],
)
def test_what_the_fast_kernel_declines_runs_in_the_generic_one(
    k: int, g: int, const: list[int], zero: bool, xint: bool
) -> None:
    """The generic kernel (thread per output, value-domain operands) takes
    the region; it sums each group in order, so the bound is the same."""
    fn = gemm_fn(3, k, 5, g, "uint4" if zero else "int4", zero=zero, xint=xint)
    req = CudaRequest(fn, "sm_80", frozenset(const), "k")
    assert gen_fused_group_matmul(req) is None
    ck = lower_kernel(fn, "sm_80", const)
    assert ck is not None and "generic" in ck.note, ck and ck.note
    ins, _, parts = inputs(3, k, 5, g, "uint4" if zero else "int4", zero, xint)
    ref = interp.run_function(fn, ins)[0]
    out = run_cuda(fn, ins, const_inputs=const, device="emulate")[0]
    if xint:
        np.testing.assert_array_equal(out, ref)
    else:
        assert (np.abs(out - ref) <= bound(k, g, parts)).all()
    SOURCES.append(ck.source)


@pytest.mark.parametrize(("el", "k", "g"), [("f32", 80, 32), ("!lp.int<8>", 40, 16)])
def test_group_sum_bit_exact(el, k, g) -> None:
    gn = -(-k // g)
    ot = "f32" if el == "f32" else "!lp.int<32>"
    xt, st = f"tensor<?x{k}x{el}>", f"tensor<?x{gn}x{ot}>"
    text = f"""func.func @kernel(%x: {xt} {{lp.dims = "s0,{k}"}}) -> {st} {{
  %s = lp.group_sum %x group {g} {{lp.dims = "s0,{gn}"}} : {xt} -> {st}
  func.return %s : tensor<?x{gn}x{ot}>
}}"""
    fn = next(iter(parse_module(text).body.block.ops))
    for m in (1, 7):
        if el == "f32":
            x = rng.standard_normal((m, k)).astype(np.float32)
        else:
            x = rng.integers(-128, 128, (m, k)).astype(np.int8)
        out = run_cuda(fn, [x], device="emulate")[0]
        np.testing.assert_array_equal(out, interp.run_function(fn, [x])[0])
    SOURCES.append(lower_kernel(fn).source)


def test_nvcc_compiles_without_spills() -> None:
    """Every source for sm_80 (the register budget that binds); every other
    one for sm_90 too (each costs ~1 s of nvcc)."""
    assert SOURCES, "run with the other tests of this module"
    for i, src in enumerate(SOURCES):
        for arch in ("sm_80", "sm_90")[: 1 + (i % 2 == 0)]:
            for name, v in nvcc.ptxas_info(src, arch).items():
                assert v["spill_stores"] == 0 and v["spill_loads"] == 0, (arch, name, v)
