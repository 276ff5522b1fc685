"""Word-level and character-level tokenizer."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scratchllm.errors import TokenizerError
from scratchllm.tokenizer import WordTokenizer


def test_word_roundtrip_and_unk():
    tok = WordTokenizer.train("Hello, world. Is this-- a test? Yes!")
    text = "Hello, world. Is this a test?"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.encode("Hello, moon.") == [
        tok.encode("Hello")[0],
        tok.encode(",")[0],
        tok.unk_id,
        tok.encode(".")[0],
    ]
    assert tok.decode(tok.encode("Hello moon")) == "Hello [UNK]"


def test_specials_and_bos_eos():
    tok = WordTokenizer.train(
        "a b c", specials={"bos": "<s>", "eos": "</s>", "pad": "<pad>", "unk": "<unk>"}
    )
    assert tok.tokens[:4] == ["<s>", "</s>", "<pad>", "<unk>"]
    ids = tok.encode("a b", add_bos=True, add_eos=True)
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id == tok.eot_id
    assert tok.decode(ids, skip_special=True) == "a b"
    with pytest.raises(TokenizerError, match="</s>"):
        tok.encode("a </s> b")
    assert tok.encode("a </s> b", allowed_special={"</s>"})[1] == tok.eos_id


def test_frequency_cap():
    tok = WordTokenizer.train("a a a b b c", max_vocab=6)
    assert tok.vocab_size == 6
    assert tok.tokens[4:] == ["a", "b"]
    assert tok.encode("c") == [tok.unk_id]
    with pytest.raises(TokenizerError, match="max_vocab=2"):
        WordTokenizer.train("a", max_vocab=2)


def test_char_mode(data_dir):
    text = (data_dir / "tinyshakespeare.txt").read_text(encoding="utf-8")[:20000]
    tok = WordTokenizer.train(text, mode="char")
    assert tok.decode(tok.encode(text)) == text
    assert tok.vocab_size == 4 + len(set(text))
    assert tok.encode("\u2603") == [tok.unk_id]


def test_bad_ids():
    tok = WordTokenizer.train("a b")
    with pytest.raises(TokenizerError, match="99"):
        tok.decode([99])


def test_skip_special_keeps_unknown_words_as_unk():
    tok = WordTokenizer.train("Hello, world. Hello again!", max_vocab=10)
    ids = tok.encode(
        "Hello, moon!",
        add_bos=True,
        add_eos=True,
    )
    assert tok.decode(ids, skip_special=True) == "Hello, [UNK]!"


# Words, inner apostrophes, digits and every kind of punctuation decode() puts spaces around.
MIXED = "the cat's toy ( 5 ) costs $ 3 , 50 % off ; [ x ] { y } don't ! ? : . - \" ' # @ a_b é"


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_word_mode_decode_then_encode_gives_the_ids_back(data):
    """decode joins tokens with spaces and drops the ones punctuation does not want, but never
    glues two tokens into one: whatever their order, encoding the text gives the same ids
    (encode_ordinary: a decoded "[", "UNK", "]" spells a special literal, which encode refuses)."""
    tok = WordTokenizer.train(MIXED)
    words = [i for i, t in enumerate(tok.tokens) if t not in tok.specials.values()]
    ids = data.draw(st.lists(st.sampled_from(words), max_size=10))
    assert tok.encode_ordinary(tok.decode(ids)) == ids


@settings(max_examples=200, deadline=None)
@given(corpus=st.text(min_size=1, max_size=40), text=st.text(max_size=40))
def test_char_mode_round_trip_and_unknown_characters(corpus, text):
    """One id per character; characters never seen in training become [UNK], the rest decode
    back exactly."""
    tok = WordTokenizer.train(corpus, mode="char")
    assert tok.vocab_size == 4 + len(set(corpus))
    ids = tok.encode_ordinary(text)
    assert len(ids) == len(text)
    seen = set(corpus)
    assert tok.decode(ids) == "".join(c if c in seen else "[UNK]" for c in text)
