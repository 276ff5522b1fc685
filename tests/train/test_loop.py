import math

import numpy as np
import pytest
import torch

from scratchllm.data.loaders import EpochLoader
from scratchllm.data.windows import WindowDataset
from scratchllm.model import GPTModel, get_preset
from scratchllm.train.config import TrainConfig
from scratchllm.train.loop import Trainer, next_token_loss
from scratchllm.train.metrics import read_metrics
from scratchllm.train.pretrain import unigram_cross_entropy


def _data(n=2000, vocab=64, seed=0):
    # a repeating pattern with a little noise: learnable in a few dozen steps
    rng = np.random.default_rng(seed)
    ids = np.tile(np.arange(16), n // 16 + 1)[:n]
    noise = rng.random(n) < 0.05
    ids[noise] = rng.integers(0, vocab, noise.sum())
    return ids


def _trainer(tmp_path, steps=30, **cfg_overrides):
    torch.manual_seed(0)
    model = GPTModel(get_preset("tiny", vocab_size=64, context_length=16))
    settings = dict(
        max_steps=steps,
        batch_size=4,
        lr=3e-3,
        min_lr=3e-4,
        warmup_steps=5,
        eval_interval=10,
        log_interval=5,
        seed=0,
        device="cpu",
    )
    cfg = TrainConfig(**{**settings, **cfg_overrides})
    loader = EpochLoader(WindowDataset(_data(), 16, 16), 4, seed=0)
    val = EpochLoader(WindowDataset(_data(seed=1)[:400], 16, 16), 4, shuffle=False)
    return Trainer(model, cfg, loader, lambda: iter(val), run_dir=tmp_path, progress=False)


def test_loss_falls_and_artifacts_are_written(tmp_path):
    trainer = _trainer(tmp_path, steps=60)
    result = trainer.fit()
    losses = [r["loss"] for r in result.history if "loss" in r]
    assert losses[0] > losses[-1] + 1.0
    assert result.val_loss is not None and result.val_loss < math.log(64)
    assert (tmp_path / "metrics.jsonl").exists() and (tmp_path / "loss.png").exists()
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("stop_at,log_interval", [(7, 1), (10, 1), (7, 4)])
def test_resume_equals_uninterrupted_bitwise(tmp_path, stop_at, log_interval):
    # log_interval 4, stop at 7: the resumed run's first record (step 8) averages steps 5-8,
    # three of which ran before the interruption
    full = _trainer(tmp_path / "full", steps=20, log_interval=log_interval)
    full.fit()
    # first leg stops at `stop_at` and writes a checkpoint; the second resumes from it
    first = _trainer(tmp_path / "split", steps=20, log_interval=log_interval)
    assert first.fit(until_step=stop_at).stopped == "paused"
    second = _trainer(tmp_path / "split2", steps=20, log_interval=log_interval)
    second.resume(tmp_path / "split" / "checkpoints" / f"step-{stop_at:07d}")
    second.fit()
    for (name, a), b in zip(full.model.state_dict().items(), second.model.state_dict().values()):
        assert torch.equal(a, b), name
    full_losses = [r["loss"] for r in full.metrics.records if "loss" in r and r["step"] > stop_at]
    resumed = [r["loss"] for r in second.metrics.records if "loss" in r and r["step"] > stop_at]
    assert resumed == full_losses


def test_non_finite_steps_are_skipped_then_stop(tmp_path):
    def nan_loss(model, batch):
        loss, n = next_token_loss(model, batch)
        return loss * float("nan"), n

    trainer = _trainer(tmp_path, steps=20, max_bad_steps=3)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.loss_fn = nan_loss
    result = trainer.fit()
    assert result.stopped == "non_finite" and trainer.skipped_steps == 3
    for a, b in zip(before, trainer.model.parameters()):
        assert torch.equal(a, b)  # no update was applied


def test_unigram_cross_entropy_of_uniform_tokens_is_log_vocab():
    ids = np.arange(100).repeat(50)
    assert unigram_cross_entropy(ids, ids, 100) == pytest.approx(math.log(100))


def test_each_evaluation_logs_a_generated_sample(tmp_path):
    trainer = _trainer(tmp_path, steps=20)
    seen = []

    def sample(model):
        assert not model.training  # generation runs in eval mode
        seen.append(trainer.step)
        return f"text at {trainer.step}"

    trainer.sample = sample
    trainer.fit()
    assert seen == [10, 20] and trainer.model.training
    samples = [r for r in trainer.metrics.records if "sample" in r]
    assert [r["sample"] for r in samples] == ["text at 10", "text at 20"]


def _tensorboard_scalars(log_dir):
    accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator"
    ).EventAccumulator(str(log_dir))
    accumulator.Reload()
    return {
        tag: [(e.step, e.value) for e in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()["scalars"]
    }


def test_tensorboard_events_mirror_the_metrics_file(tmp_path):
    pytest.importorskip("tensorboard")
    trainer = _trainer(tmp_path, steps=20, tensorboard=True)
    trainer.fit()
    scalars = _tensorboard_scalars(tmp_path / "tensorboard")
    records = trainer.metrics.records
    expected_loss = [(r["step"], r["loss"]) for r in records if "loss" in r]
    expected_val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    assert [s for s, _ in scalars["train/loss"]] == [s for s, _ in expected_loss]
    assert [v for _, v in scalars["train/loss"]] == pytest.approx([v for _, v in expected_loss])
    assert [v for _, v in scalars["val/loss"]] == pytest.approx([v for _, v in expected_val])
    assert {"train/lr", "train/grad_norm", "train/tokens_per_s", "val/perplexity"} <= set(scalars)


def test_tensorboard_after_resume_has_each_step_once(tmp_path):
    pytest.importorskip("tensorboard")
    # the first leg logs steps 1..15 but its checkpoint is at step 10: steps 11..15 come twice
    first = _trainer(tmp_path, steps=20, log_interval=1, save_interval=10, tensorboard=True)
    first.fit(until_step=15)
    second = _trainer(tmp_path, steps=20, log_interval=1, tensorboard=True)
    second.resume(tmp_path / "checkpoints" / "step-0000010")
    second.fit()
    steps = [s for s, _ in _tensorboard_scalars(tmp_path / "tensorboard")["train/loss"]]
    assert steps == list(range(1, 21))


def test_tensorboard_missing_gives_an_install_hint(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError("No module named 'tensorboard'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    from scratchllm.errors import ConfigError

    with pytest.raises(ConfigError, match=r"scratchllm\[tensorboard\]"):
        _trainer(tmp_path, steps=5, tensorboard=True)


def test_eval_train_logs_the_eval_mode_loss_on_training_batches(tmp_path):
    from scratchllm.train.loop import evaluate

    trainer = _trainer(tmp_path, steps=10, eval_train=True, eval_interval=5)
    windows = WindowDataset(_data(), 16, 16)
    trainer.train_eval_batches = lambda: iter(EpochLoader(windows, 4, shuffle=False))
    trainer.fit()
    logged = [r for r in trainer.metrics.records if "train_eval_loss" in r]
    assert [r["step"] for r in logged] == [5, 10]
    again = evaluate(
        trainer.model, trainer.train_eval_batches, next_token_loss, torch.device("cpu"), 20
    )
    assert logged[-1]["train_eval_loss"] == pytest.approx(again, rel=1e-6)


def _scripted_val(values):
    """A loss function whose evaluation (eval mode) returns the next of ``values``."""
    calls = []

    def loss_fn(model, batch):
        if model.training:
            return next_token_loss(model, batch)
        calls.append(1)
        index = (len(calls) - 1) // 2  # two validation batches per evaluation
        return torch.tensor(values[index]), 1

    return loss_fn


def test_the_best_checkpoint_is_kept_beside_the_newest(tmp_path):
    import json

    from scratchllm.train import checkpoint as ckpt

    trainer = _trainer(tmp_path, steps=8, eval_interval=2, eval_batches=2, save_interval=2)
    trainer.cfg.keep_last = 1
    trainer.loss_fn = _scripted_val([3.0, 1.0, 2.0, 4.0])  # evaluations at steps 2, 4, 6, 8
    result = trainer.fit()
    assert result.best_val_loss == 1.0
    names = [p.name for p in ckpt.list_checkpoints(tmp_path)]
    assert names == ["step-0000004", "step-0000008"]  # the best (4) and the newest (8)
    best = json.loads((tmp_path / "checkpoints" / "best.json").read_text())
    assert best == {"step": 4, "val_loss": 1.0, "path": "step-0000004"}
    state = json.loads((tmp_path / "checkpoints" / "step-0000004" / "state.json").read_text())
    assert state["val_loss"] == 1.0 and state["best_step"] == 4


def test_resume_from_an_older_checkpoint_replaces_the_later_ones(tmp_path):
    from scratchllm.train import checkpoint as ckpt

    first = _trainer(tmp_path, steps=12, save_interval=4, keep_last=5, log_interval=2)
    first.fit()
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)][-1] == "step-0000012"
    again = _trainer(tmp_path, steps=12, save_interval=4, keep_last=5, log_interval=2, lr=1e-3)
    again.resume(tmp_path / "checkpoints" / "step-0000004")
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-0000004"]
    logged = read_metrics(tmp_path / "metrics.jsonl")
    assert logged and max(r["step"] for r in logged) <= 4  # the log is cut there too
    again.fit()
    # step 8 and 12 are this run's (lr 1e-3), not the first run's
    state = ckpt.load_checkpoint(tmp_path / "checkpoints" / "step-0000012", again.model)
    assert state["train_config"]["lr"] == 1e-3


class FakeClock:
    """Stands in for the loop's `time` module: the clock moves only when a test moves it, so
    durations are exact and no test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


def _clocked(trainer, clock, train_seconds, eval_seconds=0.0):
    """Trainer.loss_fn that advances ``clock`` by ``train_seconds(step)`` per training step and by
    ``eval_seconds`` per evaluation batch."""

    def loss_fn(model, batch):
        clock.now += train_seconds(trainer.step + 1) if model.training else eval_seconds
        return next_token_loss(model, batch)

    return loss_fn


def test_tokens_per_second_leaves_out_evaluation_time(tmp_path, monkeypatch, one_thread):
    import scratchllm.train.loop as loop

    clock = FakeClock()
    monkeypatch.setattr(loop, "time", clock)
    trainer = _trainer(tmp_path, steps=4, eval_interval=1, eval_batches=1, log_interval=4)
    # each step 0.25 s of training, each evaluation 100 s: 4 steps of 4 x 16 tokens in 1 s
    trainer.loss_fn = _clocked(trainer, clock, lambda step: 0.25, eval_seconds=100.0)
    result = trainer.fit()
    (record,) = [r for r in result.history if "tokens_per_s" in r]
    assert record["tokens_per_s"] == pytest.approx(4 * 4 * 16 / 1.0)
    assert result.seconds == pytest.approx(1.0 + 4 * 100.0)  # the run's own clock counts both


def test_partial_saves_left_by_a_killed_process_are_removed(tmp_path):
    partial = tmp_path / "checkpoints" / ".step-0000005.x1y2"
    partial.mkdir(parents=True)
    (partial / "model.safetensors").write_bytes(b"half")
    doomed = tmp_path / "checkpoints" / ".step-0000003.deleting"
    doomed.mkdir()
    temp = tmp_path / ".model.safetensors.abc.tmp"
    temp.write_bytes(b"half")
    keep = tmp_path / "notes.txt"
    keep.write_text("mine")
    _trainer(tmp_path, steps=2)
    assert not partial.exists() and not doomed.exists() and not temp.exists()
    assert keep.read_text() == "mine"


def test_training_samples_never_show_special_tokens_other_than_end_of_text():
    from scratchllm.tokenizer import WordTokenizer
    from scratchllm.train.pretrain import sampler

    tok = WordTokenizer.train(["abcdefgh"], mode="char")
    texts = []
    for seed in range(10):  # untrained models: without the ban 8 of these 10 samples show some
        torch.manual_seed(seed)
        cfg = get_preset("tiny", vocab_size=tok.vocab_size, context_length=64, init_std=0.5)
        texts.append(sampler(tok, "abcd", 60, seed=seed)(GPTModel(cfg).eval()))
    assert sum(map(len, texts)) > 200
    assert not [t for t in texts if any(s in t for s in ("[PAD]", "[BOS]", "[UNK]"))]


@pytest.mark.parametrize("slow_down_at", [None, 30])
def test_a_time_budget_fits_the_schedule_to_the_steps_that_fit(
    tmp_path, monkeypatch, one_thread, slow_down_at
):
    """Steps 1-3 pay one-time costs (0.5 s each), the rest take 0.05 s; the 10 steps after the
    first 3 are timed and the schedule is fitted to the steps that fit in the 4 s budget. With
    ``slow_down_at``, steps get 4x slower there (a machine loaded meanwhile): later fits shorten
    the schedule, and the clock ends the run at most a step before the schedule would have."""
    import scratchllm.train.loop as loop
    from scratchllm.train.optim import lr_at

    clock = FakeClock()
    monkeypatch.setattr(loop, "time", clock)

    def planned(step):  # what the probe sees
        return 0.5 if step <= 3 else 0.05

    def seconds(step):
        return 0.2 if slow_down_at and step >= slow_down_at else planned(step)

    trainer = _trainer(tmp_path, steps=1000, max_seconds=4.0, warmup_steps=50, eval_interval=500)
    trainer.loss_fn = _clocked(trainer, clock, seconds)
    result = trainer.fit()
    cfg = trainer.cfg
    assert cfg.warmup_steps <= max(cfg.max_steps // 10, 13)  # 13: the step it was fitted at
    assert lr_at(cfg.max_steps - 1, cfg) < 0.2 * cfg.lr  # decayed to near the floor
    if slow_down_at is None:
        # the fitted run fits the budget and uses most of it (a tenth is kept spare); had the
        # probe timed the three slow first steps too, it would have fitted 24 steps, 2.4 s
        assert 0.8 * 4.0 < sum(planned(s) for s in range(1, cfg.max_steps + 1)) <= 4.0
        assert result.stopped == "max_steps" and result.step == cfg.max_steps
    else:  # fitted 48 steps first, then fewer; the clock ends it at the first step over
        assert cfg.max_steps < 45
        assert result.stopped in ("max_steps", "max_seconds")
        assert result.step >= cfg.max_steps - 1
        assert lr_at(result.step - 1, cfg) < 0.2 * cfg.lr
        spent = sum(seconds(s) for s in range(1, result.step + 1))
        assert spent - seconds(result.step) <= 4.0


@pytest.mark.parametrize(
    ("probe_seconds", "later_seconds", "change_after", "change"),
    [(0.2, 0.05, 13, "longer"), (0.05, 0.2, 20, "shorter")],
)
def test_a_time_budget_is_fitted_again_when_the_speed_changes(
    tmp_path, monkeypatch, one_thread, probe_seconds, later_seconds, change_after, change
):
    """The probe (steps 4-13) ran 4x slower (a busy machine) than the steps after it, or 4x
    faster than the steps after step 20. Fitted once, the run would end at 4.95 s of a 10 s
    budget, or be cut by the clock before its schedule decayed. Fitted again at the speed of the
    latest steps, it ends within the budget, with most of it used and the learning rate near its
    floor."""
    import scratchllm.train.loop as loop
    from scratchllm.train.optim import lr_at

    clock = FakeClock()
    monkeypatch.setattr(loop, "time", clock)

    def seconds(step):
        return 0.5 if step <= 3 else probe_seconds if step <= change_after else later_seconds

    trainer = _trainer(tmp_path, steps=1000, max_seconds=10.0, warmup_steps=50, eval_interval=500)
    trainer.loss_fn = _clocked(trainer, clock, seconds)
    messages = []
    monkeypatch.setattr(loop.tqdm, "write", staticmethod(lambda m, *a, **k: messages.append(m)))
    result = trainer.fit()
    cfg = trainer.cfg
    assert result.stopped == "max_steps" and result.step == cfg.max_steps
    assert 0.8 * 10.0 < sum(seconds(s) for s in range(1, cfg.max_steps + 1)) <= 10.0
    assert lr_at(cfg.max_steps - 1, cfg) < 0.2 * cfg.lr
    refits = [m for m in messages if "steps now take" in m]
    assert len(refits) == 1, messages
    first = int(messages[0].split("about ")[1].split()[0])
    assert (cfg.max_steps > 1.5 * first) if change == "longer" else (cfg.max_steps < 0.75 * first)


def test_a_time_budget_is_fitted_again_in_time_when_steps_become_much_slower(
    tmp_path, monkeypatch, one_thread
):
    """The probe saw 0.01 s steps, so all 1000 steps fit 100 s; then every step takes 1 s. A
    second fit due only a quarter of the run later (step 259) would come after the clock had cut
    the run at step ~111; due by time too (a quarter of the time left), it shortens the run to
    what fits, and the schedule ends decayed, within the budget."""
    import scratchllm.train.loop as loop
    from scratchllm.train.optim import lr_at

    clock = FakeClock()
    monkeypatch.setattr(loop, "time", clock)

    def seconds(step):
        return 0.5 if step <= 3 else 0.01 if step <= 13 else 1.0

    trainer = _trainer(tmp_path, steps=1000, max_seconds=100.0, warmup_steps=50, eval_interval=500)
    trainer.loss_fn = _clocked(trainer, clock, seconds)
    result = trainer.fit()
    cfg = trainer.cfg
    assert result.stopped == "max_steps" and result.step == cfg.max_steps < 120
    assert 80.0 < sum(seconds(s) for s in range(1, cfg.max_steps + 1)) <= 100.0
    assert lr_at(cfg.max_steps - 1, cfg) < 0.2 * cfg.lr


def test_a_time_budget_is_left_alone_when_the_speed_holds(tmp_path, monkeypatch, one_thread):
    import scratchllm.train.loop as loop

    clock = FakeClock()
    monkeypatch.setattr(loop, "time", clock)
    # 5% slower after the probe: within the tolerance, the end of the schedule stays
    trainer = _trainer(tmp_path, steps=1000, max_seconds=10.0, warmup_steps=50, eval_interval=500)
    trainer.loss_fn = _clocked(trainer, clock, lambda s: 0.05 if s <= 13 else 0.0525)
    messages = []
    monkeypatch.setattr(loop.tqdm, "write", staticmethod(lambda m, *a, **k: messages.append(m)))
    result = trainer.fit()
    assert len(messages) == 1 and "steps fit in max_seconds=10" in messages[0]
    assert result.step == trainer.cfg.max_steps == int(messages[0].split("about ")[1].split()[0])
