"""A compiled program: plain data that the VM runs and the file format stores.

A `Program` is a flat list of instructions over numbered buffers `%0, %1,
...` (the Relax VM and Hidet's `GraphExecution` model): inputs and constants
are *bound* to buffers, every other buffer lives in a *storage* (a raw byte
region) that an `Alloc` creates and a `Free` releases. Several buffers may
share one storage at different times; that sharing is the buffer plan made
at compile time (`lpcc.codegen.program`). Kernels use destination passing:
a `Call` writes into output buffers placed before the call.

Six instructions, and no more: anything new goes through a kernel (a
"builtin"), as in Relax, so the instruction set never grows:

    alloc s, nbytes        a storage of `nbytes` bytes (a size expression)
    call k(ins) -> outs    run kernel `k`; `outs` are pre-placed buffers
    view dst, src, shape   `src` under a new shape, no copy (a reshape)
    copy dst, src          dst[...] = src
    free s                 the storage is dead from here on
    ret bufs               the outputs, in order

Buffers hold tensors in the *value domain* of their element type
(`DType.value_dtype`: int4 as int8, f16 as float32), which is what the
reference kernels compute on. Constants are stored packed (`DType.pack`), so
an int4 weight takes 4 bits per element in memory and on disk, and are
turned into values once, when a VM loads the program.

Nothing here imports the compiler: this module needs NumPy and the
numpy-only parts of lpcc alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lpcc.errors import DTypeError, LpccError
from lpcc.ir.dtypes import dtype
from lpcc.ir.symbolic import Dim, ShapeError, evaluate, symbols

__all__ = [
    "Alloc",
    "BufferInfo",
    "Call",
    "Constant",
    "Copy",
    "Free",
    "Instruction",
    "Kernel",
    "Program",
    "ProgramError",
    "Return",
    "TensorSpec",
    "View",
    "buffer_nbytes",
]


class ProgramError(LpccError, ValueError):
    """A Program whose parts do not fit together (bad index, use before def...)."""


# -- data ------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorSpec:
    """An input or output: its name, shape (ints and size expressions), dtype."""

    name: str
    shape: tuple[Dim, ...]
    dtype: str

    def show(self) -> str:
        return f"{self.name}: {_show_type(self.dtype, self.shape)}"


@dataclass(frozen=True)
class Constant:
    """A constant tensor held as its PACKED codes (`DType.pack`).

    A splat holds the code of one element that every position repeats.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    data: bytes
    splat: bool = False

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def expected_nbytes(self) -> int:
        """Bytes `data` must have: the packed size of 1 (splat) or numel codes."""
        return dtype(self.dtype).nbytes(1 if self.splat else self.numel)

    def codes(self) -> np.ndarray:
        """The codes, shaped like the constant (a read-only broadcast if splat)."""
        return self._shaped(self._flat_codes())

    def values(self) -> np.ndarray:
        """The values (`DType.values`), shaped like the constant."""
        return self._shaped(dtype(self.dtype).values(self._flat_codes()))

    def _flat_codes(self) -> np.ndarray:
        """The stored codes, 1-D: one for a splat (decoded once, then broadcast)."""
        count = 1 if self.splat else self.numel
        return dtype(self.dtype).unpack(np.frombuffer(self.data, np.uint8), count)

    def _shaped(self, flat: np.ndarray) -> np.ndarray:
        if self.splat:
            return np.broadcast_to(flat, self.shape)
        return flat.reshape(self.shape)


@dataclass(frozen=True)
class Kernel:
    """One kernel: for target "reference", kind "lp" and MLIR text in `source`.

    `source` is text (MLIR, C, PTX) or bytes (an object file); `meta` is JSON
    data (the op it came from, `num_inputs`, `num_outputs`); `binaries` are
    compiled forms kept beside the source (a CUDA kernel's "fatbin").
    """

    name: str
    target: str
    kind: str
    source: str | bytes
    meta: dict[str, Any] = field(default_factory=dict)
    binaries: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class BufferInfo:
    """Shape (symbolic), element type, and where the buffer's bytes live.

    Exactly one of: `input` (bound to input i), `constant` (bound to constant
    j), or neither (a temporary; `storage` is its storage, or None for a view
    of an input or constant).
    """

    shape: tuple[Dim, ...]
    dtype: str
    storage: int | None = None
    input: int | None = None
    constant: int | None = None


@dataclass(frozen=True)
class Alloc:
    """Create storage `storage` of `nbytes` bytes (an int or size expression)."""

    storage: int
    nbytes: Dim


