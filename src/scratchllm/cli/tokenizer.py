"""`scratchllm tokenizer train|encode|decode|info|show`: thin shells over scratchllm.tokenizer."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

TOKENIZER_HELP = (
    "tokenizer directory or tokenizer.json (our format), a directory with GPT-2's encoder.json "
    "and vocab.bpe, or a .tiktoken file"
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tokenizer",
        help="train, inspect and run tokenizers",
        description="Train a BPE, word-level or character-level tokenizer, encode/decode text, show statistics.",
    )
    tsub = p.add_subparsers(dest="tokenizer_command", metavar="ACTION")
    tsub.required = True

    t = tsub.add_parser(
        "train",
        help="train a tokenizer on text files",
        description="Train a byte-level BPE (or word/char-level) tokenizer and save tokenizer.json.",
    )
    t.add_argument(
        "--data",
        required=True,
        nargs="+",
        help="text files, directories (.txt/.md), globs, .jsonl ('text' field) or 'builtin'",
    )
    t.add_argument("--vocab-size", type=int, default=4096, help="total ids (BPE); cap (word)")
    t.add_argument("--out", required=True, help="output directory (gets tokenizer.json)")
    t.add_argument("--kind", choices=("bpe", "word", "char"), default="bpe")
    t.add_argument("--pattern", default="gpt2", help="gpt2, gpt4 or a regex (BPE)")
    t.add_argument(
        "--special", action="append", default=None, help="special token (repeatable; BPE)"
    )
    t.add_argument("--backend", choices=("auto", "rustbpe", "reference"), default="auto")
    t.set_defaults(func=run_train)

    e = tsub.add_parser(
        "encode",
        help="print token ids of text",
        description="Encode text (argument, --file or stdin) and print the ids.",
    )
    e.add_argument("--tokenizer", required=True, help=TOKENIZER_HELP)
    e.add_argument("text", nargs="?", help="text to encode (default: --file or stdin)")
    e.add_argument("--file", help="read the text from this file")
    e.add_argument("--allow-special", action="store_true", help="encode special-token literals")
    e.add_argument("--json", action="store_true", help="print a JSON list")
    e.set_defaults(func=run_encode)

    d = tsub.add_parser(
        "decode",
        help="print the text of token ids",
        description="Decode ids (arguments or stdin, separated by spaces/commas) to text.",
    )
    d.add_argument("--tokenizer", required=True, help=TOKENIZER_HELP)
    d.add_argument("ids", nargs="*", help="token ids (default: read from stdin)")
    d.add_argument("--strict", action="store_true", help="fail on invalid UTF-8 instead of U+FFFD")
    d.set_defaults(func=run_decode)

    i = tsub.add_parser(
        "info",
        help="vocabulary size, special tokens, bytes per token",
        description="Summarise a tokenizer; with --file, also tokens and bytes per token there.",
    )
    i.add_argument("--tokenizer", required=True, help=TOKENIZER_HELP)
    i.add_argument("--file", help="text file to measure bytes per token on")
    i.set_defaults(func=run_info)

    s = tsub.add_parser(
        "show",
        help="show token boundaries in colour",
        description="Print text with alternating background colours marking each token.",
    )
    s.add_argument("--tokenizer", required=True, help=TOKENIZER_HELP)
    s.add_argument("text", nargs="?", help="text (default: --file or stdin)")
    s.add_argument("--file", help="read the text from this file")
    s.add_argument("--plain", action="store_true", help="separate tokens with | instead of colour")
    s.set_defaults(func=run_show)


def _read_text(args: argparse.Namespace) -> str:
    if args.text is not None:
        return args.text
    if args.file:
        from scratchllm.cli.common import read_text_file

        return read_text_file(args.file, "--file", newline="")  # "\r\n" kept
    return sys.stdin.read()


def run_train(args: argparse.Namespace) -> int:
    from scratchllm.data.sources import read_text_sources
    from scratchllm.tokenizer import BPETokenizer, WordTokenizer
    from scratchllm.tokenizer.report import describe

    # The same sources `train` and `data prepare` read: files, directories (.txt/.md), globs,
    # `builtin`, .jsonl `text` fields; no text at all is an error, as it is there.
    texts = [doc.text for source in args.data for doc in read_text_sources(source)]
    Path(args.out).mkdir(parents=True, exist_ok=True)  # an unusable --out fails before training
    if args.kind == "bpe":
        specials = args.special if args.special is not None else ["<|endoftext|>"]
        tok = BPETokenizer.train(
            texts,
            args.vocab_size,
            pattern=args.pattern,
            special_tokens=specials,
            backend=args.backend,
            progress=sys.stderr.isatty(),
        )
        if tok.vocab_size < args.vocab_size:
            print(
                f"note: training stopped early with {tok.vocab_size} ids instead of "
                f"--vocab-size {args.vocab_size}: no pair of adjacent tokens is left to merge "
                "(every distinct word of the text is already a single token)",
                file=sys.stderr,
            )
    else:
        tok = WordTokenizer.train(texts, mode=args.kind, max_vocab=args.vocab_size)
    path = tok.save(args.out)
    info = describe(tok)
    specials = ", ".join(f"{k} ({v})" for k, v in info["special_tokens"].items()) or "none"
    print(
        f"saved {path}: {info['type']}, vocab_size {info['vocab_size']:,}; special tokens: {specials}"
    )
    return 0


def run_encode(args: argparse.Namespace) -> int:
    from scratchllm.errors import DisallowedSpecialError, TokenizerError
    from scratchllm.tokenizer import load_tokenizer

    tok = load_tokenizer(args.tokenizer)
    allowed = "all" if args.allow_special else frozenset()
    try:
        ids = tok.encode(_read_text(args), allowed_special=allowed)
    except DisallowedSpecialError as exc:
        raise TokenizerError(
            f"the text contains the special token {exc.token!r} at character {exc.position}; "
            "pass --allow-special to encode special-token literals as their ids"
        ) from None
    print(json.dumps(ids) if args.json else " ".join(map(str, ids)))
    return 0


def run_decode(args: argparse.Namespace) -> int:
    from scratchllm.errors import TokenizerError
    from scratchllm.tokenizer import load_tokenizer

    tok = load_tokenizer(args.tokenizer)
    words = args.ids or sys.stdin.read().replace(",", " ").strip("[] \n").split()
    try:
        ids = [int(w) for w in words]
    except ValueError as exc:
        raise TokenizerError(f"token ids must be integers: {exc}") from None
    sys.stdout.write(tok.decode(ids, errors="strict" if args.strict else "replace") + "\n")
    return 0


def run_info(args: argparse.Namespace) -> int:
    from scratchllm.tokenizer import load_tokenizer
    from scratchllm.tokenizer.report import describe

    tok = load_tokenizer(args.tokenizer)
    text = None
    if args.file:
        from scratchllm.cli.common import read_text_file

        text = read_text_file(args.file, "--file", newline="")  # "\r\n" kept
    for key, value in describe(tok, text).items():
        print(f"{key}: {value}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    from scratchllm.tokenizer import load_tokenizer
    from scratchllm.tokenizer.report import show_tokens

    tok = load_tokenizer(args.tokenizer)
    colour = not args.plain and sys.stdout.isatty()
    print(show_tokens(tok, _read_text(args), colour=colour))
    return 0
