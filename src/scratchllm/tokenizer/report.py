"""What the CLI shows about a tokenizer: summary figures and token boundaries in colour."""

from __future__ import annotations

from typing import Any

# Background colours (ANSI 256-colour codes) cycled over tokens so neighbours differ.
_COLOURS = (153, 223, 194, 217, 189, 229)


def describe(tok: Any, text: str | None = None) -> dict[str, Any]:
    """Vocabulary size, special tokens and, for a sample text, tokens and bytes per token."""
    info: dict[str, Any] = {
        "type": type(tok).__name__,
        "vocab_size": tok.vocab_size,
        "special_tokens": tok.special_tokens,
    }
    if hasattr(tok, "is_fast"):
        info["fast_path"] = tok.is_fast
    if text is not None:
        n_bytes = len(text.encode("utf-8"))
        n_tokens = len(tok.encode(text, disallowed_special=()))
        info.update(
            bytes=n_bytes,
            tokens=n_tokens,
            bytes_per_token=round(n_bytes / max(n_tokens, 1), 3),
        )
    return info


def show_tokens(tok: Any, text: str, *, colour: bool = True) -> str:
    """`text` with token boundaries visible: alternating background colours, or `|` separators.
    Tokens that are not whole UTF-8 characters show as U+FFFD."""
    ids = tok.encode(text, allowed_special="all")
    pieces = [tok.decode([i]) for i in ids]
    if not colour:
        return "|".join(pieces)
    out = []
    for n, piece in enumerate(pieces):
        code = _COLOURS[n % len(_COLOURS)]
        out.append(f"\x1b[48;5;{code}m\x1b[30m{piece}\x1b[0m")
    return "".join(out)
