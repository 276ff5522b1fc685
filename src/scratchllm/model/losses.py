"""Cross-entropy of a linear head, two ways: the reference and a fused CPU path.

The language-model loss is `cross_entropy(hidden @ weight.T, targets)`. Written that way
(`linear_cross_entropy_reference`), autograd keeps the [N, vocab] logits, runs log-softmax over
them, then the backward of each step in turn: several passes over a tensor of N x 50,257 floats.

`LinearCrossEntropy` computes the same value and gradients in one go, as Liger-Kernel and the
"cut cross-entropy" papers do on GPUs. In forward it
  1. writes the logits into a buffer whose rows are padded to a multiple of 64 floats (an odd row
     stride such as 50,257 makes the CPU matmul ~30% slower),
  2. turns them, a few rows at a time while they sit in cache, into softmax * (1 / count),
  3. subtracts 1 / count at each target, which gives d loss / d logits,
  4. and multiplies that by the weight and the hidden states: d loss / d hidden and
     d loss / d weight.
backward only scales the two saved gradients by the incoming one. Same mathematics, fewer passes
over memory. The logits buffer is kept between calls (`release_scratch` frees it). It is used on CPU in float32/float64 (`linear_cross_entropy(fused=None)`); elsewhere
the reference runs, where a GPU and `torch.compile` already fuse the softmax.
"""

from __future__ import annotations

import threading

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = -100
ROW_BLOCK = 32  # rows of logits turned into gradients at a time (32 x 50,304 floats = 6.4 MB)
ROW_ALIGN = 64  # logits rows padded to a multiple of this many elements


def logits_cross_entropy(
    logits: Tensor,
    targets: Tensor,
    ignore_index: int = IGNORE_INDEX,
    *,
    label_smoothing: float = 0.0,
) -> Tensor:
    """Mean cross-entropy of logits [..., V] against targets [...] (`ignore_index` left out),
    with the softmax in float32 for bf16/fp16 logits; `label_smoothing` as in F.cross_entropy."""
    logits = logits.flatten(0, -2)  # [N, V]
    if logits.dtype != torch.float64:
        logits = logits.float()
    return F.cross_entropy(
        logits, targets.flatten(), ignore_index=ignore_index, label_smoothing=label_smoothing
    )


def linear_cross_entropy_reference(
    hidden: Tensor, weight: Tensor, targets: Tensor, ignore_index: int = IGNORE_INDEX
) -> Tensor:
    """Mean cross-entropy of `hidden @ weight.T` against `targets` (positions equal to
    `ignore_index` left out): hidden [..., C], weight [V, C], targets [...] -> scalar."""
    return logits_cross_entropy(F.linear(hidden, weight), targets, ignore_index)


_local = threading.local()


def _scratch(numel: int, like: Tensor) -> Tensor:
    """A reused scratch buffer of at least `numel` elements (one per thread, dtype and device).

    The logits of a GPT-2 step are hundreds of MB; a fresh buffer of that size costs ~0.1 s a step
    in page faults alone, because the C allocator returns such blocks to the OS when freed.
    """
    buffers = _local.__dict__.setdefault("buffers", {})
    key = (like.dtype, like.device)
    buf = buffers.get(key)
    if buf is None or buf.numel() < numel:
        buffers.pop(key, None)  # free the old one first
        buf = buffers[key] = like.new_empty(numel)
    return buf[:numel]


def release_scratch() -> None:
    """Free this thread's scratch buffers (they are otherwise kept for the next call)."""
    _local.__dict__.pop("buffers", None)


