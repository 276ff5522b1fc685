"""LoRA: wrapping is exact at init, merging keeps the function, training leaves the base alone."""

import pytest
import torch

from scratchllm.data.loaders import EpochLoader
from scratchllm.data.windows import WindowDataset
from scratchllm.errors import CheckpointError, ConfigError
from scratchllm.finetune.lora import (
    LoRAConfig,
    LoRALinear,
    apply_lora,
    count_trainable,
    load_adapter,
    lora_disabled,
    lora_layers,
    merge_lora,
    save_adapter,
)
from scratchllm.model import GPTModel, get_preset
from scratchllm.train.config import TrainConfig
from scratchllm.train.loop import Trainer


def _model(preset: str = "tiny") -> GPTModel:
    torch.manual_seed(0)
    return GPTModel(get_preset(preset, dropout=0.0)).eval()


def _randomise_b(model: GPTModel) -> None:
    """Non-zero B, so the adapters change the output (B starts at zero)."""
    for _, layer in lora_layers(model):
        torch.nn.init.normal_(layer.lora_B, std=0.05)


def test_linear_wrapper_starts_exact_and_freezes_base():
    base = torch.nn.Linear(8, 5)
    layer = LoRALinear(base, r=2, alpha=4, dropout=0.1)
    x = torch.randn(3, 8)
    assert torch.equal(layer.eval()(x), base(x))  # B = 0
    assert not base.weight.requires_grad and layer.lora_A.requires_grad
    assert layer.scaling == 2.0 and torch.count_nonzero(layer.lora_B) == 0


@pytest.mark.parametrize("preset", ["tiny", "tiny-llama"])
def test_merged_equals_unmerged(preset):
    model = _model(preset)
    idx = torch.randint(0, model.cfg.vocab_size, (2, 12))
    names = apply_lora(model, r=4, alpha=8)
    assert names and all(".attn." in n or ".mlp." in n for n in names)
    _randomise_b(model)
    with torch.no_grad():
        unmerged = model(idx)
        with lora_disabled(model):
            base = model(idx)
    assert not torch.allclose(unmerged, base, atol=1e-4)  # the adapters do something
    assert merge_lora(model) == len(names)
    assert not list(lora_layers(model))
    with torch.no_grad():
        merged = model(idx)
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=1e-5)  # float32
    assert set(model.state_dict()) == set(_model(preset).state_dict())  # plain names again


def test_targets_and_counts():
    model = _model()
    total = sum(p.numel() for p in model.parameters())
    names = apply_lora(model, targets=["qkv"], r=2, alpha=2)
    assert names == ["blocks.0.attn.qkv", "blocks.1.attn.qkv"]
    trainable, all_params = count_trainable(model)
    c = model.cfg.n_embd
    assert trainable == model.cfg.n_layer * 2 * (c + 3 * c)  # A [r, C] + B [3C, r] per layer
    assert all_params == total + trainable
    with pytest.raises(ConfigError, match="match no nn.Linear.*qkv"):
        apply_lora(_model(), targets=["nope"])
    with pytest.raises(ConfigError, match="rank"):
        LoRALinear(torch.nn.Linear(2, 2), r=0, alpha=1)


def test_base_weights_unchanged_after_training(tmp_path):
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    apply_lora(model, r=4, alpha=8, dropout=0.1)
    ids = torch.arange(600) % 50
    loader = EpochLoader(WindowDataset(ids, 16, 16), 4, seed=0)
    cfg = TrainConfig(
        max_steps=6, batch_size=4, lr=1e-2, warmup_steps=1, eval_interval=100, device="cpu"
    )
    Trainer(model, cfg, loader, None, progress=False).fit()
    after = model.state_dict()
    for name, tensor in before.items():
        wrapped = name.replace(".weight", ".base.weight").replace(".bias", ".base.bias")
        current = after[name] if name in after else after[wrapped]
        assert torch.equal(current, tensor), name  # bit for bit
    assert any(torch.count_nonzero(layer.lora_B) for _, layer in lora_layers(model))


