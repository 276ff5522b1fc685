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
def data_dir() -> Path:
    """../shared/data with the GPT-2 files (session scope, so module fixtures can use it)."""
    data = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    if not (data / "encoder.json").is_file() or not (data / "vocab.bpe").is_file():
        pytest.skip(f"GPT-2 files not found in {data}")
    return data


@pytest.fixture(scope="session")
def gpt2(data_dir: Path) -> BPETokenizer:
    return BPETokenizer.from_gpt2_files(data_dir / "encoder.json", data_dir / "vocab.bpe")
