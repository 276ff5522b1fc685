"""`scratchllm generate`: sample continuations of prompts from a saved run."""

from __future__ import annotations

import argparse
import sys

DTYPES = ("float32", "bfloat16", "float16", "int8")


def add_sampling_args(
    p: argparse.ArgumentParser,
    *,
    temperature: float = 0.8,
    max_new_tokens: int | None = 100,
    max_new_tokens_help: str = "default %(default)s",
) -> None:
    """Flags shared with `chat`: one per `SamplingConfig` field, plus length, seed, device."""
    g = p.add_argument_group("sampling")
    g.add_argument("--max-new-tokens", type=int, default=max_new_tokens, help=max_new_tokens_help)
    g.add_argument("--temperature", type=float, default=temperature, help="0 = greedy")
    g.add_argument("--top-k", type=int, default=50, help="keep the k most likely (0 = off)")
    g.add_argument("--top-p", type=float, default=None, help="nucleus: keep probability mass p")
    g.add_argument("--min-p", type=float, default=None, help="drop tokens < min_p * top prob")
    g.add_argument("--repetition-penalty", type=float, default=1.0, help="> 1 discourages repeats")
    g.add_argument("--frequency-penalty", type=float, default=0.0, help="per earlier occurrence")
    g.add_argument("--presence-penalty", type=float, default=0.0, help="once per seen token")
    g.add_argument("--seed", type=int, default=None, help="seed the sampler (reproducible)")
    g.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps, auto")
    g.add_argument(
        "--dtype",
        choices=DTYPES,
        default="float32",
        help="weights and cache dtype; int8 = int8 linear layers, CPU only (fastest CPU decoding)",
    )


def sampling_from_args(args: argparse.Namespace):
    from scratchllm.generation import SamplingConfig

    return SamplingConfig(
        temperature=args.temperature,
        top_k=args.top_k or None,
        top_p=args.top_p,
        min_p=args.min_p,
        repetition_penalty=args.repetition_penalty,
        frequency_penalty=args.frequency_penalty,
        presence_penalty=args.presence_penalty,
    )


def load_engine(args: argparse.Namespace):
    """(Engine, Run) for ``--run`` on ``--device`` in ``--dtype``."""
    import torch

    from scratchllm.cli.common import note_adapter_run
    from scratchllm.generation import Engine
    from scratchllm.train.checkpoint import load_run
    from scratchllm.train.loop import resolve_device

    device = resolve_device(args.device)
    note_adapter_run(args.run)
    loaded = load_run(args.run, device)  # an unmerged LoRA run: its base with the adapter merged
    if loaded.tokenizer is None:
        from scratchllm.errors import CheckpointError

        raise CheckpointError(
            f"{args.run} has no tokenizer (tokenizer.json): text cannot be encoded; copy the "
            "tokenizer the model was trained with into it (`scratchllm convert` writes one when "
            "the source has GPT-2 vocab.json/merges.txt or tokenizer.json)"
        )
    if args.dtype == "int8":
        from scratchllm.errors import ConfigError
        from scratchllm.generation.quantize import quantize_int8

        if device.type != "cpu":
            raise ConfigError(f"--dtype int8 runs on the CPU only, not on {device}")
        model = quantize_int8(loaded.model)
    else:
        model = loaded.model.to(getattr(torch, args.dtype))
        if device.type == "cpu":
            from scratchllm.generation.layout import column_major_linears

            column_major_linears(model)  # faster batch-1 decoding (generation/layout.py)
    return Engine(model, loaded.tokenizer), loaded


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="generate text from a saved run",
        description=(
            "Load a run directory and print a sampled continuation of each prompt (several "
            "--prompt flags decode together as one batch)."
        ),
    )
    p.add_argument(
        "--run",
        required=True,
        help="run directory written by train/demo/finetune (an unmerged LoRA adapter directory "
        "is applied to its base run in memory)",
    )
    p.add_argument("--prompt", required=True, action="append", help="text to continue")
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--stream", action="store_true", help="print text as it is generated")
    p.add_argument(
        "--overflow",
        choices=("error", "slide"),
        default="error",
        help=(
            "when prompt + new tokens exceed the model's context: refuse with an error "
            "(default) or slide the window over the most recent tokens"
        ),
    )
    p.add_argument(
        "--template",
        action="store_true",
        help="wrap the prompt as a user message in the run's chat/instruction template and stop "
        "at the template's end of turn (its stop strings and ids, besides any --stop)",
    )
    p.add_argument(
        "--allow-special",
        action="store_true",
        help="encode special-token literals in a prompt (e.g. <|endoftext|>) as their ids; by "
        "default such a prompt is refused (not with --template)",
    )
    add_sampling_args(p)
    p.set_defaults(func=run)


def _prompts(engine, args: argparse.Namespace) -> tuple[list[list[int]], dict]:
    """Prompt ids and the stop settings: with ``--template`` each prompt is a user message in the
    run's template, and the template's stop strings and ids join the user's ``--stop``."""
    from scratchllm.errors import DisallowedSpecialError, TokenizerError

    try:
        if not args.template:
            allowed = "all" if args.allow_special else frozenset()
            prompts = [
                engine.encode(engine.tokenizer.encode(p, allowed_special=allowed))
                for p in args.prompt
            ]
            return [list(ids) for ids in prompts], {"stop": list(args.stop)}
        from scratchllm.generation.chat import template_for_run

        template = template_for_run(args.run)
        prompts = [
            template.encode_prompt(engine.tokenizer, [{"role": "user", "content": p}])
            for p in args.prompt
        ]
    except DisallowedSpecialError as exc:
        how = (
            "a user message in a template may not hold one (it could forge a turn)"
            if args.template
            else "pass --allow-special to encode special-token literals as their ids"
        )
        raise TokenizerError(
            f"the prompt contains the special token {exc.token!r} at character "
            f"{exc.position}; {how}"
        ) from None
    stops = {
        "stop": list(dict.fromkeys([*args.stop, *template.stop_strings])),
        "stop_token_ids": template.stop_token_ids(engine.tokenizer),
    }
    return prompts, stops


def run(args: argparse.Namespace) -> int:
    sampling = sampling_from_args(args)
    engine, _ = load_engine(args)
    prompts, stops = _prompts(engine, args)
    kw = dict(**stops, seed=args.seed, overflow=args.overflow)
    if args.stream:
        for i, (text, ids) in enumerate(zip(args.prompt, prompts)):
            print(text, end="", flush=True)
            # prompt i is seeded seed + i, as in the batched (non-stream) path
            seed = None if args.seed is None else args.seed + i
            for piece in engine.stream(ids, sampling, args.max_new_tokens, **{**kw, "seed": seed}):
                sys.stdout.write(piece)
                sys.stdout.flush()
            print()
        return 0
    done = engine.generate(prompts, sampling, args.max_new_tokens, **kw)
    for i, (text, c) in enumerate(zip(args.prompt, done)):
        if len(done) > 1:
            print(f"--- [{i}] ({c.finish_reason}, {len(c.token_ids)} tokens)")
        print(text + c.text)
    return 0
