"""`scratchllm <command>`: parse arguments, call the library, print the result.

Each command group lives in its own module with a ``register(subparsers)`` function that adds its
parser and sets ``func`` (called with the parsed namespace, returns an exit code or None).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

from scratchllm.errors import ScratchLLMError

# Modules under scratchllm.cli, one per command group, in the order shown by --help.
COMMAND_MODULES = [
    "demo",
    "train",
    "pretrain",
    "generate",
    "chat",
    "evaluate",
    "data",
    "model",
    "tokenizer",
    "finetune",
    "classify",
    "convert",
    "export",
    "lora",
    "serve",
    "embed",
    "inspect",
    "plot",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scratchllm",
        description="Build, train, fine-tune, run and serve GPT- and BERT-style language models.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"scratchllm.cli.{name}").register(sub)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings reach CLI users as one plain line, not as a source location."""
    print(f"warning: {message}", file=sys.stderr)


def _message(exc: BaseException) -> str:
    """One line for the user: an OS error as "reason: path", anything else as its message."""
    if (
        isinstance(exc, FileExistsError)
        and exc.filename is not None
        and exc.filename2 is None
        and os.path.lexists(exc.filename)
        and not os.path.isdir(exc.filename)
    ):  # mkdir of an output's folder where a file is: "File exists: /dev/null" said too little
        return f"{exc.filename} exists and is not a directory"
    if isinstance(exc, OSError) and exc.strerror:
        paths = [p for p in (exc.filename, exc.filename2) if p is not None]
        return f"{exc.strerror}: {' -> '.join(map(str, paths))}" if paths else exc.strerror
    return " ".join(str(exc).split()) or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    warnings.showwarning = _show_warning
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
    # Bad input: our own errors, a value the library refuses (ValueError) or a path that cannot
    # be used (OSError: missing, a directory, a file, no permission) is one line and exit 2.
    # SCRATCHLLM_DEBUG=1 shows the traceback instead. Anything else is a bug and raises.
    except (ScratchLLMError, ValueError, OSError) as exc:
        if os.environ.get("SCRATCHLLM_DEBUG"):
            raise
        print(f"scratchllm {args.command}: error: {_message(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
