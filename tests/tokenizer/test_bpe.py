"""Byte-level BPE: training, encode/decode, special tokens, errors."""

from __future__ import annotations

import pytest

from scratchllm.errors import TokenizerError
from scratchllm.tokenizer import BPETokenizer


def test_train_vocab_size_and_specials(small_bpe):
    assert small_bpe.vocab_size == 320
    assert small_bpe.special_tokens == {"<|endoftext|>": 319}
    assert small_bpe.eot_id == 319
    assert len(small_bpe.merges) == 320 - 256 - 1


def test_roundtrip_reference_and_fast(small_bpe, sample_text):
    ref = small_bpe.with_fast(False)
    ids = ref.encode(sample_text)
    assert ids == small_bpe.encode(sample_text)
    assert ref.decode(ids) == sample_text
    assert len(ids) < 0.6 * len(sample_text.encode())  # merges compress


def test_vocab_size_too_small_names_value():
    with pytest.raises(TokenizerError, match="vocab_size=256"):
        BPETokenizer.train("abc", 256)


def test_special_literal_raises_unless_allowed(small_bpe):
    text = "a<|endoftext|>b"
    for tok in (small_bpe, small_bpe.with_fast(False)):
        with pytest.raises(TokenizerError, match="endoftext"):
            tok.encode(text)
        ids = tok.encode(text, allowed_special={"<|endoftext|>"})
        assert tok.eot_id in ids
        assert tok.encode(text, allowed_special="all") == ids
        plain = tok.encode(text, disallowed_special=())
        assert tok.eot_id not in plain
        assert plain == tok.encode_ordinary(text)
        assert tok.decode(ids) == tok.decode(plain) == text


def test_decode_errors(small_bpe):
    with pytest.raises(TokenizerError, match="320"):
        small_bpe.decode([1, 320])
    with pytest.raises(TokenizerError, match="-1"):
        small_bpe.decode([-1])
    half_emoji = list("🙂".encode())[:2]
    assert small_bpe.decode(half_emoji) == "\ufffd"
    with pytest.raises(TokenizerError, match="UTF-8"):
        small_bpe.decode(half_emoji, errors="strict")
    assert small_bpe.decode_bytes(half_emoji) == "🙂".encode()[:2]


def test_encode_batch(small_bpe):
    texts = ["hello there", "the fox", ""]
    assert small_bpe.encode_batch(texts) == [small_bpe.encode(t) for t in texts]
    assert small_bpe.with_fast(False).encode_batch(texts) == small_bpe.encode_batch(texts)


def test_reference_training_matches_rustbpe(sample_text):
    pytest.importorskip("rustbpe")
    for pattern in ("gpt2", "gpt4"):
        ref = BPETokenizer.train(sample_text, 500, pattern=pattern, backend="reference")
        fast = BPETokenizer.train(sample_text, 500, pattern=pattern, backend="rustbpe")
        assert ref.tokens == fast.tokens
        assert ref.merges == fast.merges


def test_tie_rule_smallest_pair():
    # "ab" and "cd" both occur twice; (97, 98) < (99, 100) so "ab" is merged first.
    tok = BPETokenizer.train(["ab.cd.ab.cd"], 258, special_tokens=(), backend="reference")
    assert tok.merges[0] == (97, 98)
