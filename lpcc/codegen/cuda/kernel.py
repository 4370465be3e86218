"""The contract between the CUDA kernel generators and the rest of lpcc.

A request (`CudaRequest`) is one kernel function, as for the CPU
(`lpcc.codegen.contract`). A generator registered for the op's class
(`register`) answers with a `CudaKernel` (CUDA C source and its launches)
or None, and the op runs as a reference kernel on the host.

The calling convention, one for every `__global__` entry a kernel launches:

    extern "C" __global__ void entry(
        const T* __restrict__ in0, ...,      // inputs, function-argument order
        T* __restrict__ out0, ...,           // outputs, result order
        unsigned char* __restrict__ scratch0, ...,  // `scratch` buffers
        long long s0, ...,                   // size symbols, `symbols` order
        int* __restrict__ status)            // 0 on entry; see below

`signature(req, ...)` writes that list. Buffers hold value-domain arrays as
on the CPU (`DType.value_dtype`: `float` for every float type, `lp_i8` for
int1..int8, `lp_i64` for int64, `lp_bool` (one byte) for i1), contiguous and
row-major; an input listed in `repack` points at the bytes its `Repack.fn`
made at compile time instead (`const unsigned char*`). Symbol parameters are
named after the symbols, so a size expression is C as it stands (`c_dim`).

`launches` run in order on one stream; each gives its grid as three size
expressions (evaluated per call from the symbols) and its block as three
ints, plus dynamic shared memory. Scratch buffers (`scratch`: byte sizes,
size expressions) are zeroed before the first launch and live for one call.
A kernel that meets bad data (an index out of range) stores a nonzero code
in `*status` (`atomicExch`) and carries on with a safe value; the caller
raises `errors[code]`, as the CPU's status slot.

Every source starts with `PRELUDE` (the integer typedefs and fp16 headers,
guarded so that NVRTC, nvcc and the host emulator all read it).
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from xdsl.dialects import func

from lpcc.codegen.contract import FuncRequest, Registry
from lpcc.codegen.contract import Repack as Repack
from lpcc.codegen.contract import elem as elem
from lpcc.codegen.contract import shape as shape
from lpcc.errors import IRError
from lpcc.ir.dtypes import DType
from lpcc.ir.symbolic import Dim, _check

__all__ = [
    "ARCHS",
    "PRELUDE",
    "CudaKernel",
    "CudaRequest",
    "Launch",
    "Repack",
    "c_dim",
    "ctype",
    "elem",
    "generate",
    "register",
    "shape",
    "signature",
]

ARCHS = ("sm_80", "sm_90")  # the cubins a program carries by default

PRELUDE = r"""
#ifndef LPCC_PRELUDE
#define LPCC_PRELUDE
#ifndef LPCC_EMU
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#endif
#ifndef INFINITY /* NVRTC has no <math.h> macros */
#define INFINITY __int_as_float(0x7f800000)
#endif
#ifndef NAN
#define NAN __int_as_float(0x7fffffff)
#endif
typedef signed char lp_i8;
typedef unsigned char lp_u8;
typedef short lp_i16;
typedef unsigned short lp_u16;
typedef int lp_i32;
typedef unsigned int lp_u32;
typedef long long lp_i64;
typedef unsigned long long lp_u64;
typedef unsigned char lp_bool;
/* Python's floor division and modulo on sizes and indices. */
__device__ __forceinline__ lp_i64 lpcc_floordiv(lp_i64 a, lp_i64 b) {
  lp_i64 q = a / b, r = a % b;
  return (r != 0 && ((r < 0) != (b < 0))) ? q - 1 : q;
}
__device__ __forceinline__ lp_i64 lpcc_mod(lp_i64 a, lp_i64 b) {
  return a - lpcc_floordiv(a, b) * b;
}
__device__ __forceinline__ lp_i64 lpcc_max(lp_i64 a, lp_i64 b) { return a > b ? a : b; }
__device__ __forceinline__ lp_i64 lpcc_min(lp_i64 a, lp_i64 b) { return a < b ? a : b; }
#endif
"""


@dataclass(frozen=True)
class CudaRequest(FuncRequest):
    """One kernel to generate for NVIDIA GPUs of `arch` and newer."""

    func: func.FuncOp
    arch: str  # the oldest architecture the program runs on, e.g. "sm_80"
    const_inputs: frozenset[int]
    entry: str  # the name stem; entries are `entry` or `entry_<suffix>`

    @property
    def sm(self) -> int:
        """The architecture as a number (sm_80 -> 80)."""
        return int(self.arch.removeprefix("sm_"))


@dataclass(frozen=True)
class Launch:
    """One `entry<<<grid, block, shared_bytes>>>` of a kernel."""

    entry: str
    grid: tuple[Dim, Dim, Dim]
    block: tuple[int, int, int]
    shared_bytes: int = 0


@dataclass
class CudaKernel:
    """A generator's answer: CUDA C defining the entries, and how to launch them."""

    source: str
    launches: list[Launch]
    symbols: tuple[str, ...] = ()
    repack: dict[int, Repack] = field(default_factory=dict)
    scratch: tuple[Dim, ...] = ()
    errors: dict[int, str] = field(default_factory=dict)  # status code -> why
    note: str = ""  # one line for listings: the path and tiling chosen


