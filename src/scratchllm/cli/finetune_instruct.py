"""`scratchllm finetune instruct` and `scratchllm finetune dpo`: instruction and preference tuning.

Both are added to the `finetune` group by ``register(tasks)`` (listed in cli/finetune.py).
"""

from __future__ import annotations

import argparse

from scratchllm.cli.argtypes import non_negative_int, positive_int
from scratchllm.finetune.lora import DEFAULT_TARGETS


def _common(p: argparse.ArgumentParser, default_steps: int, default_lr: float) -> None:
    p.add_argument("--base", required=True, help="run directory to start from")
    p.add_argument("--data", required=True, help="JSON array or JSON Lines file of records")
    p.add_argument("--out", required=True, help="output run directory")
    p.add_argument(
        "--template",
        choices=("alpaca", "chat"),
        default=None,
        help="prompt template (default: the base run's template.json, else alpaca)",
    )
    p.add_argument("--system", default=None, help="system prompt / preamble for the template")
    p.add_argument(
        "--split",
        default="0.85,0.05,0.10",
        help="train,validation,test fractions (default %(default)s)",
    )
    p.add_argument(
        "--skip-invalid",
        action="store_true",
        help="count and report malformed records instead of stopping at the first",
    )
    g = p.add_argument_group("LoRA (full fine-tuning when --lora-r is not given)")
    g.add_argument("--lora-r", type=positive_int, default=None, help="adapter rank, e.g. 8")
    g.add_argument("--lora-alpha", type=float, default=16.0, help="update scale numerator")
    g.add_argument("--lora-dropout", type=float, default=0.0)
    g.add_argument(
        "--lora-targets",
        default=",".join(DEFAULT_TARGETS),
        help="comma-separated module names to wrap (default %(default)s = every linear layer "
        "in attention and MLP)",
    )
    t = p.add_argument_group("training")
    t.add_argument("--steps", type=positive_int, default=default_steps, help="optimizer steps")
    t.add_argument("--batch-size", type=positive_int, default=8)
    t.add_argument(
        "--grad-accum", type=positive_int, default=1, help="micro-batches per optimizer step"
    )
    t.add_argument("--lr", type=float, default=default_lr, help="peak learning rate")
    t.add_argument("--warmup-steps", type=non_negative_int, default=20)
    t.add_argument("--weight-decay", type=float, default=0.0)
    t.add_argument("--eval-interval", type=positive_int, default=50)
    t.add_argument(
        "--save-interval", type=non_negative_int, default=0, help="steps between checkpoints"
    )
    t.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest checkpoint in --out (same settings; --steps, --lr and the "
        "intervals may change)",
    )
    t.add_argument("--device", default="auto", help="auto, cpu, cuda, mps")
    t.add_argument("--seed", type=int, default=123)
    t.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(tasks: argparse._SubParsersAction) -> None:
    p = tasks.add_parser(
        "instruct",
        help="instruction-tune a run (full weights or LoRA)",
        description=(
            "Supervised instruction fine-tuning on instruction/input/output or chat-messages "
            "records. Trains on the responses only, saves the run with its template.json, and "
            "writes greedy responses for the held-out split to responses.jsonl."
        ),
    )
    _common(p, default_steps=500, default_lr=5e-5)
    p.add_argument(
        "--no-mask-prompt", action="store_true", help="take the loss on prompt tokens too"
    )
    p.add_argument(
        "--on-overflow",
        choices=("skip", "truncate", "error"),
        default="skip",
        help="conversations longer than the context (default %(default)s, counted and reported)",
    )
    p.add_argument("--max-new-tokens", type=positive_int, default=128, help="per held-out response")
    p.add_argument(
        "--max-responses",
        type=non_negative_int,
        default=None,
        help="held-out responses to write (default: the whole test split)",
    )
    p.add_argument(
        "--judge-url",
        default=None,
        help="OpenAI-compatible base URL (e.g. http://localhost:8000/v1) to score responses 0-100",
    )
    p.add_argument("--judge-model", default="judge", help="model name sent to the judge")
    p.set_defaults(func=run_instruct, parser=p)

    d = tasks.add_parser(
        "dpo",
        help="preference-tune a run with DPO",
        description=(
            "Direct Preference Optimization on records with chosen and rejected responses "
            "(plus instruction/input or messages). The reference is a frozen copy of the base, "
            "or the base itself with adapters off under LoRA. Logs rewards and reward margins."
        ),
    )
    _common(d, default_steps=200, default_lr=5e-6)
    d.add_argument("--beta", type=float, default=0.1, help="DPO beta (default %(default)s)")
    d.set_defaults(func=run_dpo, parser=d)


