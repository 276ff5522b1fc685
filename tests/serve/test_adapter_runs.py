"""An unmerged LoRA run (adapter.json, no config.json) is served and exported as its base run with
the adapter merged in memory; nothing is written into it."""

from __future__ import annotations

import json

import pytest
import torch
from serve_helpers import MODEL, make_run
from starlette.testclient import TestClient

from scratchllm.cli import main
from scratchllm.finetune.lora import (
    LoRAConfig,
    apply_lora,
    lora_layers,
    merge_lora,
    save_adapter,
)
from scratchllm.generation import GREEDY, Engine
from scratchllm.serve import ServeConfig, app_for_run
from scratchllm.train.checkpoint import load_run


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    """(adapter directory, the base with the adapter merged, tokenizer)."""
    root = tmp_path_factory.mktemp("adapter")
    base = load_run(make_run(root / "base"))
    lora = LoRAConfig(r=2, alpha=4)
    apply_lora(base.model, lora.targets, lora.r, lora.alpha)
    torch.manual_seed(1)
    with torch.no_grad():  # a trained-looking adapter: B is not zero, so it changes the output
        for _, layer in lora_layers(base.model):
            layer.lora_B.normal_(0, 0.5)
    out = root / "sft"
    save_adapter(base.model, out, lora, root / "base")
    base.tokenizer.save(out)
    merge_lora(base.model)
    return out, base.model.eval(), base.tokenizer


def test_serve_answers_with_the_merged_adapter(adapter):
    run, merged, tok = adapter
    expected = Engine(merged, tok).generate(["hello"], GREEDY, 8)[0].text
    plain = Engine(load_run(run.parent / "base").model, tok).generate(["hello"], GREEDY, 8)[0].text
    assert expected != plain  # the adapter matters, so the check below can fail
    with TestClient(
        app_for_run(run, ServeConfig(model_name=MODEL)), base_url="http://127.0.0.1"
    ) as client:
        body = {"model": MODEL, "prompt": "hello", "max_tokens": 8, "temperature": 0}
        reply = client.post("/v1/completions", json=body)
    assert reply.status_code == 200, reply.text
    choice = reply.json()["choices"][0]
    assert choice["text"] == expected[: len(choice["text"])] and choice["text"]
    assert not (run / "config.json").exists()


def test_export_writes_the_merged_weights(adapter, tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    run, merged, tok = adapter
    assert main(["export", "--run", str(run), "--to", str(tmp_path / "hf")]) == 0
    assert "unmerged LoRA adapter" in capsys.readouterr().err
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    ids = torch.tensor([tok.encode("hello there")])
    with torch.no_grad():
        ours, theirs = merged(ids), hf(input_ids=ids).logits
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-5)
    assert sorted(p.name for p in run.iterdir()) == sorted(
        ["adapter.json", "adapter.safetensors", "tokenizer.json"]
    )


def test_an_adapter_chain_that_loops_is_an_error(adapter, tmp_path):
    from scratchllm.errors import CheckpointError

    run, _, _ = adapter
    loop = tmp_path / "loop"
    loop.mkdir()
    record = json.loads((run / "adapter.json").read_text())
    record.pop("base_weights_sha256")  # else the digest check finds the weights differ first
    (loop / "adapter.json").write_text(json.dumps(record | {"base_run": str(loop)}))
    (loop / "adapter.safetensors").write_bytes((run / "adapter.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="loops back"):
        load_run(loop)
