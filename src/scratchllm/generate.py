"""Turning a model's next-token distribution into text (the `scratchllm.generation` package).

This module keeps the short import path and `complete`, the one-call helper the training
pipeline uses to print samples.
"""

from __future__ import annotations

from torch import nn

from scratchllm import generation
from scratchllm.generation import *  # noqa: F403  (the whole public generation API)
from scratchllm.generation import DEFAULT_SAMPLING, Engine, SamplingConfig

__all__ = [*generation.__all__, "complete"]


def complete(
    model: nn.Module,
    tokenizer,
    prompt: str,
    max_new_tokens: int = 50,
    sampling: SamplingConfig = DEFAULT_SAMPLING,
    seed: int | None = None,
    *,
    stop: tuple[str, ...] = (),
    overflow: str = "slide",
) -> str:
    """Text continuation of ``prompt`` (the prompt itself is not repeated).

    Slides past the context by default, so a sample from a short-context model never fails.
    """
    engine = Engine(model, tokenizer)
    (out,) = engine.generate(
        [prompt], sampling, max_new_tokens, stop=stop, seed=seed, overflow=overflow
    )
    return out.text
