"""Choosing the next token from a model's logits.

`sample_next_token` is pure: logits (and, for penalties, what was seen so far) in, one token id
per row out. The order of operations follows common practice (Hugging Face / vLLM):

1. penalties: repetition (prompt + output tokens), frequency and presence (output tokens only),
   then OpenAI's ``logit_bias`` (a number added to the logits of chosen ids);
2. greedy (temperature 0) takes the argmax here;
3. temperature, then top-k, top-p (nucleus) and min-p filters;
4. a draw from the remaining distribution with a seeded `torch.Generator` (one for the batch, or
   one per row so that a request's draws do not depend on its neighbours in a batch).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from scratchllm.errors import ConfigError


@dataclass(frozen=True)
class SamplingConfig:
    """How to pick tokens; invalid values raise `ConfigError` (a `ValueError`) naming the field."""

    temperature: float = 1.0  # 0 means greedy (argmax); > 1 flatter, < 1 sharper
    top_k: int | None = None  # keep the k most likely tokens
    top_p: float | None = None  # keep the smallest set whose probability reaches p (nucleus)
    min_p: float | None = None  # drop tokens less likely than min_p * P(most likely token)
    repetition_penalty: float = 1.0  # > 1 discourages any token already in prompt or output
    frequency_penalty: float = 0.0  # subtracted once per earlier occurrence in the output
    presence_penalty: float = 0.0  # subtracted once if the token occurs in the output at all
    # (token id, bias) pairs added to those ids' logits: -100 bans a token, 100 forces it
    logit_bias: tuple[tuple[int, float], ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.temperature < math.inf:  # also rejects NaN
            raise ConfigError(f"temperature must be a finite number >= 0, got {self.temperature}")
        if self.top_k is not None and (isinstance(self.top_k, bool) or self.top_k < 1):
            raise ConfigError(f"top_k must be an integer >= 1, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.min_p is not None and not 0 <= self.min_p <= 1:
            raise ConfigError(f"min_p must be in [0, 1], got {self.min_p}")
        if not 0 < self.repetition_penalty < math.inf:
            raise ConfigError(
                f"repetition_penalty must be a finite number > 0, got {self.repetition_penalty}"
            )
        for name in ("frequency_penalty", "presence_penalty"):
            value = getattr(self, name)
            if not -2.0 <= value <= 2.0:  # the range OpenAI's API documents
                raise ConfigError(f"{name} must be in [-2, 2], got {value}")
        for pair in self.logit_bias:
            ok = isinstance(pair, tuple) and len(pair) == 2
            token, bias = pair if ok else (None, None)
            if not (ok and isinstance(token, int) and not isinstance(token, bool) and token >= 0):
                raise ConfigError(f"logit_bias needs (token id >= 0, bias) pairs, got {pair!r}")
            if (
                isinstance(bias, bool)
                or not isinstance(bias, int | float)
                or not -100 <= bias <= 100
            ):
                raise ConfigError(
                    f"logit_bias of token {token} must be in [-100, 100], got {bias!r}"
                )

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def uses_penalties(self) -> bool:
        return (
            self.repetition_penalty != 1.0
            or self.frequency_penalty != 0.0
            or self.presence_penalty != 0.0
        )


DEFAULT_SAMPLING = SamplingConfig()  # plain sampling from the model's distribution
GREEDY = SamplingConfig(temperature=0.0)


class TokenHistory:
    """What the penalties need to know per row: seen ids (prompt + output) and output counts.

    Kept as dense [B, vocab] tensors so a decode step updates them with one scatter.
    """

    def __init__(self, batch_size: int, vocab_size: int, device: torch.device | str = "cpu"):
        self.seen = torch.zeros(batch_size, vocab_size, dtype=torch.bool, device=device)
        self.counts = torch.zeros(batch_size, vocab_size, dtype=torch.int32, device=device)

    def add_prompt(self, row: int, ids: Sequence[int] | Tensor) -> None:
        ids = torch.as_tensor(ids, dtype=torch.long, device=self.seen.device)
        self.seen[row, ids] = True
        self.counts[row].zero_()

    def add_output(self, next_ids: Tensor) -> None:
        """Record ids [B] sampled this step (one per row)."""
        self.seen.scatter_(1, next_ids[:, None], True)
        self.counts.scatter_add_(1, next_ids[:, None], torch.ones_like(self.counts[:, :1]))


def apply_penalties(logits: Tensor, sampling: SamplingConfig, history: TokenHistory) -> Tensor:
    """Penalised logits [B, V] (float32); a no-op for the default settings."""
    logits = logits.float()
    if sampling.repetition_penalty != 1.0:
        # CTRL (Keskar et al. 2019): divide positive logits, multiply negative ones.
        rp = sampling.repetition_penalty
        penalised = torch.where(logits > 0, logits / rp, logits * rp)
        logits = torch.where(history.seen, penalised, logits)
    if sampling.frequency_penalty != 0.0:
        logits = logits - sampling.frequency_penalty * history.counts.to(logits.dtype)
    if sampling.presence_penalty != 0.0:
        logits = logits - sampling.presence_penalty * (history.counts > 0).to(logits.dtype)
    return logits


def apply_logit_bias(logits: Tensor, bias: Sequence[tuple[int, float]]) -> Tensor:
    """``logits`` [B, V] (float32) with each bias added to its token's column."""
    logits = logits.float()
    ids = torch.tensor([t for t, _ in bias], dtype=torch.long, device=logits.device)
    if int(ids.max()) >= logits.size(-1):
        raise ConfigError(
            f"logit_bias names token {int(ids.max())}, outside the vocabulary of {logits.size(-1)}"
        )
    values = torch.tensor([b for _, b in bias], dtype=logits.dtype, device=logits.device)
    return logits.index_add(-1, ids, values.expand(logits.size(0), -1))


