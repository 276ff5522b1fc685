"""Where text comes from: files, directories, globs, JSON Lines, Parquet and the built-in corpus.

Every source becomes a stream of ``Document`` (a stable name and its text) in a fixed order, so
that the same path always gives the same documents: directories and globs are walked in sorted
order. ``iter_text_sources`` streams (a corpus larger than memory never needs to be held at once);
``read_text_sources`` collects the stream into a list and refuses an empty corpus. With
``stream=True`` a text file comes as a ``FileDocument`` instead, whose text is read block by block
(``FileDocument.parts``), so that even one file larger than memory is never held whole.

Text files are read as Python's text mode reads them (no byte order mark, ``\\n`` line ends);
hidden files are left out of directory walks, and a file reached twice is read once.

A file read more than once (``data prepare`` looks at it, then streams it, and reads it again
to resume) is held to the ``FileStamp`` (size, modified time, inode) it had when first looked at:
a file that changes in between is a ``SourceChangedError`` naming it, not a mix of two versions.

Bad input is reported, not fatal, where it can be: empty files are skipped with a warning, and
undecodable bytes are replaced with U+FFFD and counted in a warning. A missing path, a JSON Lines
line that is not a JSON object or lacks the text field, a Parquet column that is not text, and a
corpus with no text are errors that name the path and line.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from scratchllm.data.paths import resolve_files
from scratchllm.errors import DataError

# The name that selects the built-in corpus (scratchllm.data.builtin) instead of a path.
BUILTIN = "builtin"
TEXT_SUFFIXES = (".txt", ".md")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
PARQUET_SUFFIXES = (".parquet",)
DEFAULT_INCLUDE = tuple(f"*{s}" for s in TEXT_SUFFIXES)
_REPLACEMENT = "\ufffd"
# Bytes looked at for a NUL that marks a binary file (as git does, 8000).
_BINARY_SNIFF_BYTES = 8000
_BOM = b"\xef\xbb\xbf"  # UTF-8 byte order mark that Windows editors put first
_REPLACEMENT_BYTES = _REPLACEMENT.encode("utf-8")  # b"\xef\xbf\xbd"
# Bytes read at a time from a streamed text file (FileDocument.parts).
DEFAULT_READ_BYTES = 1 << 20


class SourceChangedError(DataError):
    """A source file changed (size, modified time or inode) between two reads of it."""

    def __init__(self, file: str | Path, what: str, doing: str = "read", note: str = "") -> None:
        self.file, self.what = str(file), what
        super().__init__(
            f"{file} changed while being {doing} ({what}){note}; run again once it no longer "
            "changes"
        )


@dataclass(frozen=True)
class FileStamp:
    """A file as it was first looked at; a later read of the same path must still match it, or
    its text may not be the text read before (a changed size, modified time or inode)."""

    size: int
    mtime_ns: int
    device: int
    inode: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileStamp:
        return cls(st.st_size, st.st_mtime_ns, st.st_dev, st.st_ino)

    @classmethod
    def read(cls, file: str | Path) -> FileStamp:
        return cls.of(os.stat(file))

    def check(self, file: str | Path, st: os.stat_result | None = None) -> None:
        """A SourceChangedError naming ``file`` when ``st`` (default: a fresh stat) differs."""
        try:
            now = FileStamp.of(os.stat(file) if st is None else st)
        except FileNotFoundError:
            raise SourceChangedError(file, "it was removed") from None
        if (now.device, now.inode) != (self.device, self.inode):
            raise SourceChangedError(file, "replaced by another file")
        if now.size != self.size:
            raise SourceChangedError(file, f"{self.size} bytes, now {now.size}")
        if now.mtime_ns != self.mtime_ns:
            raise SourceChangedError(file, "modified: its modified time changed")


@dataclass(frozen=True)
class Document:
    """One document: a name that is unique and stable within its corpus, and its text."""

    name: str
    text: str


@dataclass(frozen=True)
class FileDocument:
    """A text file as one document whose text is read when it is needed, ``read_bytes`` at a time.

    ``parts()`` yields the same text as ``Document.text`` of the file would hold (see
    ``iter_file_text``) in pieces of about ``read_bytes``; ``text`` joins them (the whole file in
    memory, for callers that want it). Each full read warns about undecodable bytes once, and
    checks the file against ``stamp`` (when there is one) as it opens it and at its end.
    """

    name: str
    path: Path
    read_bytes: int = DEFAULT_READ_BYTES
    stamp: FileStamp | None = None

    def parts(self) -> Iterator[str]:
        return iter_file_text(self.path, self.read_bytes, self.stamp)

    @property
    def text(self) -> str:
        return "".join(self.parts())


@dataclass(frozen=True)
class SourceOptions:
    """How to read a path: which files a directory contributes and which field holds the text."""

    include: tuple[str, ...] = DEFAULT_INCLUDE  # globs on file names (or relative paths)
    exclude: tuple[str, ...] = ()  # globs on file names (or relative paths) to leave out
    text_field: str = "text"  # JSON Lines: key of the text in each record
    column: str = "text"  # Parquet: column holding the text


def iter_text_sources(
    path: str | Path,
    *,
    include: Sequence[str] = DEFAULT_INCLUDE,
    exclude: Sequence[str] = (),
    text_field: str = "text",
    column: str = "text",
    stream: bool = False,
    read_bytes: int = DEFAULT_READ_BYTES,
) -> Iterator[Document | FileDocument]:
    """Documents from ``path`` in a fixed order, one at a time (see the module docstring).

    ``stream``: a text file comes as a ``FileDocument`` read ``read_bytes`` at a time when its
    text is used; it is checked here as it would be read whole (refused when binary, skipped with
    a warning when empty), reading only as far as its first non-space character.
    """
    options = SourceOptions(tuple(include), tuple(exclude), text_field, column)
    if str(path) == BUILTIN:
        yield from _builtin_documents()
        return
    yield from iter_file_documents(
        resolve_files(path, options), options, stream=stream, read_bytes=read_bytes
    )


def iter_file_documents(
    files: Sequence[tuple[Path, str]],
    options: SourceOptions,
    *,
    stream: bool = False,
    read_bytes: int = DEFAULT_READ_BYTES,
    stamps: Sequence[FileStamp] | None = None,
) -> Iterator[Document | FileDocument]:
    """Documents of ``files`` (from ``resolve_files``), as ``iter_text_sources`` reads them.

    ``stamps``: each file as it was when first looked at (one per file). Every read of a file
    checks it against its stamp (else against the stamp it had when this read first opened it),
    and once the last document is taken every file is checked again: a SourceChangedError names
    a file that changed in between.
    """
    if stamps is not None and len(stamps) != len(files):
        raise ValueError(f"{len(stamps)} stamps for {len(files)} files")
    for i, (file, name) in enumerate(files):
        stamp = None if stamps is None else stamps[i]
        if stream and file.suffix.lower() not in (*JSONL_SUFFIXES, *PARQUET_SUFFIXES):
            yield from _stream_text_file(file, name, read_bytes, stamp)
        else:
            yield from _read_file(file, name, options, stamp)
    for (file, _), stamp in zip(files, stamps or ()):
        stamp.check(file)


def read_text_sources(
    path: str | Path,
    *,
    include: Sequence[str] = DEFAULT_INCLUDE,
    exclude: Sequence[str] = (),
    text_field: str = "text",
    column: str = "text",
) -> list[Document]:
    """All documents from ``path``; a DataError when there is no text at all."""
    docs: list[Document] = list(
        iter_text_sources(  # type: ignore[arg-type]  # stream=False: only Document
            path, include=include, exclude=exclude, text_field=text_field, column=column
        )
    )
    if not docs:
        raise DataError(f"no text found in {path}: every file was empty or excluded")
    return docs


def _builtin_documents() -> Iterator[Document]:
    from scratchllm.data.builtin import builtin_documents

    for i, doc in enumerate(builtin_documents()):
        if isinstance(doc, str):
            yield Document(f"builtin:{i}", doc)
        else:
            yield Document(str(doc.name), str(doc.text))


def _read_file(
    file: Path, name: str, options: SourceOptions, stamp: FileStamp | None = None
) -> Iterator[Document]:
    suffix = file.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        yield from _read_jsonl(file, name, options.text_field, stamp)
    elif suffix in PARQUET_SUFFIXES:
        yield from _read_parquet(file, name, options.column, stamp)
    else:
        with _open(file, stamp) as fh:
            stamp = _opened(fh, file, stamp)
            raw = fh.read()
            _check_read(fh, file, stamp, len(raw))
        _check_not_binary(raw, file)
        text = normalize_newlines(decode_text(raw, str(file)))
        if text and not text.isspace():  # as text.strip(), without a copy of the text
            yield Document(name, text)
        else:
            warnings.warn(f"skipping empty (or whitespace-only) file {file}", stacklevel=3)


def _stream_text_file(
    file: Path, name: str, read_bytes: int, stamp: FileStamp | None = None
) -> Iterator[FileDocument]:
    """``_read_file`` of a text file without holding it: the same checks, a lazy document that
    holds the file's stamp from here on (or the one given), so that its reads are checked."""
    with _open(file, stamp) as fh:
        stamp = _opened(fh, file, stamp)
        _check_not_binary(fh.read(_BINARY_SNIFF_BYTES), file)
    # the first non-space character ends the read (closing the generator warns about nothing)
    if any(part.strip() for part in iter_file_text(file, read_bytes, stamp)):
        yield FileDocument(name, file, read_bytes, stamp)
    else:
        warnings.warn(f"skipping empty (or whitespace-only) file {file}", stacklevel=3)


