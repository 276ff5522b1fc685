"""A tiny byte-level stand-in tokenizer for the data tests (a module with a unique name, so
worker processes can unpickle it whichever conftest.py is loaded as `conftest`)."""

from __future__ import annotations


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


class WrongVocab:
    """A tokenizer whose vocab_size understates its ids (65,536 fits uint16; id 70,000 does not)."""

    vocab_size = 2**16
    eot_id = 70_000

    def encode_ordinary(self, text: str) -> list[int]:
        return [ord(c) for c in text]
