"""Feed-forward networks and the transformer block (pre-norm or post-norm)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from scratchllm.model.attention import Rope, make_attention
from scratchllm.model.config import ModelConfig
from scratchllm.model.kv_cache import KVCache
from scratchllm.model.norms import make_norm


class GELUMLP(nn.Module):
    """Linear (C -> hidden), GELU, linear (hidden -> C): GPT-2 and BERT."""

    def __init__(self, n_embd: int, hidden: int, *, bias: bool = True, approximate: str = "tanh"):
        super().__init__()
        self.up_proj = nn.Linear(n_embd, hidden, bias=bias)
        self.down_proj = nn.Linear(hidden, n_embd, bias=bias)
        self.approximate = approximate

    def forward(self, x: Tensor) -> Tensor:
        # x: [B, T, C] -> [B, T, hidden] -> [B, T, C]
        return self.down_proj(F.gelu(self.up_proj(x), approximate=self.approximate))


class SwiGLUMLP(nn.Module):
    """down(silu(gate(x)) * up(x)) (Shazeer 2020): Llama's feed-forward network."""

    def __init__(self, n_embd: int, hidden: int, *, bias: bool = False):
        super().__init__()
        self.gate_proj = nn.Linear(n_embd, hidden, bias=bias)
        self.up_proj = nn.Linear(n_embd, hidden, bias=bias)
        self.down_proj = nn.Linear(hidden, n_embd, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        # x: [B, T, C] -> two [B, T, hidden] branches, gated -> [B, T, C]
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def make_mlp(cfg: ModelConfig) -> nn.Module:
    if cfg.mlp == "swiglu":
        return SwiGLUMLP(cfg.n_embd, cfg.hidden_dim, bias=cfg.bias)
    return GELUMLP(cfg.n_embd, cfg.hidden_dim, bias=cfg.bias, approximate=cfg.gelu_approximate)


class TransformerBlock(nn.Module):
    """Attention and MLP, each with a residual connection and a norm.

    pre-norm  (GPT-2, Llama): x = x + attn(norm1(x));  x = x + mlp(norm2(x))
    post-norm (BERT, 2017):   x = norm1(x + attn(x));  x = norm2(x + mlp(x))
    The attention and MLP modules may be passed in ready-made (e.g. wrapped for LoRA).
    """

    def __init__(
        self,
        cfg: ModelConfig,
        layer_idx: int,
        *,
        causal: bool = True,
        attn: nn.Module | None = None,
        mlp: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.pre_norm = cfg.norm_position == "pre"
        self.attn = make_attention(cfg, layer_idx, causal=causal) if attn is None else attn
        self.mlp = make_mlp(cfg) if mlp is None else mlp
        self.norm1 = make_norm(cfg)
        self.norm2 = make_norm(cfg)
        # on each residual branch; at p = 0 an Identity, since a p = 0 Dropout still costs a copy
        # of its input in a compiled training graph
        self.drop = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()

    def forward(
        self,
        x: Tensor,
        *,
        attention_mask: Tensor | None = None,
        kv_cache: KVCache | None = None,
        rope: Rope | None = None,
    ) -> Tensor:
        # x: [B, T, C] -> [B, T, C]
        kw = dict(attention_mask=attention_mask, kv_cache=kv_cache, rope=rope)
        if self.pre_norm:
            x = x + self.drop(self.attn(self.norm1(x), **kw))
            return x + self.drop(self.mlp(self.norm2(x)))
        x = self.norm1(x + self.drop(self.attn(x, **kw)))
        return self.norm2(x + self.drop(self.mlp(x)))


def run_block(block: nn.Module, x: Tensor, *, recompute: bool = False, **kw) -> Tensor:
    """``block(x, **kw)``. With ``recompute`` (activation checkpointing), while gradients are on:
    keep only the block's input for backward and run the block again there, so its activations
    are never stored (less memory for about one more forward pass of compute). Dropout draws the
    same masks both times. Decoding with a KV cache runs the block plainly (it would write twice).
    """
    if recompute and torch.is_grad_enabled() and kw.get("kv_cache") is None:
        return checkpoint(block, x, use_reentrant=False, **kw)
    return block(x, **kw)
