"""Native group-GEMM kernels (lpcc/codegen/llvm/kernels/group_matmul.py).

Each kernel function runs in the reference interpreter and natively on every
ISA level this host runs (levels it lacks are compiled to object code only;
the AVX-512 layouts also run here through portable stand-ins for the AVX-512
instructions). Results with int8 activations, `group_dequant_reduce` and
`group_sum` must equal the interpreter bit for bit; float-activation results
must lie within an f32 rounding bound derived next to the assert.
"""

from __future__ import annotations

import numpy as np
import pytest
from xdsl.dialects import func

from lpcc.codegen.llvm import isa as isa_mod
from lpcc.codegen.llvm.kernel import elem, shape
from lpcc.codegen.llvm.kernels import group_matmul as gm_mod
from lpcc.codegen.llvm.lower import kernel_meta, lower_kernel, run_native
from lpcc.codegen.llvm.runner import native_kernel_fn
from lpcc.ir import interp
from lpcc.ir.dialect import parse_module, to_attr
from lpcc.ir.dtypes import dtype
from lpcc.ir.symbolic import bind, evaluate_shape

pytestmark = pytest.mark.skipif(
    isa_mod.host_arch() != "x86_64", reason="native kernels are built for x86-64"
)

RUN = [i for i in ("avx512", "avx2", "generic") if isa_mod.host_has(i)]
NO_RUN = [i for i in ("avx512", "avx2", "generic") if not isa_mod.host_has(i)]
U = 2.0**-24  # f32 unit roundoff


def _fn(text: str) -> func.FuncOp:
    module = parse_module("builtin.module {\n" + text + "\n}")
    return next(op for op in module.ops if isinstance(op, func.FuncOp))


def _t(dims, elt: str) -> str:
    return (
        "tensor<"
        + "x".join(str("?" if isinstance(d, str) else d) for d in dims)
        + f"x{elt}>"
    )


def _dims(dims) -> str:
    if all(isinstance(d, int) for d in dims):
        return ""
    return ' {lp.dims = "' + ",".join(str(d) for d in dims) + '"}'


