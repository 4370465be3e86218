"""Native LUT GEMV kernels (lpcc/codegen/llvm/kernels/lut.py) against the interpreter.

Each case builds a kernel function from MLIR text and runs it through
`interp.run_function` and `lower.run_native` on the same inputs. Tables come
from random integers in [-127, 127] (what lp.lut_precompute produces), planes
from random codes, so the integer table sums are exact on both sides; only
the float epilogue differs, within the f32 bound derived in `_check_y` from
the sum of |terms| (`_magnitude`). The precompute ops must be bit identical
to the interpreter. Every level the host runs is tested (avx2 and generic
here); levels it cannot run compile (avx512), and the avx512 schedule and
W = 64 layout also run emulated on AVX2 instructions.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from lpcc.codegen.llvm import isa as isa_mod
from lpcc.codegen.llvm.jit import asm, compile_ir
from lpcc.codegen.llvm.kernel import request_for
from lpcc.codegen.llvm.kernels import lut
from lpcc.codegen.llvm.lower import kernel_meta, lower_kernel, run_native
from lpcc.codegen.llvm.runner import native_kernel_fn
from lpcc.ir import interp
from lpcc.ir.dialect import parse_module
from lpcc.ir.symbolic import bind, evaluate_shape

pytestmark = pytest.mark.skipif(
    isa_mod.host_arch() != "x86_64", reason="native kernels are built for x86-64"
)

RUNNABLE = [i for i in ("avx512", "avx2", "generic") if isa_mod.host_has(i)]
COMPILE_ONLY = [i for i in ("avx512", "avx2") if not isa_mod.host_has(i)]
U = 2.0**-24  # f32 unit roundoff


def _t(dims, ty: str) -> str:
    return (
        f"tensor<{'x'.join(str(d) if isinstance(d, int) else '?' for d in dims)}x{ty}>"
    )


def _dims_attr(dims) -> str:
    if all(isinstance(d, int) for d in dims):
        return ""
    return f' {{lp.dims = "{",".join(str(d) for d in dims)}"}}'


def lut_func(
    *,
    lead=(1,),
    n=16,
    k=64,
    bits=2,
    group=32,
    act=32,
    signed=True,
    half=True,
    table="int8",
    zero=None,  # None, "uint", "int" or "f32"
    scale="f16",
    fused=True,
    g=4,
):
    """A kernel function: lut_accumulate (+ group_dequant_reduce, fused)."""
    j, gn = k // g, k // group
    e = 2 ** (g - 1) if half else 2**g
    tt = "!lp.int<8>" if table == "int8" else "f32"
    uint = "i1" if bits == 1 else f"!lp.uint<{bits}>"
    zt = {"uint": uint, "int": f"!lp.int<{bits}>", "f32": "f32"}.get(zero)
    args = [
        ("t", (*lead, j, e), tt),
        ("p", (bits, n, j), f"!lp.uint<{g}>"),
        ("s", (*lead, gn), "f32"),
    ]
    if table == "int8":
        args.append(("ls", (*lead, k // act), "f32"))
    if fused:
        args.append(("w", (n, gn), scale))
        if zero:
            args.append(("z", (n, gn), zt))
    sig = ", ".join(f"%{a}: {_t(d, ty)}{_dims_attr(d)}" for a, d, ty in args)
    types = {a: _t(d, ty) for a, d, ty in args}
    pd, yd = (*lead, n, gn), (*lead, n)
    ls = " scale %ls1" if table == "int8" else ""
    acc_in = ["t", "p", "s"] + (["ls"] if table == "int8" else [])
    sg = " signed" if signed else ""
    acc = (
        f"lp.lut_accumulate %t1, %p1, %s1{ls} group {group}{sg}{_dims_attr(pd)} : "
        f"({', '.join(types[a] for a in acc_in)}) -> {_t(pd, 'f32')}"
    )
    if not fused:
        body = acc.replace("%t1", "%t").replace("%p1", "%p").replace("%s1", "%s")
        body = body.replace("%ls1", "%ls")
        text = (
            f"func.func @kernel({sig}) -> {_t(pd, 'f32')} {{\n"
            f"  %r = {body}\n  func.return %r : {_t(pd, 'f32')}\n}}"
        )
    else:
        zs = f" zero %z1 : {types['z']} sums %s1 : {types['s']}" if zero else ""
        names = [a for a, _, _ in args]
        bb = ", ".join(f"%{a}1: {types[a]}" for a in names)
        text = (
            f"func.func @kernel({sig}) -> {_t(yd, 'f32')} {{\n"
            f"  %y = lp.fused epilogue({', '.join('%' + a for a in names)}) : "
            f"({', '.join(types[a] for a in names)}) -> {_t(yd, 'f32')} {{\n"
            f"  ^bb0({bb}):\n"
            f"    %pp = {acc}\n"
            f"    %r = lp.group_dequant_reduce %pp : {_t(pd, 'f32')} scale %w1 : "
            f"{types['w']}{zs}{_dims_attr(yd)} -> {_t(yd, 'f32')}\n"
            f"    lp.yield %r : {_t(yd, 'f32')}\n  }}\n"
            f"  func.return %y : {_t(yd, 'f32')}\n}}"
        )
    module = parse_module(text)
    fn = next(iter(module.ops))
    return fn, [a for a, _, _ in args]


def lut_inputs(
    names,
    *,
    m_shape,
    n,
    k,
    bits,
    group,
    act,
    half,
    table,
    zero,
    g=4,
    seed=0,
    full_range=False,
):
    """Random value-domain inputs for `lut_func`'s arguments."""
    rng = np.random.default_rng(seed)
    j, gn = k // g, k // group
    e = 2 ** (g - 1) if half else 2**g
    vals = {}
    if table == "int8":
        lo = -127 if full_range else -60
        vals["t"] = rng.integers(lo, -lo + 1, (*m_shape, j, e)).astype(np.int8)
        vals["ls"] = rng.uniform(0.001, 0.02, (*m_shape, k // act)).astype(np.float32)
    else:
        vals["t"] = rng.normal(0, 1, (*m_shape, j, e)).astype(np.float32)
    vals["p"] = rng.integers(0, 2**g, (bits, n, j)).astype(np.uint8)
    vals["s"] = rng.normal(0, 4, (*m_shape, gn)).astype(np.float32)
    vals["w"] = (
        (rng.uniform(0.5, 2, (n, gn)) * 0.01).astype(np.float16).astype(np.float32)
    )
    if zero == "uint":
        vals["z"] = rng.integers(0, 2**bits, (n, gn)).astype(np.uint8)
    elif zero == "int":
        vals["z"] = rng.integers(-(2 ** (bits - 1)), 2 ** (bits - 1), (n, gn)).astype(
            np.int8
        )
    elif zero == "f32":
        vals["z"] = rng.normal(0, 2, (n, gn)).astype(np.float32)
    return [vals[a] for a in names]


def run_kernel(nk, fn, xs, isa):
    """`run_native` for a NativeKernel made here (the emulated W = 64 path)."""
    obj = compile_ir(nk.ir, isa)
    args = fn.body.block.args
    env: dict[str, int] = {}
    arrays = []
    for i, (arg, x) in enumerate(zip(args, xs, strict=True)):
        x = np.ascontiguousarray(x)
        bind(lut.shape(arg), x.shape, env, f"input #{i}")
        arrays.append(np.ascontiguousarray(nk.repack[i].fn(x)) if i in nk.repack else x)
    ret = fn.body.block.last_op
    outs = [
        np.zeros(evaluate_shape(lut.shape(v), env), lut.elem(v).value_dtype)
        for v in ret.operands
    ]
    native_kernel_fn(obj.object_code, kernel_meta(nk, obj, len(arrays), len(outs)))(
        arrays, outs, env
    )
    return outs


# -- the layout planner (pure Python: the W = 64 avx512 layout is checked here too)


@pytest.mark.parametrize("w", [32, 64])
@pytest.mark.parametrize("rm", [1, 2])
@pytest.mark.parametrize("bits", range(1, 9))
def test_plan_reads_every_index_once_and_combines_planes(bits, w, rm):
    """Simulate widen (vpmaddubsw) and flush (vpmaddwd) on random lookups:
    output vector v, lane e must be sum_b 2^b L[row v*W/4+e, plane b]."""
    pl = lut.plan(bits, w, rm)
    seen = np.zeros((pl.qs, pl.r, bits), np.int64)
    for qd, role in pl.vectors:
        rows, planes = pl.place(role)
        np.add.at(seen, (qd, rows, planes), 1)
    assert (seen == 1).all()
    assert len(pl.vectors) % 2 == 0 and pl.step_bytes == len(pl.vectors) * w // 2

    rng = np.random.default_rng(bits)
    look = rng.integers(-127, 128, (pl.r, bits))
    accs = {a: np.zeros(w // 2, np.int64) for a in pl.accumulators}
    for role in pl.roles:
        rows, planes = pl.place(role)
        v = look[rows, planes]
        for (c0, c1), acc in pl.widen(role):
            accs[acc] += c0 * v[0::2] + c1 * v[1::2]
    y = np.zeros((pl.outputs, w // 4), np.int64)
    for acc, words in accs.items():
        for (c0, c1), out in pl.flush(acc):
            y[out] += c0 * words[0::2] + c1 * words[1::2]
    want = (look * 2 ** np.arange(bits)).sum(axis=1)
    np.testing.assert_array_equal(y.reshape(-1), want)


def test_repack_puts_each_nibble_where_the_plan_says():
    bits, n, j = 3, 40, 8
    pl = lut.plan(bits, 32, 1)
    rng = np.random.default_rng(1)
    planes = rng.integers(0, 16, (bits, n, j)).astype(np.uint8)
    for half in (False, True):
        blob = lut.repack_planes(pl, planes, half)
        nb = -(-n // pl.r)
        assert blob.size == nb * j * pl.quad_bytes
        chunks = blob.reshape(nb, j // pl.qs, len(pl.vectors) // 2, pl.w)
        for (qd, role), vec in zip(pl.vectors, range(len(pl.vectors)), strict=True):
            nib = (chunks[:, :, vec // 2] >> (4 * (vec % 2))) & 15  # [nb, steps, W]
            rows, pls = pl.place(role)
            for blk in range(nb):
                r = blk * pl.r + rows
                ok = r < n
                want = planes[pls[ok], r[ok]][:, qd :: pl.qs]  # [W', steps]
                if half:
                    want = np.where(want >= 8, want, 7 - want)
                np.testing.assert_array_equal(nib[blk][:, ok].T, want)
                assert (nib[blk][:, ~ok] == 0).all()  # padding rows


# -- lut_accumulate (+ group_dequant_reduce) against the interpreter -----------------


def _case(**kw):
    base = dict(
        lead=(1,),
        n=16,
        k=64,
        bits=2,
        group=32,
        act=32,
        signed=True,
        half=True,
        table="int8",
        zero=None,
    )
    base.update(kw)
    return base


CASES = [
    _case(bits=2, group=128, act=64, k=256, n=70, lead=(1, 1)),  # the decode shape
    _case(bits=1, signed=False, n=17),
    _case(bits=3, half=False, zero="uint", signed=False, group=64, k=128, n=33),
    _case(bits=4, zero="int", act=64, k=128, n=40, lead=(1, 3)),  # act group > G
    _case(bits=5, zero="f32", group=64, act=64, k=128, n=17, lead=(3,)),
    _case(bits=6, half=False, k=96, n=65),
    _case(
        bits=7, signed=False, zero="uint", group=128, act=64, k=256, n=31, lead=(1, 3)
    ),
    _case(bits=8, group=64, k=128, n=50),
    _case(bits=1, zero="uint", k=64, n=8),  # i1 zero points
    _case(bits=2, table="f32", n=20, lead=(1, 3)),
    _case(
        bits=3, table="f32", half=False, zero="uint", signed=False, group=64, k=128, n=9
    ),
    _case(bits=4, n=16, lead=(2, 3)),
    _case(bits=2, lead=(1, "s0"), m_shape=(1, 3), n=33),  # dynamic M
    _case(bits=3, lead=("s0",), m_shape=(11,), act=64, k=128),  # dynamic, > 8 rows
    _case(bits=4, lead=(9,), n=24),  # static M over the 8-row tile
]


def _ids(cases):
    out = []
    for c in cases:
        lead = "x".join(map(str, c.get("m_shape", c["lead"])))
        dyn = "dyn" if "m_shape" in c else ""
        sign, half = "s" if c["signed"] else "u", "half" if c["half"] else "full"
        out.append(
            f"B{c['bits']}{sign}-{half}"
            f"-{c['table']}-z{c['zero']}-G{c['group']}A{c['act']}-K{c['k']}N{c['n']}"
            f"-M{lead}{dyn}"
        )
    return out


def _inputs(case, fused=True, **kw):
    c = dict(case)
    m_shape = c.pop("m_shape", c["lead"])
    fn, names = lut_func(**c, fused=fused)
    c.pop("lead"), c.pop("signed")
    xs = lut_inputs(names, m_shape=m_shape, **c, **kw)
    const = [names.index(a) for a in ("p", "w", "z") if a in names]
    return fn, names, xs, const


def _magnitude(case, names, xs):
    """|terms| the epilogue adds, per output: (P magnitude [..., N, Gn], y magnitude).

    P = 1/2 sum_u ls_u C_u + corr S1 and y = sum_g s (P - z S2): the same
    sums with every term replaced by its absolute value (C_u by
    sum_b 2^b |T[idx]|).
    """
    v = dict(zip(names, xs, strict=True))
    g, bits, group = 4, case["bits"], case["group"]
    table, planes = v["t"].astype(np.float64), v["p"].astype(np.int64)
    mag = sum(
        2**b * np.abs(interp.lut_lookup(table, planes[b], g)) for b in range(bits)
    )  # [..., N, J]
    k = case["k"]
    if case["table"] == "int8":
        unit = min(group, case["act"])
        cu = mag.reshape(*mag.shape[:-1], k // unit, unit // g).sum(-1)
        ls_u = v["ls"].astype(np.float64)[
            ..., (np.arange(k // unit) * unit) // case["act"]
        ]
        cu = cu * ls_u[..., None, :]
    else:
        unit = group
        cu = mag.reshape(*mag.shape[:-1], k // unit, unit // g).sum(-1)
    pm = 0.5 * cu.reshape(*cu.shape[:-1], k // group, group // unit).sum(-1)
    corr = (2**bits - 1) / 2 - (2 ** (bits - 1) if case["signed"] else 0)
    s1 = np.abs(v["s"].astype(np.float64))[..., None, :]
    pm = pm + abs(corr) * s1
    ym = pm
    if "z" in v:
        ym = ym + np.abs(v["z"].astype(np.float64)) * s1
    ym = (np.abs(v["w"].astype(np.float64)) * ym).sum(-1) if "w" in v else None
    return pm, ym


def _check_y(case, names, xs, got, ref):
    """f32 rounding: the native kernel rounds once per product/FMA along a
    chain of (units per group + 2) steps per group and Gn steps over the
    groups; the interpreter rounds P and y to f32 once each. First order:
    |got - ref| <= (Gn + units + 4) * u * (the sum of |terms|), +1 for slack."""
    _, ym = _magnitude(case, names, xs)
    units = case["group"] // min(case["group"], case["act"])
    gn = case["k"] // case["group"]
    bound = (gn + units + 5) * U * ym
    err = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    assert got.shape == ref.shape
    assert (err <= bound).all(), (
        f"max err {err.max():.3g}, bound {bound[err > bound].min():.3g}"
    )


@pytest.mark.parametrize("isa", RUNNABLE)
@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_fused_epilogue_matches_interpreter(case, isa):
    fn, names, xs, const = _inputs(case, full_range=True)
    ref = interp.run_function(fn, xs)[0]
    got = run_native(fn, xs, isa=isa, const_inputs=const)
    assert got is not None, "the LUT generator declined"
    _check_y(case, names, xs, got[0], ref)


P_CASES = [CASES[0], CASES[2], CASES[4], CASES[9], CASES[12]]


@pytest.mark.parametrize("isa", RUNNABLE)
@pytest.mark.parametrize("case", P_CASES, ids=_ids(P_CASES))
def test_accumulate_alone_matches_interpreter(case, isa):
    """P itself: |got - ref| <= (units + 4) u * the sum of |terms| of P."""
    fn, names, xs, const = _inputs(case, fused=False, full_range=True)
    ref = interp.run_function(fn, xs)[0]
    got = run_native(fn, xs, isa=isa, const_inputs=const)
    assert got is not None
    pm, _ = _magnitude(case, names, xs)
    units = case["group"] // min(case["group"], case["act"])
    err = np.abs(got[0].astype(np.float64) - ref)
    assert (err <= (units + 4) * U * pm).all()


EMULATED = [CASES[0], CASES[2], CASES[4], CASES[6], CASES[7], CASES[12]]


@pytest.mark.skipif(not isa_mod.host_has("avx2"), reason="emulation uses AVX2")
@pytest.mark.parametrize("case", EMULATED, ids=_ids(EMULATED))
def test_avx512_layout_runs_emulated_on_avx2(case):
    """The avx512 kernel's schedule (W = 64, vpermb semantics, zmm-sized
    repack) with each 512-bit op done as two 256-bit ones."""
    fn, names, xs, const = _inputs(case, full_range=True)
    req = request_for(fn, "avx2", const)
    spec = lut._parse_epilogue(req.op, req)
    nk = lut._fast_kernel(req, spec, "avx2", emulate=True)
    assert nk is not None and ("64-row" in nk.note or "128-row" in nk.note)
    got = run_kernel(nk, fn, xs, "avx2")[0]
    _check_y(case, names, xs, got, interp.run_function(fn, xs)[0])


@pytest.mark.parametrize("isa", COMPILE_ONLY)
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_levels_this_host_cannot_run_compile(isa, bits):
    case = _case(bits=bits, group=128, act=64, k=256, n=70, zero="uint")
    fn, _, _, const = _inputs(case)
    lowered = lower_kernel(fn, isa, const)
    assert lowered is not None
    nk, obj = lowered
    assert obj.object_code and ("vpshufb" in nk.note or "vpermb" in nk.note)
    text = asm(nk.ir, isa)
    if isa == "avx512":
        assert re.search(r"vpermb\s+%zmm", text) and "vpmaddubsw\t%zmm" in text


def _inner_loop(text: str) -> list[str]:
    """Mnemonics of the innermost loop with lookups: the shortest span from a
    label to a jump back to it that holds at least 4 vpshufb."""
    lines = [ln.strip() for ln in text.splitlines()]
    where = {ln[:-1]: i for i, ln in enumerate(lines) if ln.startswith(".LBB")}
    best: list[str] = []
    for i, ln in enumerate(lines):
        parts = ln.split()
        if len(parts) == 2 and parts[0].startswith("j") and where.get(parts[1], i) < i:
            body = [
                x.split()[0]
                for x in lines[where[parts[1]] + 1 : i + 1]
                if x and not x.startswith((".", "#"))
            ]
            if body.count("vpshufb") >= 4 and (not best or len(body) < len(best)):
                best = body
    return best


@pytest.mark.skipif(not isa_mod.host_has("avx2"), reason="needs an AVX2 host")
@pytest.mark.parametrize("bits,per_shuffle", [(2, 6.5), (3, 7.5), (4, 6.5)])
def test_avx2_inner_loop_stays_lean(bits, per_shuffle):
    """The note's kernel issues ~5.3 instructions per vpshufb (6.2 with gcc's
    loop); ours adds one vpsignb per quad (half tables) and the prefetch.
    A regression (scalarized table, spills in the loop) breaks this."""
    case = _case(bits=bits, group=128, act=64, k=256, n=64)
    fn, _, _, const = _inputs(case)
    nk, _ = lower_kernel(fn, "avx2", const)
    loop = _inner_loop(asm(nk.ir, "avx2"))
    shuffles = loop.count("vpshufb")
    assert shuffles >= 4
    assert len(loop) / shuffles <= per_shuffle, loop
    assert not any("(%rsp)" in ins for ins in loop)


@pytest.mark.parametrize("isa", RUNNABLE)
@pytest.mark.parametrize("value", [127, -127])
def test_int16_accumulators_flush_before_they_overflow(isa, value):
    """128 quads per table-scale unit, every lookup +-127 in every plane:
    the int16 sums would reach 128 * 381 > 2^15 without the 64-quad flush."""
    case = _case(bits=2, group=512, act=512, k=512, n=32, signed=False, half=False)
    fn, names, xs, const = _inputs(case)
    xs[names.index("t")][:] = value
    xs[names.index("p")][:] = 15
    ref = interp.run_function(fn, xs)[0]
    got = run_native(fn, xs, isa=isa, const_inputs=const)[0]
    _check_y(case, names, xs, got, ref)


@pytest.mark.parametrize("isa", RUNNABLE)
def test_non_constant_planes_take_the_portable_kernel(isa):
    case = CASES[3]
    fn, names, xs, _ = _inputs(case)
    nk, _ = lower_kernel(fn, isa, ())
    assert "scalar" in nk.note
    got = run_native(fn, xs, isa=isa, const_inputs=())[0]
    _check_y(case, names, xs, got, interp.run_function(fn, xs)[0])


def test_epilogue_with_more_ops_is_left_to_others():
    """A body with an elementwise tail is not this generator's (None)."""
    case = _case()
    fn, _, _, const = _inputs(case)
    text = str(fn).replace(
        "lp.yield %r", "%r2 = lp.neg %r : tensor<1x16xf32>\n    lp.yield %r2"
    )
    assert "lp.neg" in text
    fn2 = next(iter(parse_module(text).ops))
    assert lut.lut_epilogue(request_for(fn2, "avx2", const)) is None
    assert lut.lut_epilogue(request_for(fn, "avx2", const)) is not None


# -- lut_precompute, lut_scale, group_sum and their fused precompute region ---------


def _pre_func(lead, k, g=4, act=32, half=True, scale=True, group=32, ops=("table",)):
    """x -> the ops named in `ops` ("sum", "scale", "table"), standalone or fused."""
    j = k // g
    e = 2 ** (g - 1) if half else 2**g
    x_t = _t((*lead, k), "f32")
    ls_t = _t((*lead, k // act), "f32")
    sum_t = _t((*lead, -(-k // group)), "f32")
    tab_t = _t((*lead, j, e), "!lp.int<8>" if scale else "f32")
    hf = " half" if half else ""
    dims = lambda tail: _dims_attr((*lead, *tail))  # noqa: E731
    lines = {
        "sum": (
            f"%S = lp.group_sum %x group {group}{dims([-(-k // group)])} : "
            f"{x_t} -> {sum_t}",
            "%S",
            sum_t,
        ),
        "scale": (
            f"%ls = lp.lut_scale %x group {g} act_group {act}{dims([k // act])} : "
            f"{x_t} -> {ls_t}",
            "%ls",
            ls_t,
        ),
        "table": (
            f"%T = lp.lut_precompute %x{' scale %ls' if scale else ''} group {g}{hf}"
            f"{dims([j, e])} : "
            f"({x_t}{', ' + ls_t if scale else ''}) -> {tab_t}",
            "%T",
            tab_t,
        ),
    }
    args = [f"%x: {x_t}{_dims_attr((*lead, k))}"]
    if "table" in ops and scale and "scale" not in ops:
        args.append(f"%ls: {ls_t}{_dims_attr((*lead, k // act))}")
    body = [lines[o] for o in ops]
    rets = ", ".join(b[1] for b in body)
    rtypes = ", ".join(b[2] for b in body)
    text = f"func.func @kernel({', '.join(args)}) -> ({rtypes}) {{\n"
    text += "".join(f"  {b[0]}\n" for b in body)
    text += f"  func.return {rets} : {rtypes}\n}}"
    fn = next(iter(parse_module(text).ops))
    return fn


def _fuse_all(fn):
    """The same function with its ops in one `lp.fused precompute`."""
    from lpcc.ir.dialect.fused import make_fused

    ops = [op for op in fn.body.block.ops][:-1]
    make_fused("precompute", ops)
    return fn


def _run_both(fn, xs, isa):
    ref = interp.run_function(fn, xs)
    got = run_native(fn, xs, isa=isa)
    assert got is not None, "no native kernel"
    return ref, got


PRE = [
    dict(lead=(1, 3), k=128, g=4, act=32, half=True),
    dict(lead=(2,), k=64, g=4, act=64, half=False),
    dict(lead=(1, "s0"), k=96, g=4, act=32, half=True, m=(1, 5)),
    dict(lead=(3,), k=48, g=3, act=24, half=False),
    dict(lead=(1,), k=40, g=2, act=8, half=True),
    dict(lead=(2,), k=80, g=5, act=40, half=True),
]


@pytest.mark.parametrize("isa", RUNNABLE)
@pytest.mark.parametrize(
    "case",
    PRE,
    ids=[
        f"g{c['g']}-k{c['k']}-{c['lead']}-{'half' if c['half'] else 'full'}"
        for c in PRE
    ],
)
def test_table_ops_are_bit_identical(case, isa):
    c = dict(case)
    m = c.pop("m", c["lead"])
    rng = np.random.default_rng(c["k"])
    x = rng.normal(0, 1, (*m, c["k"])).astype(np.float32)
    x[..., :4] = 0.0  # an all-zero act group gives ls = 0 and a zero table
    if c["k"] // c["act"] > 1:
        x[..., : c["act"]] = 0.0
    ref_ls, got_ls = _run_both(_pre_func(**c, ops=("scale",)), [x], isa)
    np.testing.assert_array_equal(got_ls[0], ref_ls[0])
    assert (ref_ls[0] > 0).any() and ((ref_ls[0] == 0).any() or c["k"] == c["act"])
    ref, got = _run_both(_pre_func(**c), [x, ref_ls[0]], isa)  # int8, scaled
    np.testing.assert_array_equal(got[0], ref[0])
    ref, got = _run_both(_pre_func(**c, scale=False), [x], isa)  # f32
    np.testing.assert_array_equal(got[0], ref[0])


@pytest.mark.parametrize("isa", RUNNABLE)
def test_int8_tables_round_half_to_even_and_clamp(isa):
    """ls = 1 and quarter-step activations: T / ls hits .5 ties and |T| > 127."""
    k = 64
    rng = np.random.default_rng(3)
    x = (rng.integers(-160, 161, (2, k)) / 4).astype(np.float32)
    x[0, :4] = [0.5, 0, 0, 0]  # T = +-0.5 -> 0
    x[0, 4:8] = [1.5, 0, 0, 0]  # T = +-1.5 -> +-2
    x[1, :4] = [40, 40, 40, 40]  # T up to 160 -> 127
    ls = np.ones((2, 2), np.float32)
    ls[1, 1] = 0.0  # a zero scale gives a zero table
    for half in (True, False):
        fn = _pre_func(lead=(2,), k=k, act=32, half=half)
        ref, got = _run_both(fn, [x, ls], isa)
        np.testing.assert_array_equal(got[0], ref[0])
        assert np.abs(ref[0]).max() == 127 and (ref[0][1, 8:] == 0).all()


@pytest.mark.parametrize("isa", RUNNABLE)
def test_group_sums_with_a_short_last_group(isa):
    """Sequential f32 sums: |err| <= (G - 1) u sum |x| per group (+ the
    interpreter's own pairwise rounding, same order)."""
    k, group = 100, 32
    x = np.random.default_rng(5).normal(0, 3, (3, k)).astype(np.float32)
    fn = _pre_func(lead=(3,), k=k, group=group, ops=("sum",))
    ref, got = _run_both(fn, [x], isa)
    mag = np.concatenate([np.abs(x), np.zeros((3, 28), np.float32)], -1)
    mag = mag.reshape(3, 4, group).sum(-1)
    assert (np.abs(got[0] - ref[0]) <= 2 * (group - 1) * U * mag).all()


@pytest.mark.parametrize("isa", RUNNABLE)
def test_fused_precompute_region_is_one_kernel(isa):
    lead, k = (1, "s0"), 128
    fn = _fuse_all(_pre_func(lead=lead, k=k, act=64, ops=("sum", "scale", "table")))
    req = request_for(fn, isa)
    nk = lut.lut_precompute_fused(req)
    assert nk is not None and "lut_precompute" in nk.note
    x = np.random.default_rng(7).normal(0, 1, (1, 4, k)).astype(np.float32)
    ref, got = _run_both(fn, [x], isa)
    np.testing.assert_array_equal(got[1], ref[1])  # ls
    np.testing.assert_array_equal(got[2], ref[2])  # the table
    assert (
        np.abs(got[0] - ref[0]) <= 2 * 31 * U * np.abs(x).reshape(1, 4, 4, 32).sum(-1)
    ).all()


@pytest.mark.skipif(not isa_mod.host_has("avx2"), reason="needs an AVX2 host")
@pytest.mark.parametrize(
    "case", [CASES[0], CASES[3], CASES[13]], ids=_ids([CASES[0], CASES[3], CASES[13]])
)
def test_half_tables_mirrored_in_registers(case, monkeypatch):
    """Large K (tables over the stack budget) mirror [-H, H] per quad instead
    of expanding once per call; same results."""
    monkeypatch.setattr(lut, "_EXPAND_LIMIT", 0)
    fn, names, xs, const = _inputs(case, full_range=True)
    nk, _ = lower_kernel(fn, "avx2", const)
    assert "vpsignb" in asm(nk.ir, "avx2")
    got = run_native(fn, xs, isa="avx2", const_inputs=const)[0]
    _check_y(case, names, xs, got, interp.run_function(fn, xs)[0])
