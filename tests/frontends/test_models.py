"""The reference models, imported and interpreted, against torch eager (fp32).

Tiny configs (dims 16-32, 2 layers, vocab 64) on odd shapes; relative error
<= 1e-4 (max |got - want| / max |want|). TinyLlama is also exported with a
dynamic sequence length and run at lengths other than the example's.
"""

from __future__ import annotations

import pytest
import torch
from torch.export import Dim
from xdsl.dialects.builtin import StringAttr

from lpcc.ir.dialect import ops as lp
from lpcc.models import (
    MLP,
    CNNConfig,
    GPT2Config,
    LlamaConfig,
    MLPConfig,
    SmallCNN,
    TinyGPT2,
    TinyLlama,
)
from tests.frontends.helpers import check_module

GEN = torch.Generator().manual_seed(1)


def ids(batch: int, seq: int, vocab: int = 64) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, seq), generator=GEN)


@pytest.mark.parametrize("act", ["gelu", "gelu_tanh", "relu", "silu"])
def test_mlp(act: str) -> None:
    model = MLP(MLPConfig(in_dim=33, hidden_dim=17, out_dim=3, activation=act))
    imported = check_module(model, [torch.randn(3, 33, generator=GEN)])
    matmuls = [op for op in imported.module.walk() if isinstance(op, lp.MatmulOp)]
    assert len(matmuls) == 3
    assert all(isinstance(m.rhs.owner, lp.ConstantOp) for m in matmuls)


@pytest.mark.parametrize(
    "cfg",
    [
        LlamaConfig(attention="sdpa"),
        LlamaConfig(attention="explicit", kv_repeat="repeat_interleave"),
        LlamaConfig(
            dim=16, n_heads=2, n_kv_heads=1, hidden_dim=24, attention="explicit"
        ),
    ],
    ids=["sdpa", "explicit-repeat_interleave", "small-explicit-expand"],
)
def test_tiny_llama(cfg: LlamaConfig) -> None:
    check_module(TinyLlama(cfg, seed=3), [ids(1, 7)])


def test_tiny_llama_dynamic_sequence() -> None:
    """One export with a dynamic T, run at the example's and two other lengths."""
    model = TinyLlama(LlamaConfig(), seed=4)
    seq = Dim("seq", min=2, max=64)
    imported = check_module(
        model,
        [ids(2, 5)],
        dynamic_shapes={"ids": {1: seq}},
        runs=[[ids(2, 11)], [ids(2, 3)]],
    )
    (sym,) = imported.dim_ranges
    assert imported.dim_ranges[sym] == (2, 64)
    assert imported.input_names == ["ids"]


def test_tiny_llama_dynamic_batch_and_sequence() -> None:
    model = TinyLlama(LlamaConfig(attention="explicit"), seed=5)
    check_module(
        model,
        [ids(2, 5)],
        dynamic_shapes={"ids": {0: Dim("batch", max=8), 1: Dim("seq", max=64)}},
        runs=[[ids(3, 9)]],
    )


def test_tiny_gpt2() -> None:
    imported = check_module(TinyGPT2(GPT2Config(), seed=6), [ids(2, 9)])
    # the tied LM head reads the token embedding's constant directly
    consts = [op for op in imported.module.walk() if isinstance(op, lp.ConstantOp)]
    names = [
        op.attributes["lp.name"].data for op in consts if "lp.name" in op.attributes
    ]
    tied_names = {"wte.weight", "lm_head.weight"}
    assert len(tied_names & set(names)) == 1  # torch.export names it lm_head
    (tied,) = [
        op
        for op in consts
        if isinstance(n := op.attributes.get("lp.name"), StringAttr)
        and n.data in tied_names
    ]
    users = {type(u.operation) for u in tied.result.uses}
    assert users == {lp.TakeOp, lp.MatmulOp}


def test_tiny_gpt2_untied_dynamic() -> None:
    model = TinyGPT2(GPT2Config(tie_embeddings=False, n_heads=2), seed=7)
    check_module(
        model,
        [ids(1, 4)],
        # < max_seq_len: slicing the causal buffer at exactly its size makes
        # torch specialize that length
        dynamic_shapes={"ids": {1: Dim("seq", max=63)}},
        runs=[[ids(1, 13)]],
    )


@pytest.mark.parametrize(
    ("cfg", "shape"),
    [
        (CNNConfig(), (2, 3, 13, 11)),
        (CNNConfig(pool="avg", groups=1), (1, 3, 9, 9)),
        (CNNConfig(channels=(4, 8), in_channels=1, n_classes=3), (3, 1, 7, 5)),
    ],
    ids=["adaptive", "avg", "gray"],
)
def test_small_cnn(cfg: CNNConfig, shape: tuple[int, ...]) -> None:
    check_module(SmallCNN(cfg, seed=8), [torch.randn(shape, generator=GEN)])


def test_seed_reproducible() -> None:
    a, b = TinyLlama(seed=9), TinyLlama(seed=9)
    c = TinyLlama(seed=10)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["layers.0.attn.wq.weight"], sc["layers.0.attn.wq.weight"])


def test_state_dict_names() -> None:
    keys = set(TinyLlama().state_dict())
    assert {
        "layers.0.attn.wq.weight",
        "layers.1.mlp.w1.weight",
        "lm_head.weight",
    } <= keys
    assert "inv_freq" not in keys


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="n_kv_heads"):
        LlamaConfig(n_heads=4, n_kv_heads=3)
    with pytest.raises(ValueError, match="attention"):
        LlamaConfig(attention="flash")
    with pytest.raises(ValueError, match="activation"):
        MLP(MLPConfig(activation="tanh"))
