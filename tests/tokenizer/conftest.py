"""Small tokenizers shared by the tokenizer tests (trained once per session on tiny text)."""

from __future__ import annotations

from pathlib import Path

import pytest

from scratchllm.tokenizer import BPETokenizer

SAMPLE = (
    "The quick brown fox jumps over the lazy dog. The dog sleeps; the fox runs!\n"
    "It's 2024 and we've got 12345 numbers, emojis 🙂 and ümlauts too.\n\n"
    "    def f(x):\n        return x * 2  # code\n"
) * 20


@pytest.fixture(scope="session")
def sample_text() -> str:
    return SAMPLE


@pytest.fixture(scope="session")
def small_bpe() -> BPETokenizer:
    return BPETokenizer.train(SAMPLE, 320, backend="reference")


@pytest.fixture(scope="session")
def small_bpe_gpt4() -> BPETokenizer:
    """The same text with the GPT-4 split (digit groups of three, newlines kept apart)."""
    return BPETokenizer.train(SAMPLE, 320, pattern="gpt4", backend="reference")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """../shared/data with the GPT-2 files (session scope, so module fixtures can use it)."""
    data = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    if not (data / "encoder.json").is_file() or not (data / "vocab.bpe").is_file():
        pytest.skip(f"GPT-2 files not found in {data}")
    return data


@pytest.fixture(scope="session")
def gpt2(data_dir: Path) -> BPETokenizer:
    return BPETokenizer.from_gpt2_files(data_dir / "encoder.json", data_dir / "vocab.bpe")


@pytest.fixture(scope="session")
def gpt2_reference(gpt2: BPETokenizer) -> BPETokenizer:
    """The same vocabulary on the pure-Python encoder (no tiktoken)."""
    return gpt2.with_fast(False)


@pytest.fixture(scope="session")
def tiktoken_gpt2(data_dir: Path):
    """tiktoken's GPT-2 encoding built by tiktoken alone (its own file reader and its own copy of
    the GPT-2 pattern), so nothing of ours is on the reference side."""
    tiktoken = pytest.importorskip("tiktoken")
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks
    from tiktoken_ext.openai_public import r50k_pat_str

    ranks = data_gym_to_mergeable_bpe_ranks(
        str(data_dir / "vocab.bpe"), str(data_dir / "encoder.json")
    )
    return tiktoken.Encoding(
        "gpt2-local",
        pat_str=r50k_pat_str,
        mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": 50256},
    )
