"""argparse ``type=`` helpers: a bad number is a usage error naming the flag, before any work.

``int_at_least(1)`` rejects ``--batch-size 0`` as ``argument --batch-size: must be >= 1, got 0``
instead of letting it reach a ``range()`` or a slice (where ``-1`` quietly means "all but one").
"""

from __future__ import annotations

import argparse
from collections.abc import Callable


def int_at_least(low: int) -> Callable[[str], int]:
    """An int parser that refuses values below ``low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    parse.__name__ = f"int >= {low}"
    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)


def minutes_or_none(text: str) -> float | None:
    """Minutes as a float, or ``none`` (any case) for no time limit, so that `demo`'s default
    limit can be lifted. The range (> 0) is checked with the rest of the training settings."""
    if text.strip().lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid value: {text!r} (minutes, or none)") from None
