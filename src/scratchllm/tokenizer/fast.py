"""Fast paths with the same answers as the reference: tiktoken's core for encoding."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def build_encoding(
    name: str, pattern: str, ranks: Mapping[bytes, int], special_tokens: Mapping[str, int]
) -> Any | None:
    """A `tiktoken.Encoding` over our ranks, or None when tiktoken is not importable."""
    try:
        import tiktoken
    except ImportError:
        return None
    return tiktoken.Encoding(
        name=name,
        pat_str=pattern,
        mergeable_ranks=dict(ranks),
        special_tokens=dict(special_tokens),
    )


def rustbpe_available() -> bool:
    """True when the optional `rustbpe` training backend is importable."""
    try:
        import rustbpe  # noqa: F401
    except ImportError:
        return False
    return True
