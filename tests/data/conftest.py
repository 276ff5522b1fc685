"""A tiny byte-level stand-in tokenizer, so the data tests need no trained tokenizer."""

from __future__ import annotations

import pytest
from data_tokenizer import ByteTokenizer  # noqa: E402


@pytest.fixture
def byte_tokenizer() -> ByteTokenizer:
    return ByteTokenizer()
