"""Tiny seeded models and a byte-level tokenizer (every byte is a token, so characters split)."""

from __future__ import annotations

import pytest
import torch

from scratchllm.model import GPTModel, get_preset
from scratchllm.tokenizer import BPETokenizer

EOT = "<|endoftext|>"


def byte_tokenizer() -> BPETokenizer:
    """256 single-byte tokens + end-of-text (id 256): multi-byte characters span several ids."""
    return BPETokenizer([bytes([b]) for b in range(256)], special_tokens={EOT: 256})


def tiny_model(preset: str = "tiny", **overrides) -> GPTModel:
    """A random model; a large init spread makes its greedy output varied (not one repeated id)."""
    torch.manual_seed(0)
    cfg = get_preset(preset, vocab_size=257, **{"init_std": 0.3, **overrides})
    return GPTModel(cfg).eval()


@pytest.fixture
def tokenizer() -> BPETokenizer:
    return byte_tokenizer()


@pytest.fixture(params=["tiny", "tiny-llama"])
def model(request) -> GPTModel:
    return tiny_model(request.param)


@pytest.fixture
def make_model():
    """`tiny_model` for tests that need their own configuration."""
    return tiny_model


@pytest.fixture(autouse=True)
def _tiny_models_on_one_thread(one_thread):
    """Every test here runs tiny models: one intra-op thread (see `one_thread`)."""
    yield
