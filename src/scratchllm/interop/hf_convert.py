"""Map Hugging Face GPT-2, BERT and Llama weights onto our models.

Only this module knows Hugging Face names. It reads configs by attribute and state dicts by key,
so it does not import `transformers`: a model built by transformers or a state dict loaded from a
checkpoint file both work. Direction here is import (theirs -> ours); the weights-interop work
builds export and file handling on top of these mappings.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from scratchllm.errors import CheckpointError
from scratchllm.model.config import ModelConfig
from scratchllm.model.encoder import EncoderModel
from scratchllm.model.gpt import GPTModel

StateDict = dict[str, Tensor]


# ---- configs -------------------------------------------------------------------------------


def config_from_gpt2(hf: Any, **overrides: Any) -> ModelConfig:
    """ModelConfig from a transformers GPT2Config (or anything with the same attributes)."""
    return ModelConfig(
        vocab_size=hf.vocab_size,
        context_length=hf.n_positions,
        n_embd=hf.n_embd,
        n_layer=hf.n_layer,
        n_head=hf.n_head,
        norm_eps=hf.layer_norm_epsilon,
        mlp_hidden=hf.n_inner,  # None -> 4 * n_embd, as in GPT-2
        tie_embeddings=getattr(hf, "tie_word_embeddings", True),
        **overrides,
    )


def config_from_bert(hf: Any, **overrides: Any) -> ModelConfig:
    if hf.hidden_act != "gelu":
        raise CheckpointError(f"BERT hidden_act={hf.hidden_act!r} unsupported (only 'gelu')")
    return ModelConfig(
        vocab_size=hf.vocab_size,
        context_length=hf.max_position_embeddings,
        n_embd=hf.hidden_size,
        n_layer=hf.num_hidden_layers,
        n_head=hf.num_attention_heads,
        mlp_hidden=hf.intermediate_size,
        norm_eps=hf.layer_norm_eps,
        type_vocab_size=hf.type_vocab_size,
        norm_position="post",
        gelu_approximate="none",  # BERT uses the exact (erf) GELU
        **overrides,
    )


def config_from_llama(hf: Any, **overrides: Any) -> ModelConfig:
    # transformers >= 5 keeps theta in rope_parameters; older versions in rope_theta.
    rope = getattr(hf, "rope_parameters", None) or {}
    theta = rope.get("rope_theta", getattr(hf, "rope_theta", 10000.0))
    if rope.get("rope_type", "default") != "default":
        raise CheckpointError(f"Llama rope_type={rope['rope_type']!r} unsupported (only default)")
    head_dim = getattr(hf, "head_dim", None)
    if head_dim is not None and head_dim * hf.num_attention_heads != hf.hidden_size:
        raise CheckpointError(f"Llama head_dim={head_dim} * n_head != hidden_size unsupported")
    bias = bool(getattr(hf, "attention_bias", False))
    return ModelConfig(
        vocab_size=hf.vocab_size,
        context_length=hf.max_position_embeddings,
        n_embd=hf.hidden_size,
        n_layer=hf.num_hidden_layers,
        n_head=hf.num_attention_heads,
        n_kv_head=hf.num_key_value_heads,
        mlp_hidden=hf.intermediate_size,
        norm_eps=hf.rms_norm_eps,
        rope_theta=float(theta),
        pos_emb="rope",
        norm="rmsnorm",
        mlp="swiglu",
        bias=bool(getattr(hf, "mlp_bias", False)),
        qkv_bias=bias,
        tie_embeddings=bool(getattr(hf, "tie_word_embeddings", False)),
        **overrides,
    )


# ---- state dicts ---------------------------------------------------------------------------


def _attention(
    ours: str, q: Tensor, k: Tensor, v: Tensor, cfg: ModelConfig, kind: str
) -> StateDict:
    """q/k/v [out, in] (weights) or [out] (biases) into the layout our attention class uses."""
    if cfg.kv_heads == cfg.n_head:  # fused MultiHeadAttention / BidirectionalAttention
        return {f"{ours}.qkv.{kind}": torch.cat([q, k, v], dim=0)}
    return {f"{ours}.q_proj.{kind}": q, f"{ours}.k_proj.{kind}": k, f"{ours}.v_proj.{kind}": v}


def _norm(ours: str, theirs: str, sd: StateDict) -> StateDict:
    out = {f"{ours}.weight": sd[f"{theirs}.weight"]}
    if f"{theirs}.bias" in sd:
        out[f"{ours}.bias"] = sd[f"{theirs}.bias"]
    return out


def _linear(ours: str, theirs: str, sd: StateDict, *, transpose: bool = False) -> StateDict:
    """A linear layer; GPT-2 stores its Conv1D weights as [in, out], hence `transpose`."""
    w = sd[f"{theirs}.weight"]
    out = {f"{ours}.weight": w.t() if transpose else w}
    if f"{theirs}.bias" in sd:
        out[f"{ours}.bias"] = sd[f"{theirs}.bias"]
    return out


def _strip(sd: StateDict, prefix: str) -> StateDict:
    return {k.removeprefix(prefix): v for k, v in sd.items()}


def gpt2_state_dict(sd: StateDict, cfg: ModelConfig) -> StateDict:
    """transformers GPT2LMHeadModel / GPT2Model keys -> GPTModel keys."""
    sd = _strip(sd, "transformer.")
    out = {"embed.wte.weight": sd["wte.weight"], "embed.wpe.weight": sd["wpe.weight"]}
    for i in range(cfg.n_layer):
        h, b = f"h.{i}", f"blocks.{i}"
        out |= _norm(f"{b}.norm1", f"{h}.ln_1", sd) | _norm(f"{b}.norm2", f"{h}.ln_2", sd)
        w_q, w_k, w_v = sd[f"{h}.attn.c_attn.weight"].t().chunk(3, dim=0)  # [C, C] each
        out |= _attention(f"{b}.attn", w_q, w_k, w_v, cfg, "weight")
        if f"{h}.attn.c_attn.bias" in sd:
            out |= _attention(f"{b}.attn", *sd[f"{h}.attn.c_attn.bias"].chunk(3), cfg, "bias")
        out |= _linear(f"{b}.attn.out_proj", f"{h}.attn.c_proj", sd, transpose=True)
        out |= _linear(f"{b}.mlp.up_proj", f"{h}.mlp.c_fc", sd, transpose=True)
        out |= _linear(f"{b}.mlp.down_proj", f"{h}.mlp.c_proj", sd, transpose=True)
    out |= _norm("norm_f", "ln_f", sd)
    out["lm_head.weight"] = sd.get("lm_head.weight", sd["wte.weight"])
    return out


def bert_state_dict(sd: StateDict, cfg: ModelConfig) -> StateDict:
    """transformers BertModel / BertForMaskedLM keys -> EncoderModel keys."""
    heads = {k: v for k, v in sd.items() if k.startswith("cls.")}
    sd = _strip(sd, "bert.")
    e = "embeddings"
    out = {
        "embed.wte.weight": sd[f"{e}.word_embeddings.weight"],
        "embed.wpe.weight": sd[f"{e}.position_embeddings.weight"],
        "embed.wtt.weight": sd[f"{e}.token_type_embeddings.weight"],
    } | _norm("embed.norm", f"{e}.LayerNorm", sd)
    for i in range(cfg.n_layer):
        h, b = f"encoder.layer.{i}", f"blocks.{i}"
        s = f"{h}.attention.self"
        for kind in ("weight", "bias"):
            qkv = [sd[f"{s}.{name}.{kind}"] for name in ("query", "key", "value")]
            out |= _attention(f"{b}.attn", *qkv, cfg, kind)
        out |= _linear(f"{b}.attn.out_proj", f"{h}.attention.output.dense", sd)
        out |= _norm(f"{b}.norm1", f"{h}.attention.output.LayerNorm", sd)
        out |= _linear(f"{b}.mlp.up_proj", f"{h}.intermediate.dense", sd)
        out |= _linear(f"{b}.mlp.down_proj", f"{h}.output.dense", sd)
        out |= _norm(f"{b}.norm2", f"{h}.output.LayerNorm", sd)
    if "pooler.dense.weight" in sd:
        out |= _linear("pooler.dense", "pooler.dense", sd)
    if heads:  # the masked-LM head of BertForMaskedLM
        p = "cls.predictions"
        out |= _linear("mlm_head.dense", f"{p}.transform.dense", heads)
        out |= _norm("mlm_head.norm", f"{p}.transform.LayerNorm", heads)
        out["mlm_head.decoder.weight"] = heads.get(f"{p}.decoder.weight", out["embed.wte.weight"])
        out["mlm_head.bias"] = heads[f"{p}.bias"]
    return out


def llama_state_dict(sd: StateDict, cfg: ModelConfig) -> StateDict:
    """transformers LlamaForCausalLM keys -> GPTModel keys (RoPE halves layout, no permute)."""
    sd = _strip(sd, "model.")
    out = {"embed.wte.weight": sd["embed_tokens.weight"]}
    for i in range(cfg.n_layer):
        h, b = f"layers.{i}", f"blocks.{i}"
        s = f"{h}.self_attn"
        for kind in ("weight", "bias"):
            if f"{s}.q_proj.{kind}" in sd:
                qkv = [sd[f"{s}.{name}_proj.{kind}"] for name in ("q", "k", "v")]
                out |= _attention(f"{b}.attn", *qkv, cfg, kind)
        out |= _linear(f"{b}.attn.out_proj", f"{s}.o_proj", sd)
        for name in ("gate_proj", "up_proj", "down_proj"):
            out |= _linear(f"{b}.mlp.{name}", f"{h}.mlp.{name}", sd)
        out |= _norm(f"{b}.norm1", f"{h}.input_layernorm", sd)
        out |= _norm(f"{b}.norm2", f"{h}.post_attention_layernorm", sd)
    out |= _norm("norm_f", "norm", sd)
    out["lm_head.weight"] = sd.get("lm_head.weight", sd["embed_tokens.weight"])
    return out


# ---- whole models --------------------------------------------------------------------------


def load_converted(model: nn.Module, sd: StateDict, *, optional: tuple[str, ...] = ()) -> None:
    """Load a converted state dict; every key must match except those under `optional`."""
    result = model.load_state_dict(sd, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(optional)]
    if missing or result.unexpected_keys:
        raise CheckpointError(
            f"converted weights do not fit the model: missing {missing}, "
            f"unexpected {result.unexpected_keys}"
        )


def gpt_from_gpt2(hf_model: nn.Module) -> GPTModel:
    """Our GPTModel with the weights of a transformers GPT2LMHeadModel."""
    cfg = config_from_gpt2(hf_model.config)
    model = GPTModel(cfg)
    load_converted(model, gpt2_state_dict(hf_model.state_dict(), cfg))
    return model


def encoder_from_bert(hf_model: nn.Module) -> EncoderModel:
    """Our EncoderModel with the weights of a transformers BertModel or BertForMaskedLM."""
    cfg = config_from_bert(hf_model.config)
    model = EncoderModel(cfg)
    sd = hf_model.state_dict()
    # BertModel has a pooler but no MLM head; BertForMaskedLM the other way round.
    optional = tuple(
        ours
        for ours, theirs in (("mlm_head.", "cls."), ("pooler.", "pooler."))
        if not any(k.removeprefix("bert.").startswith(theirs) for k in sd)
    )
    load_converted(model, bert_state_dict(sd, cfg), optional=optional)
    return model


def gpt_from_llama(hf_model: nn.Module) -> GPTModel:
    """Our GPTModel (Llama-style config) with the weights of a transformers LlamaForCausalLM."""
    cfg = config_from_llama(hf_model.config)
    model = GPTModel(cfg)
    load_converted(model, llama_state_dict(hf_model.state_dict(), cfg))
    return model
