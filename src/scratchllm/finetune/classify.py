"""Sequence classification on any backbone: a pooled summary of the hidden states and a linear head.

idx [B, T] (+ mask) ─► backbone.features ─► hidden [B, T, C] ─► pool ─► [B, C] ─► head ─► [B, K]

Pooling: ``last`` (the last real token; in a causal model the only one that has seen the whole
text), ``mean`` (average over real tokens), ``first`` (encoders: BERT's pooled first token).
Which parameters train is chosen by :func:`set_trainable`. A classifier run directory holds
``config.json`` (backbone config + ``classifier`` record), weights and the tokenizer;
:func:`load_classifier` reads it back and :meth:`LoadedClassifier.predict` labels new text.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from scratchllm.errors import CheckpointError, ConfigError, DataError
from scratchllm.finetune.classify_data import ClassifyDataset, Encoding, encode_texts
from scratchllm.model import EncoderModel, GPTModel, ModelConfig
from scratchllm.model.heads import last_token
from scratchllm.train.checkpoint import (
    CONFIG_FILE,
    RUN_FORMAT,
    RUN_VERSION,
    WEIGHTS_FILE,
    atomic_write_json,
    load_weights,
    read_run_record,
    save_weights,
)

POOLINGS = ("last", "mean", "first")
TRAINABLE = ("head", "last", "all", "lora")
BACKBONES: dict[str, type[nn.Module]] = {"GPTModel": GPTModel, "EncoderModel": EncoderModel}
# Architecture names written to config.json, one per backbone kind.
ARCHITECTURES = {"GPTModel": "GPTClassifier", "EncoderModel": "EncoderClassifier"}


@dataclass
class ClassifierConfig:
    labels: list[str]  # class names; the position in the list is the class id
    backbone: str = "GPTModel"  # "GPTModel" | "EncoderModel"
    pooling: str = "last"  # "last" | "mean" | "first" (encoders only)
    max_length: int = 128  # tokens kept per text (prefix included); longer texts are truncated
    pad_id: int = 0  # id written into padding positions (masked out)
    prefix_id: int | None = None  # prepended to each text (encoders pool this first token)
    trainable: str = "last"  # "head" | "last" (last N blocks + final norm + head) | "all" | "lora"
    last_n_blocks: int = 1  # blocks trained with trainable="last"
    lora: dict[str, Any] = field(default_factory=dict)  # {"targets", "r", "alpha"} for "lora"

    def __post_init__(self) -> None:
        self._check_types()
        if len(self.labels) < 2 or len(set(self.labels)) != len(self.labels):
            raise ConfigError(f"classifier labels must be >= 2 distinct names, got {self.labels}")
        if self.backbone not in BACKBONES:
            raise ConfigError(f"backbone={self.backbone!r} must be one of {', '.join(BACKBONES)}")
        if self.pooling not in POOLINGS:
            raise ConfigError(f"pooling={self.pooling!r} must be one of {', '.join(POOLINGS)}")
        if self.pooling == "first" and self.backbone == "GPTModel":
            raise ConfigError(
                "pooling='first' needs a bidirectional encoder: a causal model's first token "
                "sees only itself (use 'last' or 'mean')"
            )
        if self.trainable not in TRAINABLE:
            raise ConfigError(f"trainable={self.trainable!r} must be one of {', '.join(TRAINABLE)}")
        if self.max_length < 1 or self.last_n_blocks < 0:
            raise ConfigError(
                f"max_length={self.max_length} must be >= 1 and "
                f"last_n_blocks={self.last_n_blocks} >= 0"
            )

    def _check_types(self) -> None:
        """Fields read back from a hand-edited config.json can hold any JSON value."""
        if not isinstance(self.labels, list) or not all(isinstance(x, str) for x in self.labels):
            raise ConfigError(f"classifier labels must be a list of names, got {self.labels!r}")
        for name in ("backbone", "pooling", "trainable"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"{name} must be a string, got {getattr(self, name)!r}")
        for name in ("max_length", "pad_id", "prefix_id", "last_n_blocks"):
            value = getattr(self, name)
            if name == "prefix_id" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{name} must be an integer, got {value!r}")
        if not isinstance(self.lora, dict):
            raise ConfigError(f"lora must be an object, got {self.lora!r}")
        unknown = sorted(set(self.lora) - {"targets", "r", "alpha", "dropout"})
        if unknown:
            raise ConfigError(f"unknown lora field(s): {', '.join(map(str, unknown))}")

    @property
    def encoding(self) -> Encoding:
        return Encoding(self.max_length, self.pad_id, self.prefix_id)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClassifierConfig:
        if not isinstance(d, dict):
            raise ConfigError(f"the classifier settings must be an object, got {d!r}")
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"unknown classifier field(s): {', '.join(unknown)}")
        try:
            return cls(**d)
        except TypeError as exc:  # a missing required field
            raise ConfigError(f"classifier settings: {exc}") from None


def mean_pool(hidden: Tensor, attention_mask: Tensor | None) -> Tensor:
    """Average of the real tokens' hidden states: [B, T, C] -> [B, C]."""
    if attention_mask is None:
        return hidden.mean(dim=1)
    m = attention_mask.to(hidden.dtype).unsqueeze(-1)  # [B, T, 1]
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)


