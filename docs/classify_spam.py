"""SMS spam with the book's setup (balanced 747 + 747, split 70/10/20), measured on CPU.

Run once and record the printed figures in docs/classify.md (too slow for `make test`):

    .venv/bin/python docs/classify_spam.py --kind gpt --out runs/spam-gpt
    .venv/bin/python docs/classify_spam.py --kind encoder --out runs/spam-encoder
    .venv/bin/python docs/classify_spam.py --kind gpt --pretrain --pretrain-steps 818 \
        --out runs/spam-gpt-pre

The pretrained base is written to OUT-base (runs/spam-gpt-pre-base). ``--pretrain-seconds``
fits the number of steps to a time budget instead, so its figures depend on the machine's speed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from scratchllm.finetune.classify_data import Columns
from scratchllm.finetune.classify_run import finetune_classifier, load_splits, scratch_backbone
from scratchllm.train.config import TrainConfig

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "sms-spam-collection.tsv"
# A small model: big enough to read SMS spam cues, small enough for a few minutes on 2 cores.
MODEL = {"n_embd": 64, "n_layer": 2, "n_head": 4, "dropout": 0.1}


def pretrained_gpt(
    run_dir: Path, seconds: float, steps: int | None = None
) -> tuple[object, object]:
    """A small GPT pretrained on the built-in corpus with our own pipeline, then loaded back:
    ``steps`` optimizer steps, or as many as fit in ``seconds`` when ``steps`` is None."""
    from scratchllm.data.sources import read_text_sources
    from scratchllm.finetune.classify import load_backbone
    from scratchllm.train.pretrain import pretrain

    overrides = {**MODEL, "context_length": 128, "dropout": 0.0}
    cfg = TrainConfig(
        max_steps=steps or 100_000,
        max_seconds=None if steps else seconds,
        batch_size=16,
        lr=2e-3,
        min_lr=2e-4,
        warmup_steps=50,
        eval_interval=200,
        device="cpu",
    )
    pretrain(read_text_sources("builtin"), run_dir, overrides, cfg, vocab_size=2048, progress=False)
    model, tokenizer, _ = load_backbone(run_dir)
    return model, tokenizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--kind", choices=("gpt", "encoder"), default="gpt")
    ap.add_argument("--pretrain", action="store_true", help="pretrain the GPT on 'builtin' first")
    ap.add_argument("--pretrain-seconds", type=float, default=300.0)
    ap.add_argument(
        "--pretrain-steps", type=int, default=None, help="fixed length (reproducible figures)"
    )
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--vocab-size", type=int, default=2048)
    ap.add_argument("--trainable", choices=("head", "last", "all"), default="all")
    ap.add_argument("--seed", type=int, default=123)
    ap.add_argument("--out", default="runs/spam")
    args = ap.parse_args()
    if not DATA.is_file():
        raise SystemExit(f"{DATA} not found: nothing to measure")

    start = time.perf_counter()
    columns = Columns(text="1", label="0", header=False)
    splits = load_splits(DATA, columns=columns, balanced=True, seed=args.seed)
    if args.pretrain:
        model, tokenizer = pretrained_gpt(
            Path(args.out + "-base"), args.pretrain_seconds, args.pretrain_steps
        )
    else:
        texts = [e.text for e in splits.train]
        model, tokenizer = scratch_backbone(
            args.kind,
            texts,
            vocab_size=args.vocab_size,
            context_length=128,
            overrides=MODEL,
            seed=args.seed,
        )
    cfg = TrainConfig(
        batch_size=16,
        lr=args.lr,
        min_lr=args.lr / 10,
        warmup_steps=20,
        weight_decay=0.1,
        device="cpu",
        seed=args.seed,
    )
    report = finetune_classifier(
        splits,
        args.out,
        model,
        tokenizer,
        train_cfg=cfg,
        epochs=args.epochs,
        trainable=args.trainable,
        max_length=128,
        progress=False,
    )
    total = time.perf_counter() - start
    print(
        json.dumps(
            {
                "kind": args.kind,
                "pretrain": args.pretrain,
                "accuracy": report.accuracy,
                "train_seconds": round(report.seconds, 1),
                "total_seconds": round(total, 1),
                "counts": report.counts,
                "params": report.trainable,
            }
        )
    )


if __name__ == "__main__":
    main()
