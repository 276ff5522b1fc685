"""`scratchllm finetune <task>`: adapt a trained run to a task (classify; instruct and dpo later).

Each subcommand is added by a ``register_<task>(sub)`` function; ``SUBCOMMANDS`` lists them as
"module:function", one line each, so another task plugs in with a one-line edit.
"""

from __future__ import annotations

import argparse
import importlib
import shlex
from pathlib import Path

from scratchllm.cli.argtypes import non_negative_int, positive_int
from scratchllm.model import PRESETS

# Learning rates: Raschka's book's ("Build a Large Language Model (From Scratch)", chapter 6) for a
# pretrained base; a fresh small model needs a larger step.
BASE_LR = 5e-5
FROM_SCRATCH_LR = 1e-3

# One entry per `finetune` subcommand, in --help order: "module:function(subparsers)".
SUBCOMMANDS = [
    "scratchllm.cli.finetune:register_classify",
    "scratchllm.cli.finetune_instruct:register",
]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "finetune",
        help="fine-tune a trained run for a task (classification, ...)",
        description="Fine-tune a pretrained run (or a fresh model) for a downstream task.",
    )
    tasks = p.add_subparsers(dest="task", metavar="TASK")
    tasks.required = True
    for entry in SUBCOMMANDS:
        module, func = entry.split(":")
        getattr(importlib.import_module(module), func)(tasks)


def resume_command(args: argparse.Namespace) -> str:
    """The command line that continues an interrupted run: every option given (not at its
    default) as parsed, plus ``--resume``."""
    parser: argparse.ArgumentParser = args.parser
    words = ["scratchllm", "finetune", args.task]
    for action in parser._actions:
        flags = [f for f in action.option_strings if f.startswith("--")]
        if not flags or action.dest in ("help", "resume"):
            continue
        value = getattr(args, action.dest, action.default)
        if value == action.default:
            continue
        if isinstance(action, argparse._StoreTrueAction):
            words.append(flags[0])
        else:
            words += [flags[0], str(value)]
    return shlex.join([*words, "--resume"])


def print_interrupted(args: argparse.Namespace, step: int, total: int, checkpoint: Path | None):
    """What an interrupted fine-tuning run says instead of its results."""
    print(
        f"interrupted at step {step} of {total}: checkpoint saved to {checkpoint}/; "
        "no final weights, evaluation or report were written"
    )
    print(f"resume with: {resume_command(args)}")


def register_classify(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "classify",
        help="train a text classifier from labelled CSV/TSV/JSONL",
        description=(
            "Fine-tune a classifier on labelled text: a head on the last token (GPT), the mean, "
            "or the pooled first token (encoder). Writes a run directory with weights, tokenizer, "
            "per-epoch metrics, test accuracy / precision / recall / F1, confusion matrix and "
            "plots; use it with `scratchllm classify --run DIR`."
        ),
    )
    src = p.add_argument_group("model (one of --base or --from-scratch)")
    src.add_argument("--base", help="pretrained run directory (GPT or encoder)")
    src.add_argument(
        "--from-scratch",
        choices=("gpt", "encoder"),
        help="start from random initialisation (a BPE tokenizer is trained on the training texts)",
    )
    src.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="size for --from-scratch (default tiny / tiny-bert)",
    )
    src.add_argument("--n-embd", type=positive_int, help="override the preset's width")
    src.add_argument("--n-layer", type=positive_int, help="override the preset's block count")
    src.add_argument("--n-head", type=positive_int, help="override the preset's head count")
    src.add_argument("--dropout", type=float, help="override the preset's dropout")
    src.add_argument(
        "--vocab-size", type=positive_int, default=2048, help="BPE vocabulary (from scratch)"
    )

    d = p.add_argument_group("data")
    d.add_argument("--data", help="one CSV/TSV/JSONL file, split stratified 70/10/20")
    d.add_argument("--train", help="training split file (with --val and --test)")
    d.add_argument("--val", help="validation split file")
    d.add_argument("--test", help="test split file")
    d.add_argument("--text-col", default="text", help="text column name, or 0-based index")
    d.add_argument("--label-col", default="label", help="label column name, or 0-based index")
    d.add_argument(
        "--no-header", action="store_true", help="CSV/TSV without header (columns by index)"
    )
    d.add_argument("--format", choices=("csv", "tsv", "jsonl"), help="default: from the suffix")
    d.add_argument("--balance", action="store_true", help="undersample classes to the smallest")
    d.add_argument(
        "--split",
        default="0.7,0.1,0.2",
        help="train,val,test fractions for --data (default %(default)s)",
    )
    d.add_argument(
        "--max-length", type=positive_int, help="tokens per text (default: longest in train)"
    )

    t = p.add_argument_group("training")
    t.add_argument(
        "--trainable",
        choices=("head", "last", "all", "lora"),
        default="last",
        help="what trains: head only, last N blocks + final norm + head (default), all, LoRA",
    )
    t.add_argument("--last-n-blocks", type=positive_int, default=1, help="N for --trainable last")
    t.add_argument("--lora-r", type=positive_int, default=8, help="LoRA rank")
    t.add_argument("--lora-alpha", type=float, default=16.0, help="LoRA scale numerator")
    t.add_argument("--pooling", choices=("last", "mean", "first"), help="default: last / first")
    t.add_argument("--epochs", type=positive_int, default=5)
    t.add_argument("--batch-size", type=positive_int, default=8)
    t.add_argument(
        "--lr",
        type=float,
        help="peak learning rate (default 5e-5 with --base, as in Raschka's 'Build a Large Language "
        "Model (From Scratch)'; 1e-3 from scratch)",
    )
    t.add_argument("--warmup-steps", type=non_negative_int, default=0)
    t.add_argument("--weight-decay", type=float, default=0.1)
    t.add_argument("--device", default="auto", help="auto, cpu, cuda, mps")
    t.add_argument("--seed", type=int, default=123)
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run from the newest checkpoint in --out (same settings; "
        "--epochs may grow)",
    )
    p.add_argument("--out", required=True, help="output run directory")
    p.set_defaults(func=run_classify, parser=p)


