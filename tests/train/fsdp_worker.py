"""Trains a tiny GPT for a few steps, alone or as one rank of several, with or without FSDP.

Used by test_fsdp.py: ``python fsdp_worker.py OUT PARALLEL [RESUME]`` with the torchrun
environment variables (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) set for each rank. Checkpoints
go to OUT/run (every 3 steps) and the final full weights to OUT/final.safetensors.
"""

import sys
import types
from pathlib import Path

import numpy as np
import torch

from scratchllm.data.loaders import EpochLoader
from scratchllm.data.windows import WindowDataset
from scratchllm.model import GPTModel, get_preset
from scratchllm.train.checkpoint import save_weights
from scratchllm.train.config import TrainConfig
from scratchllm.train.distributed import init_distributed, shutdown_distributed
from scratchllm.train.loop import Trainer

# No loss plot (importing matplotlib would take longer than the training).
sys.modules["scratchllm.viz"] = types.SimpleNamespace(plot_training=lambda *a, **k: None)


def main(out: str, parallel: str, resume: str | None = None) -> None:
    torch.set_num_threads(1)
    info = init_distributed("cpu")
    torch.manual_seed(0)
    model = GPTModel(get_preset("tiny", vocab_size=64, context_length=16))
    ids = np.random.default_rng(0).integers(0, 64, 3000)
    loader = EpochLoader(WindowDataset(ids, 16, 16), 8, seed=0)
    val = EpochLoader(WindowDataset(ids[:400], 16, 16), 8, shuffle=False)
    cfg = TrainConfig(
        max_steps=6,
        batch_size=8,
        grad_accum=2,
        lr=1e-3,
        min_lr=1e-4,
        warmup_steps=2,
        grad_clip=0.5,  # small enough to clip: exercises the norm of sharded gradients
        eval_interval=3,
        eval_batches=2,
        log_interval=1,
        save_interval=3,
        keep_last=5,
        device="cpu",
        parallel=parallel,
    )
    trainer = Trainer(
        model,
        cfg,
        loader,
        lambda: iter(val),
        run_dir=Path(out) / "run",
        progress=False,
        dist=info,
        sample=lambda m: str(m(torch.zeros(1, 4, dtype=torch.long)).argmax(-1).tolist()),
    )
    if resume:
        trainer.resume(resume)
    trainer.fit()
    full = trainer.unsharded_model()  # collective under FSDP
    if info.is_main:
        save_weights(full, Path(out) / "final.safetensors")
    shutdown_distributed()  # exiting with the group up can abort in gloo's threads


if __name__ == "__main__":
    main(*sys.argv[1:])
