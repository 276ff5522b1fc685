"""Sentence embeddings from any trained decoder (GPT) or encoder run, for search and clustering.

A text's vector is a pooling of the model's final hidden states `features(idx, attention_mask=)`:

- "mean": the average over the text's tokens (padding excluded); a good default for both kinds.
- "last": the hidden state of the last real token; in a causal decoder it is the only position
  that has seen the whole text.

Batches are right-padded, so in a decoder the real tokens never attend to padding and the vector
of a text does not depend on what it is batched with (tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scratchllm.errors import ConfigError, DataError

POOLINGS = ("mean", "last")


@dataclass
class SentenceEmbedder:
    """A backbone with `features(idx, attention_mask=)` and `cfg.context_length`, its tokenizer."""

    model: nn.Module
    tokenizer: Any
    pooling: str = "mean"
    normalize: bool = True  # unit-length vectors, so dot product = cosine similarity

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ConfigError(f"pooling={self.pooling!r} must be one of {', '.join(POOLINGS)}")

    def _ids(self, text: str) -> list[int]:
        ids = self.tokenizer.encode_ordinary(text)[: self.model.cfg.context_length]
        if not ids:  # an empty text still needs one position: use the end-of-text token
            eot = getattr(self.tokenizer, "eot_id", None)
            ids = [eot if eot is not None else 0]
        return ids

    @torch.no_grad()
    def embed(self, texts: Sequence[str], batch_size: int = 32) -> Tensor:
        """Vectors [N, n_embd] (float32, on the CPU) for `texts`, in order."""
        if isinstance(texts, str):
            raise DataError("embed expects a list of texts, got one string")
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        out = []
        for start in range(0, len(texts), batch_size):
            ids = [self._ids(t) for t in texts[start : start + batch_size]]
            longest = max(len(x) for x in ids)
            idx = torch.zeros(len(ids), longest, dtype=torch.long)
            mask = torch.zeros(len(ids), longest, dtype=torch.long)
            for i, row in enumerate(ids):
                idx[i, : len(row)] = torch.tensor(row)
                mask[i, : len(row)] = 1
            idx, mask = idx.to(device), mask.to(device)
            hidden = self.model.features(idx, attention_mask=mask).float()  # [B, T, C]
            out.append(pool(hidden, mask, self.pooling).cpu())
        self.model.train(was_training)
        vectors = torch.cat(out) if out else torch.zeros(0, self.model.cfg.n_embd)
        return F.normalize(vectors, dim=-1) if self.normalize else vectors


def pool(hidden: Tensor, mask: Tensor, pooling: str) -> Tensor:
    """hidden [B, T, C], mask [B, T] (1 = real token, right-padded) -> [B, C]."""
    if pooling == "mean":
        m = mask.to(hidden.dtype)[..., None]  # [B, T, 1]
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
    if pooling == "last":
        last = mask.long().sum(1).clamp(min=1) - 1  # [B] index of the last real token
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    raise ConfigError(f"pooling={pooling!r} must be one of {', '.join(POOLINGS)}")


def load_embedder(
    run_dir: str | Path, *, pooling: str = "mean", device: str | torch.device = "cpu"
) -> SentenceEmbedder:
    """A `SentenceEmbedder` over a GPT or encoder run directory."""
    from scratchllm.interop.runs import load_any_run

    run = load_any_run(run_dir, device)
    if run.tokenizer is None:
        raise DataError(f"{run_dir}: the run has no tokenizer.json")
    return SentenceEmbedder(run.model, run.tokenizer, pooling)


def search(query: Tensor, corpus: Tensor, k: int = 5) -> list[tuple[int, float]]:
    """(row, cosine) of the k corpus vectors [N, C] most similar to query [C]."""
    sims = F.normalize(corpus, dim=-1) @ F.normalize(query, dim=-1)  # [N]
    top = torch.topk(sims, min(k, len(sims)))
    return [(int(i), float(s)) for s, i in zip(top.values, top.indices, strict=True)]
