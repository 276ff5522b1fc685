"""Shared matplotlib set-up: a headless backend and saving a figure at an exact pixel size."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Every picture is saved at this many pixels per inch; figure sizes are chosen in inches so that
# the PNG has exactly figsize * DPI pixels (no tight bounding box, which would change the size).
DPI = 100


def pyplot() -> Any:
    """matplotlib.pyplot on the non-interactive Agg backend (works without a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, out: str | Path) -> Path:
    """Write ``fig`` as a PNG at ``out`` (parent folders created) and close it."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI, format="png")
    pyplot().close(fig)
    return out


def token_label(tokenizer: Any, token_id: int) -> str:
    """A printable label for one token: spaces as ␣, newlines as ↵, other control characters
    escaped, and a token that is not whole UTF-8 characters shown as its bytes (<e2><80>)."""
    text = tokenizer.decode([int(token_id)])
    if "\ufffd" in text and hasattr(tokenizer, "id_to_token"):
        return "".join(f"<{b:02x}>" for b in tokenizer.id_to_token(int(token_id)))
    text = text.replace(" ", "\u2423").replace("\n", "\u21b5").replace("\t", "\u21e5")
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)
