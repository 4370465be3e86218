"""torch.compile(model, backend="lpcc"): the Dynamo backend, end to end.

References are torch eager on the same module (or, with quantization, on a
copy whose weights are the dequantized ones, as tests/test_api.py does).
Every comparison also checks that lpcc compiled something (`on_compile`
counts), so an eager fallback cannot pass for a compiled result.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import re
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from lpcc.frontends.aten_ops import UnsupportedOpError
from lpcc.frontends.torch_compile import (
    BackendOptionError,
    TrainingError,
    lpcc_backend,
    register,
)
from torch import nn
from torch._dynamo.exc import BackendCompilerFailed

import lpcc
from lpcc.api import CompiledModel
from lpcc.models import MLP, SmallCNN, TinyGPT2, TinyLlama

ROOT = Path(__file__).parent.parent.parent


@pytest.fixture(autouse=True)
def _fresh_dynamo() -> Iterator[None]:
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    assert got.shape == want.shape and got.dtype == want.dtype
    return float((got - want).abs().max() / want.abs().max())


def compiled(
    model: nn.Module, seen: list[CompiledModel], **options: Any
) -> Callable[..., Any]:
    options.setdefault("target", "reference")
    return torch.compile(  # type: ignore[return-value]
        model,
        backend=lpcc_backend,
        dynamic=options.pop("dynamic", False),
        options={**options, "on_compile": seen.append},
    )


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


MODELS = [
    ("mlp", MLP, lambda: torch.randn(3, 16, generator=_gen(3))),
    ("llama", TinyLlama, lambda: torch.randint(0, 64, (2, 5), generator=_gen(1))),
    ("gpt2", TinyGPT2, lambda: torch.randint(0, 64, (2, 5), generator=_gen(1))),
    ("cnn", SmallCNN, lambda: torch.randn(2, 3, 9, 9, generator=_gen(2))),
]


@pytest.mark.parametrize(
    ("name", "factory", "example"), MODELS, ids=[m[0] for m in MODELS]
)
def test_models_match_eager(
    name: str, factory: Callable[[], nn.Module], example: Callable[[], Any]
) -> None:
    """fp32 through the whole pipeline: rel. error <= 1e-4.

    Only float sums are reassociated (K <= 128 terms per dot product, a few
    layers): each costs at most ~K * 2**-24 ~ 1e-5 relative, so 1e-4 leaves
    room for depth while any wrong op (errors ~1e-1 and up) fails.
    """
    model, x, seen = factory().eval(), example(), []
    fn = compiled(model, seen)
    with torch.no_grad():
        want = model(x)
        got = fn(x)
    assert len(seen) == 1, "lpcc compiled one graph"
    assert rel_err(got, want) <= 1e-4, name
    ir = seen[0].ir("import")
    assert "lp.matmul" in ir
    # the weights are constants named by their state_dict keys, not inputs
    assert len(seen[0].program.inputs) == 1
    some_weight = next(k for k, _ in model.named_parameters() if "weight" in k)
    assert f'"{some_weight}"' in ir


def test_cpu_target_is_the_default() -> None:
    model, seen = MLP().eval(), []
    fn = torch.compile(model, backend=lpcc_backend, options={"on_compile": seen.append})
    x = torch.randn(5, 16, generator=_gen(5))
    with torch.no_grad():
        got, want = fn(x), model(x)
    assert seen and seen[0].program.target == "cpu"
    assert rel_err(got, want) <= 1e-4  # as test_models_match_eager


def test_quantizes_once_and_matches_eager_on_dequantized_weights(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """int4-g16 via torch.compile == eager with the dequantized weights, and
    == lpcc.compile's program (same layers, same quantization)."""
    import lpcc.passes.quantize as quantize_pass
    from lpcc.demo import dequantized_copy
    from lpcc.quant import parse_quant

    calls = []
    real = quantize_pass.quantize_module
    monkeypatch.setattr(
        quantize_pass,
        "quantize_module",
        lambda *a, **k: calls.append(1) or real(*a, **k),
    )
    model = TinyLlama().eval()
    ids = torch.randint(0, 64, (1, 7), generator=_gen(4))
    seen: list[CompiledModel] = []
    fn = compiled(model, seen, quant="int4-g16", kernels={"*": "dequant"})
    reference = dequantized_copy(model, parse_quant("int4-g16"))
    with torch.no_grad():
        want, fp32 = reference(ids), model(ids)
        got = [fn(ids) for _ in range(3)]
    assert len(seen) == 1 and len(calls) == 1  # quantized once, called 3 times
    for g in got:
        # the dequant kernel only reassociates float sums (test_api's bound)
        assert rel_err(g, want) <= 1e-5
    # quantization did change the model (the check above is not vacuous)
    assert float((fp32 - want).abs().max()) > 100 * float((got[0] - want).abs().max())
    rows = seen[0].quant_report().rows
    direct = lpcc.compile(model, (ids,), quant="int4-g16").quant_report().rows
    assert [(r.name, r.shape, r.nmse) for r in rows] == [
        (r.name, r.shape, r.nmse) for r in direct
    ]


