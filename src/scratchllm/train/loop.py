"""The training loop: a plain PyTorch loop shared by pretraining and fine-tuning.

One optimizer step = ``grad_accum`` micro-batches. The loop owns the schedule, clipping,
evaluation, metrics, checkpoints, signal handling and exact resume; what a batch means and how its
loss is computed is given by the caller as ``loss_fn(model, batch) -> (loss, n_tokens)``.
"""

from __future__ import annotations

import inspect
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn
from tqdm.auto import tqdm

from scratchllm.errors import ConfigError
from scratchllm.model.losses import logits_cross_entropy
from scratchllm.train import checkpoint as ckpt
from scratchllm.train.budget import TimeBudget
from scratchllm.train.config import TrainConfig
from scratchllm.train.distributed import (
    DistInfo,
    all_reduce_grads,
    any_across_ranks,
    apply_fsdp,
    full_model_state,
    full_optimizer_state,
    load_full_state,
    mean_across_ranks,
    shard_batch,
    tied_names,
)
from scratchllm.train.metrics import MetricsLog, flops_per_token, peak_tflops
from scratchllm.train.optim import build_optimizer, lr_at

LossFn = Callable[[nn.Module, Any], tuple[torch.Tensor, int]]


def computes_own_loss(model: nn.Module) -> bool:
    """Whether ``model(inputs, targets=targets)`` returns the loss (as GPTModel's does), looking
    through torch.compile's wrapper."""
    inner = getattr(model, "_orig_mod", model)
    return "targets" in inspect.signature(inner.forward).parameters


def next_token_loss(model: nn.Module, batch: Any) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy of predicting ``targets`` (inputs shifted by one); -100 is ignored.

    A model that takes ``targets`` computes the loss itself, without keeping the logits (the fused
    head of `model.losses`); any other model's logits go through `logits_cross_entropy` here.
    """
    inputs, targets = batch[0], batch[1]
    if computes_own_loss(model):
        loss = model(inputs, targets=targets)
    else:
        loss = logits_cross_entropy(model(inputs), targets)  # logits [B, T, V]
    return loss, int((targets != -100).sum())


def resolve_device(name: str = "auto") -> torch.device:
    """A torch.device for "auto" (cuda, then mps, then cpu) or a name; a clear error for a device
    this machine does not have."""
    if name != "auto":
        try:
            device = torch.device(name)
        except RuntimeError as exc:
            raise ConfigError(f"device={name!r} is not a device name ({exc})") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device={name!r}: this PyTorch build or machine has no CUDA device")
        if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
            raise ConfigError(
                f"device={name!r}: only {torch.cuda.device_count()} CUDA device(s) here"
            )
        if device.type == "mps" and not (
            getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
        ):
            raise ConfigError(f"device={name!r}: MPS is not available on this machine")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for plain float32."""
    name = cfg.dtype
    if name == "auto":
        name = "bfloat16" if device.type == "cuda" else "float32"
    return None if name == "float32" else getattr(torch, name)


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


@dataclass
class TrainResult:
    step: int  # optimizer steps completed
    train_loss: float  # mean loss of the last logged window of steps
    val_loss: float | None  # last validation loss
    best_val_loss: float | None
    tokens: int  # target tokens trained on
    seconds: float  # wall time of this call
    stopped: str  # "max_steps", "max_seconds", "signal", "paused" or "non_finite"
    history: list[dict[str, Any]] = field(default_factory=list)


class _StopFlag:
    """Set by SIGINT/SIGTERM; the loop finishes the current step, saves and returns."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:  # a second signal: give up at once
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state().tolist()}
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Callable[[], Iterator[Any]],
    loss_fn: LossFn,
    device: torch.device,
    max_batches: int = 0,
    amp_dtype: torch.dtype | None = None,
) -> float:
    """Token-weighted mean loss over (at most ``max_batches``) validation batches."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    amp = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else nullcontext()
    for i, batch in enumerate(batches()):
        if max_batches and i >= max_batches:
            break
        with amp:
            loss, n = loss_fn(model, to_device(batch, device))
        total += loss.item() * n
        count += n
    model.train(was_training)
    return total / max(count, 1)


