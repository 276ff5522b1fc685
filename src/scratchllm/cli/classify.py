"""`scratchllm classify`: label text with a fine-tuned classifier run."""

from __future__ import annotations

import argparse
import csv
import sys

from scratchllm.cli.argtypes import positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "classify",
        help="label text with a classifier run (from `finetune classify`)",
        description=(
            "Label one or more texts, or every record of a file (CSV/TSV/JSONL with a text "
            "column, or .txt with one text per line), with a classifier run. Writes CSV: the "
            "text, the predicted label and one probability column per label."
        ),
    )
    p.add_argument("--run", required=True, help="classifier run directory")
    p.add_argument("texts", nargs="*", help="texts to label")
    p.add_argument("--file", help="file of texts to label")
    p.add_argument("--text-col", default="text", help="text column name or 0-based index")
    p.add_argument("--no-header", action="store_true", help="CSV/TSV without a header row")
    p.add_argument("--out", help="CSV output file (default: standard output)")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--device", default="cpu", help="cpu, cuda, mps")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from scratchllm.errors import ConfigError
    from scratchllm.finetune.classify import load_classifier
    from scratchllm.finetune.classify_data import Columns, read_examples

    if not args.texts and not args.file:
        raise ConfigError("give texts to label, or --file FILE")
    texts = list(args.texts)
    if args.file:
        header = False if args.no_header else None
        columns = Columns(text=args.text_col, label=args.text_col, header=header)
        texts += [e.text for e in read_examples(args.file, columns, labels=False)]
    clf = load_classifier(args.run, device=args.device)
    probs = clf.predict_proba(texts, batch_size=args.batch_size)
    out = open(args.out, "w", newline="", encoding="utf-8") if args.out else sys.stdout
    try:
        writer = csv.writer(out)
        writer.writerow(["text", "label", *(f"p_{label}" for label in clf.labels)])
        for text, row in zip(texts, probs, strict=True):
            label = clf.labels[int(row.argmax())]
            writer.writerow([text, label, *(f"{p:.6f}" for p in row)])
    finally:
        if out is not sys.stdout:
            out.close()
    if args.out:
        print(f"labelled {len(texts)} text(s) -> {args.out}", file=sys.stderr)
    return 0
