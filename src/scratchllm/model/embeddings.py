"""Token, position and segment embeddings, and rotary position helpers.

Position schemes (chosen by `ModelConfig.pos_emb`):
- "learned": a trainable table of `context_length` vectors added to the token vectors (GPT-2, BERT).
- "sinusoidal": fixed sines/cosines of geometric frequencies added to the token vectors
  (Vaswani et al. 2017); nothing to train.
- "rope": nothing is added; queries and keys are rotated by position-dependent angles inside
  attention (Su et al. 2021), see `rope_cos_sin` and `apply_rotary_emb`.
Every position-dependent table is computed from `positions` on their device, never cached in
`__init__`, so a model moves between devices with nothing to rebuild.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from scratchllm.model.config import ModelConfig
from scratchllm.model.losses import TiedGradLink, linked_embedding
from scratchllm.model.norms import make_norm


def sinusoidal_table(positions: Tensor, dim: int) -> Tensor:
    """Fixed position vectors [..., dim] for positions [...]: sin/cos pairs (Vaswani et al.)."""
    half = torch.arange(0, dim, 2, device=positions.device, dtype=torch.float32)
    inv_freq = torch.exp(-math.log(10000.0) * half / dim)  # [dim/2]
    angles = positions.float()[..., None] * inv_freq  # [..., dim/2]
    # Interleave: feature 2i is sin(angle_i), feature 2i+1 is cos(angle_i).
    return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(-2)  # [..., dim]


def rope_cos_sin(
    positions: Tensor, head_dim: int, theta: float, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """cos and sin of the rotary angles, halves duplicated (rotate-half layout).

    positions [T] -> [T, head_dim] (shared by the batch); positions [B, T] -> [B, 1, T, head_dim]
    (per row, broadcast over heads).
    """
    exponents = torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32)
    inv_freq = 1.0 / (theta ** (exponents / head_dim))  # [head_dim/2]
    angles = positions.float()[..., None] * inv_freq  # [..., T, head_dim/2]
    angles = torch.cat([angles, angles], dim=-1)  # [..., T, head_dim]
    if angles.dim() == 3:
        angles = angles[:, None]  # [B, 1, T, head_dim]
    return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate_half(x: Tensor) -> Tensor:
    """(x1, x2) -> (-x2, x1) over the two halves of the last dimension."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rotary_emb(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate x [B, H, T, D] by the angles whose cos/sin are [T, D] or [B, 1, T, D].

    Feature i is paired with feature i + D/2 (the layout used by Hugging Face Llama checkpoints,
    so converted weights need no permutation).
    """
    return x * cos + rotate_half(x) * sin


class LearnedPositionalEmbedding(nn.Embedding):
    """A trainable vector per absolute position: positions [...] -> [..., n_embd]."""


class SinusoidalPositionalEmbedding(nn.Module):
    """Fixed sinusoidal vectors: positions [...] -> [..., n_embd]; no parameters."""

    def __init__(self, n_embd: int) -> None:
        super().__init__()
        self.n_embd = n_embd

    def forward(self, positions: Tensor) -> Tensor:
        return sinusoidal_table(positions, self.n_embd)


class Embeddings(nn.Module):
    """Token (+ absolute position) (+ segment) embeddings, optional norm, then dropout.

    The norm is used by BERT-style (post-norm) encoders, which normalise the summed embeddings.
    """

    def __init__(self, cfg: ModelConfig, *, norm: bool = False) -> None:
        super().__init__()
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe: nn.Module | None = None
        if cfg.pos_emb == "learned":
            self.wpe = LearnedPositionalEmbedding(cfg.context_length, cfg.n_embd)
        elif cfg.pos_emb == "sinusoidal":
            self.wpe = SinusoidalPositionalEmbedding(cfg.n_embd)
        self.wtt = nn.Embedding(cfg.type_vocab_size, cfg.n_embd) if cfg.type_vocab_size else None
        self.norm = make_norm(cfg) if norm else None
        self.drop = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()  # see Block

    def forward(
        self,
        idx: Tensor,
        positions: Tensor,
        token_type_ids: Tensor | None = None,
        *,
        tied_grad_link: TiedGradLink | None = None,
    ) -> Tensor:
        # idx: [B, T] token ids; positions: [T] (shared) or [B, T] (per row) absolute positions
        # tied_grad_link: from GPTModel when its head shares wte (model.losses.TiedGradLink)
        if tied_grad_link is None:
            x = self.wte(idx)  # [B, T, C]
        else:
            x = linked_embedding(self.wte.weight, idx, tied_grad_link)  # [B, T, C]
        if self.wpe is not None:
            x = x + self.wpe(positions).to(x.dtype)  # [T, C] or [B, T, C], broadcast to [B, T, C]
        if self.wtt is not None:
            types = torch.zeros_like(idx) if token_type_ids is None else token_type_ids
            x = x + self.wtt(types)
        elif token_type_ids is not None:
            raise ValueError("token_type_ids given but the config has type_vocab_size=0")
        if self.norm is not None:
            x = self.norm(x)
        return self.drop(x)  # [B, T, C]
