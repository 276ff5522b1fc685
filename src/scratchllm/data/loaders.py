"""Deterministic, resumable batch loaders: ``EpochLoader`` over windows, ``ShardSampler`` over shards.

``EpochLoader`` visits every window of a dataset once per epoch in a seeded random order. Its whole
state is ``(epoch, batch_index)``: the order of epoch ``e`` is a pure function of ``(seed, e)``, so
``load_state_dict`` continues with exactly the batches that would have come next, without replaying.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from scratchllm.errors import DataError

Batch = tuple[torch.Tensor, torch.Tensor]


class WindowSource(Protocol):
    """Anything indexable that yields (input, target) pairs; ``get_batch`` is used when present."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Batch: ...


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """The order in which epoch ``epoch`` visits ``n`` items, seeded by (seed, epoch)."""
    if not shuffle:
        return np.arange(n, dtype=np.int64)
    return np.random.default_rng([seed, epoch]).permutation(n).astype(np.int64)


def gather(dataset: WindowSource, indices: np.ndarray) -> Batch:
    """Stack items ``indices`` of ``dataset`` into ``[B, T]`` tensors."""
    get_batch = getattr(dataset, "get_batch", None)
    if get_batch is not None:
        return get_batch(indices)
    pairs = [dataset[int(i)] for i in indices]
    return torch.stack([x for x, _ in pairs]), torch.stack([y for _, y in pairs])


def to_device(
    batch: Sequence[torch.Tensor], device: str | torch.device
) -> tuple[torch.Tensor, ...]:
    """Move tensors to ``device``; for CUDA through pinned memory with a non-blocking copy."""
    device = torch.device(device)
    if device.type != "cuda":
        return tuple(t.to(device) for t in batch)
    return tuple(t.pin_memory().to(device, non_blocking=True) for t in batch)


def _check_seed(seed: int) -> None:
    if seed < 0:  # numpy's SeedSequence takes non-negative integers only
        raise DataError(f"seed must be a non-negative integer, got {seed}")


def _check_state_keys(state: dict[str, Any], keys: tuple[str, ...], what: str) -> None:
    missing = [k for k in keys if k not in state]
    if missing:
        raise DataError(f"{what} state lacks {', '.join(missing)} (has: {', '.join(state)})")


