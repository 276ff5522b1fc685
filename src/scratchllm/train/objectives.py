"""Self-supervised objectives: next-token prediction (GPT) and masked-token prediction (encoder).

Each objective is a ``loss_fn(model, batch) -> (mean loss, number of predicted tokens)`` for the
shared :class:`~scratchllm.train.loop.Trainer`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scratchllm.errors import ConfigError
from scratchllm.train.loop import next_token_loss

IGNORE_INDEX = -100  # targets the cross-entropy skips

__all__ = ["IGNORE_INDEX", "MaskedLM", "mask_tokens", "masked_lm_loss", "next_token_loss"]


@dataclass(frozen=True)
class MaskedLM:
    """BERT's corruption recipe (Devlin et al. 2018, 3.1).

    ``mask_prob`` of the (non-special) tokens are chosen for prediction; of those, 80% become the
    mask token, 10% a random token and 10% stay as they are.
    """

    mask_id: int  # id of the [MASK] token
    vocab_size: int
    special_ids: tuple[int, ...] = ()  # never chosen (padding, [CLS], [SEP], end-of-text …)
    mask_prob: float = 0.15
    replace_mask: float = 0.8  # share of chosen tokens replaced by [MASK]
    replace_random: float = 0.1  # share replaced by a random token (the rest is kept)

    def __post_init__(self) -> None:
        if not 0 < self.mask_prob < 1:
            raise ConfigError(f"mask_prob must be in (0, 1), got {self.mask_prob}")
        if self.replace_mask + self.replace_random > 1:
            raise ValueError("replace_mask + replace_random must be at most 1")
        if not 0 <= self.mask_id < self.vocab_size:
            raise ValueError(f"mask_id {self.mask_id} outside the vocabulary of {self.vocab_size}")


def mask_tokens(
    ids: Tensor, recipe: MaskedLM, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Corrupt ``ids`` [B, T] for masked-LM training; returns (inputs, targets).

    Targets hold the original id at chosen positions and ``IGNORE_INDEX`` elsewhere.
    """
    device = ids.device

    def uniform() -> Tensor:
        return torch.rand(ids.shape, generator=generator, device=device)

    candidates = ~_isin(ids, recipe.special_ids)
    chosen = (uniform() < recipe.mask_prob) & candidates
    roll = uniform()
    to_mask = chosen & (roll < recipe.replace_mask)
    to_random = chosen & (roll >= recipe.replace_mask)
    to_random &= roll < recipe.replace_mask + recipe.replace_random
    random_ids = torch.randint(
        recipe.vocab_size, ids.shape, generator=generator, device=device, dtype=ids.dtype
    )
    inputs = torch.where(to_mask, torch.full_like(ids, recipe.mask_id), ids)
    inputs = torch.where(to_random, random_ids, inputs)
    targets = torch.where(chosen, ids, torch.full_like(ids, IGNORE_INDEX))
    return inputs, targets


def _isin(ids: Tensor, values: Iterable[int]) -> Tensor:
    values = torch.tensor(list(values), dtype=ids.dtype, device=ids.device)
    if values.numel() == 0:
        return torch.zeros_like(ids, dtype=torch.bool)
    return torch.isin(ids, values)


def masked_lm_loss(recipe: MaskedLM, generator: torch.Generator | None = None):
    """A loss_fn for encoders: corrupt each batch's inputs, predict the originals.

    A batch is ``(ids, ...)`` or ``(ids, attention_mask)``; the window's targets (if any) are
    ignored because masked-LM predicts the tokens themselves. The model must offer
    ``features(idx, attention_mask=)`` and ``mlm_logits(hidden)`` (``EncoderModel`` does).
    """

    def loss_fn(model: nn.Module, batch) -> tuple[Tensor, int]:
        ids = batch[0]
        mask = batch[1] if len(batch) > 1 and batch[1].dtype == torch.bool else None
        inputs, targets = mask_tokens(ids, recipe, generator)
        if mask is not None:
            targets = targets.masked_fill(~mask, IGNORE_INDEX)
        core = getattr(model, "_orig_mod", model)  # unwrap torch.compile
        hidden = model.features(inputs, attention_mask=mask) if core is model else model(inputs)
        logits = core.mlm_logits(hidden)  # [B, T, V]
        n = int((targets != IGNORE_INDEX).sum())
        if n == 0:  # nothing chosen in this (tiny) batch: a zero loss that still has a graph
            return logits.sum() * 0.0, 0
        loss = F.cross_entropy(
            logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX
        )
        return loss, n

    return loss_fn
