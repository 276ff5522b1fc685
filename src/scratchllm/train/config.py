"""Training configuration: one dataclass, validated on construction, saved as JSON with each run."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from scratchllm.errors import ConfigError, check_field_types
from scratchllm.model.params import DECAY_ON

# TrainConfig fields that decide which batches come next: a resumed run must keep them (the
# length of the run, learning rates and intervals may change, e.g. to train longer).
RESUME_KEYS = ("batch_size", "grad_accum", "seed")


@dataclass
class TrainConfig:
    # --- length of the run -------------------------------------------------------------------
    max_steps: int = 1000  # optimizer steps (each may accumulate several micro-batches)
    # a wall-time budget: the run times steps 4-13 and, when max_steps would not
    # fit, shortens the schedule to the steps that do (so it still decays), and fits again as
    # the speed changes; the clock also stops the run
    max_seconds: float | None = None
    # --- batches -------------------------------------------------------------------------------
    batch_size: int = 16  # sequences per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    # --- optimizer: AdamW -------------------------------------------------------------------------
    lr: float = 3e-4  # peak learning rate, reached after warm-up
    min_lr: float = 3e-5  # floor of the cosine decay
    warmup_steps: int = 100  # linear warm-up from 0 to lr
    weight_decay: float = 0.1
    # which parameters decay: "matmul" (matmul weights only; not norms, biases, embeddings),
    # "matrices" (every 2-D parameter, embeddings included, as nanoGPT), "all" (every parameter)
    weight_decay_on: str = "matmul"
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping
    # --- evaluation and logging ------------------------------------------------------------------
    eval_interval: int = 200  # steps between validation passes (and at the end)
    eval_batches: int = 20  # validation micro-batches per pass; 0 = whole validation set
    # also measure the loss on `eval_batches` training batches (eval mode: no dropout) at each
    # evaluation, the "train loss" nanoGPT and the LLMs-from-scratch book report
    eval_train: bool = False
    log_interval: int = 10  # steps between metric records
    # also write TensorBoard events to <run>/tensorboard (needs the `tensorboard` extra)
    tensorboard: bool = False
    # --- checkpoints -------------------------------------------------------------------------------
    save_interval: int = 0  # steps between checkpoints; 0 = only at the end
    keep_last: int = 2  # newest step checkpoints kept (>= 1), besides the best one
    # --- robustness ---------------------------------------------------------------------------------
    max_bad_steps: int = 5  # consecutive non-finite losses/gradients tolerated before stopping
    # --- hardware ----------------------------------------------------------------------------------
    device: str = "auto"  # "auto" picks cuda, then mps, then cpu
    dtype: str = (
        "auto"  # autocast dtype: "auto" (bf16 on cuda, fp32 elsewhere), "float32", "bfloat16"
    )
    compile: bool = False  # torch.compile the model
    # recompute each block's activations in backward instead of storing them: activation memory
    # of one block per layer's input, for about a third more compute a step
    activation_checkpointing: bool = False
    # Under torchrun: "ddp" keeps a full copy per rank and averages gradients; "fsdp" shards
    # parameters, gradients and optimizer state over the ranks (FSDP2, for models that do not
    # fit one GPU). Alone (one process) both are plain training.
    parallel: str = "ddp"
    seed: int = 1337

    def __post_init__(self) -> None:
        check_field_types(self)
        positive = ("max_steps", "batch_size", "grad_accum", "eval_interval", "log_interval")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.keep_last < 1:  # the newest checkpoint is what --resume continues from
            raise ConfigError(f"TrainConfig.keep_last must be >= 1, got {self.keep_last}")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ConfigError(f"TrainConfig.max_seconds must be > 0, got {self.max_seconds}")
        for name in ("warmup_steps", "save_interval", "eval_batches"):
            if getattr(self, name) < 0:
                raise ConfigError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ConfigError(f"TrainConfig.lr must be > 0, got {self.lr}")
        if not 0 <= self.min_lr <= self.lr:
            raise ConfigError(f"TrainConfig.min_lr must be in [0, lr={self.lr}], got {self.min_lr}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ConfigError("TrainConfig.weight_decay and grad_clip must be >= 0")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ConfigError(
                f"TrainConfig betas must be in [0, 1), got {self.beta1}, {self.beta2}"
            )
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ConfigError(
                f"TrainConfig.dtype must be auto/float32/bfloat16, got {self.dtype!r}"
            )
        if self.weight_decay_on not in DECAY_ON:
            raise ConfigError(
                f"TrainConfig.weight_decay_on must be one of {', '.join(DECAY_ON)}, "
                f"got {self.weight_decay_on!r}"
            )
        if self.parallel not in ("ddp", "fsdp"):
            raise ConfigError(f"TrainConfig.parallel must be ddp/fsdp, got {self.parallel!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"TrainConfig needs an object of fields, got {data!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown TrainConfig field(s): {', '.join(unknown)}")
        return cls(**data)
