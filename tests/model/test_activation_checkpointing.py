"""Activation checkpointing (`activation_checkpointing`, `run_block`): the same gradients as
storing every activation, far less kept for backward."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scratchllm.data.loaders import EpochLoader
from scratchllm.data.windows import WindowDataset
from scratchllm.errors import ConfigError
from scratchllm.model import EncoderModel, GPTModel, get_preset
from scratchllm.train.config import TrainConfig
from scratchllm.train.loop import Trainer


def grads_and_saved_bytes(model, recompute: bool, step) -> tuple[dict, int]:
    """Gradients of one backward, and the bytes autograd kept for it outside checkpointed blocks
    (tensors a checkpointed block keeps are packed by its own hook, never by this outer one)."""
    model.activation_checkpointing = recompute
    model.zero_grad(set_to_none=True)
    saved = 0

    def pack(t):
        nonlocal saved
        saved += t.numel() * t.element_size()
        return t

    torch.manual_seed(7)  # the same dropout masks for both runs
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = step(model)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return grads, saved


@pytest.mark.parametrize("preset", ["tiny", "tiny-llama"])
def test_gpt_gradients_are_those_of_storing_everything(preset):
    torch.manual_seed(0)
    cfg = get_preset(preset, vocab_size=97, context_length=32, n_layer=4, dropout=0.1)
    model = GPTModel(cfg).train()
    x, y = torch.randint(0, 97, (3, 32)), torch.randint(0, 97, (3, 32))
    mask = torch.ones(3, 32)
    mask[0, :5] = 0  # a left-padded row: the mask goes through the checkpointed blocks too

    def step(m):
        logits = m(x, attention_mask=mask)  # the plain head and loss
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())

    for run in (step, lambda m: m(x, targets=y)):  # and the fused CPU loss
        plain, plain_saved = grads_and_saved_bytes(model, False, run)
        again, kept_saved = grads_and_saved_bytes(model, True, run)
        for name, g in plain.items():
            torch.testing.assert_close(again[name], g, rtol=1e-5, atol=1e-7, msg=name)
        assert kept_saved < plain_saved / 4, (kept_saved, plain_saved)


def test_encoder_gradients_are_those_of_storing_everything():
    torch.manual_seed(0)
    cfg = get_preset("tiny-bert", vocab_size=97, context_length=32, n_layer=4, dropout=0.1)
    model = EncoderModel(cfg).train()
    x = torch.randint(0, 97, (3, 32))

    def step(m):
        return m.mlm_logits(m(x)).float().logsumexp(-1).mean()

    plain, plain_saved = grads_and_saved_bytes(model, False, step)
    again, kept_saved = grads_and_saved_bytes(model, True, step)
    assert again.keys() == plain.keys() and "pooler.dense.weight" not in plain  # pooler unused
    for name, g in plain.items():
        torch.testing.assert_close(again[name], g, rtol=1e-5, atol=1e-7, msg=name)
    assert kept_saved < plain_saved / 2, (kept_saved, plain_saved)


def test_no_recompute_without_gradients_or_with_a_cache():
    torch.manual_seed(0)
    model = GPTModel(get_preset("tiny", vocab_size=97, context_length=32)).eval()
    model.activation_checkpointing = True
    x = torch.randint(0, 97, (2, 8))
    with torch.no_grad():
        plain = model(x)
    model.activation_checkpointing = False
    with torch.no_grad():
        torch.testing.assert_close(model(x), plain, rtol=0, atol=0)


def trainer(recompute: bool, model=None) -> Trainer:
    torch.manual_seed(0)
    model = model or GPTModel(get_preset("tiny", vocab_size=64, context_length=16, dropout=0.1))
    cfg = TrainConfig(
        max_steps=6,
        batch_size=4,
        lr=3e-3,
        warmup_steps=2,
        eval_interval=100,
        log_interval=1,
        seed=0,
        device="cpu",
        activation_checkpointing=recompute,
    )
    ids = np.random.default_rng(0).integers(0, 64, 2000)
    return Trainer(model, cfg, EpochLoader(WindowDataset(ids, 16, 16), 4, seed=0), progress=False)


def test_training_with_it_follows_the_same_path():
    plain = trainer(False)
    plain.fit()
    recomputed = trainer(True)  # seeded again: the same weights, batches and dropout draws
    recomputed.fit()
    assert recomputed.model.activation_checkpointing and not plain.model.activation_checkpointing
    losses = [[r["loss"] for r in t.metrics.records if "loss" in r] for t in (plain, recomputed)]
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)
    for (name, a), b in zip(
        plain.model.state_dict().items(), recomputed.model.state_dict().values()
    ):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6, msg=name)


def test_a_model_without_it_is_refused():
    with pytest.raises(ConfigError, match="activation_checkpointing: Linear does not support"):
        trainer(True, model=torch.nn.Linear(2, 2))
