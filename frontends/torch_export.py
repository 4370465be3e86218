"""The torch frontend: torch.export -> Core ATen -> the lp dialect.

`export` runs `torch.export.export` (non-strict) on the module in eval mode
under `torch.no_grad()`, then `run_decompositions` with torch's default
table minus `KEPT_OPS`, the ops lpcc keeps whole because it lowers them
better than their decompositions. `import_exported` walks the resulting
graph once (through `import_graph`, which the torch.compile backend calls
on aot_autograd's ATen graphs, saying itself which inputs are weights) and
emits one `func.func @main`:

* arguments are the user inputs, in order (dynamic sizes in `lp.dims`);
* parameters, buffers and lifted constants become `lp.constant` ops named
  (`lp.name`) by their state_dict key; tensors shared under several keys
  (tied weights) become one constant, named by the first key;
* each ATen node goes through its converter in `aten_ops.py`, and its
  result is made to agree with torch's metadata (dtype and sizes);
* the results are the user outputs.

Anything without a converter raises `UnsupportedOpError` with the module
path and source line of the node; nothing is silently dropped.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind, OutputKind, TensorArgument
from torch.fx import Graph, Node
from xdsl.dialects import func
from xdsl.dialects.builtin import (
    ArrayAttr,
    DictionaryAttr,
    FunctionType,
    ModuleOp,
    StringAttr,
)
from xdsl.ir import Block, Operation, Region, SSAValue

from lpcc.errors import IRError, error_message
from lpcc.ir.dialect import ops as lp
from lpcc.ir.dialect import verify_module
from lpcc.ir.dialect.types import DYNAMIC, tensor_type
from lpcc.ir.symbolic import DIMS_ATTR, format_dims

from .aten_ops import (
    CONVERTERS,
    IGNORED,
    Builder,
    FrontendError,
    SymValue,
    Unsupported,
    UnsupportedOpError,
    _dims_from_fake,
    _shape,
    assigned_names,
    lp_dtype,
    module_path,
    node_location,
    node_where,
    op_name,
    supported_ops,
    sym_dim,
    unsupported_error,
)

__all__ = [
    "KEPT_OPS",
    "FrontendError",
    "Imported",
    "UnsupportedOpError",
    "decomposition_table",
    "export",
    "import_exported",
    "import_graph",
    "import_module",
    "supported_ops",
]

aten = torch.ops.aten

# Ops deleted from torch's decomposition table, and why. Everything else is
# decomposed to Core ATen, which keeps the converter list short. Considered
# and not kept: scaled_dot_product_attention, rms_norm, silu, matmul (lp has
# no fused op for them, and their decompositions are what a converter would
# emit anyway); layer_norm, gelu, softmax, convolution and pooling already
# reach the importer whole (Core ATen keeps them).
KEPT_OPS: dict[Any, str] = {
    aten.linear.default: (
        "becomes `lp.matmul %x, %W transpose_b` on the weight constant itself, "
        "the pattern the weight-quantization pass matches; its decomposition "
        "hides W behind a permute (addmm(b, x, permute(W)))"
    ),
}

# Size bound used for a symbol torch leaves unbounded above.
UNBOUNDED = 2**63 - 1


@dataclass
class Imported:
    """The result of importing: a verified module and what names its values."""

    module: ModuleOp
    input_names: list[str]
    output_names: list[str]
    dim_ranges: dict[str, tuple[int, int]] = field(default_factory=dict)


def decomposition_table() -> dict[Any, Any]:
    """torch's default decompositions minus `KEPT_OPS` (a fresh dict)."""
    return dict(_decomposition_table())


@functools.cache
def _decomposition_table() -> dict[Any, Any]:
    # Materialized once: torch's lazy table costs ~0.1 s to expand per call.
    table = torch.export.default_decompositions()
    for op in KEPT_OPS:
        if op in table:
            del table[op]
    return dict(table.items())


def _as_tuple(example_inputs: Any) -> tuple[Any, ...]:
    if isinstance(example_inputs, torch.Tensor | np.ndarray):
        example_inputs = (example_inputs,)
    if not isinstance(example_inputs, tuple | list):
        raise FrontendError(
            "example_inputs must be a tensor or a tuple/list of tensors, got "
            f"{type(example_inputs).__name__}"
        )
    return tuple(
        torch.from_numpy(x) if isinstance(x, np.ndarray) else x for x in example_inputs
    )


