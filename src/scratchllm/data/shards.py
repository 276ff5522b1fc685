"""Pretokenized shards: a corpus tokenized once, stored as flat memory-mappable id files.

Layout of an output directory::

    index.json           what is there and how it was made (format below)
    train_000000.bin     raw token ids (uint16 when the vocabulary fits, else uint32), no header
    train_000001.bin     ...; every shard but the last of a split holds exactly shard_tokens ids
    val_000000.bin

Each document is written as ``[bos] + ids + [eot]`` to the split chosen by
``sources.is_validation(name, val_fraction, seed)`` (a hash of the name: deterministic and needs no
pass over the whole corpus). A document may continue from one shard into the next, so the
concatenation of a split's shards is exactly the concatenation of its documents.

Resuming: ids are appended to the open shard of each split, and after every chunk of documents
``index.json`` is rewritten atomically with the number of source documents done and each shard's
committed length. A rerun with the same settings truncates any bytes written after the last commit,
skips the documents already done (reading, not tokenizing, them) and continues, so an interrupted
run ends byte-identical to an uninterrupted one.

A source file is read more than once (looked at, streamed, and read again to resume): each read is
held to the file's ``sources.FileStamp`` from the start of the run, and all of them are checked
again at its end. A file that changes in between stops the run with a ``SourceChangedError``
naming it, and the shards written so far are discarded (they may mix two versions of the file),
so that running again starts afresh.

Memory stays bounded by the chunks in flight: ``prepare_path`` reads a text file block by block
(``sources.FileDocument``) and ``tokenizer.parallel.split_stream`` cuts it into pieces of about
``chunk_bytes`` characters where encoding the pieces apart gives the ids of the whole, so that one
file larger than memory is never held whole either.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import tempfile
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from scratchllm.data.encode import TextEncoder, token_dtype
from scratchllm.data.shard_workers import encoded_chunks
from scratchllm.data.sources import (
    BUILTIN,
    DEFAULT_INCLUDE,
    Document,
    FileDocument,
    FileStamp,
    SourceChangedError,
    SourceOptions,
    is_validation,
    iter_file_documents,
    iter_text_sources,
    resolve_files,
)
from scratchllm.errors import DataError
from scratchllm.system import available_cpus

INDEX_NAME = "index.json"
FORMAT_VERSION = 1
SPLITS = ("train", "val")
SHARD_DTYPES = ("uint16", "uint32")  # the id types shards are written in
# 2**24 ids = 32 MiB of uint16 per shard: large enough for few files, small enough to stream.
DEFAULT_SHARD_TOKENS = 2**24
# Text handed to a worker at a time; the index is committed after each chunk.
DEFAULT_CHUNK_BYTES = 1 << 20


@dataclass
class ShardInfo:
    """One shard file of a split: its name, committed ids and documents that start in it."""

    file: str
    tokens: int = 0
    documents: int = 0


@dataclass
class PrepareSettings:
    """Everything that determines the bytes of the shards; a resume must match all of it."""

    source: str  # a description of the source (the path as given)
    tokenizer_hash: str  # sha256 of the tokenizer's saved files
    vocab_size: int
    eot_id: int
    bos_id: int | None
    dtype: str
    shard_tokens: int
    val_fraction: float
    seed: int
    # sha256 of the source files' names and sizes in reading order ("" when not from files), so
    # that a resume over a corpus that changed since the interrupted run is refused
    source_files: str = ""


@dataclass
class PrepareState:
    """The contents of index.json."""

    settings: PrepareSettings
    next_document: int = 0  # source documents fully written
    # pieces of document `next_document` already written (a long document is cut into pieces of
    # about `chunk_bytes`; progress is committed after every chunk, inside a document too)
    next_piece: int = 0
    chunk_bytes: int = 0  # the piece size those pieces were cut with (0: none written yet)
    text_bytes: int = 0  # UTF-8 bytes of the text written (the pieces of a cut document too)
    complete: bool = False
    splits: dict[str, list[ShardInfo]] = field(default_factory=lambda: {s: [] for s in SPLITS})
    format: int = FORMAT_VERSION

    def tokens(self, split: str | None = None) -> int:
        names = SPLITS if split is None else (split,)
        return sum(s.tokens for name in names for s in self.splits[name])

    def documents(self, split: str | None = None) -> int:
        names = SPLITS if split is None else (split,)
        return sum(s.documents for name in names for s in self.splits[name])

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["totals"] = {
            s: {"tokens": self.tokens(s), "documents": self.documents(s)} for s in SPLITS
        }
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PrepareState:
        splits = {s: [ShardInfo(**info) for info in data["splits"].get(s, [])] for s in SPLITS}
        settings = PrepareSettings(**data["settings"])
        if settings.dtype not in SHARD_DTYPES:
            raise TypeError(f"settings.dtype must be one of {SHARD_DTYPES}, got {settings.dtype!r}")
        return cls(
            settings=settings,
            next_document=int(data["next_document"]),
            next_piece=int(data.get("next_piece", 0)),
            chunk_bytes=int(data.get("chunk_bytes", 0)),
            text_bytes=int(data["text_bytes"]),
            complete=bool(data["complete"]),
            splits=splits,
            format=int(data["format"]),
        )


@dataclass(frozen=True)
class PrepareReport:
    """What a prepare run produced (the whole corpus, including any earlier interrupted run)."""

    out_dir: Path
    documents: dict[str, int]
    tokens: dict[str, int]
    text_bytes: int
    resumed_from: int  # source documents that an earlier run had already written

    @property
    def bytes_per_token(self) -> float:
        total = sum(self.tokens.values())
        return self.text_bytes / total if total else 0.0


def tokenizer_hash(tokenizer: Any) -> str:
    """sha256 over the tokenizer's saved files (names and bytes), else over its pickle."""
    digest = hashlib.sha256()
    if hasattr(tokenizer, "save"):
        with tempfile.TemporaryDirectory() as tmp:
            tokenizer.save(tmp)
            for path in sorted(Path(tmp).rglob("*")):
                if path.is_file():
                    digest.update(path.relative_to(tmp).as_posix().encode() + b"\0")
                    digest.update(path.read_bytes())
    else:
        import pickle

        digest.update(pickle.dumps(tokenizer, protocol=4))
    return digest.hexdigest()


