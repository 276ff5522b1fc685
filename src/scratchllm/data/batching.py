"""Batches of variable-length documents: padding with a mask, or packing without cross-talk.

Padding (``pad_batch``): one document per row, right-padded with ``pad_id``; ``attention_mask``
``[B, T]`` is True for real tokens (the model's padding-mask convention) and padded targets are
``IGNORE_INDEX``.

Packing (``pack_documents``): documents laid end to end and cut into rows of ``max_length + 1``
ids, so no position is wasted on padding. A row may hold pieces of several documents; to keep them
from attending to each other, a ``PackedBatch`` carries ``segment_ids`` (which document piece each
position belongs to) and ``position_ids`` restarting at 0 at every piece, and
``block_causal_mask(segment_ids)`` gives the ``[B, 1, T, T]`` boolean mask (True = may attend) that
``torch.nn.functional.scaled_dot_product_attention`` takes as ``attn_mask``. A target that lies in
another piece than its input (the first token of the next document) is ``IGNORE_INDEX``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from scratchllm.data.windows import IGNORE_INDEX
from scratchllm.errors import DataError


@dataclass(frozen=True)
class PaddedBatch:
    """Right-padded next-token batch: all tensors ``[B, T]``."""

    input_ids: torch.Tensor  # long; pad_id after each row's end
    target_ids: torch.Tensor  # long; IGNORE_INDEX after each row's end
    attention_mask: torch.Tensor  # bool; True at real input tokens


@dataclass(frozen=True)
class PackedBatch:
    """Packed next-token batch: all tensors ``[B, T]``."""

    input_ids: torch.Tensor  # long
    target_ids: torch.Tensor  # long; IGNORE_INDEX where the target starts another document
    segment_ids: torch.Tensor  # long; equal within one document piece, -1 on padding
    position_ids: torch.Tensor  # long; 0, 1, ... from the start of each piece
    attention_mask: torch.Tensor  # bool; True at real (non-padding) input tokens

    def block_causal_mask(self) -> torch.Tensor:
        """``[B, 1, T, T]`` bool: query i may attend to key j iff j <= i in the same piece."""
        return block_causal_mask(self.segment_ids)


def pad_batch(
    docs: Sequence[Sequence[int] | np.ndarray],
    pad_id: int,
    *,
    max_length: int | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> PaddedBatch:
    """One document per row: inputs ``doc[:-1]``, targets ``doc[1:]``, right-padded.

    ``T`` is the longest document minus one, or ``max_length`` (longer documents are truncated).
    """
    if not docs:
        raise DataError("pad_batch needs at least one document")
    lengths = [max(len(d) - 1, 0) for d in docs]
    width = max_length if max_length is not None else max(lengths)
    if width < 1:
        raise DataError("every document has fewer than 2 tokens: nothing to predict")
    x = torch.full((len(docs), width), pad_id, dtype=torch.long)
    y = torch.full((len(docs), width), ignore_index, dtype=torch.long)
    for row, doc in enumerate(docs):
        ids = torch.as_tensor(np.asarray(doc, dtype=np.int64)[: width + 1])
        n = max(len(ids) - 1, 0)
        x[row, :n] = ids[:-1]
        y[row, :n] = ids[1:]
    mask = torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]
    return PaddedBatch(x, y, mask)


def pack_documents(
    docs: Sequence[Sequence[int] | np.ndarray],
    max_length: int,
    *,
    pad_id: int,
    ignore_index: int = IGNORE_INDEX,
) -> PackedBatch:
    """Concatenate ``docs`` (each already ending in its end-of-text id) and cut rows of
    ``max_length + 1`` ids: row ``r`` holds inputs ``ids[r*T : r*T + T]`` and targets shifted by
    one, so every id is a target exactly once; the last row is padded."""
    if max_length < 1:
        raise DataError(f"max_length must be at least 1, got {max_length}")
    arrays = [np.asarray(d, dtype=np.int64) for d in docs]
    ids = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)
    if len(ids) < 2:
        raise DataError(f"{len(ids)} token(s) in all documents: nothing to predict")
    doc_of = np.repeat(np.arange(len(arrays)), [len(a) for a in arrays])
    rows = -(-(len(ids) - 1) // max_length)
    span = rows * max_length + 1
    padded = np.full(span, pad_id, dtype=np.int64)
    padded[: len(ids)] = ids
    seg = np.full(span, -1, dtype=np.int64)
    seg[: len(ids)] = doc_of
    index = np.arange(rows)[:, None] * max_length + np.arange(max_length + 1)  # [B, T+1]
    x, y = padded[index[:, :-1]], padded[index[:, 1:]]
    seg_x, seg_y = seg[index[:, :-1]], seg[index[:, 1:]]
    y = np.where((seg_x == seg_y) & (seg_y >= 0), y, ignore_index)
    return PackedBatch(
        input_ids=torch.from_numpy(x),
        target_ids=torch.from_numpy(y),
        segment_ids=torch.from_numpy(seg_x),
        position_ids=torch.from_numpy(positions_from_segments(seg_x)),
        attention_mask=torch.from_numpy(seg_x >= 0),
    )


def positions_from_segments(segment_ids: np.ndarray) -> np.ndarray:
    """Per row, 0, 1, 2, ... restarting wherever the segment id changes. ``[B, T]`` -> ``[B, T]``."""
    seg = np.asarray(segment_ids)
    b, t = seg.shape
    starts = np.ones((b, t), dtype=bool)
    starts[:, 1:] = seg[:, 1:] != seg[:, :-1]
    idx = np.broadcast_to(np.arange(t), (b, t))
    last_start = np.maximum.accumulate(np.where(starts, idx, 0), axis=1)
    return (idx - last_start).astype(np.int64)


def block_causal_mask(segment_ids: torch.Tensor) -> torch.Tensor:
    """``[B, T]`` segment ids -> ``[B, 1, T, T]`` bool mask: causal and within one segment.

    Padding positions (segment -1) attend to earlier padding only, so no attention row is empty
    (an all-False row would give NaN in softmax); their outputs are ignored by the loss.
    """
    t = segment_ids.shape[-1]
    same = segment_ids[:, :, None] == segment_ids[:, None, :]  # [B, T, T]
    causal = torch.ones(t, t, dtype=torch.bool, device=segment_ids.device).tril()
    return (same & causal)[:, None]
