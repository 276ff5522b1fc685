"""Synthetic seq2seq tasks: correct targets, batching, held-out exclusion, resumable loader."""

from __future__ import annotations

import pytest

from scratchllm.errors import ConfigError
from scratchllm.lineage.tasks import (
    BOS_ID,
    EOS_ID,
    IGNORE_INDEX,
    PAD_ID,
    Seq2SeqLoader,
    collate,
    get_task,
    reverse_task,
    sort_task,
    strip_output,
    translation_task,
)


def test_reverse_and_sort_targets():
    for src, tgt in reverse_task().sample(50, seed=1):
        assert tgt == src[::-1] and 3 <= len(src) <= 8 and min(src) >= 3
    for src, tgt in sort_task().sample(50, seed=1):
        assert tgt == sorted(src)


def test_translation_has_a_fixed_lexicon_and_reorders():
    task = translation_task()
    assert set(task.src_tokens[3:]).isdisjoint(task.tgt_tokens[3:])  # two different languages
    for src, tgt in task.sample(100, seed=2):
        assert sorted(src) == sorted(tgt)  # word i always translates to word i
        verb = src[-1]
        assert verb in tgt and tgt[-1] != verb or len(tgt) == 3  # verb moves to the middle
    assert translation_task().src_tokens == task.src_tokens  # the languages do not depend on seeds
    text = task.src_text(task.sample(1, seed=3)[0][0])
    assert all(word in task.src_tokens for word in text.split())


def test_collate_shifts_targets_by_one():
    src, mask, tgt_in, tgt_out = collate([([5, 6, 7], [7, 6, 5]), ([8], [8])])
    assert src.tolist() == [[5, 6, 7], [8, PAD_ID, PAD_ID]]
    assert mask.tolist() == [[True] * 3, [True, False, False]]
    assert tgt_in.tolist() == [[BOS_ID, 7, 6, 5], [BOS_ID, 8, PAD_ID, PAD_ID]]
    assert tgt_out.tolist() == [[7, 6, 5, EOS_ID], [8, EOS_ID, IGNORE_INDEX, IGNORE_INDEX]]


def test_loader_excludes_heldout_and_resumes_exactly():
    task = reverse_task(n_symbols=3, min_len=1, max_len=2)  # tiny space: exclusion matters
    heldout = {tuple(s) for s, _ in task.sample(5, seed=9)}
    loader = Seq2SeqLoader(task, 16, seed=4, exclude=heldout)
    it = loader.batches()
    first = [next(it) for _ in range(3)]
    for src, mask, _, _ in first:
        for row, m in zip(src.tolist(), mask.tolist(), strict=True):
            assert tuple(x for x, keep in zip(row, m, strict=True) if keep) not in heldout
    resumed = Seq2SeqLoader(task, 16, seed=4, exclude=heldout)
    resumed.load_state_dict({"step": 2})
    assert next(resumed.batches())[0].equal(first[2][0])


def test_strip_output_and_errors():
    assert strip_output([4, 5, EOS_ID, 6]) == [4, 5]
    with pytest.raises(ConfigError, match="unknown seq2seq task"):
        get_task("nope")
    with pytest.raises(ConfigError, match="min_len"):
        reverse_task(min_len=5, max_len=2)


def test_label_smoothing_mixes_in_a_uniform_target():
    import torch
    import torch.nn.functional as F

    from scratchllm.lineage.tasks import seq2seq_loss

    class Fixed(torch.nn.Module):  # logits that do not depend on the input
        def __init__(self, logits):
            super().__init__()
            self.logits = logits

        def forward(self, src, tgt_in, *, src_mask=None):
            return self.logits

    batch = collate([([3, 4, 5], [5, 4, 3]), ([6, 7], [7, 6])])  # second row padded
    tgt_out = batch[3]
    logits = torch.randn(*tgt_out.shape, 13, generator=torch.Generator().manual_seed(0))
    plain, n = seq2seq_loss(Fixed(logits), batch)
    smoothed, n_smooth = seq2seq_loss(Fixed(logits), batch, label_smoothing=0.1)
    assert n == n_smooth == 7  # 3 + 1 and 2 + 1 target tokens, padding not counted
    keep = tgt_out != IGNORE_INDEX
    logp = F.log_softmax(logits[keep], dim=-1)  # [7, 13]
    nll = -logp.gather(1, tgt_out[keep][:, None]).mean()
    uniform = -logp.mean()  # cross-entropy against a uniform target
    assert plain.item() == pytest.approx(nll.item(), rel=1e-5)
    assert smoothed.item() == pytest.approx(0.9 * nll.item() + 0.1 * uniform.item(), rel=1e-5)
    assert smoothed.item() != pytest.approx(plain.item(), rel=1e-3)


def test_train_seq2seq_rejects_a_bad_label_smoothing():
    import torch

    from scratchllm.lineage.tasks import train_seq2seq
    from scratchllm.train.config import TrainConfig

    cfg = TrainConfig(max_steps=1, batch_size=2, device="cpu")
    for eps in (-0.1, 1.0):
        with pytest.raises(ConfigError, match="label_smoothing"):
            train_seq2seq(torch.nn.Linear(1, 1), reverse_task(), cfg, label_smoothing=eps)
