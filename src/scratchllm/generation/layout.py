"""Weight layout for fast batch-1 decoding on the CPU.

A decode step multiplies one activation row by every weight matrix of the model: matrix-vector
products, whose speed is the memory bandwidth they reach. `nn.Linear` stores W as [out, in] and
computes x @ W^T. With MKL on this project's CPU that transposed product streams at ~14 GB/s,
while x @ A with A = W^T stored contiguously ([in, out], the layout of GPT-2's original Conv1D)
reaches ~21-24 GB/s (bench/generate.py and docs/benchmarks.md have the figures).

`column_major_linears(model)` gives every linear weight that second layout *without changing its
shape or values*: the parameter stays [out, in] but its memory is W^T, contiguous (strides
(1, out)), so `F.linear` hands MKL a contiguous [in, out] matrix. A tied output head shares its
storage with the token embedding, which then reads strided rows (one row per new token: cheap).

Only the order of additions inside each dot product changes, so logits differ in the last bits.
Saving is unaffected (`weights_state` makes tensors contiguous). Meant for a model used for
inference (the CLI applies it to `generate`, `chat` and `serve` on the CPU); a model that goes on
training keeps working but may train at a different speed.
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def column_major_linears(model: nn.Module) -> nn.Module:
    """Store every CPU `nn.Linear` weight as the contiguous transpose (in place); returns model."""
    done: set[int] = set()
    for module in model.modules():
        if not isinstance(module, nn.Linear):
            continue
        weight = module.weight
        if id(weight) in done or weight.device.type != "cpu" or weight.dim() != 2:
            continue
        done.add(id(weight))
        weight.data = weight.data.t().contiguous().t()  # same shape and values, strides (1, out)
    return model
