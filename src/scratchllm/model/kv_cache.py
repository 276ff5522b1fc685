"""`KVCache`: the keys and values of past positions, kept outside the model.

One preallocated tensor pair of shape (n_layer, B, n_kv_head, max_len, head_dim) plus the number
of positions filled. During a forward pass every attention layer writes its new keys/values at
``length .. length+T`` and reads ``0 .. length+T``; the model then calls `advance(T)` once.
Positions of the new tokens start at `length`, so learned and rotary positions both work.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scratchllm.model.config import ModelConfig


class KVCache:
    def __init__(
        self,
        n_layer: int,
        batch_size: int,
        n_kv_head: int,
        max_len: int,
        head_dim: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        shape = (n_layer, batch_size, n_kv_head, max_len, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0  # positions filled so far (same for every layer after a forward pass)

    @classmethod
    def for_config(
        cls,
        cfg: ModelConfig,
        batch_size: int,
        max_len: int | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> KVCache:
        """A cache sized for `cfg` (max_len defaults to the context length)."""
        max_len = cfg.context_length if max_len is None else max_len
        if not 0 < max_len <= cfg.context_length:
            raise ValueError(f"max_len={max_len} must be in 1..{cfg.context_length}")
        return cls(
            cfg.n_layer, batch_size, cfg.kv_heads, max_len, cfg.head_dim, device=device, dtype=dtype
        )

    @property
    def max_len(self) -> int:
        return self.k.shape[3]

    @property
    def batch_size(self) -> int:
        return self.k.shape[1]

    def check_room(self, n_new: int, batch_size: int) -> None:
        """Raise a clear error before a forward pass that would not fit."""
        if batch_size != self.batch_size:
            raise ValueError(f"batch size {batch_size} != KV cache batch size {self.batch_size}")
        if self.length + n_new > self.max_len:
            raise ValueError(
                f"KV cache full: {self.length} cached + {n_new} new > max_len {self.max_len}"
            )

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store k, v [B, n_kv_head, T, head_dim] of `layer`; return all keys/values so far."""
        end = self.length + k.shape[2]
        assert end <= self.max_len, "call check_room before update"
        if k.dtype != self.k.dtype and not torch.is_autocast_enabled(k.device.type):
            # (under autocast a float32 cache is fine: attention casts the keys back down)
            raise ValueError(
                f"the keys are {k.dtype} but the KV cache holds {self.k.dtype}: make the cache "
                f"with dtype={k.dtype}"
            )
        self.k[layer, :, :, self.length : end] = k
        self.v[layer, :, :, self.length : end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]  # [B, H_kv, end, D]

    def advance(self, n_new: int) -> None:
        """Mark `n_new` more positions as filled (called once per forward, after all layers)."""
        self.length += n_new

    def crop(self, length: int) -> None:
        """Forget every position from `length` on (e.g. to roll back rejected tokens)."""
        if not 0 <= length <= self.length:
            raise ValueError(f"crop length {length} must be in 0..{self.length}")
        self.length = length

    def reset(self) -> None:
        self.length = 0
