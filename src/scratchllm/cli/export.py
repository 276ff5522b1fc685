"""`scratchllm export`: a run directory in the Hugging Face layout (transformers can load it)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write a run in the Hugging Face layout",
        description=(
            "Write a run in the Hugging Face layout: config.json + model.safetensors (GPT-2, "
            "Llama/Qwen2 or BERT, whichever matches its config) with tokenizer.json, vocab.json, "
            "merges.txt, tokenizer_config.json and a tiktoken rank file, so that transformers, "
            "tokenizers and tiktoken load it. Those files describe byte-level BPE only: a run "
            "with a word- or char-level tokenizer exports the model alone, with a warning."
        ),
    )
    p.add_argument("--run", required=True, metavar="RUN_DIR", help="run directory to export")
    p.add_argument("--to", required=True, metavar="DIR", help="output directory")
    p.add_argument("--format", choices=["hf"], default="hf", help="output layout (default hf)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from scratchllm.cli.common import note_adapter_run
    from scratchllm.interop.runs import export_run

    note_adapter_run(args.run)  # exported merged: the base's weights with the adapter folded in
    files = export_run(args.run, args.to)
    print(f"exported {args.run} to {args.to}/: {', '.join(f.name for f in files)}")
    return 0
