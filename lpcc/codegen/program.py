"""Lowering lp IR to a VM `Program`, with a compile-time buffer plan.

`build_program` walks `func.func @main` once:

* function arguments become the program's inputs (bound buffers);
* `lp.constant` becomes an entry of the constant pool, its packed payload
  kept byte for byte (a bound buffer, printed `c[j]`);
* `lp.reshape` becomes a `View` of its operand (no kernel, no copy);
* every other lp op becomes a `Call` of a reference kernel: an MLIR module
  holding `func.func @kernel` with that one op, its distinct operands as
  arguments. Kernels are deduplicated by their text, so the hundred
  identical `lp.add`s of a transformer share one kernel. An `lp.fused` op
  is one kernel too (its region included) returning all its results: one
  `call` writes every output, each a buffer of its own;
* `func.return` becomes `Return`; a returned input, constant, view of one,
  or a value returned twice is first copied into a buffer of its own.

Buffer planning (the storage/tensor split of the Relax VM, the free lists of
Hidet). Every buffer a kernel or copy writes is a *root*; a view belongs to
the root it views. Instruction i defines its outputs; a root's live interval
runs from its definition to the last instruction that reads it or any view of
it. Outputs are live to the end and get a storage of their own. The other
roots are assigned storages greedily in definition order (linear-scan
interval allocation, as Relax's token allocator): a storage whose current
root died strictly *before* the new root's definition is free (a kernel never
writes the memory it reads); among the free ones the allocator takes one
that already holds a buffer of the same size expression, else the smallest
that is large enough, else the largest (which then grows). Sizes are
symbolic, so "large enough" compares the sizes under hint values of the
symbols (the top of their `dim_ranges`, else 64); the plan is correct for
any values because a storage's size is the `Max(...)` of the sizes of all
its buffers, evaluated when the program runs. Each storage is allocated just
before its first root is written and freed just after its last root's last
use.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from xdsl.dialects import func
from xdsl.dialects.builtin import ArrayAttr, DictionaryAttr, ModuleOp, StringAttr
from xdsl.ir import Block, Operation, Region, SSAValue

from lpcc.errors import IRError
from lpcc.ir.dialect import ops as lp
from lpcc.ir.dialect import print_module, to_dtype
from lpcc.ir.dialect.fused import FusedOp
from lpcc.ir.dialect.ops import NAME_ATTR
from lpcc.ir.symbolic import (
    DIMS_ATTR,
    Dim,
    ShapeError,
    evaluate,
    format_dims,
    symbols,
)
from lpcc.runtime.program import (
    Alloc,
    BufferInfo,
    Call,
    Constant,
    Copy,
    Free,
    Instruction,
    Kernel,
    Program,
    Return,
    TensorSpec,
    View,
    buffer_nbytes,
)

TARGETS = ("reference", "cpu", "cuda")
_log = logging.getLogger("lpcc.compile")
_HINT = 64


@dataclass
class _Buf:
    shape: tuple[Dim, ...]
    dtype: str
    input: int | None = None
    constant: int | None = None
    root: int | None = None  # the buffer whose storage this one lives in
    storage: int | None = None


@dataclass
class _Step:
    """One instruction before planning: a call, a view or a copy."""

    kind: str
    defs: tuple[int, ...]
    uses: tuple[int, ...]
    kernel: str = ""


@dataclass
class _Storage:
    terms: list[Dim] = field(default_factory=list)
    hint: int = 0
    first: int = 0
    last: int = 0


_NO_BOUND = 1 << 62  # dim_ranges tops at or above this are unbounded


def build_program(
    module: ModuleOp,
    *,
    target: str = "reference",
    name: str = "main",
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    dim_ranges: Mapping[str, tuple[int, int | None]] | None = None,
    isa: str | None = None,
    sources: dict[str, dict[str, str]] | None = None,
    archs: Sequence[str] | None = None,
) -> Program:
    """Lower `func.func @name` of `module` to a Program for `target`.

    For "cpu", `isa` is the instruction-set level of the native kernels
    (default: the best this host runs, capped by `LPCC_CPU_ISA`). For
    "cuda", `archs` are the GPU architectures whose cubins the program
    carries (default: the `cuda_archs` knob; empty: CUDA C only, compiled
    by NVRTC when loaded); kernels are generated for the oldest of them.
    `sources`, if given, is filled with each kernel's generated source by
    kernel name: {"mlir": kernel function, "ll": LLVM IR (cpu kernels),
    "cu": CUDA C (cuda kernels)}, for IR dumps; saved programs never hold
    the LLVM IR text.
    """
    if target not in TARGETS:
        raise IRError(
            f"build_program: no lowering for target {target!r} yet; use one of "
            f"{', '.join(TARGETS)}"
        )
    fn = _function(module, name)
    # A frontend's "no upper bound" (torch's int_oo, 2**63 - 1) is None here:
    # saved programs hold sizes up to 2**62, and planning hints need a size.
    ranges = {
        sym: (lo, None if hi is None or hi >= _NO_BOUND else hi)
        for sym, (lo, hi) in (dim_ranges or {}).items()
    }
    lowering = _Lowering(fn, input_names, output_names, ranges)
    lowering.sources = {} if sources is None else sources
    if target == "cpu":
        from lpcc.codegen.llvm import isa as isa_mod

        lowering.target = "cpu"
        lowering.isa = isa_mod.selected_isa(to_run=True) if isa is None else isa
    elif target == "cuda":
        from lpcc import config

        lowering.target = "cuda"
        lowering.archs = tuple(config.get("cuda_archs") if archs is None else archs)
    return lowering.run()


def _function(module: ModuleOp, name: str) -> func.FuncOp:
    for op in module.ops:
        if isinstance(op, func.FuncOp) and op.sym_name.data == name:
            return op
    raise IRError(f"build_program: the module has no function @{name}")


class _Lowering:
    def __init__(
        self,
        fn: func.FuncOp,
        input_names: Sequence[str] | None,
        output_names: Sequence[str] | None,
        dim_ranges: dict[str, tuple[int, int | None]],
    ) -> None:
        self.fn = fn
        self.input_names = input_names
        self.output_names = output_names
        self.dim_ranges = dim_ranges
        self.bufs: list[_Buf] = []
        self.steps: list[_Step] = []
        self.values: dict[SSAValue, int] = {}
        self.constants: list[Constant] = []
        self.constant_names: set[str] = set()
        self.kernels: dict[str, Kernel] = {}  # by source text
        self.counts: dict[str, int] = {}
        self.target = "reference"
        self.isa = ""
        self.archs: tuple[str, ...] = ()
        # Constants become program constants when first read as they are; a
        # weight only a native kernel reads (repacked) is never stored raw.
        self.lazy: dict[SSAValue, lp.ConstantOp] = {}
        self.repacked: dict[tuple[SSAValue, str], int] = {}
        self.native: dict[tuple[str, tuple[int, ...]], tuple[Kernel, dict] | None] = {}
        self.sources: dict[str, dict[str, str]] = {}  # kernel name -> sources

    # -- walking the function ---------------------------------------------------------
    def run(self) -> Program:
        from lpcc.ir import interp

        where = f"build_program @{self.fn.sym_name.data}"
        block = self.fn.body.block
        inputs = self._inputs(block, where)
        ret: func.ReturnOp | None = None
        for op in block.ops:
            if isinstance(op, func.ReturnOp):
                ret = op
                break
            self._op(op, where, interp.IMPLS)
        if ret is None:
            raise IRError(f"{where}: the function has no func.return")
        results = self._returns(ret)
        outputs = self._output_specs(results, where)
        instructions, storages = self._plan(results)
        if self.target == "cuda":
            self._fatbins()
        program = Program(
            inputs=inputs,
            outputs=outputs,
            buffers=[
                BufferInfo(
                    b.shape,
                    b.dtype,
                    None if b.root is None else storages[b.root],
                    b.input,
                    b.constant,
                )
                for b in self.bufs
            ],
            constants=self.constants,
            kernels=list(self.kernels.values()),
            instructions=instructions,
            target=self.target,
            meta={"function": self.fn.sym_name.data}
            | ({"isa": self.isa} if self.target == "cpu" else {})
            | ({"archs": list(self.archs)} if self.target == "cuda" else {}),
            dim_ranges=self.dim_ranges,
        )
        program.validate()
        return program

    def _op(self, op: Operation, where: str, impls: Mapping[type, object]) -> None:
        fused = isinstance(op, FusedOp)
        if not fused and (len(op.results) != 1 or op.regions):
            raise IRError(f"{where}: cannot lower {op.name} (one result expected)")
        if isinstance(op, lp.ConstantOp):
            self.lazy[op.result] = op
            if self.target == "reference":  # generated kernels repack constants
                self._buf(op.result)
        elif isinstance(op, lp.ReshapeOp):
            src = self._buf(op.input)
            dst = self._new(op.results[0], root=self.bufs[src].root)
            self.steps.append(_Step("view", (dst,), (src,)))
        elif type(op) in impls or fused:
            if not self._call(op):  # a region no generator takes: op by op
                self._split(op, where, impls)  # type: ignore[arg-type]
        else:
            raise IRError(
                f"{where}: {op.name} has no lowering (only lp ops run in the "
                "reference target); run the lp pipeline before lowering"
            )

    def _split(self, op: FusedOp, where: str, impls: Mapping[type, object]) -> None:
        """Lower the ops of a fused region one by one (its values as buffers)."""
        body = op.regions[0].block
        for arg, operand in zip(body.args, op.operands, strict=True):
            self._alias(arg, operand)
        for inner in body.ops:
            if inner is body.last_op:  # lp.yield: results are the yielded values
                for res, val in zip(op.results, inner.operands, strict=True):
                    self._alias(res, val)
                break
            self._op(inner, where, impls)

    def _alias(self, value: SSAValue, source: SSAValue) -> None:
        if source in self.lazy:
            self.lazy[value] = self.lazy[source]
        else:
            self.values[value] = self.values[source]

    def _buf(self, value: SSAValue) -> int:
        """The buffer of `value`, making a lazy constant a program constant."""
        if value not in self.values:
            op = self.lazy[value]
            if op.result in self.values:  # aliased region argument
                self.values[value] = self.values[op.result]
            else:
                self._constant(op)
                self.values[value] = self.values[op.result]
        return self.values[value]

    def _new(self, value: SSAValue, **kw: object) -> int:
        dt = to_dtype(value.type.element_type).name  # type: ignore[attr-defined]
        self.bufs.append(_Buf(lp.value_dims(value), dt, **kw))  # type: ignore[arg-type]
        b = len(self.bufs) - 1
        self.values[value] = b
        return b

    def _inputs(self, block: Block, where: str) -> list[TensorSpec]:
        args = list(block.args)
        names = self.input_names
        if names is None:
            names = [a.name_hint or f"arg{i}" for i, a in enumerate(args)]
        if len(names) != len(args):
            raise IRError(
                f"{where}: {len(names)} input names for {len(args)} arguments"
            )
        specs = []
        for i, (arg, nm) in enumerate(zip(args, names, strict=True)):
            b = self._new(arg, input=i)
            specs.append(TensorSpec(nm, self.bufs[b].shape, self.bufs[b].dtype))
        return specs

    def _constant(self, op: lp.ConstantOp) -> None:
        j = len(self.constants)
        attr = op.attributes.get(NAME_ATTR)
        base = attr.data if isinstance(attr, StringAttr) else f"c{j}"
        nm, k = base, 1
        while nm in self.constant_names:
            nm, k = f"{base}_{k}", k + 1
        self.constant_names.add(nm)
        shape = tuple(int(d) for d in op.result.type.get_shape())  # type: ignore[attr-defined]
        self.constants.append(
            Constant(nm, op.dtype.name, shape, bytes(op.data.data), op.is_splat)
        )
        self._new(op.result, constant=j)

    def _call(self, op: Operation) -> bool:
        """A call of `op`'s kernel; False for a fused region to split (cpu)."""
        operands = distinct_operands(op)
        kernel, repack = self._kernel(op, operands)
        if kernel is None:
            return False
        ins = tuple(
            self._repacked(v, repack[i]) if i in repack else self._buf(v)
            for i, v in enumerate(operands)
        )
        outs = []
        for result in op.results:  # each result is a buffer (and root) of its own
            out = self._new(result)
            self.bufs[out].root = out
            outs.append(out)
        self.steps.append(_Step("call", tuple(outs), ins, kernel))
        return True

    def _repacked(self, value: SSAValue, repack: object) -> int:
        """The buffer of constant `value` rewritten by a kernel's `Repack`."""
        key = (self.lazy[value].result, repack.layout)  # type: ignore[attr-defined]
        if key not in self.repacked:
            op = self.lazy[value]
            data = repack.fn(op.values())  # type: ignore[attr-defined]
            data = bytes(memoryview(data).cast("B"))
            j = len(self.constants)
            attr = op.attributes.get(NAME_ATTR)
            base = attr.data if isinstance(attr, StringAttr) else f"c{j}"
            nm, k = f"{base}.packed", 1
            while nm in self.constant_names:
                nm, k = f"{base}.packed_{k}", k + 1
            self.constant_names.add(nm)
            self.constants.append(Constant(nm, "uint8", (len(data),), data))
            self.bufs.append(_Buf((len(data),), "uint8", constant=j))
            self.repacked[key] = len(self.bufs) - 1
        return self.repacked[key]

    def _kernel(
        self, op: Operation, operands: list[SSAValue]
    ) -> tuple[str | None, dict[int, object]]:
        """The kernel's name and its repacked inputs (None: split the region)."""
        kfn = kernel_function(op, operands)
        text = print_module(ModuleOp([kfn]))
        if self.target in ("cpu", "cuda"):
            consts = tuple(i for i, v in enumerate(operands) if v in self.lazy)
            native = self._generated(op, kfn, text, consts)
            if native is not None:
                return native[0].name, native[1]
            if isinstance(op, FusedOp):
                return None, {}
            _log.info(
                "%s: no %s kernel for %s; it runs in the interpreter on the host",
                self.fn.sym_name.data,
                self.target,
                op.name,
            )
        if text not in self.kernels:
            short = _short(op)
            n = self.counts.get(short, 0)
            self.counts[short] = n + 1
            self.kernels[text] = Kernel(
                f"k_{short}_{n}",
                "reference",
                "lp",
                text,
                {
                    "op": op.name,
                    "num_inputs": len(operands),
                    "num_outputs": len(op.results),
                },
            )
            self.sources[self.kernels[text].name] = {"mlir": text}
        return self.kernels[text].name, {}

    def _generated(
        self, op: Operation, kfn: func.FuncOp, text: str, consts: tuple[int, ...]
    ) -> tuple[Kernel, dict[int, object]] | None:
        """The target's generated kernel for `kfn` (shared by identical ones;
        None when no generator takes it), and the constants it repacks."""
        key = (text, consts)
        if key not in self.native:
            short = _short(op)
            n = self.counts.get(short, 0)
            name = f"k_{short}_{n}"
            lower = self._cpu_kernel if self.target == "cpu" else self._cuda_kernel
            made = lower(op, kfn, consts, name)
            if made is None:
                self.native[key] = None
            else:
                self.counts[short] = n + 1
                kernel, source, repack = made
                self.sources[name] = {"mlir": text} | source
                self.kernels[f"native:{name}"] = kernel
                self.native[key] = (kernel, repack)
        return self.native[key]

    def _cpu_kernel(
        self, op: Operation, kfn: func.FuncOp, consts: tuple[int, ...], name: str
    ) -> tuple[Kernel, dict[str, str], dict[int, object]] | None:
        """Object code for the ISA, with the LLVM IR for dumps."""
        from lpcc.codegen.llvm.lower import kernel_meta, lower_kernel

        lowered = lower_kernel(kfn, self.isa, consts, entry=name)
        if lowered is None:
            return None
        nk, obj = lowered
        meta = {"op": op.name} | kernel_meta(
            nk, obj, len(kfn.body.block.args), len(op.results)
        )
        kernel = Kernel(name, "cpu", "llvm-object", obj.object_code, meta)
        return kernel, {"ll": nk.ir}, dict(nk.repack)

    def _cuda_kernel(
        self, op: Operation, kfn: func.FuncOp, consts: tuple[int, ...], name: str
    ) -> tuple[Kernel, dict[str, str], dict[int, object]] | None:
        """CUDA C for the oldest arch (fatbins come after, all at once)."""
        from lpcc.codegen.cuda.lower import kernel_meta, lower_kernel

        arch = min(self.archs, key=_sm) if self.archs else "sm_80"
        ck = lower_kernel(kfn, arch, consts, entry=name)
        if ck is None:
            return None
        meta = {"op": op.name} | kernel_meta(
            ck, len(kfn.body.block.args), len(op.results), arch
        )
        meta["const_inputs"] = list(consts)
        meta["archs"] = list(self.archs)
        kernel = Kernel(name, "cuda", "cuda-c", ck.source, meta)
        return kernel, {"cu": ck.source}, dict(ck.repack)

    def _fatbins(self) -> None:
        """Compile every CUDA kernel for `archs` with nvcc, two at a time."""
        cuda = [k for k in self.kernels.values() if k.target == "cuda"]
        if not self.archs or not cuda:
            return
        from concurrent.futures import ThreadPoolExecutor

        from lpcc.codegen.cuda import nvcc

        try:
            nvcc.find_tool("nvcc")
        except nvcc.CudaToolNotFound:
            _log.info(
                "nvcc not found: the program carries CUDA C only (NVRTC compiles "
                "it when loaded on a GPU)"
            )
            for k in cuda:
                k.meta["archs"] = []
            return
        with ThreadPoolExecutor(max_workers=2) as pool:
            blobs = list(
                pool.map(lambda k: nvcc.cached_fatbin(k.source, self.archs), cuda)
            )
        for k, blob in zip(cuda, blobs, strict=True):
            k.binaries["fatbin"] = blob

    def _returns(self, ret: func.ReturnOp) -> list[int]:
        """Returned buffers, each a root of its own (copying where needed)."""
        results: list[int] = []
        owned: set[int] = set()
        for v in ret.operands:
            b = self._buf(v)
            root = self.bufs[b].root
            if root is None or root in owned:
                src = b
                info = self.bufs[src]
                self.bufs.append(_Buf(info.shape, info.dtype))
                b = len(self.bufs) - 1
                self.bufs[b].root = b
                self.steps.append(_Step("copy", (b,), (src,)))
                root = b
            owned.add(root)
            results.append(b)
        return results

    def _output_specs(self, results: list[int], where: str) -> list[TensorSpec]:
        names = self.output_names
        if names is None:
            names = (
                ["output"]
                if len(results) == 1
                else [f"output{i}" for i in range(len(results))]
            )
        if len(names) != len(results):
            raise IRError(
                f"{where}: {len(names)} output names for {len(results)} results"
            )
        return [
            TensorSpec(n, self.bufs[b].shape, self.bufs[b].dtype)
            for n, b in zip(names, results, strict=True)
        ]

    # -- planning ----------------------------------------------------------------------
    def _hint(self, size: Dim) -> int:
        if isinstance(size, int):
            return size
        env: dict[str, int] = {}
        for sym, (lo, hi) in self.dim_ranges.items():
            env[sym] = hi if hi is not None else max(lo, _HINT)
        try:
            for sym in symbols(size):
                env.setdefault(sym, _HINT)
            return evaluate(size, env)
        except (ShapeError, ZeroDivisionError):
            return 0

    def _plan(self, results: list[int]) -> tuple[list[Instruction], dict[int, int]]:
        """Storages for the roots; the instruction list with alloc/free placed."""
        end_step = len(self.steps)
        define: dict[int, int] = {}
        end: dict[int, int] = {}
        for t, step in enumerate(self.steps):
            for b in step.defs:
                root = self.bufs[b].root
                if root is not None and step.kind != "view":
                    define[root] = t
                    end[root] = max(end.get(root, t), t)
            for b in step.uses:
                root = self.bufs[b].root
                if root is not None:
                    end[root] = max(end.get(root, t), t)
        outputs = {self.bufs[b].root for b in results}
        for root in outputs:
            assert root is not None
            end[root] = end_step

        storages: list[_Storage] = []
        of_root: dict[int, int] = {}
        active: list[tuple[int, int]] = []  # (end, storage) of shared storages
        free: list[int] = []
        for root in sorted(define, key=define.__getitem__):
            t = define[root]
            size = buffer_nbytes(self.bufs[root].shape, self.bufs[root].dtype)
            hint = self._hint(size)
            while active and active[0][0] < t:
                free.append(heapq.heappop(active)[1])
            s = None if root in outputs else self._choose(storages, free, size, hint)
            if s is None:
                storages.append(_Storage(first=t))
                s = len(storages) - 1
            else:
                free.remove(s)
            st = storages[s]
            if size not in st.terms:
                st.terms.append(size)
            st.hint = max(st.hint, hint)
            st.last = end[root]
            of_root[root] = s
            if root not in outputs:
                heapq.heappush(active, (end[root], s))

        # Number storages in allocation order and place alloc/free.
        order = sorted(range(len(storages)), key=lambda s: (storages[s].first, s))
        number = {s: i for i, s in enumerate(order)}
        allocs: dict[int, list[int]] = {}
        frees: dict[int, list[int]] = {}
        for s in order:
            allocs.setdefault(storages[s].first, []).append(s)
            if storages[s].last < end_step:
                frees.setdefault(storages[s].last, []).append(s)
        code: list[Instruction] = []
        for t, step in enumerate(self.steps):
            for s in allocs.get(t, ()):
                code.append(Alloc(number[s], _max_size(storages[s].terms)))
            if step.kind == "call":
                code.append(Call(step.kernel, step.uses, step.defs))
            elif step.kind == "view":
                (dst,), (src,) = step.defs, step.uses
                code.append(View(dst, src, self.bufs[dst].shape))
            else:
                (dst,), (src,) = step.defs, step.uses
                code.append(Copy(dst, src))
            for s in frees.get(t, ()):
                code.append(Free(number[s]))
        code.append(Return(tuple(results)))
        return code, {root: number[s] for root, s in of_root.items()}

    @staticmethod
    def _choose(
        storages: list[_Storage], free: list[int], size: Dim, hint: int
    ) -> int | None:
        if not free:
            return None
        for s in free:
            if size in storages[s].terms:
                return s
        big = [s for s in free if storages[s].hint >= hint]
        if big:
            return min(big, key=lambda s: (storages[s].hint, s))
        return max(free, key=lambda s: (storages[s].hint, -s))


