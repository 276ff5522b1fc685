"""Encoding large corpora across processes, with a progress bar (used by the data layer).

Texts are independent, so they are encoded in worker processes and returned in input order. A
large file is cut into chunks only where the GPT-2/GPT-4 patterns can never join the two sides
(after a newline that has a non-space character on each side), so the ids equal a single encode.
``split_stream`` makes the same cuts in a text that arrives in parts (a file read block by block),
holding only about two chunks of it at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import regex

from scratchllm.errors import TokenizerError
from scratchllm.system import available_cpus
from scratchllm.tokenizer.patterns import PATTERNS

# Size of the pieces a large file is cut into for the workers.
CHUNK_CHARS = 1 << 20
# A safe cut: just after "\n" with a non-space before it and a non-space after it.
_SAFE_CUT = regex.compile(r"(?<=\S\n)(?=\S)")
# The fallback cut of split_stream, for text with no safe cut above for a long stretch: just after
# an ASCII letter that an ASCII non-letter follows ("word| word", "word|.", "abc|123"). Under both
# patterns the letter ends a letter run or a contraction ('s, 'll, ...), which the next character
# cannot continue, and the next piece starts at that character whether or not the text before it
# is there (the patterns have no lookbehind). ASCII only, so that the `regex` module here and
# tiktoken's regex engine cannot disagree about what is a letter.
_FALLBACK_CUT = regex.compile(r"(?<=[A-Za-z])(?=[\x00-\x40\x5b-\x60\x7b-\x7f])")


class Encoder(Protocol):
    def encode(self, text: str, **kwargs: Any) -> list[int]: ...


_WORKER_TOKENIZER: Encoder | None = None
_WORKER_KWARGS: dict[str, Any] = {}


def _init_worker(tokenizer: Encoder, kwargs: dict[str, Any]) -> None:
    global _WORKER_TOKENIZER, _WORKER_KWARGS
    _WORKER_TOKENIZER, _WORKER_KWARGS = tokenizer, kwargs


def _encode_in_worker(text: str) -> list[int]:
    assert _WORKER_TOKENIZER is not None
    return _WORKER_TOKENIZER.encode(text, **_WORKER_KWARGS)


def encode_many(
    tokenizer: Encoder,
    texts: Sequence[str],
    *,
    processes: int | None = None,
    progress: bool = False,
    desc: str = "encoding",
    **encode_kwargs: Any,
) -> list[list[int]]:
    """`[tokenizer.encode(t, **encode_kwargs) for t in texts]`, spread over `processes` workers
    (default: the CPUs this process may use; 1 runs in this process)."""
    processes = processes or available_cpus()
    bar = _bar(len(texts), progress, desc)
    if processes <= 1 or len(texts) <= 1:
        out = []
        for text in texts:
            out.append(tokenizer.encode(text, **encode_kwargs))
            if bar is not None:
                bar.update(1)
    else:
        chunksize = max(1, min(64, len(texts) // (processes * 8)))
        with ProcessPoolExecutor(
            processes, initializer=_init_worker, initargs=(tokenizer, encode_kwargs)
        ) as pool:
            out = []
            for ids in pool.map(_encode_in_worker, texts, chunksize=chunksize):
                out.append(ids)
                if bar is not None:
                    bar.update(1)
    if bar is not None:
        bar.close()
    return out


def split_for_workers(text: str, pattern: str | None, chunk_chars: int = CHUNK_CHARS) -> list[str]:
    """Cut `text` into about `chunk_chars`-sized parts whose separate encodings concatenate to the
    encoding of the whole. Only for the known patterns; other patterns get one part."""
    if len(text) <= chunk_chars or pattern not in PATTERNS.values():
        return [text]
    parts, start = [], 0
    while len(text) - start > chunk_chars:
        match = _SAFE_CUT.search(text, start + chunk_chars)
        if match is None:
            break
        parts.append(text[start : match.start()])
        start = match.start()
    parts.append(text[start:])
    return parts


def split_stream(
    parts: Iterable[str], pattern: str | None, chunk_chars: int = CHUNK_CHARS
) -> Iterator[str]:
    """The text that ``parts`` concatenate to, cut into pieces whose separate encodings
    concatenate to the encoding of the whole, holding at most about ``2 * chunk_chars`` characters
    (plus one part) at a time. Always at least one piece ("" for no text).

    A piece ends at the first safe cut (``_SAFE_CUT``, as ``split_for_workers`` cuts) at least
    ``chunk_chars`` characters into it and less than ``2 * chunk_chars``. When there is none and
    more than ``2 * chunk_chars`` characters are left, it ends at the first safe or fallback cut
    (``_FALLBACK_CUT``) at least ``chunk_chars`` in; failing both, the rest of the text is one
    piece. So the pieces are those of ``split_for_workers`` whenever its pieces (all but the last)
    are shorter than ``2 * chunk_chars``, and always depend on the text only, not on how it was
    cut into ``parts``. Only text with no cut at all for a long stretch (one pre-tokenization
    piece: a run of letters or of CJK characters, say) is held whole. Other patterns than the
    known ones get one piece, the whole text.
    """
    if chunk_chars < 1:
        raise ValueError(f"chunk_chars must be at least 1, got {chunk_chars}")
    if pattern not in PATTERNS.values():
        yield "".join(parts)
        return
    limit = 2 * chunk_chars  # a piece is cut by _SAFE_CUT alone when it is shorter than this
    # buf = [lead char(s) of context] + the text of the current piece not yet cut, in characters.
    # The lead is the last character of the previous piece: _SAFE_CUT looks two characters back.
    buf, lead = "", 0
    pending: list[str] = []  # parts not yet joined into buf
    pending_chars = 0
    need = limit + 1  # characters of the piece wanted in buf before looking for a cut again
    yielded = False
    for part in _sliced(parts, chunk_chars):
        pending.append(part)
        pending_chars += len(part)
        if len(buf) - lead + pending_chars < need:
            continue
        buf += "".join(pending)
        pending.clear()
        pending_chars = 0
        while (cut := _find_cut(buf, lead, chunk_chars, final=False)) is not None:
            yield buf[lead:cut]
            yielded = True
            buf, lead = buf[cut - 1 :], 1
        size = len(buf) - lead
        # no cut yet: at least `limit + 1` characters decide; beyond that, grow geometrically so a
        # long stretch without any cut is joined a logarithmic number of times, not once per part
        need = limit + 1 if size <= limit else size + max(size // 2, chunk_chars)
    buf += "".join(pending)
    while (cut := _find_cut(buf, lead, chunk_chars, final=True)) is not None:
        yield buf[lead:cut]
        yielded = True
        buf, lead = buf[cut - 1 :], 1
    if len(buf) > lead or not yielded:
        yield buf[lead:]


def line_pieces(parts: Iterable[str], size: int) -> Iterator[str]:
    """The text ``parts`` concatenate to, cut after the first ``\n`` at least ``size``
    characters into each piece (a longer line stays whole); at least one piece ("" for none).
    For a tokenizer that says ``cuts_after_newline``: no token spans a line end."""
    buf, searched, yielded = "", size - 1, False  # no "\n" in buf[size - 1 : searched]
    for part in parts:
        for i in range(0, len(part), size):  # a whole text in one part: held once, not copied
            buf += part[i : i + size]
            while len(buf) >= size and (cut := buf.find("\n", searched) + 1):
                yield buf[:cut]
                buf, searched, yielded = buf[cut:], size - 1, True
            searched = max(searched, len(buf))
    if buf or not yielded:
        yield buf


def _sliced(parts: Iterable[str], size: int) -> Iterator[str]:
    """``parts`` with each one longer than ``size`` characters cut in slices of ``size``: joined
    whole into the buffer, a long part (a whole text in one string) would be copied again after
    every cut, quadratic in its length."""
    for part in parts:
        if len(part) <= size:
            yield part
        else:
            yield from (part[i : i + size] for i in range(0, len(part), size))


def _find_cut(buf: str, lead: int, chunk_chars: int, *, final: bool) -> int | None:
    """Where in ``buf`` the piece starting at ``buf[lead]`` ends (see ``split_stream``), or None:
    no cut in the whole text when ``final``, else not decided by the characters in ``buf`` yet.

    A match found in ``buf`` is a match in the whole text (both regexes look one character ahead,
    and a match needs that character), and a match not yet found lies at or after ``len(buf)``.
    """
    start, limit = lead + chunk_chars, lead + 2 * chunk_chars
    safe = _SAFE_CUT.search(buf, start)
    if safe is not None and safe.start() < limit:
        return safe.start()
    if len(buf) <= limit:  # the piece might still end at a safe cut before the limit
        return None
    fallback = _FALLBACK_CUT.search(buf, start)
    found = [m.start() for m in (safe, fallback) if m is not None]
    return min(found) if found else None


def encode_files(
    tokenizer: Encoder,
    paths: Sequence[str | Path],
    *,
    processes: int | None = None,
    progress: bool = False,
    append_eot: bool = False,
    dtype: Any = np.uint32,
    **encode_kwargs: Any,
) -> list[np.ndarray]:
    """One id array per UTF-8 text file (with the end-of-text id appended when `append_eot`).
    Large files are cut at safe places so all workers stay busy."""
    pattern = getattr(tokenizer, "pattern", None)
    parts: list[str] = []
    owner: list[int] = []
    for index, path in enumerate(paths):
        try:
            with open(path, encoding="utf-8", newline="") as f:  # "\r\n" kept, as encode sees it
                text = f.read()
        except UnicodeDecodeError as exc:
            raise TokenizerError(f"{path}: not UTF-8 text (byte {exc.start})") from None
        pieces = split_for_workers(text, pattern)
        parts += pieces
        owner += [index] * len(pieces)
    encoded = encode_many(
        tokenizer, parts, processes=processes, progress=progress, desc="files", **encode_kwargs
    )
    eot = getattr(tokenizer, "eot_id", None)
    if append_eot and eot is None:
        raise TokenizerError("append_eot=True but this tokenizer has no end-of-text token")
    per_file: list[list[int]] = [[] for _ in paths]
    for index, ids in zip(owner, encoded):
        per_file[index] += ids
    limit = np.iinfo(dtype).max
    arrays = []
    for ids in per_file:
        if append_eot:
            ids.append(eot)
        if ids and max(ids) > limit:
            raise TokenizerError(f"token id {max(ids)} does not fit dtype {np.dtype(dtype).name}")
        arrays.append(np.asarray(ids, dtype=dtype))
    return arrays


def _bar(total: int, enabled: bool, desc: str):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="text")
