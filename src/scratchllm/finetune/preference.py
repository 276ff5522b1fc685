"""Preference tuning with DPO (Rafailov et al. 2023, "Direct Preference Optimization").

For a prompt x with a chosen response y_w and a rejected one y_l, and a frozen reference model:

    reward(y)  = beta * (log p_policy(y | x) - log p_ref(y | x))
    loss       = -log sigmoid(reward(y_w) - reward(y_l))

With the policy equal to the reference both rewards are 0, so the loss starts at ln 2 ≈ 0.693.
The reference is a frozen copy of the starting weights or, with LoRA, the same model with its
adapters switched off (no second copy in memory). Rewards, margins and the share of pairs ranked
correctly are logged at every evaluation to ``metrics.jsonl``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from scratchllm.errors import ConfigError, DataError
from scratchllm.finetune.instruct import (
    IGNORE_INDEX,
    Example,
    Log,
    examples_sha256,
    prepare_model,
    save_tuned,
    tuning_settings,
)
from scratchllm.finetune.instruct_data import (
    SkipReport,
    _reason,
    _string,
    check_split,
    prompt_messages,
    read_records,
    split_items,
)
from scratchllm.finetune.lora import LoRAConfig, lora_disabled, lora_layers
from scratchllm.finetune.resume import INTERRUPTED, newest_checkpoint, run_trainer, start_run
from scratchllm.finetune.templates import Message, Template, get_template, load_template
from scratchllm.train.config import TrainConfig
from scratchllm.train.loop import Trainer, TrainResult

# ------------------------------------------------------------------------------------- data


@dataclass
class PreferencePair:
    prompt: list[Message]  # conversation up to the response
    chosen: str
    rejected: str
    where: str = ""  # the file and line it came from, for messages


def load_pairs(
    path: str | Path, *, skip_invalid: bool = False, skips: SkipReport | None = None
) -> list[PreferencePair]:
    """Pairs from records with ``chosen`` and ``rejected`` plus ``instruction``/``input`` or
    ``messages`` (the prompt, ending with a user turn)."""
    out = []
    for where, record in read_records(path):
        try:
            prompt = prompt_messages(record, where)
            if prompt[-1]["role"] != "user":
                raise DataError(f"{where}: the prompt's last message must be from the user")
            chosen, rejected = _string(record, "chosen", where), _string(record, "rejected", where)
            out.append(PreferencePair(prompt, chosen, rejected, where))
        except DataError as exc:
            if not skip_invalid:
                raise
            if skips is not None:
                skips.add(_reason(exc), where)
    return out


def encode_pairs(
    pairs: Sequence[PreferencePair],
    template: Template,
    tokenizer: Any,
    max_length: int,
    skips: SkipReport,
) -> list[tuple[Example, Example]]:
    """(chosen, rejected) examples; a pair where either side exceeds the context is skipped."""
    out = []
    for i, pair in enumerate(pairs):
        sides = []
        for response in (pair.chosen, pair.rejected):
            conv = pair.prompt + [{"role": "assistant", "content": response}]
            sides.append(Example(*template.encode(tokenizer, conv)))
        if max(len(s.ids) for s in sides) > max_length + 1:
            skips.add("longer than the context", pair.where or f"pair {i}")
            continue
        out.append((sides[0], sides[1]))
    return out


class PairDataset:
    """Batches ``(inputs, targets)`` [2B, T]: the B chosen rows first, then the B rejected rows.

    Both halves share one padded width so a single forward pass scores them all.
    """

    def __init__(self, pairs: Sequence[tuple[Example, Example]], pad_id: int, max_length: int):
        from scratchllm.finetune.instruct import collate

        self.pairs, self.pad_id, self.max_length, self._collate = (
            list(pairs),
            pad_id,
            max_length,
            collate,
        )
        self.mask_prompt = True

    def __len__(self) -> int:
        return len(self.pairs)

    def get_batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        chosen = [self.pairs[int(i)][0] for i in indices]
        rejected = [self.pairs[int(i)][1] for i in indices]
        return self._collate(chosen + rejected, self.pad_id, max_length=self.max_length)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.get_batch([index])

    def batches(self, batch_size: int):
        for start in range(0, len(self), batch_size):
            yield self.get_batch(range(start, min(start + batch_size, len(self))))


# ------------------------------------------------------------------------------------- loss


def sequence_logps(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sum of log-probabilities of the non-ignored targets of each row: [N, T, V], [N, T] -> [N]."""
    mask = targets != IGNORE_INDEX
    logps = torch.log_softmax(logits.float(), dim=-1)  # [N, T, V]
    picked = logps.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # [N, T]
    return (picked * mask).sum(dim=-1)


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean DPO loss and the per-pair rewards (chosen, rejected), all from summed log-probs [B]."""
    chosen_rewards = beta * (policy_chosen - ref_chosen)
    rejected_rewards = beta * (policy_rejected - ref_rejected)
    loss = -F.logsigmoid(chosen_rewards - rejected_rewards).mean()
    return loss, chosen_rewards.detach(), rejected_rewards.detach()


@dataclass
class RewardStats:
    """Running sums of rewards over the pairs seen since the last ``pop``."""

    pairs: int = 0
    chosen: float = 0.0
    rejected: float = 0.0
    correct: int = 0

    def add(self, chosen: torch.Tensor, rejected: torch.Tensor) -> None:
        self.pairs += chosen.numel()
        self.chosen += float(chosen.sum())
        self.rejected += float(rejected.sum())
        self.correct += int((chosen > rejected).sum())

    def pop(self, prefix: str) -> dict[str, float]:
        if not self.pairs:
            return {}
        n = self.pairs
        out = {
            f"{prefix}reward_chosen": self.chosen / n,
            f"{prefix}reward_rejected": self.rejected / n,
            f"{prefix}reward_margin": (self.chosen - self.rejected) / n,
            f"{prefix}reward_accuracy": self.correct / n,
        }
        self.pairs, self.chosen, self.rejected, self.correct = 0, 0.0, 0.0, 0
        return out


class DPOObjective:
    """``loss_fn(model, batch) -> (loss, pairs)`` for the shared loop; keeps reward statistics.

    ``reference`` is a frozen model, or None to use the policy with its LoRA adapters off.
    """

    def __init__(self, reference: nn.Module | None, beta: float = 0.1) -> None:
        if not beta > 0:
            raise ConfigError(f"DPO beta={beta} must be > 0")
        self.reference, self.beta = reference, beta
        self.train_stats, self.val_stats = RewardStats(), RewardStats()

    def __call__(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, int]:
        inputs, targets = batch[0], batch[1]
        half = inputs.shape[0] // 2
        policy = sequence_logps(model(inputs), targets)  # [2B]
        with torch.no_grad():
            ref = self._reference_logps(model, inputs, targets)
        loss, chosen, rejected = dpo_loss(
            policy[:half], policy[half:], ref[:half], ref[half:], self.beta
        )
        (self.train_stats if model.training else self.val_stats).add(chosen, rejected)
        return loss, half

    def _reference_logps(self, model: nn.Module, inputs, targets) -> torch.Tensor:
        if self.reference is not None:
            return sequence_logps(self.reference(inputs), targets)
        if not any(True for _ in lora_layers(model)):
            raise ConfigError("DPO without a reference model needs LoRA adapters on the policy")
        was_training = model.training
        model.eval()  # the reference runs without dropout
        try:
            with lora_disabled(model):
                return sequence_logps(model(inputs), targets)
        finally:
            model.train(was_training)


def disable_dropout(model: nn.Module) -> nn.Module:
    """Every dropout of ``model`` set to 0: ``nn.Dropout`` modules (LoRA's included) and the
    attention modules' dropout on attention weights (their float ``dropout`` attribute)."""
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
        elif isinstance(getattr(m, "dropout", None), float):
            m.dropout = 0.0
    return model


# ---------------------------------------------------------------------------------- training


@dataclass
class DPOConfig:
    beta: float = 0.1  # strength of the pull towards the reference (higher = stay closer)
    template: str | None = None  # None = the base run's template.json, else "alpaca"
    system: str | None = None
    split: tuple[float, float, float] = (0.85, 0.05, 0.10)  # train / validation / unused test
    skip_invalid: bool = False
    lora: LoRAConfig | None = None  # None = full weights with a frozen copy as the reference
    resume: bool = False
    # Dropout off in the policy (as TRL does by default): the reference scores without dropout,
    # so with it on the rewards would measure dropout noise, not preference.
    disable_dropout: bool = True

    def __post_init__(self) -> None:  # checked before the data and the base run are loaded
        if not self.beta > 0:
            raise ConfigError(f"DPO beta={self.beta} must be > 0")
        check_split(self.split)


@dataclass
class DPOReport:
    run_dir: Path
    result: TrainResult
    sizes: dict[str, int]
    skips: SkipReport
    initial_loss: float  # validation loss before training (ln 2 when policy == reference)
    evals: list[dict[str, float]] = field(default_factory=list)  # per evaluation: rewards, margin
    checkpoint: Path | None = None  # an interrupted run (stopped by a signal) resumes from it

    @property
    def interrupted(self) -> bool:
        return self.result.stopped in INTERRUPTED


def finetune_dpo(
    base_run: str | Path,
    data: str | Path,
    out_dir: str | Path,
    cfg: DPOConfig | None = None,
    train_cfg: TrainConfig | None = None,
    *,
    log: Log = print,
    progress: bool = True,
) -> DPOReport:
    """DPO-tune the run at ``base_run`` on preference ``data``; writes ``out_dir``."""
    from scratchllm.train.loop import evaluate

    cfg, train_cfg = cfg or DPOConfig(), train_cfg or TrainConfig()
    out = Path(out_dir)
    torch.manual_seed(train_cfg.seed)
    template = (
        get_template(cfg.template, cfg.system)
        if cfg.template
        else load_template(base_run) or get_template("alpaca", cfg.system)
    )
    log(f"template: {template.name}")
    skips = SkipReport()
    pairs = load_pairs(data, skip_invalid=cfg.skip_invalid, skips=skips)
    model, tokenizer = prepare_model(base_run, template, cfg.lora, log)
    if cfg.disable_dropout:
        disable_dropout(model)
    context = model.cfg.context_length
    parts = split_items(pairs, cfg.split, seed=train_cfg.seed)
    encoded = {
        n: encode_pairs(p, template, tokenizer, context, skips)
        for n, p in zip(("train", "val"), parts[:2], strict=True)
    }
    log(
        f"data: {len(pairs)} pairs -> {len(encoded['train'])} train, {len(encoded['val'])} validation; {skips.summary()}"
    )
    if not encoded["val"]:
        raise DataError("no validation pairs: DPO needs some to report reward margins")
    pad_id = tokenizer.eot_id if tokenizer.eot_id is not None else 0
    loader, val_batches = _pair_loaders(encoded, pad_id, context, train_cfg)
    objective = DPOObjective(None, cfg.beta)
    settings = tuning_settings(
        "dpo",
        base_run,
        template,
        cfg.lora,
        beta=cfg.beta,
        split=list(cfg.split),
        skip_invalid=cfg.skip_invalid,
        examples={"train": len(encoded["train"]), "val": len(encoded["val"])},
        data_sha256=examples_sha256([*encoded["train"], *encoded["val"]]),
    )
    resume_from = start_run(out, cfg.resume, settings, train_cfg, model, log)
    evals: list[dict[str, float]] = []

    def on_eval(step: int, val_loss: float) -> None:
        record = {"step": step, "val_loss": val_loss, **objective.val_stats.pop("val_")}
        record.update(objective.train_stats.pop("train_"))
        trainer.metrics.write(record)
        evals.append(record)
        log(
            f"step {step}: val loss {val_loss:.4f}, reward margin {record['val_reward_margin']:.4f}, accuracy {record['val_reward_accuracy']:.2f}"
        )

    trainer = Trainer(
        model,
        train_cfg,
        loader,
        val_batches,
        run_dir=out,
        loss_fn=objective,
        on_eval=on_eval,
        progress=progress,
    )
    if cfg.lora is None:
        objective.reference = copy.deepcopy(trainer.model).eval().requires_grad_(False)
    initial = evaluate(
        trainer.model, val_batches, objective, trainer.device, train_cfg.eval_batches
    )
    objective.val_stats.pop("val_")
    log(f"initial validation DPO loss {initial:.4f} (ln 2 = 0.6931 when policy == reference)")
    result = run_trainer(trainer, resume_from, log)
    sizes = {"train": len(encoded["train"]), "val": len(encoded["val"])}
    if result.stopped in INTERRUPTED:  # a checkpoint was saved; no final run until --resume
        return DPOReport(out, result, sizes, skips, initial, evals, newest_checkpoint(out))
    save_tuned(out, trainer.model.eval(), tokenizer, template, cfg.lora, base_run)
    return DPOReport(out, result, sizes, skips, initial, evals)


def _pair_loaders(encoded, pad_id: int, context: int, train_cfg: TrainConfig):
    from scratchllm.data.loaders import EpochLoader

    if len(encoded["train"]) < train_cfg.batch_size:
        raise DataError(
            f"{len(encoded['train'])} training pairs, fewer than batch_size={train_cfg.batch_size}"
        )
    train = PairDataset(encoded["train"], pad_id, context)
    val = PairDataset(encoded["val"], pad_id, context)
    loader = EpochLoader(train, train_cfg.batch_size, shuffle=True, seed=train_cfg.seed)
    return loader, lambda: val.batches(train_cfg.batch_size)
