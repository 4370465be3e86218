"""CUDA SIMT kernels for dense `lp.matmul` (f32) and `lp.fused epilogue` on it.

The tensor-core generator (`gemm_tc.py`) is asked first; this one takes what
it declines: every M (1, 3, 17, dynamic), batched operands with NumPy
broadcasting of the batch dims, `transpose_b` or not, dynamic M/N/K.

Kernel: a block of 256 threads computes a 64 x 64 tile of C with 4 x 4
outputs per thread (rows ty + 16 i, columns tx + 16 j, so a warp's shared
reads hit distinct banks); the K loop stages 16-wide slabs of A and B in
shared memory (A stored k-major so both inner reads are row reads), loads
guarded against the matrix edges (zeros outside). Each output is a
sequential f32 FMA chain over k, so it differs from the interpreter's
`np.matmul` (BLAS order) by f32 reassociation only: at most
2 gamma_K (|A| @ |B|) (tests/codegen/test_cuda_matmul.py).
grid = (ceil(N/64), ceil(M/64), batch), batch dims unravelled from
blockIdx.z; an operand's batch offset comes from `scalar.offset_expr` (its
size-1 batch dims broadcast).

Epilogues (`lp.fused epilogue` whose body is the matmul then elementwise ops
on its result): `emit_tail` writes the ops after the contraction with the
scalar emitter (`kernels/scalar.py`), reading other inputs at the output's
index (broadcast by their size-1 dims); `group_matmul.py` uses it too.

Declined (None, the interpreter runs it): non-f32 value types (integer
matmul), a result type the scalar emitter cannot round to, tails with ops
that are not elementwise, several yielded values.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from xdsl.ir import BlockArgument, Operation, SSAValue

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
from lpcc.ir.dialect.fused import FusedOp, YieldOp
from lpcc.ir.symbolic import Dim, dim_ceil_div, dim_prod

__all__ = ["Tail", "emit_tail", "plan_tail"]

_F32 = np.dtype(np.float32)
TILE = 64  # outputs per block along M and N
BK = 16  # k per shared-memory slab
THREADS = 256


# -- epilogue tails (shared with group_matmul.py) ------------------------------------


@dataclass(frozen=True)
class Tail:
    """The elementwise ops after a contraction in a fused region.

    `ops` run in order on one output element (constants included); `reads`
    maps each block argument they read to its kernel input slot; `final` is
    the yielded value.
    """

    start: SSAValue
    ops: tuple[Operation, ...]
    reads: dict[SSAValue, int]
    final: SSAValue


def _same(a: Sequence[Dim], b: Sequence[Dim]) -> bool:
    return len(a) == len(b) and all(x == y for x, y in zip(a, b, strict=True))


def _broadcasts_to(v: Sequence[Dim], ys: Sequence[Dim]) -> bool:
    if len(v) > len(ys):
        return False
    return all(d == 1 or d == y for d, y in zip(v, ys[len(ys) - len(v) :], strict=True))


def block_slot(req: CudaRequest, op: FusedOp, v: SSAValue | None) -> int | None:
    """The kernel input slot of a fused body's block argument `v` (else None)."""
    if not isinstance(v, BlockArgument) or v.block is not op.body.block:
        return None
    return req.arg_index(op.operands[v.index])


def plan_tail(
    req: CudaRequest,
    op: FusedOp,
    start: SSAValue,
    ops: Sequence[Operation],
    forbidden: set[int],
) -> Tail | None:
    """The tail after `start` (the contraction's result), or None if not
    emitted exactly: every op must be elementwise on `start`'s shape and read
    only earlier tail values, splat constants, and block arguments that
    broadcast to that shape and are not in `forbidden` (repacked slots)."""
    yld = op.body.block.last_op
    if not isinstance(yld, YieldOp) or len(yld.operands) != 1:
        return None
    ys = shape(start)
    known = {start}
    reads: dict[SSAValue, int] = {}
    body: list[Operation] = []
    for o in ops:
        if isinstance(o, lp.ConstantOp):
            if not o.is_splat:
                return None
            body.append(o)
            known.add(o.results[0])
            continue
        if isinstance(o, lp.BroadcastOp) or len(o.results) != 1:
            return None
        if not _same(shape(o.results[0]), ys) or not scalar.can_emit(o):
            return None
        for v in o.operands:
            if v in known:
                continue
            slot = block_slot(req, op, v)
            if slot is None or slot in forbidden:
                return None
            if not _broadcasts_to(shape(v), ys) or not scalar.supported_dtype(elem(v)):
                return None
            reads[v] = slot
            known.add(v)
        body.append(o)
        known.add(o.results[0])
    final = yld.operands[0]
    if final not in known or final in reads:
        return None
    if final is not start and not _same(shape(final), ys):
        return None
    return Tail(start, tuple(body), reads, final)


