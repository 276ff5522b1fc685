"""The fused linear cross-entropy equals the reference (logits, then F.cross_entropy)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from scratchllm.model import GPTModel, ModelConfig, losses
from scratchllm.model.losses import (
    LinearCrossEntropy,
    linear_cross_entropy,
    linear_cross_entropy_reference,
)


def loss_and_grads(fn, hidden, weight, targets, scale=1.0):
    h = hidden.clone().requires_grad_()
    w = weight.clone().requires_grad_()
    loss = fn(h, w, targets)
    (loss * scale).backward()
    return loss.detach(), h.grad, w.grad


def fused(h, w, t):
    return linear_cross_entropy(h, w, t, fused=True)


def reference(h, w, t):
    return linear_cross_entropy_reference(h, w, t)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 70),  # more and fewer rows than one block of 32
    vocab=st.integers(2, 200),  # odd and even, below and above the 64-element padding
    c=st.integers(1, 24),
    ignored=st.floats(0.0, 0.9),
    seed=st.integers(0, 2**16),
)
def test_fused_equals_reference_float64(n, vocab, c, ignored, seed):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, c, generator=g, dtype=torch.float64)
    weight = torch.randn(vocab, c, generator=g, dtype=torch.float64)
    targets = torch.randint(0, vocab, (n,), generator=g)
    targets[torch.rand(n, generator=g) < ignored] = -100
    targets[0] = int(torch.randint(0, vocab, (1,), generator=g))  # at least one counts
    want = loss_and_grads(reference, hidden, weight, targets)
    got = loss_and_grads(fused, hidden, weight, targets)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_fused_matches_reference_float32_at_gpt2_vocab():
    torch.manual_seed(0)
    hidden = torch.randn(2, 40, 16)  # [B, T, C]
    weight = torch.randn(50257, 16) * 0.3
    targets = torch.randint(0, 50257, (2, 40))
    targets[1, 30:] = -100
    want = loss_and_grads(reference, hidden, weight, targets)
    got = loss_and_grads(fused, hidden, weight, targets)
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[1], want[1], rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(got[2], want[2], rtol=1e-4, atol=1e-8)


def test_gradcheck_and_scaled_upstream_gradient():
    torch.manual_seed(1)
    hidden = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([0, 6, -100, 3, 3])
    assert torch.autograd.gradcheck(
        lambda h, w: LinearCrossEntropy.apply(h, w, targets, -100), (hidden, weight)
    )
    # an upstream gradient other than 1 (gradient accumulation divides the loss)
    want = loss_and_grads(reference, hidden.detach(), weight.detach(), targets, scale=0.25)
    got = loss_and_grads(fused, hidden.detach(), weight.detach(), targets, scale=0.25)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)


def test_all_ignored_gives_nan_loss_and_zero_grads_like_reference():
    hidden, weight = torch.randn(4, 3), torch.randn(5, 3)
    targets = torch.full((4,), -100)
    want = loss_and_grads(reference, hidden, weight, targets)
    got = loss_and_grads(fused, hidden, weight, targets)
    assert torch.isnan(want[0]) and torch.isnan(got[0])
    torch.testing.assert_close(got[1], want[1])
    torch.testing.assert_close(got[2], want[2])
    assert not got[2].any()


def test_no_grad_and_weight_only_grad():
    torch.manual_seed(2)
    hidden, weight = torch.randn(6, 4), torch.randn(9, 4)
    targets = torch.randint(0, 9, (6,))
    with torch.no_grad():
        torch.testing.assert_close(
            fused(hidden, weight, targets), reference(hidden, weight, targets)
        )
    w1, w2 = weight.clone().requires_grad_(), weight.clone().requires_grad_()
    fused(hidden, w1, targets).backward()
    reference(hidden, w2, targets).backward()
    torch.testing.assert_close(w1.grad, w2.grad)


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode", "nothing_requires_grad"])
def test_a_loss_no_backward_will_follow_computes_no_gradients(monkeypatch, mode):
    """Under no_grad a parameter's `needs_input_grad` stays True inside an autograd Function,
    so the fused loss must be told from outside that no backward follows (evaluation)."""
    torch.manual_seed(3)
    hidden, weight = torch.randn(6, 4), torch.randn(9, 4)
    targets = torch.randint(0, 9, (6,))
    want = reference(hidden, weight, targets)
    asked = []
    real = losses._fused_loss_and_grads

    def spy(*args, **kw):
        asked.append(args[4:6])  # need_hidden, need_weight
        return real(*args, **kw)

    monkeypatch.setattr(losses, "_fused_loss_and_grads", spy)
    ctx = {"no_grad": torch.no_grad, "inference_mode": torch.inference_mode}.get(mode)
    if ctx is None:
        got = fused(hidden, weight, targets)
    else:
        with ctx():
            got = fused(hidden, weight.requires_grad_(), targets)
    assert asked == [(False, False)]
    assert not got.requires_grad
    torch.testing.assert_close(got, want)


def test_confident_logits_give_no_subnormal_floats_and_match_the_reference():
    """exp(logit - max) below about -87 is a subnormal float, many times slower on a CPU: the
    fused loss floors the exponent (losses.EXP_FLOOR) at no visible cost in accuracy."""
    torch.manual_seed(4)
    hidden = torch.randn(80, 16) * 40  # logits spread over hundreds of nats
    weight = torch.randn(300, 16)
    targets = torch.randint(0, 300, (80,))
    want = loss_and_grads(reference, hidden, weight, targets)
    got = loss_and_grads(fused, hidden, weight, targets)
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[1], want[1], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(got[2], want[2], rtol=1e-4, atol=1e-6)
    tiny = torch.finfo(torch.float32).tiny
    for grad in got[1:]:
        assert not ((grad != 0) & (grad.abs() < tiny)).any()
    probs = torch.softmax(hidden @ weight.t(), -1)
    assert ((probs != 0) & (probs < tiny)).any()  # the reference's softmax does hold some


def test_bad_targets_and_unsupported_inputs_are_named():
    hidden, weight = torch.randn(3, 4), torch.randn(5, 4)
    with pytest.raises(IndexError, match="target 5 is outside the vocabulary 0..4"):
        fused(hidden, weight, torch.tensor([0, 5, 1]))
    with pytest.raises(IndexError, match="target -3"):
        fused(hidden, weight, torch.tensor([0, -3, 1]))
    with pytest.raises(ValueError, match="does not match"):
        fused(hidden, weight, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="float32/float64"):
        fused(hidden.bfloat16(), weight.bfloat16(), torch.tensor([0, 1, 2]))
    # the automatic choice falls back to the reference where the fused path does not run
    loss = linear_cross_entropy(hidden.bfloat16(), weight.bfloat16(), torch.tensor([0, 1, 2]))
    assert loss.dtype == torch.float32


@pytest.mark.parametrize("tie", [True, False])
def test_gpt_forward_with_targets_equals_logits_then_cross_entropy(tie):
    cfg = ModelConfig(
        vocab_size=97, context_length=16, n_embd=32, n_layer=2, n_head=4, dropout=0.0,
        tie_embeddings=tie,
    )  # fmt: skip
    torch.manual_seed(3)
    model = GPTModel(cfg)
    idx = torch.randint(0, 97, (3, 16))
    targets = torch.randint(0, 97, (3, 16))
    targets[2, :5] = -100

    loss = model(idx, targets=targets)
    loss.backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    logits = model(idx)
    want_loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
    want_loss.backward()
    torch.testing.assert_close(loss, want_loss)
    for name, p in model.named_parameters():
        torch.testing.assert_close(got[name], p.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_scratch_buffer_is_reused_grown_and_released():
    from scratchllm.model import losses

    torch.manual_seed(4)
    weight = torch.randn(11, 6)
    losses.release_scratch()
    for n in (40, 5, 64):  # grows, is reused by a smaller call, grows again
        hidden = torch.randn(n, 6)
        targets = torch.randint(0, 11, (n,))
        want = loss_and_grads(reference, hidden, weight, targets)
        got = loss_and_grads(fused, hidden, weight, targets)
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b)
    held = losses._local.buffers[(torch.float32, torch.device("cpu"))]
    assert held.numel() == 64 * 64  # 64 rows, 11 padded to 64
    losses.release_scratch()
    assert "buffers" not in losses._local.__dict__


def _tied_gpt(seed: int = 5) -> tuple[GPTModel, torch.Tensor, torch.Tensor]:
    cfg = ModelConfig(
        vocab_size=61, context_length=12, n_embd=16, n_layer=2, n_head=2, dropout=0.0,
        tie_embeddings=True,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = GPTModel(cfg)
    idx = torch.randint(0, 61, (3, 12))
    idx[0, :4] = 7  # a repeated token: several rows of the lookup's gradient land on one row
    targets = torch.randint(0, 61, (3, 12))
    return model, idx, targets


def _reference_grads(model, idx, targets, scale=1.0, times=1):
    """Gradients of `times` backward passes of scale * loss, through logits + F.cross_entropy."""
    ref = GPTModel(model.cfg)
    ref.load_state_dict(model.state_dict())
    for _ in range(times):
        logits = ref(idx)
        (F.cross_entropy(logits.flatten(0, 1), targets.flatten()) * scale).backward()
    return {n: p.grad for n, p in ref.named_parameters()}


def test_tied_table_gradient_goes_through_the_link_and_the_kept_buffer():
    from scratchllm.model import losses

    losses.release_scratch()
    model, idx, targets = _tied_gpt()
    table = model.embed.wte.weight
    assert model._links_tied_grads()
    want = _reference_grads(model, idx, targets)
    seen = set()
    for _ in range(3):  # the usual loop: forward, backward, zero_grad(set_to_none=True)
        model(idx, targets=targets).backward()
        for name, p in model.named_parameters():
            torch.testing.assert_close(p.grad, want[name], rtol=1e-4, atol=1e-6, msg=name)
        seen.add(table.grad.data_ptr())
        model.zero_grad(set_to_none=True)
    ((buf, _),) = [v for k, v in losses._local.grads.items() if k[2] == tuple(table.shape)]
    assert seen == {buf.data_ptr()}  # autograd took the kept buffer as .grad, every step
    losses.release_scratch()


def test_a_gradient_someone_still_holds_is_never_overwritten():
    model, idx, targets = _tied_gpt()
    table = model.embed.wte.weight
    model(idx, targets=targets).backward()
    kept = table.grad  # e.g. logged, or kept across steps
    first = kept.clone()
    table.grad = None
    model(idx, targets=targets * 0 + 3).backward()  # another loss: another gradient
    torch.testing.assert_close(kept, first, rtol=0, atol=0)
    assert table.grad.data_ptr() != kept.data_ptr()


@pytest.mark.parametrize("set_to_none", [True, False])
def test_accumulation_and_scaled_losses_match_the_reference(set_to_none):
    model, idx, targets = _tied_gpt(seed=6)
    want = _reference_grads(model, idx, targets, scale=0.5, times=3)
    for _ in range(2):  # two optimizer-less "steps", each accumulating three micro-batches
        model.zero_grad(set_to_none=set_to_none)
        for _ in range(3):
            (model(idx, targets=targets) * 0.5).backward()
        for name, p in model.named_parameters():
            torch.testing.assert_close(p.grad, want[name], rtol=1e-4, atol=1e-6, msg=name)


def test_autograd_grad_and_frozen_table_go_the_plain_way():
    model, idx, targets = _tied_gpt(seed=7)
    table = model.embed.wte.weight
    want = _reference_grads(model, idx, targets)
    (got,) = torch.autograd.grad(model(idx, targets=targets), [table])
    torch.testing.assert_close(got, want["embed.wte.weight"], rtol=1e-4, atol=1e-6)
    table.requires_grad_(False)  # e.g. a frozen embedding while fine-tuning
    assert not model._links_tied_grads()
    model(idx, targets=targets).backward()
    assert table.grad is None
    for name, p in model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p.grad, want[name], rtol=1e-4, atol=1e-6, msg=name)


def test_link_without_a_head_gradient_falls_back_to_the_plain_lookup():
    from scratchllm.model.losses import TiedGradLink, linked_embedding

    torch.manual_seed(8)
    weight = torch.randn(9, 4, requires_grad=True)
    idx = torch.tensor([[1, 3, 3], [0, 8, 1]])
    upstream = torch.randn(2, 3, 4)
    linked_embedding(weight, idx, TiedGradLink()).backward(upstream)  # nobody filled the link
    got = weight.grad.clone()
    weight.grad = None
    F.embedding(idx, weight).backward(upstream)
    torch.testing.assert_close(got, weight.grad)


def test_a_retained_graph_gives_the_same_gradients_on_each_backward():
    model, idx, targets = _tied_gpt(seed=9)
    want = _reference_grads(model, idx, targets, scale=0.25, times=2)
    loss = model(idx, targets=targets) * 0.25
    loss.backward(retain_graph=True)  # the first hands out (and scales, links) its gradients
    loss.backward()  # the second computes them again
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, want[name], rtol=1e-4, atol=1e-6, msg=name)


def test_switching_memory_reuse_off_gives_the_same_gradients(monkeypatch):
    from scratchllm.model import losses

    model, idx, targets = _tied_gpt(seed=10)
    want = _reference_grads(model, idx, targets)
    monkeypatch.setattr(losses, "REUSE_MEMORY", False)  # what bench/train.py --fresh-memory does
    assert not model._links_tied_grads()
    model(idx, targets=targets).backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, want[name], rtol=1e-4, atol=1e-6, msg=name)
