"""The sigmoid-form tanh GELU equals F.gelu(approximate="tanh") in value and gradient."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from scratchllm.model import activations
from scratchllm.model.activations import TanhGELU, gelu


@settings(max_examples=30, deadline=None)
@given(
    shape=st.lists(st.integers(1, 9), min_size=1, max_size=3),
    scale=st.floats(0.01, 20.0),
    seed=st.integers(0, 2**16),
)
def test_tanh_gelu_equals_torch_float64(shape, scale, seed):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x = (x * scale).requires_grad_()
    upstream = torch.randn_like(x)
    ours = TanhGELU.apply(x)
    (grad_ours,) = torch.autograd.grad(ours, x, upstream)
    ref = F.gelu(x, approximate="tanh")
    (grad_ref,) = torch.autograd.grad(ref, x, upstream)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad_ours, grad_ref, rtol=1e-10, atol=1e-12)


def test_gradcheck_and_float32_at_mlp_size():
    x = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(TanhGELU.apply, (x,))
    x32 = (torch.randn(64, 3072) * 3).requires_grad_()
    ours = gelu(x32)
    assert ours.grad_fn is not None and "TanhGELU" in type(ours.grad_fn).__name__
    ours.sum().backward()
    grad_ours = x32.grad.clone()
    x32.grad = None
    F.gelu(x32, approximate="tanh").sum().backward()
    torch.testing.assert_close(ours, F.gelu(x32, approximate="tanh"), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grad_ours, x32.grad, rtol=1e-5, atol=1e-5)


def test_which_path_runs():
    x = torch.randn(3, 4, requires_grad=True)
    assert activations.fast_gelu_applies(x, "tanh")
    assert not activations.fast_gelu_applies(x, "none")  # exact erf GELU: torch's
    assert not activations.fast_gelu_applies(x.detach(), "tanh")  # inference: torch's
    with torch.no_grad():
        assert not activations.fast_gelu_applies(x, "tanh")
    assert not activations.fast_gelu_applies(x.bfloat16(), "tanh")
    torch.testing.assert_close(gelu(x, "none"), F.gelu(x))
