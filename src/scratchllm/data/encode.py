"""Documents to token ids: one sequence with the end-of-text token after every document.

Any tokenizer works that has ``eot_id`` and ``vocab_size`` and either ``encode_ordinary(text)``
(preferred: special-token text inside a document stays ordinary text) or ``encode(text)``.

A long document is encoded a piece at a time (``encode_pieces``: cut where encoding the pieces
apart gives the ids of the whole) and each piece's ids go straight into the small dtype, so the
ids of a large corpus are never held as one Python list (about 36 bytes an id, against 2 or 4).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol

import numpy as np

from scratchllm.data.sources import Document, FileDocument
from scratchllm.errors import DataError

# Token ids fit in uint16 up to this vocabulary size (GPT-2's 50,257 does); uint32 beyond it.
UINT16_VOCAB_LIMIT = 2**16
# Characters of a document encoded at a time: its ids are a Python list only for this long.
ENCODE_PIECE_CHARS = 1 << 20


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


def document_parts(doc: Document | FileDocument | str) -> Iterable[str]:
    """A document's text in parts: a ``FileDocument`` read block by block, others whole."""
    if isinstance(doc, FileDocument):
        return doc.parts()
    return [doc if isinstance(doc, str) else doc.text]


def encode_pieces(
    tokenizer: TextEncoder, parts: Iterable[str], piece_chars: int | None = None
) -> Iterator[tuple[str, list[int]]]:
    """(piece, its ids) for the text ``parts`` concatenate to, cut into pieces of about
    ``piece_chars`` (default ``ENCODE_PIECE_CHARS``) characters where encoding them apart gives
    the ids of the whole: ``tokenizer.parallel.split_stream`` by the tokenizer's pattern, or
    ``line_pieces`` for a tokenizer whose ``cuts_after_newline`` is true; one piece, the whole
    text, for a tokenizer with neither."""
    from scratchllm.tokenizer.parallel import line_pieces, split_stream

    size = piece_chars or ENCODE_PIECE_CHARS
    if getattr(tokenizer, "cuts_after_newline", False):
        pieces = line_pieces(parts, size)
    else:
        pieces = split_stream(parts, getattr(tokenizer, "pattern", None), size)
    for piece in pieces:
        yield piece, encode_text(tokenizer, piece)


def document_ids(
    tokenizer: TextEncoder, text: str, *, bos_id: int | None = None, eot: bool = True
) -> np.ndarray:
    """One document's ids: ``[bos] + ids + [eot]`` (each part optional), as int64."""
    ids = encode_text(tokenizer, text)
    head = [] if bos_id is None else [bos_id]
    tail = [tokenizer.eot_id] if eot else []
    return np.asarray(head + ids + tail, dtype=np.int64)


def encode_documents(
    docs: Iterable[Document | FileDocument | str],
    tokenizer: TextEncoder,
    *,
    bos_id: int | None = None,
    eot: bool = True,
) -> np.ndarray:
    """All documents as one id sequence, each followed by ``eot_id`` (and started by ``bos_id``).

    The result has the smallest dtype for the vocabulary, ready for ``WindowDataset``; a long
    document is encoded a piece at a time, and a ``FileDocument`` read a block at a time.
    """
    if eot and tokenizer.eot_id is None:
        raise DataError(
            "the tokenizer has no end-of-text token to separate documents; train it with one "
            "(e.g. `scratchllm tokenizer train ... --special '<|endoftext|>'`)"
        )
    dtype = token_dtype(tokenizer.vocab_size)
    head = [] if bos_id is None else [bos_id]
    tail = [tokenizer.eot_id] if eot else []
    parts = []  # each piece in the final dtype: no list or int64 copy of the whole corpus
    for i, d in enumerate(docs):
        name = d if isinstance(d, str) else d.name
        checked_array(head + tail, tokenizer.vocab_size, dtype, name, i)
        parts.append(np.asarray(head, dtype=dtype))
        for _, ids in encode_pieces(tokenizer, document_parts(d)):
            parts.append(checked_array(ids, tokenizer.vocab_size, dtype, name, i))
        parts.append(np.asarray(tail, dtype=dtype))
    if not parts:
        return np.zeros(0, dtype=dtype)
    return np.concatenate(parts)


def checked_array(
    ids: list[int], vocab_size: int, dtype: np.dtype, name: str, index: int
) -> np.ndarray:
    """``ids`` as an array of ``dtype``, checked to fit the vocabulary first (``check_ids``)."""
    array = np.asarray(ids, dtype=np.int64)
    check_ids(array, vocab_size, name, index)
    return array.astype(dtype)


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
