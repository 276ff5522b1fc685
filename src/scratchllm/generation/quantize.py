"""Smaller weights for faster CPU decoding: bfloat16 casts and int8 linear layers.

Decoding one token at batch 1 reads every weight once, so its speed is set by bytes read.
`quantize_int8` swaps each `nn.Linear` (the output head included) for PyTorch's dynamic int8
linear: weights stored as int8 with one scale per output channel (4x fewer bytes than float32),
activations quantized per call. On CPUs without AVX-512 BF16 this is the fastest option
PyTorch offers (a bfloat16 or weight-only int8 matmul there is no faster than float32); see
docs/generate.md for the measured speed and perplexity cost. Embeddings and norms stay float32.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn


def quantize_int8(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (CPU, float32) whose linear layers hold int8 per-channel weights."""
    try:
        from torch.ao.nn.quantized import dynamic as qdynamic
    except ImportError as exc:  # torch.ao's quantized modules are being phased out
        raise RuntimeError("this PyTorch build has no dynamic int8 linear layers") from exc
    if next(model.parameters()).device.type != "cpu":
        raise ValueError("int8 dynamic quantization runs on the CPU only")
    model = copy.deepcopy(model).float().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation notices of the quantized tensor API
        _swap_linears(model, qdynamic.Linear)
    return model


def _swap_linears(module: nn.Module, qlinear: type) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.Linear):
            setattr(module, name, _int8_linear(child, qlinear))
        else:
            _swap_linears(child, qlinear)


def _int8_linear(linear: nn.Linear, qlinear: type) -> nn.Module:
    """Symmetric per-output-channel int8 weights: w ~= scale[o] * q[o, i], q in -127..127."""
    w = linear.weight.detach().float()
    scale = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-12).double()
    zero = torch.zeros(w.shape[0], dtype=torch.long)
    qweight = torch.quantize_per_channel(w, scale, zero, 0, torch.qint8)
    bias = None if linear.bias is None else linear.bias.detach().float()
    q = qlinear(linear.in_features, linear.out_features, bias_=bias is not None, dtype=torch.qint8)
    q.set_weight_bias(qweight, bias)
    return q
