"""`scratchllm pretrain`: a configurable, resumable pretraining run (GPT or masked-LM encoder)."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain",
        help="pretrain from a TOML/JSON job file with overrides (resumable, multi-process)",
        description=(
            "Pretrain a GPT (next-token) or a BERT-like encoder (masked tokens) from a job file. "
            "Flags override the file; the resolved job is printed first. Run under torchrun for "
            "data-parallel training. See docs/training.md for the job file format."
        ),
    )
    p.add_argument("--config", help="job file (.toml or .json)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a job key, e.g. train.lr=1e-3 or model.n_layer=6 (repeatable)",
    )
    p.add_argument("--out", help="run directory (overrides `out`)")
    p.add_argument("--data", help="text source (overrides data.path)")
    p.add_argument("--shards", help="prepared shard directory (overrides data.shards)")
    p.add_argument("--objective", choices=["next-token", "masked"])
    p.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        help="continue from the newest checkpoint in the run (or from DIR)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start over in a run directory that holds an earlier run (its checkpoints, "
        "metrics and weights are removed); without it such a directory is refused",
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from scratchllm.train.job import load_job, resolve_configs, run_job

    overrides = list(args.set)
    for key, value in (
        ("out", args.out),
        ("data.path", args.data),
        ("data.shards", args.shards),
        ("objective", args.objective),
        ("resume", args.resume),
        ("overwrite", True if args.overwrite else None),
    ):
        if value is not None:
            overrides.append(f"{key}={json.dumps(value)}")
    job = load_job(args.config, overrides)
    # every field as the run will use it (defaults and preset included); fails fast on bad ones
    model_cfg, train_cfg = resolve_configs(job, vocab_size=max(job.data.vocab_size, 1))
    resolved = job.to_dict()
    resolved["model"] = {**model_cfg.to_dict(), "vocab_size": "(the tokenizer's)"}
    resolved["train"] = train_cfg.to_dict()
    print("resolved job:")
    print(json.dumps(resolved, indent=2))
    result = run_job(job, progress=not args.no_progress)
    val = "not measured" if result.val_loss is None else f"{result.val_loss:.4f}"
    print(
        f"stopped after step {result.step} ({result.stopped}); "
        f"last train loss {result.train_loss:.4f}; validation loss {val}"
    )
    print(f"run saved to {job.out}/")
    return 0
