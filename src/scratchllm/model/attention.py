"""Attention, one small class per variant, from the simplest to the one Llama uses.

1. `SimplifiedSelfAttention`: no weights; scores are dot products of the inputs themselves.
2. `SelfAttention`: trainable query/key/value projections, scaled dot products.
3. `CausalAttention`: (2) with future positions masked and dropout on the attention weights.
4. `MultiHeadAttention`: heads split from one fused projection, merged by an output projection.
5. `BidirectionalAttention`: (4) without the causal mask, for encoders (padding masks only).
6. `GroupedQueryAttention`: fewer key/value heads than query heads (1 = multi-query).

Every variant has the same call signature

    forward(x [B, T, C], *, attention_mask=None, kv_cache=None, rope=None) -> [B, T, C_out]

- attention_mask: [B, T_keys], 1/True for real tokens, 0/False for padding. With a KV cache,
  T_keys = cached + new positions. Also accepted (see `attend`): a boolean [B, 1, T, T_keys]
  mask per query/key pair, or the additive float bias a model builds once with `attention_bias`.
- kv_cache: a `KVCache`; the layer writes its new keys/values at slot `layer_idx`.
- rope: (cos, sin) [T, head_dim] for the new positions, when rotary positions are used.

All variants go through `attend`, which runs either the explicit math (the reference) or
`torch.nn.functional.scaled_dot_product_attention` (fused kernels); tests prove them equal.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scratchllm.model.config import ModelConfig
from scratchllm.model.embeddings import apply_rotary_emb
from scratchllm.model.kv_cache import KVCache

Rope = tuple[Tensor, Tensor]


def build_mask(
    t_q: int, t_k: int, *, causal: bool, padding_mask: Tensor | None, device: torch.device
) -> Tensor | None:
    """Boolean mask [B or 1, 1, T_q, T_k], True where a query may look at a key; None = all.

    The T_q queries are the last T_q of the T_k positions (the earlier ones come from a cache).
    ``padding_mask`` is [B, T_k] (1 = real key) or already per pair, [B, 1, T_q, T_k] (True =
    may attend; e.g. documents packed into one row that must not see each other).
    """
    mask = None
    if causal and t_q > 1:
        q_pos = torch.arange(t_k - t_q, t_k, device=device)[:, None]  # [T_q, 1]
        k_pos = torch.arange(t_k, device=device)[None, :]  # [1, T_k]
        mask = (k_pos <= q_pos)[None, None]  # [1, 1, T_q, T_k]
    if padding_mask is not None:
        assert padding_mask.shape[-1] == t_k, (padding_mask.shape, t_k)
        keep = padding_mask.bool()
        if keep.dim() == 2:
            keep = keep[:, None, None, :]  # [B, 1, 1, T_k]
        mask = keep if mask is None else mask & keep
    return mask


def attention_bias(
    t_q: int,
    t_k: int,
    *,
    causal: bool,
    padding_mask: Tensor | None,
    dtype: torch.dtype,
    device: torch.device,
) -> Tensor | None:
    """`build_mask` as an additive bias [B|1, 1, T_q, T_k]: 0 where a query may look at a key,
    the most negative finite value elsewhere. A model builds it once per forward and passes it to
    every layer as ``padding_mask`` (a floating mask is used as is)."""
    mask = build_mask(t_q, t_k, causal=causal, padding_mask=padding_mask, device=device)
    if mask is None:
        return None
    bias = torch.zeros(mask.shape, dtype=dtype, device=device)
    return bias.masked_fill(~mask, torch.finfo(dtype).min)


def attend(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    causal: bool,
    padding_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    scale: float | None = None,
    impl: str = "sdpa",
) -> Tensor:
    """softmax(q k^T * scale + mask) v: q [B, H, T_q, D], k/v [B, H, T_k, D] -> [B, H, T_q, D].

    Masked scores get the most negative finite value rather than -inf, so a row with every key
    masked (a padding query) gives a uniform average instead of NaN, in both paths alike.
    ``padding_mask`` is [B, T_k] (1 = real key), a boolean [B|1, 1, T_q, T_k] (True = may attend),
    or a floating [B|1, 1, T_q, T_k] additive bias from `attention_bias`, used as is.
    """
    t_q, t_k = q.shape[2], k.shape[2]
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    bias = None  # [B|1, 1, T_q, T_k] additive, when the caller built it (causality included)
    if padding_mask is not None and padding_mask.dim() == 4 and padding_mask.is_floating_point():
        bias = padding_mask
        if bias.dtype != q.dtype:  # clamped into a narrower autocast dtype: float16 stays finite
            bias = bias.clamp(min=torch.finfo(q.dtype).min).to(q.dtype)
    if impl == "math":
        scores = (q @ k.transpose(-2, -1)) * scale  # [B, H, T_q, T_k]
        if bias is not None:
            # float16: a score below -16 plus the most negative value overflows to -inf
            scores = (scores + bias).clamp(min=torch.finfo(scores.dtype).min)
        else:
            mask = build_mask(t_q, t_k, causal=causal, padding_mask=padding_mask, device=q.device)
            if mask is not None:
                scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=-1)
        if dropout_p > 0.0:
            weights = F.dropout(weights, p=dropout_p)
        return weights @ v  # [B, H, T_q, D]
    if padding_mask is None and (t_q == t_k or not causal):
        # No explicit mask: the fused kernels (flash / memory-efficient) can run.
        # A branch, not `is_causal=causal and t_q > 1`: when the compiler makes T symbolic
        # (a second length seen), that expression is a SymBool, which SDPA refuses.
        is_causal = False
        if causal and t_q > 1:
            is_causal = True
        return F.scaled_dot_product_attention(
            q, k, v, dropout_p=dropout_p, is_causal=is_causal, scale=scale
        )
    if bias is None:
        bias = attention_bias(
            t_q, t_k, causal=causal, padding_mask=padding_mask, dtype=q.dtype, device=q.device
        )
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p, scale=scale)


def repeat_kv(x: Tensor, n_rep: int) -> Tensor:
    """[B, H_kv, T, D] -> [B, H_kv * n_rep, T, D]; query head h reads key/value head h // n_rep."""
    if n_rep == 1:
        return x
    b, h_kv, t, d = x.shape
    return x[:, :, None].expand(b, h_kv, n_rep, t, d).reshape(b, h_kv * n_rep, t, d)