@dataclass(frozen=True)
class Call:
    """Run `kernel` on `inputs`, writing `outputs` (pre-placed buffers)."""

    kernel: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


@dataclass(frozen=True)
class View:
    """`dst` is `src` reshaped to `shape` (same elements, row-major), no copy."""

    dst: int
    src: int
    shape: tuple[Dim, ...]


@dataclass(frozen=True)
class Copy:
    """dst[...] = src (gives an output its own memory)."""

    dst: int
    src: int


@dataclass(frozen=True)
class Free:
    """Storage `storage` is not used after this point."""

    storage: int


@dataclass(frozen=True)
class Return:
    """The program's outputs, in order."""

    buffers: tuple[int, ...]


Instruction = Alloc | Call | View | Copy | Free | Return
OPCODES: dict[type, str] = {
    Alloc: "alloc",
    Call: "call",
    View: "view",
    Copy: "copy",
    Free: "free",
    Return: "ret",
}


def value_dtype(name: str) -> np.dtype:
    """NumPy type a buffer of lpcc dtype `name` holds while a program runs."""
    return dtype(name).value_dtype


def buffer_nbytes(shape: Sequence[Dim], dtype_name: str) -> Dim:
    """Bytes of a value-domain buffer, as an int or a size expression."""
    coeff = value_dtype(dtype_name).itemsize
    terms: list[str] = []
    for d in shape:
        if isinstance(d, int):
            coeff *= d
        else:
            text = str(d).replace(" ", "")
            terms.append(text if text.isidentifier() else f"({text})")
    if not terms or coeff == 0:
        return coeff
    return "*".join(([str(coeff)] if coeff != 1 else []) + terms)


def _show_type(dt: str, shape: Sequence[Dim]) -> str:
    return f"{dt}[{', '.join(str(d) for d in shape)}]"


def _show_bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


# -- the program ------------------------------------------------------------------