def _settings(args: argparse.Namespace):
    from scratchllm.finetune.lora import LoRAConfig
    from scratchllm.train.config import TrainConfig

    lora = None
    if args.lora_r is not None:
        targets = [t.strip() for t in args.lora_targets.split(",") if t.strip()]
        lora = LoRAConfig(args.lora_r, args.lora_alpha, args.lora_dropout, targets)
    train = TrainConfig(
        max_steps=args.steps,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        lr=args.lr,
        min_lr=args.lr / 10,
        warmup_steps=min(args.warmup_steps, args.steps),
        weight_decay=args.weight_decay,
        eval_interval=args.eval_interval,
        save_interval=args.save_interval,
        device=args.device,
        seed=args.seed,
    )
    return _split(args.split), lora, train


def split_counts(sizes: dict[str, int]) -> str:
    """``{'train': 34, 'val': 4, 'test': 4}`` as ``train 34, validation 4, test 4``."""
    names = {"val": "validation"}
    return ", ".join(f"{names.get(k, k)} {n}" for k, n in sizes.items())


def _split(text: str) -> tuple[float, float, float]:
    from scratchllm.errors import ConfigError

    try:
        parts = tuple(float(x) for x in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3:
        raise ConfigError(f"--split {text!r} must be three comma-separated fractions")
    return parts  # type: ignore[return-value]


def run_instruct(args: argparse.Namespace) -> int:
    from scratchllm.cli.finetune import print_interrupted
    from scratchllm.finetune.instruct import InstructConfig, finetune_instruct
    from scratchllm.finetune.templates import load_template

    split, lora, train = _settings(args)
    template = args.template or getattr(load_template(args.base), "name", "alpaca")
    cfg = InstructConfig(
        template=template,
        system=args.system,
        mask_prompt=not args.no_mask_prompt,
        split=split,
        on_overflow=args.on_overflow,
        skip_invalid=args.skip_invalid,
        lora=lora,
        max_new_tokens=args.max_new_tokens,
        max_responses=args.max_responses,
        judge_url=args.judge_url,
        judge_model=args.judge_model,
        resume=args.resume,
    )
    report = finetune_instruct(
        args.base, args.data, args.out, cfg, train, progress=not args.no_progress
    )
    r = report.result
    if report.interrupted:
        print_interrupted(args, r.step, train.max_steps, report.checkpoint)
        return 0
    print(
        f"trained {r.step} steps in {r.seconds:.0f} s (stopped: {r.stopped}); "
        f"validation loss {'n/a' if r.val_loss is None else f'{r.val_loss:.4f}'}"
    )
    print(
        f"held-out responses: {len(report.responses)} in {report.run_dir}/responses.jsonl; "
        f"{100 * report.stop_rate:.0f}% stopped at the end token, "
        f"{100 * report.exact_match:.0f}% exact match"
    )
    if report.judge_mean is not None:
        print(f"judge: mean score {report.judge_mean:.1f} / 100")
    if lora is not None:
        print(f"adapter saved; make a standalone run with: scratchllm lora merge --run {args.out}")
    return 0


def run_dpo(args: argparse.Namespace) -> int:
    from scratchllm.cli.finetune import print_interrupted
    from scratchllm.finetune.preference import DPOConfig, finetune_dpo

    split, lora, train = _settings(args)
    cfg = DPOConfig(
        beta=args.beta,
        template=args.template,
        system=args.system,
        split=split,
        skip_invalid=args.skip_invalid,
        lora=lora,
        resume=args.resume,
    )
    report = finetune_dpo(args.base, args.data, args.out, cfg, train, progress=not args.no_progress)
    r = report.result
    if report.interrupted:
        print_interrupted(args, r.step, train.max_steps, report.checkpoint)
        return 0
    # The data split, the initial loss and each evaluation were already logged as they happened.
    print(f"trained {r.step} steps in {r.seconds:.0f} s (stopped: {r.stopped})")
    print(f"run saved to {report.run_dir}/ (metrics.jsonl has rewards and margins per evaluation)")
    return 0