def emit_tail(
    tail: Tail | None,
    start: scalar.CExpr,
    ys: Sequence[Dim],
    idx: Sequence[str],
    used: list[str],
    stem: str = "t",
) -> tuple[list[str], scalar.CExpr] | None:
    """C statements computing the tail on one element (index vars `idx` of the
    output shape `ys`), given the contraction's value `start`."""
    if tail is None:
        return [], start
    lines: list[str] = []
    counter = itertools.count()

    def fresh(s: str) -> str:
        return f"{stem}_{s}{next(counter)}"

    env: dict[SSAValue, scalar.CExpr] = {tail.start: start}
    for v, slot in tail.reads.items():
        off = scalar.offset_expr(shape(v), ys, idx, used)
        name = fresh("in")
        lines.append(f"const {ctype(elem(v))} {name} = in{slot}[{off}];")
        env[v] = scalar.CExpr(name, elem(v))
    if not scalar.emit_body(tail.ops, env, lines, fresh):
        return None
    return lines, env[tail.final]


# -- dense f32 matmul ------------------------------------------------------------------


def _source(
    req: CudaRequest,
    mm: lp.MatmulOp,
    slots: tuple[int, int],
    out_shape: Sequence[Dim],
    tail: Tail | None,
) -> CudaKernel | None:
    used: list[str] = []
    a_s, b_s = shape(mm.lhs), shape(mm.rhs)
    tb = mm.transpose_b is not None
    m, k = a_s[-2], a_s[-1]
    n = b_s[-2] if tb else b_s[-1]
    batch = list(out_shape[:-2])
    bn = [f"bz{i}" for i in range(len(batch))]
    cm, cn, ck = c_dim(m, used), c_dim(n, used), c_dim(k, used)
    lines = scalar.unravel("(long long)blockIdx.z", batch, bn, used)
    a_off = scalar.offset_expr(a_s[:-2], batch, bn, used)
    b_off = scalar.offset_expr(b_s[:-2], batch, bn, used)
    idx = [*bn, "gm", "gn"]
    res = elem(mm.result)
    y = scalar.CExpr("acc[i][j]", scalar.F32_T)
    pre: list[str] = []
    if res != scalar.F32_T:
        counter = itertools.count()
        r = scalar.round_float("acc[i][j]", res, pre, lambda s: f"r_{s}{next(counter)}")
        y = scalar.CExpr(r, res)
    ep = emit_tail(tail, y, out_shape, idx, used)
    if ep is None:
        return None
    ep_lines, final = ep
    a_load = f"A[gm * {ck} + gk]"
    if tb:
        b_tile = (
            "      const int nn = e >> 4, kk = e & 15;\n"
            "      const long long gn = n0 + nn, gk = k0 + kk;\n"
            f"      Bs[kk][nn] = (gn < {cn} && gk < {ck}) ? B[gn * {ck} + gk] : 0.0f;\n"
        )
    else:
        b_tile = (
            "      const int kk = e >> 6, nn = e & 63;\n"
            "      const long long gn = n0 + nn, gk = k0 + kk;\n"
            f"      Bs[kk][nn] = (gn < {cn} && gk < {ck}) ? B[gk * {cn} + gn] : 0.0f;\n"
        )
    body_ep = "\n".join("          " + s for s in [*pre, *ep_lines])
    sig = signature(req, used)
    src = f"""
/* dense matmul {"A @ B^T" if tb else "A @ B"}: 64x64 tile, 4x4 per thread, k slab 16 */
extern "C" __global__ void __launch_bounds__({THREADS}, 1) {req.entry}({sig}) {{
  __shared__ float As[{BK}][{TILE}];
  __shared__ float Bs[{BK}][{TILE}];
{chr(10).join("  " + s for s in lines)}
  const float* __restrict__ A = in{slots[0]} + ({a_off}) * ({cm} * {ck});
  const float* __restrict__ B = in{slots[1]} + ({b_off}) * ({ck} * {cn});
  const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
  const long long m0 = (long long)blockIdx.y * {TILE};
  const long long n0 = (long long)blockIdx.x * {TILE};
  float acc[4][4];
  #pragma unroll
  for (int i = 0; i < 4; ++i) {{
    #pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;
  }}
  #pragma unroll 1
  for (int k0 = 0; k0 < {ck}; k0 += {BK}) {{
    #pragma unroll
    for (int r = 0; r < 4; ++r) {{
      const int e = threadIdx.x + r * {THREADS};
      {{
        const int mm = e >> 4, kk = e & 15;
        const long long gm = m0 + mm, gk = k0 + kk;
        As[kk][mm] = (gm < {cm} && gk < {ck}) ? {a_load} : 0.0f;
      }}
{b_tile}    }}
    __syncthreads();
    #pragma unroll
    for (int kk = 0; kk < {BK}; ++kk) {{
      float a[4], b[4];
      #pragma unroll
      for (int i = 0; i < 4; ++i) a[i] = As[kk][ty + 16 * i];
      #pragma unroll
      for (int j = 0; j < 4; ++j) b[j] = Bs[kk][tx + 16 * j];
      #pragma unroll
      for (int i = 0; i < 4; ++i) {{
        #pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
      }}
    }}
    __syncthreads();
  }}
  #pragma unroll
  for (int i = 0; i < 4; ++i) {{
    #pragma unroll
    for (int j = 0; j < 4; ++j) {{
      const long long gm = m0 + ty + 16 * i, gn = n0 + tx + 16 * j;
      if (gm < {cm} && gn < {cn}) {{
{body_ep}
        out0[((long long)blockIdx.z * {cm} + gm) * {cn} + gn] = {final.text};
      }}
    }}
  }}
}}
"""
    grid = (dim_ceil_div(n, TILE), dim_ceil_div(m, TILE), dim_prod(batch))
    note = f"cuda simt matmul 64x64x16{' tb' if tb else ''}"
    if tail is not None:
        note += " + epilogue"
    return CudaKernel(
        src,
        [Launch(req.entry, grid, (THREADS, 1, 1))],
        symbols=tuple(used),
        errors=dict(scalar.ERRORS) if tail is not None else {},
        note=note,
    )


