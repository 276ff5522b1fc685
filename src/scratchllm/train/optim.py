"""AdamW with decay only where it belongs, and the warm-up + cosine learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from scratchllm.model.params import adamw_param_groups
from scratchllm.train.config import TrainConfig


def param_groups(model: nn.Module, weight_decay: float, decay_on: str = "matmul") -> list[dict]:
    """Two AdamW groups, [decay, no decay]: by default matmul weights decay; norms, biases and
    embeddings do not (`scratchllm.model.params.DECAY_ON` lists the other choices).

    Models may define ``param_groups(weight_decay, decay_on)`` themselves; otherwise the generic
    rule applies (a parameter is an embedding when it belongs to an ``nn.Embedding``).
    """
    if hasattr(model, "param_groups"):
        return model.param_groups(weight_decay, decay_on)
    return adamw_param_groups(model, weight_decay, decay_on)


def build_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with the fused kernel (one pass over all parameters) on CUDA and CPU."""
    groups = [g for g in param_groups(model, cfg.weight_decay, cfg.weight_decay_on) if g["params"]]
    extra = {"fused": True} if device.type in ("cuda", "cpu") else {}
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, **extra)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate for optimizer step ``step`` (0-based): linear warm-up, cosine decay to min_lr."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    decay_steps = max(1, cfg.max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / decay_steps)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return cfg.min_lr + (cfg.lr - cfg.min_lr) * cosine
