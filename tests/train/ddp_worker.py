"""Trains a tiny GPT for a few steps and saves its weights; run alone or as one rank of several.

Used by test_distributed.py: `python ddp_worker.py OUT.safetensors` with the torchrun environment
variables (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) set for each rank.
"""

import sys

import numpy as np
import torch

from scratchllm.data.loaders import EpochLoader
from scratchllm.data.windows import WindowDataset
from scratchllm.model import GPTModel, get_preset
from scratchllm.train.checkpoint import save_weights
from scratchllm.train.config import TrainConfig
from scratchllm.train.distributed import init_distributed, shutdown_distributed
from scratchllm.train.loop import Trainer


def main(out: str) -> None:
    torch.set_num_threads(1)
    info = init_distributed("cpu")
    torch.manual_seed(0)
    model = GPTModel(get_preset("tiny", vocab_size=64, context_length=16))
    ids = np.random.default_rng(0).integers(0, 64, 3000)
    loader = EpochLoader(WindowDataset(ids, 16, 16), 8, seed=0)
    cfg = TrainConfig(
        max_steps=6,
        batch_size=8,
        grad_accum=2,
        lr=1e-3,
        min_lr=1e-4,
        warmup_steps=2,
        eval_interval=100,
        log_interval=1,
        device="cpu",
    )
    Trainer(model, cfg, loader, progress=False, dist=info).fit()
    if info.is_main:
        save_weights(model, out)
    shutdown_distributed()  # exiting with the group up can abort in gloo's threads


if __name__ == "__main__":
    main(sys.argv[1])
