"""`data prepare` streams a text file: read in blocks, cut into pieces where encoding them apart
changes nothing, and the shards come out exactly as when the file is read and encoded whole."""

from __future__ import annotations

import json
import time
import tracemalloc
import warnings

import numpy as np
import pytest
import regex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scratchllm.data.shards import open_shards, prepare_path, prepare_shards, read_index
from scratchllm.data.sources import (
    Document,
    FileDocument,
    decode_text,
    iter_file_text,
    iter_text_sources,
    normalize_newlines,
)
from scratchllm.errors import DataError
from scratchllm.tokenizer import BPETokenizer
from scratchllm.tokenizer.parallel import split_for_workers, split_stream
from scratchllm.tokenizer.patterns import GPT2_PATTERN, GPT4_PATTERN

BOM = b"\xef\xbb\xbf"
# Byte fragments that a block boundary must not break: a BOM, CRLF and lone CR, multibyte UTF-8
# (2, 3 and 4 bytes), undecodable bytes, a literal U+FFFD, the end-of-text literal (ordinary text).
FRAGMENTS = [
    b"a",
    b"Z",
    b" ",
    b"  ",
    b"\n",
    b"\n\n",
    b"\r",
    b"\r\n",
    b"\t",
    b"'s",
    b"7",
    b".",
    "é".encode(),
    "€".encode(),
    "😀".encode(),
    "中文".encode(),
    "\u00a0".encode(),  # no-break space: whitespace to the patterns
    b"\xff",
    b"\xc3",
    b"\xe2\x82",
    "\ufffd".encode(),
    b"<|endoftext|>",
    BOM,
]


def whole(path) -> str:
    """What the non-streaming reader holds for a text file."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return normalize_newlines(decode_text(path.read_bytes(), str(path)))


def streamed(path, read_bytes: int) -> tuple[str, list[str]]:
    """The joined parts of ``iter_file_text`` and the warnings it gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        parts = list(iter_file_text(path, read_bytes))
    assert all(parts)  # no empty part
    return "".join(parts), [str(w.message) for w in caught]


def test_blocks_split_inside_bom_crlf_and_utf8_read_as_whole(tmp_path) -> None:
    raw = BOM + "é€😀<|endoftext|>\r\nline\rtwo\r\r\n\xff end\r".encode("utf-8", "surrogateescape")
    raw += b"\xc3 \xef\xbf\xbd \xe2\x82(" + "中".encode()
    path = tmp_path / "f.txt"
    path.write_bytes(raw)
    with pytest.warns(UserWarning, match=r"f.txt: replaced 2 undecodable") as first:
        want = normalize_newlines(decode_text(raw, str(path)))
    for read_bytes in [1, 2, 3, 4, 5, 7, 11, 64, 1 << 20]:
        text, said = streamed(path, read_bytes)
        assert text == want, read_bytes
        assert said == [str(first[0].message)]


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=40), st.integers(min_value=1, max_value=9))
def test_streamed_file_text_is_the_whole_text(tmp_path, fragments, read_bytes) -> None:
    path = tmp_path / "h.txt"
    path.write_bytes(b"".join(fragments))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        want = normalize_newlines(decode_text(path.read_bytes(), str(path)))
    text, said = streamed(path, read_bytes)
    assert text == want
    assert said == [str(w.message) for w in caught]


# ----------------------------------------------------------------------------- cutting
TEXT_ALPHABET = st.sampled_from(
    ["a", "b", "Z", "é", "中", " ", "  ", "\n", "\n\n", "\t", "\r", ".", ",", "'", "'s", "'ll"]
    + ["7", "42", "!", "\u00a0", "\u3000", "😀", "<|endoftext|>", " x", "x\ny", "\n "]
)


def pretokens(text: str, pattern: str) -> list[str]:
    return regex.findall(pattern, text)


@pytest.fixture(scope="module")
def small_bpe() -> dict[str, BPETokenizer]:
    text = "The cat's 12345 cats, and 'll dogs.\n\nThe end!  \t中文 é\n" * 20
    return {name: BPETokenizer.train([text], 300, pattern=name) for name in ("gpt2", "gpt4")}


@settings(max_examples=400, deadline=None)
@given(
    st.lists(TEXT_ALPHABET, max_size=60).map("".join),
    st.integers(min_value=1, max_value=12),
    st.lists(st.integers(min_value=1, max_value=9), min_size=1, max_size=5),
)
def test_stream_pieces_pretokenize_as_the_whole(text, chunk_chars, widths) -> None:
    """For any text, cut into any parts: the pieces join to the text, do not depend on the parts,
    are those of split_for_workers when its pieces are short, and the pre-tokenization pieces
    (what BPE merges within) of the pieces are those of the whole, under GPT-2 and GPT-4."""
    parts, i = [], 0
    while i < len(text):
        w = widths[len(parts) % len(widths)]
        parts.append(text[i : i + w])
        i += w
    for pattern in (GPT2_PATTERN, GPT4_PATTERN):
        pieces = list(split_stream(parts, pattern, chunk_chars))
        assert "".join(pieces) == text and (all(pieces) or pieces == [""])
        assert pieces == list(split_stream([text], pattern, chunk_chars))
        assert [t for p in pieces for t in pretokens(p, pattern)] == pretokens(text, pattern)
        old = split_for_workers(text, pattern, chunk_chars)
        if all(len(p) < 2 * chunk_chars for p in old[:-1]) and len(old[-1]) <= 2 * chunk_chars:
            assert pieces == old


