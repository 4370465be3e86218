"""What a user sees when lpcc cannot import a model.

Unsupported ops (and unsupported argument combinations of supported ops)
raise `UnsupportedOpError` naming the ATen op, the module path and class,
the user's source line and what to do; other problems raise
`FrontendError`. Both are `LpccError`s.
"""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from lpcc.frontends.torch_export import (
    FrontendError,
    UnsupportedOpError,
    import_module,
)
from torch import nn

import lpcc


class MyMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.floor(self.fc(x))  # no converter for aten.floor


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mlp = MyMLP()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(x)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([Block()])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks[0](x)


class Lambda(nn.Module):
    def __init__(self, fn: object) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, *args: torch.Tensor) -> object:
        return self.fn(*args)  # type: ignore[operator]


def test_unsupported_op_message() -> None:
    with pytest.raises(UnsupportedOpError) as info:
        import_module(Net(), (torch.randn(2, 8),))
    msg = str(info.value)
    assert isinstance(info.value, lpcc.LpccError)
    assert "aten.floor.default" in msg
    assert "blocks.0.mlp (MyMLP)" in msg
    assert f"{__file__}:" in msg  # the user's file and line ...
    assert "return torch.floor(self.fc(x))" in msg  # ... and its text
    assert re.search(r"^Reason: ", msg, re.M)
    assert re.search(r"^Explanation: ", msg, re.M)
    assert re.search(r"^Hint: rewrite with supported ops, or open an issue", msg, re.M)
    assert "lpcc.frontends.supported_ops()" in msg
    assert len(msg.splitlines()) <= 12  # one screen


def test_line_points_at_the_user_source_line() -> None:
    with pytest.raises(UnsupportedOpError) as info:
        import_module(Net(), (torch.randn(2, 8),))
    with open(__file__) as f:
        source = f.read().splitlines()
    line = 1 + next(
        i for i, text in enumerate(source) if "return torch.floor(self.fc(x))" in text
    )
    assert f"{__file__}:{line}" in str(info.value)


@pytest.mark.parametrize(
    ("fn", "inputs", "pattern"),
    [
        (
            lambda x: F.max_pool2d(x, 2, return_indices=True)[1].float(),
            [torch.randn(1, 2, 4, 4)],
            r"max_pool2d_with_indices.default \(output 1\)(.*\n)*Reason: .*indices",
        ),
        (
            lambda x, w: F.conv3d(x, w),
            [torch.randn(1, 2, 4, 4, 4), torch.randn(3, 2, 1, 1, 1)],
            r"aten.convolution.default(.*\n)*Reason: .*3-D convolution",
        ),
        (
            lambda q: F.scaled_dot_product_attention(q, q, q, dropout_p=0.5),
            [torch.randn(1, 2, 3, 4)],
            r"native_dropout(.*\n)*Reason: .*dropout(.*\n)*Hint: .*eval\(\)",
        ),
        (
            lambda x, m: x[m],
            [torch.randn(3, 4), torch.rand(3, 4) > 0.5],
            r"boolean mask",
        ),
        (
            lambda x, i, j: x[i, j],
            [torch.randn(3, 4), torch.tensor([0, 1]), torch.tensor([1, 2])],
            r"2 index tensors",
        ),
        (
            lambda x: x.max(dim=1).indices,
            [torch.randn(3, 4)],
            r"indices",
        ),
        (
            lambda x, w: F.conv_transpose2d(x, w),
            [torch.randn(1, 2, 4, 4), torch.randn(2, 3, 3, 3)],
            r"transposed convolution",
        ),
        (
            lambda x: F.adaptive_avg_pool2d(x, (2, 3)),
            [torch.randn(1, 2, 5, 5)],
            r"output size to divide",
        ),
        (
            lambda x: F.avg_pool2d(x, 2, divisor_override=3),
            [torch.randn(1, 2, 4, 4)],
            r"divisor_override",
        ),
    ],
    ids=[
        "max_pool_indices",
        "conv3d",
        "sdpa_dropout",
        "bool_mask_index",
        "two_index_tensors",
        "max_dim_indices",
        "conv_transpose",
        "adaptive_pool_not_dividing",
        "avg_pool_divisor",
    ],
)
def test_unsupported_argument_combinations(
    fn: object, inputs: list[torch.Tensor], pattern: str
) -> None:
    with pytest.raises(UnsupportedOpError, match=pattern) as info:
        import_module(Lambda(fn), tuple(inputs))
    assert "Hint: " in str(info.value)


def test_float64_input() -> None:
    with pytest.raises(FrontendError, match=r"float64(.*\n)*.*float32"):
        import_module(Lambda(lambda x: x + 1), (torch.randn(3, dtype=torch.float64),))


def test_data_dependent_control_flow() -> None:
    def branchy(x: torch.Tensor) -> torch.Tensor:
        return x + 1 if x.sum() > 0 else x - 1

    with pytest.raises(FrontendError, match=r"torch\.export could not trace") as info:
        import_module(Lambda(branchy), (torch.randn(3),))
    assert isinstance(info.value, lpcc.LpccError)
    assert info.value.__cause__ is not None  # torch's own message is kept


def test_buffer_mutation() -> None:
    class Counter(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("count", torch.zeros(1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.count.add_(1)
            return x + self.count

    with pytest.raises(FrontendError, match="updates state in forward"):
        import_module(Counter(), (torch.randn(3),))


def test_non_tensor_input() -> None:
    class Scaled(nn.Module):
        def forward(self, x: torch.Tensor, k: int) -> torch.Tensor:
            return x * k

    with pytest.raises(FrontendError, match="not a tensor"):
        import_module(Scaled(), (torch.randn(3), 2))


def test_not_a_module() -> None:
    with pytest.raises(FrontendError, match=r"nn\.Module"):
        import_module(lambda x: x, (torch.randn(3),))  # type: ignore[arg-type]


def test_bad_example_inputs() -> None:
    with pytest.raises(FrontendError, match="example_inputs"):
        import_module(nn.ReLU(), {"x": torch.randn(3)})