def test_adapter_round_trip(tmp_path):
    model = _model()
    apply_lora(model, r=4, alpha=8)
    _randomise_b(model)
    idx = torch.randint(0, 256, (1, 10))
    with torch.no_grad():
        expected = model(idx)
    save_adapter(model, tmp_path, LoRAConfig(r=4, alpha=8), base_run=None)
    # the adapter file holds only the adapters: A and B for each wrapped layer
    from safetensors.torch import load_file

    names = set(load_file(tmp_path / "adapter.safetensors"))
    assert names and all(n.endswith((".lora_A", ".lora_B")) for n in names)
    fresh = _model()
    load_adapter(fresh, tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(fresh(idx), expected)
    with pytest.raises(CheckpointError, match="does not fit"):
        load_adapter(_model("tiny-llama"), tmp_path)


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("base_run", 5, "field 'base_run' must be a path, got 5"),
        ("base_run", ["/x"], "field 'base_run' must be a path"),
        ("base_weights_sha256", 5, "field 'base_weights_sha256' must be a hex digest, got 5"),
        ("lora.targets", 5, "LoRAConfig.targets=5 must be a list of names"),
        ("lora.targets", [1], "LoRAConfig.targets=[1] must be a list of names"),
        ("lora.alpha", -1, "LoRAConfig.alpha=-1 must be > 0"),
        ("lora.alpha", None, "LoRAConfig.alpha=None must be a number"),
        ("lora.dropout", "0.1", "LoRAConfig.dropout='0.1' must be a number"),
    ],
)
def test_an_edited_adapter_json_is_a_named_error(tmp_path, field, value, message):
    """A non-path base_run (Path(5)) and non-list targets (iterated in apply_lora) were
    TypeError tracebacks from `lora merge`, `serve` and `generate` on an adapter run."""
    import json

    from scratchllm.train.checkpoint import load_run

    model = _model()
    apply_lora(model, r=4, alpha=8)
    save_adapter(model, tmp_path, LoRAConfig(r=4, alpha=8), base_run=str(tmp_path / "base"))
    record = json.loads((tmp_path / "adapter.json").read_text())
    node, *rest = field.split(".")
    if rest:
        record[node][rest[0]] = value
    else:
        record[node] = value
    (tmp_path / "adapter.json").write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="adapter.json: ") as info:
        load_run(tmp_path)
    assert message in str(info.value)


@pytest.mark.parametrize("targets", [5, "attn", None])
def test_apply_lora_refuses_targets_that_are_not_a_list(targets):
    """A classifier run's saved 'lora' settings reach apply_lora as JSON values: 5 was a
    TypeError traceback (list(5)) and "attn" was split into letters."""
    with pytest.raises(ConfigError, match="must be a list of names"):
        apply_lora(_model(), targets=targets)


def test_merging_an_adapter_on_a_tied_head_saves_and_loads_as_it_computes(tmp_path):
    from scratchllm.tokenizer import BPETokenizer
    from scratchllm.train.checkpoint import load_run, save_run

    tok = BPETokenizer.train("hello world", 260)
    torch.manual_seed(0)
    model = GPTModel(get_preset("tiny", dropout=0.0, vocab_size=tok.vocab_size)).eval()
    assert model.cfg.tie_embeddings
    apply_lora(model, targets=["lm_head", "attn"], r=4, alpha=8)
    _randomise_b(model)
    idx = torch.randint(0, tok.vocab_size, (2, 9))
    with torch.no_grad():
        unmerged = model(idx)
    merge_lora(model)
    assert not model.cfg.tie_embeddings  # the head now differs from the embedding
    save_run(tmp_path, model, model.cfg, tok)
    with torch.no_grad():
        reloaded = load_run(tmp_path).model.eval()(idx)
    torch.testing.assert_close(reloaded, unmerged, atol=1e-5, rtol=1e-5)


def test_merging_untouched_tied_weights_keeps_them_tied():
    model = _model()
    apply_lora(model, r=4, alpha=8)  # attn and mlp only
    merge_lora(model)
    assert model.cfg.tie_embeddings and model.lm_head.weight is model.embed.wte.weight


def test_applying_lora_twice_is_refused():
    model = _model()
    apply_lora(model, r=2, alpha=2)
    with pytest.raises(ConfigError, match=r"already has LoRA adapters on 8 layer\(s\)"):
        apply_lora(model, r=2, alpha=2)
    assert all(p.requires_grad for n, p in model.named_parameters() if ".lora_" in n)