class _FullState:
    """Stands in for a sharded model or optimizer in save_checkpoint: its gathered full state."""

    def __init__(self, state: dict[str, Any]) -> None:
        self._state = state

    def state_dict(self) -> dict[str, Any]:
        return self._state


class Trainer:
    """Runs ``cfg.max_steps`` optimizer steps of ``model`` on batches from ``train_loader``.

    ``train_loader`` must offer ``batches()`` (an endless iterator over epochs) and, for exact
    resume, ``state_dict()`` / ``load_state_dict()``. ``val_batches`` is a callable returning a
    fresh iterator over validation batches. ``run_dir`` (optional) receives metrics, plots and
    checkpoints.
    """

    def __init__(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        train_loader: Any,
        val_batches: Callable[[], Iterator[Any]] | None = None,
        *,
        run_dir: str | Path | None = None,
        loss_fn: LossFn = next_token_loss,
        on_eval: Callable[[int, float], None] | None = None,
        sample: Callable[[nn.Module], str] | None = None,
        progress: bool = True,
        device: torch.device | None = None,
        dist: DistInfo | None = None,
        train_eval_batches: Callable[[], Iterator[Any]] | None = None,
    ) -> None:
        self.cfg = cfg
        self.dist = dist or DistInfo()
        self.device = device or resolve_device(cfg.device)
        self.model = model.to(self.device)
        if cfg.activation_checkpointing:
            if not hasattr(model, "activation_checkpointing"):
                raise ConfigError(
                    f"train.activation_checkpointing: {type(model).__name__} does not support it"
                )
            model.activation_checkpointing = True
        # FSDP2 under torchrun (alone, "fsdp" is plain training): shard before the optimizer.
        self.fsdp = cfg.parallel == "fsdp" and self.dist.enabled
        self._model_class = type(model)
        self._twins = tied_names(model)
        if self.fsdp:
            apply_fsdp(self.model, self.dist, self.device)
        self.train_loader = train_loader
        self.val_batches = val_batches
        self.train_eval_batches = train_eval_batches  # used when cfg.eval_train
        self.loss_fn = loss_fn
        self.on_eval = on_eval
        self.sample = sample  # text generated by the model at each evaluation (logged, shown)
        self.progress = progress and self.dist.is_main
        # Only the main process writes: metrics, plots and checkpoints.
        self.run_dir = Path(run_dir) if run_dir and self.dist.is_main else None
        self._saves = bool(run_dir)  # on every rank: FSDP saves need all ranks to gather
        self.amp_dtype = autocast_dtype(cfg, self.device)
        self.optimizer = build_optimizer(self.model, cfg, self.device)
        self.forward_model = torch.compile(self.model) if cfg.compile else self.model
        self.metrics = MetricsLog(
            self.run_dir / "metrics.jsonl" if self.run_dir else None,
            tensorboard_dir=self.run_dir / "tensorboard"
            if self.run_dir and cfg.tensorboard
            else None,
        )
        self.step = 0
        self.tokens = 0
        self.best_val: float | None = None
        self.best_step: int | None = None  # the step of best_val (its checkpoint is kept)
        self.val: float | None = None  # the latest validation loss
        # the steps logged so far in the current metrics window (saved, so that a resumed run
        # logs the same averages as an uninterrupted one)
        self._window_losses: list[float] = []
        self._saved_steps: set[int] = set()  # checkpoints this Trainer wrote (or resumed from)
        self.bad_steps = 0
        self.skipped_steps = 0
        self._last_grad_norm = float("nan")
        if self.run_dir is not None:
            ckpt.remove_partial_saves(self.run_dir)  # left by a process killed while saving
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

    # ------------------------------------------------------------------------------ checkpoints

    def state(self) -> dict[str, Any]:
        loader_state = (
            self.train_loader.state_dict() if hasattr(self.train_loader, "state_dict") else None
        )
        return {
            "step": self.step,
            "tokens": self.tokens,
            "best_val": self.best_val,
            "best_step": self.best_step,
            "val_loss": self.val,
            "window_losses": list(self._window_losses),
            "skipped_steps": self.skipped_steps,
            "loader": loader_state,
            "rng": _rng_state(),
            "train_config": self.cfg.to_dict(),
            "model_config": self.model.cfg.to_dict() if hasattr(self.model, "cfg") else None,
        }

    def save(self) -> Path | None:
        """Write a step checkpoint (rank 0). Under FSDP every rank must call it (it gathers)."""
        model, optimizer = self.model, self.optimizer
        if self.fsdp and self._saves:
            model = _FullState(full_model_state(self.model, self._twins))
            optimizer = _FullState(full_optimizer_state(self.model, self.optimizer))
        if self.run_dir is None:
            return None
        path = self.run_dir / "checkpoints" / f"step-{self.step:07d}"
        if self.step in self._saved_steps:  # saved already by this run (e.g. interval, then end)
            return path
        # A directory of that name from an earlier run is replaced, never taken for this one.
        ckpt.save_checkpoint(path, model, optimizer, self.state())
        self._saved_steps.add(self.step)
        keep = set()
        if self.best_step is not None and self.best_step in self._saved_steps:
            best = self.run_dir / "checkpoints" / f"step-{self.best_step:07d}"
            keep.add(best)
            ckpt.atomic_write_json(
                self.run_dir / "checkpoints" / "best.json",
                {"step": self.best_step, "val_loss": self.best_val, "path": best.name},
            )
        ckpt.prune_checkpoints(self.run_dir, self.cfg.keep_last, keep=keep)
        return path

    def resume(self, directory: str | Path) -> None:
        """Continue exactly where a checkpoint left off (weights, optimizer, RNG, loader)."""
        if self.fsdp:  # every rank reads the full checkpoint and keeps its shard
            directory = Path(directory)
            ckpt.verify_checkpoint(directory)
            weights = load_file(directory / ckpt.WEIGHTS_FILE, device="cpu")
            opt_state = torch.load(
                directory / "optimizer.pt", map_location="cpu", weights_only=True
            )
            load_full_state(self.model, self.optimizer, weights, opt_state, self._twins)
            state = ckpt.read_json(directory / "state.json")
        else:
            state = ckpt.load_checkpoint(directory, self.model, self.optimizer)
        absent = [k for k in ("step", "tokens", "best_val", "rng") if k not in state]
        if absent:
            raise ckpt.CheckpointError(
                f"{Path(directory) / 'state.json'}: not a training state (no {', '.join(absent)})"
            )
        self.step, self.tokens = state["step"], state["tokens"]
        self.best_val, self.skipped_steps = state["best_val"], state.get("skipped_steps", 0)
        self.best_step, self.val = state.get("best_step"), state.get("val_loss")
        self._window_losses = list(state.get("window_losses", []))
        if state.get("loader") is not None:
            self.train_loader.load_state_dict(state["loader"])
        _set_rng_state(state["rng"])
        self._saved_steps.add(self.step)
        if self.best_step is not None and self.run_dir is not None:
            best = self.run_dir / "checkpoints" / f"step-{self.best_step:07d}"
            if (best / ckpt.MANIFEST_FILE).exists():
                self._saved_steps.add(self.best_step)  # still the best: pruning keeps it
        if self.run_dir is not None:
            # The run continues from here: what the old run logged and saved after this step
            # is replaced (its metrics now, its later checkpoints here), never mixed in.
            self.metrics.truncate_after(self.step)
            for later in ckpt.list_checkpoints(self.run_dir):
                if int(later.name.removeprefix("step-")) > self.step:
                    ckpt.remove_checkpoint(later)
                    tqdm.write(f"removed {later}: the resumed run replaces it")

    def unsharded_model(self) -> nn.Module | None:
        """The model with full tensors, for ``save_run``: ``self.model`` unless under FSDP.

        Under FSDP this is collective (every rank must call it); rank 0 gets an unsharded copy on
        the CPU, the other ranks None.
        """
        if not self.fsdp:
            return self.model
        state = full_model_state(self.model, self._twins)
        if not self.dist.is_main:
            return None
        with torch.random.fork_rng(devices=[]):
            plain = self._model_class(self.model.cfg)
        plain.load_state_dict(state)
        return plain.train(self.model.training)

    # ------------------------------------------------------------------------------------ steps

    def _micro_step(self, batch: Any) -> tuple[float, int]:
        amp = (
            torch.autocast(self.device.type, dtype=self.amp_dtype)
            if self.amp_dtype
            else nullcontext()
        )
        with amp:
            batch = to_device(shard_batch(batch, self.dist), self.device)
            loss, n_tokens = self.loss_fn(self.forward_model, batch)
        (loss / self.cfg.grad_accum).backward()
        return loss.item(), n_tokens

    def train_step(self, batches: Iterator[Any]) -> float | None:
        """One optimizer step; returns its mean loss, or None when skipped as non-finite."""
        lr = lr_at(self.step, self.cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        losses, n_total = [], 0
        for _ in range(self.cfg.grad_accum):
            loss, n = self._micro_step(next(batches))
            losses.append(loss)
            n_total += n
        if not self.fsdp:  # FSDP has already reduce-scattered (and averaged) the gradients
            all_reduce_grads(self.model, self.dist)
        clip = self.cfg.grad_clip if self.cfg.grad_clip > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        if hasattr(norm, "full_tensor"):  # sharded gradients: the norm is a replicated DTensor
            norm = norm.full_tensor()
        grad_norm = float(norm)
        mean_loss = mean_across_ranks(sum(losses) / len(losses), self.dist, self.device)
        n_total *= self.dist.world_size
        if not (math.isfinite(mean_loss) and math.isfinite(grad_norm)):
            self.optimizer.zero_grad(set_to_none=True)
            self.bad_steps += 1
            self.skipped_steps += 1
            self.step += 1
            return None
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.bad_steps = 0
        self.step += 1
        self.tokens += n_total
        self._last_grad_norm = grad_norm
        return mean_loss

    def _evaluate(self) -> float | None:
        if self.val_batches is None:
            return None

        def loss_over(batches: Callable[[], Iterator[Any]]) -> float:
            n = self.cfg.eval_batches
            return evaluate(self.model, batches, self.loss_fn, self.device, n, self.amp_dtype)

        # the same number on every rank (an all-reduce), so that they agree on a new best, whose
        # save is collective under FSDP
        val = mean_across_ranks(loss_over(self.val_batches), self.dist, self.device)
        self.metrics.write({"step": self.step, "val_loss": val, "val_ppl": math.exp(min(val, 50))})
        if self.cfg.eval_train and self.train_eval_batches is not None:
            train_loss = loss_over(self.train_eval_batches)
            self.metrics.write({"step": self.step, "train_eval_loss": train_loss})
        self.val = val
        if self.best_val is None or val < self.best_val:
            self.best_val, self.best_step = val, self.step
            if self.cfg.save_interval:  # keep the best weights: a checkpoint at each new best
                self.save()
        if self.on_eval:
            self.on_eval(self.step, val)
        # Under FSDP every rank must run the forward passes of sampling; only rank 0 logs.
        if self.sample is not None and (self.dist.is_main or self.fsdp):
            was_training = self.model.training
            text = self.sample(self.model.eval())
            self.model.train(was_training)
        if self.sample is not None and self.dist.is_main:
            self.metrics.write({"step": self.step, "sample": text})
            if self.progress:
                tqdm.write(f"[step {self.step}] val {val:.3f} | {text!r}")
        return val

    # ------------------------------------------------------------------------------------- run

    def fit(self, until_step: int | None = None) -> TrainResult:
        """Train to ``cfg.max_steps`` (or pause at ``until_step``, saving a checkpoint there)."""
        cfg = self.cfg
        last_step = min(until_step or cfg.max_steps, cfg.max_steps)
        start_time = time.perf_counter()
        self.model.train()
        batches = self.train_loader.batches()
        peak = peak_tflops(self.device)
        fpt = self._flops_per_token()
        window_tokens = 0  # tokens/s counts this call's steps only (the clock starts here)
        window_start = time.perf_counter()  # of the training time in the current window
        val, stopped = self.val, "max_steps"
        bar = tqdm(
            total=cfg.max_steps,
            initial=self.step,
            disable=not self.progress,
            desc="train",
            unit="step",
            dynamic_ncols=True,
        )
        budget = TimeBudget(self) if cfg.max_seconds else None
        paused = 0.0  # seconds of evaluation and saving in this call
        postfix: dict[str, str] = {} if val is None else {"val": f"{val:.3f}"}
        with _StopFlag() as stop:
            while self.step < last_step:
                tokens_before = self.tokens
                loss = self.train_step(batches)
                bar.update(1)
                elapsed = time.perf_counter() - start_time
                over_time = bool(cfg.max_seconds) and elapsed > cfg.max_seconds
                refit = budget is not None and budget.due(elapsed - paused)
                # every rank stops (and fits the budget) at the same step, whichever ranks saw
                # the clock run out, a signal or the time to fit again
                over_time, signalled, refit = any_across_ranks(
                    [over_time, stop.signum is not None, refit], self.dist, self.device
                )
                if refit:
                    message = budget.fit(elapsed - paused, elapsed)
                    if message:
                        last_step = min(until_step or cfg.max_steps, cfg.max_steps)
                        bar.total = cfg.max_steps
                        bar.write(message)
                if loss is None:
                    if self.bad_steps >= cfg.max_bad_steps:
                        stopped = "non_finite"
                        bar.write(
                            f"stopping: {self.bad_steps} consecutive steps had a non-finite "
                            f"loss or gradient norm (limit max_bad_steps={cfg.max_bad_steps})"
                        )
                        break
                    continue
                self._window_losses.append(loss)
                window_tokens += self.tokens - tokens_before
                if self.step % cfg.log_interval == 0 or self.step == cfg.max_steps:
                    elapsed = time.perf_counter() - window_start
                    window_losses = self._window_losses
                    record = {
                        "step": self.step,
                        "loss": sum(window_losses) / len(window_losses),
                        "lr": lr_at(self.step - 1, cfg),
                        "grad_norm": self._last_grad_norm,
                        "tokens": self.tokens,
                        "tokens_per_s": window_tokens / max(elapsed, 1e-9),
                        "elapsed_s": time.perf_counter() - start_time,
                    }
                    if peak and fpt:
                        record["mfu"] = record["tokens_per_s"] * fpt / (peak * 1e12)
                    self.metrics.write(record)
                    postfix["loss"] = f"{record['loss']:.3f}"
                    postfix["lr"] = f"{record['lr']:.1e}"
                    postfix["tok/s"] = f"{record['tokens_per_s']:.0f}"
                    if "mfu" in record:
                        postfix["mfu"] = f"{100 * record['mfu']:.0f}%"
                    bar.set_postfix(postfix, refresh=False)
                    self._window_losses, window_tokens = [], 0
                    window_start = time.perf_counter()
                paused_at = time.perf_counter()  # evaluation and saving do not count as training
                if self.step % cfg.eval_interval == 0 or self.step == cfg.max_steps or over_time:
                    val = self._evaluate()
                    if val is not None:  # shown from now on (the bar showed the previous one)
                        postfix["val"] = f"{val:.3f}"
                        bar.set_postfix(postfix, refresh=False)
                if cfg.save_interval and self.step % cfg.save_interval == 0:
                    self.save()
                paused += time.perf_counter() - paused_at
                window_start += time.perf_counter() - paused_at
                if signalled:
                    stopped = "signal"
                    got = f"signal {stop.signum}" if stop.signum else "a signal (on another rank)"
                    bar.write(f"received {got}: saving a checkpoint and stopping")
                    break
                if over_time:
                    stopped = "max_seconds"
                    break
            else:
                if self.step < cfg.max_steps:
                    stopped = "paused"
        bar.close()
        self.metrics.close()
        if self._saves and (stopped in ("signal", "paused") or cfg.save_interval):
            self.save()
        if self.run_dir is not None:
            if self.metrics.records:
                from scratchllm.viz import plot_training

                plot_training(
                    [(self.run_dir.name, self.metrics.records)], self.run_dir / "loss.png"
                )
        train_losses = [r["loss"] for r in self.metrics.records if "loss" in r]
        return TrainResult(
            step=self.step,
            train_loss=train_losses[-1] if train_losses else float("nan"),
            val_loss=val,
            best_val_loss=self.best_val,
            tokens=self.tokens,
            seconds=time.perf_counter() - start_time,
            stopped=stopped,
            history=list(self.metrics.records),
        )

    def _flops_per_token(self) -> float | None:
        config = getattr(self.model, "cfg", None)
        if config is None or not hasattr(config, "n_layer"):
            return None
        n_params = sum(p.numel() for p in self.model.parameters())
        return flops_per_token(n_params, config.n_layer, config.n_embd, config.context_length)
