"""`scratchllm convert` then `generate` and `export`, on tiny random checkpoints with a tokenizer."""

from __future__ import annotations

import json

import pytest
import torch
from interop_helpers import hf_model, transformers

from scratchllm.cli import main
from scratchllm.interop.hf_tokenizer import save_hf_tokenizer
from scratchllm.interop.runs import load_any_run
from scratchllm.model import EncoderModel
from scratchllm.tokenizer import ENDOFTEXT, BPETokenizer
from scratchllm.train.checkpoint import load_run

VOCAB = 300  # model rows; the trained tokenizer has fewer ids (training runs out of pairs)


@pytest.fixture(scope="module")
def tokenizer() -> BPETokenizer:
    text = "the cat sat on the mat. the dog sat on the log. " * 50
    return BPETokenizer.train(text, VOCAB, special_tokens=(ENDOFTEXT,))


@pytest.mark.parametrize("kind", ["gpt2", "qwen2"])
def test_convert_generate_export(kind, tokenizer, tmp_path, capsys):
    extra = {"vocab_size": VOCAB} | ({"num_key_value_heads": 2} if kind == "qwen2" else {})
    hf = hf_model(kind, **extra)
    hf.save_pretrained(tmp_path / "hf")
    save_hf_tokenizer(tokenizer, tmp_path / "hf", max_length=32)

    assert main(["convert", "--from", str(tmp_path / "hf"), "--out", str(tmp_path / "run")]) == 0
    assert "run saved to" in capsys.readouterr().out
    run = load_run(tmp_path / "run")  # the ordinary loader every command uses
    assert run.tokenizer.tokens == tokenizer.tokens
    x = torch.tensor([tokenizer.encode("the cat sat")])
    with torch.no_grad():
        torch.testing.assert_close(run.model(x), hf(x).logits, atol=1e-5, rtol=0)
    args = ["generate", "--run", str(tmp_path / "run"), "--prompt", "the cat"]
    assert main([*args, "--max-new-tokens", "5", "--temperature", "0"]) == 0
    # greedy text of the converted run == transformers' own greedy generate on the original
    prompt = torch.tensor([tokenizer.encode("the cat")])
    with torch.no_grad():
        hf_ids = hf.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=5,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
        )[0, prompt.shape[1] :].tolist()
    assert capsys.readouterr().out == "the cat" + tokenizer.decode(hf_ids) + "\n"

    assert main(["export", "--run", str(tmp_path / "run"), "--to", str(tmp_path / "out")]) == 0
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    with torch.no_grad():
        torch.testing.assert_close(again(x).logits, hf(x).logits, atol=0, rtol=0)
    auto = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    assert auto("the dog sat")["input_ids"] == tokenizer.encode("the dog sat")


def test_convert_bert_run(tmp_path, capsys):
    hf = hf_model("bert-mlm")
    hf.save_pretrained(tmp_path / "hf")
    assert main(["convert", "--from", str(tmp_path / "hf"), "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "note: no tokenizer converted" in out and "generate" not in out
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    assert record["architecture"] == "EncoderModel"
    assert record["interop"]["initialised"] == ["pooler"]
    run = load_any_run(tmp_path / "run")
    assert isinstance(run.model, EncoderModel) and run.tokenizer is None
    assert main(["export", "--run", str(tmp_path / "run"), "--to", str(tmp_path / "out")]) == 0
    again = transformers.BertForMaskedLM.from_pretrained(tmp_path / "out").eval()
    x = torch.randint(0, 97, (2, 6))
    with torch.no_grad():
        torch.testing.assert_close(again(x).logits, hf(x).logits, atol=0, rtol=0)


def test_cli_errors(tmp_path, capsys):
    assert main(["convert", "--from", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2
    assert "not a directory" in capsys.readouterr().err
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("{}")
    hf_model("gpt2").save_pretrained(tmp_path / "hf")
    assert main(["convert", "--from", str(tmp_path / "hf"), "--out", str(tmp_path / "run")]) == 2
    assert "already holds a run" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["convert", "export"])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert "Hugging Face" in " ".join(capsys.readouterr().out.split())


def test_export_of_a_char_tokenizer_run_says_what_was_left_out(tmp_path, capsys):
    from scratchllm.model import GPTModel, ModelConfig
    from scratchllm.tokenizer import WordTokenizer
    from scratchllm.train.checkpoint import save_run

    tok = WordTokenizer.train(["abc cab"], mode="char")
    cfg = ModelConfig(vocab_size=tok.vocab_size, context_length=8, n_embd=8, n_layer=1, n_head=2)
    save_run(tmp_path / "run", GPTModel(cfg), cfg, tok)
    assert main(["export", "--run", str(tmp_path / "run"), "--to", str(tmp_path / "out")]) == 0
    captured = capsys.readouterr()
    assert "config.json, model.safetensors" in captured.out
    assert "warning: the run's char-level tokenizer was not exported" in captured.err
    assert "byte-level BPE only" in captured.err
    assert not (tmp_path / "out" / "tokenizer.json").exists()


def test_exported_weights_get_the_same_mode_as_their_sibling_files(tmp_path):
    import os
    import stat

    from scratchllm.model import GPTModel, get_preset
    from scratchllm.tokenizer import BPETokenizer
    from scratchllm.train.checkpoint import save_run

    tok = BPETokenizer.train(["hello world " * 20], 260)
    cfg = get_preset("tiny", vocab_size=tok.vocab_size)
    save_run(tmp_path / "run", GPTModel(cfg), cfg, tok)
    old = os.umask(0o022)
    try:
        assert main(["export", "--run", str(tmp_path / "run"), "--to", str(tmp_path / "out")]) == 0
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "out").iterdir()}
    assert modes["model.safetensors"] == 0o644 and set(modes.values()) == {0o644}, modes
