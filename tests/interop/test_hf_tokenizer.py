"""Tokenizer export: HF tokenizers, transformers and tiktoken give our ids; import reads it back."""

from __future__ import annotations

import json

import pytest

from scratchllm.errors import TokenizerError
from scratchllm.interop.hf_tokenizer import (
    TIKTOKEN_FILE,
    load_hf_tokenizer,
    read_hf_tokenizer,
    save_hf_tokenizer,
)
from scratchllm.tokenizer import ENDOFTEXT, BPETokenizer
from scratchllm.tokenizer.files import bytes_to_unicode

TEXTS = [
    "Hello world! It's a test, isn't it?  Numbers: 12345 and 3.14159.",
    "héllo wörld 🤗 naïve café — “quotes” ''  \t\ttabs\n\nnew lines\r\n  trailing   ",
    f"two documents{ENDOFTEXT}joined   {ENDOFTEXT} by the end-of-text token",
    "I'LL DON'T we've they're 1234567 a1b2c3 ___ !!! ...",
]


def check_same_ids(tok: BPETokenizer, directory) -> None:
    tokenizers = pytest.importorskip("tokenizers")
    tiktoken = pytest.importorskip("tiktoken")
    from tiktoken.load import load_tiktoken_bpe

    hf = tokenizers.Tokenizer.from_file(str(directory / "tokenizer.json"))
    spec = json.loads((directory / "tokenizer.json").read_text())
    pattern = spec["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"]
    enc = tiktoken.Encoding(
        "exported",
        pat_str=pattern,
        mergeable_ranks=load_tiktoken_bpe(str(directory / TIKTOKEN_FILE)),
        special_tokens=tok.special_tokens,
    )
    for text in TEXTS:
        ours = tok.encode(text, allowed_special="all")
        assert hf.encode(text).ids == ours, text
        assert enc.encode(text, allowed_special="all") == ours, text
        assert hf.decode(ours, skip_special_tokens=False) == text
    transformers = pytest.importorskip("transformers")
    auto = transformers.AutoTokenizer.from_pretrained(directory)
    assert auto(TEXTS[1])["input_ids"] == tok.encode(TEXTS[1])


@pytest.fixture(scope="module")
def trained() -> BPETokenizer:
    text = " ".join(TEXTS) * 20 + " the quick brown fox jumps over the lazy dog" * 30
    return BPETokenizer.train(text, 400, pattern="gpt4", special_tokens=(ENDOFTEXT, "<|pad|>"))


def test_trained_tokenizer_round_trip(trained, tmp_path):
    save_hf_tokenizer(trained, tmp_path, max_length=64)
    check_same_ids(trained, tmp_path)
    back = load_hf_tokenizer(tmp_path)
    assert back.tokens == trained.tokens
    assert back.special_tokens == trained.special_tokens
    assert back.pattern == trained.pattern


def test_gpt2_tokenizer(shared_data, tmp_path):
    gpt2 = BPETokenizer.from_gpt2_files(shared_data / "encoder.json", shared_data / "vocab.bpe")
    save_hf_tokenizer(gpt2, tmp_path, max_length=1024)
    check_same_ids(gpt2, tmp_path)
    # The merges derived from the ranks are GPT-2's own merges file, line for line.
    to_text = bytes_to_unicode()
    ours = (tmp_path / "merges.txt").read_text(encoding="utf-8").split("\n")[1:]
    theirs = (shared_data / "vocab.bpe").read_text(encoding="utf-8").split("\n")[1:]
    assert [m for m in ours if m] == [m for m in theirs if m]
    assert json.loads((tmp_path / "vocab.json").read_text())["".join(to_text[b] for b in b" the")]
    # A GPT-2 style directory (vocab.json + merges.txt only) loads back to the same tokenizer.
    (tmp_path / "tokenizer.json").unlink()
    back = load_hf_tokenizer(tmp_path)
    assert back.tokens == gpt2.tokens and back.special_tokens == gpt2.special_tokens


def test_unsupported_tokenizers(tmp_path):
    spec = {"model": {"type": "WordPiece", "vocab": {}}, "normalizer": None}
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(TokenizerError, match="only byte-level BPE"):
        read_hf_tokenizer(tmp_path / "tokenizer.json")
    with pytest.raises(TokenizerError, match="no tokenizer"):
        load_hf_tokenizer(tmp_path / "nothing")
