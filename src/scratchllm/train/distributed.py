"""Data-parallel training across processes (``torchrun``), on CPUs (gloo) or GPUs (NCCL).

The scheme is the simplest one that is exactly equivalent to single-process training:

- every rank builds the same loader with the same seed, so all ranks see the same *global* batch;
- rank ``r`` of ``w`` trains on rows ``r::w`` of it (``shard_batch``);
- after backward, gradients are averaged across ranks in a few flat buckets (``all_reduce_grads``),
  so every rank applies the same update and the weights stay identical without broadcasting.

Because each rank's loss is a mean over the same number of tokens, the average of the rank
gradients equals the gradient of the global batch. Only rank 0 logs, plots and saves.

Launch (one node, 4 GPUs)::

    torchrun --standalone --nproc_per_node 4 -m scratchllm pretrain --config cfg.toml

Launch (2 nodes × 8 GPUs; run on each node with its own --node_rank)::

    torchrun --nnodes 2 --nproc_per_node 8 --node_rank 0 --rdzv_backend c10d \
        --rdzv_endpoint HOST0:29500 -m scratchllm pretrain --config cfg.toml
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

# Gradients are reduced in flat buckets of about this many elements (fewer, larger messages).
BUCKET_NUMEL = 25_000_000


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_type: str = "auto") -> DistInfo:
    """Join the process group that ``torchrun`` describes in the environment (or run alone)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_type in ("auto", "cuda")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(local_rank)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank)


def device_for(info: DistInfo, requested: str) -> str:
    """Each rank's device: its own GPU under torchrun, else what was asked for."""
    if info.enabled and requested in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{info.local_rank}"
    return requested


def shard_batch(batch: Any, info: DistInfo) -> Any:
    """Rows ``rank::world_size`` of every tensor in a (global) batch."""
    if not info.enabled:
        return batch
    if isinstance(batch, torch.Tensor):
        if batch.size(0) % info.world_size:
            raise ValueError(
                f"global batch of {batch.size(0)} rows does not split evenly over "
                f"{info.world_size} processes; choose batch_size divisible by the world size"
            )
        return batch[info.rank :: info.world_size]
    if isinstance(batch, (list, tuple)):
        return type(batch)(shard_batch(b, info) for b in batch)
    if isinstance(batch, dict):
        return {k: shard_batch(v, info) for k, v in batch.items()}
    return batch


@torch.no_grad()
def all_reduce_grads(model: nn.Module, info: DistInfo) -> None:
    """Average every gradient across ranks, in flat buckets."""
    if not info.enabled:
        return
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    bucket: list[torch.Tensor] = []
    size = 0
    for grad in grads:
        bucket.append(grad)
        size += grad.numel()
        if size >= BUCKET_NUMEL:
            _reduce_bucket(bucket, info.world_size)
            bucket, size = [], 0
    if bucket:
        _reduce_bucket(bucket, info.world_size)


def _reduce_bucket(grads: list[torch.Tensor], world_size: int) -> None:
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world_size
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def mean_across_ranks(value: float, info: DistInfo, device: torch.device) -> float:
    """The mean of a scalar over ranks (for logging the global loss)."""
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item()) / info.world_size