def iter_file_text(
    file: str | Path, read_bytes: int = DEFAULT_READ_BYTES, stamp: FileStamp | None = None
) -> Iterator[str]:
    """The text of a file in parts of about ``read_bytes`` bytes, exactly as
    ``normalize_newlines(decode_text(file.read_bytes(), str(file)))`` reads it whole: no byte
    order mark, ``\n`` line ends, U+FFFD for undecodable bytes (counted in a warning once the
    file has been read to its end). A BOM, a UTF-8 sequence or a ``\r\n`` split between two reads
    is put together again; no part is empty.

    The file must match ``stamp`` (default: itself as opened) when opened and when read to its
    end, before the last part is given: else a SourceChangedError.
    """
    if read_bytes < 1:
        raise ValueError(f"read_bytes must be at least 1, got {read_bytes}")
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    replaced = 0  # U+FFFD decoded minus U+FFFD that were in the file as such
    head: bytes | None = b""  # the first bytes, until it is known whether they start with a BOM
    tail = b""  # the last 2 bytes before this read: a literal U+FFFD can straddle two reads
    held_cr = False  # the text so far ended in "\r", held back in case "\n" comes next
    total = 0  # bytes read
    with _open(file, stamp) as fh:
        stamp = _opened(fh, file, stamp)
        while True:
            raw = fh.read(read_bytes)
            final = not raw
            total += len(raw)
            if final:
                _check_read(fh, file, stamp, total)
            if head is not None:
                head += raw
                if len(head) < len(_BOM) and not final:
                    continue
                raw, head = head.removeprefix(_BOM), None
            replaced -= (tail + raw).count(_REPLACEMENT_BYTES)
            tail = (tail + raw)[-2:]
            text = decoder.decode(raw, final)
            replaced += text.count(_REPLACEMENT)
            if held_cr:
                text = "\r" + text
            held_cr = text.endswith("\r") and not final
            text = normalize_newlines(text[:-1] if held_cr else text)
            if text:
                yield text
            if final:
                break
    if replaced:
        warnings.warn(
            f"{file}: replaced {replaced} undecodable byte sequence(s) with U+FFFD", stacklevel=2
        )


