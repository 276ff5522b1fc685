"""Resuming a fine-tuning run: its settings are saved beside the checkpoints and checked first.

A fine-tuning job writes ``finetune.json`` (the task's settings: base run, template, LoRA, data
sizes and a sha256 of the encoded examples, ...) into its output directory before training. ``--resume`` compares it, and the
``train_config`` / ``model_config`` saved in the newest checkpoint's ``state.json``, with the new
settings before anything is loaded, and names every field that differs with both values::

    RUN: cannot resume, settings differ: train.batch_size: 8 in checkpoint, 4 now; lora.r: 8 ...

What decides which batches come next or what the weights mean must match (batch size, gradient
accumulation, seed, data, template, LoRA, ...); the length of the run, the learning rate and the
logging / evaluation / checkpoint intervals may change (to train longer, say). A run started
before ``finetune.json`` existed is still checked: its batch settings come from the checkpoint and
its LoRA rank from the checkpoint's tensors.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from scratchllm.errors import CheckpointError, ScratchLLMError
from scratchllm.train.checkpoint import (
    WEIGHTS_FILE,
    atomic_write_json,
    list_checkpoints,
    read_json,
    remove_checkpoint,
)
from scratchllm.train.config import RESUME_KEYS, TrainConfig
from scratchllm.train.loop import Trainer, TrainResult

SETTINGS_FILE = "finetune.json"
# settings fields newer than some runs' finetune.json: compared only when the run saved them
ADDED_LATER = ("data_sha256",)
# How a run stops when it is not finished: it saved a checkpoint and can be resumed.
INTERRUPTED = ("signal", "paused")


def write_settings(out: str | Path, settings: dict[str, Any]) -> None:
    atomic_write_json(Path(out) / SETTINGS_FILE, settings)


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_show(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return str(value)


def _differences(prefix: str, saved: Any, now: Any, describe_none: str) -> list[str]:
    """``field: A in checkpoint, B now`` for every leaf that differs (dicts are walked)."""
    if isinstance(saved, dict) and isinstance(now, dict):
        out = []
        for key in dict.fromkeys([*saved, *now]):
            name = f"{prefix}.{key}" if prefix else str(key)
            out += _differences(name, saved.get(key), now.get(key), "none")
        return out
    if isinstance(saved, list | tuple) and isinstance(now, list | tuple):
        saved, now = list(saved), list(now)
    if saved == now:
        return []
    show_saved = describe_none if saved is None else _show(saved)
    show_now = describe_none if now is None else _show(now)
    return [f"{prefix}: {show_saved} in checkpoint, {show_now} now"]


def _checkpoint_lora(directory: Path) -> dict[str, Any] | None:
    """The LoRA rank of a checkpoint, read from its adapter tensors (None: no adapters)."""
    from safetensors import safe_open

    with safe_open(str(directory / WEIGHTS_FILE), framework="pt") as f:
        for key in f.keys():
            if key.endswith(".lora_A"):
                return {"r": f.get_slice(key).get_shape()[0]}
    return None


def check_resume(
    out: str | Path,
    settings: dict[str, Any],
    train_config: dict[str, Any],
    model_config: dict[str, Any] | None = None,
) -> Path | None:
    """The newest checkpoint of ``out`` (None: nothing to resume), after checking that it was
    written with these settings; raises ``CheckpointError`` naming each field that differs."""
    checkpoints = list_checkpoints(out)
    if not checkpoints:
        return None
    last = checkpoints[-1]
    state = read_json(last / "state.json")
    diff = []
    saved_path = Path(out) / SETTINGS_FILE
    if saved_path.exists():
        saved = read_json(saved_path)
        for key in dict.fromkeys([*saved, *settings]):
            if key in ADDED_LATER and key not in saved:
                continue  # a run started before the field existed
            what = "none (full fine-tuning)" if key == "lora" else "none"
            diff += _differences(key, saved.get(key), settings.get(key), what)
    elif "lora" in settings:  # a run from before finetune.json: its rank is in its tensors
        now = settings["lora"]
        try:
            saved_lora = _checkpoint_lora(last)
        except (OSError, ValueError, ScratchLLMError) as exc:
            raise CheckpointError(f"{last / WEIGHTS_FILE}: not readable ({exc})") from None
        now_lora = {"r": now["r"]} if now else None
        diff += _differences("lora", saved_lora, now_lora, "none (full fine-tuning)")
    saved_train = state.get("train_config") or {}
    diff += [
        f"train.{k}: {saved_train[k]} in checkpoint, {train_config[k]} now"
        for k in RESUME_KEYS
        if k in saved_train and saved_train[k] != train_config[k]
    ]
    saved_model = state.get("model_config")
    if saved_model and model_config is not None:
        diff += _differences("model", saved_model, model_config, "none")
    if diff:
        raise CheckpointError(
            f"{out}: cannot resume {last.name}, settings differ: {'; '.join(diff)} "
            "(resume with the settings the run was started with, or train into a new directory)"
        )
    return last


def start_run(
    out: Path,
    resume: bool,
    settings: dict[str, Any],
    train_cfg: TrainConfig,
    model: Any,
    log: Callable[[str], None],
) -> Path | None:
    """Check a resume against the saved settings (before anything is written), then record this
    run's settings; returns the checkpoint to resume from (None: a fresh start)."""
    model_cfg = model.cfg.to_dict() if hasattr(model, "cfg") else None
    last = check_resume(out, settings, train_cfg.to_dict(), model_cfg) if resume else None
    if resume and last is None:
        log(f"resume: no checkpoint in {out}/checkpoints; starting afresh")
    out.mkdir(parents=True, exist_ok=True)
    if last is None:  # a fresh start: nothing of an earlier run in `out` may be taken for this one
        (out / "metrics.jsonl").unlink(missing_ok=True)
        stale = list_checkpoints(out)
        for path in stale:
            remove_checkpoint(path)
        if stale:
            log(f"removed {len(stale)} checkpoint(s) of an earlier run from {out}/checkpoints")
    atomic_write_json(out / "train_config.json", train_cfg.to_dict())
    write_settings(out, settings)
    return last


def run_trainer(
    trainer: Trainer, resume_from: Path | None, log: Callable[[str], None]
) -> TrainResult:
    """Resume (a loader or optimizer mismatch is a CheckpointError), then train."""
    if resume_from is not None:
        log(f"resuming from {resume_from}")
        try:
            trainer.resume(resume_from)
        except ValueError as exc:
            if isinstance(exc, ScratchLLMError):
                raise
            raise CheckpointError(f"{resume_from}: cannot resume: {exc}") from None
    return trainer.fit()


def newest_checkpoint(out: Path) -> Path | None:
    checkpoints = list_checkpoints(out)
    return checkpoints[-1] if checkpoints else None
