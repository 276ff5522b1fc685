"""Attention variants: SDPA == explicit math, multi-head == stacked single heads, GQA == MHA,
causal and padding masks, cached decoding, dropout, float16 padding rows (float32: atol 1e-5)."""

import pytest
import torch

from scratchllm.model.attention import (
    BidirectionalAttention,
    CausalAttention,
    GroupedQueryAttention,
    MultiHeadAttention,
    SelfAttention,
    SimplifiedSelfAttention,
    attend,
    attention_bias,
)
from scratchllm.model.embeddings import rope_cos_sin
from scratchllm.model.kv_cache import KVCache

TOL = 1e-5  # float32, absolute
C, H = 16, 4


def make(variant: str, impl: str) -> torch.nn.Module:
    builders = {
        "simplified": lambda: SimplifiedSelfAttention(impl=impl),
        "self": lambda: SelfAttention(C, C, qkv_bias=True, impl=impl),
        "causal": lambda: CausalAttention(C, C, impl=impl),
        "mha": lambda: MultiHeadAttention(C, H, impl=impl),
        "bidirectional": lambda: BidirectionalAttention(C, H, impl=impl),
        "gqa": lambda: GroupedQueryAttention(C, H, 2, impl=impl),
        "mqa": lambda: GroupedQueryAttention(C, H, 1, impl=impl, causal=False),
    }
    torch.manual_seed(1)  # same weights for both impls
    return builders[variant]().eval()


VARIANTS = ["simplified", "self", "causal", "mha", "bidirectional", "gqa", "mqa"]
PADDING = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])  # row 2: 3 real, 3 pad


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("masked", [False, True])
def test_sdpa_equals_math(variant, masked):
    x = torch.randn(2, 6, C)
    mask = PADDING if masked else None
    with torch.no_grad():
        ref = make(variant, "math")(x, attention_mask=mask)
        fast = make(variant, "sdpa")(x, attention_mask=mask)
    assert ref.shape == (2, 6, C)
    torch.testing.assert_close(fast, ref, atol=TOL, rtol=0)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("t_q", [1, 3, 6])  # queries are the last t_q of 6 keys (a cache)
def test_attend_paths_equal(causal, masked, t_q):
    q = torch.randn(2, H, t_q, 8)
    k, v = torch.randn(2, H, 6, 8), torch.randn(2, H, 6, 8)
    mask = PADDING if masked else None
    kw = dict(causal=causal, padding_mask=mask)
    ref = attend(q, k, v, impl="math", **kw)
    torch.testing.assert_close(attend(q, k, v, impl="sdpa", **kw), ref, atol=TOL, rtol=0)


def test_simplified_attention_is_softmax_of_dot_products():
    x = torch.randn(1, 5, C)
    weights = torch.softmax(x[0] @ x[0].T, dim=-1)  # [T, T], unscaled
    out = SimplifiedSelfAttention()(x)
    torch.testing.assert_close(out[0], weights @ x[0], atol=TOL, rtol=0)


def test_causal_attention_ignores_the_future():
    attn = make("causal", "math")
    x = torch.randn(1, 6, C)
    changed = x.clone()
    changed[:, 4:] = torch.randn(1, 2, C)
    with torch.no_grad():
        torch.testing.assert_close(attn(changed)[:, :4], attn(x)[:, :4], atol=TOL, rtol=0)


def test_bidirectional_attention_ignores_padding():
    attn = make("bidirectional", "sdpa")
    x = torch.randn(2, 6, C)
    changed = x.clone()
    changed[1, 3:] = torch.randn(3, C)  # only padding positions differ
    with torch.no_grad():
        a = attn(x, attention_mask=PADDING)
        b = attn(changed, attention_mask=PADDING)
    torch.testing.assert_close(a[1, :3], b[1, :3], atol=TOL, rtol=0)


@pytest.mark.parametrize("impl", ["sdpa", "math"])
def test_attention_dropout_only_in_training(impl):
    attn = CausalAttention(C, C, dropout=0.5, impl=impl)
    x = torch.randn(2, 6, C)
    assert not torch.equal(attn(x), attn(x))
    attn.eval()
    assert torch.equal(attn(x), attn(x))


