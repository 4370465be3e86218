"""What every backend's kernel generators share: requests, repacks, the registry.

A *kernel request* is one kernel of a program: `func.func @kernel` holding
one lp op (or one `lp.fused` region) and its `func.return`, exactly what the
reference target runs in the interpreter (`lpcc.codegen.program`). A
backend's generators register per op class; the first that accepts a
request wins, and a request nobody takes runs as a reference kernel (a
fused region is first split into its ops). The CPU (`codegen.llvm.kernel`)
and CUDA (`codegen.cuda.kernel`) contracts add what their answers hold.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
from xdsl.dialects import func
from xdsl.ir import Operation, SSAValue

from lpcc.ir.dialect import ops as lp
from lpcc.ir.dialect import to_dtype
from lpcc.ir.dtypes import DType
from lpcc.ir.symbolic import Dim


@dataclass(frozen=True)
class Repack:
    """How a constant input is rewritten for a kernel, once, at compile time.

    `fn` takes the constant's value-domain array (its logical shape) and
    returns a 1-D uint8 array: the bytes the kernel reads. `layout` names
    the order in listings and dumps (e.g. "lut4-avx2[32 rows x g128]").
    Two kernels with the same `layout` share one repacked copy.
    """

    layout: str
    fn: Callable[[np.ndarray], np.ndarray]


class FuncRequest:
    """The parts of a request every backend reads (mixed into its dataclass)."""

    func: func.FuncOp
    const_inputs: frozenset[int]  # argument indices fed by program constants

    @property
    def op(self) -> Operation:
        """The kernel's one op (an lp op or an `lp.fused`)."""
        first = self.func.body.block.first_op
        assert first is not None
        return first

    @property
    def args(self) -> tuple[SSAValue, ...]:
        return tuple(self.func.body.block.args)

    def arg_index(self, v: SSAValue) -> int:
        """Input slot of `v`, a kernel argument."""
        return self.args.index(v)  # type: ignore[arg-type]


R = TypeVar("R")
A = TypeVar("A")


class Registry(Generic[R, A]):
    """Generators by op class (and fused kind), loaded from a package on first use."""

    def __init__(self, package: str) -> None:
        self.package = package
        self.generators: dict[type, list[tuple[str | None, Callable[[R], A | None]]]]
        self.generators = {}
        self.loaded = False

    def register(
        self, op_type: type, kind: str | None = None
    ) -> Callable[[Callable[[R], A | None]], Callable[[R], A | None]]:
        """Decorator: `gen` may generate kernels for `op_type` (fused: of `kind`)."""

        def deco(gen: Callable[[R], A | None]) -> Callable[[R], A | None]:
            self.generators.setdefault(op_type, []).append((kind, gen))
            return gen

        return deco

    def _load(self) -> None:
        """Import the generator modules (they register on import)."""
        self.loaded = True
        pkg = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(pkg.__path__):
            importlib.import_module(f"{pkg.__name__}.{info.name}")

    def generate(self, req: Any) -> A | None:
        """The first registered generator's answer for `req`, or None."""
        if not self.loaded:
            self._load()
        op = req.op
        kind = getattr(getattr(op, "kind", None), "data", None)
        for want, gen in self.generators.get(type(op), ()):
            if want is not None and want != kind:
                continue
            answer = gen(req)
            if answer is not None:
                return answer
        return None


def elem(v: SSAValue) -> DType:
    """The lpcc element type of a tensor value."""
    return to_dtype(v.type.element_type)  # type: ignore[attr-defined]


def shape(v: SSAValue) -> tuple[Dim, ...]:
    """Shape of a tensor value: ints and size expressions (`lp.value_dims`)."""
    return lp.value_dims(v)
