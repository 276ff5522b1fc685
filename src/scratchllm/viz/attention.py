"""Attention weights of any layer and head, recomputed from the layer's own projections.

The models never return their attention weights (the fused kernel does not form them). A forward
pre-hook records what the attention module of the chosen block receives (its input and the
rotary tables); the weights softmax(q k^T / sqrt(d) + mask) are then recomputed here with that
module's own query/key projections, so the model code needs no change.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from scratchllm.model.attention import (
    GroupedQueryAttention,
    MultiHeadAttention,
    SelfAttention,
    SimplifiedSelfAttention,
    mask_scores,
    repeat_kv,
    split_heads,
)
from scratchllm.model.embeddings import apply_rotary_emb
from scratchllm.viz._figure import DPI, pyplot, save, token_label


def _queries_keys(module: nn.Module, x: Tensor) -> tuple[Tensor, Tensor, float]:
    """q [B, H, T, D], k [B, H_kv, T, D] and the score scale the module uses."""
    if isinstance(module, SimplifiedSelfAttention):
        h = x[:, None]  # [B, 1, T, C]: the inputs are the queries and the keys; unscaled
        return h, h, 1.0
    if isinstance(module, GroupedQueryAttention):
        q = split_heads(module.q_proj(x), module.n_head)
        k = split_heads(module.k_proj(x), module.n_kv_head)
    elif isinstance(module, MultiHeadAttention):
        q, k, _ = module.qkv(x).chunk(3, dim=-1)  # 3 x [B, T, C]
        q, k = split_heads(q, module.n_head), split_heads(k, module.n_head)
    elif isinstance(module, SelfAttention):
        q, k = module.q_proj(x)[:, None], module.k_proj(x)[:, None]  # [B, 1, T, d_out]
    else:
        raise TypeError(f"cannot recompute attention weights of {type(module).__name__}")
    return q, k, 1.0 / math.sqrt(q.shape[-1])


@torch.no_grad()
def attention_weights_of(
    module: nn.Module,
    x: Tensor,
    *,
    attention_mask: Tensor | None = None,
    rope: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """Weights [B, H, T, T] that attention ``module`` gives its input ``x`` [B, T, C].

    Row i of a head holds how much position i takes from each position (rows sum to 1).
    """
    q, k, scale = _queries_keys(module, x)
    if rope is not None:
        q, k = apply_rotary_emb(q, *rope), apply_rotary_emb(k, *rope)
    k = repeat_kv(k, q.shape[1] // k.shape[1])  # [B, H, T, D]
    scores = (q @ k.transpose(-2, -1)) * scale  # [B, H, T, T]
    scores = mask_scores(scores, causal=module.causal, padding_mask=attention_mask)  # as attend
    return torch.softmax(scores.float(), dim=-1)


@torch.no_grad()
def attention_weights(model: nn.Module, idx: Tensor, layer: int) -> Tensor:
    """Weights [B, H, T, T] of block ``layer`` of a GPT or encoder model for ids ``idx`` [B, T].

    Negative ``layer`` counts from the last block. The model runs once, in its current mode.
    """
    blocks = model.blocks
    if not -len(blocks) <= layer < len(blocks):
        raise ValueError(f"layer {layer} out of range: the model has {len(blocks)} blocks")
    attn = blocks[layer].attn
    seen: dict[str, Any] = {}

    def grab(_module: nn.Module, args: tuple, kwargs: dict) -> None:
        seen["x"], seen["kwargs"] = args[0], kwargs

    handle = attn.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        model(idx)
    finally:
        handle.remove()
    kwargs = seen["kwargs"]
    return attention_weights_of(
        attn, seen["x"], attention_mask=kwargs.get("attention_mask"), rope=kwargs.get("rope")
    )


def plot_attention_matrix(
    weights: Tensor,
    labels: list[str],
    out: str | Path,
    *,
    title: str = "Attention weights",
) -> Path:
    """Heatmap of one head's weights [T, T] (rows: queries, columns: keys) with token labels."""
    if weights.dim() != 2 or weights.shape[0] != weights.shape[1]:
        raise ValueError(f"weights must be a square [T, T] matrix, got {tuple(weights.shape)}")
    t = weights.shape[0]
    if len(labels) != t:
        raise ValueError(f"{len(labels)} labels for {t} positions")
    plt = pyplot()
    side = min(max(4.0, 0.35 * t + 2.0), 14.0)
    fig, ax = plt.subplots(figsize=(side + 1.0, side), dpi=DPI)
    image = ax.imshow(weights.detach().cpu().float().numpy(), cmap="viridis", vmin=0.0)
    ax.set_xticks(range(t), labels, rotation=90, fontsize=8)
    ax.set_yticks(range(t), labels, fontsize=8)
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query (attending)")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return save(fig, out)


def plot_attention(
    model: nn.Module,
    tokenizer: Any,
    text: str,
    out: str | Path,
    *,
    layer: int = 0,
    head: int = 0,
) -> Path:
    """Heatmap of head ``head`` in block ``layer`` for the tokens of ``text``; returns the path."""
    ids = tokenizer.encode(text, allowed_special="all")
    if not ids:
        raise ValueError("the text has no tokens")
    context = model.cfg.context_length
    if len(ids) > context:
        raise ValueError(f"the text has {len(ids)} tokens, more than the context of {context}")
    device = next(model.parameters()).device
    weights = attention_weights(model, torch.tensor([ids], device=device), layer)  # [1, H, T, T]
    n_head = weights.shape[1]
    if not -n_head <= head < n_head:
        raise ValueError(f"head {head} out of range: the layer has {n_head} heads")
    labels = [token_label(tokenizer, i) for i in ids]
    layer_no, head_no = layer % len(model.blocks), head % n_head
    title = f"Attention, layer {layer_no}, head {head_no}"
    return plot_attention_matrix(weights[0, head], labels, out, title=title)