def _open(file: Path | str, stamp: FileStamp | None) -> BinaryIO:
    """``file`` opened for reading; gone since it was stamped is a change, not a missing path."""
    try:
        return open(file, "rb")
    except FileNotFoundError:
        if stamp is None:
            raise
        raise SourceChangedError(file, "it was removed") from None


def _opened(fh: BinaryIO, file: Path | str, stamp: FileStamp | None) -> FileStamp:
    """The stamp of a file just opened: checked against ``stamp`` when there is one."""
    st = os.fstat(fh.fileno())
    if stamp is not None:
        stamp.check(file, st)
    return FileStamp.of(st)


def _check_read(fh: BinaryIO, file: Path | str, stamp: FileStamp, total: int) -> None:
    """After a read to the end: the file still matches ``stamp`` and gave exactly its size."""
    stamp.check(file, os.fstat(fh.fileno()))
    if total != stamp.size:
        raise SourceChangedError(file, f"{stamp.size} bytes, but {total} were read")


def normalize_newlines(text: str) -> str:
    """``\\r\\n`` and a lone ``\\r`` become ``\\n``, as Python's text mode reads files, so a
    file saved on Windows gives the same ids as the same text saved elsewhere."""
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


def decode_text(raw: bytes, where: str) -> str:
    """UTF-8 text of ``raw`` without a leading byte order mark; undecodable bytes become U+FFFD
    and are counted in a warning."""
    text, replaced = _decode_counted(raw.removeprefix(_BOM))
    if replaced:
        warnings.warn(
            f"{where}: replaced {replaced} undecodable byte sequence(s) with U+FFFD", stacklevel=4
        )
    return text


def _decode_counted(raw: bytes) -> tuple[str, int]:
    """(text, number of undecodable byte sequences replaced with U+FFFD)."""
    try:
        return raw.decode("utf-8"), 0
    except UnicodeDecodeError:
        text = raw.decode("utf-8", errors="replace")
        return text, text.count(_REPLACEMENT) - raw.count(_REPLACEMENT.encode("utf-8"))