class EpochLoader:
    """Batches ``(x, y)`` of shape ``[batch_size, T]`` over a dataset, epoch after epoch.

    Iterating the loader yields the rest of the current epoch and then moves to the next epoch;
    ``batches()`` is an endless generator over epochs. ``len()`` is the number of batches per epoch.
    """

    def __init__(
        self,
        dataset: WindowSource,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = True,
        device: str | torch.device | None = None,
    ) -> None:
        if batch_size < 1:
            raise DataError(f"batch_size must be at least 1, got {batch_size}")
        _check_seed(seed)
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.device = device
        self.epoch = 0
        self.batch_index = 0  # batches of the current epoch already handed out
        if len(self) == 0:
            raise DataError(
                f"dataset has {len(dataset)} items, fewer than batch_size={batch_size} "
                "with drop_last=True: not one batch per epoch"
            )

    def __len__(self) -> int:
        n = len(self.dataset)
        if self.drop_last:
            return n // self.batch_size
        return -(-n // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        if self.batch_index >= len(self):
            self._next_epoch()
        epoch = self.epoch
        order = epoch_order(len(self.dataset), self.seed, epoch, self.shuffle)
        while self.epoch == epoch and self.batch_index < len(self):
            start = self.batch_index * self.batch_size
            self.batch_index += 1
            yield self._deliver(gather(self.dataset, order[start : start + self.batch_size]))
        if self.epoch == epoch and self.batch_index >= len(self):
            self._next_epoch()

    def batches(self) -> Iterator[Batch]:
        """Batches forever, epoch after epoch; the loader's state follows every batch."""
        while True:
            yield from self

    def next_batch(self) -> Batch:
        """The next batch (crossing into the next epoch when this one is done)."""
        return next(iter(self))

    def _next_epoch(self) -> None:
        self.epoch += 1
        self.batch_index = 0

    def _deliver(self, batch: Batch) -> Batch:
        if self.device is None:
            return batch
        x, y = to_device(batch, self.device)
        return x, y

    def state_dict(self) -> dict[str, Any]:
        """Where the loader stands; saved with a checkpoint to resume mid-epoch."""
        return {
            "epoch": self.epoch,
            "batch_index": self.batch_index,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "num_items": len(self.dataset),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state``; dataset, batch size and seed must be the ones it came from."""
        for key, mine in (
            ("seed", self.seed),
            ("batch_size", self.batch_size),
            ("num_items", len(self.dataset)),
        ):
            if key in state and state[key] != mine:
                raise DataError(f"loader state has {key}={state[key]}, this loader has {mine}")
        _check_state_keys(state, ("epoch", "batch_index"), "loader")
        self.epoch = int(state["epoch"])
        self.batch_index = int(state["batch_index"])


class ShardSampler:
    """Random windows from pretokenized shards, for corpora too large to walk window by window.

    Batch ``k`` is a pure function of ``(seed, k)``: ``batch_size`` offsets drawn uniformly from all
    positions where a window of ``max_length + 1`` ids fits inside one shard (windows never straddle
    two shard files). The state is just ``k``, so resuming gives exactly the batches that would have
    come next.
    """

    def __init__(
        self,
        shards: Sequence[np.ndarray],
        batch_size: int,
        max_length: int,
        *,
        seed: int = 0,
        device: str | torch.device | None = None,
    ) -> None:
        if batch_size < 1 or max_length < 1:
            raise DataError(
                f"batch_size and max_length must be >= 1, got {batch_size}, {max_length}"
            )
        _check_seed(seed)
        self.shards = list(shards)
        self.batch_size = batch_size
        self.max_length = max_length
        self.seed = seed
        self.device = device
        self.step = 0
        self._valid = np.array([max(0, len(a) - max_length) for a in self.shards], dtype=np.int64)
        self._ends = np.cumsum(self._valid)
        if not len(self._ends) or self._ends[-1] == 0:
            longest = max((len(a) for a in self.shards), default=0)
            raise DataError(
                f"corpus has {longest} tokens in its longest shard, fewer than "
                f"max_length+1 = {max_length + 1} needed for one training window"
            )

    @classmethod
    def from_dir(
        cls, out_dir: str | Path, split: str, batch_size: int, max_length: int, **kwargs: Any
    ) -> ShardSampler:
        """A sampler over the shards that ``scratchllm data prepare`` wrote to ``out_dir``."""
        from scratchllm.data.shards import open_shards

        return cls(open_shards(out_dir, split), batch_size, max_length, **kwargs)

    @property
    def num_offsets(self) -> int:
        """Number of distinct windows the sampler can draw."""
        return int(self._ends[-1])

    def offsets(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(shard index, start offset) of each row of batch ``step``."""
        rng = np.random.default_rng([self.seed, step])
        draws = rng.integers(0, self.num_offsets, size=self.batch_size)
        shard = np.searchsorted(self._ends, draws, side="right")
        return shard, draws - (self._ends[shard] - self._valid[shard])

    def next_batch(self) -> Batch:
        shard, start = self.offsets(self.step)
        self.step += 1
        span = self.max_length + 1
        rows = np.stack([self.shards[s][o : o + span] for s, o in zip(shard, start)])
        chunk = torch.from_numpy(rows.astype(np.int64))
        batch = chunk[:, :-1], chunk[:, 1:]
        if self.device is None:
            return batch
        x, y = to_device(batch, self.device)
        return x, y

    def batches(self) -> Iterator[Batch]:
        """Batches forever."""
        while True:
            yield self.next_batch()

    __iter__ = batches

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "max_length": self.max_length,
            "num_offsets": self.num_offsets,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("seed", "batch_size", "max_length", "num_offsets"):
            if key in state and state[key] != getattr(self, key):
                raise DataError(
                    f"sampler state has {key}={state[key]}, this sampler has {getattr(self, key)}"
                )
        _check_state_keys(state, ("step",), "sampler")
        self.step = int(state["step"])
