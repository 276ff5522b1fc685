"""Hugging Face checkpoints <-> our run directories (what `convert` and `export` do).

A converted run is an ordinary run directory (config.json, model.safetensors, tokenizer.json), so
every command that takes `--run` works on it; its config.json also records where it came from
under "interop", which export uses to leave out heads the checkpoint never had.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from scratchllm.errors import CheckpointError, TokenizerError
from scratchllm.interop.hf_files import load_hf, save_hf, unique_tensors, write_safetensors
from scratchllm.interop.hf_tokenizer import load_hf_tokenizer, save_hf_tokenizer
from scratchllm.model.config import ModelConfig
from scratchllm.model.encoder import EncoderModel
from scratchllm.tokenizer.bpe import BPETokenizer
from scratchllm.train.checkpoint import (
    CONFIG_FILE,
    RUN_FORMAT,
    RUN_VERSION,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    Run,
    atomic_write_json,
    load_run,
    load_weights,
    read_json,
)


@dataclass
class Converted:
    """What `convert_to_run` wrote, for the CLI to report."""

    run_dir: Path
    layout: str
    cfg: ModelConfig
    num_parameters: int
    initialised: list[str]
    notes: list[str] = field(default_factory=list)


def convert_to_run(
    src: str | Path,
    run_dir: str | Path,
    *,
    dtype: torch.dtype | None = None,
    cache_dir: str | Path | None = None,
) -> Converted:
    """Import a HF checkpoint (directory or Hub id) and write it as a run directory."""
    run_dir = Path(run_dir)
    if (run_dir / CONFIG_FILE).exists():
        raise CheckpointError(f"{run_dir}: already holds a run; choose another output directory")
    ckpt = load_hf(src, dtype=dtype, cache_dir=cache_dir)
    notes = [f"{part} is not in the checkpoint: freshly initialised" for part in ckpt.initialised]
    try:
        tokenizer: BPETokenizer | None = load_hf_tokenizer(ckpt.directory)
    except TokenizerError as exc:
        tokenizer = None
        notes.append(f"no tokenizer converted ({exc}); the run has weights only")
    if tokenizer is not None and tokenizer.vocab_size > ckpt.cfg.vocab_size:
        notes.append(
            f"tokenizer has {tokenizer.vocab_size} ids but the model only {ckpt.cfg.vocab_size}"
        )
    interop = {"source": str(src), "hf_layout": ckpt.layout, "initialised": ckpt.initialised}
    write_run(run_dir, ckpt.model, ckpt.cfg, tokenizer, interop=interop)
    n_params = sum(p.numel() for p in unique_tensors(ckpt.model).values())
    return Converted(run_dir, ckpt.layout, ckpt.cfg, n_params, ckpt.initialised, notes)


def write_run(
    run_dir: Path,
    model: torch.nn.Module,
    cfg: ModelConfig,
    tokenizer: Any | None,
    interop: dict[str, Any] | None = None,
) -> None:
    """A run directory like `save_run`'s, with weights streamed (no second copy in memory)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if tokenizer is not None:
        tokenizer.save(run_dir)
    write_safetensors(run_dir / WEIGHTS_FILE, unique_tensors(model), {"format": RUN_FORMAT})
    record = {
        "format": RUN_FORMAT,
        "version": RUN_VERSION,
        "architecture": type(model).__name__,
        "model": cfg.to_dict(),
    }
    atomic_write_json(run_dir / CONFIG_FILE, record | ({"interop": interop} if interop else {}))


def load_any_run(run_dir: str | Path, device: str | torch.device = "cpu") -> Run:
    """`load_run` for decoder runs; encoder runs (architecture "EncoderModel") built here."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).exists():  # load_run's errors, or an unmerged LoRA run
        return load_run(run_dir, device)
    record = read_json(run_dir / CONFIG_FILE)
    if not isinstance(record, dict) or record.get("architecture") != "EncoderModel":
        return load_run(run_dir, device)
    if record.get("format") != RUN_FORMAT or "model" not in record:
        raise CheckpointError(f"{run_dir / CONFIG_FILE}: not a scratchllm run config")
    model = EncoderModel(ModelConfig.from_dict(record["model"]))
    load_weights(model, run_dir / WEIGHTS_FILE)
    tokenizer = None
    if (run_dir / TOKENIZER_FILE).is_file():
        from scratchllm.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(run_dir)
    model.to(device).eval()
    return Run(path=run_dir, model=model, tokenizer=tokenizer, config=record)


def export_run(run_dir: str | Path, out_dir: str | Path) -> list[Path]:
    """Write a run in the HF layout (config, safetensors, tokenizer files); returns the files."""
    run = load_any_run(run_dir)
    skip = tuple((run.config.get("interop") or {}).get("initialised", []))
    out_dir = Path(out_dir)
    save_hf(run.model, out_dir, skip_parts=skip)
    files = [out_dir / "config.json", out_dir / "model.safetensors"]
    if isinstance(run.tokenizer, BPETokenizer):
        files += save_hf_tokenizer(run.tokenizer, out_dir, run.model.cfg.context_length)
    elif run.tokenizer is None:
        warnings.warn(
            f"{run_dir} has no tokenizer: exported the model only (config.json, model.safetensors)",
            stacklevel=2,
        )
    else:
        kind = getattr(run.tokenizer, "mode", type(run.tokenizer).__name__)
        warnings.warn(
            f"the run's {kind}-level tokenizer was not exported: the Hugging Face tokenizer files "
            "describe byte-level BPE only; exported the model only (config.json, "
            f"model.safetensors); its tokenizer stays in {Path(run_dir) / 'tokenizer.json'} "
            "(load it with scratchllm.tokenizer.load_tokenizer)",
            stacklevel=2,
        )
    return files
