"""Our models equal transformers' on tiny random configs, through our conversion code.

float32 on CPU; tolerance atol 1e-5 (rtol 0) on logits / hidden states of order 1.
"""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from scratchllm.interop.hf_convert import (  # noqa: E402
    encoder_from_bert,
    gpt_from_gpt2,
    gpt_from_llama,
)
from scratchllm.model import KVCache  # noqa: E402

TOL = 1e-5  # float32, absolute
VOCAB = 97


def ids(b: int = 2, t: int = 9) -> torch.Tensor:
    return torch.randint(0, VOCAB, (b, t))


@pytest.mark.parametrize("impl", ["sdpa", "math"])
def test_gpt2_logits_match(impl):
    cfg = transformers.GPT2Config(
        vocab_size=VOCAB,
        n_positions=32,
        n_embd=32,
        n_layer=2,
        n_head=4,
        bos_token_id=0,
        eos_token_id=0,
    )
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    ours = gpt_from_gpt2(hf).eval()
    for block in ours.blocks:
        block.attn.impl = impl
    x = ids()
    with torch.no_grad():
        ref = hf(x).logits
        torch.testing.assert_close(ours(x), ref, atol=TOL, rtol=0)
        # Right padding: real positions agree with transformers given the same mask.
        mask = torch.tensor([[1] * 9, [1] * 6 + [0] * 3])
        ref_masked = hf(x, attention_mask=mask).logits
        out_masked = ours(x, attention_mask=mask)
    torch.testing.assert_close(out_masked[1, :6], ref_masked[1, :6], atol=TOL, rtol=0)
    torch.testing.assert_close(out_masked[0], ref_masked[0], atol=TOL, rtol=0)


def test_gpt2_left_padded_logits_match():
    # Left padding with positions counted from each row's first real token, as batched
    # generation runs it: the real positions agree with transformers given the same inputs.
    cfg = transformers.GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=2, n_head=4)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    ours = gpt_from_gpt2(hf).eval()
    x = ids()
    mask = torch.tensor([[1] * 9, [0] * 3 + [1] * 6])
    positions = (mask.cumsum(1) - 1).clamp(min=0)  # [B, T]
    with torch.no_grad():
        ref = hf(x, attention_mask=mask, position_ids=positions).logits
        out = ours(x, attention_mask=mask, position_ids=positions)
    torch.testing.assert_close(out[0], ref[0], atol=TOL, rtol=0)
    torch.testing.assert_close(out[1, 3:], ref[1, 3:], atol=TOL, rtol=0)


@pytest.mark.parametrize("n_kv_head", [2, 4, 1])  # GQA, MHA (fused layout), multi-query
def test_llama_logits_match(n_kv_head):
    cfg = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=n_kv_head,
        intermediate_size=48,
        max_position_embeddings=32,
        rope_theta=500.0,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    hf = transformers.LlamaForCausalLM(cfg).eval()
    ours = gpt_from_llama(hf).eval()
    assert ours.cfg.kv_heads == n_kv_head and ours.cfg.rope_theta == 500.0
    x = ids()
    with torch.no_grad():
        ref = hf(x).logits
        torch.testing.assert_close(ours(x), ref, atol=TOL, rtol=0)
        cache = KVCache.for_config(ours.cfg, batch_size=2, max_len=9)  # cached decoding too
        steps = [ours(x[:, :4], kv_cache=cache)]
        steps += [ours(x[:, t : t + 1], kv_cache=cache) for t in range(4, 9)]
    torch.testing.assert_close(torch.cat(steps, 1), ref, atol=TOL, rtol=0)


def bert_config():
    return transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=32,
        pad_token_id=0,
    )


@pytest.mark.parametrize("impl", ["sdpa", "math"])
def test_bert_hidden_and_pooled_match(impl):
    hf = transformers.BertModel(bert_config()).eval()
    ours = encoder_from_bert(hf).eval()
    for block in ours.blocks:
        block.attn.impl = impl
    x = ids()
    segments = torch.tensor([[0] * 5 + [1] * 4, [0] * 9])
    mask = torch.tensor([[1] * 9, [1] * 6 + [0] * 3])
    with torch.no_grad():
        ref = hf(x, attention_mask=mask, token_type_ids=segments)
        hidden = ours(x, attention_mask=mask, token_type_ids=segments)
    torch.testing.assert_close(hidden[0], ref.last_hidden_state[0], atol=TOL, rtol=0)
    torch.testing.assert_close(hidden[1, :6], ref.last_hidden_state[1, :6], atol=TOL, rtol=0)
    torch.testing.assert_close(ours.pooled(hidden), ref.pooler_output, atol=TOL, rtol=0)


def test_bert_mlm_logits_match():
    hf = transformers.BertForMaskedLM(bert_config()).eval()
    ours = encoder_from_bert(hf).eval()
    x = ids()
    with torch.no_grad():
        ref = hf(x).logits
        out = ours.mlm_logits(ours(x))
    torch.testing.assert_close(out, ref, atol=TOL, rtol=0)
