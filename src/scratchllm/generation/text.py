"""Turning a growing list of token ids into text pieces safely.

Byte-level BPE tokens need not end on a character boundary (an emoji may be split over several
tokens), and a stop string may arrive split over several tokens. `TextStream` therefore holds back

- the bytes of an unfinished UTF-8 character (an incremental UTF-8 decoder keeps them), and
- the longest tail of the text that could still grow into a stop string,

so every piece it releases is final: the concatenation of the pieces equals the full decode of
the same ids, cut just before the first stop string.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable, Sequence
from typing import Protocol


class Detokenizer(Protocol):
    def decode_bytes(self, ids: Iterable[int]) -> bytes: ...


def _held_back(text: str, stops: Sequence[str]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of some stop string."""
    best = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:n]):
                best = n
                break
    return best


class TextStream:
    """Feed token ids one step at a time; read back the text that is safe to show."""

    def __init__(self, tokenizer: Detokenizer, stop: Sequence[str] = ()) -> None:
        if any(not s for s in stop):
            raise ValueError("stop strings must be non-empty")
        self.tokenizer = tokenizer
        self.stop = tuple(stop)
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""  # decoded text not yet released (may start a stop string)
        self.text = ""  # everything released so far
        self.stopped = False  # a stop string was found; later ids are ignored

    def push(self, ids: Iterable[int]) -> str:
        """Add ids; return the newly released text ('' when it must wait for more)."""
        if self.stopped:
            return ""
        self._pending += self._utf8.decode(self.tokenizer.decode_bytes(ids))
        return self._release(final=False)

    def finish(self) -> str:
        """No more ids: flush what was held back (a cut character becomes U+FFFD)."""
        if not self.stopped:
            self._pending += self._utf8.decode(b"", final=True)
        return self._release(final=True)

    def _release(self, *, final: bool) -> str:
        if self.stopped:
            return ""
        cut = self._first_stop()
        if cut is not None:
            out, self._pending, self.stopped = self._pending[:cut], "", True
        else:
            keep = 0 if final else _held_back(self._pending, self.stop)
            end = len(self._pending) - keep
            out, self._pending = self._pending[:end], self._pending[end:]
        self.text += out
        return out

    def _first_stop(self) -> int | None:
        """Index in the pending text where the earliest stop string starts, if any.

        Text already released cannot hold a stop string, but one may start in the held-back
        tail, which is part of the pending text, so searching the pending text is enough.
        """
        found = [i for i in (self._pending.find(s) for s in self.stop) if i >= 0]
        return min(found) if found else None
