"""`scratchllm pretrain`: job files, SIGTERM with exact resume, kill -9 during a save."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from scratchllm.errors import CheckpointError, ConfigError
from scratchllm.train import checkpoint as ckpt
from scratchllm.train.job import load_job, run_job

# Child processes train tiny models: one intra-op thread, as in this process (conftest.py).
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}

JOB = """
objective = "next-token"
[data]
tokenizer = "char"
val_fraction = 0.1
[model]
n_layer = 1
n_embd = 32
n_head = 2
context_length = 16
[train]
max_steps = {steps}
batch_size = 4
lr = 3e-3
min_lr = 3e-4
warmup_steps = 2
eval_interval = 20
eval_batches = 4
log_interval = 1
save_interval = {save}
device = "cpu"
"""


def _corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("the cat sat on the mat. the dog sat on the log. " * 200)
    return path


def _job_file(tmp_path: Path, steps: int, save: int) -> Path:
    path = tmp_path / f"job-{steps}-{save}.toml"
    path.write_text(JOB.format(steps=steps, save=save))
    return path


def test_job_file_overrides_and_errors(tmp_path):
    job = load_job(str(_job_file(tmp_path, 10, 0)), ["train.lr=0.01", "model.n_layer=3", "out=x"])
    assert job.train["lr"] == 0.01 and job.model["n_layer"] == 3 and job.out == "x"
    assert job.data.tokenizer == "char"
    with pytest.raises(ConfigError, match="bogus"):
        load_job(None, ["bogus=1"])
    with pytest.raises(ConfigError, match="objective"):
        load_job(None, ['objective="magic"'])
    with pytest.raises(ConfigError, match="not found"):
        load_job(str(tmp_path / "missing.toml"))
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nmax_steps = 1")
    with pytest.raises(ConfigError, match="bad.toml"):
        load_job(str(bad))
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes(b'out = "caf\xe9"\n')
    with pytest.raises(ConfigError, match=r"latin1.toml: not UTF-8 text .* at byte 10"):
        load_job(str(latin1))
    for override in ("=1", "model.=1", ".n_layer=1", "model..n_layer=1"):
        with pytest.raises(ConfigError, match="has an empty part"):
            load_job(None, [override])


def _pretrain_cmd(tmp_path, out, steps, save, *extra):
    return [
        sys.executable,
        "-m",
        "scratchllm",
        "pretrain",
        "--config",
        str(_job_file(tmp_path, steps, save)),
        "--data",
        str(_corpus(tmp_path)),
        "--out",
        str(out),
        "--no-progress",
        *extra,
    ]


STEPS = 200  # ~0.5 s of training on one thread

# `scratchllm pretrain` that holds still after step 4 until the test's SIGTERM has arrived (for
# at most 120 s), so that the signal lands mid-run, at step 5, however the machine schedules the
# two processes. A bare child can run its last 196 steps (about half a second) while the test
# still sleeps between two looks at metrics.jsonl; it then finishes without a checkpoint.
WAITS_FOR_SIGTERM_AFTER_STEP_4 = """
import sys, time
import scratchllm.train.loop as loop
from scratchllm.cli import main

received = []
real_handle, real_step = loop._StopFlag._handle, loop.Trainer.train_step

def handle(self, signum, frame):
    received.append(signum)
    real_handle(self, signum, frame)

def train_step(self, batches):
    end = time.monotonic() + 120
    while self.step == 4 and not received and time.monotonic() < end:
        time.sleep(0.01)
    return real_step(self, batches)

