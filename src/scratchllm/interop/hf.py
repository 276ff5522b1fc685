"""Hugging Face names for our models: configs and tensor layouts of GPT-2, BERT and Llama/Qwen2.

Only this package knows Hugging Face names (the house rule). Each family is described once, as a
list of invertible `Rule`s between one of our tensors and one or more of theirs; import applies the
rules one way, export the other, so a round trip HF -> ours -> HF gives back every tensor bitwise
(only transposes, concatenations and splits, no arithmetic). Nothing here imports `transformers`:
configs are plain dicts (a `config.json`), tensors plain state dicts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from scratchllm.errors import CheckpointError, ConfigError
from scratchllm.model.config import ModelConfig

StateDict = dict[str, Tensor]

GPT2, BERT, LLAMA = "gpt2", "bert", "llama"  # our names for the three layouts
# model_type in config.json -> layout; Qwen2 and Mistral are Llama with other defaults.
MODEL_TYPES = {"gpt2": GPT2, "bert": BERT, "llama": LLAMA, "qwen2": LLAMA, "mistral": LLAMA}
# Layout -> the class name transformers builds from our exported config.json.
EXPORT_ARCHITECTURES = {GPT2: "GPT2LMHeadModel", BERT: "BertForMaskedLM"}
# Prefix of the backbone's keys in the head models (absent when a bare backbone was saved).
PREFIXES = {GPT2: "transformer.", BERT: "bert.", LLAMA: "model."}
# Tensors some checkpoints carry that are not weights (causal-mask and RoPE buffers, position
# ids), or duplicates of another tensor, or a head we do not build (BERT's next-sentence head).
IGNORED_SUFFIXES = (
    ".attn.bias",  # GPT-2's causal mask buffer [1, 1, n_positions, n_positions]
    ".attn.masked_bias",
    "rotary_emb.inv_freq",
    "embeddings.position_ids",
    "cls.predictions.decoder.bias",  # the same tensor as cls.predictions.bias
)
IGNORED_PREFIXES = ("cls.seq_relationship.",)
GELU_NAMES = {"gelu": "none", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh"}


# ---- configs -------------------------------------------------------------------------------


def layout_of(hf: Mapping[str, Any]) -> str:
    """GPT2 / BERT / LLAMA for a config.json dict; a clear error for anything else."""
    model_type = hf.get("model_type")
    if not isinstance(model_type, str) or model_type not in MODEL_TYPES:  # any JSON value
        raise CheckpointError(
            f"config.json model_type={model_type!r} is not supported "
            f"(supported: {', '.join(MODEL_TYPES)})"
        )
    return MODEL_TYPES[model_type]


def _gelu(act: str, field: str) -> str:
    if not isinstance(act, str) or act not in GELU_NAMES:
        raise CheckpointError(f"config.json {field}={act!r} unsupported ({', '.join(GELU_NAMES)})")
    return GELU_NAMES[act]


def config_from_gpt2(hf: Mapping[str, Any], **overrides: Any) -> ModelConfig:
    """ModelConfig from a GPT-2 config.json dict."""
    if hf.get("scale_attn_by_inverse_layer_idx") or not hf.get("scale_attn_weights", True):
        raise CheckpointError("GPT-2 configs with non-standard attention scaling are unsupported")
    return ModelConfig(
        vocab_size=hf["vocab_size"],
        context_length=hf["n_positions"],
        n_embd=hf["n_embd"],
        n_layer=hf["n_layer"],
        n_head=hf["n_head"],
        norm_eps=hf.get("layer_norm_epsilon", 1e-5),
        mlp_hidden=hf.get("n_inner"),  # None -> 4 * n_embd, as in GPT-2
        gelu_approximate=_gelu(hf.get("activation_function", "gelu_new"), "activation_function"),
        tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
        init_std=hf.get("initializer_range", 0.02),
        **overrides,
    )


def config_from_bert(hf: Mapping[str, Any], **overrides: Any) -> ModelConfig:
    """ModelConfig (post-norm encoder) from a BERT config.json dict."""
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise CheckpointError(
            f"BERT position_embedding_type={hf['position_embedding_type']!r} unsupported"
        )
    return ModelConfig(
        vocab_size=hf["vocab_size"],
        context_length=hf["max_position_embeddings"],
        n_embd=hf["hidden_size"],
        n_layer=hf["num_hidden_layers"],
        n_head=hf["num_attention_heads"],
        mlp_hidden=hf["intermediate_size"],
        norm_eps=hf.get("layer_norm_eps", 1e-12),
        type_vocab_size=hf.get("type_vocab_size", 2),
        norm_position="post",
        gelu_approximate=_gelu(hf.get("hidden_act", "gelu"), "hidden_act"),
        tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
        init_std=hf.get("initializer_range", 0.02),
        **overrides,
    )


def _rope_theta(hf: Mapping[str, Any]) -> float:
    # transformers >= 5 writes rope_parameters; older files rope_theta (+ rope_scaling).
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind != "default":
        raise CheckpointError(f"RoPE scaling rope_type={kind!r} unsupported (only default)")
    return float(rope.get("rope_theta", hf.get("rope_theta", 10000.0)))


def config_from_llama(hf: Mapping[str, Any], **overrides: Any) -> ModelConfig:
    """ModelConfig from a Llama / Qwen2 / Mistral config.json dict."""
    n_head, width = hf["num_attention_heads"], hf["hidden_size"]
    head_dim = hf.get("head_dim") or width // n_head
    if head_dim * n_head != width:
        raise CheckpointError(f"head_dim={head_dim} * num_attention_heads != hidden_size={width}")
    if hf.get("hidden_act", "silu") != "silu":
        raise CheckpointError(f"hidden_act={hf['hidden_act']!r} unsupported (only silu)")
    if hf.get("use_sliding_window") or (
        hf.get("model_type") == "mistral"
        and (hf.get("sliding_window") or 0) < hf["max_position_embeddings"]
        and hf.get("sliding_window") is not None
    ):
        raise CheckpointError("sliding-window attention is unsupported")
    if hf.get("model_type") == "qwen2":  # biases on q/k/v only
        qkv_bias, bias = True, False
    else:
        qkv_bias, bias = bool(hf.get("attention_bias")), bool(hf.get("mlp_bias"))
        if qkv_bias != bias:  # ours shares one flag between o_proj and the MLP
            raise CheckpointError(
                f"attention_bias={qkv_bias} with mlp_bias={bias} unsupported (must be equal)"
            )
    return ModelConfig(
        vocab_size=hf["vocab_size"],
        context_length=hf["max_position_embeddings"],
        n_embd=width,
        n_layer=hf["num_hidden_layers"],
        n_head=n_head,
        n_kv_head=hf.get("num_key_value_heads") or n_head,
        mlp_hidden=hf["intermediate_size"],
        norm_eps=hf.get("rms_norm_eps", 1e-6),
        rope_theta=_rope_theta(hf),
        pos_emb="rope",
        norm="rmsnorm",
        mlp="swiglu",
        bias=bias,
        qkv_bias=qkv_bias,
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        init_std=hf.get("initializer_range", 0.02),
        **overrides,
    )


def config_from_hf(hf: Mapping[str, Any]) -> tuple[str, ModelConfig]:
    """(layout, ModelConfig) for a config.json dict; errors name the unsupported field."""
    layout = layout_of(hf)
    reader = {GPT2: config_from_gpt2, BERT: config_from_bert, LLAMA: config_from_llama}[layout]
    try:
        return layout, reader(hf)
    except KeyError as exc:
        raise CheckpointError(f"config.json: field {exc.args[0]!r} is missing") from None


def export_layout(cfg: ModelConfig, encoder: bool) -> str:
    """The HF layout that represents `cfg` exactly; ConfigError listing what does not fit."""
    if encoder:
        want = dict(pos_emb="learned", norm="layernorm", mlp="gelu", norm_position="post")
        want |= dict(bias=True, qkv_bias=True, n_kv_head=cfg.n_head)
        layout = BERT
        if cfg.type_vocab_size == 0:
            raise ConfigError("export as BERT needs type_vocab_size > 0 (BERT has segments)")
    elif cfg.pos_emb == "rope":
        want = dict(norm="rmsnorm", mlp="swiglu", norm_position="pre")
        if cfg.bias:  # Llama with attention_bias = mlp_bias = True
            want |= dict(qkv_bias=True)
        layout = LLAMA
    else:
        want = dict(pos_emb="learned", norm="layernorm", mlp="gelu", norm_position="pre")
        want |= dict(bias=True, qkv_bias=True, n_kv_head=cfg.n_head)
        layout = GPT2
    have = cfg.to_dict() | {"n_kv_head": cfg.kv_heads}
    bad = [f"{k}={have[k]!r} (needs {v!r})" for k, v in want.items() if have[k] != v]
    if bad:
        raise ConfigError(f"no Hugging Face {layout} layout for this model: {', '.join(bad)}")
    return layout


def hf_config(cfg: ModelConfig, layout: str, dtype: torch.dtype) -> dict[str, Any]:
    """A config.json dict transformers reads back into the same architecture."""
    gelu = "gelu" if cfg.gelu_approximate == "none" else "gelu_new"
    common = dict(
        vocab_size=cfg.vocab_size,
        tie_word_embeddings=cfg.tie_embeddings,
        initializer_range=cfg.init_std,
        dtype=str(dtype).removeprefix("torch."),
    )
    if layout == GPT2:
        return common | dict(
            architectures=[EXPORT_ARCHITECTURES[GPT2]],
            model_type="gpt2",
            n_positions=cfg.context_length,
            n_embd=cfg.n_embd,
            n_layer=cfg.n_layer,
            n_head=cfg.n_head,
            n_inner=cfg.mlp_hidden,
            layer_norm_epsilon=cfg.norm_eps,
            activation_function=gelu,
            **{k: cfg.dropout for k in ("resid_pdrop", "embd_pdrop", "attn_pdrop")},
        )
    if layout == BERT:
        return common | dict(
            architectures=[EXPORT_ARCHITECTURES[BERT]],
            model_type="bert",
            max_position_embeddings=cfg.context_length,
            hidden_size=cfg.n_embd,
            num_hidden_layers=cfg.n_layer,
            num_attention_heads=cfg.n_head,
            intermediate_size=cfg.hidden_dim,
            layer_norm_eps=cfg.norm_eps,
            type_vocab_size=cfg.type_vocab_size,
            hidden_act=gelu,
            hidden_dropout_prob=cfg.dropout,
            attention_probs_dropout_prob=cfg.dropout,
        )
    qwen2 = cfg.qkv_bias and not cfg.bias
    out = common | dict(
        architectures=["Qwen2ForCausalLM" if qwen2 else "LlamaForCausalLM"],
        model_type="qwen2" if qwen2 else "llama",
        max_position_embeddings=cfg.context_length,
        hidden_size=cfg.n_embd,
        num_hidden_layers=cfg.n_layer,
        num_attention_heads=cfg.n_head,
        num_key_value_heads=cfg.kv_heads,
        head_dim=cfg.head_dim,
        intermediate_size=cfg.hidden_dim,
        rms_norm_eps=cfg.norm_eps,
        hidden_act="silu",
        attention_dropout=cfg.dropout,
        rope_theta=cfg.rope_theta,  # read by transformers 4.x
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},  # by 5.x
    )
    if not qwen2:
        out |= dict(attention_bias=cfg.bias, mlp_bias=cfg.bias)
    return out


# ---- tensor layouts ------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One of our tensors and the tensor(s) it comes from in the HF layout.

    op "same": equal; "transpose": GPT-2's Conv1D stores [in, out]; "concat": our fused q/k/v
    projection is theirs concatenated along dim 0 (`sizes` splits it back).
    """

    ours: str
    theirs: tuple[str, ...]
    op: str = "same"
    sizes: tuple[int, ...] = ()

    def to_ours(self, tensors: list[Tensor]) -> Tensor:
        if self.op == "transpose":
            return tensors[0].t()
        if self.op == "concat":
            return torch.cat(tensors, dim=0)
        return tensors[0]

    def to_theirs(self, tensor: Tensor) -> list[Tensor]:
        if self.op == "transpose":
            return [tensor.t()]
        if self.op == "concat":
            return list(tensor.split(list(self.sizes), dim=0))
        return [tensor]


