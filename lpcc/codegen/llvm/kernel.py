"""The contract between the CPU kernel generators and the rest of lpcc.

A *kernel request* is one kernel of a program: `func.func @kernel` holding
one lp op (or one `lp.fused` region) and its `func.return`, exactly what the
reference target runs in the interpreter (`lpcc.codegen.program`). A
*generator* turns a request into a `NativeKernel` (LLVM IR text plus how to
call it) or returns None when it does not handle that op, type or shape; the
op then runs as a reference kernel. Generators register per op class
(`register`); the first that accepts a request wins.

The native calling convention, one for every kernel:

    void @entry(i64 row_begin, i64 row_end, ptr argv)

computes rows [row_begin, row_end) of the kernel's parallel extent `rows`
(split over the worker pool in multiples of `granule`). `argv` is an array
of i64 slots: the addresses of the kernel's inputs (in the order of the
function's arguments), then of its outputs, then the values of the size
symbols the kernel asked for (`KernelBuilder.dim`), in `symbols` order.
Buffers hold value-domain arrays (`DType.value_dtype`: f32 for every float
type, int8 for int1..int8, bool as one byte), contiguous, row-major; an
input listed in `repack` instead points at the bytes its `Repack.fn` made
from the constant at compile time (weights in the order the kernel reads).

The slot before argv (`argv[-1]`) is the status: the caller zeroes it, a
kernel that meets bad data (an index out of range, an integer division by
zero) stores a nonzero code there (`KernelBuilder.fail_if`) and carries on
with a safe value; after the call the caller raises the message that
`NativeKernel.errors` gives for the code. Kernels that cannot fail never
touch it, so the check costs the caller one load.
"""

from __future__ import annotations

import ast
import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from llvmlite import ir
from xdsl.dialects import func

from lpcc.codegen.contract import FuncRequest, Registry
from lpcc.codegen.contract import Repack as Repack
from lpcc.codegen.contract import elem as elem
from lpcc.codegen.contract import shape as shape
from lpcc.errors import IRError
from lpcc.ir.dtypes import DType
from lpcc.ir.symbolic import Dim, _check

I1 = ir.IntType(1)
I8 = ir.IntType(8)
I16 = ir.IntType(16)
I32 = ir.IntType(32)
I64 = ir.IntType(64)
F32 = ir.FloatType()
F64 = ir.DoubleType()
PTR = ir.PointerType()  # opaque pointer (LLVM 15+)


@dataclass
class NativeKernel:
    """A generator's answer: IR text defining `entry` and how to call it."""

    ir: str
    entry: str
    rows: Dim = 1
    granule: int = 1
    symbols: tuple[str, ...] = ()
    repack: dict[int, Repack] = field(default_factory=dict)
    note: str = ""  # one line for listings: the path and tiling chosen
    errors: dict[int, str] = field(default_factory=dict)  # status code -> why


@dataclass(frozen=True)
class KernelRequest(FuncRequest):
    """One kernel to generate; see the module docstring."""

    func: func.FuncOp
    isa: str  # "avx512" | "avx2" | "generic" (lpcc.codegen.llvm.isa)
    const_inputs: frozenset[int]  # argument indices fed by program constants
    entry: str


Generator = Callable[[KernelRequest], NativeKernel | None]
_REGISTRY: Registry[KernelRequest, NativeKernel] = Registry("lpcc.codegen.llvm.kernels")
register = _REGISTRY.register


def generate(req: KernelRequest) -> NativeKernel | None:
    """The first registered generator's kernel for `req`, or None (reference)."""
    return _REGISTRY.generate(req)


# -- small IR helpers every kernel family uses --------------------------------------


def declare(
    module: ir.Module, name: str, ret: ir.Type, args: Sequence[ir.Type]
) -> ir.Function:
    """Function `name` (an LLVM intrinsic or a C function), declared once."""
    try:
        return module.get_global(name)  # type: ignore[no-any-return]
    except KeyError:
        return ir.Function(module, ir.FunctionType(ret, list(args)), name=name)


@contextlib.contextmanager
def counted_loop(
    b: ir.IRBuilder,
    start: ir.Value | int,
    stop: ir.Value | int,
    step: int = 1,
    name: str = "i",
    latch_metadata: tuple[str, ir.Value] | None = None,
) -> Iterator[ir.Value]:
    """`for i in range(start, stop, step)` (step > 0) in `b`'s function.

    Yields the i64 index; the body is what the `with` block emits.
    `latch_metadata` (kind, node) goes on the back edge, e.g. ("llvm.loop",
    a no-vectorize loop ID).
    """
    start = ir.Constant(I64, start) if isinstance(start, int) else start
    stop = ir.Constant(I64, stop) if isinstance(stop, int) else stop
    fn = b.function
    pre = b.block
    head = fn.append_basic_block(f"{name}.head")
    body = fn.append_basic_block(f"{name}.body")
    done = fn.append_basic_block(f"{name}.done")
    b.branch(head)
    b.position_at_end(head)
    i = b.phi(I64, name=name)
    i.add_incoming(start, pre)
    b.cbranch(b.icmp_signed("<", i, stop), body, done)
    b.position_at_end(body)
    yield i
    nxt = b.add(i, ir.Constant(I64, step), name=f"{name}.next", flags=["nsw"])
    i.add_incoming(nxt, b.block)
    latch = b.branch(head)
    if latch_metadata is not None:
        latch.set_metadata(*latch_metadata)
    b.position_at_end(done)