def _operands_ok(mm: lp.MatmulOp) -> bool:
    if elem(mm.lhs).value_dtype != _F32 or elem(mm.rhs).value_dtype != _F32:
        return False
    res = elem(mm.result)
    return res.kind == "float" and scalar.supported_dtype(res)


@register(lp.MatmulOp)
def gen_matmul(req: CudaRequest) -> CudaKernel | None:
    """A standalone f32 matmul (any batch, M, N, K)."""
    mm = req.op
    assert isinstance(mm, lp.MatmulOp)
    if not _operands_ok(mm):
        return None
    slots = (req.arg_index(mm.lhs), req.arg_index(mm.rhs))
    return _source(req, mm, slots, shape(mm.result), None)


@register(FusedOp, kind="epilogue")
def gen_fused_matmul(req: CudaRequest) -> CudaKernel | None:
    """`lp.fused epilogue`: an f32 matmul, then elementwise ops on its result."""
    op = req.op
    assert isinstance(op, FusedOp)
    ops = [o for o in op.body.block.ops if not isinstance(o, YieldOp)]
    mains = [o for o in ops if isinstance(o, lp.MatmulOp)]
    if len(mains) != 1:
        return None
    mm = mains[0]
    if not _operands_ok(mm) or elem(mm.result) != scalar.F32_T:
        return None
    if any(not isinstance(o, lp.ConstantOp) for o in ops[: ops.index(mm)]):
        return None
    sa, sb = block_slot(req, op, mm.lhs), block_slot(req, op, mm.rhs)
    if sa is None or sb is None:
        return None
    rest = [o for o in ops if o is not mm]
    tail = plan_tail(req, op, mm.result, rest, set())
    if tail is None:
        return None
    final = tail.final
    if not scalar.supported_dtype(elem(final)):
        return None
    return _source(req, mm, (sa, sb), shape(mm.result), tail)
