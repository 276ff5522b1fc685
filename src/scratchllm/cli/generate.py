"""`scratchllm generate`: sample a continuation from a saved run."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="generate text from a saved run",
        description="Load a run directory and print a sampled continuation of the prompt.",
    )
    p.add_argument("--run", required=True, help="run directory written by train/demo")
    p.add_argument("--prompt", required=True, help="text to continue")
    p.add_argument("--max-new-tokens", type=int, default=100)
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=50)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from scratchllm.generate import SamplingConfig, complete
    from scratchllm.train.checkpoint import load_run
    from scratchllm.train.loop import resolve_device

    sampling = SamplingConfig(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    loaded = load_run(args.run, resolve_device(args.device))
    text = complete(
        loaded.model, loaded.tokenizer, args.prompt, args.max_new_tokens, sampling, seed=args.seed
    )
    print(args.prompt + text)
    return 0
