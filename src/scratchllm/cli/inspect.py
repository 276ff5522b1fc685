"""`scratchllm inspect attention|embeddings|next-token|tokens`: pictures of a run, as PNG files."""

from __future__ import annotations

import argparse
from typing import Any

from scratchllm.cli.argtypes import non_negative_int, positive_int

RUN_HELP = "run directory written by train/demo/convert (model + tokenizer)"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "inspect",
        help="draw what a model does (attention, embeddings, next token, tokens) as PNG",
        description="Draw pictures of a trained run: attention heatmaps, embedding PCA, "
        "next-token probabilities and token boundaries. Each writes one PNG.",
    )
    isub = p.add_subparsers(dest="inspect_command", metavar="PICTURE")
    isub.required = True

    a = isub.add_parser(
        "attention",
        help="attention weights of one layer and head as a heatmap",
        description="Heatmap of the attention weights of --layer/--head for the tokens of --text.",
    )
    a.add_argument("--run", required=True, help=RUN_HELP)
    a.add_argument("--text", required=True, help="prompt whose tokens attend to each other")
    a.add_argument("--layer", type=int, default=0, help="block index (negative: from the end)")
    a.add_argument(
        "--head", type=non_negative_int, default=0, help="head index within the layer (0-based)"
    )
    a.add_argument("--out", default="attention.png", help="PNG to write (default %(default)s)")
    a.set_defaults(func=run_attention)

    e = isub.add_parser(
        "embeddings",
        help="token embeddings of chosen words projected to 2-D (PCA)",
        description="Scatter of the chosen words' token embeddings on the first two principal "
        "axes of the embedding table (words of several tokens use their mean).",
    )
    e.add_argument("--run", required=True, help=RUN_HELP)
    e.add_argument("words", nargs="+", help="words or tokens to label (e.g. ' the' ' cat')")
    e.add_argument("--out", default="embeddings.png", help="PNG to write (default %(default)s)")
    e.set_defaults(func=run_embeddings)

    n = isub.add_parser(
        "next-token",
        help="top-k next-token probabilities before and after sampling settings",
        description="Bar charts of the k most likely next tokens after --text: the model's "
        "probabilities and those after temperature / top-k / top-p / min-p.",
    )
    n.add_argument("--run", required=True, help=RUN_HELP)
    n.add_argument("--text", required=True, help="prompt")
    n.add_argument(
        "--k", type=positive_int, default=10, help="bars per chart (default %(default)s)"
    )
    n.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    n.add_argument("--top-k", type=positive_int, default=None, help="keep the k most likely")
    n.add_argument("--top-p", type=float, default=None, help="nucleus: keep probability mass p")
    n.add_argument("--min-p", type=float, default=None, help="drop tokens < min_p * top prob")
    n.add_argument("--out", default="next_token.png", help="PNG to write (default %(default)s)")
    n.set_defaults(func=run_next_token)

    t = isub.add_parser(
        "tokens",
        help="token boundaries of a text as an image",
        description="Draw the text with each token in its own coloured box and its id below "
        "(the picture form of `scratchllm tokenizer show`).",
    )
    source = t.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help=RUN_HELP)
    source.add_argument("--tokenizer", help="tokenizer directory or tokenizer.json")
    t.add_argument("--text", required=True, help="text to split into tokens")
    t.add_argument(
        "--width", type=positive_int, default=60, help="characters per line (default 60)"
    )
    t.add_argument("--out", default="tokens.png", help="PNG to write (default %(default)s)")
    t.set_defaults(func=run_tokens)


def _load(run_dir: str) -> tuple[Any, Any]:
    from scratchllm.cli.common import note_adapter_run
    from scratchllm.errors import CheckpointError
    from scratchllm.train.checkpoint import load_run

    note_adapter_run(run_dir)
    run = load_run(run_dir)
    if run.tokenizer is None:
        raise CheckpointError(f"{run_dir}: the run has no tokenizer.json to encode text with")
    return run.model, run.tokenizer


def run_attention(args: argparse.Namespace) -> int:
    from scratchllm.viz import plot_attention

    model, tok = _load(args.run)
    path = plot_attention(model, tok, args.text, args.out, layer=args.layer, head=args.head)
    print(f"wrote {path}")
    return 0


def run_embeddings(args: argparse.Namespace) -> int:
    from scratchllm.viz import plot_embeddings

    model, tok = _load(args.run)
    print(f"wrote {plot_embeddings(model, tok, args.words, args.out)}")
    return 0


def run_next_token(args: argparse.Namespace) -> int:
    from scratchllm.generation import SamplingConfig
    from scratchllm.viz import plot_next_token

    model, tok = _load(args.run)
    sampling = SamplingConfig(
        temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p
    )
    print(f"wrote {plot_next_token(model, tok, args.text, args.out, sampling, k=args.k)}")
    return 0


def run_tokens(args: argparse.Namespace) -> int:
    from scratchllm.tokenizer import load_tokenizer
    from scratchllm.viz import plot_tokens

    tok = _load(args.run)[1] if args.run else load_tokenizer(args.tokenizer)
    print(f"wrote {plot_tokens(tok, args.text, args.out, width=args.width)}")
    return 0
