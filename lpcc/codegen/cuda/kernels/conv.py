"""CUDA kernels for `lp.conv2d`, `lp.max_pool2d` and `lp.avg_pool2d` (NCHW).

Direct convolution, one thread per output element (n, o, oh, ow) in a
grid-stride loop: adjacent threads are adjacent output columns, so input
loads are coalesced along W and the weights of (o, c) are one broadcast
address per warp. The thread sums its window in a fixed order, input
channel of its group, then kernel row, then column (the interpreter's
im2col order), with `fmaf` into an f32 accumulator: the emulator and the
GPU give the same bits. Padding taps multiply a 0.0 (not skipped, so a
non-finite weight poisons the sum as in the interpreter's matmul); the bias
is added once at the end, as the interpreter does. f32 only, static weights
(any stride, padding, dilation, groups; N, H, W may be dynamic).

The pools take one thread per output element and the window clipped to the
input: padding and the ceil-mode overhang never contribute (-inf for max,
0 for avg's sum), max propagates NaN as NumPy, and avg divides by the cells
torch counts (inside the padded input with count_include_pad, else inside
the input). max_pool serves every float type held in f32 (the result is one
of the inputs); avg_pool is f32 only (a narrow result needs the codec).
"""

from __future__ import annotations

from lpcc.codegen.cuda.kernel import CudaKernel, CudaRequest, elem, shape
from lpcc.codegen.cuda.kernels.movement import (
    THREADS,
    Kern,
    generator,
    grid_1d,
    grid_loop,
    index_type,
    unravel,
)
from lpcc.codegen.cuda.kernels.reduce import _NAN_MAX
from lpcc.codegen.shapes import is_f32, pool_window
from lpcc.ir.dialect import ops as lp
from lpcc.ir.symbolic import dim_prod


@generator(lp.Conv2dOp)
def gen_conv2d(req: CudaRequest) -> CudaKernel | None:
    """Direct conv2d: a thread per output, f32 fma over (c, i, j) in order."""
    op = req.op
    assert isinstance(op, lp.Conv2dOp)
    operands = [op.input, op.weight] + ([op.bias] if op.bias is not None else [])
    if not all(is_f32(elem(v)) for v in [*operands, op.result]):
        return None
    sw = shape(op.weight)
    if not all(isinstance(d, int) for d in sw):
        return None
    o, cg, kh, kw = (int(d) for d in sw)
    groups = op.groups.data
    og = o // groups
    sx, so = shape(op.input), shape(op.result)
    (sh, sw_), (ph, pw) = lp._array(op.stride), lp._array(op.padding)
    dh, dw = lp._array(op.dilation)
    k = Kern(req)
    total_d = dim_prod(so)
    ity = index_type(total_d, dim_prod(sx))
    hh, ww = k.dim(sx[2]), k.dim(sx[3])
    bias = ""
    if op.bias is not None:
        bias = f"    acc = acc + in{req.arg_index(op.bias)}[o];"
    lines = [
        f"  const float* __restrict__ x = in{req.arg_index(op.input)};",
        f"  const float* __restrict__ w = in{req.arg_index(op.weight)};",
        "  float* __restrict__ y = out0;",
        f"  const long long H = {hh}, W = {ww};",
        grid_loop(ity, k.idx(total_d, ity)) + " {",
        *unravel(k, "i", so, ["nb", "o", "oh", "ow"], ity),
        f"    const long long h0 = (long long)oh * {sh} - {ph};",
        f"    const long long w0 = (long long)ow * {sw_} - {pw};",
        f"    const float* __restrict__ xg = x + ((long long)nb * {cg * groups}LL"
        f" + (long long)(o / {og}u) * {cg}LL) * H * W;",
        f"    const float* __restrict__ wo = w + (long long)o * {cg * kh * kw}LL;",
        "    float acc = 0.0f;",
        f"    for (int c = 0; c < {cg}; ++c) {{",
        "      const float* __restrict__ xc = xg + (long long)c * H * W;",
        f"      const float* __restrict__ wc = wo + c * {kh * kw};",
        "#pragma unroll",
        f"      for (int ki = 0; ki < {kh}; ++ki) {{",
        f"        const long long ih = h0 + ki * {dh};",
        "        const bool okh = ih >= 0 && ih < H;",
        "#pragma unroll",
        f"        for (int kj = 0; kj < {kw}; ++kj) {{",
        f"          const long long iw = w0 + kj * {dw};",
        "          const bool ok = okh && iw >= 0 && iw < W;",
        "          const float xv = ok ? xc[ih * W + iw] : 0.0f;",
        f"          acc = fmaf(xv, wc[ki * {kw} + kj], acc);",
        "        }",
        "      }",
        "    }",
        bias,
        "    y[i] = acc;",
        "  }",
    ]
    note = (
        f"conv2d {o}x{cg}x{kh}x{kw} groups {groups} "
        f"[direct, thread per output, {ity} indices]"
    )
    return k.kernel("\n".join(lines) + "\n", grid_1d(total_d), THREADS, note)


