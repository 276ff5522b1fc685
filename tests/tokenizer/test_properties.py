"""Property tests (hypothesis) and pathological inputs."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from scratchllm.errors import TokenizerError
from scratchllm.tokenizer.bpe import _merge_long, _merge_short, fix_surrogates

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Any code point, lone surrogates included (category Cs), plus text rich in the special literal.
ANY_TEXT = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=200)
SPECIAL_RICH = st.lists(st.sampled_from(["<|endoftext|>", "<|", "|>", "a", " ", "\n", "é"])).map(
    "".join
)


def _as_tiktoken_reads_it(text: str) -> str:
    """What tiktoken encodes for a str that is not valid Unicode: a UTF-16 round trip, which
    joins a high+low surrogate pair into one character and turns a lone surrogate into U+FFFD."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


@SETTINGS
@given(text=ANY_TEXT)
@example(text="a\ud83d\ude00b")  # a surrogate pair written as two code points: one emoji
@example(text="\udfff\ud800")  # low before high: two lone surrogates
def test_roundtrip_any_text(small_bpe, small_bpe_gpt4, text):
    """decode(encode(s)) == s; lone surrogates come back as U+FFFD (as in tiktoken)."""
    for tok in (small_bpe, small_bpe_gpt4):
        ids = tok.encode(text, disallowed_special=())
        assert ids == tok.with_fast(False).encode(text, disallowed_special=())
        assert tok.decode(ids) == _as_tiktoken_reads_it(text)
        assert fix_surrogates(text) == _as_tiktoken_reads_it(text)


@SETTINGS
@given(data=st.binary(max_size=300))
def test_any_bytes_survive(small_bpe, data):
    """The byte level: every byte string is a sequence of pieces of the vocabulary."""
    ids = _merge_short(data, small_bpe.ranks) if data else []
    assert small_bpe.decode_bytes(ids) == data
    if data:
        assert _merge_long(data, small_bpe.ranks) == ids


@SETTINGS
@given(text=SPECIAL_RICH)
def test_special_literals(small_bpe, text):
    for tok in (small_bpe, small_bpe.with_fast(False)):
        if "<|endoftext|>" in text:
            with pytest.raises(TokenizerError):
                tok.encode(text)
        ids = tok.encode(text, allowed_special="all")
        assert ids.count(tok.eot_id) == text.count("<|endoftext|>")
        assert tok.decode(ids) == text


def test_every_id_decodes_to_its_token(small_bpe):
    """Each id's bytes are its vocabulary entry; a merged token is the join of its pair, and the
    special token decodes to its literal. (GPT-2's ids: against tiktoken in test_parity.py.)"""
    assert small_bpe.tokens[:256] == [bytes([b]) for b in range(256)]
    for rank, (a, b) in enumerate(small_bpe.merges, start=256):
        assert small_bpe.tokens[rank] == small_bpe.tokens[a] + small_bpe.tokens[b], rank
    for i, token in enumerate(small_bpe.tokens):
        assert small_bpe.decode_bytes([i]) == token
        assert small_bpe.decode([i]) == token.decode("utf-8", errors="replace")
    assert small_bpe.decode([small_bpe.eot_id]) == "<|endoftext|>"


def test_surrogate_documented_behaviour(small_bpe):
    assert small_bpe.decode(small_bpe.encode("a\ud800b")) == "a\ufffdb"


def _pathological(n: int) -> dict[str, str]:
    return {
        "one-char": "x" * n,  # one character repeated: a single piece of n bytes
        "no-spaces": "".join(chr(97 + (i * 7919) % 26) for i in range(n)),
        "spaces": " " * n,
        "emoji": "🙂" * (n // 4),
    }


@pytest.mark.parametrize("kind", ["one-char", "no-spaces", "spaces", "emoji"])
def test_pathological_inputs(gpt2, kind):
    """Bounded time, no timing assertion (the figures are in docs/tokenizer.md): the fast path on
    1 MiB; the reference (heap merge, O(n log n)) on 64 KiB, where it must agree with the fast path.
    """
    big = _pathological(1 << 20)[kind]
    assert gpt2.decode(gpt2.encode(big)) == big
    small = _pathological(1 << 16)[kind]
    ref = gpt2.with_fast(False)
    ids = ref.encode(small)
    assert ids == gpt2.encode(small)
    assert ref.decode(ids) == small