class TextClassifier(nn.Module):
    """A backbone with a pooled linear head: idx [B, T] -> class logits [B, num_classes]."""

    def __init__(self, backbone: nn.Module, num_classes: int, pooling: str = "last") -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ConfigError(f"pooling={pooling!r} must be one of {', '.join(POOLINGS)}")
        self.backbone = backbone
        self.pooling = pooling
        self.causal = isinstance(backbone, GPTModel)
        self.head = nn.Linear(backbone.cfg.n_embd, num_classes)

    def forward(self, idx: Tensor, *, attention_mask: Tensor | None = None) -> Tensor:
        # Rows are right-padded: under a causal mask no real token can see padding, so the
        # backbone runs without a padding mask (and keeps its fused attention kernel).
        mask = None if self.causal else attention_mask
        hidden = self.backbone.features(idx, attention_mask=mask)  # [B, T, C]
        if self.pooling == "last":
            pooled = last_token(hidden, attention_mask)
        elif self.pooling == "mean":
            pooled = mean_pool(hidden, attention_mask)
        else:
            pooled = self.backbone.pooled(hidden)  # [B, C], tanh(dense(first token))
        return self.head(pooled)  # [B, num_classes]


def _lora_module() -> Any:
    """The LoRA module, imported only when asked for (it may not exist yet)."""
    if importlib.util.find_spec("scratchllm.finetune.lora") is None:
        raise ConfigError(
            "trainable='lora' needs scratchllm.finetune.lora (apply_lora), which this "
            "installation does not have; use 'head', 'last' or 'all'"
        )
    return importlib.import_module("scratchllm.finetune.lora")


def set_trainable(
    model: TextClassifier, mode: str, last_n_blocks: int = 1, lora: dict[str, Any] | None = None
) -> TextClassifier:
    """Freeze all but the chosen parameters; the head (and an encoder's pooler) always trains.

    ``last`` is the recipe of Raschka's book: the last N blocks and the final norm adapt to the
    task while the rest keeps what pretraining learned. ``lora`` adds low-rank adapters through
    ``scratchllm.finetune.lora.apply_lora(backbone, targets, r, alpha)``.
    """
    if mode not in TRAINABLE:
        raise ConfigError(f"trainable={mode!r} must be one of {', '.join(TRAINABLE)}")
    backbone = model.backbone
    if mode == "lora":
        # Only the settings given are passed, so the LoRA module's defaults (targets) apply.
        result = _lora_module().apply_lora(backbone, **(lora or {}))
        if isinstance(result, nn.Module):
            model.backbone = backbone = result
    else:
        backbone.requires_grad_(mode == "all")
    if mode == "last":
        n = len(backbone.blocks)
        if last_n_blocks > n:
            raise ConfigError(f"last_n_blocks={last_n_blocks} exceeds the {n} blocks of the model")
        for block in list(backbone.blocks)[n - last_n_blocks :]:
            block.requires_grad_(True)
        backbone.norm_f.requires_grad_(True)
    if model.pooling == "first":
        backbone.pooler.requires_grad_(True)
    model.head.requires_grad_(True)
    return model


def trainable_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts, each tensor once."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def build_classifier(
    backbone: nn.Module, config: ClassifierConfig, *, apply_trainable: bool = True
) -> TextClassifier:
    """The classifier of ``config`` around ``backbone`` (trainable parameters set)."""
    model = TextClassifier(backbone, len(config.labels), config.pooling)
    if apply_trainable:
        set_trainable(model, config.trainable, config.last_n_blocks, config.lora)
    return model


