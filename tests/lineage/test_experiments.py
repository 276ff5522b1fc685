"""The seq2seq sweep's plumbing: task lengths, model sizes and a tiny run (CPU-cheap)."""

from __future__ import annotations

import pytest

from scratchllm.lineage.experiments import (
    _models,
    make_task,
    median_steps,
    run_seq2seq,
    summarize,
)
from scratchllm.lineage.tasks import collate


def test_make_task_sets_lengths_of_reverse_and_sort_only():
    for name in ("reverse", "sort"):
        task = make_task(name, 12, 20)
        assert task.max_src_len == 20
        assert all(12 <= len(src) <= 20 for src, _ in task.sample(50, seed=0))
    assert make_task("translate", 12, 20).max_src_len == 5  # fixed grammar
    assert make_task("reverse").max_src_len == 8  # the shipped default
    with pytest.raises(SystemExit, match="unknown task"):
        make_task("nope")


def test_both_models_fit_long_sequences_at_a_similar_size():
    task = make_task("reverse", 12, 20)
    src, mask, tgt_in, _ = collate(task.sample(4, seed=1))
    sizes = {}
    for label, model in _models(task).items():
        logits = model(src, tgt_in, src_mask=mask)
        assert logits.shape == (*tgt_in.shape, task.tgt_vocab_size)
        assert model.greedy_decode(src, mask, task.max_tgt_len + 1).shape[0] == 4
        sizes[label] = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    small, large = sorted(sizes.values())
    assert large / small < 1.25  # comparable parameter counts


def test_run_seq2seq_reports_every_model_lr_and_seed(tmp_path):
    rows = run_seq2seq(
        tmp_path,
        2,
        1,
        [1e-3],
        tasks=["sort"],
        min_len=3,
        max_len=4,
        warmup=1,
        seeds=[0, 1],
        heatmap=False,
    )
    gru, transformer = "GRU + additive attention", "encoder-decoder Transformer"
    assert [(r["model"], r["seed"]) for r in rows] == [
        (gru, 0),
        (gru, 1),
        (transformer, 0),
        (transformer, 1),
    ]
    assert all(r["lengths"] == "3-4" and r["lr"] == 1e-3 for r in rows)


def test_summary_picks_the_lr_with_the_lowest_median_over_seeds():
    assert median_steps([100, 200]) == 150
    assert median_steps([100, None, 300]) == 300  # not reached counts as infinite
    assert median_steps([None, 100]) == float("inf")
    row = dict(task="reverse", lengths="3-8", model="m")
    rows = [
        row | dict(lr=1e-3, seed=0, steps=100),
        row | dict(lr=1e-3, seed=1, steps=None),
        row | dict(lr=3e-3, seed=0, steps=300),
        row | dict(lr=3e-3, seed=1, steps=200),
    ]
    [best] = summarize(rows)
    assert best["lr"] == 3e-3 and best["steps"] == [300, 200] and best["median"] == 250


def test_transformer_init_is_configurable():
    task = make_task("reverse")
    stds = {}
    for init in ("gpt2", "pytorch"):
        model = _models(task, {"init": init})["encoder-decoder Transformer"]
        assert model.cfg.init == init and model.enc_cfg.init == init
        stds[init] = model.src_embed.wte.weight.detach().std().item()
    assert stds["gpt2"] < 0.03 < 0.5 < stds["pytorch"]  # N(0, 0.02) vs nn.Embedding's N(0, 1)


def test_only_the_transformer_gets_label_smoothing_and_models_can_be_chosen(tmp_path):
    from scratchllm.lineage.experiments import GRU, LABEL_SMOOTHING, TRANSFORMER_LABEL

    assert LABEL_SMOOTHING == {GRU: 0.0, TRANSFORMER_LABEL: 0.1}
    kw = dict(tasks=["reverse"], min_len=3, max_len=4, warmup=1, seeds=[0], heatmap=False)
    both = run_seq2seq(tmp_path, 2, 1, [1e-3], **kw)
    assert [(r["model"], r["label_smoothing"]) for r in both] == [
        (GRU, 0.0),
        (TRANSFORMER_LABEL, 0.1),
    ]
    alone = run_seq2seq(tmp_path, 2, 1, [1e-3], models=[TRANSFORMER_LABEL], **kw)
    [row] = alone  # the Transformer alone trains exactly as it does next to the GRU
    assert row["accuracy"] == both[1]["accuracy"] and row["params"] == both[1]["params"]


def test_label_smoothing_reaches_the_training_of_each_model(tmp_path, monkeypatch):
    from scratchllm.lineage import experiments
    from scratchllm.lineage.experiments import GRU, TRANSFORMER_LABEL

    seen = []
    real = experiments.train_seq2seq

    def spy(model, task, cfg, **kw):
        seen.append((type(model).__name__, kw["label_smoothing"]))
        return real(model, task, cfg, **kw)

    monkeypatch.setattr(experiments, "train_seq2seq", spy)
    kw = dict(tasks=["sort"], min_len=3, max_len=4, warmup=1, seeds=[0], heatmap=False)
    run_seq2seq(tmp_path, 1, 1, [1e-3], **kw)
    run_seq2seq(tmp_path, 1, 1, [1e-3], label_smoothing={GRU: 0.2, TRANSFORMER_LABEL: 0.0}, **kw)
    assert seen == [
        ("RNNSeq2Seq", 0.0),
        ("Seq2SeqTransformer", 0.1),
        ("RNNSeq2Seq", 0.2),
        ("Seq2SeqTransformer", 0.0),
    ]
