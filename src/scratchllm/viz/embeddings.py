"""Token embeddings projected to two dimensions (PCA) and drawn with labels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from scratchllm.viz._figure import DPI, pyplot, save


def pca_2d(table: Tensor, points: Tensor | None = None) -> Tensor:
    """Project rows of ``points`` (default: ``table``) onto the top two principal axes of ``table``.

    table [N, C] -> [M, 2]. The axes are fitted on the whole table, so chosen tokens are shown
    in the same plane whichever tokens are chosen. Signs follow the largest loading (stable).
    """
    table = table.detach().float().cpu()
    points = table if points is None else points.detach().float().cpu()
    mean = table.mean(dim=0, keepdim=True)  # [1, C]
    _, _, vh = torch.linalg.svd(table - mean, full_matrices=False)  # vh [C', C]
    axes = vh[:2]  # [2, C]
    signs = torch.sign(axes.gather(1, axes.abs().argmax(dim=1, keepdim=True)))  # [2, 1]
    return (points - mean) @ (axes * signs).T  # [M, 2]


def embedding_table(model: nn.Module) -> Tensor:
    """The token embedding matrix [vocab_size, n_embd] of a scratchllm model (or a tensor)."""
    if isinstance(model, Tensor):
        return model
    return model.embed.wte.weight


def word_vectors(table: Tensor, tokenizer: Any, words: list[str]) -> Tensor:
    """One vector per word [len(words), C]: its token's row, or the mean of its tokens' rows."""
    rows = []
    for word in words:
        ids = tokenizer.encode_ordinary(word)
        if not ids:
            raise ValueError(f"word {word!r} has no tokens")
        rows.append(table[ids].mean(dim=0))
    return torch.stack(rows)


def plot_embeddings(
    model: nn.Module | Tensor,
    tokenizer: Any,
    words: list[str],
    out: str | Path,
    *,
    title: str = "Token embeddings (PCA)",
    background: int = 2000,
) -> Path:
    """Scatter of the chosen words' embeddings on the table's first two principal axes.

    Words of several tokens use the mean of their token rows (marked with * in the label).
    Up to ``background`` other tokens are drawn in light grey for scale. Returns the path.
    """
    if not words:
        raise ValueError("plot_embeddings needs at least one word")
    table = embedding_table(model).detach().float().cpu()  # [V, C]
    chosen = pca_2d(table, word_vectors(table, tokenizer, words))  # [W, 2]
    every = pca_2d(table)[:background]  # [min(V, background), 2]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 6), dpi=DPI)
    ax.scatter(every[:, 0], every[:, 1], s=4, color="#cccccc", label="other tokens")
    ax.scatter(chosen[:, 0], chosen[:, 1], s=30, color="#d62728", label="chosen")
    for (x, y), word in zip(chosen.tolist(), words, strict=True):
        star = "*" if len(tokenizer.encode_ordinary(word)) > 1 else ""
        ax.annotate(word + star, (x, y), xytext=(4, 4), textcoords="offset points", fontsize=9)
    ax.set(xlabel="principal axis 1", ylabel="principal axis 2", title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return save(fig, out)
