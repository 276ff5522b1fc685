"""Tokenizers: text <-> token ids.

`BPETokenizer` (byte-level BPE: train, encode, decode; GPT-2 and tiktoken files; tiktoken as a
same-answer fast path), `WordTokenizer` (word- or character-level baseline) and `load_tokenizer`
(reads either from our own `tokenizer.json` format).
"""

from scratchllm.tokenizer.bpe import ENDOFTEXT, BPETokenizer
from scratchllm.tokenizer.files import load_tokenizer
from scratchllm.tokenizer.parallel import encode_files, encode_many
from scratchllm.tokenizer.patterns import GPT2_PATTERN, GPT4_PATTERN
from scratchllm.tokenizer.simple import WordTokenizer

__all__ = [
    "ENDOFTEXT",
    "GPT2_PATTERN",
    "GPT4_PATTERN",
    "BPETokenizer",
    "WordTokenizer",
    "encode_files",
    "encode_many",
    "load_tokenizer",
]
