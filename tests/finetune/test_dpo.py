"""DPO: the loss starts at ln 2 with reference == policy and falls on a toy preference set."""

import json
import math
import random

import pytest
import torch

from scratchllm.errors import ConfigError, DataError
from scratchllm.finetune.instruct import IGNORE_INDEX
from scratchllm.finetune.instruct_data import SkipReport
from scratchllm.finetune.lora import LoRAConfig
from scratchllm.finetune.preference import (
    DPOConfig,
    DPOObjective,
    disable_dropout,
    dpo_loss,
    finetune_dpo,
    load_pairs,
    sequence_logps,
)
from scratchllm.model import GPTModel, ModelConfig
from scratchllm.tokenizer import BPETokenizer
from scratchllm.train.checkpoint import load_run, save_run
from scratchllm.train.config import TrainConfig


def test_loss_formula():
    zeros = torch.zeros(3)
    loss, chosen, rejected = dpo_loss(zeros, zeros, zeros, zeros, beta=0.1)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-7)
    assert chosen.tolist() == rejected.tolist() == [0.0, 0.0, 0.0]
    pc, pr, rc, rr = (torch.tensor([v]) for v in (-1.0, -5.0, -2.0, -3.0))
    loss, chosen, rejected = dpo_loss(pc, pr, rc, rr, beta=0.5)
    # rewards 0.5 * (-1 + 2) = 0.5 and 0.5 * (-5 + 3) = -1: margin 1.5
    assert chosen.item() == 0.5 and rejected.item() == -1.0
    assert loss.item() == pytest.approx(-math.log(1 / (1 + math.exp(-1.5))), abs=1e-6)
    with pytest.raises(ConfigError):
        DPOObjective(None, beta=0)


def test_sequence_logps_skip_ignored_targets():
    logits = torch.randn(2, 4, 7)
    targets = torch.tensor([[1, 2, IGNORE_INDEX, IGNORE_INDEX], [IGNORE_INDEX, 3, 4, 5]])
    logps = torch.log_softmax(logits, -1)
    expected = [logps[0, 0, 1] + logps[0, 1, 2], logps[1, 1, 3] + logps[1, 2, 4] + logps[1, 3, 5]]
    torch.testing.assert_close(sequence_logps(logits, targets), torch.stack(expected))


