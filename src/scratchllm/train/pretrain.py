"""Text in, trained GPT out: the end-to-end job behind ``scratchllm demo`` and ``scratchllm train``.

documents ─► split by document ─► BPE tokenizer ─► token ids ─► sliding windows ─► Trainer ─► run dir
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scratchllm.data.encode import encode_documents
from scratchllm.data.loaders import EpochLoader
from scratchllm.data.sources import Document, split_documents
from scratchllm.data.windows import WindowDataset
from scratchllm.errors import DataError
from scratchllm.model import GPTModel, ModelConfig
from scratchllm.tokenizer import BPETokenizer
from scratchllm.train.checkpoint import atomic_write_json, save_run
from scratchllm.train.config import TrainConfig
from scratchllm.train.loop import Trainer, TrainResult

# Share of held-out data when a corpus has too few documents to split by document.
TOKEN_SPLIT_VAL_FRACTION = 0.1
# Ids counted at a time by unigram_cross_entropy.
_COUNT_BLOCK = 1 << 20


@dataclass
class PretrainReport:
    run_dir: Path
    result: TrainResult
    val_loss: float  # over the whole validation split, nats per token
    unigram_loss: float  # cross-entropy of a unigram model fitted on train ids, same tokens
    train_tokens: int
    val_tokens: int
    tokenizer_seconds: float
    samples: list[tuple[str, str]] = field(default_factory=list)


def unigram_cross_entropy(train_ids: np.ndarray, eval_ids: np.ndarray, vocab_size: int) -> float:
    """Cross-entropy (nats/token) on ``eval_ids`` of add-one-smoothed token frequencies of train.

    The baseline a model beats only by using context: it knows every token's frequency, nothing more.
    """
    counts = np.ones(vocab_size, dtype=np.float64)  # add-one smoothing
    for start in range(0, len(train_ids), _COUNT_BLOCK):  # no int64 copy of all the ids
        block = train_ids[start : start + _COUNT_BLOCK].astype(np.int64)
        counts += np.bincount(block, minlength=vocab_size)[:vocab_size]
    log_probs = np.log(counts / counts.sum())
    return float(-log_probs[eval_ids.astype(np.int64)].mean())


def window_targets(dataset: WindowDataset) -> np.ndarray:
    """Every target id of a dataset's windows (the tokens its loss is measured on), gathered
    ``_COUNT_BLOCK`` ids at a time rather than as one tensor per window."""
    n, rows = len(dataset), max(1, _COUNT_BLOCK // dataset.max_length)
    blocks = [
        dataset.get_batch(np.arange(i, min(i + rows, n)))[1].numpy().ravel()
        for i in range(0, n, rows)
    ]
    return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.int64)


def split_ids(
    train_docs: Sequence[Document],
    val_docs: Sequence[Document],
    tokenizer: Any,
    token_val_fraction: float = TOKEN_SPLIT_VAL_FRACTION,
) -> tuple[np.ndarray, np.ndarray]:
    """Token ids of both splits; with no validation documents, the last ``token_val_fraction``
    of the train ids (a corpus of one document is split by tokens)."""
    train_ids = encode_documents(train_docs, tokenizer)
    if val_docs:
        return train_ids, encode_documents(val_docs, tokenizer)
    cut = int(len(train_ids) * (1 - token_val_fraction))
    return train_ids[:cut], train_ids[cut:]


def pretrain(
    docs: Sequence[Document],
    run_dir: str | Path,
    model_overrides: dict[str, Any],
    train_cfg: TrainConfig,
    *,
    vocab_size: int = 4096,
    val_fraction: float = 0.1,
    stride: int | None = None,
    tokenizer: Any = None,
    prompts: Sequence[str] = (),
    sample_tokens: int = 40,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> PretrainReport:
    """Train a tokenizer (unless given) and a GPT on ``docs``; save everything to ``run_dir``."""
    run_dir = Path(run_dir)
    # Bad model settings and an unusable run_dir fail before the tokenizer trains (minutes on a
    # large corpus); the vocabulary size is checked again once the tokenizer has one.
    ModelConfig(
        **{**model_overrides, "vocab_size": tokenizer.vocab_size if tokenizer else vocab_size}
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(train_cfg.seed)
    train_docs, val_docs = split_documents(docs, val_fraction, seed=train_cfg.seed)
    n_chars = sum(len(d.text) for d in docs)
    log(
        f"corpus: {len(docs)} documents, {n_chars:,} characters "
        f"({len(train_docs)} train / {len(val_docs)} validation documents)"
    )

    t0 = time.perf_counter()
    if tokenizer is None:
        log(f"training a byte-level BPE tokenizer (vocab {vocab_size:,}) ...")
        tokenizer = BPETokenizer.train((d.text for d in train_docs), vocab_size)
    for prompt in prompts:  # one the tokenizer refuses fails now, not at the first sample
        tokenizer.encode(prompt)
    train_ids, val_ids = split_ids(train_docs, val_docs, tokenizer)
    tokenizer_seconds = time.perf_counter() - t0
    log(
        f"tokens: {len(train_ids):,} train, {len(val_ids):,} validation "
        f"({n_chars / max(1, len(train_ids) + len(val_ids)):.2f} characters/token, "
        f"{tokenizer_seconds:.1f} s)"
    )

    model_cfg = ModelConfig(**{**model_overrides, "vocab_size": tokenizer.vocab_size})
    context = model_cfg.context_length
    stride = stride or context
    try:
        train_ds = WindowDataset(train_ids, context, stride)
    except DataError as exc:
        raise DataError(f"training split too small: {exc}") from None
    if len(val_ids) < context + 1:  # short validation split: evaluate on shorter windows
        val_ds = WindowDataset(val_ids, context, context, last="pad", pad_id=tokenizer.eot_id)
    else:
        val_ds = WindowDataset(val_ids, context, context)
    if len(val_ds) == 0:
        raise DataError(f"validation split has {len(val_ids)} tokens, too few for one window")
    if len(train_ds) < train_cfg.batch_size:
        raise DataError(
            f"training split has {len(train_ds)} windows of {context} tokens, fewer than "
            f"batch_size={train_cfg.batch_size}; use a larger corpus or a smaller batch/context"
        )
    train_loader = EpochLoader(train_ds, train_cfg.batch_size, shuffle=True, seed=train_cfg.seed)
    val_loader = EpochLoader(val_ds, train_cfg.batch_size, shuffle=False, drop_last=False)

    model = GPTModel(model_cfg)
    n_params = sum(p.numel() for p in model.parameters())
    log(
        f"model: {n_params / 1e6:.2f}M parameters "
        f"(n_layer={model_cfg.n_layer}, n_head={model_cfg.n_head}, n_embd={model_cfg.n_embd}, "
        f"context_length={context}); {len(train_ds):,} training windows, "
        f"{len(train_loader)} batches/epoch"
    )

    (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    atomic_write_json(run_dir / "train_config.json", train_cfg.to_dict())
    trainer = Trainer(
        model,
        train_cfg,
        train_loader,
        lambda: iter(_one_epoch(val_loader)),
        run_dir=run_dir,
        progress=progress,
        sample=sampler(tokenizer, prompts[0] if prompts else "", sample_tokens, train_cfg.seed),
    )
    result = trainer.fit()
    atomic_write_json(run_dir / "train_config.json", train_cfg.to_dict())  # a fitted time budget
    model = trainer.model.eval()
    save_run(run_dir, model, model_cfg, tokenizer)

    # Final figures over the whole validation split, and the unigram baseline on the same tokens.
    from scratchllm.train.loop import evaluate, next_token_loss

    val_loss = evaluate(
        model, lambda: iter(_one_epoch(val_loader)), next_token_loss, trainer.device
    )
    targets = window_targets(val_ds)
    targets = targets[targets >= 0]
    unigram = unigram_cross_entropy(train_ids, targets, tokenizer.vocab_size)
    report = PretrainReport(
        run_dir, result, val_loss, unigram, len(train_ids), len(val_ids), tokenizer_seconds
    )
    report.samples = _samples(model, tokenizer, prompts, sample_tokens, train_cfg.seed)
    atomic_write_json(
        run_dir / "summary.json",
        {
            "val_loss": val_loss,
            "unigram_loss": unigram,
            "steps": result.step,
            "tokens_trained": result.tokens,
            "train_seconds": result.seconds,
            "train_tokens": len(train_ids),
            "val_tokens": len(val_ids),
            "perplexity": math.exp(min(val_loss, 50)),
            "stopped": result.stopped,
        },
    )
    return report


def sampler(tokenizer: Any, prompt: str, max_new_tokens: int, seed: int):
    """A Trainer ``sample`` callback: a short seeded continuation of ``prompt``."""
    from scratchllm.generate import SamplingConfig, complete

    # special tokens other than end-of-text ([PAD], [BOS], [UNK], ...) are not text: banned
    specials = getattr(tokenizer, "special_tokens", {}).values()
    ban = tuple((i, -100.0) for i in sorted(specials) if i != tokenizer.eot_id)
    sampling = SamplingConfig(temperature=0.8, top_k=40, logit_bias=ban)

    def sample(model) -> str:
        return prompt + complete(model, tokenizer, prompt, max_new_tokens, sampling, seed=seed)

    return sample


def _one_epoch(loader: EpochLoader):
    """One pass over a non-shuffled loader, from its first batch."""
    loader.load_state_dict({"epoch": 0, "batch_index": 0})
    yield from loader


def _samples(model, tokenizer, prompts, max_new_tokens, seed) -> list[tuple[str, str]]:
    from scratchllm.generate import SamplingConfig, complete

    sampling = SamplingConfig(temperature=0.8, top_k=40)
    return [
        (p, complete(model, tokenizer, p, max_new_tokens, sampling, seed=seed)) for p in prompts
    ]
