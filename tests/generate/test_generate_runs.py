"""`generate` / `chat` on fine-tuned runs: the template's end of turn stops the text, and an
unmerged LoRA run (adapter only) loads on its base."""

from __future__ import annotations

import io

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
