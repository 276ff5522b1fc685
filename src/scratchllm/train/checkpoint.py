"""Run directories and checkpoints, written atomically so that nothing is ever half-saved.

A run directory holds everything needed to use a trained model::

    RUN/
      config.json          {"format": "scratchllm-run", "version": 1, "model": {...ModelConfig}}
      model.safetensors    final (or best) weights
      tokenizer.json       the tokenizer, in scratchllm's own format
      train_config.json    the TrainConfig used
      metrics.jsonl        one JSON record per logged step / evaluation
      loss.png             training and validation loss curves
      checkpoints/step-000200/{model.safetensors, optimizer.pt, state.json, manifest.json}

Every file is first written beside its target under a temporary name, flushed with fsync, then
renamed over the target (``os.replace`` is atomic on POSIX). A checkpoint directory is assembled
under a temporary name and renamed into place, with a manifest of SHA-256 digests written last, so
a directory without a valid manifest is known to be incomplete.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from scratchllm.errors import CheckpointError

RUN_FORMAT = "scratchllm-run"
RUN_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
MANIFEST_FILE = "manifest.json"


# --------------------------------------------------------------------------------- atomic files


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give a new file (mkstemp gives 0o600)."""
    return 0o666 & ~_umask()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a mix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, file_mode())  # mkstemp makes it owner-only; give the usual mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# -------------------------------------------------------------------------------------- weights


def weights_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's tensors with tied duplicates removed (safetensors stores each storage once)."""
    state, seen = {}, {}
    for name, tensor in model.state_dict().items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if key in seen:
            continue
        seen[key] = name
        state[name] = tensor.detach().to("cpu").contiguous()
    return state


def weights_bytes(model: nn.Module, metadata: dict[str, str] | None = None) -> bytes:
    from safetensors.torch import save

    return save(weights_state(model), metadata=metadata)


def save_weights(
    model: nn.Module, path: str | Path, metadata: dict[str, str] | None = None
) -> None:
    atomic_write_bytes(path, weights_bytes(model, metadata))


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load safetensors weights into ``model``; every missing or mis-shaped tensor is listed."""
    path = Path(path)
    try:
        tensors = load_file(path, device="cpu")
    except FileNotFoundError:
        raise CheckpointError(f"{path}: weights file not found") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    expected = model.state_dict()
    problems = [f"unexpected tensor {k}" for k in sorted(set(tensors) - set(expected))]
    for name, tensor in expected.items():
        if name in tensors and tuple(tensors[name].shape) != tuple(tensor.shape):
            problems.append(
                f"{name}: shape {tuple(tensors[name].shape)} in file, {tuple(tensor.shape)} in model"
            )
    missing = [k for k in expected if k not in tensors]
    # A tied tensor is stored once; its twin is satisfied through the shared storage.
    missing = [k for k in missing if not _is_tied_twin(model, k, tensors)]
    problems += [f"missing tensor {k}" for k in missing]
    if problems:
        raise CheckpointError(f"{path}: weights do not match the model: " + "; ".join(problems))
    model.load_state_dict(tensors, strict=False)


def _is_tied_twin(model: nn.Module, name: str, tensors: dict[str, torch.Tensor]) -> bool:
    state = model.state_dict()
    ptr = state[name].untyped_storage().data_ptr()
    return any(
        other in tensors and state[other].untyped_storage().data_ptr() == ptr
        for other in state
        if other != name
    )


# ---------------------------------------------------------------------------------- checkpoints


def save_checkpoint(
    directory: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    state: dict[str, Any],
) -> Path:
    """Write a complete checkpoint directory atomically; returns its path."""
    directory = Path(directory)
    bad = [
        n for n, t in model.state_dict().items() if t.is_floating_point() and not t.isfinite().all()
    ]
    if bad:
        raise CheckpointError(
            f"refusing to save {directory}: non-finite values in {', '.join(bad)}"
        )
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # as mkdir would have made it
        files = {WEIGHTS_FILE: weights_bytes(model)}
        if optimizer is not None:
            buffer = io.BytesIO()
            torch.save(optimizer.state_dict(), buffer)
            files["optimizer.pt"] = buffer.getvalue()
        files["state.json"] = (json.dumps(state, indent=2, sort_keys=True) + "\n").encode()
        for name, data in files.items():
            atomic_write_bytes(tmp / name, data)
        manifest = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
        atomic_write_json(tmp / MANIFEST_FILE, manifest)
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(directory, old)
            os.replace(tmp, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, directory)
        _fsync_dir(directory.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


REQUIRED_CHECKPOINT_FILES = (WEIGHTS_FILE, "state.json")


def verify_checkpoint(directory: str | Path) -> None:
    """Raise CheckpointError unless the manifest lists the weights and the training state, and
    every file it lists is present and intact (SHA-256), and the state is a JSON object."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: checkpoint directory not found")
    path = directory / MANIFEST_FILE
    manifest = read_json(path)
    if not isinstance(manifest, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in manifest.items()
    ):
        raise CheckpointError(f"{path}: not a manifest (an object of file name -> SHA-256)")
    missing = [name for name in REQUIRED_CHECKPOINT_FILES if name not in manifest]
    if (directory / "optimizer.pt").exists() and "optimizer.pt" not in manifest:
        missing.append("optimizer.pt")
    if missing:
        raise CheckpointError(f"{path}: does not list {', '.join(missing)} (incomplete)")
    for name, digest in manifest.items():
        path = directory / name
        if not path.is_file():
            raise CheckpointError(f"{path}: listed in the manifest but missing")
        if sha256_file(path) != digest:
            raise CheckpointError(f"{path}: contents do not match the manifest (corrupt)")
    if not isinstance(read_json(directory / "state.json"), dict):
        raise CheckpointError(f"{directory / 'state.json'}: not a JSON object")


