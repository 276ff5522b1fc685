"""`scratchllm model`: describe model configurations (parameters, FLOPs, memory)."""

from __future__ import annotations

import argparse
import json

from scratchllm.model.config import PRESETS, get_preset
from scratchllm.model.info import config_from_run, format_info, info_dict, model_info


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "model",
        help="describe a model configuration",
        description="Inspect model configurations without building real weights.",
    )
    model_sub = p.add_subparsers(dest="model_command", metavar="SUBCOMMAND")
    model_sub.required = True
    info = model_sub.add_parser(
        "info",
        help="parameters, FLOPs per token and training memory",
        description=(
            "Parameters (total and non-embedding), FLOPs per token at a context length "
            "(forward and training), and memory for weights, gradients and AdamW state in fp32 "
            "and bf16, for a preset or a run directory."
        ),
    )
    source = info.add_mutually_exclusive_group(required=True)
    source.add_argument("--preset", choices=sorted(PRESETS), help="a named configuration")
    source.add_argument("--run", metavar="DIR", help="a run directory (reads DIR/config.json)")
    info.add_argument(
        "--context-length",
        type=int,
        default=None,
        help="T for the attention FLOPs term (default: the config's context length)",
    )
    info.add_argument(
        "--encoder", action="store_true", help="count as an encoder (MLM head, pooler)"
    )
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    info.set_defaults(func=_info)


def _info(args: argparse.Namespace) -> int:
    if args.preset:
        cfg, name = get_preset(args.preset), args.preset
    else:
        cfg, name = config_from_run(args.run), args.run
    encoder = args.encoder or cfg.norm_position == "post" and cfg.type_vocab_size > 0
    result = model_info(cfg, args.context_length, encoder=encoder)
    if args.json:
        print(json.dumps({"name": name, **info_dict(result)}, indent=2))
    else:
        print(format_info(result, name))
    return 0