@settings(max_examples=150, deadline=None)
@given(st.lists(TEXT_ALPHABET, max_size=80).map("".join), st.integers(1, 6))
def test_stream_pieces_encode_as_the_whole(small_bpe, text, chunk_chars) -> None:
    """The same through the tokenizers: tiktoken's regex engine (the fast path) and ours."""
    for tok in small_bpe.values():
        pieces = list(split_stream([text], tok.pattern, chunk_chars))
        assert [i for p in pieces for i in tok.encode_ordinary(p)] == tok.encode_ordinary(text)
        ref = [i for p in pieces for i in tok._encode_ordinary_ref(p)]
        assert ref == tok._encode_ordinary_ref(text)


def test_a_long_line_is_cut_by_the_fallback_and_memory_stays_bounded() -> None:
    """No newline at all: pieces of chunk_chars to about 2 * chunk_chars, the same ids; a run
    with no cut anywhere (one pre-tokenization piece) stays whole, as it must."""
    line = "word, words and 123 more words " * 2000
    pieces = list(
        split_stream([line[i : i + 100] for i in range(0, len(line), 100)], GPT2_PATTERN, 500)
    )
    assert "".join(pieces) == line and len(pieces) > 50
    assert all(500 <= len(p) <= 1000 for p in pieces[:-1])
    assert split_for_workers(line, GPT2_PATTERN, 500) == [line]  # the old cut: one piece
    run = "a" * 5000
    assert list(split_stream([run[i : i + 7] for i in range(0, 5000, 7)], GPT2_PATTERN, 100)) == [
        run
    ]
    assert list(split_stream(["x"] * 3, "custom", 1)) == ["xxx"]  # unknown pattern: whole
    assert list(split_stream([], GPT2_PATTERN, 10)) == [""]


# ----------------------------------------------------------------------------- prepare
def messy_file(tmp_path, name="corpus.txt", repeat=6):
    """A file with everything a block boundary can fall inside, a long line without a newline
    (cut by the fallback) and paragraphs parted by blank lines (no newline cut)."""
    para = (
        "First line of it.\r\nSecond line: café, 中文 and 😀 <|endoftext|> literal.\r\n\r\n"
        + "A long line without any newline that goes on, " * 12
        + "\n\n\n  indented\rlone CR\n"
    )
    raw = BOM + para.encode() * repeat + b"bad \xff byte\n"
    path = tmp_path / name
    path.write_bytes(raw)
    return path


def run_prepare(docs, tok, out, **kw):
    kw.setdefault("shard_tokens", 257)
    kw.setdefault("workers", 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the undecodable byte, said on every read
        return prepare_shards(docs, tok, out, source="corpus", **kw)


def files(out) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


@pytest.fixture
def no_fsync(monkeypatch):
    """Commits without waiting for the disk: tiny chunks commit hundreds of times."""
    import scratchllm.data.shards as shards

    monkeypatch.setattr(shards.os, "fsync", lambda fd: None)


@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 7, 50, 300, 1 << 20])
def test_streamed_prepare_is_byte_identical_to_whole(
    tmp_path, small_bpe, no_fsync, chunk_bytes
) -> None:
    """Shards and index.json of a file read in blocks (1 byte and up: boundaries inside the BOM,
    CRLF, UTF-8 sequences and <|endoftext|>) equal those of the file read whole, and the ids are
    those of encoding the whole text at once."""
    path = messy_file(tmp_path, repeat=1 if chunk_bytes < 50 else 6)
    text = whole(path)
    for pattern, tok in small_bpe.items():
        ref = tmp_path / f"whole-{pattern}"
        want = run_prepare([Document("corpus.txt", text)], tok, ref, chunk_bytes=chunk_bytes)
        assert want.text_bytes == len(text.encode())
        ids = np.concatenate(open_shards(ref)).tolist()
        assert ids == [*tok.encode_ordinary(text), tok.eot_id]
        for read_bytes in sorted({1, 3, chunk_bytes}):
            docs = iter_text_sources(path, stream=True, read_bytes=read_bytes)
            out = tmp_path / f"{pattern}-{read_bytes}"
            report = run_prepare(docs, tok, out, chunk_bytes=chunk_bytes)
            assert report == type(want)(**{**want.__dict__, "out_dir": out})
            assert files(out) == files(ref)


