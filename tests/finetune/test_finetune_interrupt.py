"""Fine-tuning stopped by a signal, then resumed: checkpoint saved, nothing presented as finished,
the printed command resumes; a resume with other settings names every field that differs."""

from __future__ import annotations

import json
import random
import shlex

import pytest
import torch

from scratchllm.cli import main
from scratchllm.finetune.templates import get_template
from scratchllm.model import GPTModel, ModelConfig
from scratchllm.tokenizer import BPETokenizer
from scratchllm.train.checkpoint import list_checkpoints, save_run

SYSTEM = "Do it."
WORDS = "red blue green black white gold pink grey".split()


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture
def base(tmp_path):
    """A tiny random base run, instruction records and preference records."""
    rng = random.Random(0)
    records, pairs = [], []
    for _ in range(40):
        words = rng.sample(WORDS, 2)
        records.append({"instruction": "Reverse.", "input": " ".join(words), "output": words[1]})
        pairs.append({"instruction": f"Say {words[0]}", "chosen": words[0], "rejected": words[1]})
    (tmp_path / "sft.json").write_text(json.dumps(records))
    (tmp_path / "pairs.json").write_text(json.dumps(pairs))
    alpaca = get_template("alpaca", SYSTEM)
    convs = [
        [
            {"role": "user", "content": r["instruction"], "input": r["input"]},
            {"role": "assistant", "content": r["output"]},
        ]
        for r in records
    ]
    texts = [alpaca.render(c).replace("<|endoftext|>", "") for c in convs]
    texts += [f"Say {w}" for w in WORDS]
    tok = BPETokenizer.train(texts, 320)
    cfg = ModelConfig(vocab_size=tok.vocab_size, context_length=64, n_embd=32, n_layer=1, n_head=2)
    torch.manual_seed(0)
    save_run(tmp_path / "base", GPTModel(cfg), cfg, tok)
    return tmp_path


def _tune(task, tmp, out, *extra):
    data = tmp / ("pairs.json" if task == "dpo" else "sft.json")
    argv = ["finetune", task, "--base", str(tmp / "base"), "--data", str(data)]
    argv += [
        "--out",
        str(out),
        "--template",
        "alpaca",
        "--system",
        SYSTEM,
        "--batch-size",
        "4",
        "--steps",
        "6",
    ]
    argv += ["--warmup-steps", "1", "--eval-interval", "3", "--device", "cpu", "--no-progress"]
    if task == "instruct":
        argv += ["--max-new-tokens", "2", "--max-responses", "2"]
    return [*argv, *extra]


def _resume_argv(out: str) -> list[str]:
    """The command the interrupted run printed, as an argv for `main` (without `scratchllm`)."""
    line = next(s for s in out.splitlines() if s.startswith("resume with: "))
    words = shlex.split(line.removeprefix("resume with: "))
    assert words[0] == "scratchllm" and "--resume" in words
    return words[1:]


@pytest.mark.parametrize("task, lora", [("instruct", []), ("dpo", ["--lora-r", "2"])])
def test_signal_saves_a_checkpoint_and_the_printed_command_resumes(
    base, capsys, sigterm_at, task, lora
):
    out = base / "run"
    sigterm_at(2)
    assert main(_tune(task, base, out, *lora)) == 0
    printed = capsys.readouterr().out
    assert "interrupted at step 2 of 6" in printed
    assert [p.name for p in list_checkpoints(out)] == ["step-0000002"]
    # nothing is presented as finished: no final weights, adapter or held-out responses
    for name in ("model.safetensors", "adapter.safetensors", "responses.jsonl", "template.json"):
        assert not (out / name).exists(), name
    assert "held-out responses" not in printed and "run saved" not in printed
    assert main(_resume_argv(printed)) == 0
    printed = capsys.readouterr().out
    assert "resuming from" in printed and "trained 6 steps" in printed
    assert (out / ("adapter.safetensors" if lora else "model.safetensors")).exists()
    if task == "instruct":
        assert len((out / "responses.jsonl").read_text().splitlines()) == 2


