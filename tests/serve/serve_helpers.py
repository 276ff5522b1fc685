"""Shared by the serving tests (a unique module name: conftest files cannot be imported)."""

from __future__ import annotations

from pathlib import Path

import torch

from scratchllm.model import GPTModel, get_preset
from scratchllm.tokenizer import BPETokenizer
from scratchllm.train.checkpoint import save_run

EOT = "<|endoftext|>"
MODEL = "tiny-run"
KEY = "test-key-0123456789"


def make_run(path: Path, context_length: int = 128) -> Path:
    """Byte tokenizer (every byte a token, so characters split) + a random tiny GPT."""
    tokenizer = BPETokenizer([bytes([b]) for b in range(256)], special_tokens={EOT: 256})
    torch.manual_seed(0)
    cfg = get_preset("tiny", vocab_size=257, context_length=context_length, init_std=0.3)
    save_run(path, GPTModel(cfg).eval(), cfg, tokenizer)
    return path


class _NoEot:
    """A tokenizer proxy without an end-of-text id: replies run to max_tokens."""

    eot_id = None

    def __init__(self, tokenizer) -> None:
        self._tokenizer = tokenizer

    def __getattr__(self, name: str):
        return getattr(self._tokenizer, name)

    def decode_bytes(self, ids) -> bytes:  # nor its text (a stop string of the chat template)
        eot = self._tokenizer.eot_id
        return self._tokenizer.decode_bytes([i for i in ids if i != eot])


def never_eot(scheduler) -> None:
    """Tests that hold a slot must not see the random model end its reply early."""
    scheduler.batch.tokenizer = _NoEot(scheduler.batch.tokenizer)
