"""Helpers shared by the commands: training arguments, reading files the user names."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scratchllm.cli.argtypes import minutes_or_none
from scratchllm.errors import ConfigError
from scratchllm.train.config import TrainConfig

if TYPE_CHECKING:
    from scratchllm.train.pretrain import PretrainReport

# The demo's model: small enough to learn ~1 MB of text on a 2-core CPU in a few minutes.
DEFAULT_MODEL = {"context_length": 128, "n_embd": 192, "n_layer": 4, "n_head": 6, "dropout": 0.0}


def add_model_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("model")
    g.add_argument(
        "--context-length",
        type=int,
        default=DEFAULT_MODEL["context_length"],
        help="tokens per training window (default %(default)s)",
    )
    g.add_argument(
        "--n-embd",
        type=int,
        default=DEFAULT_MODEL["n_embd"],
        help="model width (default %(default)s)",
    )
    g.add_argument(
        "--n-layer",
        type=int,
        default=DEFAULT_MODEL["n_layer"],
        help="transformer blocks (default %(default)s)",
    )
    g.add_argument(
        "--n-head",
        type=int,
        default=DEFAULT_MODEL["n_head"],
        help="attention heads (default %(default)s)",
    )
    g.add_argument(
        "--dropout",
        type=float,
        default=DEFAULT_MODEL["dropout"],
        help="dropout rate (default %(default)s)",
    )
    g.add_argument("--untied", action="store_true", help="separate output head (no weight tying)")
    g.add_argument(
        "--vocab-size",
        type=int,
        default=4096,
        help="BPE vocabulary size, incl. 256 bytes and special tokens (default 4096)",
    )


def add_train_args(parser: argparse.ArgumentParser, steps: int = 1000) -> None:
    g = parser.add_argument_group("training")
    g.add_argument("--steps", type=int, default=steps, help="optimizer steps (default %(default)s)")
    g.add_argument(
        "--max-minutes",
        type=minutes_or_none,
        default=None,
        help="stop after this many minutes of training even if steps remain (default "
        "%(default)s; none = no limit)",
    )
    g.add_argument(
        "--batch-size", type=int, default=16, help="windows per step (default %(default)s)"
    )
    g.add_argument(
        "--lr", type=float, default=2e-3, help="peak learning rate (default %(default)s)"
    )
    g.add_argument(
        "--min-lr", type=float, default=2e-4, help="floor of the cosine decay (default %(default)s)"
    )
    g.add_argument(
        "--warmup-steps",
        type=int,
        default=50,
        help="linear warm-up (default %(default)s, at most a tenth of --steps, so that the "
        "learning rate decays in short runs too)",
    )
    g.add_argument(
        "--weight-decay", type=float, default=0.1, help="AdamW weight decay (default %(default)s)"
    )
    g.add_argument(
        "--eval-interval",
        type=int,
        default=100,
        help="steps between evaluations (default %(default)s)",
    )
    g.add_argument(
        "--save-interval",
        type=int,
        default=0,
        help="steps between resumable checkpoints (0 = none)",
    )
    g.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1, mps")
    g.add_argument("--seed", type=int, default=1337, help="random seed (default %(default)s)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def model_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "context_length": args.context_length,
        "n_embd": args.n_embd,
        "n_layer": args.n_layer,
        "n_head": args.n_head,
        "dropout": args.dropout,
        "tie_embeddings": not args.untied,
    }


def train_config(args: argparse.Namespace) -> TrainConfig:
    if args.max_minutes is not None and not args.max_minutes > 0:
        raise ConfigError(f"--max-minutes must be > 0, got {args.max_minutes}")
    return TrainConfig(
        max_steps=args.steps,
        max_seconds=args.max_minutes * 60 if args.max_minutes is not None else None,
        batch_size=args.batch_size,
        lr=args.lr,
        min_lr=min(args.min_lr, args.lr),
        warmup_steps=min(args.warmup_steps, args.steps // 10),
        weight_decay=args.weight_decay,
        eval_interval=args.eval_interval,
        save_interval=args.save_interval,
        device=args.device,
        seed=args.seed,
    )


def print_report(report: PretrainReport) -> None:
    r = report.result
    print()
    for prompt, text in report.samples:
        print(f"--- {prompt!r}\n{prompt}{text}\n")
    print(
        f"trained {r.step} steps on {r.tokens:,} tokens in {r.seconds:.0f} s "
        f"({r.tokens / max(r.seconds, 1e-9):,.0f} tokens/s; stopped: {r.stopped})"
    )
    # the whole validation split (the progress bar's `val` used eval_batches batches of it)
    print(f"validation loss:             {report.val_loss:.3f} nats/token (whole split)")
    print(f"unigram baseline (same ids): {report.unigram_loss:.3f} nats/token")
    print(f"margin:                      {report.unigram_loss - report.val_loss:.3f} nats/token")
    print(f"run saved to {report.run_dir}/ (weights, tokenizer, config, metrics.jsonl, loss.png)")
    print(f'continue with: {command_name()} generate --run {report.run_dir} --prompt "The "')


def command_name() -> str:
    """How to call this CLI again: ``scratchllm`` when that is on PATH, else the path it was
    started by (``.venv/bin/scratchllm`` after ``make demo``), else ``python -m scratchllm``."""
    import os
    import shutil
    import sys

    if shutil.which("scratchllm"):
        return "scratchllm"
    started = sys.argv[0] if sys.argv else ""
    if os.path.basename(started) == "scratchllm" and os.path.isfile(started):
        return os.path.relpath(started)
    return "python -m scratchllm"


def read_text_file(path: str, what: str, newline: str | None = None) -> str:
    """The text of a file named on the command line; one that is not UTF-8 is an error naming
    the option, the file and the byte (a bare codec message named neither)."""
    from scratchllm.errors import DataError

    try:
        with open(path, encoding="utf-8", newline=newline) as f:
            return f.read()
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{what} {path}: not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None


def note_adapter_run(run_dir: str) -> None:
    """Say on stderr when ``run_dir`` is an unmerged LoRA adapter run: the command loads it as its
    base run with the adapter merged in memory, and writes nothing into it."""
    import sys
    from pathlib import Path

    from scratchllm.errors import ScratchLLMError
    from scratchllm.finetune.lora import is_adapter_run, read_adapter_config

    if not is_adapter_run(run_dir):
        return
    try:
        base = read_adapter_config(run_dir)[1].get("base_run")
    except ScratchLLMError:
        return  # loading the run reports what is wrong with adapter.json
    if not isinstance(base, str) or not Path(base).is_dir():
        return  # nor is it applied: loading the run says the base is missing
    print(
        f"note: {run_dir} is an unmerged LoRA adapter, applied in memory to its base run {base} "
        f"(`scratchllm lora merge --run {run_dir}` makes a standalone run)",
        file=sys.stderr,
    )


@contextlib.contextmanager
def removed_if_left_empty(path: str | Path) -> Iterator[None]:
    """For a command that makes the directory ``path``: when it fails and leaves that directory
    new and still empty (bad data found before anything was written), remove it again."""
    path = Path(path)
    existed = path.exists()
    try:
        yield
    except BaseException:
        if not existed and path.is_dir() and not any(path.iterdir()):
            path.rmdir()
        raise
