import pytest
import torch

from scratchllm.model import EncoderModel, GPTModel, get_preset
from scratchllm.model.heads import last_token

TOL = 1e-5  # float32, absolute


def test_encoder_shapes_tying_and_heads():
    cfg = get_preset("tiny-bert")
    model = EncoderModel(cfg).eval()
    idx = torch.randint(0, cfg.vocab_size, (2, 7))
    hidden = model(idx, token_type_ids=torch.ones_like(idx))
    assert hidden.shape == (2, 7, cfg.n_embd)
    assert model.mlm_logits(hidden).shape == (2, 7, cfg.vocab_size)
    assert model.pooled(hidden).shape == (2, cfg.n_embd)
    assert model.mlm_head.decoder.weight is model.embed.wte.weight
    torch.testing.assert_close(model.features(idx), model(idx), atol=0, rtol=0)


def test_encoder_is_bidirectional_and_respects_padding():
    cfg = get_preset("tiny-bert")
    model = EncoderModel(cfg).eval()
    idx = torch.randint(0, cfg.vocab_size, (1, 6))
    changed = idx.clone()
    changed[0, 5] = (idx[0, 5] + 1) % cfg.vocab_size
    with torch.no_grad():
        # A later token changes earlier outputs (no causal mask) ...
        assert not torch.allclose(model(idx)[0, 0], model(changed)[0, 0])
        # ... unless it is padding.
        mask = torch.tensor([[1, 1, 1, 1, 1, 0]])
        a, b = model(idx, attention_mask=mask), model(changed, attention_mask=mask)
    torch.testing.assert_close(a[0, :5], b[0, :5], atol=TOL, rtol=0)


@pytest.mark.parametrize("impl", ["sdpa", "math"])
def test_encoder_mask_forms_agree(impl):
    # [B, T] and per-pair [B, 1, T, T] masks, boolean or 0/1 floats, all mean 1 = may attend
    # (as in GPTModel); a float pair mask was once taken for an additive bias and masked nothing.
    model = EncoderModel(get_preset("tiny-bert", attn_impl=impl)).eval()
    idx = torch.randint(0, 256, (2, 6))
    pad = torch.tensor([[1] * 6, [1] * 3 + [0] * 3])
    pair = pad[:, None, None, :].expand(2, 1, 6, 6).bool()  # [B, 1, T_q, T_k]
    with torch.no_grad():
        ref = model(idx, attention_mask=pad)
        for mask in (pad.float(), pad.bool(), pair, pair.float()):
            torch.testing.assert_close(model(idx, attention_mask=mask), ref, atol=TOL, rtol=0)
        # a row of nothing but padding: every query sees only masked keys, yet no NaN
        empty = model(idx, attention_mask=torch.tensor([[1] * 6, [0] * 6]))
    assert torch.isfinite(empty).all()


def test_encoder_rejects_bad_segments():
    model = EncoderModel(get_preset("tiny-bert"))
    with pytest.raises(ValueError, match="token_type_ids shape"):
        model(
            torch.zeros(1, 4, dtype=torch.long), token_type_ids=torch.zeros(1, 3, dtype=torch.long)
        )
    with pytest.raises(ValueError, match="token type 2 outside 0..1"):
        model(torch.zeros(1, 4, dtype=torch.long), token_type_ids=torch.full((1, 4), 2))
    gpt_cfg = get_preset("tiny")
    with pytest.raises(ValueError, match="type_vocab_size=0"):
        EncoderModel(gpt_cfg)(
            torch.zeros(1, 2, dtype=torch.long), token_type_ids=torch.zeros(1, 2, dtype=torch.long)
        )


@pytest.mark.parametrize("overrides", [{}, {"norm_position": "pre", "norm": "rmsnorm"}])
def test_post_and_pre_norm_encoders_train(overrides):
    model = EncoderModel(get_preset("tiny-bert", **overrides))
    opt = torch.optim.AdamW(model.param_groups(0.01), lr=1e-2)
    idx = torch.randint(0, 256, (4, 8))
    losses = []
    for _ in range(5):
        logits = model.mlm_logits(model(idx))
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), idx.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_last_token_of_a_right_padded_decoder_row_equals_the_row_alone():
    backbone = GPTModel(get_preset("tiny")).eval()
    idx = torch.randint(0, 256, (2, 6))
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
    with torch.no_grad():
        pooled = last_token(backbone.features(idx), mask)  # causal: no padding mask needed
        alone = backbone.features(idx[1:, :4])[:, -1]
    assert pooled.shape == (2, 32)
    torch.testing.assert_close(pooled[1:], alone, atol=TOL, rtol=0)
    h = torch.arange(12.0).view(1, 4, 3)
    assert torch.equal(last_token(h, torch.tensor([[1, 1, 0, 0]])), h[:, 1])
