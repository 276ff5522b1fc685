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


def test_run_seq2seq_reports_every_model_label_smoothing_lr_and_seed(tmp_path):
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
    assert [(r["model"], r["label_smoothing"], r["seed"]) for r in rows] == [
        (gru, 0.0, 0),
        (gru, 0.0, 1),
        (gru, 0.1, 0),
        (gru, 0.1, 1),
        (transformer, 0.0, 0),
        (transformer, 0.0, 1),
        (transformer, 0.1, 0),
        (transformer, 0.1, 1),
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


def test_both_models_search_the_same_label_smoothing_grid(tmp_path):
    from scratchllm.lineage.experiments import GRU, LABEL_SMOOTHING, TRANSFORMER_LABEL

    assert LABEL_SMOOTHING == {GRU: (0.0, 0.1), TRANSFORMER_LABEL: (0.0, 0.1)}
    kw = dict(tasks=["reverse"], min_len=3, max_len=4, warmup=1, seeds=[0], heatmap=False)
    grid = run_seq2seq(tmp_path, 2, 1, [1e-3], **kw)
    assert [(r["model"], r["label_smoothing"]) for r in grid] == [
        (GRU, 0.0),
        (GRU, 0.1),
        (TRANSFORMER_LABEL, 0.0),
        (TRANSFORMER_LABEL, 0.1),
    ]
    # one model at one value trains exactly as it does inside the full grid
    smoothing = {TRANSFORMER_LABEL: 0.1}
    [row] = run_seq2seq(
        tmp_path, 2, 1, [1e-3], models=[TRANSFORMER_LABEL], label_smoothing=smoothing, **kw
    )
    assert row["label_smoothing"] == 0.1
    assert {k: v for k, v in row.items() if k != "seconds"} == {
        k: v for k, v in grid[-1].items() if k != "seconds"
    }
    assert row["accuracy"] == grid[3]["accuracy"] and row["params"] == grid[3]["params"]


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
    run_seq2seq(tmp_path, 1, 1, [1e-3], label_smoothing={GRU: [0.3], TRANSFORMER_LABEL: []}, **kw)
    assert seen == [
        ("RNNSeq2Seq", 0.0),
        ("RNNSeq2Seq", 0.1),
        ("Seq2SeqTransformer", 0.0),
        ("Seq2SeqTransformer", 0.1),
        ("RNNSeq2Seq", 0.2),
        ("Seq2SeqTransformer", 0.0),
        ("RNNSeq2Seq", 0.3),  # an empty list runs no Transformer
    ]


def test_summary_picks_the_best_lr_and_label_smoothing_pair():
    row = dict(task="reverse", lengths="12-20", model="m")
    grid = {
        (1e-3, 0.0): [400, 350, 300],  # median 350
        (1e-3, 0.1): [300, 250, 500],  # median 300
        (3e-3, 0.0): [200, 300, 250],  # median 250
        (3e-3, 0.1): [None, 100, 150],  # a miss counts as infinite: median 150, the best
    }
    rows = [
        row | dict(lr=lr, label_smoothing=eps, seed=s, steps=steps)
        for (lr, eps), per_seed in grid.items()
        for s, steps in enumerate(per_seed)
    ]
    [best] = summarize(rows)
    assert (best["lr"], best["label_smoothing"]) == (3e-3, 0.1)
    assert best["steps"] == [None, 100, 150] and best["median"] == 150
    tie = [r for r in rows if (r["lr"], r["label_smoothing"]) == (1e-3, 0.1)] + [
        row | dict(lr=1e-3, label_smoothing=0.0, seed=s, steps=300) for s in range(3)
    ]
    [best] = summarize(tie)  # equal medians at one lr: the lower label smoothing
    assert (best["lr"], best["label_smoothing"], best["median"]) == (1e-3, 0.0, 300)


def test_cli_runs_every_label_smoothing_value_given(tmp_path, monkeypatch, capsys):
    from scratchllm.lineage import experiments

    seen = []
    real = experiments.train_seq2seq

    def spy(model, task, cfg, **kw):
        seen.append((type(model).__name__, kw["label_smoothing"], cfg.lr))
        return real(model, task, cfg, **kw)

    monkeypatch.setattr(experiments, "train_seq2seq", spy)
    common = ["seq2seq", "--out", str(tmp_path), "--max-steps", "1", "--eval-every", "1"]
    common += ["--tasks", "sort", "--min-len", "3", "--max-len", "4", "--warmup", "1"]
    common += ["--seeds", "0", "--lrs", "1e-3", "--no-heatmap"]
    experiments.main(common)  # the default: both models at label smoothing 0 and 0.1
    assert seen == [
        ("RNNSeq2Seq", 0.0, 1e-3),
        ("RNNSeq2Seq", 0.1, 1e-3),
        ("Seq2SeqTransformer", 0.0, 1e-3),
        ("Seq2SeqTransformer", 0.1, 1e-3),
    ]
    seen.clear()
    experiments.main(common + ["--models", "gru", "--gru-label-smoothing", "0.05,0.2"])
    assert seen == [("RNNSeq2Seq", 0.05, 1e-3), ("RNNSeq2Seq", 0.2, 1e-3)]
    out = capsys.readouterr().out
    assert "| label smoothing | lr |" in out
    assert "| sort | 3-4 | GRU + additive attention | 0.05 | 0.001 |" in out