Generator = Callable[[CudaRequest], CudaKernel | None]
_REGISTRY: Registry[CudaRequest, CudaKernel] = Registry("lpcc.codegen.cuda.kernels")
register = _REGISTRY.register


def generate(req: CudaRequest) -> CudaKernel | None:
    """The first registered generator's kernel for `req`, or None (reference)."""
    return _REGISTRY.generate(req)


# -- C text helpers -------------------------------------------------------------------

_CTYPES = {
    "float32": "float",
    "float64": "double",
    "int8": "lp_i8",
    "uint8": "lp_u8",
    "int16": "lp_i16",
    "uint16": "lp_u16",
    "int32": "lp_i32",
    "uint32": "lp_u32",
    "int64": "lp_i64",
    "uint64": "lp_u64",
    "bool": "lp_bool",
}


def ctype(dt: DType) -> str:
    """The C type of one element of a value-domain buffer of `dt`."""
    return _CTYPES[dt.value_dtype.name]


def signature(
    req: CudaRequest,
    symbols: Sequence[str],
    *,
    num_outputs: int | None = None,
    scratch: int = 0,
    repacked: Sequence[int] = (),
) -> str:
    """The parameter list of the calling convention for `req`'s kernel."""
    params = []
    for i, v in enumerate(req.args):
        t = "unsigned char" if i in repacked else ctype(elem(v))
        params.append(f"const {t}* __restrict__ in{i}")
    results = req.op.results
    n_out = len(results) if num_outputs is None else num_outputs
    for j in range(n_out):
        params.append(f"{ctype(elem(results[j]))}* __restrict__ out{j}")
    params += [f"unsigned char* __restrict__ scratch{k}" for k in range(scratch)]
    params += [f"long long {s}" for s in symbols]
    params.append("int* __restrict__ status")
    return ", ".join(params)


def c_dim(d: Dim, used: list[str] | None = None) -> str:
    """A C expression (long long) for size `d`; symbols met are added to `used`."""
    if isinstance(d, int):
        return f"{d}LL"
    return _c_expr(_check(d), used if used is not None else [])


def _c_expr(node: ast.expr, used: list[str]) -> str:
    if isinstance(node, ast.Constant):
        return f"{int(node.value)}LL"
    if isinstance(node, ast.Name):
        if node.id not in used:
            used.append(node.id)
        return node.id
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return f"(-{_c_expr(node.operand, used)})"
    if isinstance(node, ast.BinOp):
        x, y = _c_expr(node.left, used), _c_expr(node.right, used)
        ops = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*"}
        if type(node.op) in ops:
            return f"({x} {ops[type(node.op)]} {y})"
        if isinstance(node.op, ast.FloorDiv):
            return f"lpcc_floordiv({x}, {y})"
        if isinstance(node.op, ast.Mod):
            return f"lpcc_mod({x}, {y})"
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        args = [_c_expr(a, used) for a in node.args]
        name = node.func.id
        if name in ("Max", "Min"):
            fn = "lpcc_max" if name == "Max" else "lpcc_min"
            acc = args[0]
            for a in args[1:]:
                acc = f"{fn}({acc}, {a})"
            return acc
        if name == "FloorDiv":
            return f"lpcc_floordiv({args[0]}, {args[1]})"
        if name == "Mod":
            return f"lpcc_mod({args[0]}, {args[1]})"
        if name == "CeilDiv":
            return f"(-lpcc_floordiv(-({args[0]}), {args[1]}))"
    raise IRError(
        f"CUDA codegen: cannot write size expression {ast.unparse(node)} in C"
    )