def fused(
    lead,
    n: int,
    k: int,
    g: int,
    wt: str,
    *,
    xint: bool = False,
    zero: str | None = None,
    act: bool = False,
    st: str = "f16",
    tail: str = "",
) -> func.FuncOp:
    """func @kernel(x, w, s[, z, S][, a][, bias]) { lp.fused epilogue {...} }."""
    gn = -(-k // g)
    w = to_attr(dtype(wt))
    xe, pe = ("!lp.int<8>", "!lp.int<32>") if xint else ("f32", "f32")
    x_t, p_t = _t((*lead, k), xe), _t((*lead, n, gn), pe)
    w_t, s_t, y_t = (
        _t((n, k), w),
        _t((n, gn), to_attr(dtype(st))),
        _t((*lead, n), "f32"),
    )
    args = [("x", x_t, _dims((*lead, k))), ("w", w_t, ""), ("s", s_t, "")]
    red = f"%r = lp.group_dequant_reduce %p : {p_t} scale %s1 : {s_t}"
    if zero:
        z_t, sum_t = _t((n, gn), to_attr(dtype(zero))), _t((*lead, gn), pe)
        args += [("z", z_t, ""), ("S", sum_t, _dims((*lead, gn)))]
        red += f" zero %z1 : {z_t} sums %S1 : {sum_t}"
    if act:
        a_t = _t((*lead, gn), "f32")
        args.append(("a", a_t, _dims((*lead, gn))))
        red += f" act_scale %a1 : {a_t}"
    red += _dims((*lead, n)) + f" -> {y_t}"
    out = "%r"
    body = ""
    if tail:
        b_t = _t((*[1] * len(lead), n), "f32")
        one_t = _t([1] * (len(lead) + 1), "f32")
        args.append(("bias", b_t, ""))
        body = (
            f"%c = lp.constant splat 0.5 : {one_t}\n"
            f"%t1 = lp.add %r, %bias1 : ({y_t}, {b_t}) -> {y_t}\n"
            f"%t2 = lp.mul %t1, %c : ({y_t}, {one_t}) -> {y_t}\n"
            f"%t3 = lp.tanh %t2 : {y_t}\n"
            f"%t4 = lp.mul %t3, %t1 : {y_t}\n"
        )
        out = "%t4"
    sig = ", ".join(f"%{a}: {t}{d}" for a, t, d in args)
    names = ", ".join(f"%{a}" for a, _, _ in args)
    types = ", ".join(t for _, t, _ in args)
    bargs = ", ".join(f"%{a}1: {t}" for a, t, _ in args)
    return _fn(
        f"""func.func @kernel({sig}) -> {y_t} {{
  %y = lp.fused epilogue({names}) {_dims((*lead, n)).strip()} : ({types}) -> {y_t} {{
  ^bb0({bargs}):
    %p = lp.group_matmul %x1, %w1 group {g}{_dims((*lead, n, gn))}
      : ({x_t}, {w_t}) -> {p_t}
    {red}
    {body}
    lp.yield {out} : {y_t}
  }}
  func.return %y : {y_t}
}}"""
    )


def weights(rng, wt: str, n: int, k: int) -> np.ndarray:
    dt = dtype(wt)
    if dt.kind == "int":
        return rng.integers(dt.min, int(dt.max) + 1, (n, k)).astype(dt.value_dtype)
    codes = rng.integers(0, 2**dt.bits, (n, k)).astype(np.uint64)
    vals = dt.decode(codes).astype(np.float32)
    return np.where(np.isfinite(vals), vals, 0).astype(np.float32)


def fused_inputs(
    rng, m_shape, n, k, g, wt, *, xint=False, zero=None, act=False, st="f16", tail=False
):
    gn = -(-k // g)
    if xint:
        x = rng.integers(-128, 128, (*m_shape, k)).astype(np.int8)
    else:
        x = rng.standard_normal((*m_shape, k)).astype(np.float32)
    s = dtype(st).to_values(
        rng.uniform(0.01, 0.2, (n, gn)) * rng.choice([-1, 1], (n, gn))
    )
    ins = [x, weights(rng, wt, n, k), s]
    if zero:
        zdt = dtype(zero)
        ins.append(rng.integers(0, int(zdt.max) + 1, (n, gn)).astype(zdt.value_dtype))
        if xint:
            ins.append(rng.integers(-3000, 3000, (*m_shape, gn)).astype(np.int32))
        else:
            ins.append((rng.standard_normal((*m_shape, gn)) * 4).astype(np.float32))
    if act:
        ins.append(rng.uniform(1e-3, 1e-2, (*m_shape, gn)).astype(np.float32))
    if tail:
        ins.append(rng.standard_normal((*[1] * len(m_shape), n)).astype(np.float32))
    return ins


def f32_bound(ins, g: int, zero: bool, wmin: float = 0.0) -> np.ndarray:
    """|native - reference| bound for float activations, per output.

    Both sides compute P = sum_{k in g} x w in f32 (different orders), each
    within gamma_G * sum |x w| of the exact value (gamma_n ~ n u). Signed
    codes of <= 4 bits go natively as P = sum x (w - min) + min sum x, whose
    two f32 sums are within gamma_G sum |x| (|w| + 2 |min|): so |w| + 2|min|
    stands for |w| below. The native epilogue adds P - z S and s * (...)
    over Gn groups in f32: (Gn + 2) u * sum_g |s| (|P| + |z S|); the
    reference's f64 epilogue rounds once (u |y|, inside the same sum). So,
    per output,
      |diff| <= (2 G + Gn + 4) u * sum_g |s| (sum_{k in g} |x| a + |z S|),
    a = |w| + 2 |min|.
    """
    x, w, s = (np.asarray(a, np.float64) for a in ins[:3])
    w = np.abs(w) + 2 * abs(wmin)
    k = w.shape[1]
    gn = -(-k // g)
    pad = gn * g - k
    ax = np.abs(np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, pad)])).reshape(
        *x.shape[:-1], gn, g
    )
    aw = np.abs(np.pad(w, [(0, 0), (0, pad)])).reshape(w.shape[0], gn, g)
    mag = np.einsum("...gk,ngk->...ng", ax, aw)
    if zero:
        z, sums = np.asarray(ins[3], np.float64), np.asarray(ins[4], np.float64)
        mag = mag + np.abs(z) * np.abs(sums)[..., None, :]
    total = (np.abs(s) * mag).sum(axis=-1)
    return (2 * g + gn + 4) * U * total + 1e-30


