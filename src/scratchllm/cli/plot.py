"""`scratchllm plot RUN_DIR... --out PNG`: training curves of one run or several on one figure."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plot",
        help="training curves (loss, learning rate, tokens/s) of runs as PNG",
        description="Plot loss (train and validation), learning rate and tokens/s against step "
        "from each run's metrics.jsonl; several runs share one figure for comparison.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories with metrics.jsonl")
    p.add_argument("--out", default="curves.png", help="PNG to write (default %(default)s)")
    p.add_argument("--title", default="Training curves", help="title of the loss panel")
    p.set_defaults(func=run_plot)


def run_plot(args: argparse.Namespace) -> int:
    from scratchllm.viz import plot_training

    print(f"wrote {plot_training(args.runs, args.out, title=args.title)}")
    return 0
