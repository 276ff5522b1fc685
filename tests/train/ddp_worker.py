"""Trains a tiny GPT for a few steps and saves its weights; run alone or as one rank of several.

Used by test_distributed.py: `python ddp_worker.py OUT.safetensors [MODE]` with the torchrun
environment variables (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) set for each rank. Each rank
writes the step it stopped at, and why, to OUT.rankN.json. MODE makes the ranks disagree about
when to stop, as they can on real machines:

- ``budget``: a time budget; each rank's (fake) clock runs at its own speed (rank r's steps take
  r + 1 times as long), so each times the probe steps differently;
- ``clock``: as ``budget`` but ending before any fit, so only the clock stops the run;
- ``signal``: rank 1 alone gets SIGTERM during step 3.
"""

import json
import os
import signal
import sys

import numpy as np
import torch

import scratchllm.train.loop as loop
from scratchllm.data.loaders import EpochLoader
from scratchllm.data.windows import WindowDataset
from scratchllm.model import GPTModel, get_preset
from scratchllm.train.checkpoint import save_weights
from scratchllm.train.config import TrainConfig
from scratchllm.train.distributed import init_distributed, shutdown_distributed
from scratchllm.train.loop import Trainer, next_token_loss


class FakeClock:
    now = 0.0

    def perf_counter(self) -> float:
        return self.now


def main(out: str, mode: str = "") -> None:
    torch.set_num_threads(1)
    info = init_distributed("cpu")
    torch.manual_seed(0)
    model = GPTModel(get_preset("tiny", vocab_size=64, context_length=16))
    ids = np.random.default_rng(0).integers(0, 64, 3000)
    loader = EpochLoader(WindowDataset(ids, 16, 16), 8, seed=0)
    cfg = TrainConfig(
        max_steps={"budget": 200, "clock": 12}.get(mode, 6),
        max_seconds={"budget": 3.0, "clock": 1.05}.get(mode),
        batch_size=8,
        grad_accum=2,
        lr=1e-3,
        min_lr=1e-4,
        warmup_steps=2,
        eval_interval=100,
        log_interval=1,
        device="cpu",
    )
    trainer = Trainer(model, cfg, loader, progress=False, dist=info)
    clock, signalled = FakeClock(), []
    if mode in ("budget", "clock"):
        loop.time = clock

    def loss_fn(model, batch):
        clock.now += 0.05 * (info.rank + 1)  # per micro-batch: 0.1 s a step on rank 0
        if mode == "signal" and info.rank == 1 and trainer.step + 1 == 3 and not signalled:
            signalled.append(True)  # once: a second signal means "give up at once"
            os.kill(os.getpid(), signal.SIGTERM)
        return next_token_loss(model, batch)

    trainer.loss_fn = loss_fn
    result = trainer.fit()
    with open(f"{out}.rank{info.rank}.json", "w") as f:
        json.dump({"step": result.step, "stopped": result.stopped, "max_steps": cfg.max_steps}, f)
    if info.is_main:
        save_weights(model, out)
    shutdown_distributed()  # exiting with the group up can abort in gloo's threads


if __name__ == "__main__":
    main(*sys.argv[1:])
