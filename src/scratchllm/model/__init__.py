"""Models built from first principles: GPT-style decoders and a BERT-like encoder."""

from scratchllm.model.config import PRESETS, ModelConfig, get_preset
from scratchllm.model.encoder import EncoderModel
from scratchllm.model.gpt import GPTModel
from scratchllm.model.kv_cache import KVCache

__all__ = ["PRESETS", "EncoderModel", "GPTModel", "KVCache", "ModelConfig", "get_preset"]