class LinearCrossEntropy(torch.autograd.Function):
    """Fused `cross_entropy(hidden @ weight.T, targets)`: hidden [N, C], weight [V, C],
    targets [N] -> mean loss over the targets that are not `ignore_index`."""

    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, targets: Tensor, ignore_index: int) -> Tensor:
        n, vocab = hidden.shape[0], weight.shape[0]
        padded = -(-vocab // ROW_ALIGN) * ROW_ALIGN
        logits = _scratch(n * padded, hidden).view(n, padded)[:, :vocab]  # [N, V], stride `padded`
        torch.mm(hidden, weight.t(), out=logits)

        valid = targets != ignore_index  # [N]
        safe = torch.where(valid, targets, 0)  # [N] an index that exists, for ignored rows too
        if bool(((safe < 0) | (safe >= vocab)).any()):
            bad = int(safe[(safe < 0) | (safe >= vocab)][0])
            raise IndexError(f"target {bad} is outside the vocabulary 0..{vocab - 1}")
        rows = torch.arange(n, device=hidden.device)
        target_logit = logits[rows, safe]  # [N] (a copy, taken before the in-place steps)
        count = valid.sum()
        # d loss / d logits = (softmax - one_hot) * scale, with scale 1/count on counted rows
        scale = valid.to(logits.dtype) / count.clamp(min=1)  # [N]
        need_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]

        lse = torch.empty(n, dtype=logits.dtype, device=logits.device)  # [N] log-sum-exp
        for start in range(0, n, ROW_BLOCK):
            block = logits[start : start + ROW_BLOCK]  # [b, V] a view: changed in place
            top = block.amax(dim=1, keepdim=True)  # [b, 1]
            block.sub_(top).exp_()  # exp(logit - max), in (0, 1]
            total = block.sum(dim=1, keepdim=True)  # [b, 1]
            lse[start : start + ROW_BLOCK] = (top + total.log()).squeeze(1)
            if need_grad:
                block.mul_(scale[start : start + ROW_BLOCK, None] / total)  # softmax * scale
        loss = ((lse - target_logit) * valid).sum() / count  # nan when nothing counts, as F's

        grad_hidden = grad_weight = None
        if need_grad:
            logits[rows, safe] -= scale  # ignored rows have scale 0: unchanged
            if ctx.needs_input_grad[0]:
                grad_hidden = logits @ weight  # [N, V] @ [V, C] -> [N, C]
            if ctx.needs_input_grad[1]:
                grad_weight = logits.t() @ hidden  # [V, N] @ [N, C] -> [V, C]
        ctx.save_for_backward(grad_hidden, grad_weight)
        return loss

    @staticmethod
    def backward(ctx, grad_loss: Tensor):
        grad_hidden, grad_weight = ctx.saved_tensors
        if not bool(grad_loss == 1):  # e.g. 1 / accumulation steps
            grad_hidden = None if grad_hidden is None else grad_hidden * grad_loss
            grad_weight = None if grad_weight is None else grad_weight * grad_loss
        return grad_hidden, grad_weight, None, None


def fused_supported(hidden: Tensor, weight: Tensor) -> bool:
    """The fused path runs on CPU, in float32 or float64, outside autocast."""
    return (
        hidden.device.type == "cpu"
        and weight.device.type == "cpu"
        and hidden.dtype in (torch.float32, torch.float64)
        and weight.dtype == hidden.dtype
        and not torch.is_autocast_enabled("cpu")
    )


def linear_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    *,
    ignore_index: int = IGNORE_INDEX,
    fused: bool | None = None,
) -> Tensor:
    """Mean cross-entropy of the logits `hidden @ weight.T` against `targets`.

    hidden [..., C], weight [V, C], targets [...] (same leading shape; `ignore_index` marks
    positions left out) -> scalar. `fused=None` picks the fused path where it is supported
    (`fused_supported`), True demands it, False runs the reference.
    """
    if hidden.shape[:-1] != targets.shape:
        raise ValueError(
            f"targets shape {tuple(targets.shape)} does not match hidden {tuple(hidden.shape)}"
        )
    if fused is None:
        fused = fused_supported(hidden, weight)
    if not fused:
        return linear_cross_entropy_reference(hidden, weight, targets, ignore_index)
    if not fused_supported(hidden, weight):
        raise ValueError(
            "the fused cross-entropy runs on CPU in float32/float64 outside autocast; got "
            f"{hidden.dtype} on {hidden.device}"
        )
    flat = hidden.reshape(-1, hidden.shape[-1])  # [N, C]
    return LinearCrossEntropy.apply(flat, weight, targets.reshape(-1), ignore_index)
