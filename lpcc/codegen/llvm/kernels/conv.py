"""CPU kernels for f32 `lp.conv2d`, `lp.max_pool2d` and `lp.avg_pool2d` (NCHW).

conv2d is a GEMM per (image, group): out[o, p] = W[o, (c, i, j)] @
cols[(c, i, j), p] (+ bias[o]), with the weight as A (OIHW is already
row-major [O, C/G * kh * kw]) and the output NCHW plane as C. The im2col
matrix `cols` is never built: the GEMM's B packer (`matmul.emit_gemm`)
gathers each KC x NR panel straight from the input, zeros for padding;
a stride-1 panel row that lies inside one input row is one vector copy.
A 1x1, stride-1, unpadded conv reads the input as B in place.

The pools compute one output row per parallel row, with the window clipped
to the input (the padding and ceil-mode overhang never contribute: -inf for
max, 0 for the sum of avg), and avg's divisor counted as torch counts it.
"""

from __future__ import annotations

from llvmlite import ir

from lpcc.codegen.llvm.kernel import (
    F32,
    I64,
    KernelBuilder,
    KernelRequest,
    NativeKernel,
    elem,
    register,
    shape,
)
from lpcc.codegen.llvm.kernels.matmul import (
    GemmSpec,
    Tiling,
    c64,
    d_mul,
    emit_gemm,
    entry_alloca,
    gemm_flops,
    gep,
    granule_for,
    imax,
    imin,
    load,
    loop,
    pack_rowmajor,
    store,
    tiling,
)
from lpcc.codegen.shapes import pool_window
from lpcc.ir.dialect import ops as lp
from lpcc.ir.symbolic import Dim


def _f32(*values) -> bool:
    return all(elem(v).name == "f32" for v in values)