def _pool(req: CudaRequest, is_max: bool) -> CudaKernel | None:
    op = req.op
    assert isinstance(op, lp.MaxPool2dOp | lp.AvgPool2dOp)
    dt, out = elem(op.input), elem(op.result)
    if is_max:
        if dt.value_dtype.name != "float32":
            return None
    elif not (is_f32(dt) and is_f32(out)):
        return None
    sx, so = shape(op.input), shape(op.result)
    win = pool_window(op)
    (kh, kw), (sh, sw), (ph, pw) = win.kernel, win.stride, win.padding
    (dh, dw), include_pad = win.dilation, win.include_pad
    k = Kern(req)
    total_d = dim_prod(so)
    ity = index_type(total_d, dim_prod(sx))
    if is_max:
        acc0 = "-INFINITY"
        step = "acc = " + _NAN_MAX.format(a="acc", b="v_") + ";"
    else:
        acc0 = "0.0f"
        step = "acc += v_;"
    lines = [
        "  const float* __restrict__ x = in0;",
        "  float* __restrict__ y = out0;",
        f"  const long long H = {k.dim(sx[2])}, W = {k.dim(sx[3])};",
        grid_loop(ity, k.idx(total_d, ity)) + " {",
        *unravel(k, "i", [dim_prod(so[:2]), so[2], so[3]], ["nc", "oh", "ow"], ity),
        f"    const long long h0 = (long long)oh * {sh} - {ph};",
        f"    const long long w0 = (long long)ow * {sw} - {pw};",
        "    const float* __restrict__ xp = x + (long long)nc * H * W;",
        f"    float acc = {acc0};",
        "    int nh = 0, nw = 0;",
        f"    for (int ki = 0; ki < {kh}; ++ki) {{",
        f"      const long long ih = h0 + ki * {dh};",
        "      if (ih < 0 || ih >= H) continue;",
        "      ++nh; nw = 0;",
        f"      for (int kj = 0; kj < {kw}; ++kj) {{",
        f"        const long long iw = w0 + kj * {dw};",
        "        if (iw < 0 || iw >= W) continue;",
        "        ++nw;",
        "        const float v_ = xp[ih * W + iw];",
        f"        {step}",
        "      }",
        "    }",
    ]
    if not is_max:
        if include_pad:  # cells inside the padded input, not the overhang
            hi_h, hi_w = f"H + {ph}", f"W + {pw}"
            lines += [
                f"    const long long ch = (h0 + {kh} < {hi_h} ? h0 + {kh} : {hi_h})"
                f" - (h0 > -{ph} ? h0 : -{ph});",
                f"    const long long cw = (w0 + {kw} < {hi_w} ? w0 + {kw} : {hi_w})"
                f" - (w0 > -{pw} ? w0 : -{pw});",
            ]
        else:
            lines.append("    const long long ch = nh, cw = nw;")
        lines.append("    acc = acc / (float)(ch * cw);")
    lines += ["    y[i] = acc;", "  }"]
    what = "max" if is_max else "avg"
    note = f"{what}_pool2d {kh}x{kw} [thread per output, clipped window]"
    return k.kernel("\n".join(lines) + "\n", grid_1d(total_d), THREADS, note)


@generator(lp.MaxPool2dOp)
def gen_max_pool2d(req: CudaRequest) -> CudaKernel | None:
    """max_pool2d: the NaN-propagating max over each window clipped to the input."""
    return _pool(req, is_max=True)


@generator(lp.AvgPool2dOp)
def gen_avg_pool2d(req: CudaRequest) -> CudaKernel | None:
    """avg_pool2d: the window's sum over the input / torch's divisor."""
    return _pool(req, is_max=False)