@dataclass
class Program:
    """A runnable program: specs, buffers, constants, kernels, instructions.

    `dim_ranges` maps size symbols to the (lo, hi) they were compiled for (hi
    None = unbounded); the VM refuses inputs outside them. `meta` is JSON
    data (compile report, versions).
    """

    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    buffers: list[BufferInfo]
    constants: list[Constant]
    kernels: list[Kernel]
    instructions: list[Instruction]
    target: str = "reference"
    meta: dict[str, Any] = field(default_factory=dict)
    dim_ranges: dict[str, tuple[int, int | None]] = field(default_factory=dict)

    # -- derived --------------------------------------------------------------
    @property
    def num_storages(self) -> int:
        return sum(isinstance(i, Alloc) for i in self.instructions)

    def kernel(self, name: str) -> Kernel:
        for k in self.kernels:
            if k.name == name:
                return k
        raise ProgramError(f"the program has no kernel named {name!r}")

    def buffer_name(self, b: int) -> str:
        """`c[j]` for a constant's buffer, `%b` otherwise (as the listing shows)."""
        info = self.buffers[b]
        return f"c[{info.constant}]" if info.constant is not None else f"%{b}"

    # -- checks ---------------------------------------------------------------
    def validate(self) -> None:
        """Check that every index, name, shape and lifetime fits together.

        Raises ProgramError naming the first instruction or buffer that does
        not; a program that passes can be run by the VM without an IndexError
        or a use of freed memory.
        """
        _Validator(self).run()

    # -- text -----------------------------------------------------------------
    def as_text(self, kernels: bool = False) -> str:
        """A readable listing (as Relax's `as_text`); `kernels` adds the sources."""
        lines = [f"program (target {self.target})"]
        lines.append(f"inputs ({len(self.inputs)}):")
        input_buf = {info.input: b for b, info in enumerate(self.buffers)}
        for i, spec in enumerate(self.inputs):
            lines.append(f"  %{input_buf.get(i, '?')} {spec.show()}")
        if self.dim_ranges:
            ranges = ", ".join(
                f"{k} in [{lo}, {'inf' if hi is None else hi}]"
                for k, (lo, hi) in self.dim_ranges.items()
            )
            lines.append(f"  sizes: {ranges}")
        lines.append(f"outputs ({len(self.outputs)}):")
        lines.extend(f"  {spec.show()}" for spec in self.outputs)
        total = sum(len(c.data) for c in self.constants)
        lines.append(f"constants ({len(self.constants)}, {_show_bytes(total)} packed):")
        for j, c in enumerate(self.constants):
            splat = " splat" if c.splat else ""
            lines.append(
                f"  c[{j}] {c.name}: {_show_type(c.dtype, c.shape)}{splat}"
                f"  {_show_bytes(len(c.data))}"
            )
        lines.append(f"kernels ({len(self.kernels)}):")
        for k in self.kernels:
            op = k.meta.get("op", "")
            note = k.meta.get("note", "")
            isa = k.meta.get("object", {}).get("isa", "") if k.target == "cpu" else ""
            extra = "  ".join(x for x in (isa, note) if x)
            lines.append(f"  {k.name}  {k.target}/{k.kind}  {op}  {extra}".rstrip())
        lines.append("code:")
        for ins in self.instructions:
            lines.append("  " + self.show_instruction(ins))
        if kernels:
            for k in self.kernels:
                lines.append(f"\nkernel {k.name} ({k.target}/{k.kind}):")
                if isinstance(k.source, str):
                    lines.append(k.source.rstrip())
                else:
                    lines.append(f"<{len(k.source)} bytes of binary>")
        return "\n".join(lines) + "\n"

    def show_instruction(self, ins: Instruction) -> str:
        name = self.buffer_name
        if isinstance(ins, Alloc):
            return f"alloc st{ins.storage} [{ins.nbytes} bytes]"
        if isinstance(ins, Call):
            outs = ", ".join(name(b) for b in ins.outputs)
            args = ", ".join(name(b) for b in ins.inputs)
            where = ", ".join(self._where(b) for b in ins.outputs)
            return f"{outs} = call {ins.kernel}({args})  {where}"
        if isinstance(ins, View):
            info = self.buffers[ins.dst]
            return (
                f"{name(ins.dst)} = view {name(ins.src)}  "
                f": {_show_type(info.dtype, ins.shape)}"
            )
        if isinstance(ins, Copy):
            return f"{name(ins.dst)} = copy {name(ins.src)}  {self._where(ins.dst)}"
        if isinstance(ins, Free):
            return f"free st{ins.storage}"
        return "ret " + ", ".join(name(b) for b in ins.buffers)

    def _where(self, b: int) -> str:
        info = self.buffers[b]
        return f": {_show_type(info.dtype, info.shape)} in st{info.storage}"

    def stats(self, env: Mapping[str, int] | None = None) -> dict[str, Any]:
        """Counts and sizes; `peak_bytes` needs `env` when sizes are symbolic.

        peak_bytes is the most storage bytes alive at once (outputs included,
        inputs and constants not); None when a size has an unbound symbol.
        """
        plural = {
            "alloc": "allocs",
            "call": "calls",
            "view": "views",
            "copy": "copies",
            "free": "frees",
            "ret": "rets",
        }
        counts = {plural[op]: 0 for op in OPCODES.values()}
        for ins in self.instructions:
            counts[plural[OPCODES[type(ins)]]] += 1
        peak: int | None
        try:
            peak = self.peak_bytes(env or {})
        except ShapeError:
            peak = None
        return {
            "instructions": len(self.instructions),
            **counts,
            "buffers": len(self.buffers),
            "storages": self.num_storages,
            "kernels": len(self.kernels),
            "constants": len(self.constants),
            "constant_bytes": sum(len(c.data) for c in self.constants),
            "peak_bytes": peak,
        }

    def peak_bytes(self, env: Mapping[str, int]) -> int:
        """The planned peak of live storage bytes under the symbol values `env`."""
        live: dict[int, int] = {}
        peak = 0
        for ins in self.instructions:
            if isinstance(ins, Alloc):
                live[ins.storage] = evaluate(ins.nbytes, env)
                peak = max(peak, sum(live.values()))
            elif isinstance(ins, Free):
                live.pop(ins.storage, None)
        return peak


# -- validation ---------------------------------------------------------------------