loop._StopFlag._handle, loop.Trainer.train_step = handle, train_step
sys.argv[0] = "scratchllm"
sys.exit(main())
"""


def test_sigterm_saves_and_resume_matches_uninterrupted(tmp_path):
    full = tmp_path / "full"
    subprocess.run(
        _pretrain_cmd(tmp_path, full, STEPS, 0), check=True, capture_output=True, env=ONE_THREAD
    )

    split = tmp_path / "split"
    python, _, _, *args = _pretrain_cmd(tmp_path, split, STEPS, 0)
    proc = subprocess.Popen(
        [python, "-c", WAITS_FOR_SIGTERM_AFTER_STEP_4, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ONE_THREAD,
    )
    metrics = split / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") > 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    saved = ckpt.list_checkpoints(split)
    assert len(saved) == 1, out + err
    stopped_at = json.loads((saved[0] / "state.json").read_text())["step"]
    assert stopped_at == 5, "the signal arrives after step 4: step 5 ends, then it saves"

    subprocess.run(
        _pretrain_cmd(tmp_path, split, STEPS, 0, "--resume"),
        check=True,
        capture_output=True,
        env=ONE_THREAD,
    )
    a, b = load_file(full / "model.safetensors"), load_file(split / "model.safetensors")
    for name in a:
        assert torch.equal(a[name], b[name]), name
    losses = lambda run: [  # noqa: E731
        r["loss"]
        for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
        if "loss" in r
    ]
    assert losses(split) == losses(full)


def test_resume_with_a_different_model_names_the_fields(tmp_path):
    out = tmp_path / "run"
    job = load_job(
        str(_job_file(tmp_path, 4, 2)), [f'out="{out}"', f'data.path="{_corpus(tmp_path)}"']
    )
    run_job(job, progress=False)
    changed = load_job(
        str(_job_file(tmp_path, 6, 2)),
        [f'out="{out}"', f'data.path="{_corpus(tmp_path)}"', "model.n_embd=48", 'resume="auto"'],
    )
    with pytest.raises(CheckpointError, match="model.n_embd: 32 in checkpoint, 48 now"):
        run_job(changed, progress=False)


def test_a_new_run_refuses_an_old_runs_directory_unless_told_to_overwrite(tmp_path):
    out = tmp_path / "run"
    args = [f'out="{out}"', f'data.path="{_corpus(tmp_path)}"']
    run_job(load_job(str(_job_file(tmp_path, 4, 2)), args), progress=False)
    before = (out / "model.safetensors").read_bytes()
    with pytest.raises(ConfigError, match="already holds a run .*--resume.*--overwrite"):
        run_job(load_job(str(_job_file(tmp_path, 4, 2)), args + ["train.lr=1e-2"]), progress=False)
    assert (out / "model.safetensors").read_bytes() == before  # nothing was touched
    job = load_job(str(_job_file(tmp_path, 2, 0)), args + ["train.lr=1e-2", "overwrite=true"])
    run_job(job, progress=False)
    assert ckpt.list_checkpoints(out) == []  # the old run's step-2 and step-4 are gone
    assert (out / "model.safetensors").read_bytes() != before
    logged = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert max(logged) == 2  # only this run's steps


@pytest.mark.parametrize(
    "override,message",
    [
        ("model.bogus=1", "unknown ModelConfig field"),
        ('train.max_steps="3"', "TrainConfig.max_steps must be an integer, got '3'"),
        ("train.lr=fast", "TrainConfig.lr must be a number"),
        ("train.compile=1", "TrainConfig.compile must be true or false"),
        ("train.keep_last=0", "keep_last must be >= 1"),
        ("data.stride=-1", "data.stride must be >= 0"),
        ("data.val_fraction=1.5", r"data.val_fraction must be in \[0, 1\)"),
        ('data.vocab_size="big"', "data.vocab_size must be an integer"),
        ("overwrite=1", "overwrite must be true or false"),
    ],
)
def test_bad_job_values_are_one_line_errors(tmp_path, capsys, override, message):
    from scratchllm.cli import main

    cmd = _pretrain_cmd(tmp_path, tmp_path / "run", 2, 0, "--set", override)[3:]
    assert main(cmd) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert __import__("re").search(message, err), err


def test_the_printed_job_is_the_resolved_configuration(tmp_path, capsys):
    from scratchllm.cli import main

    assert main(_pretrain_cmd(tmp_path, tmp_path / "run", 2, 0, "--set", "train.lr=0.01")[3:]) == 0
    out = capsys.readouterr().out
    text = out[out.index("{") : out.index("\n}\n") + 2]
    shown = json.loads(text)
    assert shown["train"]["lr"] == 0.01 and shown["train"]["grad_clip"] == 1.0  # a default
    assert shown["model"]["n_layer"] == 1 and shown["model"]["norm"] == "layernorm"
    assert shown["data"]["tokenizer"] == "char"


def test_resume_with_other_data_settings_is_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "run"
    args = [f'out="{out}"', f'data.path="{_corpus(tmp_path)}"']
    run_job(load_job(str(_job_file(tmp_path, 4, 2)), args), progress=False)
    job_json = (out / "job.json").read_text()
    changed = args + ['data.tokenizer="bpe"', "data.vocab_size=300", 'resume="auto"']
    with pytest.raises(CheckpointError, match="data.tokenizer: char in checkpoint, bpe now"):
        run_job(load_job(str(_job_file(tmp_path, 6, 2)), changed), progress=False)
    assert (out / "job.json").read_text() == job_json


def test_resume_from_a_run_directory_takes_its_newest_checkpoint(tmp_path):
    out = tmp_path / "run"
    args = [f'out="{out}"', f'data.path="{_corpus(tmp_path)}"']
    run_job(load_job(str(_job_file(tmp_path, 4, 2)), args), progress=False)
    logs: list[str] = []
    job = load_job(str(_job_file(tmp_path, 6, 2)), args + [f'resume="{out}"'])
    assert run_job(job, progress=False, log=logs.append).step == 6
    assert any("step-0000004 at step 4" in line for line in logs), logs


def test_shards_need_the_tokenizer_they_were_prepared_with(tmp_path):
    from scratchllm.tokenizer import BPETokenizer

    text = _corpus(tmp_path).read_text()
    BPETokenizer.train([text], 300).save(tmp_path / "tok")
    BPETokenizer.train([text], 265).save(tmp_path / "other")  # the corpus allows 274
    main_args = ["--data", str(_corpus(tmp_path)), "--tokenizer", str(tmp_path / "tok")]
    from scratchllm.cli import main

    assert (
        main(["data", "prepare", *main_args, "--out", str(tmp_path / "shards"), "--no-progress"])
        == 0
    )
    base = [f'out="{tmp_path / "run"}"', f'data.shards="{tmp_path / "shards"}"']
    with pytest.raises(ConfigError, match="not the tokenizer"):
        run_job(
            load_job(
                str(_job_file(tmp_path, 2, 0)), base + [f'data.tokenizer="{tmp_path / "other"}"']
            )
        )
    with pytest.raises(ConfigError, match="needs data.tokenizer to be the directory"):
        run_job(load_job(str(_job_file(tmp_path, 2, 0)), base))  # the job file's "char"
    missing = [f'out="{tmp_path / "run"}"', f'data.shards="{tmp_path / "nosuch"}"']
    with pytest.raises(Exception, match="no shard index"):
        run_job(load_job(str(_job_file(tmp_path, 2, 0)), missing))
    ok = base + [f'data.tokenizer="{tmp_path / "tok"}"']
    assert run_job(load_job(str(_job_file(tmp_path, 2, 0)), ok), progress=False).step == 2


def test_a_tokenizer_without_end_of_text_is_a_named_error(tmp_path):
    from scratchllm.tokenizer import BPETokenizer

    text = _corpus(tmp_path).read_text()
    BPETokenizer.train([text], 300, special_tokens=("[MASK]",)).save(tmp_path / "tokm")
    args = [f'out="{tmp_path / "run"}"', f'data.path="{_corpus(tmp_path)}"']
    job = load_job(str(_job_file(tmp_path, 2, 0)), args + [f'data.tokenizer="{tmp_path / "tokm"}"'])
    with pytest.raises(Exception, match="no end-of-text token"):
        run_job(job, progress=False)


KILL_DURING_SAVE = """
import os, signal, sys
from scratchllm.model import GPTModel, get_preset
from scratchllm.train import checkpoint as ckpt
model = GPTModel(get_preset("tiny"))
root = sys.argv[1]
ckpt.save_checkpoint(root + "/checkpoints/step-0000001", model, None, {"step": 1})
real_replace = os.replace
def dying_replace(src, dst):
    if str(dst).endswith("step-0000002"):
        os.kill(os.getpid(), signal.SIGKILL)   # kill -9 at the worst moment
    return real_replace(src, dst)
