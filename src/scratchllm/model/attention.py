"""Attention, one small class per variant, from the simplest to the one Llama uses.

1. `SimplifiedSelfAttention`: no weights; scores are dot products of the inputs themselves.
2. `SelfAttention`: trainable query/key/value projections, scaled dot products.
3. `CausalAttention`: (2) with future positions masked and dropout on the attention weights.
4. `MultiHeadAttention`: heads split from one fused projection, merged by an output projection.
5. `BidirectionalAttention`: (4) without the causal mask, for encoders (padding masks only).
6. `GroupedQueryAttention`: fewer key/value heads than query heads (1 = multi-query).

Every variant has the same call signature

    forward(x [B, T, C], *, attention_mask=None, kv_cache=None, rope=None) -> [B, T, C_out]

- attention_mask: any mask form below. With a KV cache, T_k = cached + new positions.
- kv_cache: a `KVCache`; the layer writes its new keys/values at slot `layer_idx`.
- rope: (cos, sin) [T, head_dim] for the new positions, when rotary positions are used.

All variants go through `attend`, which runs either the explicit math (the reference) or
`torch.nn.functional.scaled_dot_product_attention` (fused kernels); tests prove them equal.

Masks: one convention for the layers, `attend`, `build_mask`, `attention_bias` and
`mask_scores` alike, with the values of PyTorch's `scaled_dot_product_attention` (below) but
shapes of its own: SDPA reads a 2-D mask as [T_q, T_k] and a 3-D one with heads first, this
module as [B, T_k] and [B, T_q, T_k]. The T_q queries are the last T_q of the T_k keys (the
earlier ones come from a cache). Shapes:

- [B, T_k]: per key, e.g. padding;
- [B, T_q, T_k] or [B, H, T_q, T_k]: per query/key pair (e.g. packed documents);
  a dimension of size 1 broadcasts (a [B, 1, 1, T_k] mask is per key).

Values, by dtype:

- bool: True = the query may attend to the key, False = masked.
- integer: 1 = may attend, 0 = masked (as a tokenizer's attention_mask; any nonzero counts as 1).
- floating: an additive bias, added to the scores: 0 = attend, -inf or the most negative finite
  value (`torch.finfo(dtype).min`) = masked, other negative values weigh a key down. A positive
  value (or NaN) is refused: a float mask of 0s and 1s is almost surely a keep-mask, which as a
  bias would mask nothing. Pass such a mask as ``mask.bool()``. (Softmax ignores a constant per
  row, so a bias with positive entries works as ``bias - bias.amax(-1, keepdim=True)``.)

A causal layer (``causal=True``) stays causal whatever mask it gets: the mask only removes keys.
A query with every key masked (a padding query) gets the plain average of all T_k values, never
NaN, in both paths: masked scores become the most negative finite value, not -inf (a float
mask's -inf included). Models (`GPTModel`, `EncoderModel`) take the Hugging Face form instead
(1/0 keep-masks in any dtype, checked) and turn it into one additive bias with `attention_bias`.
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

MASK_SHAPES = "[B, T_k], [B, T_q, T_k] or [B, H, T_q, T_k] (size-1 dimensions broadcast)"

# A bias made by `attention_bias` carries this attribute: (its version then, whether it holds the
# causal mask). Its shape and values are known (0 / the most negative finite value), so `attend`
# skips checking them, which would wait for the device in every layer, and re-applying causality
# it already holds. An in-place change (a new version) makes it an unknown mask again. A tensor
# made under torch.inference_mode has no version counter: its version is recorded as None.
_MADE = "_scratchllm_attention_bias"


def _version(t: Tensor) -> int | None:
    return None if t.is_inference() else t._version


def _made_bias(mask: Tensor | None) -> tuple[int | None, bool] | None:
    if mask is None or torch.compiler.is_compiling():
        return None
    made = getattr(mask, _MADE, None)
    return made if made is not None and made[0] == _version(mask) else None


def _check_mask(
    mask: Tensor, t_q: int, t_k: int, *, batch: int | None = None, heads: int | None = None
) -> None:
    """Clear errors for a mask that does not follow the module docstring's convention.

    Shape and dtype are always checked; a float mask's values outside compilation only, and not
    for a bias `attention_bias` made.
    """
    shape = tuple(mask.shape)
    if mask.dtype.is_complex:
        raise ValueError(f"attention mask dtype {mask.dtype}: expected bool, integer or floating")
    if mask.dim() not in (2, 3, 4):
        raise ValueError(f"attention mask shape {shape}: expected {MASK_SHAPES}")
    b, h = "B" if batch is None else batch, "H" if heads is None else heads
    full = {2: (batch, t_k), 3: (batch, t_q, t_k), 4: (batch, heads, t_q, t_k)}[mask.dim()]
    names = {2: (b, t_k), 3: (b, t_q, t_k), 4: (b, h, t_q, t_k)}[mask.dim()]
    for i, (size, want) in enumerate(zip(shape, full, strict=True)):
        last = i == len(shape) - 1  # the keys: never broadcast
        if not (size == want or (not last and (size == 1 or want is None))):
            raise ValueError(
                f"attention mask shape {shape} does not fit {t_q} queries and {t_k} keys: "
                f"expected {list(names)} here; the forms are {MASK_SHAPES}"
            )
    if not mask.is_floating_point() or _made_bias(mask) is not None:
        return
    if torch.compiler.is_compiling():
        return
    bad = mask[~(mask <= 0)]  # positive or NaN
    if bad.numel():
        raise ValueError(
            f"float attention mask holds {bad[0].item()}: a float mask is an additive bias "
            "(0 = attend, -inf or torch.finfo(dtype).min = masked); a 0/1 keep-mask must be "
            "bool (mask.bool(): True = may attend)"
        )


def _as_4d(mask: Tensor) -> Tensor:
    """[B, T_k] -> [B, 1, 1, T_k]; [B, T_q, T_k] -> [B, 1, T_q, T_k]; 4-D as is."""
    if mask.dim() == 2:
        return mask[:, None, None, :]
    return mask[:, None] if mask.dim() == 3 else mask


def _causal_mask(t_q: int, t_k: int, device: torch.device) -> Tensor:
    """[1, 1, T_q, T_k], True where key position <= query position (queries are the last T_q)."""
    q_pos = torch.arange(t_k - t_q, t_k, device=device)[:, None]  # [T_q, 1]
    k_pos = torch.arange(t_k, device=device)[None, :]  # [1, T_k]
    return (k_pos <= q_pos)[None, None]


def _keep_mask(
    t_q: int, t_k: int, *, causal: bool, padding_mask: Tensor | None, device: torch.device
) -> Tensor | None:
    """`build_mask` without the checks."""
    mask = _causal_mask(t_q, t_k, device) if causal and t_q > 1 else None
    if padding_mask is not None:
        if padding_mask.is_floating_point():  # 0 / masked only (checked by the caller)
            keep = padding_mask > torch.finfo(padding_mask.dtype).min
        else:
            keep = padding_mask.bool()
        keep = _as_4d(keep)
        mask = keep if mask is None else mask & keep
    return mask


def _bias(
    t_q: int,
    t_k: int,
    *,
    causal: bool,
    padding_mask: Tensor | None,
    dtype: torch.dtype,
    device: torch.device,
) -> Tensor | None:
    """`attention_bias` without the checks."""
    lowest = torch.finfo(dtype).min
    if padding_mask is not None and padding_mask.is_floating_point():
        made = _made_bias(padding_mask)
        if made is not None:  # 0 / the most negative value already: clamped only when narrowed
            bias = padding_mask
            if bias.dtype != dtype:  # float16 stays finite
                bias = bias.clamp(min=lowest).to(dtype)
            has_causal = made[1]
        else:
            bias = _as_4d(padding_mask).to(device=device, dtype=dtype).clamp(min=lowest)
            has_causal = False
        if causal and t_q > 1 and not has_causal:
            bias = bias.masked_fill(~_causal_mask(t_q, t_k, device), lowest)
        return bias
    mask = _keep_mask(t_q, t_k, causal=causal, padding_mask=padding_mask, device=device)
    if mask is None:
        return None
    return torch.zeros(mask.shape, dtype=dtype, device=device).masked_fill(~mask, lowest)


def build_mask(
    t_q: int, t_k: int, *, causal: bool, padding_mask: Tensor | None, device: torch.device
) -> Tensor | None:
    """Boolean mask [B|1, H|1, T_q|1, T_k], True where a query may look at a key; None = all.

    ``padding_mask`` is any form of the module docstring; the result is the causal mask (when
    ``causal``) and it combined. A float bias must hold only 0 (attend) and -inf or the most
    negative finite value (masked): any other value is a weight a boolean mask cannot express
    (ValueError; `attend` and `attention_bias` take it as is).
    """
    if padding_mask is not None:
        _check_mask(padding_mask, t_q, t_k)
        if padding_mask.is_floating_point() and not torch.compiler.is_compiling():
            lowest = torch.finfo(padding_mask.dtype).min
            soft = padding_mask[(padding_mask != 0) & (padding_mask > lowest)]
            if soft.numel():
                raise ValueError(
                    f"float attention mask holds {soft[0].item()}: build_mask turns only 0 "
                    "(attend) and -inf / torch.finfo(dtype).min (masked) into a boolean mask; "
                    "give a weighting bias to attend or attention_bias"
                )
    return _keep_mask(t_q, t_k, causal=causal, padding_mask=padding_mask, device=device)


def attention_bias(
    t_q: int,
    t_k: int,
    *,
    causal: bool,
    padding_mask: Tensor | None,
    dtype: torch.dtype,
    device: torch.device,
) -> Tensor | None:
    """Any mask as one additive bias [B|1, H|1, T_q|1, T_k] of ``dtype``; None = no mask.

    0 where a query may look at a key, the most negative finite value where it may not (the
    causal mask, a bool / integer mask's False / 0, a float mask's -inf); a float mask's other
    values are kept. A model builds it once per forward and passes it to every layer as
    ``attention_mask``; `attend` then neither checks it again nor re-applies causality.
    """
    if padding_mask is not None:
        _check_mask(padding_mask, t_q, t_k)
    bias = _bias(t_q, t_k, causal=causal, padding_mask=padding_mask, dtype=dtype, device=device)
    if bias is not None and not torch.compiler.is_compiling():
        setattr(bias, _MADE, (_version(bias), causal and t_q > 1))
    return bias


def _mask_scores(scores: Tensor, *, causal: bool, padding_mask: Tensor | None) -> Tensor:
    """`mask_scores` without the checks."""
    t_q, t_k = scores.shape[-2:]
    lowest = torch.finfo(scores.dtype).min
    if padding_mask is not None and padding_mask.is_floating_point():
        bias = _bias(
            t_q,
            t_k,
            causal=causal,
            padding_mask=padding_mask,
            dtype=scores.dtype,
            device=scores.device,
        )
        # float16: a score below -16 plus the most negative value overflows to -inf
        return (scores + bias).clamp(min=lowest)
    mask = _keep_mask(t_q, t_k, causal=causal, padding_mask=padding_mask, device=scores.device)
    return scores if mask is None else scores.masked_fill(~mask, lowest)


def mask_scores(scores: Tensor, *, causal: bool, padding_mask: Tensor | None) -> Tensor:
    """Scores [B, H, T_q, T_k] with a mask applied as `attend`'s explicit path applies it: masked
    entries become the most negative finite value, a float bias is added (then clamped there)."""
    if padding_mask is not None:
        b, h, t_q, t_k = scores.shape
        _check_mask(padding_mask, t_q, t_k, batch=b, heads=h)
    return _mask_scores(scores, causal=causal, padding_mask=padding_mask)


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

    ``padding_mask`` is any form of the module docstring (bool True / integer 1 = may attend,
    float = additive bias); with ``causal`` a query also never sees a later key. A query with
    every key masked averages all the values uniformly instead of giving NaN, in both paths.
    """
    t_q, t_k = q.shape[2], k.shape[2]
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    if padding_mask is not None and _made_bias(padding_mask) is None:  # a made one is known good
        _check_mask(padding_mask, t_q, t_k, batch=q.shape[0], heads=q.shape[1])
    if impl == "math":
        scores = (q @ k.transpose(-2, -1)) * scale  # [B, H, T_q, T_k]
        weights = torch.softmax(_mask_scores(scores, causal=causal, padding_mask=padding_mask), -1)
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
    # An additive bias, not a boolean mask: SDPA gives NaN for a row with every key masked.
    bias = _bias(t_q, t_k, causal=causal, padding_mask=padding_mask, dtype=q.dtype, device=q.device)
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
