"""`scratchllm embed ...`: Word2Vec vectors, their neighbours, and sentence embeddings of a run."""

from __future__ import annotations

import argparse
import json
import sys

from scratchllm.cli.argtypes import positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "embed",
        help="word vectors (Word2Vec), neighbours, sentence embeddings",
        description=(
            "Train Word2Vec vectors on a corpus, query nearest neighbours and analogies of word "
            "vectors (a Word2Vec run, a word2vec text file, or the input embeddings of any GPT / "
            "encoder run), and embed texts with a trained run."
        ),
    )
    cmds = p.add_subparsers(dest="embed_command", metavar="SUBCOMMAND")
    cmds.required = True
    _register_word2vec(cmds)
    _register_neighbours(cmds)
    _register_analogy(cmds)
    _register_text(cmds)


def _register_word2vec(cmds: argparse._SubParsersAction) -> None:
    p = cmds.add_parser(
        "word2vec",
        help="train Word2Vec vectors (skip-gram or CBOW, negative sampling)",
        description=(
            "Train Word2Vec on a corpus (a file, directory, glob, JSONL/Parquet or 'builtin') "
            "through a word-level lowercase tokenizer trained on it (or --tokenizer). Writes "
            "DIR/vectors.txt (plain-text word2vec format), weights, tokenizer and metrics."
        ),
    )
    p.add_argument("--data", required=True, help="corpus path, or 'builtin'")
    p.add_argument("--out", required=True, help="output run directory")
    p.add_argument("--tokenizer", help="use this tokenizer (directory or file) instead")
    p.add_argument("--mode", choices=("skipgram", "cbow"), default="skipgram")
    p.add_argument(
        "--dim", type=positive_int, default=100, help="vector size (default %(default)s)"
    )
    p.add_argument("--window", type=positive_int, default=5, help="largest context distance")
    p.add_argument("--negatives", type=positive_int, default=5, help="noise tokens per pair")
    p.add_argument("--subsample", type=float, default=1e-3, help="threshold t; 0 = off")
    p.add_argument("--min-count", type=positive_int, default=5, help="rarer words are dropped")
    p.add_argument(
        "--max-vocab", type=positive_int, default=None, help="vocabulary cap (with specials)"
    )
    p.add_argument("--steps", type=positive_int, default=2000, help="optimizer steps")
    p.add_argument("--batch-size", type=positive_int, default=1024, help="pairs per step")
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, mps")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(  # the old spelling, kept working
        "--quiet", dest="no_progress", action="store_true", help=argparse.SUPPRESS
    )
    p.set_defaults(func=run_word2vec)


def _register_neighbours(cmds: argparse._SubParsersAction) -> None:
    p = cmds.add_parser(
        "neighbours",
        help="nearest words by cosine similarity",
        description=(
            "Print the nearest neighbours (cosine similarity) of each WORD in a Word2Vec run, a "
            "word2vec text file, or the input embedding table of a GPT / encoder run."
        ),
    )
    p.add_argument("--run", required=True, help="run directory or vectors file")
    p.add_argument("words", nargs="+", metavar="WORD")
    p.add_argument("-k", type=positive_int, default=10, help="neighbours per word")
    p.add_argument("--json", action="store_true", help="one JSON object per word")
    p.set_defaults(func=run_neighbours)


def _register_analogy(cmds: argparse._SubParsersAction) -> None:
    p = cmds.add_parser(
        "analogy",
        help="A is to B as C is to ?",
        description="Words nearest to B - A + C (unit vectors), the three inputs left out.",
    )
    p.add_argument("--run", required=True, help="run directory or vectors file")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("c")
    p.add_argument("-k", type=positive_int, default=5, help="answers")
    p.set_defaults(func=run_analogy)