def _same(ours: str, theirs: str, kinds: tuple[str, ...] = ("weight", "bias")) -> list[Rule]:
    return [Rule(f"{ours}.{k}", (f"{theirs}.{k}",)) for k in kinds]


def _qkv(ours: str, theirs: tuple[str, str, str], cfg: ModelConfig, kinds: tuple) -> list[Rule]:
    """q/k/v projections: our fused `qkv` (MHA) or separate q/k/v_proj (GQA)."""
    q, kv = cfg.n_embd, cfg.kv_heads * cfg.head_dim
    if cfg.kv_heads == cfg.n_head:
        return [
            Rule(f"{ours}.qkv.{k}", tuple(f"{t}.{k}" for t in theirs), "concat", (q, kv, kv))
            for k in kinds
        ]
    names = ("q_proj", "k_proj", "v_proj")
    return [Rule(f"{ours}.{n}.{k}", (f"{t}.{k}",)) for n, t in zip(names, theirs) for k in kinds]


def gpt2_rules(cfg: ModelConfig) -> list[Rule]:
    rules = [Rule("embed.wte.weight", ("transformer.wte.weight",))]
    rules.append(Rule("embed.wpe.weight", ("transformer.wpe.weight",)))
    for i in range(cfg.n_layer):
        h, b = f"transformer.h.{i}", f"blocks.{i}"
        rules += _same(f"{b}.norm1", f"{h}.ln_1") + _same(f"{b}.norm2", f"{h}.ln_2")
        rules.append(Rule(f"{b}.attn.qkv.weight", (f"{h}.attn.c_attn.weight",), "transpose"))
        rules.append(Rule(f"{b}.attn.qkv.bias", (f"{h}.attn.c_attn.bias",)))
        for ours, theirs in (("attn.out_proj", "attn.c_proj"), ("mlp.up_proj", "mlp.c_fc")):
            rules.append(Rule(f"{b}.{ours}.weight", (f"{h}.{theirs}.weight",), "transpose"))
            rules.append(Rule(f"{b}.{ours}.bias", (f"{h}.{theirs}.bias",)))
        rules.append(Rule(f"{b}.mlp.down_proj.weight", (f"{h}.mlp.c_proj.weight",), "transpose"))
        rules.append(Rule(f"{b}.mlp.down_proj.bias", (f"{h}.mlp.c_proj.bias",)))
    rules += _same("norm_f", "transformer.ln_f")
    if not cfg.tie_embeddings:
        rules.append(Rule("lm_head.weight", ("lm_head.weight",)))
    return rules