def kernel_function(op: Operation, operands: Sequence[SSAValue]) -> func.FuncOp:
    """`func.func @kernel` computing `op` from its distinct `operands`.

    What one kernel runs: the op cloned onto the function's arguments (names
    dropped, so identical ops give identical text), dynamic sizes carried in
    the arguments' `lp.dims`.
    """
    types = [v.type for v in operands]
    block = Block(arg_types=types)
    clone = op.clone(
        value_mapper=dict(zip(operands, block.args, strict=True)),
        clone_name_hints=False,
    )
    for inner in clone.walk():  # names do not change what a kernel computes
        inner.attributes.pop(NAME_ATTR, None)
    block.add_op(clone)
    block.add_op(func.ReturnOp(*clone.results))
    attrs = []
    for v in operands:
        dims = lp.value_dims(v)
        d = (
            {DIMS_ATTR: StringAttr(format_dims(dims))}
            if any(isinstance(x, str) for x in dims)
            else {}
        )
        attrs.append(DictionaryAttr(d))
    dynamic = any(a.data for a in attrs)
    return func.FuncOp(
        "kernel",
        (types, [r.type for r in clone.results]),
        Region(block),
        arg_attrs=ArrayAttr(attrs) if dynamic else None,
    )


def distinct_operands(op: Operation) -> list[SSAValue]:
    """`op`'s operands, each once, in first-use order (a kernel's arguments)."""
    operands: list[SSAValue] = []
    for v in op.operands:
        if v not in operands:
            operands.append(v)
    return operands


def _sm(arch: str) -> int:
    return int(arch.removeprefix("sm_"))


def _short(op: Operation) -> str:
    """A kernel's name stem: the op's name, or fused_<kind>."""
    if isinstance(op, FusedOp):
        return f"fused_{op.kind.data}"
    return op.name.removeprefix("lp.")


def _max_size(terms: list[Dim]) -> Dim:
    """One size covering every term: an int, one expression, or Max(...)."""
    ints = [t for t in terms if isinstance(t, int)]
    exprs = [t for t in terms if isinstance(t, str)]
    top = max(ints, default=0)
    if not exprs:
        return top
    parts = exprs + ([str(top)] if top else [])
    return parts[0] if len(parts) == 1 else f"Max({', '.join(parts)})"
