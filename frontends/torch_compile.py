"""`torch.compile(model, backend="lpcc")`: lpcc as a TorchDynamo backend.

Dynamo hands `lpcc_backend` a torch-level graph per captured region (graph
breaks leave the rest of the Python running eagerly). The backend wraps
`aot_autograd`, which lowers that graph to ATen with lpcc's decomposition
table (`torch_export.decomposition_table`: Core ATen, `linear` kept), and
its forward compiler imports the ATen graph with the same importer
`lpcc.compile` uses (`torch_export.import_graph`), then runs the same steps
as `lpcc.compile`: quantize (when `options={"quant": ...}`), the pass
pipeline, `build_program` for `options["target"]` (default "cpu").

Weights. Dynamo lifts parameters and buffers into graph inputs, so the
graph alone cannot tell weights from activations. lpcc reads it from the
placeholders' Dynamo sources (`L['self']._modules['fc']._parameters
['weight']`: a parameter, named `fc.weight` as in the state_dict; the same
for `_buffers`; any `nn.Parameter` input counts too) and, since Dynamo's
example inputs for them are the real tensors, imports their values as
`lp.constant`s. Quantization therefore happens once per compiled graph, at
compile time. At every call the weights' storage pointer and version
counter are checked (a few hundred nanoseconds): if a weight was replaced
or updated in place since (`p.copy_(...)` under `no_grad`, `m.fc.weight =
...`), the graph is recompiled (and re-quantized) with the new values,
so a stale weight is never used. An update that bypasses the version
counter (writing through `p.data`) is not seen: recompile (or
`torch._dynamo.reset()`) after such an update.

Inference only: a graph reached with grad enabled and an input that
requires grad gets a callable that raises `TrainingError` on the call
(the same call that compiled it), rather than silently returning outputs
with no gradient. Run under `torch.no_grad()` or `torch.inference_mode()`.

Errors while compiling (an unsupported op, a bad option) are raised by
Dynamo as `torch._dynamo.exc.BackendCompilerFailed` whose message (and
`.inner_exception`) is lpcc's error.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch.fx import GraphModule, Node

from lpcc.errors import LpccError

from .torch_export import UNBOUNDED, _bound, decomposition_table, import_graph

if TYPE_CHECKING:
    from lpcc.api import CompiledModel

__all__ = ["OPTIONS", "TrainingError", "lpcc_backend", "register"]

# The options torch.compile(..., options={...}) takes, with their defaults.
OPTIONS: dict[str, Any] = {
    "quant": None,  # weight quantization, as lpcc.compile's quant=
    "target": "cpu",  # "cpu" or "reference"
    "opt_level": 2,  # as lpcc.compile's opt_level=
    "kernels": None,  # as lpcc.compile's kernels=
    "on_compile": None,  # called with each graph's CompiledModel (inspection)
}


class TrainingError(LpccError, RuntimeError):
    """A compiled graph was called in a way that needs gradients."""


class BackendOptionError(LpccError, ValueError):
    """torch.compile passed an option or mode lpcc does not know."""


def lpcc_backend(
    gm: GraphModule,
    example_inputs: Sequence[Any],
    *,
    mode: str | None = None,
    options: dict[str, Any] | None = None,
) -> Callable[..., Any]:
    """The Dynamo backend: `torch.compile(model, backend=lpcc_backend)`.

    `options` (torch.compile's `options=`): "quant" (e.g. "int4-g32"),
    "target" ("cpu", the default, or "reference"), "opt_level", "kernels"
    (as `lpcc.compile`) and "on_compile" (a function called with each
    compiled graph's `CompiledModel`, to look at its IR or quant report).
    """
    from torch._dynamo.backends.common import aot_autograd

    opts = _options(mode, options)
    if torch.is_grad_enabled() and any(
        isinstance(t, torch.Tensor) and t.requires_grad for t in example_inputs
    ):
        return _needs_grad
    state = _state_inputs(gm, example_inputs)
    lifted = [t for _, t in _module_state(gm)]
    real = [*lifted, *example_inputs]

    def fw_compiler(aten_gm: GraphModule, fakes: Sequence[Any]) -> Callable[..., Any]:
        return _CompiledGraph(aten_gm, real, state, opts, gm)

    return aot_autograd(fw_compiler=fw_compiler, decompositions=decomposition_table())(
        gm, list(example_inputs)
    )


def register(name: str = "lpcc") -> None:
    """Register `lpcc_backend` under `name` unless some backend has it.

    The installed package registers "lpcc" through its
    `torch_dynamo_backends` entry point; this is for a source checkout.
    """
    from torch._dynamo import list_backends, register_backend

    if name not in list_backends(exclude_tags=()):
        register_backend(name=name)(lpcc_backend)


def _options(mode: str | None, options: dict[str, Any] | None) -> dict[str, Any]:
    if mode not in (None, "default"):
        raise BackendOptionError(
            f"torch.compile(backend='lpcc', mode={mode!r}): lpcc has no modes; "
            "pass options={'quant': ..., 'target': ...} instead"
        )
    unknown = sorted(set(options or {}) - set(OPTIONS))
    if unknown:
        raise BackendOptionError(
            f"torch.compile(backend='lpcc'): unknown option(s) "
            f"{', '.join(map(repr, unknown))}; lpcc takes {', '.join(OPTIONS)}"
        )
    return {**OPTIONS, **(options or {})}


def _needs_grad(*args: Any) -> Any:
    raise TrainingError(
        "torch.compile(backend='lpcc') compiles inference only, and this graph "
        "needs gradients (grad mode is on and an input or weight requires grad). "
        "Call the model under `with torch.no_grad():` (or "
        "torch.inference_mode()), or use another backend for training"
    )


# -- which inputs are weights --------------------------------------------------------

_STATE_PART = re.compile(r"\._(modules|parameters|buffers)\['([^']*)'\]")


def _source_name(node: Node) -> str | None:
    grapharg = node.meta.get("grapharg")
    source = getattr(grapharg, "source", None)
    if source is None:
        return None
    name = source.name
    return name() if callable(name) else str(name)


def _state_inputs(gm: GraphModule, example_inputs: Sequence[Any]) -> dict[int, str]:
    """Index of each example input that is a parameter/buffer -> its name.

    The name is the state_dict key relative to the compiled module
    (`layers.0.weight`), read from the Dynamo source of the placeholder.
    """
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    out: dict[int, str] = {}
    for i, (node, value) in enumerate(zip(placeholders, example_inputs, strict=True)):
        if not isinstance(value, torch.Tensor):
            continue
        parts = _STATE_PART.findall(_source_name(node) or "")
        if parts and parts[-1][0] in ("parameters", "buffers"):
            out[i] = ".".join(key for _, key in parts)
        elif isinstance(value, torch.nn.Parameter):
            out[i] = node.name
    return out


def _module_state(gm: GraphModule) -> list[tuple[str, torch.Tensor]]:
    """State held by the graph module itself, which aot_autograd lifts into
    the first inputs (only when Dynamo does not inline nn modules)."""
    return [
        *gm.named_parameters(remove_duplicate=False),
        *gm.named_buffers(remove_duplicate=False),
    ]


def _user_name(node: Node) -> str:
    """`x` for Dynamo's `L['x']` (else the placeholder's own name)."""
    source = _source_name(node) or ""
    found = re.fullmatch(r"[LG]\['([A-Za-z_][A-Za-z0-9_]*)'\]", source)
    return found.group(1) if found else node.name


# -- the compiled graph --------------------------------------------------------------


class _CompiledGraph:
    """aot_autograd's compiled forward: the lpcc program of one ATen graph.

    Called (boxed: one list) with every graph input, weights included; runs
    the program on the user inputs and recompiles if a weight changed.
    """

    _boxed_call = True

    def __init__(
        self,
        aten_gm: GraphModule,
        real: Sequence[Any],
        state: dict[int, str],
        opts: dict[str, Any],
        dynamo_gm: GraphModule,
    ) -> None:
        self.gm = aten_gm
        self.opts = opts
        placeholders = [n for n in aten_gm.graph.nodes if n.op == "placeholder"]
        if len(placeholders) != len(real):
            raise LpccError(
                f"torch.compile(backend='lpcc'): aot_autograd's graph has "
                f"{len(placeholders)} inputs where Dynamo passed {len(real)}; lpcc "
                "cannot tell weights from inputs. Try lpcc.compile(model, ...) "
                "(torch.export) instead"
            )
        self._check_no_mutation()
        n_lifted = len(real) - len(
            [n for n in dynamo_gm.graph.nodes if n.op == "placeholder"]
        )
        names = {i + n_lifted: name for i, name in state.items()}
        names.update({i: key for i, (key, _) in enumerate(_module_state(dynamo_gm))})
        dyn_placeholders = [n for n in dynamo_gm.graph.nodes if n.op == "placeholder"]
        self.placeholders = placeholders
        self.const_idx = sorted(names)
        self.const_names = [names[i] for i in self.const_idx]
        self.user_idx = [i for i in range(len(real)) if i not in names]
        self.user_names = [
            _user_name(dyn_placeholders[i - n_lifted]) for i in self.user_idx
        ]
        # size arguments are bound by the tensors' shapes: not passed on
        self.tensor_idx = [
            i
            for i in self.user_idx
            if not isinstance(placeholders[i].meta.get("val"), torch.SymInt | int)
        ]
        self.compiled = self._compile([real[i] for i in self.const_idx])

    def _check_no_mutation(self) -> None:
        from torch._guards import TracingContext

        ctx = TracingContext.try_get()
        meta = getattr(ctx, "fw_metadata", None)
        if meta is not None and meta.num_mutated_inp_runtime_indices:
            raise LpccError(
                "torch.compile(backend='lpcc'): the graph updates an input or "
                "buffer in place; lpcc compiles pure inference functions. Remove "
                "in-place updates of buffers/inputs from forward (or move them out "
                "of the compiled region)"
            )

    def _key(self, weights: Sequence[Any]) -> list[tuple[int, int]]:
        return [(t.data_ptr(), t._version) for t in weights]

    def _compile(self, weights: list[torch.Tensor]) -> CompiledModel:
        from torch._subclasses.fake_tensor import unset_fake_temporarily

        ph = self.placeholders
        users = zip(self.user_idx, self.user_names, strict=True)
        inputs = [(ph[i], name) for i, name in users]
        consts = zip(self.const_idx, self.const_names, weights, strict=True)
        constants = [(ph[i], name, t) for i, name, t in consts]
        # aot_autograd calls its compiler under its fake mode; lpcc reads
        # the real weights
        with unset_fake_temporarily():
            imported = import_graph(
                self.gm.graph, inputs, constants, dim_ranges=self._ranges()
            )
            compiled = _compile_imported(imported, self.opts)
        self.weights_key = self._key(weights)
        if self.opts["on_compile"] is not None:
            self.opts["on_compile"](compiled)
        return compiled

    def _ranges(self) -> dict[str, tuple[int, int]]:
        """[min, max] of each size symbol, from Dynamo's shape environment."""
        out: dict[str, tuple[int, int]] = {}
        for i in self.user_idx:
            fake = self.placeholders[i].meta.get("val")
            sizes = [fake] if isinstance(fake, torch.SymInt) else []
            if isinstance(fake, torch.Tensor):
                sizes = [s for s in fake.shape if isinstance(s, torch.SymInt)]
            for s in sizes:
                expr = s.node.expr
                if not getattr(expr, "is_symbol", False):
                    continue
                vr = s.node.shape_env.var_to_range.get(expr)
                if vr is not None:
                    out[str(expr)] = (_bound(vr.lower, 0), _bound(vr.upper, UNBOUNDED))
        return out

    def __call__(self, args: list[Any]) -> list[torch.Tensor]:
        weights = [args[i] for i in self.const_idx]
        if self._key(weights) != self.weights_key:
            self.compiled = self._compile(weights)
        result = self.compiled(*[args[i] for i in self.tensor_idx])
        args.clear()  # the boxed convention: let the inputs be freed early
        return list(result) if isinstance(result, tuple) else [result]


def _compile_imported(imported: Any, opts: dict[str, Any]) -> CompiledModel:
    """lpcc.compile's steps after the import (quantize, passes, program)."""
    from lpcc.api import compile_imported

    return compile_imported(
        imported,
        quant=opts["quant"],
        target=opts["target"],
        opt_level=opts["opt_level"],
        kernels=opts["kernels"],
        frontend="torch.compile",
    )