def consts(zero: bool) -> list[int]:
    return [1, 2, 3] if zero else [1, 2]


_COMPILED: dict[tuple[int, str], object] = {}


def native(fn: func.FuncOp, level: str, const_inputs, ins) -> list[np.ndarray]:
    """`run_native`, compiling each (function, level) once for several inputs."""
    key = (id(fn), level)
    if key not in _COMPILED:
        lowered = lower_kernel(fn, level, const_inputs)
        assert lowered is not None, f"no native kernel on {level}"
        nk, obj = lowered
        n_out = len(fn.function_type.outputs.data)
        meta = kernel_meta(nk, obj, len(fn.body.block.args), n_out)
        _COMPILED[key] = (fn, nk, native_kernel_fn(obj.object_code, meta))
    _, nk, run = _COMPILED[key]
    env: dict[str, int] = {}
    arrays = []
    for i, (arg, x) in enumerate(zip(fn.body.block.args, ins, strict=True)):
        x = np.ascontiguousarray(np.asarray(x, elem(arg).value_dtype))
        bind(shape(arg), x.shape, env, f"input #{i}")
        arrays.append(np.ascontiguousarray(nk.repack[i].fn(x)) if i in nk.repack else x)
    ret = fn.body.block.last_op
    outs = [
        np.zeros(evaluate_shape(shape(v), env), elem(v).value_dtype)
        for v in ret.operands
    ]
    run(arrays, outs, env)
    return outs


def check_fused(fn, ins, g, *, xint=False, zero=False, isas=RUN):
    ref = interp.run_function(fn, ins)[0]
    for level in isas:
        got = native(fn, level, consts(zero), ins)[0]
        assert got.shape == ref.shape and got.dtype == ref.dtype
        if xint:
            np.testing.assert_array_equal(got, ref, err_msg=level)
        else:
            wdt = elem(fn.body.block.args[1])
            bound = f32_bound(ins, g, zero, float(wdt.min) if wdt.kind == "int" else 0)
            err = np.abs(got.astype(np.float64) - ref.astype(np.float64))
            assert np.all(err <= bound), (
                f"{level}: max err/bound {np.max(err / bound):.3g}"
            )
    for level in NO_RUN:
        assert lower_kernel(fn, level, consts(zero)) is not None


INTS = [f"{s}int{b}" for b in range(1, 9) for s in ("", "u")]
BEST = RUN[:1]  # the host's best level

# (M, N, K, G): N odd, K with and without a short last group, G 32/64/128.
SHAPES = [(3, 37, 96, 32), (1, 40, 200, 64), (2, 9, 256, 128), (1, 70, 100, 32)]


@pytest.mark.parametrize("wt", INTS)
def test_fused_float_x_every_width(wt: str) -> None:
    i = INTS.index(wt)
    m, n, k, g = SHAPES[i % len(SHAPES)]
    rng = np.random.default_rng(i)
    fn = fused([m], n, k, g, wt)
    check_fused(fn, fused_inputs(rng, [m], n, k, g, wt), g, isas=BEST)


@pytest.mark.parametrize("wt", INTS)
def test_fused_int8_x_bit_exact(wt: str) -> None:
    i = INTS.index(wt)
    m, n, k, g = SHAPES[(i + 1) % len(SHAPES)]
    rng = np.random.default_rng(100 + i)
    fn = fused([m], n, k, g, wt, xint=True, act=True)
    ins = fused_inputs(rng, [m], n, k, g, wt, xint=True, act=True)
    check_fused(fn, ins, g, xint=True, isas=BEST)


@pytest.mark.parametrize("xint", [False, True])
@pytest.mark.parametrize("wt", ["int1", "uint3", "int4", "int7", "uint8"])
def test_fused_generic_level(wt: str, xint: bool) -> None:
    """ "generic" shares the layouts and unpacking with AVX2 (portable
    vectors; int8 x there multiplies i32 lanes): one-plane signed and
    unsigned, multi-plane and 8-bit codes."""
    m, n, k, g = 3, 21, 100, 32
    rng = np.random.default_rng(21)
    fn = fused([m], n, k, g, wt, xint=xint, act=xint)
    ins = fused_inputs(rng, [m], n, k, g, wt, xint=xint, act=xint)
    check_fused(fn, ins, g, xint=xint, isas=["generic"])


