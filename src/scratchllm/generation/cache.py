"""`SlotKVCache`: a KV cache where every batch row (slot) has its own length.

The model's `KVCache` keeps one length for the whole batch, which suits a batch that starts and
ends together. A server wants more: sequences join and leave between decode steps (continuous
batching), and a GPU wants every step to have the same tensor shapes (CUDA graphs). So here each
decode step feeds one token per slot; slot b writes its key/value at column ``lengths[b]`` (a
tensor, so nothing is baked into a graph) and attends to every column, with an attention mask
that hides the columns it has not filled.

It is passed to `GPTModel.forward` in place of a `KVCache` and follows the same protocol:
``length`` (positions before the new token, as the model sees the key axis), ``check_room``,
``update`` and ``advance``. Its key axis is the first ``view_len`` columns, so the model's mask
check (``[B, length + 1]``) holds with ``length = view_len - 1``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scratchllm.model import ModelConfig


class SlotKVCache:
    def __init__(
        self,
        cfg: ModelConfig,
        slots: int,
        max_len: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if not 0 < max_len <= cfg.context_length:
            raise ValueError(f"max_len={max_len} must be in 1..{cfg.context_length}")
        shape = (slots, cfg.kv_heads, max_len, cfg.head_dim)
        # One tensor per layer, not one [n_layer, ...] tensor: a compiled step then writes each
        # layer's new column in place. Written through a view (k[layer] of one big tensor), the
        # compiler rebuilt the whole cache every step (docs/benchmarks.md, "Generation").
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layer)]
        # Columns filled per slot; the next token of slot b goes to column lengths[b].
        self.lengths = torch.zeros(slots, dtype=torch.long, device=device)
        self._rows = torch.arange(slots, device=device)  # slot b writes row b, column lengths[b]
        self.view_len = max_len  # columns the next decode step attends over (<= max_len)
        # Set by an eager decode step that knows every slot fills all `view_len` columns: the
        # mask then hides nothing and is left out (attention without a mask is much faster).
        self.full = False

    @property
    def max_len(self) -> int:
        return self.k[0].shape[2]

    @property
    def slots(self) -> int:
        return self.k[0].shape[0]

    @property
    def dtype(self) -> torch.dtype:
        return self.k[0].dtype

    @property
    def device(self) -> torch.device:
        return self.k[0].device

    # --- the protocol GPTModel uses during a forward pass ---------------------------------

    @property
    def length(self) -> int:
        return self.view_len - 1

    def check_room(self, n_new: int, batch_size: int) -> None:
        if n_new != 1 or batch_size != self.slots:
            raise ValueError(
                f"a SlotKVCache decodes one token per slot: got [{batch_size}, {n_new}], "
                f"expected [{self.slots}, 1]"
            )

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write k, v [S, H_kv, 1, D] at each slot's column; return the viewed columns."""
        self.k[layer][self._rows, :, self.lengths] = k[:, :, 0]  # [S, H_kv, D] (index_put_)
        self.v[layer][self._rows, :, self.lengths] = v[:, :, 0]
        end = self.view_len
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]  # [S, H_kv, end, D]

    def advance(self, n_new: int) -> None:
        """Lengths move in `DecodeBatch`, after it knows which slots are active."""

    # --- used by the decoder ---------------------------------------------------------------

    def attention_mask(self) -> Tensor | None:
        """[S, view_len]: True for filled columns and the column the new token writes (None
        when ``full``: every slot attends to every viewed column)."""
        if self.full:
            return None
        cols = torch.arange(self.view_len, device=self.lengths.device)
        return cols[None, :] <= self.lengths[:, None]

    def load(self, slot: int, k: Tensor, v: Tensor) -> None:
        """Fill slot from prefilled keys/values [n_layer, H_kv, T, D] at columns 0..T-1."""
        t = k.shape[2]
        if t > self.max_len:
            raise ValueError(f"{t} prefilled positions do not fit max_len {self.max_len}")
        for layer in range(len(self.k)):
            self.k[layer][slot, :, :t] = k[layer]
            self.v[layer][slot, :, :t] = v[layer]
        self.lengths[slot] = t
