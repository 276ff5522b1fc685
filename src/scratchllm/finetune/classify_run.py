"""The fine-tuning job: labelled file(s) + a backbone ─► trained classifier run with honest metrics.

read ─► check ─► (balance) ─► split ─► encode ─► Trainer (per-epoch loss/accuracy) ─► test metrics
(accuracy, per-class precision / recall / F1, confusion matrix) ─► run dir with plots and report.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from scratchllm.data.loaders import EpochLoader
from scratchllm.errors import ConfigError, DataError
from scratchllm.finetune.classify import (
    ClassifierConfig,
    build_classifier,
    predict_proba,
    save_classifier,
    trainable_parameters,
)
from scratchllm.finetune.classify_data import (
    DEFAULT_FRACTIONS,
    Columns,
    Encoding,
    Example,
    balance,
    build_dataset,
    check_classes,
    check_known_labels,
    encode_texts,
    read_examples,
    stratified_split,
)
from scratchllm.finetune.resume import INTERRUPTED, newest_checkpoint, run_trainer, start_run
from scratchllm.model import EncoderModel, GPTModel, get_preset
from scratchllm.train.checkpoint import atomic_write_json
from scratchllm.train.config import TrainConfig
from scratchllm.train.loop import Trainer

SPLITS = ("train", "val", "test")


@dataclass
class DataSplits:
    """Train / validation / test examples, the label set, and where they came from."""

    train: list[Example]
    val: list[Example]
    test: list[Example]
    labels: list[str]
    source: str  # the data file, or the training split file

    def counts(self) -> dict[str, dict[str, int]]:
        return {
            name: {lab: sum(e.label == lab for e in part) for lab in self.labels}
            for name, part in zip(SPLITS, (self.train, self.val, self.test), strict=True)
        }


def load_splits(
    data: str | Path | None = None,
    *,
    train: str | Path | None = None,
    val: str | Path | None = None,
    test: str | Path | None = None,
    columns: Columns | None = None,
    balanced: bool = False,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    seed: int = 0,
) -> DataSplits:
    """One file split stratified by ``fractions`` (seeded), or three given split files.

    ``balanced`` undersamples every class to the smallest (before splitting one file; per split
    for given files). Errors name the file, line and value at fault.
    """
    columns = columns or Columns()
    if (data is None) == (train is None):
        raise ConfigError("give either one data file or --train/--val/--test split files")
    if data is not None:
        examples = read_examples(data, columns)
        labels = check_classes(examples, str(data))
        if balanced:
            examples = balance(examples, seed)
        tr, va, te = stratified_split(examples, fractions, seed)
        return DataSplits(tr, va, te, labels, str(data))
    if val is None or test is None:
        raise ConfigError("with --train, give --val and --test split files as well")
    parts = [read_examples(p, columns) for p in (train, val, test)]
    labels = check_classes(parts[0], str(train))
    for part in parts[1:]:
        check_known_labels(part, labels, str(train))
    if balanced:
        parts = [balance(p, seed) for p in parts]
    return DataSplits(*parts, labels, str(train))


# ---------------------------------------------------------------------------------- backbones


def scratch_backbone(
    kind: str,
    texts: Sequence[str],
    *,
    preset: str | None = None,
    vocab_size: int = 2048,
    context_length: int = 128,
    overrides: dict[str, Any] | None = None,
    seed: int = 0,
) -> tuple[nn.Module, Any]:
    """A randomly initialised GPT or encoder and a BPE tokenizer trained on ``texts``.

    The initial weights come from ``seed`` alone (the caller's random state is left as it was),
    so a from-scratch run is reproducible."""
    from scratchllm.tokenizer import BPETokenizer

    if kind not in ("gpt", "encoder"):
        raise ConfigError(f"from-scratch model kind {kind!r} must be 'gpt' or 'encoder'")
    preset = preset or ("tiny" if kind == "gpt" else "tiny-bert")
    tokenizer = BPETokenizer.train(texts, vocab_size)
    cfg = get_preset(
        preset,
        **{
            **(overrides or {}),
            "vocab_size": tokenizer.vocab_size,
            "context_length": context_length,
        },
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = (GPTModel if kind == "gpt" else EncoderModel)(cfg)
    return model, tokenizer


def special_ids(tokenizer: Any, architecture: str) -> tuple[int, int | None]:
    """(pad id, prefix id): encoders get a CLS-like first token to pool; decoders none."""
    specials = getattr(tokenizer, "special_tokens", {}) or {}
    eot = getattr(tokenizer, "eot_id", None)
    pad = getattr(tokenizer, "pad_id", None)
    pad = pad if pad is not None else (eot if eot is not None else 0)
    if architecture != "EncoderModel":
        return pad, None
    prefix = specials.get("[CLS]", getattr(tokenizer, "bos_id", None))
    return pad, prefix if prefix is not None else eot


# ------------------------------------------------------------------------------------ metrics


def classification_metrics(
    y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, per-class precision / recall / F1 / support, macro F1, confusion matrix.

    ``confusion[i][j]`` counts examples of true class i predicted as j. 0/0 counts as 0.
    """
    k = len(labels)
    conf = np.zeros((k, k), dtype=np.int64)
    np.add.at(conf, (np.asarray(y_true), np.asarray(y_pred)), 1)
    per_class = {}
    for i, label in enumerate(labels):
        tp = conf[i, i]
        predicted, actual = conf[:, i].sum(), conf[i].sum()
        p = tp / predicted if predicted else 0.0
        r = tp / actual if actual else 0.0
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        per_class[label] = {
            "precision": float(p),
            "recall": float(r),
            "f1": float(f1),
            "support": int(actual),
        }
    return {
        "accuracy": float(np.trace(conf) / max(conf.sum(), 1)),
        "macro_f1": float(np.mean([c["f1"] for c in per_class.values()])),
        "per_class": per_class,
        "confusion": conf.tolist(),
        "labels": list(labels),
    }


def format_metrics(m: dict[str, Any]) -> str:
    """A small text table of per-class figures and the confusion matrix."""
    width = max(8, *(len(lab) for lab in m["labels"]))
    lines = [f"{'class':<{width}}  precision  recall     f1  support"]
    for lab, c in m["per_class"].items():
        lines.append(
            f"{lab:<{width}}  {c['precision']:9.4f}  {c['recall']:6.4f}  {c['f1']:.4f}  "
            f"{c['support']:7d}"
        )
    lines.append(f"accuracy {m['accuracy']:.4f}   macro F1 {m['macro_f1']:.4f}")
    lines.append("confusion (rows = true, columns = predicted): " + " ".join(m["labels"]))
    lines += [
        f"{lab:<{width}}  " + " ".join(f"{n:5d}" for n in row)
        for lab, row in zip(m["labels"], m["confusion"], strict=True)
    ]
    return "\n".join(lines)


class ClassificationLoss:
    """Cross-entropy of class logits, tallying loss and correct counts as batches pass.

    The Trainer calls it on training batches (model in train mode) and on validation batches
    (eval mode); the tallies give per-epoch accuracy without a second pass over the data.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.tally = {True: [0.0, 0, 0], False: [0.0, 0, 0]}  # training -> [loss sum, right, n]

    def __call__(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, int]:
        x, mask, y = batch
        logits = model(x, attention_mask=mask)  # [B, K]
        loss = F.cross_entropy(logits.float(), y)
        t = self.tally[bool(model.training)]
        t[0] += loss.item() * len(y)
        t[1] += int((logits.argmax(dim=-1) == y).sum())
        t[2] += len(y)
        return loss, len(y)

    def means(self, training: bool) -> tuple[float, float]:
        """(mean loss, accuracy) of the batches tallied in that mode since the last reset."""
        loss, right, n = self.tally[training]
        return (loss / n, right / n) if n else (math.nan, math.nan)


# ---------------------------------------------------------------------------------------- job


@dataclass
class ClassifyReport:
    """What a run produced. An interrupted run (stopped by a signal) saved ``checkpoint`` and
    nothing else: ``accuracy`` and ``test`` are empty, no report.json or classifier was written."""

    run_dir: Path
    seconds: float  # wall time of the training loop
    epochs: list[dict[str, Any]]  # per-epoch train/val loss and accuracy
    accuracy: dict[str, float]  # final accuracy on train / val / test (eval mode)
    test: dict[str, Any]  # classification_metrics on the test split
    trainable: tuple[int, int] = (0, 0)  # (trainable, total) parameters
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    stopped: str = "max_steps"  # TrainResult.stopped
    step: int = 0  # optimizer steps done
    total_steps: int = 0  # epochs * steps per epoch
    checkpoint: Path | None = None  # the checkpoint an interrupted run resumes from

    @property
    def interrupted(self) -> bool:
        return self.stopped in INTERRUPTED


def finetune_classifier(
    splits: DataSplits,
    run_dir: str | Path,
    backbone: nn.Module,
    tokenizer: Any,
    *,
    train_cfg: TrainConfig,
    epochs: int = 5,
    pooling: str | None = None,
    trainable: str = "last",
    last_n_blocks: int = 1,
    max_length: int | None = None,
    lora: dict[str, Any] | None = None,
    base: str | None = None,
    log: Callable[[str], None] = tqdm.write,
    progress: bool = True,
    resume: bool = False,
) -> ClassifyReport:
    """Train a classifier head (and the chosen backbone parts) for ``epochs``; save the run.

    With ``resume``, continue from the newest checkpoint in ``run_dir`` (written when a run is
    stopped by a signal); the settings must be the ones it started with, ``epochs`` may grow.
    """
    if epochs < 1:
        raise ConfigError(f"epochs={epochs} must be >= 1")
    torch.manual_seed(train_cfg.seed)
    run_dir = Path(run_dir)
    arch = type(backbone).__name__
    pad_id, prefix_id = special_ids(tokenizer, arch)
    context = backbone.cfg.context_length
    if max_length is None:  # the longest training text, as in the book, within the context
        texts = [e.text for e in splits.train]
        ids = encode_texts(tokenizer, texts, Encoding(context, pad_id, prefix_id))
        max_length = max(len(x) for x in ids)
    if max_length > context:
        raise ConfigError(f"max_length={max_length} exceeds the model's context_length {context}")
    config = ClassifierConfig(
        labels=splits.labels,
        backbone=arch,
        pooling=pooling or ("first" if arch == "EncoderModel" else "last"),
        max_length=max_length,
        pad_id=pad_id,
        prefix_id=prefix_id,
        trainable=trainable,
        last_n_blocks=last_n_blocks,
        lora=dict(lora or {}),
    )
    for name, part in zip(SPLITS, (splits.train, splits.val, splits.test), strict=True):
        if not part:
            raise DataError(f"{splits.source}: the {name} split is empty; give more data")
    data = {
        name: build_dataset(tokenizer, part, splits.labels, config.encoding)
        for name, part in zip(SPLITS, (splits.train, splits.val, splits.test), strict=True)
    }
    if len(data["train"]) < train_cfg.batch_size:
        raise DataError(
            f"{splits.source}: {len(data['train'])} training examples, fewer than "
            f"batch_size={train_cfg.batch_size}"
        )
    model = build_classifier(backbone, config)
    n_train, n_total = trainable_parameters(model)
    train_loader = EpochLoader(data["train"], train_cfg.batch_size, seed=train_cfg.seed)
    val_loader = EpochLoader(data["val"], train_cfg.batch_size, shuffle=False, drop_last=False)
    per_epoch = len(train_loader)
    train_cfg = dataclasses.replace(
        train_cfg,
        max_steps=epochs * per_epoch,
        eval_interval=per_epoch,
        eval_batches=0,
        log_interval=min(train_cfg.log_interval, per_epoch),
        warmup_steps=min(train_cfg.warmup_steps, epochs * per_epoch),
    )
    log(
        f"classify: {len(splits.labels)} classes {splits.labels}; examples "
        f"{len(data['train'])} train / {len(data['val'])} val / {len(data['test'])} test; "
        f"max_length {max_length}; {arch} with {config.pooling} pooling; "
        f"trainable '{trainable}': {n_train:,} of {n_total:,} parameters"
    )
    settings = {
        "task": "classify",
        "base": str(Path(base).resolve()) if base else None,
        "classifier": config.to_dict(),
        "model": backbone.cfg.to_dict(),
        "examples": {name: len(ds) for name, ds in data.items()},
    }
    resume_from = start_run(run_dir, resume, settings, train_cfg, model, log)
    loss_fn = ClassificationLoss()
    trainer = Trainer(
        model,
        train_cfg,
        train_loader,
        lambda: iter(_one_pass(val_loader)),
        run_dir=run_dir,
        loss_fn=loss_fn,
        progress=progress,
    )

    def on_eval(step: int, val_loss: float) -> None:
        (train_loss, train_acc), (_, val_acc) = loss_fn.means(True), loss_fn.means(False)
        record = {
            "step": step,
            "epoch": step / per_epoch,
            "train_loss_epoch": train_loss,
            "train_acc": train_acc,
            "val_loss_epoch": val_loss,
            "val_acc": val_acc,
        }
        trainer.metrics.write(record)
        loss_fn.reset()
        log(
            f"epoch {record['epoch']:.2f}: train loss {train_loss:.4f} acc {train_acc:.4f} | "
            f"val loss {val_loss:.4f} acc {val_acc:.4f}"
        )

    trainer.on_eval = on_eval
    result = run_trainer(trainer, resume_from, log)
    # every epoch's record, those of a run this one resumed included (kept in metrics.jsonl)
    history = [r for r in result.history if "train_acc" in r]
    status = {"stopped": result.stopped, "step": result.step, "total_steps": train_cfg.max_steps}
    if result.stopped in INTERRUPTED:  # a checkpoint was saved; no scores until --resume
        return ClassifyReport(
            run_dir,
            result.seconds,
            history,
            {},
            {},
            (n_train, n_total),
            splits.counts(),
            **status,
            checkpoint=newest_checkpoint(run_dir),
        )
    model = trainer.model.eval()

    accuracy, test_metrics = {}, {}
    for name, ds in data.items():
        probs = predict_proba(model, ds, batch_size=max(train_cfg.batch_size, 32))
        metrics = classification_metrics(
            ds.labels.tolist(), probs.argmax(1).tolist(), config.labels
        )
        accuracy[name] = metrics["accuracy"]
        if name == "test":
            test_metrics = metrics
    report = ClassifyReport(
        run_dir,
        result.seconds,
        history,
        accuracy,
        test_metrics,
        (n_train, n_total),
        splits.counts(),
        **status,
    )
    save_classifier(run_dir, model.cpu(), config, tokenizer, {"base": base})
    write_report(report)
    log(
        f"accuracy: train {accuracy['train']:.4f}, val {accuracy['val']:.4f}, "
        f"test {accuracy['test']:.4f} ({result.seconds:.1f} s training)"
    )
    return report


def _one_pass(loader: EpochLoader):
    loader.load_state_dict({"epoch": 0, "batch_index": 0})
    yield from loader


def write_report(report: ClassifyReport) -> None:
    """report.json, accuracy.png (per-epoch loss and accuracy) and confusion.png."""
    atomic_write_json(
        report.run_dir / "report.json",
        {
            "seconds": report.seconds,
            "accuracy": report.accuracy,
            "test": report.test,
            "epochs": report.epochs,
            "trainable_parameters": report.trainable[0],
            "total_parameters": report.trainable[1],
            "counts": report.counts,
            "stopped": report.stopped,
            "steps": report.step,
        },
    )
    plot_epochs(report.epochs, report.run_dir / "accuracy.png")
    if report.test:
        plot_confusion(report.test, report.run_dir / "confusion.png")


def plot_epochs(history: Sequence[dict[str, Any]], out: Path) -> Path:
    """Per-epoch loss and accuracy on train and validation, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
    epochs = [r["epoch"] for r in history]
    for ax, key, title in ((ax_loss, "loss", "Loss"), (ax_acc, "acc", "Accuracy")):
        train_key = "train_loss_epoch" if key == "loss" else "train_acc"
        val_key = "val_loss_epoch" if key == "loss" else "val_acc"
        ax.plot(epochs, [r[train_key] for r in history], "o-", label="train (running)")
        ax.plot(epochs, [r[val_key] for r in history], "s-", label="validation")
        ax.set(xlabel="epoch", ylabel=title.lower(), title=title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def plot_confusion(metrics: dict[str, Any], out: Path) -> Path:
    """The test confusion matrix as a labelled heat map."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conf = np.asarray(metrics["confusion"])
    labels = metrics["labels"]
    size = 2 + 0.6 * len(labels)
    fig, ax = plt.subplots(figsize=(size, size), dpi=100)
    ax.imshow(conf, cmap="Blues")
    for (i, j), n in np.ndenumerate(conf):
        color = "white" if n > conf.max() / 2 else "black"
        ax.text(j, i, str(n), ha="center", va="center", color=color)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set(xlabel="predicted", ylabel="true", title=f"Test accuracy {metrics['accuracy']:.4f}")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out
