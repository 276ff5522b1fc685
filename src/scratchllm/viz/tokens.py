"""Token boundaries of a text as an image: each token a coloured box, its id written below."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scratchllm.viz._figure import DPI, pyplot, save

# Pastel backgrounds cycled over tokens so that neighbours always differ (as `tokenizer show`).
COLOURS = ("#b3d9ff", "#ffe0b3", "#c2f0c2", "#ffc2c2", "#d9ccff", "#fff5b3")
CELL_W = 0.12  # inches per character column (monospace)
ROW_H = 0.5  # inches per line: the token text and its id below
MARGIN = 0.3  # inches around the text
FONT_PT = 13  # monospace font size; one character is about 0.6 em wide, i.e. < CELL_W


@dataclass
class Box:
    """One drawn piece of a token: where it sits and what it shows."""

    row: int
    col: int
    text: str
    index: int  # token position in the sequence (chooses the colour)
    token_id: int
    first: bool  # the token's first piece (its id is written under it)


def token_pieces(tokenizer: Any, text: str) -> tuple[list[int], list[str], bool]:
    """Ids, the text of each id, and whether those texts join back to ``text`` exactly.

    A word-level tokenizer drops spaces, so its tokens do not join back; they are drawn with a gap.
    """
    ids = tokenizer.encode(text, allowed_special="all")
    pieces = [tokenizer.decode([i]) for i in ids]
    return ids, pieces, "".join(pieces) == text


def layout(ids: list[int], pieces: list[str], *, width: int, gap: int = 0) -> list[Box]:
    """Place token pieces on lines of ``width`` columns; a newline in a token starts a new line."""
    boxes: list[Box] = []
    row = col = 0
    for index, (tid, piece) in enumerate(zip(ids, pieces, strict=True)):
        first = True
        segments = piece.split("\n")
        for s, segment in enumerate(segments):
            shown = segment.replace(" ", "\u00b7").replace("\t", "\u2192")
            if s < len(segments) - 1:
                shown += "\u21b5"  # this segment ends with a newline
            while shown or first:
                room = width - col
                if col > 0 and len(shown) > room:
                    row, col = row + 1, 0
                    room = width
                chunk, shown = shown[:room], shown[room:]
                boxes.append(Box(row, col, chunk, index, tid, first))
                col += len(chunk)
                first = False
                if not chunk:
                    break
            if s < len(segments) - 1:
                row, col = row + 1, 0
        col += gap
    return boxes


def plot_tokens(
    tokenizer: Any,
    text: str,
    out: str | Path,
    *,
    width: int = 60,
    title: str | None = None,
    show_ids: bool = True,
) -> Path:
    """Draw ``text`` split into tokens (spaces as ·, newlines as ↵) and save a PNG at ``out``.

    ``width`` is the line length in characters. Returns the path written.
    """
    if not text:
        raise ValueError("plot_tokens needs a non-empty text")
    ids, pieces, joins = token_pieces(tokenizer, text)
    boxes = layout(ids, pieces, width=width, gap=0 if joins else 1)
    rows = max(b.row for b in boxes) + 1
    cols = width  # the image is always ``width`` columns wide
    plt = pyplot()
    fig_w = cols * CELL_W + 2 * MARGIN
    fig_h = rows * ROW_H + 2 * MARGIN + 0.3
    fig = plt.figure(figsize=(fig_w, fig_h), dpi=DPI)
    ax = fig.add_axes((MARGIN / fig_w, MARGIN / fig_h, cols * CELL_W / fig_w, rows * ROW_H / fig_h))
    ax.set_xlim(0, cols)
    ax.set_ylim(rows, 0)
    ax.axis("off")
    for b in boxes:
        colour = COLOURS[b.index % len(COLOURS)]
        ax.add_patch(
            plt.Rectangle((b.col, b.row + 0.05), max(len(b.text), 0.3), 0.55, color=colour, lw=0)
        )
        for k, ch in enumerate(b.text):
            ax.text(
                b.col + k + 0.5,
                b.row + 0.33,
                ch,
                ha="center",
                va="center",
                family="DejaVu Sans Mono",
                fontsize=FONT_PT,
            )
        if show_ids and b.first:
            ax.text(
                b.col + 0.1,
                b.row + 0.8,
                str(b.token_id),
                ha="left",
                va="center",
                fontsize=7,
                color="#555555",
            )
    heading = title or f"{len(ids)} tokens for {len(text)} characters ({type(tokenizer).__name__})"
    fig.suptitle(heading, x=MARGIN / fig_w, ha="left", y=1 - 0.08 / fig_h, va="top", fontsize=10)
    return save(fig, out)
