"""Checkpoint files: sharded safetensors, pytorch_model.bin, errors that list every problem, Hub."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from interop_helpers import VOCAB, hf_model
from safetensors.torch import load_file, save_file

from scratchllm.errors import CheckpointError, ConfigError
from scratchllm.interop.hf_files import load_hf, save_hf
from scratchllm.model import EncoderModel, GPTModel, get_preset


def logits(model, x):
    with torch.no_grad():
        out = model(x)
    return out.logits if hasattr(out, "logits") else out


@pytest.fixture
def gpt2_dir(tmp_path):
    hf = hf_model("gpt2")
    hf.save_pretrained(tmp_path / "hf")
    return hf, tmp_path / "hf"


def test_sharded_safetensors(tmp_path):
    hf = hf_model("llama", num_key_value_heads=2)
    hf.save_pretrained(tmp_path / "hf", max_shard_size="20KB")
    assert (tmp_path / "hf" / "model.safetensors.index.json").is_file()
    x = torch.randint(0, VOCAB, (2, 7))
    torch.testing.assert_close(load_hf(tmp_path / "hf").model(x), logits(hf, x), atol=1e-5, rtol=0)


def test_pytorch_bin_weights_only(gpt2_dir, tmp_path):
    hf, directory = gpt2_dir
    state = load_file(directory / "model.safetensors")
    (directory / "model.safetensors").unlink()
    torch.save(state, directory / "pytorch_model.bin")
    x = torch.randint(0, VOCAB, (2, 7))
    torch.testing.assert_close(load_hf(directory).model(x), logits(hf, x), atol=1e-5, rtol=0)
    torch.save({"evil": _Payload()}, directory / "pytorch_model.bin")  # code, not tensors
    with pytest.raises(CheckpointError, match="weights-only"):
        load_hf(directory)


class _Payload:
    pass


def test_every_problem_in_one_error(gpt2_dir):
    _, directory = gpt2_dir
    state = load_file(directory / "model.safetensors")
    del state["transformer.h.0.ln_1.weight"]
    del state["transformer.h.1.mlp.c_fc.bias"]
    state["transformer.extra.weight"] = torch.zeros(3)
    state["transformer.wpe.weight"] = torch.zeros(5, 32)
    save_file(state, directory / "model.safetensors")
    with pytest.raises(CheckpointError) as err:
        load_hf(directory)
    msg = str(err.value)
    for part in (
        "2 missing",
        "transformer.h.0.ln_1.weight",
        "transformer.h.1.mlp.c_fc.bias",
        "1 unexpected: transformer.extra.weight",
        "transformer.wpe.weight (5, 32) (expected (32, 32))",
        str(directory),
    ):
        assert part in msg


def test_legacy_buffers_and_bare_backbone_keys(gpt2_dir):
    """Old GPT-2 files: no 'transformer.' prefix, causal-mask buffers stored as tensors."""
    hf, directory = gpt2_dir
    state = load_file(directory / "model.safetensors")
    state = {k.removeprefix("transformer."): v for k, v in state.items()}
    state["h.0.attn.bias"] = torch.ones(1, 1, 32, 32)
    save_file(state, directory / "model.safetensors")
    x = torch.randint(0, VOCAB, (1, 5))
    torch.testing.assert_close(load_hf(directory).model(x), logits(hf, x), atol=1e-5, rtol=0)


def test_bad_config_and_missing_weights(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5"}))
    with pytest.raises(CheckpointError, match="model_type='t5' is not supported"):
        load_hf(tmp_path)
    # any JSON value: a list was an unhashable-type TypeError traceback
    for field in ({"model_type": ["gpt2"]}, {"model_type": "gpt2", "activation_function": []}):
        gpt2 = {"vocab_size": 8, "n_positions": 8, "n_embd": 8, "n_layer": 1, "n_head": 2}
        (tmp_path / "config.json").write_text(json.dumps({**gpt2, **field}))
        with pytest.raises(CheckpointError, match="is not supported|unsupported"):
            load_hf(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": 8}))
    with pytest.raises(CheckpointError, match="field 'vocab_size' is missing"):
        load_hf(tmp_path)
    hf_model("gpt2").config.save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="no weights found"):
        load_hf(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x00" * 3)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_hf(tmp_path)


def test_unsupported_rope_scaling(tmp_path):
    hf = hf_model("llama", rope_scaling={"rope_type": "linear", "factor": 2.0})
    hf.save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="rope_type='linear'"):
        load_hf(tmp_path)


def test_hub_id_without_huggingface_hub(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails
    with pytest.raises(CheckpointError) as err:
        load_hf("openai-community/gpt2")
    msg = str(err.value)
    assert "huggingface_hub" in msg and "https://huggingface.co/openai-community/gpt2" in msg


def test_hub_id_offline_and_online(monkeypatch, gpt2_dir):
    hub = pytest.importorskip("huggingface_hub")
    _, directory = gpt2_dir

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(hub, "snapshot_download", offline)
    with pytest.raises(CheckpointError, match="without network access, download config.json"):
        load_hf("gpt2")
    # a mistyped relative path looks like an owner/name id: the message says both
    with pytest.raises(CheckpointError, match="'hf/nonexist' is not a local directory \\(none at"):
        load_hf("hf/nonexist")
    calls = []
    monkeypatch.setattr(
        hub, "snapshot_download", lambda repo, **kw: calls.append(repo) or directory
    )
    assert load_hf("gpt2").layout == "gpt2" and calls == ["gpt2"]


def test_not_a_directory(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(CheckpointError, match="not a directory"):
        load_hf(tmp_path / "file.txt")


def test_export_refuses_unrepresentable_configs(tmp_path):
    cases = [
        (GPTModel, get_preset("tiny", norm="rmsnorm"), "norm='rmsnorm'"),
        (GPTModel, get_preset("tiny", pos_emb="sinusoidal"), "pos_emb='sinusoidal'"),
        (GPTModel, get_preset("tiny-llama", bias=True), "qkv_bias=False"),
        (EncoderModel, get_preset("tiny-bert", type_vocab_size=0), "type_vocab_size"),
        (EncoderModel, get_preset("tiny-bert", norm_position="pre"), "norm_position='pre'"),
    ]
    for cls, cfg, needle in cases:
        with pytest.raises(ConfigError, match=needle):
            save_hf(cls(cfg), tmp_path)


def test_dtype_cast_on_load(gpt2_dir):
    _, directory = gpt2_dir
    model = load_hf(directory, dtype=torch.bfloat16).model
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model.lm_head.weight is model.embed.wte.weight