def filter_logits(logits: Tensor, sampling: SamplingConfig) -> Tensor:
    """Temperature-scaled logits [B, V] with filtered-out tokens set to -inf."""
    logits = logits.float() / sampling.temperature
    vocab = logits.size(-1)
    if sampling.top_k is not None and sampling.top_k < vocab:
        kth = torch.topk(logits, sampling.top_k, dim=-1).values[..., -1:]  # [B, 1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if sampling.top_p is not None and sampling.top_p < 1:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # [B, V]
        probs = sorted_logits.softmax(dim=-1)
        # Drop a token when the tokens before it already reach top_p (the first always stays).
        drop_sorted = probs.cumsum(dim=-1) - probs >= sampling.top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    if sampling.min_p is not None and sampling.min_p > 0:
        probs = logits.softmax(dim=-1)
        threshold = sampling.min_p * probs.amax(dim=-1, keepdim=True)  # [B, 1]
        logits = logits.masked_fill(probs < threshold, float("-inf"))
    return logits


RowGenerators = torch.Generator | Sequence[torch.Generator | None] | None


def sample_next_token(
    logits: Tensor,
    sampling: SamplingConfig = DEFAULT_SAMPLING,
    generator: RowGenerators = None,
    *,
    history: TokenHistory | None = None,
) -> Tensor:
    """Pick one token per row of ``logits`` [B, V]; returns ids [B] (long).

    ``generator`` is one `torch.Generator` for the whole batch or a sequence with one per row.
    ``history`` is required when ``sampling`` has penalties.
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape [batch, vocab], got {tuple(logits.shape)}")
    if sampling.uses_penalties:
        if history is None:
            raise ValueError("repetition/frequency/presence penalties need a TokenHistory")
        logits = apply_penalties(logits, sampling, history)
    if sampling.logit_bias:
        logits = apply_logit_bias(logits, sampling.logit_bias)
    if sampling.greedy:
        return logits.argmax(dim=-1)
    probs = filter_logits(logits, sampling).softmax(dim=-1)  # [B, V]
    if generator is None or isinstance(generator, torch.Generator):
        return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)
    if len(generator) != probs.size(0):
        raise ValueError(f"{len(generator)} generators for a batch of {probs.size(0)} rows")
    rows = [
        torch.multinomial(p, num_samples=1, generator=g) for p, g in zip(probs, generator)
    ]  # B x [1]
    return torch.cat(rows)
