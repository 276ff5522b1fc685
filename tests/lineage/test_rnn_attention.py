"""GRU encoder-decoder with additive attention: alignment weights, heatmap PNG, and it learns."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from scratchllm.errors import ConfigError
from scratchllm.lineage.rnn_attention import RNNSeq2Seq, RNNSeq2SeqConfig, save_attention_heatmap
from scratchllm.lineage.tasks import collate, reverse_task, train_seq2seq
from scratchllm.train.config import TrainConfig

TASK = reverse_task(n_symbols=4, min_len=2, max_len=4)


def tiny() -> RNNSeq2Seq:
    cfg = RNNSeq2SeqConfig(
        TASK.src_vocab_size,
        TASK.tgt_vocab_size,
        emb_dim=16,
        enc_hidden=32,
        dec_hidden=32,
        attn_dim=32,
    )
    return RNNSeq2Seq(cfg)


def test_attention_weights_are_distributions_over_real_tokens():
    model = tiny().eval()
    src, mask, tgt_in, _ = collate(TASK.sample(5, seed=1))
    out = model.generate(src, mask, 6)
    n = out.tokens.shape[1]
    assert out.attention.shape == (5, n, src.shape[1])
    torch.testing.assert_close(out.attention.sum(-1), torch.ones(5, n))
    assert (out.attention[~mask[:, None].expand_as(out.attention)] == 0).all()
    assert model(src, tgt_in, src_mask=mask).shape == (5, tgt_in.shape[1], TASK.tgt_vocab_size)


def test_padding_does_not_change_a_row():
    model = tiny().eval()
    pairs = TASK.sample(4, seed=2)
    pairs.sort(key=lambda p: len(p[0]))  # the first row is the shortest: it gets padding
    src, mask, tgt_in, _ = collate(pairs)
    batched = model(src, tgt_in, src_mask=mask)[0]
    s1, m1, t1, _ = collate(pairs[:1])
    alone = model(s1, t1, src_mask=m1)[0]
    torch.testing.assert_close(batched[: alone.shape[0]], alone, atol=1e-5, rtol=0)


def test_heatmap_png_has_the_size_and_is_not_blank(tmp_path):
    weights = torch.softmax(torch.randn(4, 5), dim=-1)
    path = save_attention_heatmap(
        weights, list("abcde"), ["w", "x", "y", "z"], tmp_path / "attn.png", size=(400, 300)
    )
    with Image.open(path) as image:
        assert image.size == (400, 300)
        pixels = np.asarray(image.convert("L"), dtype=np.float32)
    assert pixels.std() > 10  # drawn, not a flat image
    with pytest.raises(ValueError, match="weights shape"):
        save_attention_heatmap(weights, ["a"], ["b"], tmp_path / "bad.png")


def test_config_errors():
    with pytest.raises(ConfigError, match="emb_dim"):
        RNNSeq2SeqConfig(10, 10, emb_dim=0)
    with pytest.raises(ConfigError, match="unknown"):
        RNNSeq2SeqConfig.from_dict({"src_vocab_size": 3, "tgt_vocab_size": 3, "heads": 2})


def test_learns_to_reverse():
    torch.manual_seed(0)
    model = tiny()
    cfg = TrainConfig(
        max_steps=600,
        batch_size=32,
        lr=1e-2,
        min_lr=1e-3,
        warmup_steps=20,
        weight_decay=0.0,
        eval_interval=10**9,
        log_interval=10**6,
        device="cpu",
    )
    report = train_seq2seq(model, TASK, cfg, n_heldout=100, eval_every=25)
    assert report.accuracy >= 0.95, report.history
