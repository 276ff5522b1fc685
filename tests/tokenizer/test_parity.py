"""GPT-2 parity: our tokenizer (reference and fast path) against tiktoken and HF `tokenizers`,
both built independently from the same OpenAI files in ../shared/data."""

from __future__ import annotations

import pytest

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
def tiktoken_gpt2(data_dir):
    tiktoken = pytest.importorskip("tiktoken")
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    from scratchllm.tokenizer.patterns import GPT2_PATTERN

    ranks = data_gym_to_mergeable_bpe_ranks(
        str(data_dir / "vocab.bpe"), str(data_dir / "encoder.json")
    )
    return tiktoken.Encoding(
        "gpt2-local",
        pat_str=GPT2_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": 50256},
    )


@pytest.fixture(scope="module")
def hf_gpt2(data_dir):
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import decoders, models, pre_tokenizers

    model = models.BPE.from_file(str(data_dir / "encoder.json"), str(data_dir / "vocab.bpe"))
    tok = tokenizers.Tokenizer(model)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


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