@pytest.mark.parametrize("xint", [False, True])
def test_fused_m17(xint: bool) -> None:
    """M = 17: four tiles of 4 rows of x (chunked accumulators) and one of 1."""
    m, n, k, g = 17, 45, 160, 64
    rng = np.random.default_rng(17)
    fn = fused([m], n, k, g, "int4", xint=xint, act=xint)
    ins = fused_inputs(rng, [m], n, k, g, "int4", xint=xint, act=xint)
    check_fused(fn, ins, g, xint=xint, isas=BEST)


@pytest.mark.parametrize("xint", [False, True])
@pytest.mark.parametrize("wt", ["uint4", "uint3", "uint8"])
def test_fused_zero_points(wt: str, xint: bool) -> None:
    m, n, k, g = 2, 33, 160, 64
    rng = np.random.default_rng(7)
    fn = fused([m], n, k, g, wt, xint=xint, zero=wt, act=xint)
    ins = fused_inputs(rng, [m], n, k, g, wt, xint=xint, zero=wt, act=xint)
    check_fused(fn, ins, g, xint=xint, zero=True, isas=BEST if wt != "uint4" else RUN)


@pytest.mark.parametrize("xint", [False, True])
def test_fused_dynamic_m_rank3(xint: bool) -> None:
    """One kernel for x[2, s0, K]: rows of x in tiles of 4, 2 and 1."""
    n, k, g = 21, 96, 32
    fn = fused([2, "s0"], n, k, g, "int4", xint=xint, act=xint)
    for m in (1, 3, 8):
        rng = np.random.default_rng(m)
        ins = fused_inputs(rng, [2, m], n, k, g, "int4", xint=xint, act=xint)
        check_fused(fn, ins, g, xint=xint)


@pytest.mark.parametrize("st", ["f32", "bf16", "e8m0"])
def test_fused_scale_types(st: str) -> None:
    m, n, k, g = 2, 24, 64, 32
    rng = np.random.default_rng(3)
    fn = fused([m], n, k, g, "int4", st=st, xint=True, act=True)
    ins = fused_inputs(rng, [m], n, k, g, "int4", st=st, xint=True, act=True)
    check_fused(fn, ins, g, xint=True, isas=BEST)


@pytest.mark.parametrize("wt", ["f4e2m1", "f6e3m2", "f8e4m3fn"])
def test_fused_float_weight_formats(wt: str) -> None:
    m, n, k, g = 3, 19, 64, 32
    rng = np.random.default_rng(5)
    fn = fused([m], n, k, g, wt)
    check_fused(fn, fused_inputs(rng, [m], n, k, g, wt), g)


def test_fused_elementwise_tail() -> None:
    """Bias add and an activation after the reduce run in the same kernel."""
    m, n, k, g = 3, 13, 64, 32
    rng = np.random.default_rng(9)
    fn = fused([1, m], n, k, g, "int4", xint=True, act=True, tail="gelu")
    ins = fused_inputs(rng, [1, m], n, k, g, "int4", xint=True, act=True, tail=True)
    ref = interp.run_function(fn, ins)[0]
    for level in RUN:
        got = native(fn, level, [1, 2], ins)[0]
        # y itself is bit-exact; tanh is the elementwise kernels' polynomial
        # (a few ulp, tests/codegen/test_elementwise.py): 1e-6 relative.
        np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6 * np.abs(ref).max())


def test_avx512_layouts_run_with_portable_stand_ins(monkeypatch) -> None:
    """The AVX-512 plans (16-row vectors, vpdpbusd quads, 8-bit codes with
    u = q + 128) on this host: vpdpbusd and the 16-entry table in portable IR."""
    if "avx2" not in RUN:
        pytest.skip("needs an AVX2 host")
    monkeypatch.setattr(gm_mod, "_PLAN_ISA", "avx512")
    rng = np.random.default_rng(11)
    cases = [("int8", True, None), ("uint3", True, "uint3"), ("f4e2m1", False, None)]
    for wt, xint, zero in cases:
        m, n, k, g = 2, 37, 100, 32
        fn = fused([m], n, k, g, wt, xint=xint, zero=zero, act=xint)
        ins = fused_inputs(rng, [m], n, k, g, wt, xint=xint, zero=zero, act=xint)
        check_fused(fn, ins, g, xint=xint, zero=zero is not None, isas=["avx2"])


