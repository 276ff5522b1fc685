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

_OWNED: list[bool] = []  # [True] while a process group made by init_distributed is up

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
        _OWNED.append(True)
    if use_cuda:
        torch.cuda.set_device(local_rank)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank)


def shutdown_distributed(synchronize: bool = True) -> None:
    """Leave the process group ``init_distributed`` joined (one it did not create is left alone).

    A process that exits with the group still up may abort in gloo's or NCCL's threads, and so may
    a rank that tears its group down while another rank is still working (rank 0 saving the
    weights, say): with ``synchronize`` every rank first waits at a barrier for the others. After
    an error pass ``synchronize=False``: the other ranks may never reach the barrier."""
    if _OWNED and dist.is_initialized():
        try:
            if synchronize:
                dist.barrier()  # raises if a peer died meanwhile: the group is still left
        finally:
            _OWNED.clear()
            dist.destroy_process_group()
    _OWNED.clear()


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


def any_across_ranks(flags: list[bool], info: DistInfo, device: torch.device) -> list[bool]:
    """Each flag, true if it is true on any rank: decisions that every rank must take together
    (stop for the clock or for a signal that only some ranks received), or the ranks would part
    ways and wait for each other's collectives forever."""
    if not info.enabled:
        return list(flags)
    t = torch.tensor([int(f) for f in flags], dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def min_across_ranks(value: int, info: DistInfo, device: torch.device) -> int:
    """The smallest of an integer over ranks (e.g. the steps that fit a time budget)."""
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


# ------------------------------------------------------------------------------------------ FSDP
#
# With ``TrainConfig.parallel = "fsdp"`` each transformer block, then the root model, is wrapped
# with FSDP2 (``fully_shard``): every rank keeps 1/world_size of each parameter, gradient and
# optimizer state, gathers a block's full weights just before using it, and reduce-scatters (and
# averages) the gradients itself, so ``all_reduce_grads`` is skipped. Checkpoints gather the full
# state on rank 0 and are written in the single-process format, with optimizer state keyed by
# position like ``optimizer.state_dict()``: either kind of run resumes from the other's checkpoint.


def tied_names(model: nn.Module) -> dict[str, str]:
    """Each tied parameter's second name -> its first name (e.g. lm_head.weight -> wte.weight)."""
    first: dict[int, str] = {}
    twins = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in first:
            twins[name] = first[id(p)]
        else:
            first[id(p)] = name
    return twins


def apply_fsdp(model: nn.Module, info: DistInfo, device: torch.device) -> nn.Module:
    """Shard ``model`` (already on ``device``) over all ranks: each block, then the root."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from scratchllm.errors import ConfigError

    if not dist.is_initialized():
        raise ConfigError(
            "TrainConfig.parallel='fsdp' needs a process group (launch with torchrun)"
        )
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        raise ConfigError(
            f"TrainConfig.parallel='fsdp' shards models with a .blocks list; "
            f"{type(model).__name__} has none"
        )
    mesh = init_device_mesh(device.type, (info.world_size,))
    for block in blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def _full_options():
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def _param_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """The name of every optimizer parameter, in ``optimizer.state_dict()`` order."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [names[id(p)] for group in optimizer.param_groups for p in group["params"]]


def full_model_state(model: nn.Module, twins: dict[str, str]) -> dict[str, torch.Tensor]:
    """The unsharded weights on the CPU of rank 0 (empty on other ranks). Collective."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    state = get_model_state_dict(model, options=_full_options())
    for twin, name in twins.items():  # one tensor for tied names, as model.state_dict() gives
        if twin in state and name in state:
            state[twin] = state[name]
    return state


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The unsharded optimizer state on rank 0, keyed like ``optimizer.state_dict()``. Collective."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    full = get_optimizer_state_dict(model, optimizer, options=_full_options())
    if not full:
        return {}
    index = {name: i for i, name in enumerate(_param_names(model, optimizer))}
    return {
        "state": {index[name]: value for name, value in full["state"].items()},
        "param_groups": [
            {**group, "params": [index[name] for name in group["params"]]}
            for group in full["param_groups"]
        ],
    }


def load_full_state(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    weights: dict[str, torch.Tensor],
    optimizer_state: dict[str, Any] | None,
    twins: dict[str, str],
) -> None:
    """Load full (single-process format) weights and optimizer state into a sharded model.

    Every rank passes the whole state (each reads the checkpoint) and keeps its own shard.
    """
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True)
    weights = dict(weights)
    for twin, name in twins.items():  # a tied tensor is stored once
        if twin not in weights and name in weights:
            weights[twin] = weights[name]
    set_model_state_dict(model, weights, options=options)
    if optimizer is None or optimizer_state is None:
        return
    names = _param_names(model, optimizer)
    full = {
        "state": {names[int(i)]: value for i, value in optimizer_state["state"].items()},
        "param_groups": [
            {**group, "params": [names[int(i)] for i in group["params"]]}
            for group in optimizer_state["param_groups"]
        ],
    }
    set_optimizer_state_dict(model, optimizer, full, options=options)
