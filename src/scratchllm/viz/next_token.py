"""Next-token probabilities for a prompt, as the model gives them and after sampling settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from scratchllm.generation.sampling import (
    SamplingConfig,
    TokenHistory,
    apply_penalties,
    filter_logits,
)
from scratchllm.viz._figure import DPI, pyplot, save, token_label


@torch.no_grad()
def next_token_probs(
    model: nn.Module, tokenizer: Any, prompt: str, sampling: SamplingConfig | None = None
) -> Tensor:
    """Probabilities [vocab_size] of the token after ``prompt``.

    Without ``sampling``: the model's own distribution (softmax of the logits). With it: the
    distribution `sample_next_token` draws from, i.e. after penalties (the prompt counts as seen),
    temperature, top-k, top-p and min-p; greedy puts all the mass on the argmax.
    """
    ids = tokenizer.encode(prompt, allowed_special="all")
    if not ids:
        raise ValueError("the prompt has no tokens")
    ids = ids[-model.cfg.context_length :]  # the most recent context, as generation slides
    device = next(model.parameters()).device
    logits = model(torch.tensor([ids], device=device))[:, -1].float()  # [1, V]
    if sampling is None:
        return logits.softmax(dim=-1)[0].cpu()
    if sampling.uses_penalties:
        history = TokenHistory(1, logits.shape[-1], device=device)
        history.add_prompt(0, ids)
        logits = apply_penalties(logits, sampling, history)
    if sampling.greedy:
        return torch.nn.functional.one_hot(logits.argmax(dim=-1), logits.shape[-1])[0].float().cpu()
    return filter_logits(logits, sampling).softmax(dim=-1)[0].cpu()


def _describe(sampling: SamplingConfig) -> str:
    parts = [f"temperature={sampling.temperature:g}"]
    for name in ("top_k", "top_p", "min_p"):
        value = getattr(sampling, name)
        if value is not None:
            parts.append(f"{name}={value:g}")
    if sampling.repetition_penalty != 1.0:
        parts.append(f"repetition_penalty={sampling.repetition_penalty:g}")
    return ", ".join(parts)


def plot_next_token(
    model: nn.Module,
    tokenizer: Any,
    prompt: str,
    out: str | Path,
    sampling: SamplingConfig,
    *,
    k: int = 10,
) -> Path:
    """Two bar charts of the top-``k`` next tokens: the model's probabilities, then those after
    ``sampling`` (same tokens, same order, so the effect of the settings shows bar by bar)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    before = next_token_probs(model, tokenizer, prompt)
    after = next_token_probs(model, tokenizer, prompt, sampling)
    k = min(k, before.numel())
    top = torch.topk(before, k).indices  # [k], most likely first
    labels = [token_label(tokenizer, int(i)) for i in top]
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), dpi=DPI, sharey=True)
    panels = [
        (axes[0], before[top], "model (temperature 1)", "#1f77b4"),
        (axes[1], after[top], _describe(sampling), "#ff7f0e"),
    ]
    for ax, probs, name, colour in panels:
        ax.bar(range(k), probs.tolist(), color=colour)
        ax.set_xticks(range(k), labels, rotation=60, ha="right", fontsize=9)
        ax.set_title(name, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("probability of the next token")
    shown = prompt if len(prompt) <= 60 else "..." + prompt[-57:]
    fig.suptitle(f"Next token after {shown!r}", fontsize=11)
    fig.tight_layout()
    return save(fig, out)
