"""transformers model objects -> our models, through the same rules as checkpoint files.

Kept as the entry point the model parity tests and docs/model.md use; the mapping itself lives in
`interop.hf` and the loading (key/shape checks, meta-device build) in `interop.hf_files`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from scratchllm.interop.hf import config_from_bert, config_from_gpt2, config_from_llama
from scratchllm.interop.hf_files import build_model
from scratchllm.interop.hf_files import load_hf as load_hf
from scratchllm.model.encoder import EncoderModel
from scratchllm.model.gpt import GPTModel

__all__ = [
    "config_from_bert",
    "config_from_gpt2",
    "config_from_llama",
    "encoder_from_bert",
    "from_transformers",
    "gpt_from_gpt2",
    "gpt_from_llama",
    "load_hf",
]


def from_transformers(hf_model: Any) -> nn.Module:
    """Our model with the weights of a transformers GPT-2 / BERT / Llama / Qwen2 model object.

    The tensors are copied, so training ours leaves `hf_model` as it was.
    """
    from scratchllm.interop.hf import config_from_hf

    layout, cfg = config_from_hf(hf_model.config.to_dict())
    state = {k: v.detach().clone() for k, v in hf_model.state_dict().items()}
    model, _ = build_model(layout, cfg, state, where=type(hf_model).__name__)
    return model


def gpt_from_gpt2(hf_model: Any) -> GPTModel:
    """Our GPTModel with the weights of a transformers GPT2LMHeadModel."""
    return from_transformers(hf_model)


def encoder_from_bert(hf_model: Any) -> EncoderModel:
    """Our EncoderModel with the weights of a transformers BertModel or BertForMaskedLM."""
    return from_transformers(hf_model)


def gpt_from_llama(hf_model: Any) -> GPTModel:
    """Our GPTModel (Llama-style config) with the weights of a transformers LlamaForCausalLM."""
    return from_transformers(hf_model)
