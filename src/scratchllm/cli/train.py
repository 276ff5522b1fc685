"""`scratchllm train`: the demo's job on the user's own text."""

from __future__ import annotations

import argparse

from scratchllm.cli.common import (
    add_model_args,
    add_train_args,
    model_overrides,
    print_report,
    removed_if_left_empty,
    train_config,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a tokenizer and a GPT on your own text",
        description=(
            "Train a byte-level BPE tokenizer and a GPT on a text file, a directory of .txt/.md "
            "files (recursive) or a glob, and save a run directory usable by `generate`."
        ),
    )
    p.add_argument("--data", required=True, help="file, directory or glob of text files")
    p.add_argument("--out", default="runs/train", help="run directory (default %(default)s)")
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="share of documents held out for validation (default %(default)s)",
    )
    p.add_argument(
        "--prompt",
        action="append",
        default=[],
        help="prompt to sample from after training (repeatable)",
    )
    add_model_args(p)
    add_train_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from scratchllm.data.sources import read_text_sources
    from scratchllm.train.pretrain import pretrain

    docs = read_text_sources(args.data)
    with removed_if_left_empty(args.out):
        report = pretrain(
            docs,
            args.out,
            model_overrides(args),
            train_config(args),
            vocab_size=args.vocab_size,
            val_fraction=args.val_fraction,
            prompts=args.prompt,
            progress=not args.no_progress,
        )
    print_report(report)
    return 0
