"""Documents to token ids: one sequence with the end-of-text token after every document.

Any tokenizer works that has ``eot_id`` and ``vocab_size`` and either ``encode_ordinary(text)``
(preferred: special-token text inside a document stays ordinary text) or ``encode(text)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

import numpy as np

from scratchllm.data.sources import Document
from scratchllm.errors import DataError

# Token ids fit in uint16 up to this vocabulary size (GPT-2's 50,257 does); uint32 beyond it.
UINT16_VOCAB_LIMIT = 2**16


class TextEncoder(Protocol):
    """The part of a tokenizer the data layer uses."""

    @property
    def eot_id(self) -> int: ...

    @property
    def vocab_size(self) -> int: ...


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned dtype that holds every id of the vocabulary."""
    return np.dtype(np.uint16 if vocab_size <= UINT16_VOCAB_LIMIT else np.uint32)


def encode_text(tokenizer: TextEncoder, text: str) -> list[int]:
    """Ids of ``text`` with special-token strings treated as ordinary text where possible."""
    encode = getattr(tokenizer, "encode_ordinary", None) or tokenizer.encode  # type: ignore[attr-defined]
    return list(encode(text))


def document_ids(
    tokenizer: TextEncoder, text: str, *, bos_id: int | None = None, eot: bool = True
) -> np.ndarray:
    """One document's ids: ``[bos] + ids + [eot]`` (each part optional), as int64."""
    ids = encode_text(tokenizer, text)
    head = [] if bos_id is None else [bos_id]
    tail = [tokenizer.eot_id] if eot else []
    return np.asarray(head + ids + tail, dtype=np.int64)


def encode_documents(
    docs: Iterable[Document | str],
    tokenizer: TextEncoder,
    *,
    bos_id: int | None = None,
    eot: bool = True,
) -> np.ndarray:
    """All documents as one id sequence, each followed by ``eot_id`` (and started by ``bos_id``).

    The result has the smallest dtype for the vocabulary, ready for ``WindowDataset``.
    """
    if eot and tokenizer.eot_id is None:
        raise DataError(
            "the tokenizer has no end-of-text token to separate documents; train it with one "
            "(e.g. `scratchllm tokenizer train ... --special '<|endoftext|>'`)"
        )
    dtype = token_dtype(tokenizer.vocab_size)
    parts = []  # each document in the final dtype: no int64 copy of the whole corpus
    for i, d in enumerate(docs):
        ids = document_ids(tokenizer, d if isinstance(d, str) else d.text, bos_id=bos_id, eot=eot)
        check_ids(ids, tokenizer.vocab_size, d if isinstance(d, str) else d.name, i)
        parts.append(ids.astype(dtype))
    if not parts:
        return np.zeros(0, dtype=dtype)
    return np.concatenate(parts)


def check_ids(ids: np.ndarray, vocab_size: int, name: str, index: int) -> None:
    """A DataError naming the document when an id does not fit the vocabulary (it would wrap
    around silently in the uint16/uint32 storage chosen from ``vocab_size``)."""
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        bad = int(ids.max() if ids.max() >= vocab_size else ids.min())
        label = f"document {index}" if len(name) > 60 or "\n" in name else repr(name)
        raise DataError(
            f"{label}: token id {bad} is outside the tokenizer's vocab_size {vocab_size}; "
            "its vocab_size is wrong or the begin token is not in its vocabulary"
        )


def document_boundaries(lengths: Sequence[int]) -> np.ndarray:
    """Start offsets of documents of the given lengths in their concatenation (plus the end)."""
    return np.concatenate([[0], np.cumsum(np.asarray(lengths, dtype=np.int64))])
