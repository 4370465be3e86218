"""CUDA kernels for `lp.quantize` and `lp.dequantize` (block-wise scales).

One thread per element (grid-stride): the element's index picks its block's
scale (and zero) at `index // block` per dim, as the interpreter's
`_expand_blocks`. Both compute in f64 exactly as the interpreter does
(x / s + z, then round half to even and saturate to the integer type, NaN
to 0; (q - z) * s rounded once to f32), so results are bit-exact.

Taken: quantize from f32 values to int/uint of <= 32 bits; dequantize from
int/uint codes of <= 32 bits to f32; scales and zeros held as f32 or ints.
Anything else (float result types, e8m0 scales) returns None.
"""

from __future__ import annotations

import math

from lpcc.codegen.cuda.kernel import (
    CudaKernel,
    CudaRequest,
    Launch,
    c_dim,
    ctype,
    elem,
    register,
    shape,
    signature,
)
from lpcc.codegen.cuda.kernels import scalar
from lpcc.ir.dialect import ops as lp
from lpcc.ir.dtypes import DType, FloatType, IntType
from lpcc.ir.symbolic import Dim, dim_ceil_div, dim_prod

_BLOCK = 256


def _plain(dt: DType) -> bool:
    """Held exactly in the value domain as f32 or a <= 32-bit integer."""
    if isinstance(dt, FloatType):
        return dt.value_dtype.name == "float32"
    return isinstance(dt, IntType) and dt.bits <= 32


def _block_offset(
    idx: list[str], block: list[int], sshape: tuple[Dim, ...], used: list[str]
) -> str:
    """Row-major offset of the scale of the element at `idx`."""
    off = "0LL"
    for d, (b, n) in enumerate(zip(block, sshape, strict=True)):
        i = idx[d] if b == 1 else f"({idx[d]} / {b}LL)"
        off = f"({off} * {c_dim(n, used)} + {i})"
    return off


def _kernel(req: CudaRequest, quantize: bool) -> CudaKernel | None:
    op = req.op
    assert isinstance(op, lp.QuantizeOp | lp.DequantizeOp)
    src, dst = elem(op.input), elem(op.results[0])
    if quantize:
        if not (isinstance(dst, IntType) and dst.bits <= 32 and _plain(src)):
            return None
        if not isinstance(src, FloatType):
            return None
    elif not (isinstance(src, IntType) and src.bits <= 32 and dst == scalar.F32_T):
        return None
    operands = [op.scale] + ([op.zero] if op.zero is not None else [])
    if not all(_plain(elem(v)) for v in operands):
        return None
    block = [int(b) for b in lp._array(op.block)]
    ys = shape(op.results[0])
    used: list[str] = []
    total = dim_prod(ys)
    idx = [f"i{d}" for d in range(len(ys))]
    lines = scalar.unravel("t", ys, idx, used)
    sc = req.arg_index(op.scale)
    soff = _block_offset(idx, block, shape(op.scale), used)
    lines.append(f"const double s = (double)in{sc}[{soff}];")
    if op.zero is not None:
        zi = req.arg_index(op.zero)
        zoff = _block_offset(idx, block, shape(op.zero), used)
        lines.append(f"const double z = (double)in{zi}[{zoff}];")
    x = f"(double)in{req.arg_index(op.input)}[t]"
    if quantize:
        assert isinstance(dst, IntType)
        lo = dst.min
        limit = math.ldexp(1.0, dst.bits - int(dst.signed))  # f >= limit: max
        q = f"{x} / s" + (" + z" if op.zero is not None else "")
        lines += [
            f"double q = rint({q});",
            "if (q != q) q = 0.0;  /* NaN encodes as 0 */",
            f"const {ctype(dst)} v = q >= {limit!r} ? ({ctype(dst)}){dst.max}LL"
            f" : q < {float(lo)!r} ? ({ctype(dst)})({lo}LL)"
            f" : ({ctype(dst)})(long long)q;",
            "out0[t] = v;",
        ]
    else:
        d = f"({x} - z)" if op.zero is not None else x
        lines.append(f"out0[t] = (float)({d} * s);")
    body = "\n".join("    " + line for line in lines)
    n = c_dim(total, used)
    sig = signature(req, used)
    source = f"""
extern "C" __global__ void __launch_bounds__({_BLOCK}) {req.entry}({sig}) {{
  for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < {n};
       t += (long long)gridDim.x * blockDim.x) {{
{body}
  }}
}}
"""
    blocks = dim_ceil_div(total, _BLOCK)
    grid = min(blocks, 65535) if isinstance(blocks, int) else f"Min({blocks}, 65535)"
    what = "quantize" if quantize else "dequantize"
    return CudaKernel(
        source,
        [Launch(req.entry, (grid, 1, 1), (_BLOCK, 1, 1))],
        tuple(used),
        note=f"{what} {src.name} -> {dst.name}, block {block}, thread per element",
    )


@register(lp.QuantizeOp)
def gen_quantize(req: CudaRequest) -> CudaKernel | None:
    """x / s (+ z) rounded half to even and saturated, as `DType.encode`."""
    return _kernel(req, quantize=True)


@register(lp.DequantizeOp)
def gen_dequantize(req: CudaRequest) -> CudaKernel | None:
    """(q - z) * s in f64, rounded once to f32."""
    return _kernel(req, quantize=False)
