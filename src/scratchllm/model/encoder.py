"""`EncoderModel`: a BERT-like bidirectional encoder.

idx [B, T] (+ token_type_ids) -> embeddings (+ norm) [B, T, C]
-> n_layer x TransformerBlock (bidirectional, post-norm for BERT) -> hidden [B, T, C]
hidden -> mlm_head -> [B, T, vocab_size];  hidden -> pooler -> [B, C]
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from scratchllm.model.attention import attention_bias
from scratchllm.model.blocks import TransformerBlock, run_block
from scratchllm.model.config import ModelConfig
from scratchllm.model.embeddings import Embeddings, rope_cos_sin
from scratchllm.model.gpt import check_input, init_weights, keep_mask
from scratchllm.model.heads import MLMHead, Pooler
from scratchllm.model.norms import make_norm
from scratchllm.model.params import adamw_param_groups, count_parameters


def check_token_types(cfg: ModelConfig, idx: Tensor, token_type_ids: Tensor) -> None:
    """Clear errors for segment ids [B, T] (the value check skipped when compiling)."""
    if token_type_ids.shape != idx.shape:
        raise ValueError(
            f"token_type_ids shape {tuple(token_type_ids.shape)} != idx shape {tuple(idx.shape)}"
        )
    if cfg.type_vocab_size == 0 or torch.compiler.is_compiling():
        return  # no segment table: `Embeddings` refuses token_type_ids with its own message
    lo, hi = int(token_type_ids.min()), int(token_type_ids.max())
    if lo < 0 or hi >= cfg.type_vocab_size:
        bad = lo if lo < 0 else hi
        raise ValueError(f"token type {bad} outside 0..{cfg.type_vocab_size - 1}")


class EncoderModel(nn.Module):
    # recompute each block's activations in backward instead of storing them (`run_block`)
    activation_checkpointing: bool = False

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        post = cfg.norm_position == "post"
        # BERT normalises the summed embeddings; a pre-norm stack normalises at the end instead.
        self.embed = Embeddings(cfg, norm=post)
        self.blocks = nn.ModuleList(
            TransformerBlock(cfg, i, causal=False) for i in range(cfg.n_layer)
        )
        self.norm_f = nn.Identity() if post else make_norm(cfg)
        self.mlm_head = MLMHead(cfg)
        self.pooler = Pooler(cfg)
        init_weights(self, cfg)
        if cfg.tie_embeddings:
            self.mlm_head.decoder.weight = self.embed.wte.weight

    def forward(
        self,
        idx: Tensor,
        *,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
    ) -> Tensor:
        """Hidden states idx [B, T] -> [B, T, n_embd].

        attention_mask: [B, T] (1 = real token, 0 = padding) or per query/key pair
        [B, 1, T, T] (1/True = may attend), as in `GPTModel.features`.
        """
        check_input(self.cfg, idx, 0, attention_mask)
        if token_type_ids is not None:
            check_token_types(self.cfg, idx, token_type_ids)
        positions = torch.arange(idx.shape[1], device=idx.device)  # [T]
        x = self.embed(idx, positions, token_type_ids)  # [B, T, C]
        rope = None
        if self.cfg.pos_emb == "rope":
            rope = rope_cos_sin(positions, self.cfg.head_dim, self.cfg.rope_theta, x.dtype)
        mask = None  # built once here rather than in every layer
        if attention_mask is not None:
            t = idx.shape[1]
            mask = attention_bias(  # [B, 1, 1 or T, T] additive bias
                t,
                t,
                causal=False,
                padding_mask=keep_mask(attention_mask),
                dtype=x.dtype,
                device=x.device,
            )
        for block in self.blocks:  # [B, T, C] -> [B, T, C]
            x = run_block(
                block, x, recompute=self.activation_checkpointing, attention_mask=mask, rope=rope
            )
        return self.norm_f(x)  # [B, T, C]

    def features(self, idx: Tensor, *, attention_mask: Tensor | None = None) -> Tensor:
        """Same as forward; the name classification heads call on any backbone."""
        return self(idx, attention_mask=attention_mask)

    def mlm_logits(self, hidden: Tensor) -> Tensor:
        """Masked-LM logits from hidden states: [B, T, C] -> [B, T, vocab_size]."""
        return self.mlm_head(hidden)

    def pooled(self, hidden: Tensor) -> Tensor:
        """Pooled (first-token) summary for classification: [B, T, C] -> [B, C]."""
        return self.pooler(hidden)

    def num_parameters(self, non_embedding: bool = False) -> int:
        return count_parameters(self, non_embedding=non_embedding)

    def param_groups(self, weight_decay: float, decay_on: str = "matmul") -> list[dict]:
        """AdamW groups [decay, no decay]; by default decay on matmul weights only."""
        return adamw_param_groups(self, weight_decay, decay_on)
