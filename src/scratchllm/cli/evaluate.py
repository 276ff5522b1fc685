"""`scratchllm eval`: loss, perplexity and bits per byte of a run on a text (sliding window)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from scratchllm.cli.argtypes import positive_int

if TYPE_CHECKING:
    import numpy as np

    from scratchllm.data.shards import JoinedShards


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="perplexity of a run on a text",
        description=(
            "Score a text with a decoder run in sliding windows: every token but the first is "
            "scored once, with at least CONTEXT - STRIDE tokens before it after the first window. "
            "Prints the loss (nats per token), perplexity and bits per byte."
        ),
    )
    p.add_argument("--run", required=True, help="run directory (or an unmerged LoRA run)")
    p.add_argument(
        "--data",
        required=True,
        help="text file, directory (recursive), glob, .jsonl, .parquet, or 'builtin' "
        "(documents joined with the tokenizer's end-of-text token); or a directory of shards "
        "from `scratchllm data prepare` made with the run's tokenizer (see --split)",
    )
    p.add_argument(
        "--split",
        choices=("val", "train"),
        default="val",
        help="which split of a shards directory to score (default val)",
    )
    p.add_argument(
        "--context",
        type=positive_int,
        default=None,
        help="window length in tokens (default: the model's context length)",
    )
    p.add_argument(
        "--stride",
        type=positive_int,
        default=None,
        help="tokens between window starts, at most CONTEXT - 1 (default: half the context)",
    )
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        help="windows per forward pass (default: 8192 tokens' worth)",
    )
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, mps, auto (default)")
    p.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        default="float32",
        help="autocast dtype of the forward pass (default float32: none)",
    )
    p.add_argument("--text-field", default="text", help="JSON Lines key holding the text")
    p.add_argument("--column", default="text", help="Parquet column holding the text")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def shard_ids(directory: str, split: str, tokenizer) -> np.ndarray | JoinedShards:
    """One split of a shards directory as one id sequence (the shards' own small dtype), read
    from the memory maps a window at a time."""
    from scratchllm.data.shards import (
        INDEX_NAME,
        JoinedShards,
        open_shards,
        read_index,
        tokenizer_hash,
    )
    from scratchllm.errors import DataError

    index = read_index(directory)
    if tokenizer_hash(tokenizer) != index.settings.tokenizer_hash:
        raise DataError(
            f"{directory} was prepared with another tokenizer than the run's (the sha256 in "
            f"{INDEX_NAME} differs): its ids would mean other tokens"
        )
    shards = open_shards(directory, split)
    if not shards:
        raise DataError(f"{directory}: no {split} split (prepare it with --val-fraction)")
    return JoinedShards(shards) if len(shards) > 1 else shards[0]


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm.auto import tqdm

    from scratchllm.cli.common import note_adapter_run
    from scratchllm.data.shards import INDEX_NAME
    from scratchllm.errors import CheckpointError, DataError
    from scratchllm.model import GPTModel
    from scratchllm.perplexity import (
        count_sliding_windows,
        encode_for_scoring,
        perplexity,
        window_shape,
    )
    from scratchllm.tokenizer import BPETokenizer
    from scratchllm.train.checkpoint import load_run
    from scratchllm.train.loop import resolve_device

    device = resolve_device(args.device)
    note_adapter_run(args.run)
    loaded = load_run(args.run, device)
    if not isinstance(loaded.model, GPTModel):
        raise CheckpointError(
            f"{args.run} is a {type(loaded.model).__name__} run: perplexity needs a decoder "
            "(GPT) run, one that predicts the next token"
        )
    tok = loaded.tokenizer
    if tok is None:
        raise CheckpointError(f"{args.run} has no tokenizer.json to encode the text with")
    specials = set(tok.special_tokens.values())

    def token_bytes(part: list[int]) -> int:  # special tokens (end-of-text) count no bytes
        return len(tok.decode_bytes([i for i in part if i not in specials]))

    if (Path(args.data) / INDEX_NAME).is_file():
        ids = shard_ids(args.data, args.split, tok)
        exact = isinstance(tok, BPETokenizer)  # byte-level: every id gives back its bytes
    else:  # bits per byte where the ids give back the text's exact bytes
        ids, exact = encode_for_scoring(
            args.data, tok, text_field=args.text_field, column=args.column
        )
    if len(ids) < 2:
        raise DataError(f"{args.data}: {len(ids)} token(s); perplexity needs at least 2")
    # checked before the progress bar is drawn
    context, stride = window_shape(loaded.model.cfg.context_length, args.context, args.stride)
    n_windows = count_sliding_windows(len(ids), context, stride)
    amp = None if args.dtype == "float32" else getattr(torch, args.dtype)
    bar = tqdm(total=n_windows, unit="window", disable=args.no_progress or args.json, leave=False)
    with bar:
        report = perplexity(
            loaded.model,
            ids,
            context=context,
            stride=stride,
            batch_size=args.batch_size,
            amp_dtype=amp,
            token_bytes=token_bytes if exact else None,
            progress=bar.update,
        )
    if args.json:
        print(json.dumps(report.to_dict()))
        return 0
    print(
        f"{args.run} on {args.data}: {report.tokens:,} tokens scored in {report.windows:,} "
        f"windows (context {report.context}, stride {report.stride})"
    )
    print(f"loss:          {report.loss:.4f} nats/token")
    print(f"perplexity:    {report.perplexity:.3f}")
    if report.bits_per_byte is None:
        print("bits per byte: n/a (the tokenizer does not give back the text's exact bytes)")
    else:
        print(f"bits per byte: {report.bits_per_byte:.4f}")
    return 0