def _conv_packer(
    kb: KernelBuilder,
    t: Tiling,
    x: ir.Value,
    plane: Dim,  # H * W
    h: Dim,
    w: Dim,
    ow: Dim,
    cg: int,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
):
    """The implicit-im2col B packer: rows (c, i, j), columns (oh, ow)."""
    kh, kw = kernel
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    vt = ir.VectorType(F32, t.vw)
    zero = ir.Constant(F32, 0.0)

    def pack(b, buf, bt, pc, kc, j0, nvalid):
        hh, ww, oww, pl = kb.dim(h), kb.dim(w), kb.dim(ow), kb.dim(plane)
        colh = entry_alloca(b, ir.ArrayType(I64, t.nr), "colh")
        colw = entry_alloca(b, ir.ArrayType(I64, t.nr), "colw")
        far = c64(-(1 << 40))  # a column past N: never inside the input
        with loop(b, 0, t.nr, name="col") as jj:
            p = b.add(j0, jj)
            ok = b.icmp_signed("<", jj, nvalid)
            oh_, ow_ = b.udiv(p, oww), b.urem(p, oww)
            hb = b.sub(b.mul(oh_, c64(sh)), c64(ph))
            wb = b.sub(b.mul(ow_, c64(sw)), c64(pw))
            store(b, b.select(ok, hb, far), colh, jj)
            store(b, b.select(ok, wb, far), colw, jj)
        # a stride-1 panel within one output row reads input rows contiguously
        same_row = b.icmp_signed("==", nvalid, c64(t.nr))
        if sw == 1:
            last_w = load(b, colw, t.nr - 1, I64)
            first_w = load(b, colw, 0, I64)
            same_row = b.and_(
                same_row,
                b.icmp_signed("==", b.sub(last_w, first_w), c64(t.nr - 1)),
            )
        else:
            same_row = ir.Constant(ir.IntType(1), 0)
        h0 = load(b, colh, 0, I64)
        w0 = load(b, colw, 0, I64)
        base = gep(b, x, b.mul(bt, b.mul(c64(cg), pl)))  # (image, group)'s planes
        with loop(b, 0, kc, name="pkr") as kk:
            kidx = b.add(pc, kk)
            c = b.udiv(kidx, c64(kh * kw))
            rem = b.urem(kidx, c64(kh * kw))
            i, j = b.udiv(rem, c64(kw)), b.urem(rem, c64(kw))
            dhv, dwv = b.mul(i, c64(dh)), b.mul(j, c64(dw))
            src = gep(b, base, b.mul(c, pl))
            dst = b.mul(kk, c64(t.nr))
            ih0, iw0 = b.add(h0, dhv), b.add(w0, dwv)
            fast = b.and_(
                same_row,
                b.and_(
                    b.icmp_unsigned("<", ih0, hh),
                    b.and_(
                        b.icmp_signed(">=", iw0, c64(0)),
                        b.icmp_signed("<=", b.add(iw0, c64(t.nr)), ww),
                    ),
                ),
            )
            with b.if_else(fast) as (then, other):
                with then:
                    row = gep(b, src, b.add(b.mul(ih0, ww), iw0))
                    for v in range(t.nr // t.vw):
                        vec = load(b, row, v * t.vw, vt)
                        store(b, vec, buf, b.add(dst, c64(v * t.vw)))
                with other, loop(b, 0, t.nr, name="pkc") as jj:
                    ih = b.add(load(b, colh, jj, I64), dhv)
                    iw = b.add(load(b, colw, jj, I64), dwv)
                    inb = b.and_(
                        b.icmp_unsigned("<", ih, hh), b.icmp_unsigned("<", iw, ww)
                    )
                    idx = b.select(inb, b.add(b.mul(ih, ww), iw), c64(0))
                    val = b.select(inb, load(b, src, idx), zero)
                    store(b, val, buf, b.add(dst, jj))

    return pack


@register(lp.Conv2dOp)
def gen_conv2d(req: KernelRequest) -> NativeKernel | None:
    """conv2d as per-(image, group) GEMMs with an implicit-im2col B."""
    op = req.op
    assert isinstance(op, lp.Conv2dOp)
    operands = [op.input, op.weight] + ([op.bias] if op.bias is not None else [])
    if not _f32(*operands, op.result) or any(v not in req.args for v in operands):
        return None
    sx, sw_, so = shape(op.input), shape(op.weight), shape(op.result)
    if not all(isinstance(d, int) for d in sw_):
        return None
    o, cg, kh, kw = sw_  # type: ignore[misc]
    groups = op.groups.data
    n, _c, h, w = sx
    oh, ow = so[2], so[3]
    stride = tuple(lp._array(op.stride))
    padding = tuple(lp._array(op.padding))
    dilation = tuple(lp._array(op.dilation))
    og = o // groups
    kdim = cg * kh * kw
    t = tiling(req.isa)
    kb = KernelBuilder(req)
    x = kb.inp(req.arg_index(op.input))
    wt = kb.inp(req.arg_index(op.weight))
    ohw = d_mul(oh, ow)
    plane = d_mul(h, w)
    g = c64(groups)

    def a_off(b: ir.IRBuilder, bt: ir.Value) -> ir.Value:
        return b.mul(b.urem(bt, g), c64(og * kdim))

    def c_off(b: ir.IRBuilder, bt: ir.Value) -> ir.Value:
        return b.mul(bt, b.mul(c64(og), kb.dim(ohw)))

    def bias_off(b: ir.IRBuilder, bt: ir.Value) -> ir.Value:
        return b.mul(b.urem(bt, g), c64(og))

    spec = GemmSpec(
        m=og,
        n=ohw,
        k=kdim,
        batch=d_mul(n, groups),
        a_ptr=wt,
        a_off=a_off,
        c_ptr=kb.out(0),
        c_off=c_off,
    )
    if op.bias is not None:
        spec.bias_ptr = kb.inp(req.arg_index(op.bias))
        spec.bias_off = bias_off
    pointwise = (kh, kw) == (1, 1) and stride == (1, 1) and padding == (0, 0)
    if pointwise:  # B is the input itself: [C/G, H*W] per (image, group)

        def x_off(b: ir.IRBuilder, bt: ir.Value) -> ir.Value:
            return b.mul(bt, b.mul(c64(cg), kb.dim(plane)))

        spec.pack = pack_rowmajor(t, x, x_off, lambda: kb.dim(plane))

        def direct(b: ir.IRBuilder, bt: ir.Value, pc: ir.Value, j0: ir.Value):
            off = b.add(b.mul(pc, kb.dim(plane)), j0)
            return gep(b, x, b.add(x_off(b, bt), off))

        spec.direct, spec.ldb_direct = direct, plane
        how = "1x1: input read as B"
    else:
        spec.pack = _conv_packer(
            kb, t, x, plane, h, w, ow, cg, (kh, kw), stride, padding, dilation
        )
        how = "implicit im2col"
    u = emit_gemm(kb, t, spec, tag="conv")
    return kb.kernel(
        rows=u.rows,
        granule=granule_for(u.rows, gemm_flops(spec)),
        note=f"conv2d as GEMM {req.isa} ({how}): {u.note}",
    )


# -- pooling ---------------------------------------------------------------------------


def _window_range(
    b: ir.IRBuilder, start: ir.Value, k: int, d: int, size: ir.Value
) -> tuple[ir.Value, ir.Value]:
    """[lo, hi) of the window taps i with 0 <= start + i*d < size."""
    # lo = ceil(-start / d) if start < 0 else 0; hi = min(k, ceil((size - start) / d))
    neg = b.sub(c64(0), start)
    lo = imax(b, c64(0), b.sdiv(b.add(neg, c64(d - 1)), c64(d)))
    span = b.sub(size, start)
    hi = imin(b, c64(k), b.sdiv(b.add(span, c64(d - 1)), c64(d)))
    hi = imax(b, hi, lo)
    return lo, hi


def _pool_kernel(req: KernelRequest, is_max: bool) -> NativeKernel | None:
    op = req.op
    if not _f32(op.input, op.result) or op.input not in req.args:
        return None
    sx, so = shape(op.input), shape(op.result)
    win = pool_window(op)
    (kh, kw), (sh, sw), (ph, pw) = win.kernel, win.stride, win.padding
    (dh, dw), include_pad = win.dilation, win.include_pad
    kb = KernelBuilder(req)
    b = kb.b
    x, y = kb.inp(0), kb.out(0)
    hh, ww = kb.dim(sx[2]), kb.dim(sx[3])
    ohh, oww = kb.dim(so[2]), kb.dim(so[3])
    plane = b.mul(hh, ww)
    with kb.loop(kb.begin, kb.end, name="row") as row:
        nc, oh = b.udiv(row, ohh), b.urem(row, ohh)
        src = gep(b, x, b.mul(nc, plane))
        dst = gep(b, y, b.mul(row, oww))
        h0 = b.sub(b.mul(oh, c64(sh)), c64(ph))
        i_lo, i_hi = _window_range(b, h0, kh, dh, hh)
        with loop(b, 0, oww, name="ow") as owv:
            w0 = b.sub(b.mul(owv, c64(sw)), c64(pw))
            j_lo, j_hi = _window_range(b, w0, kw, dw, ww)
            acc = entry_alloca(b, F32, "acc", align=4)
            b.store(ir.Constant(F32, float("-inf") if is_max else 0.0), acc)
            nan = entry_alloca(b, ir.IntType(1), "nan", align=1)
            b.store(ir.Constant(ir.IntType(1), 0), nan)
            with loop(b, i_lo, i_hi, name="wi") as i:
                ih = b.add(h0, b.mul(i, c64(dh)))
                line = gep(b, src, b.mul(ih, ww))
                with loop(b, j_lo, j_hi, name="wj") as j:
                    v = load(b, line, b.add(w0, b.mul(j, c64(dw))))
                    cur = b.load(acc)
                    if is_max:  # the ordered max (maxps); a NaN is noted apart
                        bigger = b.fcmp_ordered(">", v, cur)
                        b.store(b.select(bigger, v, cur), acc)
                        isnan = b.fcmp_unordered("uno", v, v)
                        b.store(b.or_(b.load(nan), isnan), nan)
                    else:
                        b.store(b.fadd(cur, v), acc)
            res = b.load(acc)
            if is_max:  # NumPy's max (and torch's) propagate NaN
                res = b.select(b.load(nan), ir.Constant(F32, float("nan")), res)
            if not is_max:
                if include_pad:  # cells inside the padded input, not the overhang
                    ch = b.sub(
                        imin(b, b.add(h0, c64(kh)), b.add(hh, c64(ph))),
                        imax(b, h0, c64(-ph)),
                    )
                    cw = b.sub(
                        imin(b, b.add(w0, c64(kw)), b.add(ww, c64(pw))),
                        imax(b, w0, c64(-pw)),
                    )
                else:
                    ch, cw = b.sub(i_hi, i_lo), b.sub(j_hi, j_lo)
                res = b.fdiv(res, b.sitofp(b.mul(ch, cw), F32))
            store(b, res, dst, owv)
    rows = d_mul(d_mul(so[0], so[1]), so[2])
    what = "max" if is_max else "avg"
    work = d_mul(d_mul(rows, so[3]), kh * kw)
    return kb.kernel(
        rows=rows,
        granule=granule_for(rows, work),
        note=f"{what}_pool2d, one output row a unit",
    )


@register(lp.MaxPool2dOp)
def gen_max_pool2d(req: KernelRequest) -> NativeKernel | None:
    """max_pool2d: the max over each window clipped to the input."""
    return _pool_kernel(req, is_max=True)


@register(lp.AvgPool2dOp)
def gen_avg_pool2d(req: KernelRequest) -> NativeKernel | None:
    """avg_pool2d: the window's sum over the input / torch's divisor."""
    return _pool_kernel(req, is_max=False)
