"""Heads that sit on a backbone's hidden states [B, T, C]."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scratchllm.model.config import ModelConfig
from scratchllm.model.norms import make_norm


class MLMHead(nn.Module):
    """Masked-LM head (BERT): dense, GELU, norm, then a decoder to the vocabulary.

    hidden [B, T, C] -> logits [B, T, vocab_size]. The decoder matrix is usually tied to the
    token embeddings by the owning model; the bias is its own.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.approximate = cfg.gelu_approximate
        self.norm = make_norm(cfg)
        self.decoder = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))

    def forward(self, hidden: Tensor) -> Tensor:
        h = self.norm(F.gelu(self.dense(hidden), approximate=self.approximate))  # [B, T, C]
        return self.decoder(h) + self.bias  # [B, T, vocab_size]


class Pooler(nn.Module):
    """BERT's pooled output: tanh(dense(hidden of the first token)): [B, T, C] -> [B, C]."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.n_embd, cfg.n_embd)

    def forward(self, hidden: Tensor) -> Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))


def last_token(hidden: Tensor, attention_mask: Tensor | None = None) -> Tensor:
    """Hidden state of each row's last real token: [B, T, C] -> [B, C] (right padding).

    Under a causal mask that token is the one that has seen the whole text, so classifiers on a
    decoder use it (`finetune.classify.TextClassifier`, as in GPT fine-tuning).
    """
    if attention_mask is None:
        return hidden[:, -1]
    last = attention_mask.long().sum(dim=1) - 1  # [B] index of the last 1 (right-padded rows)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last.clamp(min=0)]
