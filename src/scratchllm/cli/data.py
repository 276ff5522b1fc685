"""`scratchllm data`: pretokenize a corpus into memory-mapped shards, and describe shards."""

from __future__ import annotations

import argparse
import sys

from scratchllm.cli.argtypes import positive_int
from scratchllm.system import available_cpus


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "data",
        help="pretokenize a corpus into shards",
        description="Prepare and inspect pretokenized, memory-mapped training shards.",
    )
    data_sub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    data_sub.required = True
    _register_prepare(data_sub)
    _register_info(data_sub)


def _register_prepare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare",
        help="tokenize a corpus into shards",
        description=(
            "Tokenize a corpus in parallel into memory-mapped shards (uint16 ids when the "
            "vocabulary fits, else uint32) with an index.json, split train/validation by document. "
            "Rerunning with the same arguments resumes an interrupted run."
        ),
    )
    p.add_argument(
        "--data",
        required=True,
        help="text file, directory (recursive), glob, .jsonl, .parquet, or 'builtin'",
    )
    p.add_argument("--tokenizer", required=True, help="tokenizer directory (tokenizer.json)")
    p.add_argument("--out", required=True, help="output directory for shards and index.json")
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.0,
        help="share of documents for validation, chosen by a hash of the name (default 0)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the train/validation split")
    p.add_argument(
        "--shard-tokens",
        type=positive_int,
        default=2**24,
        help="token ids per shard file; bounds memory use (default %(default)s)",
    )
    p.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        help=f"tokenizing processes (default: the CPUs this process may use, {available_cpus()} here)",
    )
    p.add_argument(
        "--bos", default=None, help="special token to put at the start of every document"
    )
    p.add_argument(
        "--include", action="append", default=None, help="file glob in directories (repeatable)"
    )
    p.add_argument("--exclude", action="append", default=[], help="file glob to leave out")
    p.add_argument("--text-field", default="text", help="JSON Lines key holding the text")
    p.add_argument("--column", default="text", help="Parquet column holding the text")
    p.add_argument(
        "--overwrite", action="store_true", help="replace shards made with other settings"
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run_prepare)


def _register_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "info",
        help="describe a shard directory",
        description="Print the documents, tokens, shards and settings of a shard directory.",
    )
    p.add_argument("dir", help="directory written by `scratchllm data prepare`")
    p.set_defaults(func=run_info)


def run_prepare(args: argparse.Namespace) -> int:
    from scratchllm.data.shards import prepare_path
    from scratchllm.data.sources import DEFAULT_INCLUDE
    from scratchllm.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(args.tokenizer)
    bos_id = None if args.bos is None else tokenizer.token_to_id(args.bos)
    report = prepare_path(
        args.data,
        tokenizer,
        args.out,
        include=tuple(args.include or DEFAULT_INCLUDE),
        exclude=tuple(args.exclude),
        text_field=args.text_field,
        column=args.column,
        val_fraction=args.val_fraction,
        seed=args.seed,
        shard_tokens=args.shard_tokens,
        bos_id=bos_id,
        workers=args.workers,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    if report.resumed_from:
        print(f"resumed after {report.resumed_from:,} documents already prepared")
    for split in ("train", "val"):
        print(f"{split}: {report.documents[split]:,} documents, {report.tokens[split]:,} tokens")
    total = sum(report.tokens.values())
    print(
        f"total: {total:,} tokens from {report.text_bytes:,} bytes "
        f"({report.bytes_per_token:.2f} bytes/token) -> {report.out_dir}"
    )
    return 0


def run_info(args: argparse.Namespace) -> int:
    from scratchllm.data.shards import open_shards, read_index
    from scratchllm.errors import DataError

    state = read_index(args.dir)
    s = state.settings
    damage = None
    if state.complete:
        try:  # the checks the training loader makes: every shard present, at its indexed size
            for split in ("train", "val"):
                open_shards(args.dir, split)
        except DataError as exc:
            damage = str(exc)
    if damage is not None:
        status = f"DAMAGED: {damage} (prepare again with --overwrite)"
    else:
        status = "complete" if state.complete else "INCOMPLETE (rerun prepare)"
    print(f"{args.dir}: {status}")
    print(f"source: {s.source}  dtype: {s.dtype}  vocab_size: {s.vocab_size}")
    print(f"tokenizer sha256: {s.tokenizer_hash}")
    for split in ("train", "val"):
        shards = len(state.splits[split])
        print(
            f"{split}: {state.documents(split):,} documents, {state.tokens(split):,} tokens, "
            f"{shards} shard(s)"
        )
    total = state.tokens()
    if total:
        print(f"bytes/token: {state.text_bytes / total:.2f}")
    if damage is not None:
        print(f"scratchllm data: error: {damage}", file=sys.stderr)
        return 2
    return 0
