"""Encoding a corpus in memory (``train``, ``pretrain``, ``eval`` on raw text) holds the ids in
their small dtype, a piece of text at a time: never the whole corpus as a Python list."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import scratchllm.data.encode as encode
from scratchllm.data.encode import encode_documents, encode_text
from scratchllm.data.sources import Document, FileDocument
from scratchllm.perplexity import encode_for_scoring
from scratchllm.tokenizer import BPETokenizer
from scratchllm.train.pretrain import unigram_cross_entropy

LINE = "The cat's 12345 cats, and 'll dogs.\n\nThe end!  \t中文 é <|endoftext|>\n"


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return BPETokenizer.train([LINE * 20], 300, pattern="gpt4")


def whole_ids(tok, texts: list[str], joined: bool = False) -> np.ndarray:
    """The ids as the code before piecewise encoding made them: each text whole, int64."""
    ids: list[int] = []
    for i, text in enumerate(texts):
        if joined and i:
            ids.append(tok.eot_id)
        ids += encode_text(tok, text)
        if not joined:
            ids.append(tok.eot_id)
    return np.asarray(ids, dtype=np.int64)


def test_long_documents_encode_in_pieces_to_the_ids_of_the_whole(bpe, tmp_path, monkeypatch):
    monkeypatch.setattr(encode, "ENCODE_PIECE_CHARS", 100)
    texts = [LINE * 40, "short", LINE * 3]
    (tmp_path / "f.txt").write_text(texts[0])
    docs = [FileDocument("f.txt", tmp_path / "f.txt", read_bytes=64), *texts[1:]]
    ids = encode_documents(docs, bpe)
    assert ids.dtype == np.uint16
    assert np.array_equal(ids, whole_ids(bpe, texts))


def test_encoding_peak_memory_is_a_few_times_the_ids_not_a_list(bpe, monkeypatch) -> None:
    """A Python list of ids takes about 36 bytes an id (8 for the pointer, 28 for an int above
    256), an int64 array 8: the old peak was over 40 times the uint16 result."""
    monkeypatch.setattr(encode, "ENCODE_PIECE_CHARS", 4096)
    docs = [Document("big", LINE * 6000)]  # ~400k characters
    tracemalloc.start()
    try:
        ids = encode_documents(docs, bpe)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(ids) > 100_000
    assert peak < 4 * ids.nbytes, (peak, ids.nbytes)


def test_eval_ids_stream_from_files_and_match_the_whole(bpe, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(encode, "ENCODE_PIECE_CHARS", 100)
    (tmp_path / "a.txt").write_text(LINE * 30)
    (tmp_path / "b.txt").write_text("second file " * 50)
    ids, exact = encode_for_scoring(tmp_path, bpe)
    expected = whole_ids(bpe, [LINE * 30, "second file " * 50], joined=True)
    assert ids.dtype == np.uint16 and np.array_equal(ids, expected) and exact


def test_unigram_counts_in_blocks_as_at_once(monkeypatch) -> None:
    import scratchllm.train.pretrain as pretrain

    rng = np.random.default_rng(0)
    train, held = rng.integers(0, 50, 10_000).astype(np.uint16), rng.integers(0, 50, 500)
    counts = np.bincount(train.astype(np.int64), minlength=60) + 1.0
    expected = float(-np.log(counts / counts.sum())[held].mean())
    monkeypatch.setattr(pretrain, "_COUNT_BLOCK", 999)
    assert unigram_cross_entropy(train, held, 60) == pytest.approx(expected, rel=1e-12)


def test_split_stream_does_not_copy_one_long_part_whole() -> None:
    """A whole text handed over as one part (a JSON Lines record, a document in memory) is
    sliced first: joined whole into the buffer it was copied again after every cut."""
    from scratchllm.tokenizer.parallel import split_stream
    from scratchllm.tokenizer.patterns import GPT2_PATTERN

    text = "word and words, " * 125_000  # 2,000,000 characters, 2 MB
    tracemalloc.start()
    try:
        pieces = split_stream([text], GPT2_PATTERN, 1000)
        total = sum(len(p) for p in pieces)  # consumed as they come, none kept
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == len(text)
    assert peak < 100_000, peak


@pytest.mark.parametrize("size", [1, 3, 7, 50])
def test_line_pieces_join_to_the_text_and_cut_after_newlines(size) -> None:
    from scratchllm.tokenizer.parallel import line_pieces

    text = "ab\n\ncdefgh ij\nk\n" * 5 + "a long last line without an end"
    for width in (1, 4, 1000):
        parts = [text[i : i + width] for i in range(0, len(text), width)]
        pieces = list(line_pieces(parts, size))
        assert "".join(pieces) == text
        assert all(p.endswith("\n") and len(p) >= size for p in pieces[:-1])
        assert pieces == list(line_pieces([text], size))  # the parts do not matter
    assert list(line_pieces([], size)) == [""]


@pytest.mark.parametrize(("mode", "lowercase"), [("char", False), ("word", False), ("word", True)])
def test_word_and_char_tokenizers_encode_by_lines_as_whole(monkeypatch, mode, lowercase) -> None:
    """They have no pre-tokenization pattern: cut after line ends instead (final sigma included)."""
    from scratchllm.tokenizer import WordTokenizer

    text = "ΟΔΟΣ\nΣ Hello, world's end.\n\n  ΑΣ\nδ" * 200
    tok = WordTokenizer.train([text], mode=mode, lowercase=lowercase)
    monkeypatch.setattr(encode, "ENCODE_PIECE_CHARS", 10)
    ids = encode_documents([Document("d", text)], tok)
    assert np.array_equal(ids, np.asarray([*encode_text(tok, text), tok.eot_id]))


@pytest.mark.parametrize(
    ("n", "context", "last"), [(100, 8, "drop"), (10, 16, "pad"), (1000, 7, "pad")]
)
def test_window_targets_in_blocks_are_those_window_by_window(monkeypatch, n, context, last) -> None:
    import scratchllm.train.pretrain as pretrain
    from scratchllm.data.windows import WindowDataset

    monkeypatch.setattr(pretrain, "_COUNT_BLOCK", 37)
    ds = WindowDataset(np.arange(n) % 50, context, context, last=last, pad_id=0)
    one_by_one = np.concatenate([ds[i][1].numpy() for i in range(len(ds))])
    assert np.array_equal(pretrain.window_targets(ds), one_by_one)


def test_whitespace_only_file_is_still_skipped(tmp_path) -> None:
    from scratchllm.data.sources import read_text_sources
    from scratchllm.errors import DataError

    (tmp_path / "blank.txt").write_text(" \n\t\u3000\n")
    with pytest.warns(UserWarning, match="skipping empty"), pytest.raises(DataError):
        read_text_sources(tmp_path)


@pytest.mark.parametrize(("mode", "lowercase"), [("char", False), ("word", True)])
def test_word_tokenizer_trains_by_lines_as_whole(monkeypatch, mode, lowercase) -> None:
    import scratchllm.tokenizer.simple as simple

    text = "ΟΔΟΣ\nΣ Hello, world's end.\n\n  ΑΣ\nδ zz\n" * 50
    whole = simple.WordTokenizer.train([text], mode=mode, lowercase=lowercase)
    monkeypatch.setattr(simple, "TRAIN_PIECE_CHARS", 7)
    cut = simple.WordTokenizer.train([text], mode=mode, lowercase=lowercase)
    assert cut.tokens == whole.tokens


def test_joined_shards_slice_as_their_concatenation() -> None:
    from scratchllm.data.shards import JoinedShards

    rng = np.random.default_rng(0)
    shards = [rng.integers(0, 9, n).astype(np.uint16) for n in (5, 0, 1, 7, 3)]
    joined, whole = JoinedShards(shards), np.concatenate(shards)
    assert len(joined) == len(whole) and joined.ndim == 1
    for a in range(-2, len(whole) + 2):
        for b in range(a, len(whole) + 3):
            assert np.array_equal(joined[a:b], whole[a:b]), (a, b)
    with pytest.raises(TypeError, match="contiguous"):
        joined[::2]


@pytest.mark.parametrize("pattern", ["gpt2", "gpt4"])
def test_reference_bpe_counts_pieces_by_parts_as_whole(monkeypatch, pattern) -> None:
    import scratchllm.tokenizer.training as training
    from scratchllm.tokenizer.patterns import resolve_pattern

    regex_str = resolve_pattern(pattern)
    text = LINE * 300
    whole = training.count_pieces([text], regex_str)
    monkeypatch.setattr(training, "COUNT_PART_CHARS", 50)
    assert training.count_pieces([text], regex_str) == whole
