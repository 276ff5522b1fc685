"""GPT-2 parity: our tokenizer (reference and fast path) against tiktoken and HF `tokenizers`,
both built independently from the same OpenAI files in ../shared/data."""

from __future__ import annotations

import pytest
import regex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scratchllm.tokenizer.patterns import GPT2_PATTERN, GPT4_PATTERN

# The pre-tokenization regex of OpenAI's GPT-2 release (encoder.py, 2019), before tiktoken
# rewrote it with possessive quantifiers; ours must split every text exactly as it does.
GPT2_PATTERN_2019 = (
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Text that exercises the pattern's edges (contractions, digit and space runs, newlines, CR) and
# many merges (common English bytes), mixed with arbitrary code points.
EDGY = st.sampled_from(
    ["'s", "'t", "'re", "'LL", "'d", "  ", "\n", "\r\n", "\t", " the", " and", "ing", "123", "4"]
)
MIXED_TEXT = st.lists(st.one_of(EDGY, st.characters(), st.sampled_from("ab ,.!?é🙂")), max_size=60)
MIXED_TEXT = MIXED_TEXT.map("".join)

UNICODE_TEXTS = [
    "日本語のテキストと中文文本，还有한국어 문장。",
    "Family: 👨‍👩‍👧‍👦, flags 🇫🇷🇯🇵, skin tones 👍🏽, keycap 1️⃣",
    "Combining: e\u0301 a\u0308 n\u0303 Zalgo: Z\u0351\u0352a\u0353l\u0354g\u0355o\u0356",
    "עברית מימין לשמאל, العربية من اليمين إلى اليسار, mixed שלום world",
    "tabs\t\tand   many      spaces" + " " * 300 + "\n\n\n\n" + "\t" * 50 + "end",
    "def f(x: int) -> int:\n    return x ** 2  # square\n\n\tif x != 0: pass\r\n",
    "It's we'll they've I'M DON'T 1234567890 3.14159 $100,000 ...!!! ??",
    "\u200b\u200d\ufeff zero-width and BOM, \u00a0nbsp, \u2028line sep\u2029",
]


@pytest.fixture(scope="module")
def hf_gpt2(data_dir):
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import decoders, models, pre_tokenizers

    model = models.BPE.from_file(str(data_dir / "encoder.json"), str(data_dir / "vocab.bpe"))
    tok = tokenizers.Tokenizer(model)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


@SETTINGS
@given(text=MIXED_TEXT)
def test_gpt2_pattern_splits_like_the_2019_original(text):
    assert regex.findall(GPT2_PATTERN, text) == regex.findall(GPT2_PATTERN_2019, text)


def test_gpt4_pattern_is_tiktokens_cl100k(monkeypatch):
    """tiktoken keeps the cl100k_base pattern inside the function that downloads its ranks; with
    the download stubbed out (nothing is fetched) that function hands the pattern over."""
    openai_public = pytest.importorskip("tiktoken_ext.openai_public")
    monkeypatch.setattr(openai_public, "load_tiktoken_bpe", lambda *args, **kwargs: {})
    assert GPT4_PATTERN == openai_public.cl100k_base()["pat_str"]


@SETTINGS
@given(text=MIXED_TEXT)
def test_reference_encoder_matches_tiktoken_on_any_text(gpt2, gpt2_reference, tiktoken_gpt2, text):
    """The pure-Python merge loop against tiktoken's, over the full GPT-2 vocabulary."""
    expected = tiktoken_gpt2.encode_ordinary(text)
    assert gpt2_reference.encode_ordinary(text) == expected
    assert gpt2.encode_ordinary(text) == expected


def test_every_gpt2_id_decodes_to_tiktokens_bytes(gpt2, tiktoken_gpt2):
    for i in range(gpt2.vocab_size):
        assert gpt2.decode_bytes([i]) == tiktoken_gpt2.decode_single_token_bytes(i), i


def _texts(data_dir):
    texts = [(data_dir / "the-verdict.txt").read_text(encoding="utf-8")]
    shakespeare = (data_dir / "tinyshakespeare.txt").read_text(encoding="utf-8")
    return texts + [shakespeare[:200_000]] + UNICODE_TEXTS


def test_the_verdict_token_count(gpt2, data_dir):
    assert len(gpt2.encode((data_dir / "the-verdict.txt").read_text(encoding="utf-8"))) == 5145


def test_parity_tiktoken(gpt2, tiktoken_gpt2, data_dir):
    ref = gpt2.with_fast(False)
    for text in _texts(data_dir):
        expected = tiktoken_gpt2.encode_ordinary(text)
        assert gpt2.encode(text) == expected
        assert ref.encode(text) == expected
        assert gpt2.decode(expected) == text


def test_parity_hf_tokenizers(gpt2, hf_gpt2, data_dir):
    for text in _texts(data_dir):
        assert gpt2.encode(text) == hf_gpt2.encode(text).ids


def test_full_shakespeare_fast(gpt2, tiktoken_gpt2, data_dir):
    text = (data_dir / "tinyshakespeare.txt").read_text(encoding="utf-8")
    assert gpt2.encode(text) == tiktoken_gpt2.encode_ordinary(text)


def test_special_token_ids(gpt2, tiktoken_gpt2):
    text = "Hello<|endoftext|>World"
    expected = tiktoken_gpt2.encode(text, allowed_special="all")
    assert gpt2.encode(text, allowed_special="all") == expected
    assert gpt2.with_fast(False).encode(text, allowed_special="all") == expected
