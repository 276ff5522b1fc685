"""Deterministic, resumable batch loaders.

``EpochLoader`` visits every window of a dataset once per epoch in a seeded random order. Its whole
state is ``(epoch, batch_index)``: the order of epoch ``e`` is a pure function of ``(seed, e)``, so
``load_state_dict`` continues with exactly the batches that would have come next, without replaying.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import numpy as np
import torch

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
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.device = device
        self.epoch = 0
        self.batch_index = 0  # batches of the current epoch already handed out
        if len(self) == 0:
            raise ValueError(
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
                raise ValueError(f"loader state has {key}={state[key]}, this loader has {mine}")
        self.epoch = int(state["epoch"])
        self.batch_index = int(state["batch_index"])