@pytest.mark.parametrize("causal", [False, True])
def test_gqa_with_all_heads_equals_mha(causal):
    mha = MultiHeadAttention(C, H) if causal else BidirectionalAttention(C, H)
    gqa = GroupedQueryAttention(C, H, H, qkv_bias=True, bias=True, causal=causal)
    wq, wk, wv = mha.qkv.weight.chunk(3)
    bq, bk, bv = mha.qkv.bias.chunk(3)
    with torch.no_grad():
        for proj, w, b in ((gqa.q_proj, wq, bq), (gqa.k_proj, wk, bk), (gqa.v_proj, wv, bv)):
            proj.weight.copy_(w)
            proj.bias.copy_(b)
        gqa.out_proj.load_state_dict(mha.out_proj.state_dict())
        x = torch.randn(2, 6, C)
        torch.testing.assert_close(gqa(x), mha(x), atol=TOL, rtol=0)


def test_gqa_cache_holds_only_kv_heads_and_rope_decoding_matches():
    attn = make("gqa", "sdpa")
    x = torch.randn(1, 5, C)
    cos, sin = rope_cos_sin(torch.arange(5), C // H, 10000.0, x.dtype)
    with torch.no_grad():
        full = attn(x, rope=(cos, sin))
        cache = KVCache(1, 1, 2, 5, C // H)  # 2 key/value heads, not 4
        steps = []
        for t in range(5):
            steps.append(
                attn(x[:, t : t + 1], kv_cache=cache, rope=(cos[t : t + 1], sin[t : t + 1]))
            )
            cache.advance(1)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=TOL, rtol=0)


def test_bad_head_counts_are_named():
    with pytest.raises(ValueError, match="n_head=5"):
        MultiHeadAttention(C, 5)
    with pytest.raises(ValueError, match="n_kv_head=3"):
        GroupedQueryAttention(C, H, 3)


@pytest.mark.parametrize("impl", ["math", "sdpa"])
def test_fully_masked_query_rows_stay_finite_in_float16(impl):
    # Scores below -16 plus float16's most negative value (-65504) overflow to -inf; a query row
    # whose every key is masked (a padding query) must still average uniformly, not give NaN.
    q = torch.full((1, 1, 2, 4), 10.0, dtype=torch.float16)
    k = torch.full((1, 1, 3, 4), -10.0, dtype=torch.float16)  # every score is -200
    v = torch.randn(1, 1, 3, 4, dtype=torch.float16)
    padding = torch.zeros(1, 3, dtype=torch.long)  # every key is padding
    bias = attention_bias(
        2, 3, causal=False, padding_mask=padding, dtype=torch.float16, device=q.device
    )
    uniform = v.float().mean(dim=2, keepdim=True).expand(1, 1, 2, 4)
    for mask in (padding, bias):  # a [B, T_k] mask and the additive bias a model builds
        out = attend(q, k, v, causal=False, padding_mask=mask, impl=impl)
        torch.testing.assert_close(out.float(), uniform, atol=2e-3, rtol=0)


@pytest.mark.parametrize("impl", ["math", "sdpa"])
def test_multi_head_equals_stacked_single_heads(impl):
    # MultiHeadAttention == H separate `CausalAttention` heads of width C/H whose outputs are
    # concatenated, then projected: the fused q/k/v matrix only stacks the heads' matrices.
    mha = make("mha", impl)
    d = C // H
    wq, wk, wv = mha.qkv.weight.chunk(3)  # each [C, C]: rows h*d .. (h+1)*d belong to head h
    bq, bk, bv = mha.qkv.bias.chunk(3)
    heads = []
    for h in range(H):
        head = CausalAttention(C, d, qkv_bias=True, impl=impl).eval()
        rows = slice(h * d, (h + 1) * d)
        with torch.no_grad():
            for proj, w, b in ((head.q_proj, wq, bq), (head.k_proj, wk, bk), (head.v_proj, wv, bv)):
                proj.weight.copy_(w[rows])
                proj.bias.copy_(b[rows])
        heads.append(head)
    x = torch.randn(2, 6, C)
    with torch.no_grad():
        stacked = torch.cat([head(x) for head in heads], dim=-1)  # [B, T, C]
        torch.testing.assert_close(mha(x), mha.out_proj(stacked), atol=TOL, rtol=0)


@pytest.mark.parametrize("variant", ["causal", "mha", "gqa"])
def test_causal_output_equals_attention_over_the_prefix(variant):
    # Independent of `build_mask`: output i is a softmax over keys 0..i only, so each output
    # equals attention run on the prefix x[:, :i+1] alone (the last position sees everything).
    attn = make(variant, "math")
    x = torch.randn(2, 6, C)
    with torch.no_grad():
        full = attn(x)
        for i in range(6):
            prefix = attn(x[:, : i + 1])
            torch.testing.assert_close(full[:, i], prefix[:, -1], atol=TOL, rtol=0)
