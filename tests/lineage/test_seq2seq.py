"""Encoder-decoder Transformer: cached decoding == uncached, padding, sampling, and it learns."""

from __future__ import annotations

import pytest
import torch

from scratchllm.errors import ConfigError
from scratchllm.generation.sampling import SamplingConfig
from scratchllm.lineage.seq2seq import Seq2SeqConfig, Seq2SeqTransformer
from scratchllm.lineage.tasks import collate, reverse_task, train_seq2seq
from scratchllm.train.config import TrainConfig

TASK = reverse_task(n_symbols=6, min_len=2, max_len=6)


def tiny(**overrides) -> Seq2SeqTransformer:
    cfg = dict(
        src_vocab_size=TASK.src_vocab_size,
        tgt_vocab_size=TASK.tgt_vocab_size,
        max_src_len=8,
        max_tgt_len=12,
        n_embd=32,
        n_head=4,
        n_enc_layer=2,
        n_dec_layer=2,
    )
    return Seq2SeqTransformer(Seq2SeqConfig(**(cfg | overrides))).eval()


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"attn_impl": "math"},
        {"pos_emb": "rope", "norm_position": "post"},
        {"pos_emb": "sinusoidal", "tie_embeddings": False},
    ],
)
def test_cached_decoding_equals_uncached(overrides):
    torch.manual_seed(1)
    model = tiny(**overrides)
    # Untrained weights give near-ties; scale the head up so the greedy path is decisive.
    with torch.no_grad():
        model.lm_head.weight.mul_(30.0)
    src, mask, _, _ = collate(TASK.sample(6, seed=3))  # rows of different lengths: padding
    cached = model.generate(src, mask, 10, use_cache=True)
    plain = model.generate(src, mask, 10, use_cache=False)
    assert cached.tokens.tolist() == plain.tokens.tolist()
    torch.testing.assert_close(cached.logits, plain.logits, atol=1e-5, rtol=0)


def test_sampled_decoding_cached_equals_uncached():
    model = tiny()
    src, mask, _, _ = collate(TASK.sample(4, seed=5))
    sampling = SamplingConfig(temperature=1.0, top_k=5)
    runs = [
        model.generate(
            src, mask, 8, sampling=sampling, generator=torch.Generator().manual_seed(7), use_cache=c
        )
        for c in (True, False)
    ]
    assert runs[0].tokens.tolist() == runs[1].tokens.tolist()


def test_padding_does_not_change_a_row():
    model = tiny()
    pairs = TASK.sample(3, seed=8)
    alone = model.generate(*collate(pairs[:1])[:2], 8).logits[0]
    src, mask, _, _ = collate(pairs)
    batched = model.generate(src, mask, 8).logits[0, : alone.shape[0]]
    torch.testing.assert_close(alone, batched, atol=1e-5, rtol=0)


def test_teacher_forcing_matches_step_by_step_decode():
    model = tiny()
    src, mask, tgt_in, _ = collate(TASK.sample(4, seed=2))
    full = model(src, tgt_in, src_mask=mask)
    memory = model.encode(src, src_mask=mask)
    cache = model.new_cache(memory, mask, tgt_in.shape[1])
    steps = torch.cat(
        [model.decode(tgt_in[:, t : t + 1], cache=cache) for t in range(tgt_in.shape[1])], 1
    )
    torch.testing.assert_close(full, steps, atol=1e-5, rtol=0)


def test_errors_name_the_problem():
    with pytest.raises(ConfigError, match="n_head"):
        Seq2SeqConfig(10, 10, n_embd=30, n_head=4)
    model = tiny()
    src, mask, tgt_in, _ = collate(TASK.sample(2, seed=1))
    with pytest.raises(ValueError, match="exactly one of"):
        model.decode(tgt_in)
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.generate(src, mask, 50)
    cache = model.new_cache(model.encode(src, src_mask=mask), mask, 2)
    with pytest.raises(ValueError, match="KV cache full"):
        model.decode(tgt_in[:, :3], cache=cache)


def test_learns_to_reverse():
    torch.manual_seed(0)
    task = reverse_task(n_symbols=4, min_len=2, max_len=4)
    model = Seq2SeqTransformer(
        Seq2SeqConfig(
            task.src_vocab_size,
            task.tgt_vocab_size,
            8,
            8,
            n_embd=32,
            n_head=2,
            n_enc_layer=1,
            n_dec_layer=1,
        )
    )
    cfg = TrainConfig(
        max_steps=600,
        batch_size=32,
        lr=3e-3,
        min_lr=3e-4,
        warmup_steps=20,
        weight_decay=0.0,
        eval_interval=10**9,
        log_interval=10**6,
        device="cpu",
    )
    report = train_seq2seq(model, task, cfg, n_heldout=100, eval_every=25)
    assert report.accuracy >= 0.95, report.history
    assert report.reached_target_at == report.steps