def test_prepare_path_streams_and_checks_like_before(tmp_path, small_bpe) -> None:
    """prepare_path reads files as FileDocuments: binary files are still refused by name, empty
    ones skipped with a warning, undecodable bytes counted per file; the ids are the whole
    files' ids."""
    tok = small_bpe["gpt2"]
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    messy_file(corpus, "a.txt")
    (corpus / "b.txt").write_text("  \n\n")
    (corpus / "c.txt").write_text("short one")
    with pytest.warns(UserWarning, match="skipping empty"):
        docs = list(iter_text_sources(corpus, stream=True))
    assert [type(d) for d in docs] == [FileDocument, FileDocument]  # b.txt skipped
    with pytest.warns(UserWarning) as said:
        prepare_path(corpus, tok, tmp_path / "out", workers=2, chunk_bytes=100)
    messages = [str(w.message) for w in said]
    assert any(
        m.startswith(f"skipping empty (or whitespace-only) file {corpus / 'b.txt'}")
        for m in messages
    )
    assert f"{corpus / 'a.txt'}: replaced 1 undecodable byte sequence(s) with U+FFFD" in messages
    ids = np.concatenate(open_shards(tmp_path / "out")).tolist()
    a, c = whole(corpus / "a.txt"), whole(corpus / "c.txt")
    assert ids == [*tok.encode_ordinary(a), tok.eot_id, *tok.encode_ordinary(c), tok.eot_id]
    (corpus / "d.txt").write_bytes(b"x" * 9000 + b"\0")  # NUL after the first 8000 bytes: text
    (corpus / "e.txt").write_bytes(b"PK\x03\x04\0\0")
    with pytest.raises(DataError, match=r"e.txt: not UTF-8 text \(a NUL byte at offset 4\)"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            list(iter_text_sources(corpus, stream=True))


class CheapTokenizer:
    """GPT-2's pattern, so a file is cut into pieces; one id per piece, so encoding costs nothing."""

    pattern = GPT2_PATTERN
    vocab_size, eot_id = 258, 256

    def encode_ordinary(self, text: str) -> list[int]:
        return [len(text) % 256]


def test_memory_is_bounded_by_the_chunk_not_the_file(tmp_path) -> None:
    """tracemalloc's peak while preparing a 24 MiB file in 256 KiB chunks stays under 16 chunks
    (4 MiB); reading the file whole would hold all of it, and more."""

    line = b"Some words of a line, 123 and more; then a newline.\n"
    path = tmp_path / "big.txt"
    size, chunk_bytes = 24 << 20, 1 << 18
    path.write_bytes(line * (size // len(line)))
    start = time.perf_counter()
    tracemalloc.start()
    try:
        report = prepare_path(
            path, CheapTokenizer(), tmp_path / "out", workers=1, chunk_bytes=1 << 18
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.text_bytes == path.stat().st_size
    # about 10 chunks: a read block, the text of two pieces being cut, their copies and ids
    assert peak < 16 * chunk_bytes < size / 5, f"peak {peak / 2**20:.1f} MiB"
    assert time.perf_counter() - start < 30


def test_interrupted_streamed_prepare_resumes_identically(tmp_path, killed_after_commit, small_bpe):
    """Killed right after a commit inside the one big file, a rerun skips the pieces written
    (checking their bytes against the index) and ends byte-identical to an uninterrupted run."""
    tok = small_bpe["gpt4"]
    path = messy_file(tmp_path, repeat=8)
    kw = {"workers": 1, "chunk_bytes": 200, "val_fraction": 0.0, "shard_tokens": 300}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepare_path(path, tok, tmp_path / "full", **kw)
    with killed_after_commit(5), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepare_path(path, tok, tmp_path / "cut", **kw)
    index = json.loads((tmp_path / "cut" / "index.json").read_text())
    assert index["next_document"] == 0 and index["next_piece"] > 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepare_path(path, tok, tmp_path / "cut", **kw)
    assert files(tmp_path / "cut") == files(tmp_path / "full")
    assert read_index(tmp_path / "cut").complete


def test_resume_over_pieces_cut_otherwise_is_refused(tmp_path, killed_after_commit, small_bpe):
    """An index whose pieces of the open document hold other bytes than the rerun cuts (an
    interrupted run of another version, or a file edited in place to the same size) is refused
    rather than continued from the wrong place."""
    tok = small_bpe["gpt2"]
    path = messy_file(tmp_path, repeat=8)
    kw = {"workers": 1, "chunk_bytes": 200, "val_fraction": 0.0}
    with killed_after_commit(4), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepare_path(path, tok, tmp_path / "cut", **kw)
    index_path = tmp_path / "cut" / "index.json"
    index = json.loads(index_path.read_text())
    assert index["next_piece"] > 0
    index["chunk_bytes"] = 150  # the rerun will cut the document's first pieces otherwise
    index_path.write_text(json.dumps(index))
    with pytest.raises(DataError, match=r"corpus.txt: its first \d+ pieces are not the ones"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prepare_path(path, tok, tmp_path / "cut", **kw)
