from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scratchllm.data.loaders import EpochLoader
from scratchllm.data.windows import WindowDataset


def make_loader(**kwargs) -> EpochLoader:
    ds = WindowDataset(np.arange(203), 6, 4)  # 50 windows
    return EpochLoader(ds, 8, seed=7, **kwargs)


def take(loader: EpochLoader, k: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(itertools.islice(loader.batches(), k))


def test_epoch_covers_every_window_once() -> None:
    loader = make_loader(drop_last=False)
    assert len(loader) == 7
    xs = torch.cat([x for x, _ in loader])
    assert xs.shape == (50, 6)
    assert sorted(xs[:, 0].tolist()) == list(range(0, 200, 4))
    assert loader.epoch == 1 and loader.batch_index == 0


@settings(max_examples=60, deadline=None)
@given(
    n_windows=st.integers(1, 40),
    batch_size=st.integers(1, 12),
    drop_last=st.booleans(),
    shuffle=st.booleans(),
    seed=st.integers(0, 3),
)
def test_any_epoch_visits_each_window_at_most_once(n_windows, batch_size, drop_last, shuffle, seed):
    """An epoch is a permutation of the windows cut into batches: full batches, each window at
    most once, every window when the last short batch is kept; unshuffled, in order."""
    ds = WindowDataset(np.arange(n_windows * 4 + 1), 4, 4)  # window i starts at 4 * i
    if n_windows < batch_size and drop_last:
        with pytest.raises(ValueError):
            EpochLoader(ds, batch_size, seed=seed, drop_last=drop_last, shuffle=shuffle)
        return
    loader = EpochLoader(ds, batch_size, seed=seed, drop_last=drop_last, shuffle=shuffle)
    batches = list(loader)
    assert len(batches) == len(loader)
    sizes = [len(x) for x, _ in batches]
    assert all(size == batch_size for size in sizes[:-1]) and 0 < sizes[-1] <= batch_size
    starts = [int(s) // 4 for x, _ in batches for s in x[:, 0]]
    assert len(set(starts)) == len(starts)  # no window twice
    assert len(starts) == (n_windows // batch_size * batch_size if drop_last else n_windows)
    if not shuffle:
        assert starts == list(range(len(starts)))
    for x, y in batches:
        assert torch.equal(x[:, 1:], y[:, :-1]) and torch.equal(y[:, -1], x[:, -1] + 1)


def test_same_seed_same_batches_and_epochs_differ() -> None:
    a, b = take(make_loader(), 12), take(make_loader(), 12)
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))
    assert len(make_loader()) == 6
    assert not torch.equal(a[0][0], a[6][0])  # epoch 1 is shuffled differently from epoch 0
    for x, y in a:
        assert torch.equal(x[:, 1:], y[:, :-1])


@pytest.mark.parametrize("drop_last", [True, False])
def test_resume_at_50_random_points(drop_last: bool) -> None:
    reference = take(make_loader(drop_last=drop_last), 80)
    rng = random.Random(0)
    for stop in sorted(rng.randrange(0, 70) for _ in range(50)):
        loader = make_loader(drop_last=drop_last)
        take(loader, stop)
        state = loader.state_dict()
        resumed = make_loader(drop_last=drop_last)
        resumed.load_state_dict(state)
        nxt = take(resumed, 8)
        for (x, y), (rx, ry) in zip(nxt, reference[stop : stop + 8]):
            assert torch.equal(x, rx) and torch.equal(y, ry)


def test_for_loop_then_break_keeps_position() -> None:
    loader = make_loader()
    for i, _ in enumerate(loader):
        if i == 2:
            break
    assert loader.state_dict()["batch_index"] == 3
    assert torch.equal(loader.next_batch()[0], take(make_loader(), 4)[3][0])


def test_state_from_another_loader_is_refused() -> None:
    state = make_loader().state_dict()
    other = EpochLoader(WindowDataset(np.arange(203), 6, 4), 4, seed=7)
    with pytest.raises(ValueError, match="batch_size"):
        other.load_state_dict(state)


def test_too_few_windows_for_one_batch() -> None:
    with pytest.raises(ValueError, match="fewer than batch_size"):
        EpochLoader(WindowDataset(np.arange(20), 6, 6), 8)


def test_bad_seed_and_incomplete_state_are_named() -> None:
    from scratchllm.data.loaders import ShardSampler
    from scratchllm.errors import DataError

    ds = WindowDataset(np.arange(100), 4, 4)
    with pytest.raises(DataError, match="seed must be a non-negative integer, got -1"):
        EpochLoader(ds, 2, seed=-1)
    with pytest.raises(DataError, match="seed must be a non-negative integer, got -3"):
        ShardSampler([np.arange(100)], 2, 4, seed=-3)
    with pytest.raises(DataError, match=r"loader state lacks epoch, batch_index \(has: seed\)"):
        EpochLoader(ds, 2).load_state_dict({"seed": 0})
    with pytest.raises(DataError, match=r"sampler state lacks step"):
        ShardSampler([np.arange(100)], 2, 4).load_state_dict({})