def test_avx512_compiles_to_vnni_and_zmm() -> None:
    from lpcc.codegen.llvm.jit import asm
    from lpcc.codegen.llvm.kernel import generate, request_for

    fn = fused([1], 64, 128, 32, "int4", xint=True, act=True)
    text = asm(generate(request_for(fn, "avx512", [1, 2])).ir, "avx512")
    assert "vpdpbusd" in text and "zmm" in text
    fn = fused([1], 64, 128, 32, "f4e2m1")
    text = asm(generate(request_for(fn, "avx512", [1, 2])).ir, "avx512")
    assert "vpermps" in text and "vfmadd" in text


def group_matmul_fn(xe: str, pe: str, wt: str, n: int, k: int, g: int) -> func.FuncOp:
    gn = -(-k // g)
    x_t, w_t, p_t = (
        _t((2, "s0", k), xe),
        _t((n, k), to_attr(dtype(wt))),
        _t((2, "s0", n, gn), pe),
    )
    return _fn(
        f"""func.func @kernel(%x: {x_t}{_dims((2, "s0", k))}, %w: {w_t}) -> {p_t} {{
  %p = lp.group_matmul %x, %w group {g}{_dims((2, "s0", n, gn))}
    : ({x_t}, {w_t}) -> {p_t}
  func.return %p : {p_t}
}}"""
    )


@pytest.mark.parametrize("wt", ["int4", "uint3", "int8"])
@pytest.mark.parametrize("xint", [False, True])
def test_group_matmul_alone(wt: str, xint: bool) -> None:
    n, k, g = 19, 72, 32
    xe, pe = ("!lp.int<8>", "!lp.int<32>") if xint else ("f32", "f32")
    fn = group_matmul_fn(xe, pe, wt, n, k, g)
    rng = np.random.default_rng(13)
    for m in (1, 3):
        if xint:
            x = rng.integers(-128, 128, (2, m, k)).astype(np.int8)
        else:
            x = rng.standard_normal((2, m, k)).astype(np.float32)
        w = weights(rng, wt, n, k)
        ref = interp.run_function(fn, [x, w])[0]
        for level in RUN if wt == "int4" else BEST:
            got = native(fn, level, [1], [x, w])[0]
            if xint:
                np.testing.assert_array_equal(got, ref)
            else:
                # Two f32 sums of at most G products, each within G u sum|x w|.
                ax = np.abs(np.pad(x, [(0, 0), (0, 0), (0, 24)])).reshape(2, m, 3, g)
                aw = np.abs(np.pad(w.astype(np.float64), [(0, 0), (0, 24)])).reshape(
                    n, 3, g
                )
                bound = 2 * g * U * np.einsum("bmgk,ngk->bmng", ax, aw) + 1e-30
                assert np.all(np.abs(got - ref) <= bound)


@pytest.mark.parametrize("pe", ["f32", "!lp.int<32>"])
@pytest.mark.parametrize("gn", [3, 20, 300])
def test_group_dequant_reduce_alone_bit_exact(pe: str, gn: int) -> None:
    """NumPy's pairwise order over groups (300 > 128 splits into blocks)."""
    n = 5
    p_t, s_t, z_t = (
        _t(("s0", n, gn), pe),
        _t((n, gn), "bf16"),
        _t((n, gn), "!lp.uint<4>"),
    )
    sum_t, a_t, y_t = _t(("s0", gn), pe), _t(("s0", gn), "f32"), _t(("s0", n), "f32")
    fn = _fn(
        f"""func.func @kernel(%p: {p_t}{_dims(("s0", n, gn))}, %s: {s_t}, %z: {z_t},
    %S: {sum_t}{_dims(("s0", gn))}, %a: {a_t}{_dims(("s0", gn))}) -> {y_t} {{
  %y = lp.group_dequant_reduce %p : {p_t} scale %s : {s_t} zero %z : {z_t}
    sums %S : {sum_t} act_scale %a : {a_t}{_dims(("s0", n))} -> {y_t}
  func.return %y : {y_t}
}}"""
    )
    rng = np.random.default_rng(gn)
    m = 4
    if pe == "f32":
        p = (rng.standard_normal((m, n, gn)) * 100).astype(np.float32)
        sums = (rng.standard_normal((m, gn)) * 30).astype(np.float32)
    else:
        p = rng.integers(-10000, 10000, (m, n, gn)).astype(np.int32)
        sums = rng.integers(-500, 500, (m, gn)).astype(np.int32)
    s = dtype("bf16").to_values(rng.uniform(0.01, 1, (n, gn)))
    z = rng.integers(0, 16, (n, gn)).astype(np.uint8)
    a = rng.uniform(1e-3, 0.1, (m, gn)).astype(np.float32)
    ins = [p, s, z, sums, a]
    ref = interp.run_function(fn, ins)[0]
    for level in RUN:
        np.testing.assert_array_equal(run_native(fn, ins, isa=level)[0], ref)


@pytest.mark.parametrize("xe", ["f32", "!lp.int<8>"])
@pytest.mark.parametrize(("k", "g"), [(100, 32), (37, 5), (1000, 160)])
def test_group_sum_alone_bit_exact(xe: str, k: int, g: int) -> None:
    """f32: pairwise per group, a short last group zero-padded to G first."""
    gn = -(-k // g)
    se = "f32" if xe == "f32" else "!lp.int<32>"
    x_t, s_t = _t(("s0", 3, k), xe), _t(("s0", 3, gn), se)
    fn = _fn(
        f"""func.func @kernel(%x: {x_t}{_dims(("s0", 3, k))}) -> {s_t} {{
  %s = lp.group_sum %x group {g}{_dims(("s0", 3, gn))} : {x_t} -> {s_t}
  func.return %s : {s_t}
}}"""
    )
    rng = np.random.default_rng(k)
    if xe == "f32":
        x = rng.standard_normal((2, 3, k)) * 10.0 ** rng.integers(-3, 4, (2, 3, k))
        x = x.astype(np.float32)
    else:
        x = rng.integers(-128, 128, (2, 3, k)).astype(np.int8)
    ref = interp.run_function(fn, [x])[0]
    for level in RUN:
        np.testing.assert_array_equal(run_native(fn, [x], isa=level)[0], ref)


def test_kmajor_layout_is_q4_nibbles() -> None:
    """Hand-derived: int4 rows 0..7 of a block, k = 0..7 in one dword each,
    k at bits 4k, codes biased to q + 8 (float x); int8 x on AVX2 takes
    quads: row r's dword holds k = 0..3, byte c = q[r, c] + 8, low nibbles
    first then k = 4..7 in the high nibbles."""
    fn = fused([1], 8, 8, 8, "int4")
    nk = lower_kernel(fn, "avx2", [1, 2])[0]
    w = (np.arange(64).reshape(8, 8) % 16 - 8).astype(np.int8)
    words = nk.repack[1].fn(w).view("<u4")
    want = [sum((int(w[n, k]) + 8) << (4 * k) for k in range(8)) for n in range(8)]
    assert words.tolist() == want and nk.rows == 1  # N = 8: one vector, one block
    fn = fused([1], 8, 8, 8, "int4", xint=True)
    nk = lower_kernel(fn, "avx2", [1, 2])[0]
    blob = nk.repack[1].fn(w).reshape(8, 4)  # rows x bytes of their dword
    want = [
        [(int(w[n, c]) + 8) | ((int(w[n, c + 4]) + 8) << 4) for c in range(4)]
        for n in range(8)
    ]
    assert blob.tolist() == want


def test_unsupported_forms_return_none() -> None:
    rng = np.random.default_rng(0)
    fn = fused([2], 8, 64, 32, "int4")
    ins = fused_inputs(rng, [2], 8, 64, 32, "int4")
    # weights that are not constants cannot be repacked
    assert run_native(fn, ins, isa=RUN[-1], const_inputs=[2]) is None
    # a result narrower than f32 (rounded twice otherwise)
    text = """func.func @kernel(%p: tensor<2x8x2xf32>, %s: tensor<8x2xf16>)
    -> tensor<2x8xf16> {
  %y = lp.group_dequant_reduce %p : tensor<2x8x2xf32> scale %s : tensor<8x2xf16>
    -> tensor<2x8xf16>
  func.return %y : tensor<2x8xf16>
}"""
    assert lower_kernel(_fn(text), RUN[-1]) is None
