"""Perplexity of a decoder on a text, scored with a sliding window (``scratchllm eval``).

A text longer than the model's context is scored in windows of ``context`` tokens that start
every ``stride`` tokens. Every token but the first is scored exactly once, by the first window
that holds it after the part already scored:

    ids:       t0 t1 t2 t3 t4 t5 t6 t7 t8 t9        context 6, stride 3
    window 0:  [t0 t1 t2 t3 t4 t5]                   scores t1..t5 (t0 has nothing before it)
    window 1:           [t3 t4 t5 t6 t7 t8]          scores t6..t8, seeing t3..t5 first
    window 2:                    [t6 t7 t8 t9]       scores t9

A window's last token is only input for the next one, so consecutive windows share at least one
token: ``stride`` is at most ``context - 1``. That largest stride is the fastest (a token sees on
average half a context before it); a smaller one lets each token after the first window see at
least ``context - stride`` tokens, which comes closer to what the model does with a full context,
at about ``context / stride`` times the cost. The default stride is half the context.

Loss is the mean negative log-likelihood in nats per scored token, perplexity ``exp(loss)``, and
bits per byte ``loss * tokens / (ln 2 * bytes)`` over the UTF-8 bytes of the scored tokens: a
figure that does not depend on the tokenizer, so that a character-level and a BPE model can be
compared on the same text.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

IGNORE = -100  # a target position that is not scored
BATCH_TOKENS = 8192  # default tokens per forward pass


@dataclass(frozen=True)
class Window:
    """ids[begin:end] go in; the targets ids[first + 1 : end] are scored (first >= begin)."""

    begin: int
    end: int
    first: int  # input position whose prediction is the first scored target


def iter_sliding_windows(n_tokens: int, context: int, stride: int) -> Iterator[Window]:
    """The windows that score tokens 1..n_tokens-1 once each (see the module docstring), one at
    a time: a long text has about ``n_tokens / stride`` of them."""
    _check_window(context, stride)
    scored_to = 1  # tokens before scored_to have been scored (or are token 0)
    begin = 0
    while scored_to < n_tokens:
        end = min(begin + context, n_tokens)
        yield Window(begin, end, scored_to - 1)
        scored_to = end
        begin += stride


def sliding_windows(n_tokens: int, context: int, stride: int) -> list[Window]:
    """``iter_sliding_windows`` as a list."""
    return list(iter_sliding_windows(n_tokens, context, stride))


def count_sliding_windows(n_tokens: int, context: int, stride: int) -> int:
    """``len(sliding_windows(n_tokens, context, stride))`` without making them: windows start
    every ``stride`` tokens until one reaches the last token."""
    _check_window(context, stride)
    if n_tokens < 2:
        return 0
    return max(0, -(-(n_tokens - context) // stride)) + 1


def _check_window(context: int, stride: int) -> None:
    if context < 2:
        raise ValueError(f"context must be at least 2 tokens, got {context}")
    if not 1 <= stride < context:  # windows overlap by at least the token that predicts the next
        raise ValueError(f"stride must be between 1 and context - 1 ({context - 1}), got {stride}")


def window_shape(
    model_context: int, context: int | None = None, stride: int | None = None
) -> tuple[int, int]:
    """(context, stride) with the defaults filled in: the model's context length and half of
    it; a context longer than the model's is refused, and so is a stride that does not fit."""
    context = model_context if context is None else context
    if context > model_context:
        raise ValueError(f"context {context} is longer than the model's {model_context}")
    stride = context // 2 if stride is None else stride
    _check_window(context, stride)
    return context, stride


def plan_windows(
    model_context: int, n_tokens: int, context: int | None = None, stride: int | None = None
) -> tuple[int, int, list[Window]]:
    """(context, stride, windows) with the defaults of ``window_shape`` filled in."""
    context, stride = window_shape(model_context, context, stride)
    return context, stride, sliding_windows(n_tokens, context, stride)


@dataclass(frozen=True)
class PerplexityReport:
    """What `perplexity` measured."""

    loss: float  # mean negative log-likelihood per scored token, in nats
    perplexity: float  # exp(loss)
    tokens: int  # tokens scored (all but the first)
    windows: int  # model inputs of at most `context` tokens
    context: int
    stride: int
    bits_per_byte: float | None  # None when the tokenizer cannot give each token's bytes

    def to_dict(self) -> dict[str, float | int | None]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _batches(windows: Iterable[Window], batch_size: int) -> Iterator[list[Window]]:
    """Windows of the same length together (all but the last have the full context)."""
    group: list[Window] = []
    for w in windows:
        if group and (len(group) == batch_size or w.end - w.begin != group[0].end - group[0].begin):
            yield group
            group = []
        group.append(w)
    if group:
        yield group


