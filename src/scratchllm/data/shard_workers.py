"""Encoding a corpus for ``shards.prepare_shards`` in worker processes, in order and bounded.

Documents are cut into pieces (``tokenizer.parallel.split_stream``: where encoding the pieces
apart gives the ids of the whole), pieces are grouped into chunks of about ``chunk_bytes``, and
chunks are encoded by a pool of forked workers with at most ``2 * workers`` chunks in flight, so
memory stays bounded whatever the size of one file. Workers end on their own when the process
that started them is gone.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_all_start_methods, get_context
from typing import Any

import numpy as np

from scratchllm.data.encode import TextEncoder, encode_text
from scratchllm.data.sources import Document, FileDocument
from scratchllm.errors import DataError

_WORKER: dict[str, Any] = {}


@dataclass(frozen=True)
class Piece:
    """A document, or one part of a long one (cut where encoding the parts apart changes nothing)."""

    doc: Document | FileDocument
    text: str
    first: bool  # gets the begin token and counts the document
    last: bool  # gets the end-of-text token and completes the document


# How often a worker checks that the process that started it is still alive.
_PARENT_POLL_SECONDS = 0.5


def _init_worker(
    tokenizer: TextEncoder, bos_id: int | None, dtype: str, parent_pid: int | None = None
) -> None:
    _WORKER.update(tokenizer=tokenizer, bos_id=bos_id, dtype=np.dtype(dtype))
    if parent_pid is not None:
        threading.Thread(target=_exit_when_orphaned, args=(parent_pid,), daemon=True).start()


def _exit_when_orphaned(parent_pid: int) -> None:
    """End this worker once its parent is gone. A parent killed by SIGTERM or SIGKILL runs no
    cleanup, and its workers would otherwise wait forever to hand back their last chunk."""
    while os.getppid() == parent_pid:
        time.sleep(_PARENT_POLL_SECONDS)
    os._exit(1)


def _encode_pieces(pieces: list[tuple[str, bool, bool]]) -> list[np.ndarray]:
    """``[bos] + ids + [eot]`` of each piece (bos/eot only at a document's ends), in shard dtype."""
    tok, bos, dtype = _WORKER["tokenizer"], _WORKER["bos_id"], _WORKER["dtype"]
    out = []
    for text, first, last in pieces:
        head = [bos] if first and bos is not None else []
        tail = [tok.eot_id] if last else []
        ids = np.asarray(head + encode_text(tok, text) + tail, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= tok.vocab_size):
            bad = int(ids.max() if ids.max() >= tok.vocab_size else ids.min())
            raise DataError(
                f"token id {bad} is outside the tokenizer's vocab_size {tok.vocab_size} "
                f"(text starting {text[:40]!r}); its vocab_size is wrong or the begin token "
                "is not in its vocabulary"
            )
        out.append(ids.astype(dtype))
    return out


def _doc_pieces(
    doc: Document | FileDocument, tokenizer: TextEncoder, chunk_bytes: int
) -> Iterator[tuple[str, bool, bool]]:
    """(text, first, last) of each piece of ``doc``: pieces of about ``chunk_bytes`` characters,
    cut by ``split_stream`` (the whole document when the tokenizer's pattern is not a known one).
    A ``FileDocument`` is read as the pieces are taken, so only about two pieces are held."""
    from scratchllm.tokenizer.parallel import split_stream

    parts = doc.parts() if isinstance(doc, FileDocument) else [doc.text]
    pieces = split_stream(parts, getattr(tokenizer, "pattern", None), chunk_bytes)
    held, first = next(pieces), True  # one piece held back: is it the last?
    for piece in pieces:
        yield held, first, False
        held, first = piece, False
    yield held, first, True


def _chunks(
    docs: Iterator[Document | FileDocument],
    tokenizer: TextEncoder,
    chunk_bytes: int,
    skip_pieces: int = 0,
    skip_text_bytes: int | None = None,
) -> Iterator[list[Piece]]:
    """Chunks of about ``chunk_bytes`` of pieces; the first document's first ``skip_pieces``
    pieces are left out (written before a resume). ``skip_text_bytes``: the UTF-8 bytes those
    pieces must hold (checked, so that a resume never continues a document cut otherwise)."""
    chunk: list[Piece] = []
    size = 0
    for doc in docs:
        skipped = 0
        for i, (part, first, last) in enumerate(_doc_pieces(doc, tokenizer, chunk_bytes)):
            if i < skip_pieces:
                skipped += len(part.encode("utf-8"))
                wrong_bytes = i == skip_pieces - 1 and skip_text_bytes not in (None, skipped)
                if wrong_bytes or last:  # other text, or fewer pieces, than were written
                    raise DataError(
                        f"{doc.name}: its first {skip_pieces} pieces are not the ones the "
                        "interrupted run wrote (its text changed, or it was cut by another "
                        "version of scratchllm), so the run cannot be resumed; prepare again "
                        "with --overwrite"
                    )
                continue
            chunk.append(Piece(doc, part, first, last))
            size += len(part)
            if size >= chunk_bytes:
                yield chunk
                chunk, size = [], 0
        skip_pieces = 0  # only the document the resume starts inside was partly written
    if chunk:
        yield chunk


def encoded_chunks(
    docs: Iterator[Document | FileDocument],
    tokenizer: TextEncoder,
    bos_id: int | None,
    dtype: str,
    workers: int,
    chunk_bytes: int,
    skip_pieces: int = 0,
    skip_text_bytes: int | None = None,
) -> Iterator[tuple[list[Piece], list[np.ndarray]]]:
    """Chunks of pieces with their ids, in order; at most ``2 * workers`` chunks in flight."""
    init_args = (tokenizer, bos_id, dtype)
    chunks = _chunks(docs, tokenizer, chunk_bytes, skip_pieces, skip_text_bytes)
    if workers <= 1:
        _init_worker(*init_args)
        for chunk in chunks:
            yield chunk, _encode_pieces([(p.text, p.first, p.last) for p in chunk])
        return
    # fork (as torch's DataLoader does on Linux): no re-import of __main__, no tokenizer pickling;
    # the workers run only numpy and the tokenizer. spawn where fork does not exist.
    ctx = get_context("fork" if "fork" in get_all_start_methods() else "spawn")
    with ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=_init_worker, initargs=(*init_args, os.getpid())
    ) as pool:
        pending: deque[tuple[list[Piece], Future[list[np.ndarray]]]] = deque()
        for chunk in chunks:
            job = [(p.text, p.first, p.last) for p in chunk]
            pending.append((chunk, pool.submit(_encode_pieces, job)))
            if len(pending) >= 2 * workers:
                done, future = pending.popleft()
                yield done, future.result()
        while pending:
            done, future = pending.popleft()
            yield done, future.result()
