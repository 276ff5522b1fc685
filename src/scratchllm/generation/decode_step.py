"""One decode step (one token per slot -> next-token logits), eager or as a replayed CUDA graph.

Modes:
- ``eager``: plain PyTorch; the key axis is cut to the longest live sequence, so a short
  sequence does not pay for the whole cache. The CPU default.
- ``compile``: ``torch.compile`` of the step over the whole (static) cache.
- ``cuda_graph``: the compiled step captured once in a `torch.cuda.CUDAGraph` and replayed: one
  launch per token instead of hundreds. All inputs (tokens, lengths, cache) are tensors updated
  in place, so the graph stays valid. The CUDA default.
- ``auto``: ``cuda_graph`` on a CUDA device, ``eager`` elsewhere.

Compiling is needed under a graph because the model's input checks read values back to the host
(not allowed while capturing); `torch.compile` skips them. Asking for ``cuda_graph`` off CUDA, or
failing to capture, falls back to ``eager`` with a warning, never to an error.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn

from scratchllm.generation.cache import SlotKVCache

STEP_MODES = ("auto", "eager", "compile", "cuda_graph")
WARMUP_STEPS = 3  # runs before capture, so lazy initialisation happens outside the graph


def decode_logits(model: nn.Module, cache: SlotKVCache, tokens: Tensor) -> Tensor:
    """Logits [S, vocab] for tokens [S] written at each slot's column of ``cache``."""
    positions = cache.lengths[:, None]  # [S, 1]: position == column in a slot
    hidden = model.features(
        tokens[:, None],
        attention_mask=cache.attention_mask(),
        kv_cache=cache,
        position_ids=positions,
    )  # [S, 1, C]
    return model.lm_head(hidden[:, -1]).float()  # [S, V]


class DecodeStep:
    """Callable ``step(view_len) -> logits [S, V]``; ``mode`` says which path runs."""

    def __init__(self, model: nn.Module, cache: SlotKVCache, tokens: Tensor, mode: str) -> None:
        self.model, self.cache, self.tokens, self.mode = model, cache, tokens, mode
        self._fn: Callable[[], Tensor] = lambda: decode_logits(model, cache, tokens)
        self._graph: torch.cuda.CUDAGraph | None = None
        self._out: Tensor | None = None
        if mode in ("compile", "cuda_graph"):
            compiled = torch.compile(decode_logits, dynamic=False)
            self._fn = lambda: compiled(model, cache, tokens)

    def __call__(self, view_len: int, full: bool = False) -> Tensor:
        """Logits of the next step over the first ``view_len`` cache columns; ``full`` says every
        slot has filled all of them (eager mode then attends without a mask)."""
        if self.mode == "eager":
            self.cache.view_len = view_len
            self.cache.full = full
            return self._fn()
        self.cache.view_len = self.cache.max_len  # static shapes
        self.cache.full = False
        if self.mode == "compile":
            return self._fn()
        if self._graph is None:
            self._capture()
        if self.mode == "eager":  # capture failed and fell back
            return self(view_len)
        assert self._graph is not None and self._out is not None
        self._graph.replay()
        return self._out

    def _capture(self) -> None:
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(WARMUP_STEPS):  # writes only the columns the next step rewrites
                    self._fn()
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self._out = self._fn()
            self._graph = graph
        except Exception as exc:  # noqa: BLE001 - any failure means: run eager instead
            warnings.warn(f"CUDA graph capture failed ({exc}); decoding eagerly", stacklevel=3)
            self.mode = "eager"
            self._fn = lambda: decode_logits(self.model, self.cache, self.tokens)


def make_step(model: nn.Module, cache: SlotKVCache, tokens: Tensor, mode: str) -> DecodeStep:
    """The decode step for ``mode`` on the cache's device (see the module docstring)."""
    if mode not in STEP_MODES:
        raise ValueError(f"step_mode must be one of {STEP_MODES}, got {mode!r}")
    on_cuda = cache.device.type == "cuda"
    if mode == "auto":
        mode = "cuda_graph" if on_cuda else "eager"
    elif mode == "cuda_graph" and not on_cuda:
        warnings.warn("step_mode='cuda_graph' needs a CUDA device; decoding eagerly", stacklevel=3)
        mode = "eager"
    return DecodeStep(model, cache, tokens, mode)
