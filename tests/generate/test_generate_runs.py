"""`generate` / `chat` on fine-tuned runs: the template's end of turn stops the text, and an
unmerged LoRA run (adapter only) loads on its base."""

from __future__ import annotations

import io
import shutil

import pytest
import torch

from scratchllm.cli import main
from scratchllm.finetune.templates import get_template, save_template
from scratchllm.model import GPTModel, get_preset
from scratchllm.tokenizer import BPETokenizer
from scratchllm.train.checkpoint import save_run

END = "<|end|>"


def chat_run(path):
    """A chat-template run whose model answers every prompt with ``<|end|>`` (greedy)."""
    specials = ["<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", END]
    tok = BPETokenizer(
        [bytes([b]) for b in range(256)],
        special_tokens={s: 256 + i for i, s in enumerate(specials)},
    )
    cfg = get_preset("tiny", vocab_size=tok.vocab_size, tie_embeddings=False)
    model = GPTModel(cfg).eval()
    with torch.no_grad():  # every position's features are all ones; only <|end|> scores > 0
        model.norm_f.weight.zero_()
        model.norm_f.bias.fill_(1.0)
        model.lm_head.weight.zero_()
        model.lm_head.weight[tok.special_tokens[END]] = 1.0
    save_run(path, model, cfg, tok)
    save_template(get_template("chat"), path)
    return path


@pytest.mark.parametrize("stream", [[], ["--stream"]], ids=["batch", "stream"])
def test_generate_template_stops_at_the_templates_end_of_turn(tmp_path, capsys, stream):
    run = chat_run(tmp_path / "run")
    args = ["generate", "--run", str(run), "--prompt", "Hi", "--temperature", "0"]
    assert main([*args, "--max-new-tokens", "5", *stream]) == 0
    assert capsys.readouterr().out == "Hi" + END * 5 + "\n"  # no template: plain continuation
    # the user's own --stop strings still apply beside the template's
    assert main([*args, "--max-new-tokens", "5", "--template", "--stop", "x", *stream]) == 0
    assert capsys.readouterr().out == "Hi\n"


def adapter_run(tmp_path):
    """A base run and an unmerged LoRA adapter directory on it, as `finetune --lora-r` leaves."""
    from scratchllm.finetune.lora import (
        LoRAConfig,
        apply_lora,
        lora_layers,
        merge_lora,
        save_adapter,
    )

    tok = BPETokenizer([bytes([b]) for b in range(256)], special_tokens={"<|endoftext|>": 256})
    torch.manual_seed(0)
    cfg = get_preset("tiny", vocab_size=257, init_std=0.3)
    save_run(tmp_path / "base", GPTModel(cfg), cfg, tok)
    model = GPTModel(cfg)
    from scratchllm.train.checkpoint import load_weights

    load_weights(model, tmp_path / "base" / "model.safetensors")
    lora = LoRAConfig(r=2, alpha=4)
    apply_lora(model, lora.targets, lora.r, lora.alpha)
    with torch.no_grad():  # a trained-looking adapter: B is not zero
        for _, layer in lora_layers(model):
            layer.lora_B.normal_(0, 0.5)
    out = tmp_path / "adapter"
    save_adapter(model, out, lora, tmp_path / "base")
    tok.save(out)
    save_template(get_template("alpaca"), out)
    merge_lora(model)
    return out, model.eval(), tok


def test_generate_and_chat_load_an_unmerged_lora_run_on_its_base(tmp_path, capsys, monkeypatch):
    from scratchllm.generation import GREEDY, Engine

    run, merged, tok = adapter_run(tmp_path)
    args = ["generate", "--run", str(run), "--prompt", "ab", "--temperature", "0"]
    assert main([*args, "--max-new-tokens", "6"]) == 0  # was: RUN/config.json: file not found
    captured = capsys.readouterr()
    expected = Engine(merged, tok).generate(["ab"], GREEDY, 6)[0].text
    assert captured.out == "ab" + expected + "\n"
    assert "unmerged LoRA adapter" in captured.err and "lora merge --run" in captured.err
    assert not (run / "config.json").exists()  # nothing was written into the run
    monkeypatch.setattr("sys.stdin", io.StringIO("hello\n/exit\n"))
    assert main(["chat", "--run", str(run), "--max-new-tokens", "3"]) == 0
    assert "template: alpaca" in capsys.readouterr().out


def test_an_adapter_run_without_its_base_says_how_to_merge(tmp_path, capsys):
    run, _, _ = adapter_run(tmp_path)
    shutil.rmtree(tmp_path / "base")
    assert main(["generate", "--run", str(run), "--prompt", "ab"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is a LoRA adapter run" in err
    assert f"scratchllm lora merge --run {run} --base BASE_RUN" in err