def bert_rules(cfg: ModelConfig, *, pooler: bool = True, mlm: bool = True) -> list[Rule]:
    e = "bert.embeddings"
    rules = [
        Rule("embed.wte.weight", (f"{e}.word_embeddings.weight",)),
        Rule("embed.wpe.weight", (f"{e}.position_embeddings.weight",)),
        Rule("embed.wtt.weight", (f"{e}.token_type_embeddings.weight",)),
        *_same("embed.norm", f"{e}.LayerNorm"),
    ]
    both = ("weight", "bias")
    for i in range(cfg.n_layer):
        h, b = f"bert.encoder.layer.{i}", f"blocks.{i}"
        s = f"{h}.attention.self"
        rules += _qkv(f"{b}.attn", (f"{s}.query", f"{s}.key", f"{s}.value"), cfg, both)
        rules += _same(f"{b}.attn.out_proj", f"{h}.attention.output.dense")
        rules += _same(f"{b}.norm1", f"{h}.attention.output.LayerNorm")
        rules += _same(f"{b}.mlp.up_proj", f"{h}.intermediate.dense")
        rules += _same(f"{b}.mlp.down_proj", f"{h}.output.dense")
        rules += _same(f"{b}.norm2", f"{h}.output.LayerNorm")
    if pooler:
        rules += _same("pooler.dense", "bert.pooler.dense")
    if mlm:
        p = "cls.predictions"
        rules += _same("mlm_head.dense", f"{p}.transform.dense")
        rules += _same("mlm_head.norm", f"{p}.transform.LayerNorm")
        rules.append(Rule("mlm_head.bias", (f"{p}.bias",)))
        if not cfg.tie_embeddings:
            rules.append(Rule("mlm_head.decoder.weight", (f"{p}.decoder.weight",)))
    return rules