def export(
    module: torch.nn.Module,
    example_inputs: Any,
    *,
    dynamic_shapes: Any = None,
) -> ExportedProgram:
    """torch.export (non-strict, eval mode, no grad), then Core ATen + KEPT_OPS."""
    if not isinstance(module, torch.nn.Module):
        raise FrontendError(
            f"lpcc expects a torch.nn.Module, got {type(module).__name__}; wrap a "
            "function in a Module whose forward calls it"
        )
    args = _as_tuple(example_inputs)
    module = module.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # torch 2.13's own pytree use warns on every export; not the user's
            warnings.filterwarnings("ignore", ".*LeafSpec.*", FutureWarning)
            ep = torch.export.export(
                module, args, dynamic_shapes=dynamic_shapes, strict=False
            )
            return ep.run_decompositions(decomposition_table())
    except Exception as err:
        raise FrontendError(
            f"torch.export could not trace {type(module).__name__}: "
            f"{type(err).__name__}: {err}\n"
            "Hint: lpcc compiles what torch.export can trace; fix the error above "
            "(data-dependent control flow, unsupported Python) and retry."
        ) from err


def _constant_values(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu()
    if t.dtype in (torch.float16, torch.bfloat16):
        t = t.float()  # exact; the codec rounds back to the 16-bit type
    return t.contiguous().numpy()


def _storage_key(t: torch.Tensor) -> tuple[Any, ...]:
    return (
        t.untyped_storage().data_ptr(),
        t.storage_offset(),
        tuple(t.shape),
        tuple(t.stride()),
        t.dtype,
    )


class _GraphImporter:
    """Imports one ATen fx.Graph; shared by torch.export and torch.compile.

    `inputs` are the placeholders that become @main's arguments, in order,
    with their names (a SymInt placeholder becomes a size, not an argument);
    `constants` the placeholders that become named `lp.constant`s, with their
    state_dict key and value (only those the graph uses need a value).
    """

    def __init__(
        self,
        graph: Graph,
        inputs: Sequence[tuple[Node, str]],
        constants: Sequence[tuple[Node, str, torch.Tensor]],
        *,
        output_names: Sequence[str] | None = None,
        ranges: Mapping[str, tuple[int, int]] | None = None,
    ) -> None:
        self.graph = graph
        self.inputs = list(inputs)
        self.constants = list(constants)
        self.output_names = None if output_names is None else list(output_names)
        self.ranges = dict(ranges or {})
        self.block = Block()
        self.b = Builder(self.block)
        self.input_names: list[str] = []
        self.arg_dims: list[tuple[Any, ...]] = []

    # -- placeholders --------------------------------------------------------------

    def placeholders(self) -> None:
        """User inputs become @main's arguments, the rest named constants."""
        for node, name in self.inputs:
            self._argument(node, name)
        # the function exists from here on, so arguments' lp.dims are readable
        self.fn = func.FuncOp(
            "main",
            ([a.type for a in self.block.args], []),
            Region(self.block),
            arg_attrs=ArrayAttr(
                [
                    DictionaryAttr(
                        {DIMS_ATTR: StringAttr(format_dims(dims))}
                        if any(isinstance(d, str) for d in dims)
                        else {}
                    )
                    for dims in self.arg_dims
                ]
            ),
        )
        shared: dict[tuple[Any, ...], SSAValue] = {}
        for node, target, t in self.constants:
            if not node.users:
                continue
            key = _storage_key(t)
            if key in shared:  # tied weights: one constant
                self.b.values[node] = shared[key]
                continue
            try:
                dt = lp_dtype(t.dtype)
            except Unsupported as err:
                raise FrontendError(f"{target!r}: {err.reason}; {err.hint}") from None
            value = self.b.const(_constant_values(t), dt)
            assert isinstance(value.owner, lp.ConstantOp)
            value.owner.attributes["lp.name"] = StringAttr(target)
            value.name_hint = _hint(target)
            shared[key] = self.b.values[node] = value

    def _argument(self, node: Node, name: str) -> None:
        fake = node.meta["val"]
        if isinstance(fake, torch.SymInt | int):
            # a size passed on its own (torch.compile's dynamic shapes): a
            # symbol the tensors' shapes bind, not an argument
            self.b.values[node] = SymValue(self._sym(node, fake))
            return
        try:
            dt = lp_dtype(fake.dtype)
            dims = _dims_from_fake(fake)
        except Unsupported as err:
            raise FrontendError(
                error_message(
                    f"input {name!r} of the model cannot be imported",
                    stage="frontend",
                    why=err.reason,
                    hint=f"{err.hint}; the conversion happens in torch, before "
                    "the call (example inputs and calls alike)",
                )
            ) from None
        value = self.block.insert_arg(
            tensor_type(dt, [d if isinstance(d, int) else -1 for d in dims]),
            len(self.block.args),
        )
        value.name_hint = _hint(name)
        self.b.values[node] = value
        self.input_names.append(name)
        self.arg_dims.append(dims)

    # -- nodes -----------------------------------------------------------------

    def call(self, node: Node) -> None:
        target = node.target
        fake = node.meta.get("val")
        if target in IGNORED:
            if isinstance(fake, torch.SymInt | int):
                self.b.values[node] = SymValue(self._sym(node, fake))
            return
        if isinstance(fake, torch.SymInt | torch.SymFloat | torch.SymBool | int):
            # arithmetic on sizes: only its value (if constant) is ever read
            self.b.values[node] = SymValue(self._sym(node, fake))
            return
        convert = CONVERTERS.get(target)
        if convert is None:
            raise unsupported_error(
                node, f"lpcc has no converter for the ATen op `{op_name(node)}`."
            )
        before = self.block.last_op
        try:
            result = convert(self.b, node)
            self.b.values[node] = self.finish(node, result)
        except Unsupported as err:
            raise unsupported_error(node, err.reason, err.hint) from None
        except IRError as err:
            raise FrontendError(
                error_message(
                    f"failed to import `{op_name(node)}` (graph node %{node.name})",
                    stage="frontend",
                    why=str(err),
                    hint="this is a bug in lpcc's torch frontend; please open an "
                    "issue with the model (or its `torch.export` graph)",
                    **node_where(node),
                )
            ) from err
        _locate(self.block, before, node_location(node))

    def _sym(self, node: Node, value: Any) -> Any:
        if isinstance(value, int):
            return value
        try:
            return sym_dim(value)
        except Unsupported:
            return str(value)

    def finish(self, node: Node, result: Any) -> Any:
        """Make `result` agree with torch's metadata for `node`."""
        fake = node.meta.get("val")
        if isinstance(result, tuple):
            return tuple(
                self._agree(node, r, f) if isinstance(r, SSAValue) else r
                for r, f in zip(result, fake, strict=True)
            )
        if result is None:
            return None
        return self._agree(node, result, fake)

    def _agree(self, node: Node, v: SSAValue, fake: Any) -> SSAValue:
        b = self.b
        if not isinstance(fake, torch.Tensor):
            return v
        v = b.cast(v, lp_dtype(fake.dtype))
        want = _dims_from_fake(fake)
        shape = _shape(v)
        if len(shape) != len(want) or any(
            s != DYNAMIC and isinstance(w, int) and s != w
            for s, w in zip(shape, want, strict=True)
        ):
            raise IRError(
                f"the converter produced shape {list(shape)}, torch says {list(want)}"
            )
        if any(
            s == DYNAMIC and isinstance(w, int)
            for s, w in zip(shape, want, strict=True)
        ):
            v = b.reshape(v, want)
        elif DYNAMIC in shape and isinstance(v.owner, lp.LpOp):
            lp.set_dims(
                v.owner,
                [s if s != DYNAMIC else w for s, w in zip(shape, want, strict=True)],
            )
        if v.name_hint is None:
            v.name_hint = self._name(node)
        return v

    # -- the function ------------------------------------------------------------------

    def outputs(self) -> tuple[list[SSAValue], list[str]]:
        (out_node,) = (n for n in self.graph.nodes if n.op == "output")
        flat = list(out_node.args[0])
        names = self.output_names or [
            x.name if isinstance(x, Node) else f"out{i}" for i, x in enumerate(flat)
        ]
        values = []
        for name, x in zip(names, flat, strict=True):
            v = self.b.values.get(x) if isinstance(x, Node) else None
            if not isinstance(v, SSAValue):
                raise FrontendError(
                    f"output {name!r} is not a tensor ({x!r}); lpcc programs "
                    "return tensors only"
                )
            values.append(v)
        return values, names

    def _name(self, node: Node) -> str:
        """The SSA name of `node`: module path + user variable (or node) name."""
        path = module_path(node)
        for base in (self.var_names.get(node), node.name):  # node names are unique
            name = _hint(f"{path}.{base}" if path else str(base))
            if base is not None and name not in self.used_names:
                self.used_names.add(name)
                return name
        return _hint(node.name)

    def run(self) -> Imported:
        self.var_names = assigned_names(
            [n for n in self.graph.nodes if n.op == "call_function"]
        )
        self.used_names: set[str] = set()
        self.placeholders()
        for node in self.graph.nodes:
            if node.op == "call_function":
                self.call(node)
            elif node.op not in ("placeholder", "output", "get_attr"):
                raise FrontendError(f"unexpected graph node {node.op} {node.name}")
            elif node.op == "get_attr":
                raise unsupported_error(
                    node, "submodule calls (control flow ops) are not supported"
                )
        values, names = self.outputs()
        self.block.add_op(func.ReturnOp(*values))
        _dce(self.block)
        self.fn.function_type = FunctionType.from_lists(
            [a.type for a in self.block.args], [v.type for v in values]
        )
        module = ModuleOp([self.fn])
        verify_module(module, "the imported module")
        return Imported(module, self.input_names, names, dict(self.ranges))


def _exported_graph(ep: ExportedProgram) -> _GraphImporter:
    """The graph importer of an exported program: its signature says which
    placeholders are user inputs and which are state (by state_dict key)."""
    nodes = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
    inputs: list[tuple[Node, str]] = []
    constants: list[tuple[Node, str, torch.Tensor]] = []
    for spec in ep.graph_signature.input_specs:
        arg = spec.arg
        if spec.kind == InputKind.USER_INPUT:
            if not isinstance(arg, TensorArgument):
                raise FrontendError(
                    f"input {getattr(arg, 'name', arg)!r} is not a tensor ({arg}); "
                    "lpcc programs take tensors only. Bake constant arguments "
                    "into the module (a wrapper whose forward passes them)"
                )
            inputs.append((nodes[arg.name], arg.name))
            continue
        if spec.kind not in (
            InputKind.PARAMETER,
            InputKind.BUFFER,
            InputKind.CONSTANT_TENSOR,
        ):
            raise FrontendError(
                f"exported input {arg} of kind {spec.kind.name} is not supported"
            )
        node = nodes[arg.name]
        if not node.users:
            continue
        assert spec.target is not None
        constants.append((node, spec.target, _lifted(ep, spec.kind, spec.target)))
    names = []
    for spec in ep.graph_signature.output_specs:
        if spec.kind != OutputKind.USER_OUTPUT:
            raise FrontendError(
                f"the module updates state in forward ({spec.kind.name} of "
                f"{spec.target!r}); lpcc compiles pure inference functions. "
                "Remove in-place updates of buffers/inputs from forward"
            )
        names.append(getattr(spec.arg, "name", f"out{len(names)}"))
    ranges = {
        str(sym): (_bound(vr.lower, 0), _bound(vr.upper, UNBOUNDED))
        for sym, vr in ep.range_constraints.items()
    }  # each symbol's [min, max]; UNBOUNDED where torch has no upper bound
    return _GraphImporter(
        ep.graph, inputs, constants, output_names=names, ranges=ranges
    )


def _lifted(ep: ExportedProgram, kind: InputKind, target: str) -> torch.Tensor:
    if target in ep.state_dict:
        value = ep.state_dict[target]
    elif target in ep.constants:
        value = ep.constants[target]
    else:
        raise FrontendError(f"the exported program has no value for {target!r}")
    if not isinstance(value, torch.Tensor):
        raise FrontendError(
            f"{kind.name.lower()} {target!r} is a {type(value).__name__}, "
            "not a tensor; lpcc imports tensor state only"
        )
    return value


def _bound(value: Any, default: int) -> int:
    try:
        return min(int(value), UNBOUNDED)
    except (TypeError, ValueError, OverflowError, AttributeError):
        return default  # sympy oo / torch int_oo


def _hint(name: str) -> str:
    """A valid SSA name from a torch name ("0.weight" -> "_0.weight")."""
    text = "".join(c if c.isalnum() or c in "_." else "_" for c in name)
    return f"_{text}" if text[:1].isdigit() else text


def _locate(block: Block, before: Operation | None, loc: Any) -> None:
    """Give the ops added after `before` the source location `loc`."""
    op = block.first_op if before is None else before.next_op
    while op is not None:
        op.location = loc
        op = op.next_op


def _dce(block: Block) -> None:
    """Erase ops whose results are unused (every lp op is pure)."""
    changed = True
    while changed:
        changed = False
        for op in reversed(list(block.ops)):
            if isinstance(op, func.ReturnOp):
                continue
            if all(not r.uses for r in op.results):
                block.erase_op(op)
                changed = True


def import_exported(ep: ExportedProgram) -> Imported:
    """The lp module of an exported (and decomposed) program."""
    return _exported_graph(ep).run()


def import_graph(
    graph: Graph,
    inputs: Sequence[tuple[Node, str]],
    constants: Sequence[tuple[Node, str, torch.Tensor]],
    *,
    output_names: Sequence[str] | None = None,
    dim_ranges: Mapping[str, tuple[int, int]] | None = None,
) -> Imported:
    """The lp module of an ATen fx.Graph whose placeholders are `inputs`
    (node, name: @main's arguments, or sizes for SymInt placeholders) and
    `constants` (node, state_dict key, value: named `lp.constant`s).

    The torch.compile backend's entry: aot_autograd's graphs have no export
    signature, so the caller says which placeholders are weights.
    """
    return _GraphImporter(
        graph, inputs, constants, output_names=output_names, ranges=dim_ranges
    ).run()


def import_module(
    module: torch.nn.Module,
    example_inputs: Any,
    *,
    dynamic_shapes: Any = None,
) -> Imported:
    """`export` then `import_exported`."""
    return import_exported(
        export(module, example_inputs, dynamic_shapes=dynamic_shapes)
    )
