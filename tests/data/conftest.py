"""A tiny byte-level stand-in tokenizer, so the data tests need no trained tokenizer."""

from __future__ import annotations

import pytest


class ByteTokenizer:
    """Ids 0..255 are UTF-8 bytes; 256 is the end-of-text token, 257 a begin token."""

    vocab_size = 258
    eot_id = 256
    bos_id = 257

    def encode_ordinary(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode(self, text: str, allowed_special: object = None) -> list[int]:
        return self.encode_ordinary(text)

    def decode(self, ids: list[int]) -> str:
        out = bytearray()
        for i in ids:
            out += b"<|endoftext|>" if i == self.eot_id else b"<|bos|>" if i == 257 else bytes([i])
        return out.decode("utf-8", errors="replace")


@pytest.fixture
def byte_tokenizer() -> ByteTokenizer:
    return ByteTokenizer()
