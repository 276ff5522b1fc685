"""`GPTModel`: a decoder-only language model (GPT-2, or Llama-style, chosen by the config).

idx [B, T] -> embeddings [B, T, C] -> n_layer x TransformerBlock -> final norm -> features
features [B, T, C] -> lm_head -> logits [B, T, vocab_size]
(or, given targets, features -> fused head + cross-entropy -> loss, without the logits)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scratchllm.model import losses
from scratchllm.model.attention import attention_bias
from scratchllm.model.blocks import TransformerBlock, run_block
from scratchllm.model.config import ModelConfig
from scratchllm.model.embeddings import Embeddings, rope_cos_sin
from scratchllm.model.kv_cache import KVCache
from scratchllm.model.losses import (
    TiedGradLink,
    fused_supported,
    linear_cross_entropy,
    logits_cross_entropy,
)
from scratchllm.model.norms import RMSNorm, make_norm
from scratchllm.model.params import adamw_param_groups, count_parameters

# Parameters at the end of a residual branch; GPT-2 scales their init by 1/sqrt(2 * n_layer) so
# the residual stream's variance does not grow with depth (Radford et al. 2019, section 2.3).
RESIDUAL_PROJECTIONS = ("out_proj.weight", "down_proj.weight")


def init_weights(model: nn.Module, cfg: ModelConfig) -> None:
    """Initialise every parameter by the scheme `cfg.init` names.

    "gpt2" (GPT-2 / BERT): N(0, init_std) matrices and tables, zero biases, unit norms, and
    residual projections scaled down by 1/sqrt(2 * n_layer).
    "pytorch": every module's `reset_parameters()` (nn.Embedding N(0, 1), nn.Linear
    Kaiming-uniform), the init a model written with plain torch.nn modules gets.
    """
    if cfg.init == "pytorch":
        for module in model.modules():
            if isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)
            elif hasattr(module, "reset_parameters"):
                module.reset_parameters()
        return
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=cfg.init_std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=cfg.init_std)
        elif isinstance(module, nn.LayerNorm):
            module.reset_parameters()  # weight 1, bias 0
        elif isinstance(module, RMSNorm):
            nn.init.ones_(module.weight)
    for name, p in model.named_parameters():
        if name.endswith(RESIDUAL_PROJECTIONS):
            nn.init.normal_(p, mean=0.0, std=cfg.init_std / math.sqrt(2 * cfg.n_layer))


def check_input(
    cfg: ModelConfig,
    idx: Tensor,
    start: int,
    attention_mask: Tensor | None,
    position_ids: Tensor | None = None,
) -> None:
    """Clear errors for ids [B, T] the model cannot take (value checks skipped when compiling)."""
    if idx.dim() != 2:
        raise ValueError(f"idx must have shape [batch, time], got {tuple(idx.shape)}")
    if idx.dtype not in (torch.long, torch.int, torch.int16, torch.uint8):
        raise ValueError(f"idx must hold integer token ids, got dtype {idx.dtype}")
    t = idx.shape[1]
    if t == 0:
        raise ValueError("idx has no positions (T=0)")
    if start + t > cfg.context_length:
        cached = f" (cached {start} + new {t})" if start else ""
        raise ValueError(
            f"sequence length {start + t}{cached} exceeds context_length {cfg.context_length}"
        )
    pair_mask = (idx.shape[0], 1, t, start + t)  # per query/key pair, e.g. packed documents
    if attention_mask is not None and tuple(attention_mask.shape) not in (
        (idx.shape[0], start + t),
        pair_mask,
    ):
        keys, queries = ("cached + new", "new") if start else ("T", "T")
        raise ValueError(
            f"attention_mask shape {tuple(attention_mask.shape)} must be "
            f"[batch, {keys}] = {(idx.shape[0], start + t)} or [batch, 1, {queries}, "
            f"{keys}] = {pair_mask}"
        )
    if position_ids is not None and tuple(position_ids.shape) not in ((t,), tuple(idx.shape)):
        raise ValueError(
            f"position_ids shape {tuple(position_ids.shape)} must be [T] or [batch, T] "
            f"= {tuple(idx.shape)}"
        )
    if torch.compiler.is_compiling():
        return
    lo, hi = int(idx.min()), int(idx.max())
    if lo < 0 or hi >= cfg.vocab_size:
        bad = lo if lo < 0 else hi
        raise ValueError(f"token id {bad} outside the vocabulary 0..{cfg.vocab_size - 1}")
    if attention_mask is not None and attention_mask.is_floating_point():
        odd = attention_mask[(attention_mask != 0) & (attention_mask != 1)]  # e.g. an additive bias
        if odd.numel():
            raise ValueError(
                f"attention_mask holds {odd[0].item()}: expected 1 (may attend) or 0 (masked)"
            )
    if position_ids is not None:
        lo, hi = int(position_ids.min()), int(position_ids.max())
        if lo < 0 or hi >= cfg.context_length:
            bad = lo if lo < 0 else hi
            raise ValueError(f"position {bad} outside 0..{cfg.context_length - 1}")


def keep_mask(attention_mask: Tensor | None) -> Tensor | None:
    """A model's attention_mask (1 = may attend, 0 = masked, in bool, integer or float; see
    `check_input`) in a form the attention functions read the same way: for them a float mask
    is an additive bias, so a float keep-mask becomes bool."""
    if attention_mask is not None and attention_mask.is_floating_point():
        return attention_mask != 0
    return attention_mask


HEAD_ROW_MULTIPLE = 64  # the output head's matmul runs on rows padded to this (see GPTModel.head)


class GPTModel(nn.Module):
    # `head` pads the output matmul: None = on CUDA while gradients are on (training);
    # True / False = always / never (the tests compare both on CPU)
    pad_head: bool | None = None
    # recompute each block's activations in backward instead of storing them (`run_block`)
    activation_checkpointing: bool = False

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = Embeddings(cfg)
        self.blocks = nn.ModuleList(TransformerBlock(cfg, i) for i in range(cfg.n_layer))
        # A post-norm block already ends with a norm; a pre-norm stack needs a final one.
        self.norm_f = make_norm(cfg) if cfg.norm_position == "pre" else nn.Identity()
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        init_weights(self, cfg)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.wte.weight  # one tensor, two uses

    def features(
        self,
        idx: Tensor,
        *,
        attention_mask: Tensor | None = None,
        kv_cache: KVCache | None = None,
        position_ids: Tensor | None = None,
        tied_grad_link: TiedGradLink | None = None,
    ) -> Tensor:
        """Hidden states after the final norm: idx [B, T] -> [B, T, n_embd].

        attention_mask [B, cached + T]: 1 for real tokens, 0 for padding keys; or per query/key
        pair, [B, 1, T, cached + T]: 1/True where a query may attend (e.g. packed documents).
        With a kv_cache, idx holds only the new tokens; their positions start at its length.
        position_ids [T] or [B, T] overrides those positions, e.g. to count from each row's first
        real token in a left-padded batch. tied_grad_link: internal, see `forward`.
        """
        start = 0 if kv_cache is None else kv_cache.length
        check_input(self.cfg, idx, start, attention_mask, position_ids)
        if kv_cache is not None:
            kv_cache.check_room(idx.shape[1], idx.shape[0])
        positions = position_ids  # [T] or [B, T]
        if positions is None:
            positions = torch.arange(start, start + idx.shape[1], device=idx.device)  # [T]
        x = self.embed(idx, positions, tied_grad_link=tied_grad_link)  # [B, T, C]
        rope = None
        if self.cfg.pos_emb == "rope":
            rope = rope_cos_sin(positions, self.cfg.head_dim, self.cfg.rope_theta, x.dtype)
        mask = None  # built once here rather than in every layer
        if attention_mask is not None:
            t = idx.shape[1]
            mask = attention_bias(  # [B|1, 1, T, cached + T] additive bias
                t,
                start + t,
                causal=True,
                padding_mask=keep_mask(attention_mask),
                dtype=x.dtype,
                device=x.device,
            )
        for block in self.blocks:  # [B, T, C] -> [B, T, C]
            x = run_block(
                block,
                x,
                recompute=self.activation_checkpointing,
                attention_mask=mask,
                kv_cache=kv_cache,
                rope=rope,
            )
        if kv_cache is not None:
            kv_cache.advance(idx.shape[1])
        return self.norm_f(x)  # [B, T, C]

    def forward(
        self,
        idx: Tensor,
        *,
        attention_mask: Tensor | None = None,
        kv_cache: KVCache | None = None,
        position_ids: Tensor | None = None,
        targets: Tensor | None = None,
    ) -> Tensor:
        """Next-token logits: idx [B, T] -> [B, T, vocab_size] (arguments as in `features`).

        With targets [B, T] (the next token at each position, -100 where nothing counts) it
        returns their mean cross-entropy instead: a scalar, computed without keeping the logits
        (`model.losses.linear_cross_entropy`, fused on CPU).
        """
        fused_head = targets is not None and type(self.lm_head) is nn.Linear  # not wrapped (LoRA)
        link = TiedGradLink() if fused_head and self._links_tied_grads() else None
        hidden = self.features(
            idx,
            attention_mask=attention_mask,
            kv_cache=kv_cache,
            position_ids=position_ids,
            tied_grad_link=link,
        )
        if targets is None:
            return self.head(hidden)  # [B, T, V]
        if fused_head:
            return linear_cross_entropy(hidden, self.lm_head.weight, targets, link=link)
        return logits_cross_entropy(self.head(hidden), targets)

    def head(self, hidden: Tensor) -> Tensor:
        """Logits from features: hidden [B, T, C] -> [B, T, vocab_size].

        GPT-2's 50,257 rows make an odd-sized matmul that tensor cores run slowly. On CUDA while
        training, the head's rows are padded with zeros to a multiple of HEAD_ROW_MULTIPLE and
        the extra logits cut off: the same numbers. For gpt2-small on an H200 that was +15.5%
        training throughput with the loss computed eagerly, and no change with the loss compiled
        into the model (docs/benchmarks.md). Nothing is stored padded: checkpoints are unchanged.
        """
        on = self.pad_head
        if on is None:
            on = hidden.is_cuda and torch.is_grad_enabled()
        plain = type(self.lm_head) is nn.Linear and self.lm_head.bias is None  # not LoRA, int8
        pad = -self.cfg.vocab_size % HEAD_ROW_MULTIPLE
        if not (on and plain and pad):
            return self.lm_head(hidden)
        weight = self.lm_head.weight  # [V, C]
        padded = F.pad(weight, (0, 0, 0, pad))  # [V + pad, C], zero rows
        return F.linear(hidden, padded)[..., : weight.shape[0]]  # [B, T, V], a view

    def _links_tied_grads(self) -> bool:
        """Whether the fused loss hands the tied table's gradient to the token lookup
        (`model.losses.TiedGradLink`): a shared plain table, the fused CPU path, eager mode."""
        weight = self.lm_head.weight
        return (
            weight is self.embed.wte.weight
            and type(self.embed.wte) is nn.Embedding
            and weight.requires_grad
            and torch.is_grad_enabled()
            and fused_supported(weight, weight)
            and not torch.compiler.is_compiling()
            and losses.REUSE_MEMORY
        )

    def num_parameters(self, non_embedding: bool = False) -> int:
        return count_parameters(self, non_embedding=non_embedding)

    def param_groups(self, weight_decay: float, decay_on: str = "matmul") -> list[dict]:
        """AdamW groups [decay, no decay]; by default decay on matmul weights only."""
        return adamw_param_groups(self, weight_decay, decay_on)