def llama_rules(cfg: ModelConfig) -> list[Rule]:
    rules = [Rule("embed.wte.weight", ("model.embed_tokens.weight",))]
    kinds = ("weight", "bias") if cfg.qkv_bias else ("weight",)
    out_kinds = ("weight", "bias") if cfg.bias else ("weight",)
    for i in range(cfg.n_layer):
        h, b = f"model.layers.{i}", f"blocks.{i}"
        s = f"{h}.self_attn"
        rules += _qkv(f"{b}.attn", (f"{s}.q_proj", f"{s}.k_proj", f"{s}.v_proj"), cfg, kinds)
        rules += _same(f"{b}.attn.out_proj", f"{s}.o_proj", out_kinds)
        for name in ("gate_proj", "up_proj", "down_proj"):
            rules += _same(f"{b}.mlp.{name}", f"{h}.mlp.{name}", out_kinds)
        rules += _same(f"{b}.norm1", f"{h}.input_layernorm", ("weight",))
        rules += _same(f"{b}.norm2", f"{h}.post_attention_layernorm", ("weight",))
    rules += _same("norm_f", "model.norm", ("weight",))
    if not cfg.tie_embeddings:
        rules.append(Rule("lm_head.weight", ("lm_head.weight",)))
    return rules


def rules_for(layout: str, cfg: ModelConfig, parts: frozenset[str] = frozenset()) -> list[Rule]:
    """The rules of a layout; `parts` names BERT heads absent from the checkpoint."""
    if layout == GPT2:
        return gpt2_rules(cfg)
    if layout == BERT:
        return bert_rules(cfg, pooler="pooler" not in parts, mlm="mlm_head" not in parts)
    return llama_rules(cfg)