class _Validator:
    """One pass over the instructions, tracking what is defined and alive."""

    def __init__(self, p: Program) -> None:
        self.p = p

    def fail(self, where: str, why: str) -> ProgramError:
        return ProgramError(f"invalid program: {where}: {why}")

    def run(self) -> None:
        p = self.p
        self._check_specs()
        nbuf = len(p.buffers)
        nstor = p.num_storages
        defined = [False] * nbuf
        bound_inputs: dict[int, int] = {}
        bound_consts: dict[int, int] = {}
        for b, info in enumerate(p.buffers):
            where = f"buffer %{b}"
            self._check_type(where, info.shape, info.dtype)
            if info.input is not None and info.constant is not None:
                raise self.fail(where, "bound to both an input and a constant")
            if info.input is not None:
                self._bind(where, info.input, len(p.inputs), bound_inputs, b)
                spec = p.inputs[info.input]
                self._same(where, info, spec.shape, spec.dtype, f"input {spec.name!r}")
                defined[b] = True
            elif info.constant is not None:
                self._bind(where, info.constant, len(p.constants), bound_consts, b)
                c = p.constants[info.constant]
                self._same(where, info, c.shape, c.dtype, f"constant {c.name!r}")
                defined[b] = True
            if info.storage is not None:
                if info.input is not None or info.constant is not None:
                    raise self.fail(where, "an input or constant has no storage")
                self._storage(where, info.storage, nstor)
        if len(bound_inputs) != len(p.inputs):
            missing = sorted(set(range(len(p.inputs))) - set(bound_inputs))
            raise self.fail(f"input #{missing[0]}", "no buffer is bound to it")
        if len(bound_consts) != len(p.constants):
            missing = sorted(set(range(len(p.constants))) - set(bound_consts))
            raise self.fail(f"constant #{missing[0]}", "no buffer is bound to it")

        kernels = {}
        for k in p.kernels:
            if k.name in kernels:
                raise self.fail(f"kernel {k.name!r}", "defined twice")
            kernels[k.name] = k
        state = ["unborn"] * nstor
        returned = False
        for pc, ins in enumerate(p.instructions):
            where = f"instruction #{pc} ({OPCODES.get(type(ins), type(ins).__name__)})"
            if returned:
                raise self.fail(where, "comes after ret")
            if isinstance(ins, Alloc):
                self._storage(where, ins.storage, nstor)
                if state[ins.storage] != "unborn":
                    raise self.fail(where, f"storage st{ins.storage} allocated twice")
                self._size(where, ins.nbytes)
                state[ins.storage] = "live"
            elif isinstance(ins, Free):
                self._storage(where, ins.storage, nstor)
                if state[ins.storage] != "live":
                    raise self.fail(
                        where, f"storage st{ins.storage} is {state[ins.storage]}"
                    )
                state[ins.storage] = "freed"
            elif isinstance(ins, Call):
                k = kernels.get(ins.kernel)
                if k is None:
                    raise self.fail(where, f"no kernel named {ins.kernel!r}")
                for key, got in (
                    ("num_inputs", len(ins.inputs)),
                    ("num_outputs", len(ins.outputs)),
                ):
                    want = k.meta.get(key)
                    if want is not None and want != got:
                        raise self.fail(where, f"kernel {k.name!r} has {key}={want}")
                for b in ins.inputs:
                    self._use(where, b, defined, state)
                for b in ins.outputs:
                    self._write(where, b, defined, state)
                    if b in ins.inputs:
                        raise self.fail(where, f"%{b} is both input and output")
                if len(set(ins.outputs)) != len(ins.outputs):
                    raise self.fail(where, "an output buffer appears twice")
            elif isinstance(ins, View):
                self._use(where, ins.src, defined, state)
                self._index(where, ins.dst)
                if defined[ins.dst]:
                    raise self.fail(where, f"%{ins.dst} is defined twice")
                src, dst = p.buffers[ins.src], p.buffers[ins.dst]
                if dst.input is not None or dst.constant is not None:
                    raise self.fail(where, f"%{ins.dst} is an input or constant")
                if dst.storage != src.storage:
                    raise self.fail(where, "a view must share its source's storage")
                if dst.dtype != src.dtype:
                    raise self.fail(where, "a view cannot change the element type")
                if tuple(ins.shape) != tuple(dst.shape):
                    raise self.fail(where, "shape differs from the buffer's shape")
                defined[ins.dst] = True
            elif isinstance(ins, Copy):
                self._use(where, ins.src, defined, state)
                self._write(where, ins.dst, defined, state)
                src, dst = p.buffers[ins.src], p.buffers[ins.dst]
                if src.dtype != dst.dtype or tuple(src.shape) != tuple(dst.shape):
                    raise self.fail(where, "copy between different types")
            elif isinstance(ins, Return):
                if len(ins.buffers) != len(p.outputs):
                    raise self.fail(
                        where,
                        f"returns {len(ins.buffers)} buffers for "
                        f"{len(p.outputs)} outputs",
                    )
                for b, spec in zip(ins.buffers, p.outputs, strict=True):
                    self._use(where, b, defined, state)
                    info = p.buffers[b]
                    self._same(
                        where, info, spec.shape, spec.dtype, f"output {spec.name!r}"
                    )
                returned = True
            else:
                raise self.fail(where, f"unknown instruction {ins!r}")
        if not returned:
            raise self.fail("the program", "has no ret instruction")

    # -- helpers ------------------------------------------------------------------
    def _check_specs(self) -> None:
        p = self.p
        if not isinstance(p.target, str) or not p.target:
            raise self.fail("the program", "target must be a non-empty string")
        for kind, specs in (("input", p.inputs), ("output", p.outputs)):
            for i, spec in enumerate(specs):
                self._check_type(f"{kind} #{i} {spec.name!r}", spec.shape, spec.dtype)
        for j, c in enumerate(p.constants):
            where = f"constant c[{j}] {c.name!r}"
            self._check_type(where, c.shape, c.dtype)
            if not all(isinstance(d, int) for d in c.shape):
                raise self.fail(where, "constants need a static shape")
            if len(c.data) != c.expected_nbytes():
                raise self.fail(
                    where,
                    f"holds {len(c.data)} bytes; {c.numel if not c.splat else 1} "
                    f"x {c.dtype} packed needs {c.expected_nbytes()}",
                )
            used = (1 if c.splat else c.numel) * dtype(c.dtype).bits % 8
            if used and c.data[-1] >> used:
                raise self.fail(where, "padding bits after the last element are set")
        for name, rng in p.dim_ranges.items():
            lo, hi = rng
            if not name.isidentifier() or not isinstance(lo, int) or lo < 0:
                raise self.fail(f"size range {name!r}", f"bad range {rng!r}")
            if hi is not None and (not isinstance(hi, int) or hi < lo):
                raise self.fail(f"size range {name!r}", f"bad range {rng!r}")

    def _check_type(self, where: str, shape: Sequence[Dim], dt: str) -> None:
        try:
            dtype(dt)
        except DTypeError as err:
            raise self.fail(where, str(err)) from None
        for d in shape:
            self._size(where, d)

    def _size(self, where: str, d: Dim) -> None:
        if isinstance(d, bool) or not isinstance(d, int | str):
            raise self.fail(where, f"size {d!r} is not an int or expression")
        if isinstance(d, int):
            if d < 0:
                raise self.fail(where, f"negative size {d}")
            return
        try:
            symbols(d)
        except (ShapeError, RecursionError, MemoryError) as err:
            raise self.fail(where, str(err)) from None

    def _same(
        self, where: str, info: BufferInfo, shape: Sequence[Dim], dt: str, what: str
    ) -> None:
        if tuple(info.shape) != tuple(shape) or info.dtype != dt:
            raise self.fail(
                where,
                f"type {_show_type(info.dtype, info.shape)} differs from {what} "
                f"({_show_type(dt, shape)})",
            )

    def _bind(self, where: str, i: int, n: int, seen: dict[int, int], b: int) -> None:
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n:
            raise self.fail(where, f"index {i!r} out of range (there are {n})")
        if i in seen:
            raise self.fail(where, f"index {i} is already bound to %{seen[i]}")
        seen[i] = b

    def _index(self, where: str, b: int) -> None:
        n = len(self.p.buffers)
        if isinstance(b, bool) or not isinstance(b, int) or not 0 <= b < n:
            raise self.fail(where, f"buffer {b!r} out of range (there are {n})")

    def _storage(self, where: str, s: int, n: int) -> None:
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < n:
            raise self.fail(where, f"storage {s!r} out of range (there are {n})")

    def _use(self, where: str, b: int, defined: list[bool], state: list[str]) -> None:
        self._index(where, b)
        if not defined[b]:
            raise self.fail(where, f"%{b} is used before it is defined")
        s = self.p.buffers[b].storage
        if s is not None and state[s] != "live":
            raise self.fail(where, f"%{b} lives in storage st{s}, which is {state[s]}")

    def _write(self, where: str, b: int, defined: list[bool], state: list[str]) -> None:
        self._index(where, b)
        if defined[b]:
            raise self.fail(where, f"%{b} is defined twice")
        info = self.p.buffers[b]
        if info.storage is None:
            raise self.fail(where, f"%{b} is written but has no storage")
        self._storage(where, info.storage, len(state))
        if state[info.storage] != "live":
            raise self.fail(
                where,
                f"%{b} lives in storage st{info.storage}, which is "
                f"{state[info.storage]}",
            )
        defined[b] = True
