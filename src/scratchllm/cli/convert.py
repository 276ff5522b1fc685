"""`scratchllm convert`: a Hugging Face checkpoint (directory or Hub id) into a run directory."""

from __future__ import annotations

import argparse

DTYPES = ("float32", "bfloat16", "float16")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="import GPT-2, BERT or Llama-family weights from Hugging Face",
        description=(
            "Read a Hugging Face checkpoint (config.json with model.safetensors, sharded "
            "safetensors or pytorch_model.bin, and its tokenizer files) and write a run directory "
            "that generate, chat, finetune and serve accept. A Hub id is downloaded first when "
            "huggingface_hub is installed and the network is reachable."
        ),
    )
    p.add_argument(
        "--from", dest="src", required=True, metavar="PATH_OR_ID", help="HF directory or Hub id"
    )
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory to create")
    p.add_argument(
        "--dtype", choices=DTYPES, default=None, help="cast weights (default: as stored)"
    )
    p.add_argument("--cache-dir", default=None, help="where Hub downloads go (default: HF cache)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from scratchllm.interop.runs import convert_to_run

    dtype = getattr(torch, args.dtype) if args.dtype else None
    done = convert_to_run(args.src, args.out, dtype=dtype, cache_dir=args.cache_dir)
    cfg = done.cfg
    print(
        f"converted {args.src} ({done.layout}: {cfg.n_layer} layers, width {cfg.n_embd}, "
        f"{cfg.n_head} heads, vocab {cfg.vocab_size}; {done.num_parameters:,} parameters)"
    )
    for note in done.notes:
        print(f"note: {note}")
    print(f"run saved to {done.run_dir}/")
    if done.layout != "bert":
        print(f'continue with: scratchllm generate --run {done.run_dir} --prompt "Hello"')
    return 0