def _register_text(cmds: argparse._SubParsersAction) -> None:
    p = cmds.add_parser(
        "text",
        help="sentence embeddings from a GPT or encoder run",
        description=(
            "Embed texts with a trained GPT or encoder run: the mean of the final hidden states "
            "(--pooling mean) or the last token's (--pooling last), unit length. Writes JSON "
            "lines {text, embedding}, or a .npy matrix with --out; --query ranks the texts."
        ),
    )
    p.add_argument("--run", required=True, help="GPT or encoder run directory")
    p.add_argument("texts", nargs="*", help="texts to embed")
    p.add_argument("--file", help="file with one text per line")
    p.add_argument("--pooling", choices=("mean", "last"), default="mean")
    p.add_argument("--out", help="write the [N, n_embd] matrix to this .npy file")
    p.add_argument("--query", help="print the texts ranked by cosine similarity to this text")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run_text)


def run_word2vec(args: argparse.Namespace) -> int:
    from scratchllm.data.sources import read_text_sources
    from scratchllm.lineage.word2vec import default_train_config, train_word2vec
    from scratchllm.tokenizer import load_tokenizer

    texts = [doc.text for doc in read_text_sources(args.data)]
    tokenizer = load_tokenizer(args.tokenizer) if args.tokenizer else None
    train = default_train_config(
        max_steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        min_lr=args.lr / 10,
        warmup_steps=min(50, args.steps),
        seed=args.seed,
        device=args.device,
    )
    run = train_word2vec(
        texts,
        tokenizer=tokenizer,
        min_count=args.min_count,
        max_vocab=args.max_vocab,
        dim=args.dim,
        mode=args.mode,
        window=args.window,
        negatives=args.negatives,
        subsample=args.subsample,
        train=train,
        out_dir=args.out,
        progress=not args.no_progress,
    )
    print(
        f"trained {args.mode} vectors for {len(run.vectors)} tokens (dim {args.dim}) in "
        f"{run.result.step} steps, {run.result.seconds:.1f} s, final loss "
        f"{run.result.train_loss:.3f} -> {args.out}"
    )
    return 0


def run_neighbours(args: argparse.Namespace) -> int:
    from scratchllm.lineage.word2vec import load_vectors

    vectors = load_vectors(args.run)
    for word in args.words:
        found = vectors.neighbours(word, args.k)
        if args.json:
            print(json.dumps({"word": word, "neighbours": found}))
        else:
            print(f"{word}: " + ", ".join(f"{w} {s:.2f}" for w, s in found))
    return 0


def run_analogy(args: argparse.Namespace) -> int:
    from scratchllm.lineage.word2vec import load_vectors

    found = load_vectors(args.run).analogy(args.a, args.b, args.c, args.k)
    print(f"{args.a} : {args.b} :: {args.c} : " + ", ".join(f"{w} {s:.2f}" for w, s in found))
    return 0


def run_text(args: argparse.Namespace) -> int:
    from scratchllm.cli.common import read_text_file
    from scratchllm.errors import ConfigError
    from scratchllm.lineage.sentence import load_embedder, search

    texts = list(args.texts)
    if args.file:
        lines = read_text_file(args.file, "--file").split("\n")
        texts += [line for line in lines if line.strip()]
    if not texts:
        raise ConfigError("give texts to embed, or --file FILE")
    embedder = load_embedder(args.run, pooling=args.pooling, device=args.device)
    vectors = embedder.embed(texts, batch_size=args.batch_size)
    if args.query is not None:
        query = embedder.embed([args.query])[0]
        for row, score in search(query, vectors, k=len(texts)):
            print(f"{score:.4f}\t{texts[row]}")
    elif args.out:
        import numpy as np

        np.save(args.out, vectors.numpy())
        print(
            f"embedded {len(texts)} text(s) -> {args.out} {tuple(vectors.shape)}", file=sys.stderr
        )
    else:
        for text, vec in zip(texts, vectors.tolist(), strict=True):
            print(json.dumps({"text": text, "embedding": [round(x, 6) for x in vec]}))
    return 0