def read_index(out_dir: str | Path) -> PrepareState:
    """The index of a shard directory; a DataError naming the file when it is missing or broken."""
    path = Path(out_dir) / INDEX_NAME
    if not path.is_file():
        raise DataError(f"no shard index at {path}: run `scratchllm data prepare` first")
    try:
        return PrepareState.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        # AttributeError: a field that should be an object holds another JSON value
        raise DataError(f"{path}: not a valid shard index ({exc})") from None


def _write_index(out_dir: Path, state: PrepareState) -> None:
    tmp = out_dir / (INDEX_NAME + ".tmp")
    tmp.write_text(json.dumps(state.to_json(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, out_dir / INDEX_NAME)


class _SplitWriter:
    """Appends ids to one split's shards, starting a new file every ``shard_tokens`` ids."""

    def __init__(
        self, out_dir: Path, split: str, shards: list[ShardInfo], settings: PrepareSettings
    ):
        self.out_dir = out_dir
        self.split = split
        self.shards = shards
        self.dtype = np.dtype(settings.dtype)
        self.shard_tokens = settings.shard_tokens
        self.fh: BinaryIO | None = None
        for info in shards:  # resume: drop anything written after the last commit
            path = out_dir / info.file
            if not path.is_file() or path.stat().st_size < info.tokens * self.dtype.itemsize:
                raise DataError(
                    f"{path}: missing or shorter than the {info.tokens} ids {INDEX_NAME} says it "
                    "holds, so the run cannot be resumed; prepare again with --overwrite"
                )
            os.truncate(path, info.tokens * self.dtype.itemsize)
        if shards:
            self.fh = open(out_dir / shards[-1].file, "ab")
        for stale in sorted(out_dir.glob(f"{split}_*.bin"))[len(shards) :]:
            stale.unlink()

    def write(self, ids: np.ndarray, *, new_document: bool) -> None:
        """Append ``ids``; ``new_document`` counts a document starting here."""
        ids = ids.astype(self.dtype, copy=False)
        first = new_document
        while len(ids) or first:
            if self.fh is None or self.shards[-1].tokens == self.shard_tokens:
                self._open_next()
            info = self.shards[-1]
            if first:
                info.documents += 1
                first = False
            part = ids[: self.shard_tokens - info.tokens]
            assert self.fh is not None
            self.fh.write(part.tobytes())
            info.tokens += len(part)
            ids = ids[len(part) :]

    def _open_next(self) -> None:
        self.close()
        info = ShardInfo(f"{self.split}_{len(self.shards):06d}.bin")
        self.shards.append(info)
        self.fh = open(self.out_dir / info.file, "wb")

    def flush(self) -> None:
        if self.fh is not None:
            self.fh.flush()
            os.fsync(self.fh.fileno())

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None


# ----------------------------------------------------------------------------- prepare
def prepare_shards(
    docs: Iterable[Document | FileDocument],
    tokenizer: TextEncoder,
    out_dir: str | Path,
    *,
    source: str = "",
    val_fraction: float = 0.0,
    seed: int = 0,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    bos_id: int | None = None,
    workers: int | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    overwrite: bool = False,
    progress: bool = False,
    total_bytes: int | None = None,
    source_files: str = "",
) -> PrepareReport:
    """Tokenize ``docs`` into shards under ``out_dir``, resuming an unfinished run there.

    ``docs`` must give the same documents in the same order on every call (``iter_text_sources``
    does); a ``FileDocument`` is read in blocks, never whole. ``workers`` processes tokenize in
    parallel (default: all CPUs); the shards do not depend on it. An ``out_dir`` holding a run
    with other settings is refused unless ``overwrite``.
    """
    if tokenizer.eot_id is None:
        raise DataError("the tokenizer has no end-of-text token to separate documents")
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if shard_tokens < 1:
        raise DataError(f"shard_tokens must be at least 1, got {shard_tokens}")
    settings = PrepareSettings(
        source=str(source),
        tokenizer_hash=tokenizer_hash(tokenizer),
        vocab_size=int(tokenizer.vocab_size),
        eot_id=int(tokenizer.eot_id),
        bos_id=bos_id,
        dtype=token_dtype(tokenizer.vocab_size).name,
        shard_tokens=shard_tokens,
        val_fraction=val_fraction,
        seed=seed,
        source_files=source_files,
    )
    out = Path(out_dir)
    state = _start_state(out, settings, overwrite)
    resumed_from = state.next_document
    if not state.complete:
        _run(
            docs,
            tokenizer,
            out,
            state,
            workers or available_cpus(),
            chunk_bytes,
            progress,
            total_bytes,
        )
    return PrepareReport(
        out_dir=out,
        documents={s: state.documents(s) for s in SPLITS},
        tokens={s: state.tokens(s) for s in SPLITS},
        text_bytes=state.text_bytes,
        resumed_from=resumed_from,
    )


def _start_state(out: Path, settings: PrepareSettings, overwrite: bool) -> PrepareState:
    if (out / INDEX_NAME).exists() and not overwrite:
        state = read_index(out)
        if not state.settings.source_files:  # an index written before file lists were recorded
            state.settings.source_files = settings.source_files
        if state.settings != settings:
            theirs, mine = asdict(state.settings), asdict(settings)
            changed = [k for k in mine if theirs[k] != mine[k]]
            diff = ", ".join(
                "source files: their names or sizes changed"
                if k == "source_files"
                else f"{k}: {theirs[k]!r} -> {mine[k]!r}"
                for k in changed
            )
            raise DataError(
                f"{out} holds shards prepared with other settings ({diff}); "
                "choose another --out or pass --overwrite"
            )
        return state
    out.mkdir(parents=True, exist_ok=True)
    for old in [*out.glob("train_*.bin"), *out.glob("val_*.bin"), out / INDEX_NAME]:
        old.unlink(missing_ok=True)
    state = PrepareState(settings)
    _write_index(out, state)
    return state


def _run(
    docs: Iterable[Document | FileDocument],
    tokenizer: TextEncoder,
    out: Path,
    state: PrepareState,
    workers: int,
    chunk_bytes: int,
    progress: bool,
    total_bytes: int | None,
) -> None:
    from tqdm.auto import tqdm

    settings = state.settings
    writers = {s: _SplitWriter(out, s, state.splits[s], settings) for s in SPLITS}
    todo = iter(docs)
    bar = tqdm(
        total=total_bytes,
        initial=state.text_bytes,
        unit="B",
        unit_scale=True,
        desc="prepare",
        disable=not progress,
    )
    done_docs, done_bytes, done_pieces = state.next_document, state.text_bytes, state.next_piece
    if done_pieces:  # a document was cut mid-way: its pieces must be cut as they were
        chunk_bytes = state.chunk_bytes
    state.chunk_bytes = chunk_bytes
    try:
        # A resume inside a document checks that the pieces it skips hold the text bytes the
        # index says were written: so the documents before it are read (not tokenized) to count.
        before = 0
        for doc in itertools.islice(todo, state.next_document):
            if state.next_piece:
                before += _text_bytes(doc)
        skip_text = state.text_bytes - before if done_pieces else None
        chunks = encoded_chunks(
            todo,
            tokenizer,
            settings.bos_id,
            settings.dtype,
            workers,
            chunk_bytes,
            done_pieces,
            skip_text,
        )
        for chunk, encoded in chunks:
            for piece, ids in zip(chunk, encoded, strict=True):
                val = is_validation(piece.doc.name, settings.val_fraction, settings.seed)
                writers["val" if val else "train"].write(ids, new_document=piece.first)
                done_pieces += 1
                # per piece: a huge document is neither encoded again whole nor shown at 0% until
                # its end
                done_bytes += len(piece.text.encode("utf-8"))
                if piece.last:
                    done_docs += 1
                    done_pieces = 0
            # commit after every chunk, also inside a long document (one big file)
            for writer in writers.values():
                writer.flush()
            bar.update(done_bytes - state.text_bytes)
            state.next_document, state.text_bytes = done_docs, done_bytes
            state.next_piece = done_pieces
            _write_index(out, state)
    except SourceChangedError as exc:
        for writer in writers.values():
            writer.close()
        _discard(out, settings)
        note = "; the shards written so far were discarded"
        raise SourceChangedError(exc.file, exc.what, "prepared", note) from None
    finally:
        bar.close()
        for writer in writers.values():
            writer.close()
    if state.tokens() == 0:
        raise DataError(f"no documents to prepare from {settings.source or 'the source'}")
    _warn_empty_split(state)
    state.complete = True
    _write_index(out, state)


def _discard(out: Path, settings: PrepareSettings) -> None:
    """Start the run over: no shards, nothing done. The file list is left unrecorded (taken from
    the next run), as the files were not what the recorded list says."""
    for old in [*out.glob("train_*.bin"), *out.glob("val_*.bin")]:
        old.unlink(missing_ok=True)
    _write_index(out, PrepareState(dataclasses.replace(settings, source_files="")))


def _text_bytes(doc: Document | FileDocument) -> int:
    """UTF-8 bytes of a document's text, read in blocks for a ``FileDocument``."""
    if isinstance(doc, FileDocument):
        return sum(len(part.encode("utf-8")) for part in doc.parts())
    return len(doc.text.encode("utf-8"))


def _warn_empty_split(state: PrepareState) -> None:
    """The split is by whole documents: a corpus of one file (or a few) can leave a split empty."""
    if state.settings.val_fraction == 0:
        return
    for split in SPLITS:
        if state.documents(split) == 0:
            warnings.warn(
                f"val_fraction={state.settings.val_fraction} sent no document to {split!r}: "
                f"the split is by whole documents and the corpus has {state.documents()} document(s) "
                "(cut a single large file into several, or try another --seed)",
                stacklevel=3,
            )


# ----------------------------------------------------------------------------- reading
def open_shards(out_dir: str | Path, split: str = "train") -> list[np.memmap]:
    """Read-only memory maps of one split's shards; a DataError if prepare has not finished."""
    if split not in SPLITS:
        raise DataError(f"split must be one of {SPLITS}, got {split!r}")
    out = Path(out_dir)
    state = read_index(out)
    if not state.complete:
        raise DataError(
            f"{out}: prepare has not finished; rerun it with the same arguments to resume"
        )
    dtype = np.dtype(state.settings.dtype)
    arrays = []
    for info in state.splits[split]:
        path = out / info.file
        expected = info.tokens * dtype.itemsize
        if not path.is_file() or path.stat().st_size != expected:
            raise DataError(f"{path}: missing or not {expected} bytes as {INDEX_NAME} says")
        arrays.append(np.memmap(path, dtype=dtype, mode="r", shape=(info.tokens,)))
    return arrays


class JoinedShards:
    """A split's shards read as one 1-D sequence without joining them in memory: ``len`` and
    contiguous slices, copied out of the memory maps (what ``perplexity`` reads, a window at a
    time), where ``np.concatenate`` would load the whole split."""

    ndim = 1

    def __init__(self, shards: list[np.ndarray]) -> None:
        if not shards:
            raise DataError("no shards to join")
        self.shards = shards
        self.dtype = shards[0].dtype
        self.starts = np.concatenate([[0], np.cumsum([len(a) for a in shards])]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, key: slice) -> np.ndarray:
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError(f"JoinedShards takes contiguous slices only, got {key!r}")
        start, stop, _ = key.indices(len(self))
        parts = []
        i = int(np.searchsorted(self.starts, start, side="right")) - 1  # the shard holding start
        while start < stop:
            end = min(stop, int(self.starts[i + 1]))
            parts.append(self.shards[i][start - self.starts[i] : end - self.starts[i]])
            start, i = end, i + 1
        return np.concatenate(parts) if parts else np.zeros(0, dtype=self.dtype)


def prepare_path(
    path: str | Path,
    tokenizer: TextEncoder,
    out_dir: str | Path,
    *,
    include: tuple[str, ...] = DEFAULT_INCLUDE,
    exclude: tuple[str, ...] = (),
    text_field: str = "text",
    column: str = "text",
    **kwargs: Any,
) -> PrepareReport:
    """``prepare_shards`` over ``iter_text_sources(path, ...)`` (a file, directory, glob or
    "builtin"), with the progress bar sized by the files' bytes. The files are found once and
    stamped (``sources.FileStamp``): every later read of one is checked against its stamp."""
    read_bytes = kwargs.get("chunk_bytes", DEFAULT_CHUNK_BYTES)
    total, files = None, ""
    if str(path) == BUILTIN:
        docs = iter_text_sources(BUILTIN)
    else:
        options = SourceOptions(include, exclude, text_field, column)
        resolved = resolve_files(path, options)
        stamps = [FileStamp.read(f) for f, _ in resolved]
        # text files stream: read in blocks of chunk_bytes, never whole
        docs = iter_file_documents(
            resolved, options, stream=True, read_bytes=read_bytes, stamps=stamps
        )
        sizes = [(name, stamp.size) for (_, name), stamp in zip(resolved, stamps)]
        total = sum(size for _, size in sizes)
        files = hashlib.sha256(json.dumps(sizes).encode()).hexdigest()
    kwargs.setdefault("total_bytes", total)
    return prepare_shards(docs, tokenizer, out_dir, source=str(path), source_files=files, **kwargs)