def normalise_keys(keys: list[str], layout: str) -> dict[str, str]:
    """Canonical name -> name in the file: a bare backbone's keys gain the head model's prefix."""
    prefix = PREFIXES[layout]
    if any(k.startswith(prefix) for k in keys):
        return {k: k for k in keys}
    heads = ("lm_head.", "cls.")
    return {(k if k.startswith(heads) else prefix + k): k for k in keys}


def ignored(key: str, layout: str, cfg: ModelConfig) -> bool:
    """True for tensors a checkpoint may carry that are not ours to load (see IGNORED_*)."""
    if key.endswith(IGNORED_SUFFIXES) or key.startswith(IGNORED_PREFIXES):
        return True
    tied_copies = ("lm_head.weight", "cls.predictions.decoder.weight")
    return cfg.tie_embeddings and key in tied_copies  # an explicit copy of a tied matrix


def to_ours(rules: list[Rule], theirs: Mapping[str, Tensor]) -> StateDict:
    """HF tensors (canonical names) -> our state dict; views where the op allows (no copy)."""
    return {r.ours: r.to_ours([theirs[t] for t in r.theirs]) for r in rules}


def to_theirs(rules: list[Rule], ours: Mapping[str, Tensor]) -> StateDict:
    """Our state dict -> HF tensors (canonical names), as views of ours."""
    out: StateDict = {}
    for r in rules:
        out.update(zip(r.theirs, r.to_theirs(ours[r.ours]), strict=True))
    return out
