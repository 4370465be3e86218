"""Small reference torch models: the workloads of the tests, `lpcc demo` and
the benchmarks.

Each model has a config dataclass whose defaults are tiny (fast tests) and a
`seed` argument: weights are drawn from a private generator, so the same
seed gives the same weights whatever the global torch RNG state is. The
models are written the way real checkpoints are (Llama, GPT-2, a small
ConvNet), so importing them exercises the ATen ops real models produce:
rotary embeddings, grouped KV heads, fused QKV, tied embeddings, batch norm.

torch is imported at module top: only torch users import this module.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "MLP",
    "CNNConfig",
    "GPT2Config",
    "LlamaConfig",
    "MLPConfig",
    "SmallCNN",
    "TinyGPT2",
    "TinyLlama",
]


def _init(module: nn.Module, seed: int) -> None:
    """Re-draw every parameter (and batch-norm statistics) from `seed`.

    Linear/conv weights are N(0, 1/fan_in) so activations keep their scale
    through the layers; norms start near 1 and biases near 0 but not exactly,
    so a wrong bias or norm weight shows in the outputs.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif p.ndim == 1:  # norm weights
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            elif "emb" in name or "wte" in name or "wpe" in name:
                p.copy_(torch.randn(p.shape, generator=gen))
            else:
                fan_in = math.prod(p.shape[1:])
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(fan_in))
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=gen))
                m.running_var.copy_(1 + 0.5 * torch.rand(m.num_features, generator=gen))


# -- MLP ---------------------------------------------------------------------------


@dataclass(frozen=True)
class MLPConfig:
    in_dim: int = 16
    hidden_dim: int = 32
    out_dim: int = 8
    n_layers: int = 2  # hidden layers
    activation: str = "gelu"  # gelu, gelu_tanh, relu, silu


_ACTS = {
    "gelu": lambda x: F.gelu(x),
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
}