def test_weight_updates_recompile() -> None:
    model, seen = MLP().eval(), []
    fn = compiled(model, seen)
    x = torch.randn(4, 16, generator=_gen(6))
    with torch.no_grad():
        fn(x)
        model.layers[0].weight.mul_(-2.0)  # in place: bumps the version counter
        got, want = fn(x), model(x)
        assert len(seen) == 2 and rel_err(got, want) <= 1e-4
        model.layers[1].bias = nn.Parameter(torch.ones(32))  # replaced
        got, want = fn(x), model(x)
        assert len(seen) == 3 and rel_err(got, want) <= 1e-4
        fn(x)  # unchanged weights: no compile
    assert len(seen) == 3


class Branchy(nn.Module):
    """A graph break (`.item()` picks the Python branch) and a print."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        print("between the graphs")
        h = torch.relu(h) if h.sum().item() > 0 else torch.tanh(h)
        return self.fc2(h)


def test_graph_breaks_compile_each_subgraph() -> None:
    model, seen = Branchy().eval(), []
    fn = compiled(model, seen)
    x = torch.randn(3, 8, generator=_gen(7))
    out = io.StringIO()
    with torch.no_grad(), contextlib.redirect_stdout(out):
        for sign in (1.0, -1.0):
            want = model(sign * x)
            assert rel_err(fn(sign * x), want) <= 1e-4
    assert out.getvalue().count("between the graphs") == 4  # eager ran the print
    assert len(seen) >= 3  # fc1, and fc2 after each branch
    irs = [c.ir("import") for c in seen]
    assert any('"fc1.weight"' in t for t in irs) and any(
        '"fc2.weight"' in t for t in irs
    )
    assert any("lp.tanh" in t for t in irs) and any("lp.max" in t for t in irs)


def test_dynamic_sizes_recompile_once() -> None:
    model, seen = MLP().eval(), []
    fn = compiled(model, seen, dynamic=None)  # torch's default
    with torch.no_grad():
        for rows in (3, 5, 7, 2):
            x = torch.randn(rows, 16, generator=_gen(rows))
            assert rel_err(fn(x), model(x)) <= 1e-4
    assert len(seen) == 2  # static, then one graph with a dynamic dimension
    assert "tensor<?x16xf32>" in seen[1].ir("import")


def test_training_is_a_clear_error() -> None:
    model, seen = MLP(), []
    fn = compiled(model, seen)
    x = torch.randn(2, 16)
    with pytest.raises(TrainingError, match=r"inference only.*torch\.no_grad\(\)"):
        fn(x)
    assert isinstance(TrainingError("x"), lpcc.LpccError) and not seen
    with torch.no_grad():
        assert rel_err(fn(x), model(x)) <= 1e-4
    assert len(seen) == 1


class Floors(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.floor(self.fc(x))  # no converter for aten.floor


def test_unsupported_op_names_op_and_line() -> None:
    fn = compiled(Floors().eval(), [])
    with pytest.raises(BackendCompilerFailed) as info, torch.no_grad():
        fn(torch.randn(2, 8))
    inner = info.value.inner_exception
    assert isinstance(inner, UnsupportedOpError)
    msg = str(info.value)
    assert "aten.floor.default" in msg
    assert "return torch.floor(self.fc(x))" in msg  # the user's source line
    assert re.search(r"^Hint: ", msg, re.M)


def test_bad_options_say_what_is_accepted() -> None:
    fn = torch.compile(MLP().eval(), backend=lpcc_backend, options={"qaunt": "int4"})
    with pytest.raises(BackendCompilerFailed) as info, torch.no_grad():
        fn(torch.randn(2, 16))
    assert isinstance(info.value.inner_exception, BackendOptionError)
    assert "'qaunt'" in str(info.value) and "quant, target" in str(info.value)


def test_registered_by_name() -> None:
    register()
    register()  # idempotent
    model, seen = MLP().eval(), []
    fn = torch.compile(
        model,
        backend="lpcc",
        options={"target": "reference", "on_compile": seen.append},
    )
    x = torch.randn(2, 16)
    with torch.no_grad():
        assert rel_err(fn(x), model(x)) <= 1e-4
    assert len(seen) == 1


def test_entry_point_is_declared_and_installed() -> None:
    """`backend="lpcc"` works in a fresh process without `register()`."""
    want = "lpcc.frontends.torch_compile:lpcc_backend"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = project["project"]["entry-points"]["torch_dynamo_backends"]
    assert declared == {"lpcc": want}
    installed = importlib.metadata.entry_points(group="torch_dynamo_backends")
    assert [ep.value for ep in installed if ep.name == "lpcc"] == [want]


def test_docs_example_runs() -> None:
    text = (ROOT / "docs" / "using.md").read_text()
    section = text.split("## torch.compile\n", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "docs/using.md", "exec"), {})
    assert out.getvalue().strip() == "torch.Size([3, 8])"