def split_heads(x: Tensor, n_head: int) -> Tensor:
    """[B, T, H*D] -> [B, H, T, D]"""
    b, t, _ = x.shape
    return x.view(b, t, n_head, -1).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """[B, H, T, D] -> [B, T, H*D]"""
    b, _, t, _ = x.shape
    return x.transpose(1, 2).reshape(b, t, -1)


class _Attention(nn.Module):
    """What every variant shares: position rotation, cache update, head repeat and `attend`."""

    causal: bool = False

    def __init__(self, *, dropout: float = 0.0, impl: str = "sdpa", layer_idx: int = 0) -> None:
        super().__init__()
        assert impl in ("sdpa", "math"), impl
        self.dropout = dropout
        self.impl = impl
        self.layer_idx = layer_idx  # slot in the KV cache

    def _attend(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        *,
        attention_mask: Tensor | None,
        kv_cache: KVCache | None,
        rope: Rope | None,
        scale: float | None = None,
    ) -> Tensor:
        # q: [B, H, T, D]; k, v: [B, H_kv, T, D]
        if rope is not None:
            q, k = apply_rotary_emb(q, *rope), apply_rotary_emb(k, *rope)
        if kv_cache is not None:
            k, v = kv_cache.update(self.layer_idx, k, v)  # [B, H_kv, T_past + T, D]
        n_rep = q.shape[1] // k.shape[1]
        k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)  # [B, H, T_k, D]
        return attend(
            q,
            k,
            v,
            causal=self.causal,
            padding_mask=attention_mask,
            dropout_p=self.dropout if self.training else 0.0,
            scale=scale,
            impl=self.impl,
        )  # [B, H, T, D]


class SimplifiedSelfAttention(_Attention):
    """Context vector i = sum_j softmax_j(x_i . x_j) x_j: attention with nothing to train."""

    def forward(
        self,
        x: Tensor,
        *,
        attention_mask: Tensor | None = None,
        kv_cache: KVCache | None = None,
        rope: Rope | None = None,
    ) -> Tensor:
        h = x[:, None]  # [B, 1, T, C]: one head whose queries, keys and values are the inputs
        # Unscaled dot products, as in the simplest formulation.
        out = self._attend(
            h, h, h, attention_mask=attention_mask, kv_cache=kv_cache, rope=rope, scale=1.0
        )
        return out[:, 0]  # [B, T, C]


class SelfAttention(_Attention):
    """One head with trainable query, key and value projections; scores scaled by 1/sqrt(d)."""

    def __init__(
        self,
        d_in: int,
        d_out: int,
        *,
        qkv_bias: bool = False,
        dropout: float = 0.0,
        impl: str = "sdpa",
        layer_idx: int = 0,
    ) -> None:
        super().__init__(dropout=dropout, impl=impl, layer_idx=layer_idx)
        self.q_proj = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.k_proj = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.v_proj = nn.Linear(d_in, d_out, bias=qkv_bias)

    def forward(
        self,
        x: Tensor,
        *,
        attention_mask: Tensor | None = None,
        kv_cache: KVCache | None = None,
        rope: Rope | None = None,
    ) -> Tensor:
        # x: [B, T, d_in]; each projection -> [B, 1, T, d_out] (one head)
        q, k, v = (proj(x)[:, None] for proj in (self.q_proj, self.k_proj, self.v_proj))
        out = self._attend(q, k, v, attention_mask=attention_mask, kv_cache=kv_cache, rope=rope)
        return out[:, 0]  # [B, T, d_out]


