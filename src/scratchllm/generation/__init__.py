"""Text generation: sampling, the reference decoder, KV-cached batched/streaming decoding, chat.

Public API (also re-exported by `scratchllm.generate`):

- `SamplingConfig`, `sample_next_token`, `TokenHistory`: choosing a token from logits.
- `generate`: the naive reference decoder every fast path is tested against.
- `Engine`: model + tokenizer behind `generate(prompts) -> list[Completion]` and `stream(prompt)`.
- `DecodeBatch`, `Request`, `StepEvent`: step-level decoding with requests joining and leaving
  between steps (continuous batching).
- `TextStream`: UTF-8-safe incremental detokenizing with stop strings.
"""

from scratchllm.generation.engine import (
    Completion,
    ContextOverflowError,
    DecodeBatch,
    Engine,
    Request,
    StepEvent,
    TokenLogprob,
)
from scratchllm.generation.reference import generate, left_pad
from scratchllm.generation.sampling import (
    DEFAULT_SAMPLING,
    GREEDY,
    SamplingConfig,
    TokenHistory,
    sample_next_token,
)
from scratchllm.generation.text import TextStream

__all__ = [
    "DEFAULT_SAMPLING",
    "GREEDY",
    "Completion",
    "ContextOverflowError",
    "DecodeBatch",
    "Engine",
    "Request",
    "SamplingConfig",
    "StepEvent",
    "TextStream",
    "TokenHistory",
    "TokenLogprob",
    "generate",
    "left_pad",
    "sample_next_token",
]
