"""`scratchllm demo`: the main job, end to end, on the built-in corpus."""

from __future__ import annotations

import argparse

from scratchllm.cli.common import (
    add_model_args,
    add_train_args,
    model_overrides,
    print_report,
    train_config,
)

DEMO_PROMPTS = ("The function returns", "A list is", "If the file")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="train a tokenizer and a small GPT on the built-in corpus, then generate",
        description=(
            "Assemble the built-in corpus (English prose from this Python installation's own "
            "documentation), train a byte-level BPE tokenizer and a small GPT on it, save the run "
            "and print generated text with the validation loss against a unigram baseline."
        ),
    )
    p.add_argument("--out", default="runs/demo", help="run directory (default %(default)s)")
    add_model_args(p)
    add_train_args(p, steps=1000)
    p.set_defaults(func=run, max_minutes=7.0)


def run(args: argparse.Namespace) -> int:
    from scratchllm.data.sources import BUILTIN, read_text_sources
    from scratchllm.train.pretrain import pretrain

    docs = read_text_sources(BUILTIN)
    report = pretrain(
        docs,
        args.out,
        model_overrides(args),
        train_config(args),
        vocab_size=args.vocab_size,
        prompts=DEMO_PROMPTS,
        progress=not args.no_progress,
    )
    print_report(report)
    return 0