def test_bad_pairs(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(
        json.dumps(
            [
                {"instruction": "a", "chosen": "b", "rejected": "c"},
                {"instruction": "a", "chosen": "b"},
            ]
        )
    )
    with pytest.raises(DataError, match=r"p\.json:1 \(record 2\): field 'rejected' is missing"):
        load_pairs(path)
    skips = SkipReport()
    assert len(load_pairs(path, skip_invalid=True, skips=skips)) == 1 and skips.total == 1


def _toy(tmp_path, dropout=0.0):
    """Prompts 'colour N', chosen 'yes N', rejected 'no N'; a random tiny base model."""
    rng = random.Random(0)
    records = [
        {"instruction": f"colour {rng.randint(0, 99)}", "chosen": "yes", "rejected": "no"}
        for _ in range(80)
    ]
    (tmp_path / "pairs.json").write_text(json.dumps(records))
    tok = BPETokenizer.train("Reverse. ### Instruction: colour ### Response: yes no " * 5, 300)
    cfg = ModelConfig(
        vocab_size=tok.vocab_size,
        context_length=48,
        n_embd=32,
        n_layer=2,
        n_head=4,
        dropout=dropout,
    )
    torch.manual_seed(0)
    save_run(tmp_path / "base", GPTModel(cfg), cfg, tok)
    return tmp_path / "base", tmp_path / "pairs.json"


def _train(steps, lr=1e-3):
    return TrainConfig(
        max_steps=steps,
        batch_size=8,
        lr=lr,
        min_lr=lr / 10,
        warmup_steps=2,
        eval_interval=10,
        log_interval=10,
        weight_decay=0.0,
        device="cpu",
        seed=0,
    )


@pytest.mark.parametrize("lora", [None, LoRAConfig(r=4, alpha=8)], ids=["full", "lora"])
def test_starts_at_ln2_and_margins_grow(tmp_path, lora):
    torch.set_num_threads(1)
    base, data = _toy(tmp_path)
    cfg = DPOConfig(beta=0.5, system="Reverse.", split=(0.8, 0.2, 0.0), lora=lora)
    report = finetune_dpo(
        base,
        data,
        tmp_path / "dpo",
        cfg,
        _train(30, 3e-3 if lora else 1e-3),
        progress=False,
        log=lambda m: None,
    )
    assert report.initial_loss == pytest.approx(math.log(2), abs=1e-5)
    margins = [e["val_reward_margin"] for e in report.evals]
    losses = [e["val_loss"] for e in report.evals]
    assert len(margins) == 3 and margins[0] > 0 and margins[-1] > margins[0]
    assert losses[-1] < losses[0] < math.log(2)
    assert report.evals[-1]["val_reward_accuracy"] == 1.0
    out = tmp_path / "dpo"
    assert (out / ("adapter.safetensors" if lora else "model.safetensors")).exists()
    if lora is None:
        assert load_run(out).model.cfg.vocab_size == load_run(base).model.cfg.vocab_size


def test_cli_prints_each_line_once(tmp_path, capsys):
    from scratchllm.cli import main

    torch.set_num_threads(1)
    base, data = _toy(tmp_path)
    argv = [
        "finetune",
        "dpo",
        "--base",
        str(base),
        "--data",
        str(data),
        "--out",
        str(tmp_path / "o"),
    ]
    opts = ["--steps", "2", "--batch-size", "4", "--eval-interval", "2", "--device", "cpu"]
    assert (
        main(
            [
                *argv,
                *opts,
                "--split",
                "0.8,0.2,0",
                "--template",
                "alpaca",
                "--system",
                "Reverse.",
                "--no-progress",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert out.count("initial validation DPO loss") == 1
    assert out.count("val loss") == 1  # the one evaluation, logged as it happened
    assert "{" not in out  # no Python dicts
    assert "64 train, 16 validation" in out


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"beta": 0.0}, "beta=0.0 must be > 0"), ({"split": (0.5, 0.5, 0.5)}, "sum to 1")],
)
def test_bad_settings_stop_before_anything_is_loaded(kwargs, match):
    """Settings are checked when the config is made, not after the data and the model load."""
    with pytest.raises(ConfigError, match=match):
        DPOConfig(**kwargs)


def test_disable_dropout_makes_training_mode_deterministic():
    cfg = ModelConfig(vocab_size=64, context_length=16, n_embd=32, n_layer=2, n_head=4, dropout=0.5)
    model = GPTModel(cfg)
    idx = torch.randint(0, 64, (2, 16))
    with torch.no_grad():
        assert not torch.equal(model.train()(idx), model.eval()(idx))
        disable_dropout(model)
        torch.testing.assert_close(model.train()(idx), model.eval()(idx))


@pytest.mark.parametrize(
    "lora", [None, LoRAConfig(r=4, alpha=8, dropout=0.3)], ids=["full", "lora"]
)
def test_policy_scores_without_dropout(tmp_path, lora):
    """A base trained with dropout: the policy's rewards measure preference, not dropout noise.
    With a negligible learning rate the policy stays the reference, so every reward is ~0."""
    torch.set_num_threads(1)
    base, data = _toy(tmp_path, dropout=0.3)
    cfg = DPOConfig(beta=1.0, system="Reverse.", split=(0.8, 0.2, 0.0), lora=lora)
    train = _train(4, lr=1e-12)
    train.eval_interval = 4
    report = finetune_dpo(
        base, data, tmp_path / "o", cfg, train, progress=False, log=lambda m: None
    )
    last = report.evals[-1]
    assert abs(last["train_reward_chosen"]) < 1e-4 and abs(last["train_reward_rejected"]) < 1e-4
