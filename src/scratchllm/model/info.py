"""What a config costs: parameters, FLOPs per token and training memory, without real weights.

The model is built on the "meta" device (shapes only), so even gpt2-xl is described instantly.

FLOPs per token (a multiply-add counts as 2 FLOPs):
    forward  = 2 * M + 4 * n_layer * n_embd * T
    training = 3 * forward  (the backward pass costs about twice the forward)
where M counts the weights used in matrix multiplications (every linear layer, including the
output head, tied or not) and the second term is attention's q.k and weights.v products against
T keys (PaLM, Chowdhery et al. 2022, appendix B; Kaplan et al. 2020, table 1, count the q.k
product only: half this term). Norms, softmax and biases are left out.

Training memory assumes AdamW with weights, gradients and both moments in the same dtype; mixed
precision with fp32 master weights costs more (fp32 row + bf16 weights and gradients).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from scratchllm.errors import CheckpointError
from scratchllm.model.config import ModelConfig
from scratchllm.model.encoder import EncoderModel
from scratchllm.model.gpt import GPTModel

GIB = 1024**3
ADAMW_STATES = 2  # first and second moment per parameter
DTYPE_BYTES = {"fp32": 4, "bf16": 2}


@dataclass
class ModelInfo:
    params_total: int  # distinct parameters (a tied matrix counts once)
    params_non_embedding: int  # without token/position/segment tables
    matmul_params: int  # weights used in matrix multiplications per token (M above)
    context_length: int  # T used in the attention FLOPs term
    flops_per_token_forward: int
    flops_per_token_training: int
    kv_cache_bytes_per_token: dict[str, int]  # per dtype: keys and values of every layer
    memory_bytes: dict[str, dict[str, int]]  # dtype -> weights / gradients / optimizer / total


def model_info(
    cfg: ModelConfig, context_length: int | None = None, *, encoder: bool = False
) -> ModelInfo:
    """Describe `cfg` (as a GPTModel, or an EncoderModel when `encoder`)."""
    t = cfg.context_length if context_length is None else context_length
    if t <= 0:
        raise ValueError(f"context_length={t} must be positive")
    with torch.device("meta"):
        model = EncoderModel(cfg) if encoder else GPTModel(cfg)
    total = model.num_parameters()
    matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    forward = 2 * matmul + 4 * cfg.n_layer * cfg.n_embd * t
    kv_per_token = 2 * cfg.n_layer * cfg.kv_heads * cfg.head_dim  # keys and values
    memory = {}
    for name, size in DTYPE_BYTES.items():
        parts = {"weights": total * size, "gradients": total * size}
        parts["optimizer"] = ADAMW_STATES * total * size
        parts["total"] = sum(parts.values())
        memory[name] = parts
    return ModelInfo(
        params_total=total,
        params_non_embedding=model.num_parameters(non_embedding=True),
        matmul_params=matmul,
        context_length=t,
        flops_per_token_forward=forward,
        flops_per_token_training=3 * forward,
        kv_cache_bytes_per_token={k: kv_per_token * s for k, s in DTYPE_BYTES.items()},
        memory_bytes=memory,
    )


def config_from_run(run_dir: str | Path) -> ModelConfig:
    """The ModelConfig stored in a run directory's config.json ({"model": {...}})."""
    path = Path(run_dir) / "config.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: not found (is {run_dir} a run directory?)") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: line {exc.lineno}: invalid JSON ({exc.msg})") from None
    if not isinstance(record, dict) or not isinstance(record.get("model"), dict):
        raise CheckpointError(f"{path}: field 'model' is missing")
    return ModelConfig.from_dict(record["model"])


def _human(n: float, units: tuple[str, ...] = ("", "K", "M", "B", "T")) -> str:
    for unit in units:
        if abs(n) < 1000 or unit == units[-1]:
            return f"{n:.3g}{unit}" if unit else f"{n:,.0f}"
        n /= 1000
    raise AssertionError("unreachable")


def format_info(info: ModelInfo, name: str = "model") -> str:
    """A short human-readable report of `info`."""
    lines = [
        f"{name}",
        f"  parameters            {info.params_total:>15,}  ({_human(info.params_total)})",
        f"  non-embedding         {info.params_non_embedding:>15,}",
        f"  FLOPs/token @ T={info.context_length:<5} forward {_human(info.flops_per_token_forward)}"
        f", training {_human(info.flops_per_token_training)}",
        "  memory, GiB (AdamW)   weights  gradients  optimizer      total",
    ]
    for dtype, parts in info.memory_bytes.items():
        cells = "".join(f"{parts[k] / GIB:>11.2f}" for k in ("weights", "gradients", "optimizer"))
        lines.append(f"    {dtype:<15}{cells}{parts['total'] / GIB:>11.2f}")
    kv = ", ".join(f"{k} {v:,} B" for k, v in info.kv_cache_bytes_per_token.items())
    lines.append(f"  KV cache per token    {kv}")
    return "\n".join(lines)


def info_dict(info: ModelInfo) -> dict:
    return asdict(info)
