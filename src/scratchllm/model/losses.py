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
over memory. It is used on CPU in float32/float64 (`linear_cross_entropy(fused=None)`); elsewhere
the reference runs, where a GPU and `torch.compile` already fuse the softmax.

Memory. Tensors over 32 MB (the logits, and at GPT-2's size every [vocab, C] gradient) come
straight from the operating system and go back to it when freed, so each fresh one is paid again
in page faults (~0.1 s a step at gpt2-small). So:
  * the logits buffer is kept between calls (`release_scratch` frees it);
  * the weight's gradient is written into a kept buffer too, reused only while nothing else holds
    its memory (after `zero_grad(set_to_none=True)` nothing does): autograd takes it as `.grad`
    without copying;
  * with a tied embedding (`TiedGradLink`), the token lookup's backward adds its few rows into
    that gradient in place, instead of scattering them into a fresh [vocab, C] tensor of zeros
    that autograd would then add to it.
"""

from __future__ import annotations

import threading

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = -100
ROW_BLOCK = 32  # rows of logits turned into gradients at a time (32 x 50,304 floats = 6.4 MB)
ROW_ALIGN = 64  # logits rows padded to a multiple of this many elements
# logit - max is raised to at least this before exp: e^-60 (8.8e-27) changes a row's sum (>= 1) by
# at most vocab * 8.8e-27, far below float32's resolution, while exp of anything below about -87
# is a subnormal float, which the CPU computes and multiplies many times slower (a model sure of
# its predictions made the loss ~3x slower)
EXP_FLOOR = -60.0


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


_storage_use_count = getattr(torch._C, "_storage_Use_Count", None)  # absent: never reuse
REUSE_MEMORY = True  # False: a fresh weight gradient and no TiedGradLink (bench/train.py A/B)


def _storage_refs(t: Tensor) -> int:
    """How many tensors share t's memory (+1 for the storage object made to ask)."""
    return _storage_use_count(t.untyped_storage()._cdata)


def _reusable_grad(shape: torch.Size, like: Tensor) -> Tensor:
    """A kept [shape] buffer for a gradient that autograd will take as `.grad`.

    It is reused only when this module holds the only reference to its memory, i.e. the `.grad`
    made from it last time has been dropped (`zero_grad(set_to_none=True)`); otherwise (a
    gradient kept for accumulation, or by the caller) a new buffer replaces it.
    """
    if _storage_use_count is None or not REUSE_MEMORY:
        return like.new_empty(shape)
    grads = _local.__dict__.setdefault("grads", {})
    key = (like.dtype, like.device, tuple(shape))
    kept = grads.get(key)
    if kept is not None and _storage_refs(kept[0]) == kept[1]:  # nobody else holds it
        return kept[0]
    buf = like.new_empty(shape)
    grads[key] = (buf, _storage_refs(buf))  # the count when only this module holds it
    return buf


def release_scratch() -> None:
    """Free this thread's kept buffers (logits and gradients; otherwise kept for the next call)."""
    _local.__dict__.pop("buffers", None)
    _local.__dict__.pop("grads", None)


class TiedGradLink:
    """Hands the output head's weight gradient to the token lookup of the same forward pass.

    With tied embeddings the table gets two gradients: the head's (dense, [V, C]) and the
    lookup's (a few rows). Autograd would scatter the rows into a fresh [V, C] tensor of zeros
    and add the two. `linked_embedding` instead adds the rows into the head's gradient in place
    (the loss's backward always runs before the lookup's, which sits upstream of it). One link
    serves one forward pass.
    """

    def __init__(self) -> None:
        self.head_grad: Tensor | None = None


class LinkedEmbedding(torch.autograd.Function):
    """`F.embedding(idx, weight)` whose weight gradient joins the head's through a TiedGradLink."""

    @staticmethod
    def forward(ctx, weight: Tensor, idx: Tensor, link: TiedGradLink) -> Tensor:
        ctx.link, ctx.num_weights = link, weight.shape[0]
        ctx.save_for_backward(idx)
        return F.embedding(idx, weight)  # [..., C]

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        if not ctx.needs_input_grad[0]:
            return None, None, None
        (idx,) = ctx.saved_tensors
        rows = grad_out.reshape(-1, grad_out.shape[-1])  # [N, C]
        head_grad, ctx.link.head_grad = ctx.link.head_grad, None
        if head_grad is not None:  # the head's gradient, not yet accumulated: add in place
            head_grad.index_add_(0, idx.reshape(-1), rows)
            return None, None, None
        grad = rows.new_zeros(ctx.num_weights, rows.shape[1])  # no head gradient: plain path
        return grad.index_add_(0, idx.reshape(-1), rows), None, None


def linked_embedding(weight: Tensor, idx: Tensor, link: TiedGradLink) -> Tensor:
    """Token lookup weight[idx] whose gradient is added into the head's (`TiedGradLink`)."""
    return LinkedEmbedding.apply(weight, idx, link)


def _fused_loss_and_grads(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    ignore_index: int,
    need_hidden: bool,
    need_weight: bool,
    weight_grad_out: Tensor | None = None,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """The loss of `LinearCrossEntropy` and, as asked, its gradients for hidden and weight
    (the weight's written into `weight_grad_out` when given)."""
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
    need_grad = need_hidden or need_weight

    lse = torch.empty(n, dtype=logits.dtype, device=logits.device)  # [N] log-sum-exp
    for start in range(0, n, ROW_BLOCK):
        block = logits[start : start + ROW_BLOCK]  # [b, V] a view: changed in place
        top = block.amax(dim=1, keepdim=True)  # [b, 1]
        block.sub_(top).clamp_(min=EXP_FLOOR).exp_()  # exp(logit - max), in [e^-60, 1]
        total = block.sum(dim=1, keepdim=True)  # [b, 1]
        lse[start : start + ROW_BLOCK] = (top + total.log()).squeeze(1)
        if need_grad:
            block.mul_(scale[start : start + ROW_BLOCK, None] / total)  # softmax * scale
    loss = ((lse - target_logit) * valid).sum() / count  # nan when nothing counts, as F's

    grad_hidden = grad_weight = None
    if need_grad:
        logits[rows, safe] -= scale  # ignored rows have scale 0: unchanged
        if need_hidden:
            grad_hidden = logits @ weight  # [N, V] @ [V, C] -> [N, C]
        if need_weight:  # [V, N] @ [N, C] -> [V, C]
            if weight_grad_out is None:
                grad_weight = logits.t() @ hidden
            else:
                grad_weight = torch.mm(logits.t(), hidden, out=weight_grad_out)
    return loss, grad_hidden, grad_weight


class LinearCrossEntropy(torch.autograd.Function):
    """Fused `cross_entropy(hidden @ weight.T, targets)`: hidden [N, C], weight [V, C],
    targets [N] -> mean loss over the targets that are not `ignore_index`.

    The gradients computed in forward are handed out once, by the first backward, which may
    then change them in place (scaling, the tied lookup's rows). A later backward through a
    retained graph (`retain_graph=True`, gradcheck) computes them again from the saved inputs.
    """

    @staticmethod
    def forward(
        ctx,
        hidden: Tensor,
        weight: Tensor,
        targets: Tensor,
        ignore_index: int,
        link: TiedGradLink | None = None,
    ) -> Tensor:
        need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        # the weight's gradient goes into a kept buffer; `.detach()` makes a new handle to it,
        # which autograd can take as `.grad` without copying
        out = _reusable_grad(weight.shape, weight) if need_weight else None
        loss, grad_hidden, grad_weight = _fused_loss_and_grads(
            hidden, weight, targets, ignore_index, need_hidden, need_weight, out
        )
        ctx.grads = (grad_hidden, None if grad_weight is None else grad_weight.detach())
        ctx.save_for_backward(hidden, weight, targets)  # only for a second backward
        ctx.ignore_index, ctx.link = ignore_index, link
        return loss

    @staticmethod
    def backward(ctx, grad_loss: Tensor):
        grads, ctx.grads = ctx.grads, None
        if grads is None:  # a retained graph's second backward: compute them again
            hidden, weight, targets = ctx.saved_tensors
            _, grad_hidden, grad_weight = _fused_loss_and_grads(
                hidden, weight, targets, ctx.ignore_index, *ctx.needs_input_grad[:2]
            )
        else:
            grad_hidden, grad_weight = grads
            if ctx.link is not None:
                ctx.link.head_grad = grad_weight  # the tied lookup adds its rows into it
        if not bool(grad_loss == 1):  # e.g. 1 / accumulation steps; they are ours: in place
            grad_hidden = None if grad_hidden is None else grad_hidden.mul_(grad_loss)
            grad_weight = None if grad_weight is None else grad_weight.mul_(grad_loss)
        return grad_hidden, grad_weight, None, None, None


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
    link: TiedGradLink | None = None,
) -> Tensor:
    """Mean cross-entropy of the logits `hidden @ weight.T` against `targets`.

    hidden [..., C], weight [V, C], targets [...] (same leading shape; `ignore_index` marks
    positions left out) -> scalar. `fused=None` picks the fused path where it is supported
    (`fused_supported`), True demands it, False runs the reference. `link`: the TiedGradLink
    given to the `linked_embedding` of the same forward pass (fused path only).
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
    if not (torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)):
        # no backward will come (evaluation, no_grad): the loss alone. Inside the autograd
        # Function the gradients would be computed anyway, since a parameter's
        # `needs_input_grad` stays True under no_grad.
        loss, _, _ = _fused_loss_and_grads(
            flat.detach(), weight.detach(), targets.reshape(-1), ignore_index, False, False
        )
        return loss
    return LinearCrossEntropy.apply(flat, weight, targets.reshape(-1), ignore_index, link)