def _base_and_adapter(tmp_path):
    """A saved base run and an adapter directory trained (here: randomised) on it."""
    from scratchllm.tokenizer import BPETokenizer
    from scratchllm.train.checkpoint import save_run

    tok = BPETokenizer.train("hello world", 260)
    torch.manual_seed(0)
    base = GPTModel(get_preset("tiny", dropout=0.0, vocab_size=tok.vocab_size)).eval()
    save_run(tmp_path / "base", base, base.cfg, tok)
    apply_lora(base, r=4, alpha=8)
    _randomise_b(base)
    save_adapter(base, tmp_path / "adapter", LoRAConfig(r=4, alpha=8), tmp_path / "base")
    tok.save(tmp_path / "adapter")
    return tok, base


def test_an_adapter_is_merged_only_onto_the_weights_it_was_trained_on(tmp_path, capsys):
    """`lora merge --base OTHER` with a same-shaped run of other weights merged silently, and an
    adapter run whose base had been retrained loaded as if nothing had changed."""
    import json

    from scratchllm.cli import main
    from scratchllm.train.checkpoint import load_run, save_run

    tok, adapted = _base_and_adapter(tmp_path)
    idx = torch.randint(0, tok.vocab_size, (1, 8))
    with torch.no_grad():
        expected = adapted(idx)
    record = json.loads((tmp_path / "adapter" / "adapter.json").read_text())
    assert len(record["base_weights_sha256"]) == 64
    torch.manual_seed(1)  # the same shape, other weights
    other = GPTModel(get_preset("tiny", dropout=0.0, vocab_size=tok.vocab_size))
    save_run(tmp_path / "other", other, other.cfg, tok)
    adapter = str(tmp_path / "adapter")

    argv = ["lora", "merge", "--run", adapter, "--base", str(tmp_path / "other")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "the adapter was trained on the weights of" in err and "--any-base" in err
    assert not (tmp_path / "adapter" / "model.safetensors").exists()  # nothing written

    # the recorded base, changed since (e.g. trained further), is refused the same way
    (tmp_path / "base" / "model.safetensors").rename(tmp_path / "kept.safetensors")
    (tmp_path / "other" / "model.safetensors").rename(tmp_path / "base" / "model.safetensors")
    with pytest.raises(CheckpointError, match="holds other weights"):
        load_run(adapter)  # an unmerged adapter run loads its base in memory
    (tmp_path / "kept.safetensors").replace(tmp_path / "base" / "model.safetensors")

    with torch.no_grad():
        torch.testing.assert_close(load_run(adapter).model(idx), expected, atol=1e-5, rtol=1e-5)
    assert main(["lora", "merge", "--run", adapter]) == 0
    with torch.no_grad():
        torch.testing.assert_close(load_run(adapter).model(idx), expected, atol=1e-5, rtol=1e-5)


def test_any_base_merges_anyway_and_an_older_adapter_record_is_not_checked(tmp_path):
    import json

    from scratchllm.finetune.lora import merge_adapter_run
    from scratchllm.train.checkpoint import load_run, save_run

    tok, _ = _base_and_adapter(tmp_path)
    torch.manual_seed(1)
    other = GPTModel(get_preset("tiny", dropout=0.0, vocab_size=tok.vocab_size))
    save_run(tmp_path / "other", other, other.cfg, tok)
    with pytest.raises(CheckpointError, match="holds other weights"):
        merge_adapter_run(tmp_path / "adapter", tmp_path / "other")
    path = tmp_path / "adapter" / "adapter.json"
    saved = path.read_text()
    record = json.loads(saved)
    del record["base_weights_sha256"]  # as adapters saved before the field existed
    path.write_text(json.dumps(record))
    load_run(tmp_path / "adapter")  # its own base: loads
    path.write_text(saved)
    merge_adapter_run(tmp_path / "adapter", tmp_path / "other", any_base=True)
    assert (tmp_path / "adapter" / "model.safetensors").exists()
    assert load_run(tmp_path / "adapter").model.cfg == other.cfg