def test_resume_with_other_settings_names_each_field(base, capsys, sigterm_at):
    out = base / "run"
    sigterm_at(2)
    assert main(_tune("instruct", base, out)) == 0
    capsys.readouterr()
    argv = _tune("instruct", base, out, "--resume")
    argv[argv.index("--batch-size") + 1] = "2"
    assert main(argv) == 2  # was a ValueError traceback from the loader
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "train.batch_size: 4 in checkpoint, 2 now" in err
    assert main([*argv, "--lora-r", "4", "--system", "Be brief."]) == 2  # was ~20 tensor names
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "tensor" not in err
    assert "lora: none (full fine-tuning) in checkpoint, r=4" in err
    assert "system: Do it. in checkpoint, Be brief. now" in err
    assert "train.batch_size: 4 in checkpoint, 2 now" in err
    # more steps (and another learning rate) are fine: the run is extended
    argv = _tune("instruct", base, out, "--resume", "--lr", "1e-4")
    argv[argv.index("--steps") + 1] = "8"
    assert main(argv) == 0
    assert "trained 8 steps" in capsys.readouterr().out


@pytest.mark.parametrize("task", ["instruct", "dpo"])
def test_resume_on_other_data_of_the_same_size_is_refused(base, capsys, sigterm_at, task):
    out = base / "run"
    sigterm_at(2)
    assert main(_tune(task, base, out)) == 0
    capsys.readouterr()
    name = "pairs.json" if task == "dpo" else "sft.json"
    records = json.loads((base / name).read_text())
    key = "chosen" if task == "dpo" else "output"
    records[0][key] = "gold" if records[0][key] != "gold" else "pink"  # one answer changed
    (base / name).write_text(json.dumps(records))
    assert main(_tune(task, base, out, "--resume")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "data_sha256:" in err
    # a run from before the fingerprint existed resumes as before
    settings = json.loads((out / "finetune.json").read_text())
    del settings["data_sha256"]
    (out / "finetune.json").write_text(json.dumps(settings))
    assert main(_tune(task, base, out, "--resume")) == 0
    assert "resuming from" in capsys.readouterr().out


def test_resume_of_a_lora_run_without_finetune_json_checks_the_rank(base, capsys, sigterm_at):
    """Runs started before finetune.json existed: the rank is read from the checkpoint."""
    out = base / "run"
    sigterm_at(2)
    assert main(_tune("dpo", base, out, "--lora-r", "2")) == 0
    capsys.readouterr()
    (out / "finetune.json").unlink(missing_ok=True)
    assert main(_tune("dpo", base, out, "--lora-r", "4", "--resume")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "lora.r: 2 in checkpoint, 4 now" in err


def test_classify_signal_then_resume_finishes_with_every_epoch(tmp_path, capsys, sigterm_at):
    rng = random.Random(0)
    rows = ["text,label"]
    for i in range(60):
        words = rng.sample(WORDS, 3)
        rows.append(" ".join(words + (["7"] if i % 2 else [])) + f",{'yn'[i % 2]}")
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "clf"
    argv = ["finetune", "classify", "--from-scratch", "gpt", "--data", str(tmp_path / "d.csv")]
    argv += ["--n-embd", "32", "--n-layer", "1", "--n-head", "2", "--vocab-size", "270"]
    argv += ["--epochs", "2", "--batch-size", "8", "--device", "cpu", "--no-progress"]
    sigterm_at(6)  # one step into the second epoch (5 batches of 8 in 42 training rows)
    assert main([*argv, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "interrupted at step 6 of 10" in printed and "classifier saved" not in printed
    assert not (out / "report.json").exists() and not (out / "config.json").exists()
    assert main(_resume_argv(printed)) == 0
    assert "classifier saved" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert report["stopped"] == "max_steps" and report["steps"] == 10
    assert [e["epoch"] for e in report["epochs"]] == [1.0, 2.0]  # epoch 1 ran before the signal


def test_a_fresh_run_removes_an_earlier_runs_checkpoints(base, capsys, sigterm_at):
    out = base / "run"
    sigterm_at(2)
    assert main(_tune("instruct", base, out, "--save-interval", "1")) == 0
    assert [p.name for p in list_checkpoints(out)] == ["step-0000001", "step-0000002"]
    capsys.readouterr()
    sigterm_at(1)  # a new run (no --resume) into the same directory
    assert main(_tune("instruct", base, out, "--lr", "1e-3")) == 0
    assert "removed 2 checkpoint(s) of an earlier run" in capsys.readouterr().out
    assert [p.name for p in list_checkpoints(out)] == ["step-0000001"]  # this run's
    state = json.loads((out / "checkpoints" / "step-0000001" / "state.json").read_text())
    assert state["train_config"]["lr"] == 1e-3
