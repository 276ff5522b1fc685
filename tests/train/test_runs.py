"""Loading run directories: what does not belong together is named before anything runs."""

from __future__ import annotations

import json

import pytest

from scratchllm.cli import main
from scratchllm.errors import CheckpointError
from scratchllm.model import GPTModel, get_preset
from scratchllm.tokenizer import BPETokenizer
from scratchllm.train.checkpoint import load_run, save_run

TEXT = "the cat sat on the mat and the dog sat on the log " * 20


@pytest.fixture
def run_dir(tmp_path):
    tokenizer = BPETokenizer.train([TEXT], 270)
    cfg = get_preset("tiny", vocab_size=tokenizer.vocab_size)
    save_run(tmp_path / "run", GPTModel(cfg), cfg, tokenizer)
    return tmp_path / "run"


def test_a_larger_tokenizer_than_the_model_is_refused(run_dir, tmp_path):
    BPETokenizer.train([TEXT + "a whole new story of words"], 300).save(tmp_path / "big")
    (run_dir / "tokenizer.json").write_bytes((tmp_path / "big" / "tokenizer.json").read_bytes())
    with pytest.raises(CheckpointError, match="tokenizer.json: 2.. token ids, more than"):
        load_run(run_dir)


def test_a_bad_config_field_names_the_file(run_dir):
    record = json.loads((run_dir / "config.json").read_text())
    record["model"]["tie_embeddings"] = "yes"
    (run_dir / "config.json").write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match=r"config.json: field 'model': .*tie_embeddings"):
        load_run(run_dir)


def test_an_adapter_run_is_read_through_its_adapter_json(tmp_path):
    # an unmerged LoRA run loads as its base run plus the adapter (tests/serve/test_adapter_runs)
    (tmp_path / "adapter.json").write_text("{}")
    with pytest.raises(CheckpointError, match="adapter.json: not a scratchllm LoRA adapter"):
        load_run(tmp_path)


def test_generate_and_serve_without_a_tokenizer_are_named_errors(run_dir, capsys):
    from scratchllm.serve import ServeConfig, app_for_run

    (run_dir / "tokenizer.json").unlink()
    assert main(["generate", "--run", str(run_dir), "--prompt", "hi"]) == 2
    err = capsys.readouterr().err
    assert "has no tokenizer" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(CheckpointError, match="no tokenizer"):
        app_for_run(run_dir, ServeConfig(model_name="x"))


def test_fine_tuning_a_base_without_a_tokenizer_says_so(run_dir):
    from scratchllm.errors import ConfigError
    from scratchllm.finetune.instruct import prepare_model
    from scratchllm.finetune.templates import get_template

    (run_dir / "tokenizer.json").unlink()
    with pytest.raises(ConfigError, match="has no tokenizer"):
        prepare_model(run_dir, get_template("alpaca"), None, print)