def load_checkpoint(
    directory: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
) -> dict[str, Any]:
    """Verify, then load weights (and optimizer state) on the CPU first; returns ``state``."""
    directory = Path(directory)
    verify_checkpoint(directory)
    load_weights(model, directory / WEIGHTS_FILE)
    if optimizer is not None:
        opt_state = torch.load(directory / "optimizer.pt", map_location="cpu", weights_only=True)
        optimizer.load_state_dict(opt_state)
    return read_json(directory / "state.json")


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete step checkpoints of a run, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [
        p for p in root.iterdir() if p.name.startswith("step-") and (p / MANIFEST_FILE).exists()
    ]
    return sorted(found, key=lambda p: p.name)


def remove_checkpoint(path: Path) -> None:
    """Delete a checkpoint directory: renamed out of sight first (atomic), then removed, so a
    process killed half-way never leaves a checkpoint that looks complete but is not."""
    doomed = path.with_name(f".{path.name}.deleting")
    shutil.rmtree(doomed, ignore_errors=True)
    os.replace(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def prune_checkpoints(run_dir: str | Path, keep_last: int, keep: set[Path] = frozenset()) -> None:
    """Delete all but the newest ``keep_last`` step checkpoints (and any in ``keep``)."""
    checkpoints = list_checkpoints(run_dir)
    for path in checkpoints[: max(0, len(checkpoints) - keep_last)]:
        if path not in keep:
            remove_checkpoint(path)


def remove_partial_saves(run_dir: str | Path) -> list[Path]:
    """Delete what a process killed while saving left behind in a run: checkpoint directories
    being assembled or deleted (``checkpoints/.step-*``) and temporary files (``.NAME.*.tmp``).
    Call it only while no other process writes to the run. Returns what was removed."""
    run_dir = Path(run_dir)
    removed = []
    root = run_dir / "checkpoints"
    if root.is_dir():
        for path in root.iterdir():
            if path.name.startswith(".step-") and path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    for folder in (run_dir, root):
        if folder.is_dir():
            for path in folder.glob(".*.tmp"):
                if path.is_file():
                    path.unlink(missing_ok=True)
                    removed.append(path)
    return removed


# ------------------------------------------------------------------------------------------ runs

# What training writes into a run directory; a new run over an old one removes these first.
RUN_ENTRIES = (
    "checkpoints",
    "metrics.jsonl",
    "loss.png",
    "tensorboard",
    CONFIG_FILE,
    WEIGHTS_FILE,
    TOKENIZER_FILE,
    "train_config.json",
    "job.json",
    "summary.json",
)


def run_entries(run_dir: str | Path) -> list[str]:
    """The training outputs already present in ``run_dir`` (empty for a new directory)."""
    run_dir = Path(run_dir)
    return [name for name in RUN_ENTRIES if (run_dir / name).exists()]


def clear_run(run_dir: str | Path) -> list[str]:
    """Remove the training outputs of an earlier run from ``run_dir`` (nothing else in it)."""
    run_dir = Path(run_dir)
    removed = run_entries(run_dir)
    for name in removed:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    return removed


@dataclass
class Run:
    """A loaded run: the model (eval mode), its tokenizer (None if the run has none), and the
    raw config record."""

    path: Path
    model: nn.Module
    tokenizer: Any
    config: dict[str, Any]


def save_run(run_dir: str | Path, model: nn.Module, model_config: Any, tokenizer: Any) -> None:
    """Write config, weights and tokenizer of a run (each file atomically)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(run_dir)
    save_weights(model, run_dir / WEIGHTS_FILE, metadata={"format": RUN_FORMAT})
    record = {
        "format": RUN_FORMAT,
        "version": RUN_VERSION,
        "architecture": type(model).__name__,
        "model": model_config.to_dict(),
    }
    atomic_write_json(run_dir / CONFIG_FILE, record)


def read_run_record(run_dir: str | Path) -> dict[str, Any]:
    """The validated ``config.json`` record of a run directory (any architecture)."""
    path = Path(run_dir) / CONFIG_FILE
    record = read_json(path)
    if not isinstance(record, dict) or record.get("format") != RUN_FORMAT:
        raise CheckpointError(f"{path}: not a scratchllm run config")
    version, architecture = record.get("version", 0), record.get("architecture", "")
    if isinstance(version, bool) or not isinstance(version, int):
        raise CheckpointError(f"{path}: field 'version' must be an integer, got {version!r}")
    if not isinstance(architecture, str):
        raise CheckpointError(f"{path}: field 'architecture' must be a name, got {architecture!r}")
    if version > RUN_VERSION:
        raise CheckpointError(
            f"{path}: format version {record['version']} is newer than this "
            f"scratchllm understands ({RUN_VERSION}); upgrade scratchllm"
        )
    if "model" not in record:
        raise CheckpointError(f"{path}: field 'model' is missing")
    if not isinstance(record["model"], dict):
        raise CheckpointError(
            f"{path}: field 'model' must be an object of model settings, got {record['model']!r}"
        )
    return record


_ADAPTERS_LOADING: set[Path] = set()  # adapter runs being loaded: a base chain must not loop


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> Run:
    """Load a run directory written by :func:`save_run` (or by training), or an unmerged LoRA
    adapter run (``adapter.json``, no ``config.json``) applied to its base run in memory."""
    from scratchllm.model import EncoderModel, GPTModel, ModelConfig
    from scratchllm.tokenizer import load_tokenizer

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: run directory not found")
    if (run_dir / "adapter.json").exists() and not (run_dir / CONFIG_FILE).exists():
        # `finetune ... --lora-r` output not yet merged: its base run with the adapter merged in
        # memory (nothing written); `scratchllm lora merge` makes it a standalone run
        from scratchllm.finetune.lora import load_adapter_run

        key = run_dir.resolve()
        if key in _ADAPTERS_LOADING:
            raise CheckpointError(f"{run_dir / 'adapter.json'}: its base run chain loops back here")
        _ADAPTERS_LOADING.add(key)
        try:
            return load_adapter_run(run_dir, device)
        finally:
            _ADAPTERS_LOADING.discard(key)
    record = read_run_record(run_dir)
    architecture = record.get("architecture", "GPTModel")
    builders = {"GPTModel": GPTModel, "EncoderModel": EncoderModel}
    if architecture not in builders:
        raise CheckpointError(
            f"{run_dir / CONFIG_FILE}: architecture {architecture!r} is not a language model run "
            f"(expected one of {sorted(builders)}); classifier runs load with "
            "scratchllm.finetune.classify.load_classifier / `scratchllm classify`"
        )
    try:
        model_config = ModelConfig.from_dict(record["model"])
    except CheckpointError:
        raise
    except ValueError as exc:  # ConfigError included: say which file holds the bad field
        raise CheckpointError(f"{run_dir / CONFIG_FILE}: field 'model': {exc}") from None
    model = builders[architecture](model_config)
    load_weights(model, run_dir / WEIGHTS_FILE)
    # A converted checkpoint may come without a tokenizer we can read (e.g. WordPiece).
    tokenizer = load_tokenizer(run_dir) if (run_dir / TOKENIZER_FILE).exists() else None
    if tokenizer is not None and tokenizer.vocab_size > model_config.vocab_size:
        raise CheckpointError(
            f"{run_dir / TOKENIZER_FILE}: {tokenizer.vocab_size} token ids, more than the "
            f"model's vocab_size {model_config.vocab_size} ({run_dir / CONFIG_FILE}): this "
            "tokenizer does not belong to this model"
        )
    model.to(device).eval()
    return Run(path=run_dir, model=model, tokenizer=tokenizer, config=record)
