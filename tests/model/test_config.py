import pytest

from scratchllm.errors import ConfigError
from scratchllm.model import PRESETS, ModelConfig, get_preset


def test_roundtrip_every_preset():
    for name, cfg in PRESETS.items():
        assert ModelConfig.from_dict(cfg.to_dict()) == cfg, name


def test_get_preset_overrides_and_validates():
    cfg = get_preset("tiny", n_layer=3, dropout=0.1)
    assert cfg.n_layer == 3 and cfg.dropout == 0.1
    assert PRESETS["tiny"].n_layer == 2  # the preset itself is untouched
    with pytest.raises(ConfigError, match="n_head=5"):
        get_preset("tiny", n_head=5)
    with pytest.raises(ConfigError, match="nope"):
        get_preset("nope")
    with pytest.raises(ConfigError, match="n_heads"):
        get_preset("tiny", n_heads=2)
    for name in (["tiny"], {"a": 1}):  # job files hold any JSON value (was unhashable type)
        with pytest.raises(ConfigError, match="unknown model preset"):
            get_preset(name)


@pytest.mark.parametrize(
    "field, value",
    [
        ("n_head", 5),  # does not divide n_embd=32
        ("n_kv_head", 3),  # does not divide n_head=4
        ("vocab_size", 0),
        ("dropout", 1.0),
        ("pos_emb", "alibi"),
        ("norm", "batchnorm"),
        ("mlp", "relu"),
        ("attn_impl", "flash"),
        ("norm_eps", 0.0),
        ("context_length", 2.5),
    ],
)
def test_bad_field_is_named(field, value):
    d = PRESETS["tiny"].to_dict() | {field: value}
    with pytest.raises(ConfigError, match=field):
        ModelConfig.from_dict(d)


def test_unknown_field_is_named():
    with pytest.raises(ConfigError, match="n_heads"):
        ModelConfig.from_dict(PRESETS["tiny"].to_dict() | {"n_heads": 4})


def test_defaults_filled_in():
    cfg = get_preset("tiny")
    assert cfg.kv_heads == cfg.n_head and cfg.hidden_dim == 4 * cfg.n_embd
    assert get_preset("tiny-llama").kv_heads == 2
    assert get_preset("tiny-llama", mlp_hidden=48).hidden_dim == 48
