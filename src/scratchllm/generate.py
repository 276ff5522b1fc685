"""Turning a model's next-token distribution into text.

``sample_next_token`` is pure: logits in, one token id per row out. ``generate`` is the naive
reference decoder (a full forward pass per new token); every faster path must produce the same
tokens under greedy decoding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class SamplingConfig:
    temperature: float = 1.0  # 0 means greedy (argmax)
    top_k: int | None = None  # keep the k most likely tokens
    top_p: float | None = None  # keep the smallest set whose probability reaches p (nucleus)

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


def sample_next_token(
    logits: torch.Tensor,
    sampling: SamplingConfig = SamplingConfig(),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick one token per row of ``logits`` [B, V]; returns ids [B]."""
    if sampling.temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / sampling.temperature
    if sampling.top_k is not None and sampling.top_k < logits.size(-1):
        kth = torch.topk(logits, sampling.top_k, dim=-1).values[..., -1:]  # [B, 1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if sampling.top_p is not None and sampling.top_p < 1:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # drop a token when the tokens before it already reach top_p (the first is always kept)
        drop_sorted = cumulative - sorted_logits.softmax(dim=-1) >= sampling.top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(
    model: nn.Module,
    idx: torch.Tensor,
    max_new_tokens: int,
    sampling: SamplingConfig = SamplingConfig(),
    *,
    eot_id: int | None = None,
    context_length: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Reference decoder: append up to ``max_new_tokens`` ids to ``idx`` [B, T].

    Each step runs the whole (cropped) sequence through the model. Rows that produced ``eot_id``
    keep emitting it, and decoding stops once every row has.
    """
    if context_length is None:
        context_length = model.cfg.context_length
    finished = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
    for _ in range(max_new_tokens):
        logits = model(idx[:, -context_length:])[:, -1, :]  # [B, V]
        next_id = sample_next_token(logits, sampling, generator)  # [B]
        if eot_id is not None:
            next_id = torch.where(finished, torch.full_like(next_id, eot_id), next_id)
            finished |= next_id == eot_id
        idx = torch.cat([idx, next_id[:, None]], dim=1)
        if eot_id is not None and bool(finished.all()):
            break
    return idx


def complete(
    model: nn.Module,
    tokenizer,
    prompt: str,
    max_new_tokens: int = 50,
    sampling: SamplingConfig = SamplingConfig(),
    seed: int | None = None,
) -> str:
    """Text continuation of ``prompt`` (the prompt itself is not repeated)."""
    device = next(model.parameters()).device
    ids = tokenizer.encode(prompt) or [tokenizer.eot_id]
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)
    idx = torch.tensor([ids], dtype=torch.long, device=device)
    out = generate(
        model, idx, max_new_tokens, sampling, eot_id=tokenizer.eot_id, generator=generator
    )
    new = out[0, len(ids) :].tolist()
    if tokenizer.eot_id is not None and tokenizer.eot_id in new:
        new = new[: new.index(tokenizer.eot_id)]
    return tokenizer.decode(new)
