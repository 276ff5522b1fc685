"""A GRU encoder-decoder with additive attention (Bahdanau, Cho & Bengio 2014).

The step before the Transformer: the decoder is still recurrent, but at every output step it
looks back at all encoder states through a learned soft alignment instead of squeezing the
source into one vector. The alignment weights are returned, so they can be drawn as a heatmap.

src [B, S] -> embedding -> bidirectional GRU -> annotations h [B, S, 2H]
step t: weights a_t = softmax_j(v^T tanh(W_s s_{t-1} + W_h h_j))   [B, S]
        context c_t = sum_j a_tj h_j                                  [B, 2H]
        s_t = GRUCell([emb(y_{t-1}); c_t], s_{t-1})
        logits_t = W_o [s_t; c_t; emb(y_{t-1})]                       [B, V]
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from scratchllm.errors import ConfigError
from scratchllm.lineage.tasks import BOS_ID, EOS_ID, PAD_ID


@dataclass
class RNNSeq2SeqConfig:
    src_vocab_size: int  # source token ids 0 .. src_vocab_size-1
    tgt_vocab_size: int  # target token ids 0 .. tgt_vocab_size-1
    emb_dim: int = 64  # token embedding width (source and target)
    enc_hidden: int = 64  # GRU state per direction in the encoder (annotations are 2x this)
    dec_hidden: int = 128  # decoder GRU state
    attn_dim: int = 64  # width of the additive attention's hidden layer
    dropout: float = 0.0  # on embeddings and the output layer's input

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "dropout":
                if not 0.0 <= value < 1.0:
                    raise ConfigError(f"dropout={value} must be in [0, 1)")
            elif not (isinstance(value, int) and value > 0):
                raise ConfigError(f"{f.name}={value!r} must be a positive integer")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RNNSeq2SeqConfig:
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"unknown RNNSeq2SeqConfig field(s): {', '.join(unknown)}")
        return cls(**d)


class AdditiveAttention(nn.Module):
    """score(s, h_j) = v^T tanh(W_s s + W_h h_j): a one-hidden-layer MLP scores each source."""

    def __init__(self, query_dim: int, key_dim: int, attn_dim: int) -> None:
        super().__init__()
        self.w_query = nn.Linear(query_dim, attn_dim, bias=False)
        self.w_key = nn.Linear(key_dim, attn_dim)
        self.v = nn.Linear(attn_dim, 1, bias=False)

    def project_keys(self, annotations: Tensor) -> Tensor:
        """W_h h_j [B, S, A]: independent of the decoder step, so computed once per source."""
        return self.w_key(annotations)

    def forward(
        self, query: Tensor, keys: Tensor, annotations: Tensor, mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        """(context [B, K], weights [B, S]) for query [B, Q], keys [B, S, A], mask [B, S]."""
        scores = self.v(torch.tanh(self.w_query(query)[:, None] + keys)).squeeze(-1)  # [B, S]
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=-1)  # [B, S]
        context = torch.bmm(weights[:, None], annotations).squeeze(1)  # [B, K]
        return context, weights


@dataclass
class RNNDecoded:
    tokens: Tensor  # [B, N] generated ids ([EOS] repeated once a row has finished)
    attention: Tensor  # [B, N, S] the alignment weights behind each generated token


@dataclass
class _Encoded:
    annotations: Tensor  # [B, S, 2H]
    keys: Tensor  # [B, S, A]
    mask: Tensor  # [B, S] bool
    state: Tensor  # [B, H_dec] initial decoder state


class RNNSeq2Seq(nn.Module):
    def __init__(self, cfg: RNNSeq2SeqConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.src_embed = nn.Embedding(cfg.src_vocab_size, cfg.emb_dim, padding_idx=PAD_ID)
        self.tgt_embed = nn.Embedding(cfg.tgt_vocab_size, cfg.emb_dim, padding_idx=PAD_ID)
        self.encoder = nn.GRU(cfg.emb_dim, cfg.enc_hidden, batch_first=True, bidirectional=True)
        self.init_state = nn.Linear(2 * cfg.enc_hidden, cfg.dec_hidden)
        self.attention = AdditiveAttention(cfg.dec_hidden, 2 * cfg.enc_hidden, cfg.attn_dim)
        self.cell = nn.GRUCell(cfg.emb_dim + 2 * cfg.enc_hidden, cfg.dec_hidden)
        self.out = nn.Linear(cfg.dec_hidden + 2 * cfg.enc_hidden + cfg.emb_dim, cfg.tgt_vocab_size)
        self.drop = nn.Dropout(cfg.dropout)

    def _encode(self, src: Tensor, src_mask: Tensor | None) -> _Encoded:
        mask = (src != PAD_ID) if src_mask is None else src_mask.bool()
        lengths = mask.sum(dim=1).clamp(min=1).cpu()
        x = self.drop(self.src_embed(src))  # [B, S, E]
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, h_n = self.encoder(packed)  # h_n: [2, B, H] (forward last, backward first)
        annotations, _ = pad_packed_sequence(out, batch_first=True, total_length=src.shape[1])
        state = torch.tanh(self.init_state(torch.cat([h_n[0], h_n[1]], dim=-1)))  # [B, H_dec]
        return _Encoded(annotations, self.attention.project_keys(annotations), mask, state)

    def _step(self, y_prev: Tensor, state: Tensor, enc: _Encoded) -> tuple[Tensor, Tensor, Tensor]:
        """One decoder step: (logits [B, V], new state [B, H_dec], weights [B, S])."""
        emb = self.drop(self.tgt_embed(y_prev))  # [B, E]
        context, weights = self.attention(state, enc.keys, enc.annotations, enc.mask)
        state = self.cell(torch.cat([emb, context], dim=-1), state)
        logits = self.out(self.drop(torch.cat([state, context, emb], dim=-1)))
        return logits, state, weights

    def forward(self, src: Tensor, tgt_in: Tensor, *, src_mask: Tensor | None = None) -> Tensor:
        """Teacher forcing: logits [B, T, V] for target inputs tgt_in [B, T] ([BOS] first)."""
        enc = self._encode(src, src_mask)
        state, logits = enc.state, []
        for t in range(tgt_in.shape[1]):
            step_logits, state, _ = self._step(tgt_in[:, t], state, enc)
            logits.append(step_logits)
        return torch.stack(logits, dim=1)

    @torch.no_grad()
    def generate(self, src: Tensor, src_mask: Tensor | None, max_new_tokens: int) -> RNNDecoded:
        """Greedy decoding from [BOS], with the attention weights of every step."""
        enc = self._encode(src, src_mask)
        y = torch.full((src.shape[0],), BOS_ID, dtype=torch.long, device=src.device)
        done = torch.zeros_like(y, dtype=torch.bool)
        state, tokens, weights = enc.state, [], []
        for _ in range(max_new_tokens):
            logits, state, w = self._step(y, state, enc)
            y = torch.where(done, torch.full_like(y, EOS_ID), logits.argmax(dim=-1))
            tokens.append(y)
            weights.append(w)
            done |= y == EOS_ID
            if bool(done.all()):
                break
        return RNNDecoded(torch.stack(tokens, dim=1), torch.stack(weights, dim=1))

    def greedy_decode(self, src: Tensor, src_mask: Tensor, max_new_tokens: int) -> Tensor:
        """Greedy ids [B, N]; what `tasks.exact_match` calls."""
        return self.generate(src, src_mask, max_new_tokens).tokens


def save_attention_heatmap(
    weights: Tensor | np.ndarray,
    src_labels: list[str],
    tgt_labels: list[str],
    path: str | Path,
    *,
    size: tuple[int, int] = (640, 480),
    dpi: int = 100,
    title: str | None = None,
) -> Path:
    """Draw weights [N_tgt, S] (rows: output tokens, columns: source tokens) as a PNG of
    exactly `size` pixels (width, height); returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    w = weights.detach().cpu().numpy() if isinstance(weights, Tensor) else np.asarray(weights)
    if w.ndim != 2 or w.shape != (len(tgt_labels), len(src_labels)):
        raise ValueError(
            f"weights shape {w.shape} must be [len(tgt_labels), len(src_labels)] = "
            f"{(len(tgt_labels), len(src_labels))}"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(size[0] / dpi, size[1] / dpi), dpi=dpi)
    try:
        image = ax.imshow(w, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
        ax.set_xticks(range(len(src_labels)), src_labels, rotation=45, ha="right")
        ax.set_yticks(range(len(tgt_labels)), tgt_labels)
        ax.set_xlabel("source")
        ax.set_ylabel("output")
        if title:
            ax.set_title(title)
        fig.colorbar(image, ax=ax)
        fig.tight_layout()
        fig.savefig(path, dpi=dpi)  # no bbox_inches="tight": the pixel size stays exact
    finally:
        plt.close(fig)
    return path