def _span(ids: Tensor | np.ndarray, begin: int, end: int) -> Tensor:
    """ids[begin:end] as an int64 tensor (from a tensor, array or memory map)."""
    part = ids[begin:end]
    if isinstance(part, Tensor):
        return part.long()
    return torch.from_numpy(np.asarray(part, dtype=np.int64))


@torch.no_grad()
def perplexity(
    model: nn.Module,
    ids: Tensor | np.ndarray | list[int],
    *,
    context: int | None = None,
    stride: int | None = None,
    batch_size: int | None = None,
    amp_dtype: torch.dtype | None = None,
    token_bytes: Callable[[list[int]], int] | None = None,
    progress: Callable[[int], None] | None = None,
) -> PerplexityReport:
    """Score ``ids`` (1-D) with ``model`` (a decoder: idx [B, T] -> logits, or a loss with
    ``targets``) in sliding windows; see the module docstring.

    ``context`` defaults to the model's context length, ``stride`` to half of ``context``,
    ``batch_size`` (windows per forward pass) to BATCH_TOKENS tokens' worth of windows.
    ``ids`` may be a memory map (pretokenized shards), or several as ``data.shards.JoinedShards``:
    only a window at a time is read.
    ``token_bytes(ids)`` gives the byte length of some scored ids' text, for bits per byte.
    ``progress(n)`` is called after each batch with the number of windows it held.
    """
    if isinstance(ids, list):
        ids = np.asarray(ids, dtype=np.int64)
    if ids.ndim != 1:
        raise ValueError(f"ids must be one sequence (1-D), got shape {tuple(ids.shape)}")
    n = len(ids)
    if n < 2:
        raise ValueError(f"perplexity needs at least 2 tokens to score, got {n}")
    context, stride = window_shape(model.cfg.context_length, context, stride)
    windows = iter_sliding_windows(n, context, stride)  # made as they are scored
    batch_size = max(1, BATCH_TOKENS // context) if batch_size is None else batch_size
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    amp = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else nullcontext()
    total, count, n_bytes = 0.0, 0, 0
    try:
        for group in _batches(windows, batch_size):
            x = torch.stack([_span(ids, w.begin, w.end) for w in group])  # [B, T]
            y = torch.full_like(x, IGNORE)
            for row, w in enumerate(group):  # position p predicts ids[p + 1], from `first` on
                y[row, w.first - w.begin : w.end - 1 - w.begin] = x[row, w.first - w.begin + 1 :]
                if token_bytes is not None:
                    n_bytes += token_bytes(x[row, w.first - w.begin + 1 :].tolist())
            x, y = x.to(device), y.to(device)
            with amp:
                mean = model(x, targets=y)  # mean over the scored positions
            scored = int((y != IGNORE).sum())
            total += float(mean) * scored
            count += scored
            if progress is not None:
                progress(len(group))
    finally:
        model.train(was_training)
    loss = total / count
    bpb = loss * count / (math.log(2) * n_bytes) if n_bytes else None
    return PerplexityReport(
        loss=loss,
        perplexity=math.exp(min(loss, 700.0)),
        tokens=count,
        windows=count_sliding_windows(n, context, stride),
        context=context,
        stride=stride,
        bits_per_byte=bpb,
    )


def encode_for_scoring(
    path: str | Path, tokenizer: Any, *, text_field: str = "text", column: str = "text"
) -> tuple[np.ndarray, bool]:
    """The ids ``scratchllm eval`` scores: the documents of ``path`` (``iter_text_sources``)
    joined by the tokenizer's end-of-text token, in the smallest dtype, and whether the ids give
    back the text's exact bytes (else there is no bits per byte). Text files are read a block
    and encoded a piece at a time, so only the ids are held whole."""
    from scratchllm.data.encode import checked_array, document_parts, encode_pieces, token_dtype
    from scratchllm.data.sources import iter_text_sources
    from scratchllm.errors import DataError

    dtype = token_dtype(tokenizer.vocab_size)
    specials = set(tokenizer.special_tokens.values())
    eot = [] if tokenizer.eot_id is None else [tokenizer.eot_id]
    docs = iter_text_sources(path, text_field=text_field, column=column, stream=True)
    arrays: list[np.ndarray] = []
    exact = True
    for i, doc in enumerate(docs):
        if i:
            arrays.append(checked_array(eot, tokenizer.vocab_size, dtype, doc.name, i))
        for piece, ids in encode_pieces(tokenizer, document_parts(doc)):
            arrays.append(checked_array(ids, tokenizer.vocab_size, dtype, doc.name, i))
            # special tokens (end-of-text) give no bytes
            text = tokenizer.decode_bytes([t for t in ids if t not in specials])
            exact = exact and text == piece.encode("utf-8")
    if not arrays:
        raise DataError(f"no text found in {path}: every file was empty or excluded")
    return np.concatenate(arrays), exact
