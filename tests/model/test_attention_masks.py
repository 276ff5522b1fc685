"""One mask convention everywhere (PyTorch's): bool True / integer 1 = may attend, float = an
additive bias (0 attend, -inf or finfo.min masked). For every accepted form, `attend` (math and
SDPA), `build_mask` -> `attend`, `attention_bias` -> `attend` and the attention layers equal a
hand-written softmax; a query with every key masked averages all values; ambiguous or malformed
masks are refused with the problem named (float32: atol 1e-5)."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scratchllm.model.attention import (
    BidirectionalAttention,
    CausalAttention,
    GroupedQueryAttention,
    MultiHeadAttention,
    attend,
    attention_bias,
    build_mask,
    mask_scores,
)
from scratchllm.model.config import ModelConfig
from scratchllm.model.gpt import GPTModel

TOL = 1e-5  # float32, absolute
B, H, T_Q, T_K, D = 2, 3, 4, 6, 8  # the 4 queries are the last 4 of 6 keys (2 from a cache)


def reference(q, k, v, *, allowed, bias=None, scale=None):
    """softmax over the allowed keys of q.k * scale (+ bias), by hand in float64; a row with no
    allowed key averages every value. allowed: bool broadcastable to [B, H, T_q, T_k]."""
    q, k, v = q.double(), k.double(), v.double()
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = torch.einsum("bhqd,bhkd->bhqk", q, k) * scale
    if bias is not None:
        scores = scores + bias.double()
    allowed = allowed.expand(scores.shape)
    top = scores.masked_fill(~allowed, -math.inf).amax(-1, keepdim=True)
    e = torch.where(allowed, torch.exp(scores - top.clamp(min=-1e300)), 0.0)
    weights = e / e.sum(-1, keepdim=True)
    empty = ~allowed.any(-1, keepdim=True)  # every key masked: the plain average
    weights = torch.where(empty, torch.full_like(weights, 1.0 / weights.shape[-1]), weights)
    return (weights @ v).float()


def causal_allowed(t_q, t_k):
    q_pos = torch.arange(t_k - t_q, t_k)[:, None]
    return torch.arange(t_k)[None, :] <= q_pos  # [T_q, T_k]


def qkv(b=B, h=H, t_q=T_Q, t_k=T_K, d=D, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, h, t_q, d, generator=g), *torch.randn(2, b, h, t_k, d, generator=g))


def keep_pairs(seed=1):
    """[B, T_q, T_k] bool with a fully masked row (batch 1, query 0) and a fully open one."""
    g = torch.Generator().manual_seed(seed)
    keep = torch.rand(B, T_Q, T_K, generator=g) > 0.4
    keep[1, 0] = False
    keep[0, 1] = True
    return keep


PADDING = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 1, 1, 1, 0, 0]])  # left and right padding
KEEP = keep_pairs()
KEEP_HEADS = torch.rand(B, H, T_Q, T_K, generator=torch.Generator().manual_seed(2)) > 0.5


# form name -> (mask as passed, the same mask as bool [B|1, H|1, T_q|1, T_k])
FORMS = {
    "bool 2-D [B, T_k]": (PADDING.bool(), PADDING.bool()[:, None, None]),
    "integer 2-D [B, T_k]": (PADDING, PADDING.bool()[:, None, None]),
    "bool 3-D [B, T_q, T_k]": (KEEP, KEEP[:, None]),
    "integer 3-D [B, T_q, T_k]": (KEEP.long(), KEEP[:, None]),
    "bool 4-D [B, 1, T_q, T_k]": (KEEP[:, None], KEEP[:, None]),
    "bool 4-D [B, H, T_q, T_k]": (KEEP_HEADS, KEEP_HEADS),
    "bool 4-D [1, 1, T_q, T_k]": (KEEP[1:, None], KEEP[1:, None]),
    "bool 4-D [B, 1, 1, T_k]": (PADDING.bool()[:, None, None], PADDING.bool()[:, None, None]),
}
BIASES = {  # float forms: each an additive bias; mask = where it is not -inf / finfo.min
    "float 4-D -inf": torch.zeros(B, 1, T_Q, T_K).masked_fill(~KEEP[:, None], -math.inf),
    "float 4-D finfo.min": torch.zeros(B, 1, T_Q, T_K).masked_fill(
        ~KEEP[:, None], torch.finfo(torch.float32).min
    ),
    "float 3-D -inf": torch.zeros(B, T_Q, T_K).masked_fill(~KEEP, -math.inf),
    "float 2-D [B, T_k] -inf": torch.zeros(B, T_K).masked_fill(PADDING == 0, -math.inf),
}


def bias_allowed(bias):
    allowed = bias > torch.finfo(bias.dtype).min
    return (
        allowed[:, None, None]
        if bias.dim() == 2
        else allowed[:, None]
        if bias.dim() == 3
        else allowed
    )


ALL = {**FORMS, **{name: (bias, bias_allowed(bias)) for name, bias in BIASES.items()}}


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("form", list(ALL))
def test_every_path_equals_the_hand_written_softmax(form, causal):
    mask, allowed = ALL[form]
    q, k, v = qkv()
    if causal:
        allowed = allowed & causal_allowed(T_Q, T_K)
    ref = reference(q, k, v, allowed=allowed)
    kw = dict(causal=causal, padding_mask=mask)
    for impl in ("math", "sdpa"):
        torch.testing.assert_close(attend(q, k, v, impl=impl, **kw), ref, atol=TOL, rtol=0)
        pair = build_mask(T_Q, T_K, causal=causal, padding_mask=mask, device=q.device)
        assert pair.dtype == torch.bool
        out = attend(q, k, v, causal=False, padding_mask=pair, impl=impl)
        torch.testing.assert_close(out, ref, atol=TOL, rtol=0)
        bias = attention_bias(
            T_Q, T_K, causal=causal, padding_mask=mask, dtype=q.dtype, device=q.device
        )
        assert bias.is_floating_point()
        out = attend(q, k, v, causal=causal, padding_mask=bias, impl=impl)
        torch.testing.assert_close(out, ref, atol=TOL, rtol=0)
    scores = mask_scores(q @ k.transpose(-2, -1) / math.sqrt(D), **kw)
    torch.testing.assert_close(torch.softmax(scores, -1) @ v, ref, atol=TOL, rtol=0)


@pytest.mark.parametrize("causal", [False, True])
def test_a_weighting_bias_is_added_to_the_scores(causal):
    # Not only masking: negative values weigh keys down; attend and attention_bias keep them.
    q, k, v = qkv()
    soft = -3.0 * torch.rand(B, 1, T_Q, T_K, generator=torch.Generator().manual_seed(3))
    soft = soft.masked_fill(~KEEP[:, None], -math.inf)
    allowed = KEEP[:, None] & (causal_allowed(T_Q, T_K) if causal else True)
    ref = reference(q, k, v, allowed=allowed, bias=soft.clamp(min=-1e9))
    bias = attention_bias(
        T_Q, T_K, causal=causal, padding_mask=soft, dtype=q.dtype, device=q.device
    )
    for impl in ("math", "sdpa"):
        for mask in (soft, bias):
            out = attend(q, k, v, causal=causal, padding_mask=mask, impl=impl)
            torch.testing.assert_close(out, ref, atol=TOL, rtol=0)
    with pytest.raises(ValueError, match="build_mask turns only 0"):
        build_mask(T_Q, T_K, causal=causal, padding_mask=soft, device=q.device)


def test_a_causal_layer_stays_causal_under_any_mask():
    # A zero bias (or an all-True mask) removes no key; the layer's causality still applies.
    q, k, v = qkv()
    plain = attend(q, k, v, causal=True, impl="math")
    for mask in (torch.zeros(B, 1, T_Q, T_K), torch.ones(B, T_Q, T_K, dtype=torch.bool)):
        for impl in ("math", "sdpa"):
            out = attend(q, k, v, causal=True, padding_mask=mask, impl=impl)
            torch.testing.assert_close(out, plain, atol=TOL, rtol=0)


LAYERS = {
    "causal": lambda impl: CausalAttention(12, 12, qkv_bias=True, impl=impl),
    "mha": lambda impl: MultiHeadAttention(12, H, impl=impl),
    "bidirectional": lambda impl: BidirectionalAttention(12, H, impl=impl),
    "gqa": lambda impl: GroupedQueryAttention(12, H, 1, impl=impl),
}


def layer(name, impl):
    torch.manual_seed(4)  # same weights for both paths
    return LAYERS[name](impl).eval()


@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize("form", list(ALL))
def test_layers_read_every_form_alike_in_both_paths(name, form):
    # T_q = T_k here (no cache): the forms built for 4 queries are cut to their last 4 keys.
    mask, allowed = ALL[form]
    mask, allowed = mask[..., 2:], allowed[..., 2:]  # [.., T_q, 4]
    if name == "causal" and mask.dim() == 4 and mask.shape[1] == H:
        mask, allowed = mask[:, :1], allowed[:, :1]  # one head
    x = torch.randn(B, 4, 12)
    with torch.no_grad():
        same = layer(name, "math")(x, attention_mask=allowed)  # the bool form
        for impl in ("math", "sdpa"):
            out = layer(name, impl)(x, attention_mask=mask)
            torch.testing.assert_close(out, same, atol=TOL, rtol=0)


@pytest.mark.parametrize("impl", ["math", "sdpa"])
def test_multi_head_layer_equals_the_hand_written_softmax(impl):
    attn = layer("bidirectional", impl)
    x = torch.randn(B, T_K, 12)
    keep = torch.rand(B, T_K, T_K, generator=torch.Generator().manual_seed(5)) > 0.5
    keep[0, 2] = False  # a query with no key
    with torch.no_grad():
        q, k, v = (t.view(B, T_K, H, -1).transpose(1, 2) for t in attn.qkv(x).chunk(3, dim=-1))
        ref = reference(q, k, v, allowed=keep[:, None])
        want = attn.out_proj(ref.transpose(1, 2).reshape(B, T_K, 12))
        torch.testing.assert_close(attn(x, attention_mask=keep), want, atol=TOL, rtol=0)


@settings(max_examples=60, deadline=None)
@given(
    b=st.integers(1, 3),
    h=st.integers(1, 3),
    t_k=st.integers(1, 7),
    cached=st.integers(0, 3),  # keys before the first query (a KV cache)
    causal=st.booleans(),
    form=st.sampled_from(["2d", "3d", "4d", "4d-heads", "int", "bias-inf", "bias-min"]),
    density=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_random_masks_agree_with_the_reference(b, h, t_k, cached, causal, form, density, seed):
    t_q = max(1, t_k - cached)
    g = torch.Generator().manual_seed(seed)
    q, k, v = torch.randn(b, h, t_q, 4, generator=g), *torch.randn(2, b, h, t_k, 4, generator=g)
    shape = {"2d": (b, t_k), "3d": (b, t_q, t_k), "4d-heads": (b, h, t_q, t_k)}
    keep = torch.rand(*shape.get(form, (b, 1, t_q, t_k)), generator=g) < density
    allowed = {2: keep[:, None, None], 3: keep[:, None]}.get(keep.dim(), keep)
    mask = {
        "int": keep.int(),
        "bias-inf": torch.zeros(keep.shape).masked_fill(~keep, -math.inf),
        "bias-min": torch.zeros(keep.shape).masked_fill(~keep, torch.finfo(torch.float32).min),
    }.get(form, keep)
    if causal:
        allowed = allowed & causal_allowed(t_q, t_k)
    ref = reference(q, k, v, allowed=allowed)
    for impl in ("math", "sdpa"):
        out = attend(q, k, v, causal=causal, padding_mask=mask, impl=impl)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out, ref, atol=TOL, rtol=0)
        pair = build_mask(t_q, t_k, causal=causal, padding_mask=mask, device=q.device)
        out = attend(q, k, v, causal=False, padding_mask=pair, impl=impl)
        torch.testing.assert_close(out, ref, atol=TOL, rtol=0)
    # The documented result of a query with every key masked: the plain average of all values.
    empty = ~allowed.expand(b, h, t_q, t_k).any(-1)  # [B, H, T_q]
    mean = v.mean(dim=2, keepdim=True).expand(b, h, t_q, 4)
    torch.testing.assert_close(ref[empty], mean[empty], atol=TOL, rtol=0)


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (PADDING.float(), "a 0/1 keep-mask must be bool"),  # ambiguous: keep-mask or bias?
        (KEEP[:, None].float(), "a 0/1 keep-mask must be bool"),
        (torch.full((B, T_K), math.nan), "holds nan"),
        (torch.ones(T_K, dtype=torch.bool), r"expected \[B, T_k\], \[B, T_q, T_k\]"),
        (torch.ones(B, 1, 1, T_Q, T_K, dtype=torch.bool), r"shape \(2, 1, 1, 4, 6\)"),
        (torch.ones(B, T_K - 1, dtype=torch.bool), "does not fit 4 queries and 6 keys"),
        (torch.ones(B, 3, T_K, dtype=torch.bool), "does not fit"),  # neither T_q nor 1
        (torch.ones(B + 1, T_K, dtype=torch.bool), r"expected \[2, 6\]"),
        (torch.ones(B, H + 1, T_Q, T_K, dtype=torch.bool), r"expected \[2, 3, 4, 6\]"),
        (torch.ones(B, T_K, dtype=torch.complex64), "dtype torch.complex64"),
    ],
)
@pytest.mark.parametrize("impl", ["math", "sdpa"])
def test_ambiguous_or_malformed_masks_are_refused(mask, message, impl):
    q, k, v = qkv()
    with pytest.raises(ValueError, match=message):
        attend(q, k, v, causal=True, padding_mask=mask, impl=impl)


def test_build_mask_and_attention_bias_refuse_the_same():
    for fn in (build_mask, attention_bias):
        kw = dict(dtype=torch.float32) if fn is attention_bias else {}
        with pytest.raises(ValueError, match="a 0/1 keep-mask must be bool"):
            fn(T_Q, T_K, causal=False, padding_mask=PADDING.float(), device="cpu", **kw)
        with pytest.raises(ValueError, match="does not fit"):
            fn(T_Q, T_K, causal=False, padding_mask=PADDING[:, :3], device="cpu", **kw)


def test_layers_refuse_a_float_keep_mask():
    x = torch.randn(B, T_K, 12)
    with pytest.raises(ValueError, match="a 0/1 keep-mask must be bool"):
        layer("mha", "sdpa")(x, attention_mask=PADDING.float())


def test_a_bias_changed_in_place_is_checked_again():
    # attention_bias's own output skips the value check in every layer, until it is modified.
    q, k, v = qkv()
    bias = attention_bias(T_Q, T_K, causal=True, padding_mask=KEEP, dtype=q.dtype, device="cpu")
    attend(q, k, v, causal=True, padding_mask=bias)
    bias.masked_fill_(bias == 0, 1.0)  # now a keep-mask's ones where it was 0
    with pytest.raises(ValueError, match="holds 1.0"):
        attend(q, k, v, causal=True, padding_mask=bias)


def test_models_keep_their_one_zero_masks_in_every_dtype():
    # Models take Hugging Face's 1/0 keep-masks (any dtype) and refuse an additive bias.
    cfg = ModelConfig(vocab_size=32, context_length=8, n_embd=16, n_head=2, n_layer=1)
    torch.manual_seed(0)
    model = GPTModel(cfg).eval()
    idx = torch.randint(0, 32, (2, 6))
    pad = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    with torch.no_grad():
        want = model(idx, attention_mask=pad.bool())
        for mask in (pad, pad.float(), pad.bool()[:, None, None].expand(2, 1, 6, 6).float()):
            torch.testing.assert_close(model(idx, attention_mask=mask), want, atol=0, rtol=0)
    bias = torch.zeros(2, 6).masked_fill(pad == 0, -math.inf)
    with pytest.raises(ValueError, match="expected 1 \\(may attend\\) or 0"):
        model(idx, attention_mask=bias)


def test_masked_models_run_under_inference_mode():
    # Tensors made under torch.inference_mode have no version counter for the bias's mark.
    from scratchllm.model.encoder import EncoderModel

    idx = torch.randint(0, 32, (2, 6))
    pad = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    cfg = ModelConfig(vocab_size=32, context_length=8, n_embd=16, n_head=2, n_layer=2)
    for model in (GPTModel(cfg).eval(), EncoderModel(cfg).eval()):
        with torch.no_grad():
            want = model(idx, attention_mask=pad)
        with torch.inference_mode():
            got = model(idx, attention_mask=pad)
        torch.testing.assert_close(got, want, atol=0, rtol=0)
        # a bias made there is still known to attend (not checked again), in both modes
        with torch.inference_mode():
            q, k, v = qkv()
            made = attention_bias(
                T_Q, T_K, causal=True, padding_mask=KEEP, dtype=q.dtype, device="cpu"
            )
            assert made.is_inference()
            torch.testing.assert_close(
                attend(q, k, v, causal=True, padding_mask=made),
                attend(q, k, v, causal=True, padding_mask=KEEP),
            )
