"""The encoder-decoder Transformer (Vaswani et al. 2017), built from this package's own parts.

src [B, S] -> embeddings -> n_enc_layer x TransformerBlock (bidirectional) -> memory [B, S, C]
tgt [B, T] -> embeddings -> n_dec_layer x DecoderBlock(memory) -> norm -> logits [B, T, V_tgt]

The encoder is literally the GPT's `TransformerBlock` with `causal=False`. A decoder layer has
three sublayers (causal self-attention, cross-attention to the memory, MLP) where
`TransformerBlock` has two, so `DecoderBlock` composes the same pieces (`make_attention`,
`make_mlp`, `make_norm`) around one new class, `CrossAttention`, which goes through the shared
`attend` like every other attention variant.

Decoding keeps its state outside the model in a `DecoderCache`: a `KVCache` for the decoder's
self-attention and, per layer, the cross-attention keys/values of the memory, computed once per
source instead of once per generated token. Cached decoding equals uncached decoding (tested).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import Tensor, nn

from scratchllm.errors import ConfigError
from scratchllm.generation.sampling import SamplingConfig, sample_next_token
from scratchllm.lineage.tasks import BOS_ID, EOS_ID
from scratchllm.model.attention import Rope, attend, make_attention, merge_heads, split_heads
from scratchllm.model.blocks import TransformerBlock, make_mlp
from scratchllm.model.config import ModelConfig
from scratchllm.model.embeddings import Embeddings, rope_cos_sin
from scratchllm.model.gpt import check_input, init_weights, keep_mask
from scratchllm.model.kv_cache import KVCache
from scratchllm.model.norms import make_norm

MemoryKV = tuple[Tensor, Tensor]  # cross-attention keys and values, each [B, H, S, D]


@dataclass
class Seq2SeqConfig:
    src_vocab_size: int  # source token ids 0 .. src_vocab_size-1
    tgt_vocab_size: int  # target token ids 0 .. tgt_vocab_size-1
    max_src_len: int = 64  # encoder positions
    max_tgt_len: int = 64  # decoder positions, [BOS] included
    n_embd: int = 64  # width of encoder and decoder
    n_head: int = 4  # attention heads (self and cross)
    n_enc_layer: int = 2  # encoder blocks
    n_dec_layer: int = 2  # decoder blocks
    dropout: float = 0.0  # on embeddings, attention weights and residual branches
    pos_emb: str = "learned"  # "learned" | "sinusoidal" | "rope" (self-attention only)
    norm_position: str = "pre"  # "pre" (GPT-2 style) | "post" (the 2017 paper)
    attn_impl: str = "sdpa"  # "sdpa" | "math", as in ModelConfig
    tie_embeddings: bool = True  # output head shares the decoder's token embedding matrix
    # "gpt2": N(0, 0.02) weights, scaled residual projections; "pytorch": each torch.nn module's
    # own default init (N(0, 1) embeddings, Kaiming-uniform linears), as in ModelConfig.init
    init: str = "gpt2"

    def __post_init__(self) -> None:
        self.encoder_config()  # ModelConfig validates every shared field and names it
        self.decoder_config()

    def _model_config(self, vocab_size: int, context_length: int, n_layer: int) -> ModelConfig:
        return ModelConfig(
            vocab_size=vocab_size,
            context_length=context_length,
            n_embd=self.n_embd,
            n_layer=n_layer,
            n_head=self.n_head,
            dropout=self.dropout,
            pos_emb=self.pos_emb,
            norm_position=self.norm_position,
            attn_impl=self.attn_impl,
            tie_embeddings=self.tie_embeddings,
            init=self.init,
        )

    def encoder_config(self) -> ModelConfig:
        return self._model_config(self.src_vocab_size, self.max_src_len, self.n_enc_layer)

    def decoder_config(self) -> ModelConfig:
        return self._model_config(self.tgt_vocab_size, self.max_tgt_len, self.n_dec_layer)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Seq2SeqConfig:
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"unknown Seq2SeqConfig field(s): {', '.join(unknown)}")
        return cls(**d)


class CrossAttention(nn.Module):
    """Queries from the decoder, keys and values from the encoder's memory (no causal mask)."""

    def __init__(
        self, n_embd: int, n_head: int, *, dropout: float = 0.0, bias: bool = True, impl: str
    ) -> None:
        super().__init__()
        self.n_head, self.dropout, self.impl = n_head, dropout, impl
        self.q_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.kv_proj = nn.Linear(n_embd, 2 * n_embd, bias=bias)
        self.out_proj = nn.Linear(n_embd, n_embd, bias=bias)

    def memory_kv(self, memory: Tensor) -> MemoryKV:
        """Keys and values of the memory [B, S, C] -> 2 x [B, H, S, D]; what a cache stores."""
        k, v = self.kv_proj(memory).chunk(2, dim=-1)
        return split_heads(k, self.n_head), split_heads(v, self.n_head)

    def forward(self, x: Tensor, memory_kv: MemoryKV, *, memory_mask: Tensor | None) -> Tensor:
        # x: [B, T, C]; memory_mask: [B, S], 1 for real source tokens
        q = split_heads(self.q_proj(x), self.n_head)  # [B, H, T, D]
        k, v = memory_kv
        out = attend(
            q,
            k,
            v,
            causal=False,
            padding_mask=memory_mask,
            dropout_p=self.dropout if self.training else 0.0,
            impl=self.impl,
        )  # [B, H, T, D]
        return self.out_proj(merge_heads(out))  # [B, T, C]


