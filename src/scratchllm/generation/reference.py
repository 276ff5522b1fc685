"""The naive reference decoder: a full forward pass over the whole sequence for every new token.

Slow on purpose and obviously right; every fast path (KV cache, batching, CUDA graphs) is tested
to give the same tokens under greedy decoding. Also home of `left_pad`, which both use to batch
prompts of different lengths.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from scratchllm.generation.sampling import (
    DEFAULT_SAMPLING,
    RowGenerators,
    SamplingConfig,
    TokenHistory,
    sample_next_token,
)


def left_pad(
    prompts: Sequence[Sequence[int]], pad_id: int = 0, device: torch.device | str | None = None
) -> tuple[Tensor, Tensor]:
    """ids [B, T_max] with each prompt right-aligned, and its attention mask [B, T_max] (bool).

    Left padding puts every row's last real token in the last column, where the next token is
    read from; the mask hides the padding from attention.
    """
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    t_max = max(len(p) for p in prompts)
    idx = torch.full((len(prompts), t_max), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((len(prompts), t_max), dtype=torch.bool, device=device)
    for row, p in enumerate(prompts):
        idx[row, t_max - len(p) :] = torch.as_tensor(list(p), dtype=torch.long)
        mask[row, t_max - len(p) :] = True
    return idx, mask


def positions_from_mask(mask: Tensor) -> Tensor:
    """Position ids [B, T] counting from each row's first real token (padding gets 0)."""
    return (mask.long().cumsum(dim=-1) - 1).clamp(min=0)


@torch.no_grad()
def generate(
    model: nn.Module,
    idx: Tensor,
    max_new_tokens: int,
    sampling: SamplingConfig = DEFAULT_SAMPLING,
    *,
    eot_id: int | None = None,
    context_length: int | None = None,
    generator: RowGenerators = None,
    attention_mask: Tensor | None = None,
) -> Tensor:
    """Reference decoder: append up to ``max_new_tokens`` ids to ``idx`` [B, T].

    ``attention_mask`` [B, T] marks real tokens of a left-padded batch (see `left_pad`). Each step
    runs the last ``context_length`` positions (a naive sliding window). Rows that produced
    ``eot_id`` keep emitting it, and decoding stops once every row has.
    """
    if context_length is None:
        context_length = model.cfg.context_length
    if attention_mask is None:
        attention_mask = torch.ones_like(idx, dtype=torch.bool)
    history = None
    if sampling.uses_penalties:
        history = TokenHistory(idx.size(0), model.cfg.vocab_size, idx.device)
        for row in range(idx.size(0)):
            history.add_prompt(row, idx[row][attention_mask[row]])
    finished = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
    for _ in range(max_new_tokens):
        window, mask = idx[:, -context_length:], attention_mask[:, -context_length:]
        logits = model(window, attention_mask=mask, position_ids=positions_from_mask(mask))
        next_id = sample_next_token(logits[:, -1, :], sampling, generator, history=history)
        if eot_id is not None:
            next_id = torch.where(finished, torch.full_like(next_id, eot_id), next_id)
            finished |= next_id == eot_id
        if history is not None:
            history.add_output(next_id)
        idx = torch.cat([idx, next_id[:, None]], dim=1)
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(idx.size(0), 1)], 1)
        if eot_id is not None and bool(finished.all()):
            break
    return idx
