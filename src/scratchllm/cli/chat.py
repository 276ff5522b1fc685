"""`scratchllm chat`: an interactive terminal chat with a saved run (reads lines from stdin)."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from scratchllm.cli.generate import add_sampling_args, load_engine, sampling_from_args

HELP = "commands: /reset (forget the conversation), /settings [name=value ...], /exit"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "chat",
        help="chat with a saved run in the terminal",
        description=(
            "Chat with a run: each message is added to the conversation, rendered with the "
            "run's template (template.json; plain 'User:/Assistant:' lines without one) and "
            "the reply is streamed. Old turns are dropped when the context is full. " + HELP
        ),
    )
    p.add_argument("--run", required=True, help="run directory written by train/finetune")
    p.add_argument("--system", default=None, help="system message for the conversation")
    add_sampling_args(
        p,
        temperature=0.7,
        max_new_tokens=None,
        max_new_tokens_help=(
            "reply length limit; default: up to 256 tokens (at most half the context), or the "
            "room left when a long message needs more"
        ),
    )
    p.set_defaults(func=run)


def _settings(session, words: list[str]) -> str:
    """Show the settings, or change some: ``/settings temperature=0.2 max_new_tokens=64``."""
    from scratchllm.generation import SamplingConfig

    fields = {f.name for f in dataclasses.fields(SamplingConfig)}
    integers = {"top_k", "max_new_tokens", "seed"}
    nullable = {"top_k", "top_p", "min_p", "max_new_tokens", "seed"}  # none = off / default
    changes: dict[str, float | int | None] = {}
    for word in words:
        name, _, value = word.partition("=")
        name = name.replace("-", "_")
        if name not in fields | {"max_new_tokens", "seed"} or not value:
            return f"unknown setting {word!r}; names: {', '.join(sorted(fields))}, max_new_tokens, seed"
        if value == "none":
            if name not in nullable:
                return f"setting {name} cannot be none (only {', '.join(sorted(nullable))} can)"
            changes[name] = None
            continue
        try:
            number = float(value)
        except ValueError:
            return f"setting {name} needs a number, got {value!r}"
        if name in integers and not number.is_integer():
            return f"setting {name} needs a whole number, got {value!r}"
        changes[name] = int(number) if name in integers else number
    if changes.get("top_k") == 0:
        changes["top_k"] = None  # as with --top-k 0: off
    if (changes.get("max_new_tokens") or 1) < 1:
        return f"setting max_new_tokens must be >= 1 (or none), got {changes['max_new_tokens']}"
    sampling = dataclasses.replace(  # validated here; nothing changes when one value is bad
        session.sampling, **{k: v for k, v in changes.items() if k in fields}
    )
    session.sampling = sampling
    if "max_new_tokens" in changes:
        session.max_new_tokens = changes["max_new_tokens"]
    if "seed" in changes:
        session.seed = changes["seed"]
    s = dataclasses.asdict(session.sampling)
    shown = " ".join(f"{k}={v}" for k, v in s.items())
    budget = session.max_new_tokens or "auto"
    return f"{shown} max_new_tokens={budget} seed={session.seed}"


def run(args: argparse.Namespace) -> int:
    from scratchllm.errors import ScratchLLMError
    from scratchllm.generation.chat import ChatSession, template_for_run

    engine, _ = load_engine(args)
    template = template_for_run(args.run, args.system)
    session = ChatSession(
        engine,
        template,
        system=args.system,
        sampling=sampling_from_args(args),
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
    )
    print(f"chat with {args.run} (template: {template.name}); {HELP}")
    while True:
        print("you> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line:  # end of input
            print()
            return 0
        text = line.rstrip("\n")
        command, *words = text.strip().split() or [""]
        if command == "/exit":
            return 0
        if command == "/reset":
            session.reset()
            print("(conversation cleared)")
            continue
        if command == "/settings":
            try:
                print(_settings(session, words))
            except ScratchLLMError as exc:
                print(f"error: {exc}")
            continue
        if not text.strip():
            continue
        print("bot> ", end="", flush=True)
        try:
            for piece in session.reply(text):
                sys.stdout.write(piece)
                sys.stdout.flush()
        except ScratchLLMError as exc:
            print(f"error: {exc}", end="")
        print()
