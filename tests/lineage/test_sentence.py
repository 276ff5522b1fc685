"""Sentence embeddings from GPT and encoder runs: pooling, batch invariance, loading, search."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from scratchllm.errors import ConfigError
from scratchllm.lineage.sentence import SentenceEmbedder, load_embedder, pool, search
from scratchllm.model import EncoderModel, GPTModel, get_preset
from scratchllm.tokenizer import WordTokenizer
from scratchllm.train.checkpoint import save_run

TEXTS = ["the cat sat on the mat", "a dog", "the dog sat", "cats and dogs and mats and hats"]


def tokenizer() -> WordTokenizer:
    return WordTokenizer.train(TEXTS, mode="word")


def tiny(kind: str, vocab: int):
    preset = "tiny" if kind == "gpt" else "tiny-bert"
    cfg = get_preset(preset, vocab_size=vocab)
    return (GPTModel if kind == "gpt" else EncoderModel)(cfg).eval()


def test_pool_by_hand():
    hidden = torch.arange(24, dtype=torch.float32).view(2, 3, 4)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert pool(hidden, mask, "mean")[0].tolist() == hidden[0, :2].mean(0).tolist()
    assert pool(hidden, mask, "last").tolist() == [hidden[0, 1].tolist(), hidden[1, 2].tolist()]
    with pytest.raises(ConfigError, match="pooling"):
        pool(hidden, mask, "max")


@pytest.mark.parametrize("kind", ["gpt", "encoder"])
@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_a_text_gets_the_same_vector_alone_or_in_a_padded_batch(kind, pooling):
    tok = tokenizer()
    embedder = SentenceEmbedder(tiny(kind, tok.vocab_size), tok, pooling)
    batched = embedder.embed(TEXTS, batch_size=4)
    alone = torch.cat([embedder.embed([t]) for t in TEXTS])
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=0)
    assert batched.shape == (4, 32)
    torch.testing.assert_close(batched.norm(dim=-1), torch.ones(4))


def test_load_embedder_from_gpt_and_encoder_runs(tmp_path):
    tok = tokenizer()
    for kind in ("gpt", "encoder"):
        model = tiny(kind, tok.vocab_size)
        save_run(tmp_path / kind, model, model.cfg, tok)
        loaded = load_embedder(tmp_path / kind, pooling="mean")
        assert type(loaded.model) is type(model)
        ours = SentenceEmbedder(model, tok).embed(TEXTS[:2])
        torch.testing.assert_close(loaded.embed(TEXTS[:2]), ours)


def test_search_ranks_by_cosine():
    corpus = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]]), dim=-1)
    assert [i for i, _ in search(torch.tensor([1.0, 0.1]), corpus, k=2)] == [0, 2]
