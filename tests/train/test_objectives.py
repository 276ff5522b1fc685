import math

import pytest
import torch

from scratchllm.data.loaders import EpochLoader
from scratchllm.data.windows import WindowDataset
from scratchllm.model import EncoderModel, get_preset
from scratchllm.train.config import TrainConfig
from scratchllm.train.loop import Trainer
from scratchllm.train.objectives import IGNORE_INDEX, MaskedLM, mask_tokens, masked_lm_loss


def test_masking_follows_the_80_10_10_recipe():
    vocab, mask_id, pad = 1000, 999, 0
    ids = torch.randint(1, 999, (200, 500))
    ids[:, :10] = pad
    recipe = MaskedLM(mask_id=mask_id, vocab_size=vocab, special_ids=(pad,))
    inputs, targets = mask_tokens(ids, recipe, torch.Generator().manual_seed(0))
    chosen = targets != IGNORE_INDEX
    assert not chosen[:, :10].any()  # special tokens are never chosen
    assert torch.equal(targets[chosen], ids[chosen])
    assert torch.equal(inputs[~chosen], ids[~chosen])
    share = chosen[:, 10:].float().mean().item()
    assert share == pytest.approx(0.15, abs=0.005)
    masked = (inputs[chosen] == mask_id).float().mean().item()
    kept = (inputs[chosen] == ids[chosen]).float().mean().item()
    assert masked == pytest.approx(0.8, abs=0.01)
    # kept = 10% kept on purpose + random replacements that drew the same id (~0.1%)
    assert kept == pytest.approx(0.1, abs=0.01)
    assert 1 - masked - kept == pytest.approx(0.1, abs=0.01)


def test_bad_recipe_is_rejected():
    with pytest.raises(ValueError, match="mask_prob"):
        MaskedLM(mask_id=1, vocab_size=10, mask_prob=1.5)
    with pytest.raises(ValueError, match="mask_id"):
        MaskedLM(mask_id=10, vocab_size=10)


def test_encoder_learns_masked_tokens(tmp_path):
    torch.manual_seed(0)
    # a sequence where each token is determined by its neighbours: masked tokens are recoverable
    ids = torch.arange(4000) % 20 + 1
    cfg = get_preset("tiny-bert", vocab_size=32, context_length=16)
    model = EncoderModel(cfg)
    recipe = MaskedLM(mask_id=31, vocab_size=32, special_ids=(0,))
    loader = EpochLoader(WindowDataset(ids.numpy(), 16, 16), 8, seed=0)
    train_cfg = TrainConfig(
        max_steps=200,
        batch_size=8,
        lr=3e-3,
        min_lr=3e-4,
        warmup_steps=10,
        eval_interval=200,
        log_interval=10,
        device="cpu",
    )
    loss_fn = masked_lm_loss(recipe, torch.Generator().manual_seed(0))
    trainer = Trainer(model, train_cfg, loader, run_dir=None, loss_fn=loss_fn, progress=False)
    result = trainer.fit()
    losses = [r["loss"] for r in result.history if "loss" in r]
    # a unigram model cannot beat ln(20) ~ 3.0 nats here; using the context gets far below it
    assert losses[0] > 2.5 and losses[-1] < math.log(20) - 1.0
