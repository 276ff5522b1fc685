"""Sliding windows over one token sequence: the (input, target) pairs of next-token prediction.

Window ``i`` starts at token ``s_i = i * stride``; its input is ``ids[s_i : s_i + max_length]`` and
its target is the same span shifted by one, ``ids[s_i + 1 : s_i + max_length + 1]``. With
``n = len(ids)`` the number of *full* windows is

    F = (n - max_length - 1) // stride + 1      when n >= max_length + 1, else 0

which equals ``ceil((n - max_length) / stride)``: the starts ``0, stride, ...`` with
``s + max_length + 1 <= n``. With ``last="drop"`` that is the length of the dataset. With
``last="pad"`` one more, shorter window is added when the last token ``ids[n - 1]`` is not yet a
target of any full window and a window can still start before it (``F * stride < n - 1``); its
inputs are padded with ``pad_id`` and its targets with ``ignore_index`` (which the cross-entropy
loss skips). A sequence shorter than one window is an error with ``last="drop"`` and gives one
padded window with ``last="pad"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from scratchllm.errors import DataError

LastWindow = Literal["drop", "pad"]

# Targets at padded positions; torch.nn.functional.cross_entropy skips this index by default.
IGNORE_INDEX = -100


def num_full_windows(n_tokens: int, max_length: int, stride: int) -> int:
    """Windows that fit entirely: starts ``s = k * stride`` with ``s + max_length < n``."""
    _check_shape(max_length, stride)
    if n_tokens < max_length + 1:
        return 0
    return (n_tokens - max_length - 1) // stride + 1


def num_windows(n_tokens: int, max_length: int, stride: int, last: LastWindow = "drop") -> int:
    """How many windows ``WindowDataset`` gives for ``n_tokens`` tokens (module docstring)."""
    full = num_full_windows(n_tokens, max_length, stride)
    if last == "drop":
        return full
    if last != "pad":
        raise DataError(f"last must be 'drop' or 'pad', got {last!r}")
    if full == 0:
        return 1 if n_tokens >= 2 else 0
    return full + int(_tail_uncovered(n_tokens, max_length, stride, full))


def _tail_uncovered(n_tokens: int, max_length: int, stride: int, full: int) -> bool:
    last_target = (full - 1) * stride + max_length  # index of the last token used as a target
    next_start = full * stride
    return last_target < n_tokens - 1 and next_start < n_tokens - 1


def _check_shape(max_length: int, stride: int) -> None:
    if max_length < 1:
        raise DataError(f"max_length must be at least 1, got {max_length}")
    if stride < 1:
        raise DataError(f"stride must be at least 1, got {stride}")


def as_token_array(ids: Sequence[int] | np.ndarray | torch.Tensor) -> np.ndarray:
    """A 1-D integer numpy view of ``ids``; numpy arrays and memmaps are not copied."""
    if isinstance(ids, torch.Tensor):
        array = ids.detach().cpu().numpy()
    elif isinstance(ids, np.ndarray):
        array = ids
    else:
        array = np.asarray(ids, dtype=np.int64)
    if array.ndim != 1:
        raise DataError(f"token ids must be a 1-D sequence, got shape {tuple(array.shape)}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise DataError(f"token ids must be integers, got dtype {array.dtype}")
    return array


class WindowDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Fixed-length (input_ids, target_ids) windows over one token sequence; targets shifted by one.

    ``ids`` is kept as given when it is a numpy array or memmap (a window copies only its own
    ``max_length + 1`` tokens), so a corpus larger than memory works through ``np.memmap``.
    """

    def __init__(
        self,
        ids: Sequence[int] | np.ndarray | torch.Tensor,
        max_length: int,
        stride: int,
        *,
        last: LastWindow = "drop",
        pad_id: int | None = None,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        self.ids = as_token_array(ids)
        self.max_length = max_length
        self.stride = stride
        self.last = last
        self.ignore_index = ignore_index
        if last == "pad" and pad_id is None:
            raise DataError("last='pad' needs a pad_id for the padded input positions")
        self.pad_id = pad_id
        n = len(self.ids)
        self._length = num_windows(n, max_length, stride, last)
        self._full = num_full_windows(n, max_length, stride)
        if self._length == 0:
            raise DataError(
                f"corpus has {n} tokens, fewer than max_length+1 = {max_length + 1} "
                "needed for one training window"
            )

    def __len__(self) -> int:
        return self._length

    def start(self, index: int) -> int:
        """Token offset where window ``index`` begins."""
        return self._normalize(index) * self.stride

    def _normalize(self, index: int) -> int:
        if index < 0:
            index += self._length
        if not 0 <= index < self._length:
            raise IndexError(f"window {index} out of range for {self._length} windows")
        return index

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = self._normalize(index)
        s = index * self.stride
        if index < self._full:
            chunk = torch.from_numpy(np.asarray(self.ids[s : s + self.max_length + 1], np.int64))
            return chunk[:-1], chunk[1:]
        return self._padded(s)

    def _padded(self, s: int) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.pad_id is not None
        chunk = np.asarray(self.ids[s : s + self.max_length + 1], np.int64)
        real = len(chunk) - 1  # number of (input, target) pairs in this partial window
        x = torch.full((self.max_length,), self.pad_id, dtype=torch.long)
        y = torch.full((self.max_length,), self.ignore_index, dtype=torch.long)
        x[:real] = torch.from_numpy(chunk[:-1])
        y[:real] = torch.from_numpy(chunk[1:])
        return x, y

    def get_batch(self, indices: Sequence[int] | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Windows ``indices`` stacked as ``[B, max_length]`` tensors, in one indexing op."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= self._full):
            return _stack([self[int(i)] for i in idx])
        offsets = idx[:, None] * self.stride + np.arange(self.max_length + 1)  # [B, T+1]
        chunk = torch.from_numpy(np.asarray(self.ids[offsets], dtype=np.int64))
        return chunk[:, :-1], chunk[:, 1:]


def _stack(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.stack([x for x, _ in pairs]), torch.stack([y for _, y in pairs])