def broadcast(b: ir.IRBuilder, v: ir.Value, n: int) -> ir.Value:
    """<n x T> with every lane = the scalar `v` (insertelement + shuffle)."""
    ty = ir.VectorType(v.type, n)
    vec = b.insert_element(ir.Constant(ty, ir.Undefined), v, ir.Constant(I32, 0))
    zeros = ir.Constant(ir.VectorType(I32, n), [0] * n)
    return b.shuffle_vector(vec, ir.Constant(ty, ir.Undefined), zeros)


# -- value types ----------------------------------------------------------------


def storage_type(dt: DType) -> ir.Type:
    """The LLVM type of one element of a value-domain buffer of `dt`."""
    vd = dt.value_dtype
    if vd.kind == "f":
        return {4: F32, 8: F64}[vd.itemsize]
    if vd.kind == "b":
        return I8
    return ir.IntType(8 * vd.itemsize)


# -- building a kernel -------------------------------------------------------------


class KernelBuilder:
    """An LLVM module with the entry function set up; helpers for the body.

    `b` is the IRBuilder positioned in the entry's body; `begin`/`end` are
    the row range; `inp(i)`/`out(j)` the buffer pointers; `dim(d)` an i64
    for an int or size expression (symbols are read from argv on first use).
    Call `finish()` (which adds the `ret void`) to get the IR text.
    """

    def __init__(self, req: KernelRequest, num_outputs: int | None = None) -> None:
        self.req = req
        self.module = ir.Module(name=req.entry)
        self.fn = ir.Function(
            self.module, ir.FunctionType(ir.VoidType(), [I64, I64, PTR]), req.entry
        )
        self.fn.args[0].name, self.fn.args[1].name, self.fn.args[2].name = (
            "begin",
            "end",
            "argv",
        )
        for a in (2,):
            self.fn.args[a].add_attribute("noalias")
        self.begin, self.end, self.argv = self.fn.args
        self.b = ir.IRBuilder(self.fn.append_basic_block("entry"))
        self.n_in = len(req.args)
        self.n_out = (
            len(req.func.function_type.outputs.data)
            if num_outputs is None
            else num_outputs
        )
        self.symbols: list[str] = []
        self.errors: dict[int, str] = {}
        self._status: ir.Value | None = None  # fail_if's flag (an alloca)
        self._sym_values: dict[str, ir.Value] = {}
        self._ptrs: dict[int, ir.Value] = {}
        self._counter = 0

    def _slot(self, k: int) -> ir.Value:
        return self.load(self.argv, ir.Constant(I64, k), I64)

    def _ptr(self, k: int) -> ir.Value:
        if k not in self._ptrs:
            with self.b.goto_entry_block():
                self.b.position_at_start(self.fn.entry_basic_block)
                self._ptrs[k] = self.b.inttoptr(self._slot(k), PTR, name=f"a{k}")
        return self._ptrs[k]

    def gep(self, ptr: ir.Value, index: ir.Value | int, ty: ir.Type) -> ir.Value:
        """`&ptr[index]` for elements of type `ty` (opaque pointers)."""
        if isinstance(index, int):
            index = ir.Constant(I64, index)
        return self.b.gep(ptr, [index], inbounds=True, source_etype=ty)

    def load(
        self, ptr: ir.Value, index: ir.Value | int, ty: ir.Type, align: int = 1
    ) -> ir.Value:
        """`ptr[index]` (a vector type loads a vector at element `index`)."""
        elt = ty.element if isinstance(ty, ir.VectorType) else ty
        p = self.gep(ptr, index, elt)
        return self.b.load(p, typ=ty, align=align)

    def store(
        self, value: ir.Value, ptr: ir.Value, index: ir.Value | int, align: int = 1
    ) -> None:
        """`ptr[index] = value` (vectors too, as `load`)."""
        ty = value.type
        elt = ty.element if isinstance(ty, ir.VectorType) else ty
        self.b.store(value, self.gep(ptr, index, elt), align=align)

    def inp(self, i: int) -> ir.Value:
        """Pointer to input `i` (or its repacked bytes)."""
        return self._ptr(i)

    def out(self, j: int) -> ir.Value:
        """Pointer to output `j`."""
        return self._ptr(self.n_in + j)

    def symbol(self, name: str) -> ir.Value:
        if name not in self._sym_values:
            self.symbols.append(name)
            k = self.n_in + self.n_out + len(self.symbols) - 1
            with self.b.goto_entry_block():
                self.b.position_at_start(self.fn.entry_basic_block)
                self._sym_values[name] = self._slot(k)
        return self._sym_values[name]

    def dim(self, d: Dim) -> ir.Value:
        """An i64 for `d`: an int or a size expression over symbols."""
        if isinstance(d, int):
            return ir.Constant(I64, d)
        return self._expr(_check(d))

    def _expr(self, node: ast.expr) -> ir.Value:
        b = self.b
        if isinstance(node, ast.Constant):
            return ir.Constant(I64, int(node.value))
        if isinstance(node, ast.Name):
            return self.symbol(node.id)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return b.neg(self._expr(node.operand))
        if isinstance(node, ast.BinOp):
            x, y = self._expr(node.left), self._expr(node.right)
            if isinstance(node.op, ast.Add):
                return b.add(x, y)
            if isinstance(node.op, ast.Sub):
                return b.sub(x, y)
            if isinstance(node.op, ast.Mult):
                return b.mul(x, y)
            if isinstance(node.op, ast.FloorDiv):
                return self.floordiv(x, y)
            if isinstance(node.op, ast.Mod):
                return b.sub(x, b.mul(self.floordiv(x, y), y))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            args = [self._expr(a) for a in node.args]
            fname = node.func.id
            if fname in ("Max", "Min"):
                acc = args[0]
                for a in args[1:]:
                    pred = ">" if fname == "Max" else "<"
                    acc = b.select(b.icmp_signed(pred, acc, a), acc, a)
                return acc
            if fname == "FloorDiv":
                return self.floordiv(*args)
            if fname == "Mod":
                return b.sub(args[0], b.mul(self.floordiv(*args), args[1]))
            if fname == "CeilDiv":
                return b.neg(self.floordiv(b.neg(args[0]), args[1]))
        raise IRError(f"CPU codegen: cannot lower size expression {ast.unparse(node)}")

    def floordiv(self, x: ir.Value, y: ir.Value) -> ir.Value:
        """Python's floor division on i64 (sdiv rounds toward zero)."""
        b = self.b
        q = b.sdiv(x, y)
        r = b.srem(x, y)
        fix = b.and_(
            b.icmp_signed("!=", r, ir.Constant(I64, 0)),
            b.icmp_signed(
                "!=",
                b.icmp_signed("<", r, ir.Constant(I64, 0)),
                b.icmp_signed("<", y, ir.Constant(I64, 0)),
            ),
        )
        return b.sub(q, b.zext(fix, I64))

    @contextlib.contextmanager
    def loop(
        self,
        start: ir.Value | int,
        stop: ir.Value | int,
        step: int = 1,
        name: str = "i",
    ) -> Iterator[ir.Value]:
        """`for i in range(start, stop, step)` (step > 0); yields the i64 index."""
        self._counter += 1
        with counted_loop(self.b, start, stop, step, f"{name}{self._counter}") as i:
            yield i

    def fail_if(self, cond: ir.Value, message: str) -> None:
        """If `cond` (i1, or any lane of an i1 vector) holds, report `message`.

        Branch-free, so it may sit anywhere in a loop body: the code goes to
        a local flag, and `finish` copies a nonzero flag to the status slot
        `argv[-1]` once, before the kernel returns. The kernel goes on (the
        generator keeps its values safe, e.g. a clamped index); the caller
        raises `message` after the call (any one code if several rows fail).
        """
        b = self.b
        if isinstance(cond.type, ir.VectorType):  # any lane
            name = f"llvm.vector.reduce.or.v{cond.type.count}i1"
            cond = b.call(declare(self.module, name, I1, [cond.type]), [cond])
        code = next((c for c, m in self.errors.items() if m == message), None)
        if code is None:
            code = len(self.errors) + 1
            self.errors[code] = message
        if self._status is None:
            with b.goto_entry_block():
                b.position_at_start(self.fn.entry_basic_block)
                self._status = b.alloca(I64, name="status")
                b.store(ir.Constant(I64, 0), self._status)
        cur = b.load(self._status, typ=I64)
        b.store(b.select(cond, ir.Constant(I64, code), cur), self._status)

    def finish(self) -> str:
        b = self.b
        if self._status is not None:  # hand a failure to the caller
            flag = b.load(self._status, typ=I64)
            with b.if_then(b.icmp_signed("!=", flag, ir.Constant(I64, 0))):
                slot = self.gep(self.argv, -1, I64)
                # IRBuilder.store_atomic wants typed pointers; build it directly.
                b._insert(
                    ir.instructions.StoreAtomicInstr(
                        b.block, flag, slot, "monotonic", 8
                    )
                )
        b.ret_void()
        return str(self.module)

    def kernel(self, rows: Dim = 1, granule: int = 1, **kw: object) -> NativeKernel:
        """`finish()` and wrap the text in a NativeKernel for this request."""
        text = self.finish()
        return NativeKernel(
            ir=text,
            entry=self.req.entry,
            rows=rows,
            granule=granule,
            symbols=tuple(self.symbols),
            errors=dict(self.errors),
            **kw,  # type: ignore[arg-type]
        )


def request_for(
    fn: func.FuncOp,
    isa: str,
    const_inputs: Sequence[int] = (),
    entry: str = "lpcc_kernel",
) -> KernelRequest:
    """A request for a kernel function (tests and the program lowering)."""
    return KernelRequest(fn, isa, frozenset(const_inputs), entry)
