"""`scratchllm lora merge`: fold a LoRA adapter into its base run's weights."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "lora",
        help="work with LoRA adapters",
        description="Work with LoRA adapters saved by `finetune instruct/dpo --lora-r R`.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    m = actions.add_parser(
        "merge",
        help="merge an adapter into its base weights",
        description=(
            "Load the base run named in RUN/adapter.json (or --base), apply the adapter, fold "
            "B @ A * alpha / r into each weight and write RUN/model.safetensors, config.json and "
            "tokenizer.json, so RUN loads like any other run."
        ),
    )
    m.add_argument("--run", required=True, help="directory holding adapter.json")
    m.add_argument("--base", default=None, help="base run (default: the one in adapter.json)")
    m.add_argument(
        "--any-base",
        action="store_true",
        help=(
            "merge even when the base holds other weights than the adapter was trained on "
            "(adapter.json records their SHA-256; refused by default)"
        ),
    )
    m.set_defaults(func=run_merge)


def run_merge(args: argparse.Namespace) -> int:
    from scratchllm.finetune.lora import merge_adapter_run

    path, n_layers = merge_adapter_run(args.run, args.base, any_base=args.any_base)
    print(f"merged {n_layers} adapted layers; standalone run written to {path}/")
    return 0