os.replace = dying_replace
for p in model.parameters():
    p.data.add_(1.0)
ckpt.save_checkpoint(root + "/checkpoints/step-0000002", model, None, {"step": 2})
"""


def test_kill_9_during_a_save_leaves_the_previous_checkpoint_intact(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", KILL_DURING_SAVE, str(tmp_path)], capture_output=True, text=True
    )
    assert proc.returncode == -signal.SIGKILL
    found = ckpt.list_checkpoints(tmp_path)
    assert [p.name for p in found] == ["step-0000001"]
    ckpt.verify_checkpoint(found[0])
    from scratchllm.model import GPTModel, get_preset

    state = ckpt.load_checkpoint(found[0], GPTModel(get_preset("tiny")))
    assert state == {"step": 1}


def test_non_finite_weights_are_never_saved(tmp_path):
    from scratchllm.model import GPTModel, get_preset

    model = GPTModel(get_preset("tiny"))
    with torch.no_grad():
        next(model.parameters())[0, 0] = float("nan")
    with pytest.raises(CheckpointError, match="non-finite"):
        ckpt.save_checkpoint(tmp_path / "step-0000001", model, None, {})
    assert not os.path.exists(tmp_path / "step-0000001")


def test_eval_train_and_tensorboard_from_a_job(tmp_path):
    pytest.importorskip("tensorboard")
    overrides = [
        f'out="{tmp_path / "run"}"',
        f'data.path="{_corpus(tmp_path)}"',
        "train.eval_train=true",
        "train.tensorboard=true",
    ]
    job = load_job(str(_job_file(tmp_path, steps=20, save=0)), overrides)
    result = run_job(job, progress=False)
    train_evals = [r for r in result.history if "train_eval_loss" in r]
    assert [r["step"] for r in train_evals] == [20]
    assert 0 < train_evals[0]["train_eval_loss"] < 10
    assert any((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