def _check_not_binary(raw: bytes, file: Path) -> None:
    """Refuse a file with a NUL byte near its start: compressed, binary or UTF-16, not UTF-8
    text, and read as text it would train on noise (git tells binary files apart the same way)."""
    nul = raw.find(b"\0", 0, _BINARY_SNIFF_BYTES)
    if nul >= 0:
        raise DataError(
            f"{file}: not UTF-8 text (a NUL byte at offset {nul}): a compressed, binary or UTF-16 "
            "file; decompress or convert it, or leave it out with --exclude"
        )


def _read_jsonl(
    file: Path, name: str, text_field: str, stamp: FileStamp | None = None
) -> Iterator[Document]:
    empty = replaced = total = 0
    bad_lines: list[int] = []
    with _open(file, stamp) as fh:
        stamp = _opened(fh, file, stamp)
        for lineno, raw in enumerate(fh, start=1):
            total += len(raw)
            if lineno == 1:
                raw = raw.removeprefix(_BOM)
            if not raw.strip():
                continue
            line, bad = _decode_counted(raw)
            if bad:  # counted, and said once per file rather than once per line
                replaced += bad
                bad_lines.append(lineno)
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{file}:{lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                kind = type(record).__name__
                raise DataError(f"{file}:{lineno}: record is a JSON {kind}, not an object")
            if text_field not in record:
                keys = ", ".join(map(repr, list(record)[:10]))
                raise DataError(
                    f"{file}:{lineno}: record has no field {text_field!r} (fields: {keys})"
                )
            text = record[text_field]
            if not isinstance(text, str):
                kind = type(text).__name__
                raise DataError(f"{file}:{lineno}: field {text_field!r} is {kind}, not a string")
            if text.strip():
                yield Document(f"{name}:{lineno}", text)
            else:
                empty += 1
        _check_read(fh, file, stamp, total)
    if empty:
        warnings.warn(f"{file}: skipped {empty} record(s) with empty {text_field!r}", stacklevel=3)
    if replaced:
        lines = ", ".join(map(str, bad_lines[:5])) + (" ..." if len(bad_lines) > 5 else "")
        warnings.warn(
            f"{file}: replaced {replaced} undecodable byte sequence(s) with U+FFFD on "
            f"{len(bad_lines)} line(s) ({lines})",
            stacklevel=3,
        )


def _read_parquet(
    file: Path, name: str, column: str, stamp: FileStamp | None = None
) -> Iterator[Document]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - pyarrow is in the [data] extra
        raise DataError(f"{file}: reading Parquet needs pyarrow (pip install pyarrow)") from exc
    if stamp is not None:
        stamp.check(file)
    stamp = FileStamp.read(file)
    parquet = pq.ParquetFile(file)
    if column not in parquet.schema_arrow.names:
        names = ", ".join(parquet.schema_arrow.names)
        raise DataError(f"{file}: no column {column!r} (columns: {names})")
    kind = parquet.schema_arrow.field(column).type
    if pa.types.is_dictionary(kind):  # categorical text: look at the values
        kind = kind.value_type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise DataError(f"{file}: column {column!r} holds {kind}, not text (string)")
    row = empty = 0
    for batch in parquet.iter_batches(columns=[column], batch_size=1024):
        for text in batch.column(0).to_pylist():
            if text is not None and text.strip():
                yield Document(f"{name}#{row}", text)
            else:
                empty += 1
            row += 1
    stamp.check(file)
    if empty:
        warnings.warn(f"{file}: skipped {empty} empty or null row(s) of {column!r}", stacklevel=3)


def document_key(name: str, seed: int) -> int:
    """A stable 64-bit hash of (seed, name), the same in every process and Python version."""
    digest = hashlib.sha256(f"{seed}\0{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def is_validation(name: str, val_fraction: float, seed: int = 0) -> bool:
    """Streaming split rule: a document is in validation when its hash falls under the fraction."""
    return document_key(name, seed) < val_fraction * 2**64


def split_documents(
    docs: Sequence[Document], val_fraction: float, seed: int = 0
) -> tuple[list[Document], list[Document]]:
    """(train, validation) split by whole documents, deterministic for ``seed``.

    The ``round(val_fraction * n)`` documents with the smallest hash of (seed, name) go to
    validation (at least one when ``val_fraction > 0`` and there are two or more documents);
    both parts keep the corpus order.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n = len(docs)
    k = round(val_fraction * n)
    if val_fraction > 0 and n >= 2:
        k = min(max(k, 1), n - 1)
    ranked = sorted(range(n), key=lambda i: (document_key(docs[i].name, seed), i))
    val_ids = set(ranked[:k])
    train = [d for i, d in enumerate(docs) if i not in val_ids]
    val = [d for i, d in enumerate(docs) if i in val_ids]
    return train, val
