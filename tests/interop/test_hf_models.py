"""Import and export through files: logits equal transformers', round trips bitwise.

float32 on CPU; logits and hidden states compared with atol 1e-5, rtol 0.
"""

from __future__ import annotations

import pytest
import torch
from interop_helpers import CASES, VOCAB, hf_model, transformers

from scratchllm.interop.hf import normalise_keys
from scratchllm.interop.hf_files import load_hf, read_safetensors, save_hf
from scratchllm.model import EncoderModel, GPTModel, get_preset

TOL = 1e-5


@pytest.fixture(params=sorted(CASES))
def case(request):
    """(kind, tiny random transformers model) for every supported case."""
    kind, extra = CASES[request.param]
    return kind, hf_model(kind, **extra)


def ids(b: int = 2, t: int = 9) -> torch.Tensor:
    return torch.randint(0, VOCAB, (b, t))


def outputs(model, x: torch.Tensor) -> torch.Tensor:
    """Logits of a decoder / MLM model, hidden states of a bare encoder (ours or transformers')."""
    with torch.no_grad():
        if isinstance(model, EncoderModel):
            return model.mlm_logits(model(x))
        if isinstance(model, GPTModel):
            return model(x)
        out = model(x)
        return out.logits if hasattr(out, "logits") else out.last_hidden_state


def canonical(path, layout):
    tensors = read_safetensors(path)
    names = normalise_keys(list(tensors), layout)
    return {c: tensors[f] for c, f in names.items()}


def test_import_logits_and_round_trip(case, tmp_path):
    kind, hf = case
    hf.save_pretrained(tmp_path / "hf")
    ckpt = load_hf(tmp_path / "hf")
    x = ids()
    ref = outputs(hf, x)
    if kind == "bert-base":  # no MLM head: compare hidden states and the pooler
        with torch.no_grad():
            hidden = ckpt.model(x)
            torch.testing.assert_close(hidden, ref, atol=TOL, rtol=0)
            pooled = hf(x).pooler_output
            torch.testing.assert_close(ckpt.model.pooled(hidden), pooled, atol=TOL, rtol=0)
        assert ckpt.initialised == ["mlm_head"]
    else:
        torch.testing.assert_close(outputs(ckpt.model, x), ref, atol=TOL, rtol=0)
    if ckpt.cfg.tie_embeddings and isinstance(ckpt.model, GPTModel):  # shared, not copied
        assert ckpt.model.lm_head.weight is ckpt.model.embed.wte.weight

    save_hf(ckpt.model, tmp_path / "out", skip_parts=tuple(ckpt.initialised))
    before = canonical(tmp_path / "hf" / "model.safetensors", ckpt.layout)
    after = canonical(tmp_path / "out" / "model.safetensors", ckpt.layout)
    assert sorted(before) == sorted(after)
    for name, tensor in before.items():  # every tensor bitwise
        assert torch.equal(tensor, after[name]), name
        assert tensor.dtype == after[name].dtype
    again = transformers.AutoModel.from_pretrained(tmp_path / "out")
    assert again.config.model_type == hf.config.model_type


def test_export_loads_in_transformers(case, tmp_path):
    """Ours -> HF directory -> transformers' own class gives the same logits."""
    kind, hf = case
    hf.save_pretrained(tmp_path / "hf")
    ours = load_hf(tmp_path / "hf").model
    save_hf(ours, tmp_path / "out")
    arch = getattr(transformers, type(hf).__name__)
    theirs = arch.from_pretrained(tmp_path / "out").eval()
    x = ids()
    expected = outputs(ours, x) if kind != "bert-base" else ours(x)
    torch.testing.assert_close(outputs(theirs, x), expected, atol=TOL, rtol=0)


@pytest.mark.parametrize(
    ("preset", "overrides"),
    [
        ("tiny", {}),
        ("tiny", {"tie_embeddings": False, "gelu_approximate": "none"}),
        ("tiny-llama", {}),
        ("tiny-llama", {"qkv_bias": True, "tie_embeddings": True}),  # Qwen2 layout
        ("tiny-llama", {"n_kv_head": 4, "bias": True, "qkv_bias": True}),
        ("tiny-bert", {}),
    ],
)
def test_our_models_export(preset, overrides, tmp_path):
    """Our own random models: transformers gives our logits; reading the export back is bitwise."""
    cfg = get_preset(preset, **overrides)
    encoder = preset == "tiny-bert"
    ours = (EncoderModel if encoder else GPTModel)(cfg).eval()
    with torch.no_grad():  # non-trivial norms and biases, which init leaves at 1 / 0
        for name, p in ours.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    hf_cfg = save_hf(ours, tmp_path / "out")
    theirs = getattr(transformers, hf_cfg["architectures"][0]).from_pretrained(tmp_path / "out")
    x = torch.randint(0, cfg.vocab_size, (2, 9))
    torch.testing.assert_close(outputs(theirs.eval(), x), outputs(ours, x), atol=TOL, rtol=0)
    back = load_hf(tmp_path / "out").model
    for name, tensor in ours.state_dict().items():
        assert torch.equal(back.state_dict()[name], tensor), name


def test_generate_matches_transformers_greedy(tmp_path):
    """Greedy continuation of a converted Llama equals transformers' generate."""
    hf = transformers.LlamaForCausalLM(
        transformers.LlamaConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=48,
            max_position_embeddings=32,
            bos_token_id=0,
            eos_token_id=0,
            pad_token_id=0,
        )
    ).eval()
    hf.save_pretrained(tmp_path / "hf")
    ours = load_hf(tmp_path / "hf").model
    x = torch.randint(1, VOCAB, (1, 5))
    with torch.no_grad():
        ref = hf.generate(x, max_new_tokens=6, do_sample=False, min_new_tokens=6)
        seq = x
        for _ in range(6):
            seq = torch.cat([seq, ours(seq)[:, -1:].argmax(-1)], dim=1)
    assert torch.equal(seq, ref)
