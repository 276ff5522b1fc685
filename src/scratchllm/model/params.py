"""Parameter bookkeeping shared by every model: counts and AdamW groups."""

from __future__ import annotations

from torch import nn


def embedding_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters of lookup tables (token, position, segment embeddings), each once."""
    seen: dict[int, nn.Parameter] = {}
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            for p in module.parameters(recurse=False):
                seen[id(p)] = p
    return list(seen.values())


def count_parameters(model: nn.Module, *, non_embedding: bool = False) -> int:
    """Number of distinct parameters (a tied matrix counts once).

    non_embedding=True leaves out the embedding tables (Kaplan et al. 2020's N); an untied output
    head is a matmul and stays counted.
    """
    total = sum(p.numel() for p in model.parameters())  # parameters() yields shared tensors once
    if non_embedding:
        total -= sum(p.numel() for p in embedding_parameters(model))
    return total


def adamw_param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: matmul weights decay; norms, biases and embeddings do not."""
    embeddings = {id(p) for p in embedding_parameters(model)}
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 and id(p) not in embeddings else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