def _fractions(text: str) -> tuple[float, float, float]:
    from scratchllm.errors import ConfigError

    try:
        parts = tuple(float(x) for x in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3:
        raise ConfigError(f"--split {text!r} must be three comma-separated fractions")
    return parts  # type: ignore[return-value]


def run_classify(args: argparse.Namespace) -> int:
    from scratchllm.errors import ConfigError
    from scratchllm.finetune.classify import load_backbone
    from scratchllm.finetune.classify_data import Columns
    from scratchllm.finetune.classify_run import (
        finetune_classifier,
        format_metrics,
        load_splits,
        scratch_backbone,
    )
    from scratchllm.train.config import TrainConfig

    if (args.base is None) == (args.from_scratch is None):
        raise ConfigError("give exactly one of --base RUN_DIR or --from-scratch {gpt,encoder}")
    columns = Columns(args.text_col, args.label_col, False if args.no_header else None, args.format)
    splits = load_splits(
        args.data,
        train=args.train,
        val=args.val,
        test=args.test,
        columns=columns,
        balanced=args.balance,
        fractions=_fractions(args.split),
        seed=args.seed,
    )
    if args.base:
        model, tokenizer, _ = load_backbone(args.base)
    else:
        sizes = {"n_embd": args.n_embd, "n_layer": args.n_layer, "n_head": args.n_head}
        sizes["dropout"] = args.dropout
        model, tokenizer = scratch_backbone(
            args.from_scratch,
            [e.text for e in splits.train],
            preset=args.preset,
            vocab_size=args.vocab_size,
            context_length=args.max_length or 128,
            overrides={k: v for k, v in sizes.items() if v is not None},
            seed=args.seed,
        )
    lr = args.lr or (FROM_SCRATCH_LR if args.from_scratch else BASE_LR)
    cfg = TrainConfig(
        batch_size=args.batch_size,
        lr=lr,
        min_lr=lr / 10,
        warmup_steps=args.warmup_steps,
        weight_decay=args.weight_decay,
        device=args.device,
        seed=args.seed,
    )
    report = finetune_classifier(
        splits,
        args.out,
        model,
        tokenizer,
        train_cfg=cfg,
        epochs=args.epochs,
        pooling=args.pooling,
        trainable=args.trainable,
        last_n_blocks=args.last_n_blocks,
        max_length=args.max_length,
        lora={"r": args.lora_r, "alpha": args.lora_alpha} if args.trainable == "lora" else None,
        base=args.base,
        progress=not args.no_progress,
        resume=args.resume,
    )
    if report.interrupted:
        print_interrupted(args, report.step, report.total_steps, report.checkpoint)
        return 0
    print(format_metrics(report.test))
    print(f"classifier saved to {report.run_dir}/ (report.json, accuracy.png, confusion.png)")
    print(f'use it with: scratchllm classify --run {report.run_dir} "some text"')
    return 0