# ------------------------------------------------------------------------------ run directories


def load_backbone(run_dir: str | Path) -> tuple[nn.Module, Any, str]:
    """(model, tokenizer, architecture) of a pretrained GPT or encoder run directory."""
    from scratchllm.tokenizer import load_tokenizer

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: base run directory not found")
    record = read_run_record(run_dir)
    arch = record.get("architecture", "GPTModel")
    if arch not in BACKBONES:
        raise CheckpointError(
            f"{run_dir / CONFIG_FILE}: architecture {arch!r} cannot serve as a backbone "
            f"(expected {' or '.join(BACKBONES)})"
        )
    model = BACKBONES[arch](ModelConfig.from_dict(record["model"]))
    load_weights(model, run_dir / WEIGHTS_FILE)
    return model, load_tokenizer(run_dir), arch


def save_classifier(
    run_dir: str | Path,
    model: TextClassifier,
    config: ClassifierConfig,
    tokenizer: Any,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write config.json (backbone config + classifier record), weights and tokenizer."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(run_dir)
    save_weights(model, run_dir / WEIGHTS_FILE, metadata={"format": RUN_FORMAT})
    record = {
        "format": RUN_FORMAT,
        "version": RUN_VERSION,
        "architecture": ARCHITECTURES[config.backbone],
        "model": model.backbone.cfg.to_dict(),
        "classifier": config.to_dict(),
        **(extra or {}),
    }
    atomic_write_json(run_dir / CONFIG_FILE, record)


@dataclass
class LoadedClassifier:
    """A classifier ready to label text: model (eval mode), tokenizer and config."""

    path: Path
    model: TextClassifier
    tokenizer: Any
    config: ClassifierConfig

    @property
    def labels(self) -> list[str]:
        return self.config.labels

    @torch.no_grad()
    def predict_proba(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """Class probabilities [len(texts), num_classes], columns in ``labels`` order."""
        empty = [i for i, text in enumerate(texts) if not text.strip()]
        if empty:  # as in training data; a GPT would read its label off a padding position
            i = empty[0]
            raise DataError(
                f"text {i + 1} of {len(texts)} ({texts[i]!r}) is empty: nothing to classify"
            )
        ids = encode_texts(self.tokenizer, texts, self.config.encoding)
        return predict_proba(self.model, ClassifyDataset(ids, None, self.config.pad_id), batch_size)

    def predict(self, texts: list[str], batch_size: int = 32) -> list[str]:
        probs = self.predict_proba(texts, batch_size)
        return [self.labels[i] for i in probs.argmax(axis=1)]


@torch.no_grad()
def predict_proba(model: nn.Module, dataset: ClassifyDataset, batch_size: int = 32) -> np.ndarray:
    """Softmax probabilities over ``dataset`` in order: [N, num_classes] (float64)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(dataset), batch_size):
        idx = np.arange(start, min(start + batch_size, len(dataset)))
        x, mask, _ = dataset.get_batch(idx)
        logits = model(x.to(device), attention_mask=mask.to(device))
        out.append(torch.softmax(logits.float(), dim=-1).cpu().double().numpy())
    model.train(was_training)
    return np.concatenate(out)


def load_classifier(run_dir: str | Path, device: str | torch.device = "cpu") -> LoadedClassifier:
    """Load a classifier run directory written by :func:`save_classifier`."""
    from scratchllm.tokenizer import load_tokenizer

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: classifier run directory not found")
    record = read_run_record(run_dir)
    if "classifier" not in record:
        arch = record.get("architecture", "GPTModel")
        raise CheckpointError(
            f"{run_dir / CONFIG_FILE}: a {arch} run, not a classifier (no 'classifier' field); "
            "fine-tune it first with `scratchllm finetune classify`"
        )
    try:
        config = ClassifierConfig.from_dict(record["classifier"])
        model_cfg = ModelConfig.from_dict(record["model"])
    except ConfigError as exc:
        raise CheckpointError(f"{run_dir / CONFIG_FILE}: {exc}") from None
    backbone = BACKBONES[config.backbone](model_cfg)
    model = TextClassifier(backbone, len(config.labels), config.pooling)
    if config.trainable == "lora":  # adapters are part of the saved weights
        set_trainable(model, "lora", lora=config.lora)
    load_weights(model, run_dir / WEIGHTS_FILE)
    model.to(device).eval()
    return LoadedClassifier(run_dir, model, load_tokenizer(run_dir), config)
