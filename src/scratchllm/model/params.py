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


# Which parameters weight decay applies to:
#   "matmul"   matrices used in matmuls; not norms, biases or embedding tables (the default)
#   "matrices" every parameter with 2 or more dimensions, embedding tables included (nanoGPT)
#   "all"      every parameter, as `AdamW(model.parameters(), weight_decay=...)` does
DECAY_ON = ("matmul", "matrices", "all")


def adamw_param_groups(
    model: nn.Module, weight_decay: float, decay_on: str = "matmul"
) -> list[dict]:
    """Two AdamW groups, [decay, no decay]; `decay_on` (see `DECAY_ON`) says which decay.

    Frozen parameters are left out; a tied parameter appears once.
    """
    if decay_on not in DECAY_ON:
        raise ValueError(f"decay_on={decay_on!r} must be one of {', '.join(DECAY_ON)}")
    embeddings = {id(p) for p in embedding_parameters(model)}

    def decays(p: nn.Parameter) -> bool:
        if decay_on == "all":
            return True
        return p.dim() >= 2 and (decay_on == "matrices" or id(p) not in embeddings)

    decay, no_decay = [], []
    for p in model.parameters():  # yields a shared (tied) tensor once
        if not p.requires_grad:
            continue
        (decay if decays(p) else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
