"""Tiny random transformers models for the interop tests (nothing downloads)."""

from __future__ import annotations

import pytest

transformers = pytest.importorskip("transformers")

VOCAB = 97


def hf_model(kind: str, **extra):
    """A tiny random transformers model of one of the kinds below, in eval mode."""
    common = dict(vocab_size=VOCAB, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    common |= {k: extra.pop(k) for k in list(extra) if k in common}
    if kind.startswith("gpt2"):
        cfg = transformers.GPT2Config(
            n_positions=32, n_embd=32, n_layer=2, n_head=4, **common, **extra
        )
        return transformers.GPT2LMHeadModel(cfg).eval()
    if kind.startswith("bert"):
        cfg = transformers.BertConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=48,
            max_position_embeddings=32,
            **common,
            **extra,
        )
        cls = transformers.BertModel if kind == "bert-base" else transformers.BertForMaskedLM
        return cls(cfg).eval()
    llama = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=32,
        rope_theta=500.0,
    )
    if kind.startswith("qwen2"):
        cfg = transformers.Qwen2Config(**llama, **common, **extra)
        return transformers.Qwen2ForCausalLM(cfg).eval()
    cfg = transformers.LlamaConfig(**llama, **common, **extra)
    return transformers.LlamaForCausalLM(cfg).eval()


# (kind, extra config): tied and untied heads, MHA (fused q/k/v), GQA, multi-query, QKV biases.
CASES = {
    "gpt2-tied": ("gpt2", {}),
    "gpt2-untied": ("gpt2", {"tie_word_embeddings": False}),
    "gpt2-exact-gelu": ("gpt2", {"activation_function": "gelu", "n_inner": 40}),
    "bert-mlm": ("bert-mlm", {}),
    "bert-base": ("bert-base", {}),
    "llama-gqa": ("llama", {"num_key_value_heads": 2}),
    "llama-mha-tied": ("llama", {"num_key_value_heads": 4, "tie_word_embeddings": True}),
    "llama-mqa-bias": (
        "llama",
        {"num_key_value_heads": 1, "attention_bias": True, "mlp_bias": True},
    ),
    "qwen2-gqa-tied": ("qwen2", {"num_key_value_heads": 2, "tie_word_embeddings": True}),
}
