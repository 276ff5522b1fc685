"""Saving, loading, OpenAI GPT-2 files, tiktoken rank files, and corrupt input."""

from __future__ import annotations

import json

import pytest

from scratchllm.errors import TokenizerError
from scratchllm.tokenizer import BPETokenizer, WordTokenizer, load_tokenizer


def test_bpe_save_load_roundtrip(small_bpe, sample_text, tmp_path):
    path = small_bpe.save(tmp_path / "tok")
    assert path.name == "tokenizer.json"
    for loaded in (BPETokenizer.load(tmp_path / "tok"), BPETokenizer.load(path)):
        assert loaded.tokens == small_bpe.tokens
        assert loaded.merges == small_bpe.merges
        assert loaded.special_tokens == small_bpe.special_tokens
        assert loaded.encode(sample_text) == small_bpe.encode(sample_text)
    assert isinstance(load_tokenizer(tmp_path / "tok"), BPETokenizer)


def test_word_save_load_roundtrip(sample_text, tmp_path):
    tok = WordTokenizer.train(sample_text, max_vocab=30)
    tok.save(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert isinstance(loaded, WordTokenizer)
    assert loaded.encode(sample_text) == tok.encode(sample_text)
    with pytest.raises(TokenizerError, match="not a BPE"):
        BPETokenizer.load(tmp_path)


@pytest.mark.parametrize(
    "damage",
    [
        lambda s: s[: len(s) // 2],  # truncated
        lambda s: "",
        lambda s: s.replace('"version": 1', '"version": 99'),
        lambda s: s.replace('"scratchllm-tokenizer"', '"other"'),
        lambda s: s.replace('"tokens": [', '"tokens": ["!!notbase64", '),
        lambda s: s.replace('"special_tokens": {', '"special_tokens": {"<|x|>": 3, '),
    ],
)
def test_corrupt_file_names_the_file(small_bpe, tmp_path, damage):
    path = small_bpe.save(tmp_path)
    path.write_text(damage(path.read_text()))
    with pytest.raises(TokenizerError, match="tokenizer.json"):
        load_tokenizer(path)


def test_missing_file(tmp_path):
    with pytest.raises(TokenizerError, match="not found"):
        load_tokenizer(tmp_path / "nope")


def test_tiktoken_export_loads_in_tiktoken(small_bpe, sample_text, tmp_path):
    tiktoken_load = pytest.importorskip("tiktoken.load")
    import tiktoken

    path = small_bpe.to_tiktoken_file(tmp_path / "small.tiktoken")
    ranks = tiktoken_load.load_tiktoken_bpe(str(path))
    enc = tiktoken.Encoding(
        "small", pat_str=small_bpe.pattern, mergeable_ranks=ranks, special_tokens={}
    )
    assert enc.encode_ordinary(sample_text) == small_bpe.encode_ordinary(sample_text)
    back = BPETokenizer.from_tiktoken_file(path, pattern=small_bpe.pattern)
    assert back.encode_ordinary(sample_text) == small_bpe.encode_ordinary(sample_text)


def test_truncated_tiktoken_file(small_bpe, tmp_path):
    path = small_bpe.to_tiktoken_file(tmp_path / "t.tiktoken")
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:100] + lines[101:150]))
    with pytest.raises(TokenizerError, match="t.tiktoken"):
        BPETokenizer.from_tiktoken_file(path)


def test_gpt2_files_errors(shared_data, tmp_path):
    enc = tmp_path / "encoder.json"
    enc.write_text(json.dumps({"a": 0}))
    with pytest.raises(TokenizerError, match="encoder.json"):
        BPETokenizer.from_gpt2_files(enc, shared_data / "vocab.bpe")
    enc.write_text("{")
    with pytest.raises(TokenizerError, match="encoder.json"):
        BPETokenizer.from_gpt2_files(enc, shared_data / "vocab.bpe")
    short = tmp_path / "vocab.bpe"
    short.write_text("\n".join((shared_data / "vocab.bpe").read_text().split("\n")[:100]))
    with pytest.raises(TokenizerError, match="vocab.bpe"):
        BPETokenizer.from_gpt2_files(shared_data / "encoder.json", short)


def test_gpt2_save_load(gpt2, tmp_path):
    gpt2.save(tmp_path)
    back = load_tokenizer(tmp_path)
    assert back.vocab_size == 50257 and back.eot_id == 50256
    assert back.encode("Hello, world!") == gpt2.encode("Hello, world!") == [15496, 11, 995, 0]


@pytest.mark.parametrize("bad", [[0, 99999], [-1, 2], [True, 1]])
def test_a_merge_outside_the_vocabulary_is_refused_naming_it(small_bpe, tmp_path, bad):
    path = small_bpe.save(tmp_path / "tok")
    obj = json.loads(path.read_text())
    obj["merges"][3] = bad
    path.write_text(json.dumps(obj))
    with pytest.raises(TokenizerError, match=r"tokenizer.json: merge 3 .* outside the \d+ tokens"):
        load_tokenizer(tmp_path / "tok")