class MLP(nn.Module):
    """Linear -> act -> ... -> Linear: the quantizer's smallest target."""

    def __init__(self, cfg: MLPConfig | None = None, seed: int = 0) -> None:
        super().__init__()
        self.cfg = cfg = cfg or MLPConfig()
        if cfg.activation not in _ACTS:
            raise ValueError(
                f"MLPConfig.activation {cfg.activation!r}: choose one of "
                f"{', '.join(_ACTS)}"
            )
        dims = [cfg.in_dim] + [cfg.hidden_dim] * cfg.n_layers + [cfg.out_dim]
        self.layers = nn.ModuleList(
            nn.Linear(a, b) for a, b in itertools.pairwise(dims)
        )
        _init(self, seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = _ACTS[self.cfg.activation]
        for layer in self.layers[:-1]:
            x = act(layer(x))
        return self.layers[-1](x)


# -- Llama -------------------------------------------------------------------------


@dataclass(frozen=True)
class LlamaConfig:
    vocab_size: int = 64
    dim: int = 32
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int = 2
    hidden_dim: int = 48
    max_seq_len: int = 64
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    # "sdpa": F.scaled_dot_product_attention(is_causal=True); "explicit":
    # scores, a causal mask filled with -inf, softmax, @ v.
    attention: str = "sdpa"
    # "expand": KV heads repeated by expand + reshape; "repeat_interleave".
    kv_repeat: str = "expand"

    def __post_init__(self) -> None:
        if self.dim % self.n_heads or self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"LlamaConfig: n_heads {self.n_heads} must divide dim {self.dim} "
                f"and be a multiple of n_kv_heads {self.n_kv_heads}"
            )
        if (self.dim // self.n_heads) % 2:
            raise ValueError("LlamaConfig: the head size dim // n_heads must be even")
        if self.attention not in ("sdpa", "explicit"):
            raise ValueError(
                f"LlamaConfig.attention {self.attention!r}: 'sdpa' or 'explicit'"
            )
        if self.kv_repeat not in ("expand", "repeat_interleave"):
            raise ValueError(
                f"LlamaConfig.kv_repeat {self.kv_repeat!r}: 'expand' or "
                "'repeat_interleave'"
            )


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class LlamaAttention(nn.Module):
    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.head_dim = hd = cfg.dim // cfg.n_heads
        self.wq = nn.Linear(cfg.dim, cfg.n_heads * hd, bias=False)
        self.wk = nn.Linear(cfg.dim, cfg.n_kv_heads * hd, bias=False)
        self.wv = nn.Linear(cfg.dim, cfg.n_kv_heads * hd, bias=False)
        self.wo = nn.Linear(cfg.n_heads * hd, cfg.dim, bias=False)

    def _repeat_kv(self, x: torch.Tensor) -> torch.Tensor:
        rep = self.cfg.n_heads // self.cfg.n_kv_heads
        if rep == 1:
            return x
        if self.cfg.kv_repeat == "repeat_interleave":
            return x.repeat_interleave(rep, dim=1)
        b, kv, t, hd = x.shape
        return x[:, :, None].expand(b, kv, rep, t, hd).reshape(b, kv * rep, t, hd)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> torch.Tensor:
        b, t, _ = x.shape
        cfg, hd = self.cfg, self.head_dim
        q = self.wq(x).view(b, t, cfg.n_heads, hd).transpose(1, 2)
        k = self.wk(x).view(b, t, cfg.n_kv_heads, hd).transpose(1, 2)
        v = self.wv(x).view(b, t, cfg.n_kv_heads, hd).transpose(1, 2)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        k, v = self._repeat_kv(k), self._repeat_kv(v)
        if cfg.attention == "sdpa":
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(hd)
            mask = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
            scores = scores.masked_fill(mask, float("-inf"))
            out = torch.softmax(scores, dim=-1) @ v
        return self.wo(out.transpose(1, 2).reshape(b, t, cfg.n_heads * hd))


class SwiGLU(nn.Module):
    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.w1 = nn.Linear(cfg.dim, cfg.hidden_dim, bias=False)
        self.w3 = nn.Linear(cfg.dim, cfg.hidden_dim, bias=False)
        self.w2 = nn.Linear(cfg.hidden_dim, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class LlamaBlock(nn.Module):
    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.attn_norm = nn.RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.attn = LlamaAttention(cfg)
        self.mlp_norm = nn.RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.mlp = SwiGLU(cfg)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin)
        return x + self.mlp(self.mlp_norm(x))


class TinyLlama(nn.Module):
    """A Llama-style decoder: ids [B, T] (int64) -> logits [B, T, vocab].

    Rotary tables are computed in forward from positions = arange(T) and a
    non-persistent `inv_freq` buffer, so a dynamic T exports as one graph.
    """

    def __init__(self, cfg: LlamaConfig | None = None, seed: int = 0) -> None:
        super().__init__()
        self.cfg = cfg = cfg or LlamaConfig()
        hd = cfg.dim // cfg.n_heads
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(LlamaBlock(cfg) for _ in range(cfg.n_layers))
        self.norm = nn.RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        inv_freq = 1.0 / cfg.rope_theta ** (torch.arange(0, hd, 2).float() / hd)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        _init(self, seed)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        t = ids.shape[1]
        pos = torch.arange(t, device=ids.device, dtype=torch.float32)
        freqs = pos[:, None] * self.inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos(), emb.sin()
        x = self.embed(ids)
        if x.dtype != cos.dtype:  # a bf16 copy of the model (benchmarks' baseline)
            cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.lm_head(self.norm(x))


# -- GPT-2 -------------------------------------------------------------------------


@dataclass(frozen=True)
class GPT2Config:
    vocab_size: int = 64
    dim: int = 32
    n_layers: int = 2
    n_heads: int = 4
    max_seq_len: int = 64
    norm_eps: float = 1e-5
    tie_embeddings: bool = True

    def __post_init__(self) -> None:
        if self.dim % self.n_heads:
            raise ValueError(
                f"GPT2Config: n_heads {self.n_heads} must divide dim {self.dim}"
            )


class GPT2Attention(nn.Module):
    def __init__(self, cfg: GPT2Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.c_attn = nn.Linear(cfg.dim, 3 * cfg.dim)
        self.c_proj = nn.Linear(cfg.dim, cfg.dim)
        n = cfg.max_seq_len
        causal = torch.tril(torch.ones(n, n)).view(1, 1, n, n)
        self.register_buffer("bias", causal, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = self.cfg.n_heads
        q, k, v = self.c_attn(x).split(d, dim=2)
        q = q.view(b, t, h, d // h).transpose(1, 2)
        k = k.view(b, t, h, d // h).transpose(1, 2)
        v = v.view(b, t, h, d // h).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(d // h))
        att = att.masked_fill(self.bias[:, :, :t, :t] == 0, float("-inf"))
        att = F.softmax(att, dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(b, t, d)
        return self.c_proj(y)


class GPT2Block(nn.Module):
    def __init__(self, cfg: GPT2Config) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.attn = GPT2Attention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.c_fc = nn.Linear(cfg.dim, 4 * cfg.dim)
        self.c_proj = nn.Linear(4 * cfg.dim, cfg.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        h = F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh")
        return x + self.c_proj(h)


class TinyGPT2(nn.Module):
    """A GPT-2-style decoder: ids [B, T] (int64) -> logits [B, T, vocab].

    Learned positions, pre-LayerNorm blocks, fused QKV, GELU-tanh, and (by
    default) an LM head tied to the token embedding, as in GPT-2. The causal
    mask is a buffer sliced to T, as in GPT-2: export a dynamic T with
    max < max_seq_len, since torch specializes a slice at the buffer's size.
    """

    def __init__(self, cfg: GPT2Config | None = None, seed: int = 0) -> None:
        super().__init__()
        self.cfg = cfg = cfg or GPT2Config()
        self.wte = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.wpe = nn.Embedding(cfg.max_seq_len, cfg.dim)
        self.blocks = nn.ModuleList(GPT2Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        _init(self, seed)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.wte.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        t = ids.shape[1]
        pos = torch.arange(t, device=ids.device)
        x = self.wte(ids) + self.wpe(pos)[None]
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))


# -- CNN ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CNNConfig:
    in_channels: int = 3
    channels: tuple[int, ...] = (8, 16)
    n_classes: int = 10
    groups: int = 2  # of the second convolution
    pool: str = "adaptive"  # "adaptive" (adaptive_avg_pool2d(1)) or "avg"


class SmallCNN(nn.Module):
    """conv-bn-relu-maxpool, grouped conv-bn-relu, global pool, flatten, linear.

    Images [N, C, H, W] float32 -> logits [N, n_classes]; any H, W >= 4.
    """

    def __init__(self, cfg: CNNConfig | None = None, seed: int = 0) -> None:
        super().__init__()
        self.cfg = cfg = cfg or CNNConfig()
        c1, c2 = cfg.channels
        if cfg.pool not in ("adaptive", "avg"):
            raise ValueError(f"CNNConfig.pool {cfg.pool!r}: 'adaptive' or 'avg'")
        self.conv1 = nn.Conv2d(cfg.in_channels, c1, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(c1)
        self.conv2 = nn.Conv2d(
            c1, c2, 3, stride=2, padding=2, dilation=2, groups=cfg.groups
        )
        self.bn2 = nn.BatchNorm2d(c2)
        self.fc = nn.Linear(c2, cfg.n_classes)
        _init(self, seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2, ceil_mode=True)
        x = F.relu(self.bn2(self.conv2(x)))
        if self.cfg.pool == "adaptive":
            x = F.adaptive_avg_pool2d(x, 1)
        else:
            x = F.avg_pool2d(x, x.shape[-2:])
        return self.fc(torch.flatten(x, 1))
