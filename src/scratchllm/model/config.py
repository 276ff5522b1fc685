"""`ModelConfig`: one dataclass that describes every model this package builds, and its presets.

GPT-2, a Llama-style decoder and a BERT-like encoder are all built from the same parts; the
config chooses the parts (position scheme, norm, MLP, norm position, head counts).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from scratchllm.errors import ConfigError, check_field_types

POS_EMBS = ("learned", "sinusoidal", "rope")
NORMS = ("layernorm", "rmsnorm")
MLPS = ("gelu", "swiglu")
NORM_POSITIONS = ("pre", "post")
ATTN_IMPLS = ("sdpa", "math")
GELU_APPROXIMATIONS = ("tanh", "none")
INITS = ("gpt2", "pytorch")


@dataclass
class ModelConfig:
    vocab_size: int  # number of token ids the embedding table holds
    context_length: int  # longest sequence (positions 0 .. context_length-1) the model accepts
    n_embd: int  # model width: size of every token's hidden vector
    n_layer: int  # number of transformer blocks
    n_head: int  # attention (query) heads; must divide n_embd
    n_kv_head: int | None = None  # key/value heads (GQA); None = n_head (MHA), 1 = multi-query
    dropout: float = 0.0  # dropout on embeddings, attention weights and residual branches
    bias: bool = True  # biases in output projection, MLP and LayerNorm
    qkv_bias: bool = True  # biases in the query/key/value projections
    tie_embeddings: bool = True  # output head shares the token embedding matrix
    pos_emb: str = "learned"  # "learned" absolute | "sinusoidal" fixed | "rope" rotary
    norm: str = "layernorm"  # "layernorm" | "rmsnorm"
    mlp: str = "gelu"  # "gelu" (two matrices) | "swiglu" (three matrices, gated)
    mlp_hidden: int | None = None  # MLP inner width; None = 4*n_embd (gelu) or Llama's 8/3 rule
    norm_eps: float = 1e-5  # epsilon inside LayerNorm / RMSNorm
    rope_theta: float = 10000.0  # RoPE base frequency
    attn_impl: str = "sdpa"  # "sdpa" (torch fused kernel) | "math" (explicit reference)
    norm_position: str = "pre"  # "pre" (GPT-2, Llama) | "post" (original transformer, BERT)
    gelu_approximate: str = "tanh"  # "tanh" (GPT-2's gelu_new) | "none" (exact erf, BERT)
    type_vocab_size: int = 0  # segment (token type) embeddings; 0 = none (decoders), 2 for BERT
    init_std: float = 0.02  # std of the normal init of weights (GPT-2 / BERT value)
    # "gpt2": N(0, init_std) weights, residual projections scaled by 1/sqrt(2 n_layer) (GPT-2, BERT)
    # "pytorch": each module's own default (N(0, 1) embeddings, Kaiming-uniform linears), as in
    # the "LLMs from scratch" book's GPTModel
    init: str = "gpt2"

    def __post_init__(self) -> None:
        check_field_types(self)
        for name in ("vocab_size", "context_length", "n_embd", "n_layer", "n_head"):
            _positive_int(name, getattr(self, name))
        if self.n_kv_head is not None:
            _positive_int("n_kv_head", self.n_kv_head)
        if self.mlp_hidden is not None:
            _positive_int("mlp_hidden", self.mlp_hidden)
        if self.n_embd % self.n_head != 0:
            raise ConfigError(
                f"n_head={self.n_head} must divide n_embd={self.n_embd} "
                f"(remainder {self.n_embd % self.n_head})"
            )
        if self.n_head % self.kv_heads != 0:
            raise ConfigError(f"n_kv_head={self.n_kv_head} must divide n_head={self.n_head}")
        if self.pos_emb == "rope" and self.head_dim % 2 != 0:
            raise ConfigError(f"pos_emb='rope' needs an even head size, got {self.head_dim}")
        if self.pos_emb == "sinusoidal" and self.n_embd % 2 != 0:
            raise ConfigError(f"pos_emb='sinusoidal' needs an even n_embd, got {self.n_embd}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout={self.dropout} must be in [0, 1)")
        if self.type_vocab_size < 0:
            raise ConfigError(f"type_vocab_size={self.type_vocab_size} must be >= 0")
        for name in ("norm_eps", "rope_theta", "init_std"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be > 0")
        _choice("pos_emb", self.pos_emb, POS_EMBS)
        _choice("norm", self.norm, NORMS)
        _choice("mlp", self.mlp, MLPS)
        _choice("attn_impl", self.attn_impl, ATTN_IMPLS)
        _choice("norm_position", self.norm_position, NORM_POSITIONS)
        _choice("gelu_approximate", self.gelu_approximate, GELU_APPROXIMATIONS)
        _choice("init", self.init, INITS)

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def kv_heads(self) -> int:
        """Key/value head count with the default filled in."""
        return self.n_head if self.n_kv_head is None else self.n_kv_head

    @property
    def hidden_dim(self) -> int:
        """MLP inner width with the default filled in."""
        if self.mlp_hidden is not None:
            return self.mlp_hidden
        if self.mlp == "gelu":
            return 4 * self.n_embd
        # SwiGLU keeps the parameter count of a 4x GELU MLP: 2/3 * 4 * n_embd, rounded up to 256
        # (the rule of the Llama paper's reference code).
        hidden = int(2 * 4 * self.n_embd / 3)
        return 256 * ((hidden + 255) // 256)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        if not isinstance(d, dict):
            raise ConfigError(f"ModelConfig needs an object of fields, got {d!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown ModelConfig field(s): {', '.join(unknown)}")
        try:
            return cls(**d)
        except TypeError as exc:  # a missing required field
            raise ConfigError(f"ModelConfig: {exc}") from None


def _positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name}={value!r} must be a positive integer")


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} must be one of {', '.join(allowed)}")


_GPT2 = dict(vocab_size=50257, context_length=1024)  # GPT-2 BPE vocabulary and context
_LLAMA = dict(
    pos_emb="rope",
    norm="rmsnorm",
    mlp="swiglu",
    bias=False,
    qkv_bias=False,
    tie_embeddings=False,
    norm_eps=1e-6,
)
_BERT = dict(norm_position="post", gelu_approximate="none", type_vocab_size=2, norm_eps=1e-12)

PRESETS: dict[str, ModelConfig] = {
    # Sizes as released by OpenAI (Radford et al. 2019).
    "gpt2-small": ModelConfig(**_GPT2, n_embd=768, n_layer=12, n_head=12),
    "gpt2-medium": ModelConfig(**_GPT2, n_embd=1024, n_layer=24, n_head=16),
    "gpt2-large": ModelConfig(**_GPT2, n_embd=1280, n_layer=36, n_head=20),
    "gpt2-xl": ModelConfig(**_GPT2, n_embd=1600, n_layer=48, n_head=25),
    # A small Llama-style decoder (RoPE, RMSNorm, SwiGLU, GQA, no biases) for quick experiments.
    "llama-tiny": ModelConfig(
        **_LLAMA, vocab_size=32000, context_length=512, n_embd=256, n_layer=4, n_head=8, n_kv_head=2
    ),
    # BERT-base (Devlin et al. 2018): WordPiece vocabulary of 30522, 512 positions.
    "bert-base": ModelConfig(
        **_BERT, vocab_size=30522, context_length=512, n_embd=768, n_layer=12, n_head=12
    ),
    # Tiny configs for tests and demos (fit in a few hundred KB).
    "tiny": ModelConfig(vocab_size=256, context_length=64, n_embd=32, n_layer=2, n_head=4),
    "tiny-llama": ModelConfig(
        **_LLAMA, vocab_size=256, context_length=64, n_embd=32, n_layer=2, n_head=4, n_kv_head=2
    ),
    "tiny-bert": ModelConfig(
        **_BERT, vocab_size=256, context_length=64, n_embd=32, n_layer=2, n_head=4
    ),
}


def get_preset(name: str, **overrides: Any) -> ModelConfig:
    """A copy of preset `name` with `overrides` applied (validated again)."""
    if not isinstance(name, str) or name not in PRESETS:  # a job file can give any JSON value
        raise ConfigError(f"unknown model preset {name!r}; known: {', '.join(PRESETS)}")
    known = {f.name for f in fields(ModelConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"unknown ModelConfig field(s): {', '.join(unknown)}")
    return replace(PRESETS[name], **overrides)
