"""Encoding large corpora across processes, with a progress bar (used by the data layer).

Texts are independent, so they are encoded in worker processes and returned in input order. A
large file is cut into chunks only where the GPT-2/GPT-4 patterns can never join the two sides
(after a newline that has a non-space character on each side), so the ids equal a single encode.
"""

from __future__ import annotations

from collections.abc import Sequence
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