class DecoderBlock(nn.Module):
    """Causal self-attention, cross-attention, MLP; each with a residual and a norm (pre or post)."""

    def __init__(self, cfg: ModelConfig, layer_idx: int) -> None:
        super().__init__()
        self.pre_norm = cfg.norm_position == "pre"
        self.self_attn = make_attention(cfg, layer_idx, causal=True)
        self.cross_attn = CrossAttention(
            cfg.n_embd, cfg.n_head, dropout=cfg.dropout, bias=cfg.bias, impl=cfg.attn_impl
        )
        self.mlp = make_mlp(cfg)
        self.norm1, self.norm_cross, self.norm2 = make_norm(cfg), make_norm(cfg), make_norm(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(
        self,
        x: Tensor,
        memory_kv: MemoryKV,
        *,
        memory_mask: Tensor | None,
        kv_cache: KVCache | None = None,
        rope: Rope | None = None,
    ) -> Tensor:
        # x: [B, T, C] -> [B, T, C]
        def self_attn(h: Tensor) -> Tensor:
            return self.self_attn(h, kv_cache=kv_cache, rope=rope)

        def cross(h: Tensor) -> Tensor:
            return self.cross_attn(h, memory_kv, memory_mask=memory_mask)

        if self.pre_norm:
            x = x + self.drop(self_attn(self.norm1(x)))
            x = x + self.drop(cross(self.norm_cross(x)))
            return x + self.drop(self.mlp(self.norm2(x)))
        x = self.norm1(x + self.drop(self_attn(x)))
        x = self.norm_cross(x + self.drop(cross(x)))
        return self.norm2(x + self.drop(self.mlp(x)))


@dataclass
class DecoderCache:
    """Decoding state for one batch of sources: self-attention KV cache + memory keys/values."""

    self_kv: KVCache
    cross_kv: list[MemoryKV]  # one (k, v) per decoder layer
    memory_mask: Tensor | None  # [B, S]


@dataclass
class Decoded:
    tokens: Tensor  # [B, N] generated ids ([EOS] repeated once a row has finished)
    logits: Tensor  # [B, N, V] the logits each token was chosen from


class Seq2SeqTransformer(nn.Module):
    def __init__(self, cfg: Seq2SeqConfig) -> None:
        super().__init__()
        self.cfg = cfg
        enc, dec = cfg.encoder_config(), cfg.decoder_config()
        self.enc_cfg, self.dec_cfg = enc, dec
        post = cfg.norm_position == "post"
        self.src_embed = Embeddings(enc, norm=post)
        self.encoder = nn.ModuleList(
            TransformerBlock(enc, i, causal=False) for i in range(enc.n_layer)
        )
        self.enc_norm = nn.Identity() if post else make_norm(enc)
        self.tgt_embed = Embeddings(dec, norm=post)
        self.decoder = nn.ModuleList(DecoderBlock(dec, i) for i in range(dec.n_layer))
        self.dec_norm = nn.Identity() if post else make_norm(dec)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.tgt_vocab_size, bias=False)
        init_weights(self, dec)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.tgt_embed.wte.weight

    def _rope(self, positions: Tensor, cfg: ModelConfig, x: Tensor) -> Rope | None:
        if cfg.pos_emb != "rope":
            return None
        return rope_cos_sin(positions, cfg.head_dim, cfg.rope_theta, x.dtype)

    def encode(self, src: Tensor, *, src_mask: Tensor | None = None) -> Tensor:
        """Memory: src [B, S] -> [B, S, C]; src_mask [B, S] 0 = padding."""
        check_input(self.enc_cfg, src, 0, src_mask)
        src_mask = keep_mask(src_mask)  # a float 0/1 mask as bool (a float mask is a bias there)
        positions = torch.arange(src.shape[1], device=src.device)  # [S]
        x = self.src_embed(src, positions)  # [B, S, C]
        rope = self._rope(positions, self.enc_cfg, x)
        for block in self.encoder:
            x = block(x, attention_mask=src_mask, rope=rope)
        return self.enc_norm(x)

    def memory_kv(self, memory: Tensor) -> list[MemoryKV]:
        return [block.cross_attn.memory_kv(memory) for block in self.decoder]

    def new_cache(
        self, memory: Tensor, memory_mask: Tensor | None, max_len: int | None = None
    ) -> DecoderCache:
        """An empty decoder cache for `memory` [B, S, C] (max_len defaults to max_tgt_len)."""
        kv = KVCache.for_config(
            self.dec_cfg, memory.shape[0], max_len, device=memory.device, dtype=memory.dtype
        )
        return DecoderCache(kv, self.memory_kv(memory), memory_mask)

    def decode(
        self,
        tgt: Tensor,
        *,
        memory: Tensor | None = None,
        memory_mask: Tensor | None = None,
        cache: DecoderCache | None = None,
    ) -> Tensor:
        """Logits [B, T, V] for target ids [B, T]: give `memory` (uncached) or a `cache`.

        With a cache, tgt holds only the new tokens; their positions start at the cache length.
        """
        if (memory is None) == (cache is None):
            raise ValueError("decode needs exactly one of memory= and cache=")
        start = 0 if cache is None else cache.self_kv.length
        check_input(self.dec_cfg, tgt, start, None)
        if cache is not None:
            cache.self_kv.check_room(tgt.shape[1], tgt.shape[0])
            cross_kv, memory_mask = cache.cross_kv, cache.memory_mask
        else:
            cross_kv = self.memory_kv(memory)
        positions = torch.arange(start, start + tgt.shape[1], device=tgt.device)  # [T]
        memory_mask = keep_mask(memory_mask)  # [B, S], 1 = real source token
        x = self.tgt_embed(tgt, positions)  # [B, T, C]
        rope = self._rope(positions, self.dec_cfg, x)
        kv_cache = None if cache is None else cache.self_kv
        for block, mem_kv in zip(self.decoder, cross_kv, strict=True):
            x = block(x, mem_kv, memory_mask=memory_mask, kv_cache=kv_cache, rope=rope)
        if cache is not None:
            cache.self_kv.advance(tgt.shape[1])
        return self.lm_head(self.dec_norm(x))  # [B, T, V]

    def forward(self, src: Tensor, tgt_in: Tensor, *, src_mask: Tensor | None = None) -> Tensor:
        """Teacher forcing: logits [B, T, V] for every target position at once."""
        memory = self.encode(src, src_mask=src_mask)
        return self.decode(tgt_in, memory=memory, memory_mask=src_mask)

    @torch.no_grad()
    def generate(
        self,
        src: Tensor,
        src_mask: Tensor | None,
        max_new_tokens: int,
        *,
        sampling: SamplingConfig | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
    ) -> Decoded:
        """Decode from [BOS] until every row has produced [EOS] or `max_new_tokens` tokens.

        `sampling=None` is greedy. `use_cache=False` re-runs the whole prefix each step: the slow
        reference the cached path must match.
        """
        if not 1 <= max_new_tokens < self.cfg.max_tgt_len:
            raise ValueError(
                f"max_new_tokens={max_new_tokens} must be in 1..{self.cfg.max_tgt_len - 1}"
            )
        sampling = sampling or SamplingConfig(temperature=0.0)
        memory = self.encode(src, src_mask=src_mask)
        cache = self.new_cache(memory, src_mask, max_new_tokens) if use_cache else None
        seq = torch.full((src.shape[0], 1), BOS_ID, dtype=torch.long, device=src.device)
        done = torch.zeros(src.shape[0], dtype=torch.bool, device=src.device)
        tokens, step_logits = [], []
        for _ in range(max_new_tokens):
            if cache is not None:
                logits = self.decode(seq[:, -1:], cache=cache)[:, -1]  # [B, V]
            else:
                logits = self.decode(seq, memory=memory, memory_mask=src_mask)[:, -1]
            nxt = sample_next_token(logits.float(), sampling, generator)
            nxt = torch.where(done, torch.full_like(nxt, EOS_ID), nxt)
            tokens.append(nxt)
            step_logits.append(logits)
            done |= nxt == EOS_ID
            if bool(done.all()):
                break
            seq = torch.cat([seq, nxt[:, None]], dim=1)
        return Decoded(torch.stack(tokens, dim=1), torch.stack(step_logits, dim=1))

    def greedy_decode(self, src: Tensor, src_mask: Tensor, max_new_tokens: int) -> Tensor:
        """Greedy ids [B, N] with the cache; what `tasks.exact_match` calls."""
        return self.generate(src, src_mask, max_new_tokens).tokens

    def num_parameters(self) -> int:
        return sum(p.numel() for p in {id(p): p for p in self.parameters()}.values())