class CausalAttention(SelfAttention):
    """`SelfAttention` where position i sees only positions <= i, with attention dropout."""

    causal = True


class MultiHeadAttention(_Attention):
    """n_head causal heads from one fused q/k/v projection, merged by an output projection."""

    causal = True

    def __init__(
        self,
        n_embd: int,
        n_head: int,
        *,
        dropout: float = 0.0,
        qkv_bias: bool = True,
        bias: bool = True,
        impl: str = "sdpa",
        layer_idx: int = 0,
    ) -> None:
        super().__init__(dropout=dropout, impl=impl, layer_idx=layer_idx)
        if n_embd % n_head != 0:
            raise ValueError(f"n_head={n_head} must divide n_embd={n_embd}")
        self.n_head = n_head
        self.qkv = nn.Linear(n_embd, 3 * n_embd, bias=qkv_bias)
        self.out_proj = nn.Linear(n_embd, n_embd, bias=bias)

    def forward(
        self,
        x: Tensor,
        *,
        attention_mask: Tensor | None = None,
        kv_cache: KVCache | None = None,
        rope: Rope | None = None,
    ) -> Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # 3 x [B, T, C]
        q, k, v = (split_heads(t, self.n_head) for t in (q, k, v))  # [B, H, T, D]
        out = self._attend(q, k, v, attention_mask=attention_mask, kv_cache=kv_cache, rope=rope)
        return self.out_proj(merge_heads(out))  # [B, T, C]


class BidirectionalAttention(MultiHeadAttention):
    """`MultiHeadAttention` where every token sees every (non-padding) token: for encoders."""

    causal = False


class GroupedQueryAttention(_Attention):
    """n_head query heads share n_kv_head key/value heads (Ainslie et al. 2023).

    n_kv_head == n_head is plain multi-head attention; n_kv_head == 1 is multi-query attention.
    A KV cache stores only the n_kv_head heads, which is the point: n_head/n_kv_head x smaller.
    """

    def __init__(
        self,
        n_embd: int,
        n_head: int,
        n_kv_head: int,
        *,
        dropout: float = 0.0,
        qkv_bias: bool = False,
        bias: bool = False,
        causal: bool = True,
        impl: str = "sdpa",
        layer_idx: int = 0,
    ) -> None:
        super().__init__(dropout=dropout, impl=impl, layer_idx=layer_idx)
        if n_embd % n_head != 0:
            raise ValueError(f"n_head={n_head} must divide n_embd={n_embd}")
        if n_head % n_kv_head != 0:
            raise ValueError(f"n_kv_head={n_kv_head} must divide n_head={n_head}")
        self.n_head, self.n_kv_head = n_head, n_kv_head
        self.causal = causal
        head_dim = n_embd // n_head
        self.q_proj = nn.Linear(n_embd, n_head * head_dim, bias=qkv_bias)
        self.k_proj = nn.Linear(n_embd, n_kv_head * head_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(n_embd, n_kv_head * head_dim, bias=qkv_bias)
        self.out_proj = nn.Linear(n_head * head_dim, n_embd, bias=bias)

    def forward(
        self,
        x: Tensor,
        *,
        attention_mask: Tensor | None = None,
        kv_cache: KVCache | None = None,
        rope: Rope | None = None,
    ) -> Tensor:
        q = split_heads(self.q_proj(x), self.n_head)  # [B, H, T, D]
        k = split_heads(self.k_proj(x), self.n_kv_head)  # [B, H_kv, T, D]
        v = split_heads(self.v_proj(x), self.n_kv_head)  # [B, H_kv, T, D]
        out = self._attend(q, k, v, attention_mask=attention_mask, kv_cache=kv_cache, rope=rope)
        return self.out_proj(merge_heads(out))  # [B, T, C]


def make_attention(cfg: ModelConfig, layer_idx: int, *, causal: bool = True) -> _Attention:
    """The attention a model built from `cfg` uses: fused MHA, or GQA when n_kv_head < n_head."""
    common = dict(dropout=cfg.dropout, impl=cfg.attn_impl, layer_idx=layer_idx)
    if cfg.kv_heads != cfg.n_head:
        return GroupedQueryAttention(
            cfg.n_embd,
            cfg.n_head,
            cfg.kv_heads,
            qkv_bias=cfg.qkv_bias,
            bias=cfg.bias,
            causal=causal,
            **common,
        )
    cls = MultiHeadAttention if causal else BidirectionalAttention
    return cls(cfg.n_embd, cfg.n_head, qkv_bias=cfg.qkv_bias, bias=cfg.bias, **common)
