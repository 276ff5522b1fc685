import math

import pytest
from torch import nn

from scratchllm.errors import ConfigError
from scratchllm.model import GPTModel, get_preset
from scratchllm.train.config import TrainConfig
from scratchllm.train.optim import lr_at, param_groups


def test_schedule_warms_up_linearly_then_decays_to_the_floor():
    cfg = TrainConfig(max_steps=100, warmup_steps=10, lr=1.0, min_lr=0.1)
    lrs = [lr_at(s, cfg) for s in range(100)]
    assert lrs[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert lrs[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lr_at(100, cfg) == pytest.approx(0.1)
    midpoint = 10 + 45
    assert lr_at(midpoint, cfg) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))


def test_no_decay_on_norms_biases_and_embeddings():
    model = GPTModel(get_preset("tiny"))
    groups = param_groups(model, 0.1)
    decayed = {id(p) for p in groups[0]["params"]}
    names = {id(p): n for n, p in model.named_parameters()}
    assert groups[0]["weight_decay"] == 0.1 and groups[1]["weight_decay"] == 0.0
    for p in groups[0]["params"]:
        assert p.dim() == 2, names[id(p)]
    for name, p in model.named_parameters():
        if p.dim() < 2 or "wte" in name or "wpe" in name:
            assert id(p) not in decayed, name
    total = sum(len(g["params"]) for g in groups)
    assert total == len(list(model.parameters()))  # tied weights counted once


def test_generic_groups_for_plain_modules():
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 4), nn.LayerNorm(4))
    decay, no_decay = param_groups(model, 0.5)
    assert [p.shape for p in decay["params"]] == [(4, 4)]
    assert len(no_decay["params"]) == 4  # embedding, linear bias, norm weight and bias


@pytest.mark.parametrize(
    "field,value",
    [("max_steps", 0), ("batch_size", 0), ("lr", 0.0), ("min_lr", 1.0), ("dtype", "int8")],
)
def test_bad_train_config_names_the_field(field, value):
    with pytest.raises(ConfigError, match=field if field != "min_lr" else "min_lr"):
        TrainConfig(**{field: value})


def test_train_config_round_trips_and_rejects_unknown_fields():
    cfg = TrainConfig(max_steps=7, lr=1e-3, min_lr=1e-4)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="bogus"):
        TrainConfig.from_dict({"bogus": 1})


@pytest.mark.parametrize("tie", [True, False])
def test_decay_on_choices(tie):
    model = GPTModel(get_preset("tiny", tie_embeddings=tie))
    names = {id(p): n for n, p in model.named_parameters()}
    every = {id(p) for p in model.parameters()}

    def decayed(on):
        decay, no_decay = param_groups(model, 0.1, on)
        assert {id(p) for p in decay["params"]} | {id(p) for p in no_decay["params"]} == every
        return {names[id(p)] for p in decay["params"]}

    matmul, matrices, everything = decayed("matmul"), decayed("matrices"), decayed("all")
    assert matmul < matrices < everything
    assert matrices - matmul == {"embed.wte.weight", "embed.wpe.weight"}
    assert everything == set(names.values())
    with pytest.raises(ValueError, match="decay_on='bias' must be one of matmul, matrices, all"):
        param_groups(model, 0.1, "bias")


def test_weight_decay_on_is_validated():
    with pytest.raises(ConfigError, match="weight_decay_on"):
        TrainConfig(weight_decay_on="norms")
