"""Supervised instruction fine-tuning (SFT): records -> template -> masked batches -> shared loop.

records (instruction/input/output or chat messages; JSON or JSON Lines)
  ─► conversations ─► template.encode (ids + "is response" flags) ─► collate (pad, -100, truncate)
  ─► Trainer (full weights or LoRA) ─► run dir (+ template.json) ─► held-out responses (+ judge)

Bad records raise a ``DataError`` naming the file, record and field, or, with ``skip_invalid``, are
counted and reported; conversations longer than the context are skipped (counted and reported),
truncated or rejected, as ``on_overflow`` says. Nothing is dropped silently.
"""

from __future__ import annotations

import hashlib
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from scratchllm.errors import ConfigError, DataError
from scratchllm.finetune.instruct_data import (  # records -> conversations
    SkipReport,
    check_split,
    located_conversations,
    split_items,
)
from scratchllm.finetune.lora import (
    LoRAConfig,
    apply_lora,
    save_adapter,
    trainable_summary,
)
from scratchllm.finetune.resume import INTERRUPTED, newest_checkpoint, run_trainer, start_run
from scratchllm.finetune.templates import (
    Message,
    Template,
    extend_vocabulary,
    get_template,
    save_template,
)
from scratchllm.train.checkpoint import atomic_write_bytes
from scratchllm.train.config import TrainConfig
from scratchllm.train.loop import Trainer, TrainResult

IGNORE_INDEX = -100  # targets the loss skips (F.cross_entropy's default ignore_index)
OVERFLOW_POLICIES = ("skip", "truncate", "error")
RESPONSES_FILE = "responses.jsonl"
Log = Callable[[str], None]


# ---------------------------------------------------------------------------------- examples


@dataclass
class Example:
    ids: list[int]  # the whole rendered conversation
    response: list[bool]  # per id: part of an assistant response (loss taken on it)


def examples_sha256(examples: Sequence[Example | tuple[Example, ...]]) -> str:
    """A fingerprint of encoded examples (ids and response flags, in order): `--resume` compares
    it, so that other data of the same size is not taken for the run's own."""
    digest = hashlib.sha256()
    for item in examples:
        for ex in item if isinstance(item, tuple) else (item,):
            digest.update(len(ex.ids).to_bytes(4, "little"))
            digest.update(b"".join(i.to_bytes(4, "little") for i in ex.ids))
            digest.update(bytes(ex.response))
    return digest.hexdigest()


def encode_conversations(
    conversations: Sequence[list[Message]],
    template: Template,
    tokenizer: Any,
    max_length: int,
    *,
    on_overflow: str = "skip",
    skips: SkipReport | None = None,
    names: Sequence[str] | None = None,
) -> list[Example]:
    """Encode; a conversation needing more than ``max_length + 1`` ids follows ``on_overflow``.

    ``names`` (e.g. ``data.json:12 (record 4)``) say where each conversation came from in
    messages; without them a conversation is named by its position in ``conversations``."""
    if on_overflow not in OVERFLOW_POLICIES:
        raise ConfigError(f"on_overflow={on_overflow!r} must be one of {OVERFLOW_POLICIES}")
    skips = skips if skips is not None else SkipReport()
    out = []
    for i, conv in enumerate(conversations):
        ids, flags = template.encode(tokenizer, conv)
        if len(ids) > max_length + 1:
            where = names[i] if names is not None else f"conversation {i}"
            reason = f"longer than the context ({len(ids) - 1} > {max_length} tokens)"
            if on_overflow == "error":
                raise DataError(f"{where}: {reason}; shorten it or pass on_overflow='skip'")
            if on_overflow == "skip" or not any(flags[1 : max_length + 1]):
                skips.add("longer than the context", where)
                continue
            ids, flags = ids[: max_length + 1], flags[: max_length + 1]
        out.append(Example(ids, flags))
    return out


def collate(
    examples: Sequence[Example],
    pad_id: int,
    *,
    max_length: int | None = None,
    mask_prompt: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``(inputs, targets)`` [B, T]: targets are inputs shifted by one.

    Padding targets are ``IGNORE_INDEX``; each example's own final end token (``<|endoftext|>`` or
    ``<|end|>``) is a response token, so its target is kept and the model learns to stop. With
    ``mask_prompt`` every target that is not a response token is ``IGNORE_INDEX`` too. Rows longer
    than ``max_length`` inputs are truncated. T is the longest row in the batch.
    """
    if not examples:
        raise ValueError("collate needs at least one example")
    cut = (max_length + 1) if max_length else None
    rows = [(e.ids[:cut], e.response[:cut]) for e in examples]
    width = max(len(ids) for ids, _ in rows) - 1
    if width < 1:
        raise DataError("every example in the batch has fewer than 2 tokens")
    inputs = torch.full((len(rows), width), pad_id, dtype=torch.long)
    targets = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    for row, (ids, flags) in enumerate(rows):
        n = len(ids) - 1
        inputs[row, :n] = torch.tensor(ids[:-1])
        target = torch.tensor(ids[1:])
        if mask_prompt:
            target[~torch.tensor(flags[1:], dtype=torch.bool)] = IGNORE_INDEX
        targets[row, :n] = target
    return inputs, targets


class ExampleDataset:
    """Examples that ``EpochLoader`` batches through ``get_batch`` (collated per batch)."""

    def __init__(
        self, examples: Sequence[Example], pad_id: int, max_length: int, mask_prompt: bool = True
    ) -> None:
        self.examples = list(examples)
        self.pad_id, self.max_length, self.mask_prompt = pad_id, max_length, mask_prompt

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.get_batch([index])

    def get_batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        batch = [self.examples[int(i)] for i in indices]
        return collate(batch, self.pad_id, max_length=self.max_length, mask_prompt=self.mask_prompt)

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One pass in order (for validation)."""
        for start in range(0, len(self), batch_size):
            yield self.get_batch(range(start, min(start + batch_size, len(self))))


# ---------------------------------------------------------------------------------- training


@dataclass
class InstructConfig:
    template: str = "alpaca"  # "alpaca" or "chat" (see finetune/templates.py)
    system: str | None = None  # system prompt / preamble; None = the template's own
    mask_prompt: bool = True  # loss on response tokens only
    split: tuple[float, float, float] = (0.85, 0.05, 0.10)  # train / validation / held-out test
    on_overflow: str = "skip"  # conversations longer than the context: skip, truncate or error
    skip_invalid: bool = False  # count and report malformed records instead of raising
    lora: LoRAConfig | None = None  # None = full fine-tuning
    max_new_tokens: int = 128  # per held-out response
    max_responses: int | None = None  # held-out responses to generate; None = the whole test split
    judge_url: str | None = None  # OpenAI-compatible base URL, e.g. http://localhost:8000/v1
    judge_model: str = "judge"  # model name sent to the judge endpoint
    resume: bool = False  # continue from the newest checkpoint in the output directory

    def __post_init__(self) -> None:  # checked before anything is loaded
        check_split(self.split)
        if self.on_overflow not in OVERFLOW_POLICIES:
            raise ConfigError(
                f"on_overflow={self.on_overflow!r} must be one of {OVERFLOW_POLICIES}"
            )
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.max_responses is not None and self.max_responses < 0:
            raise ConfigError(f"max_responses must be >= 0 or None, got {self.max_responses}")
        if self.judge_url:  # a bad one was found only after training (urllib: unknown url type)
            parts = urllib.parse.urlsplit(self.judge_url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ConfigError(
                    f"judge_url {self.judge_url!r} must be an http(s) URL such as "
                    "http://localhost:8000/v1"
                )


@dataclass
class InstructReport:
    """What a run produced. An interrupted run (``interrupted``: stopped by a signal) saved a
    checkpoint (``checkpoint``) and nothing else: no final weights, no responses."""

    run_dir: Path
    result: TrainResult
    sizes: dict[str, int]  # examples per split after skips
    skips: SkipReport
    responses: list[dict[str, Any]]
    stop_rate: float  # share of responses that ended with the template's end token
    exact_match: float  # share of responses equal to the reference (stripped)
    judge_mean: float | None = None  # mean 0-100 judge score; None when skipped
    checkpoint: Path | None = None  # the checkpoint an interrupted run can resume from

    @property
    def interrupted(self) -> bool:
        return self.result.stopped in INTERRUPTED


def prepare_model(base_run: str | Path, template: Template, lora: LoRAConfig | None, log: Log):
    """Load the base run, give it the template's tokens, and apply LoRA when asked."""
    from scratchllm.train.checkpoint import load_run

    run = load_run(base_run)
    tokenizer, model = run.tokenizer, run.model
    if tokenizer is None:
        raise ConfigError(
            f"{base_run} has no tokenizer (tokenizer.json): the examples cannot be encoded; copy "
            "the tokenizer the base model was trained with into it"
        )
    if template.special_tokens:
        before = model.cfg.vocab_size
        tokenizer, model = extend_vocabulary(tokenizer, model, template.special_tokens)
        if model.cfg.vocab_size != before:
            if lora is not None:
                raise ConfigError(
                    f"template {template.name!r} adds special tokens, whose new embedding rows "
                    "LoRA cannot train; fine-tune fully first or use --template alpaca"
                )
            log(
                f"added {list(template.special_tokens)}: vocabulary {before} -> {model.cfg.vocab_size}"
            )
    if lora is not None:
        apply_lora(model, lora.targets, lora.r, lora.alpha, lora.dropout)
    log(trainable_summary(model))
    return model.train(), tokenizer


def build_loaders(examples: dict[str, list[Example]], pad_id: int, context: int, cfg, train_cfg):
    from scratchllm.data.loaders import EpochLoader

    if len(examples["train"]) < train_cfg.batch_size:
        raise DataError(
            f"{len(examples['train'])} training examples, fewer than "
            f"batch_size={train_cfg.batch_size}"
        )
    train = ExampleDataset(examples["train"], pad_id, context, cfg.mask_prompt)
    loader = EpochLoader(train, train_cfg.batch_size, shuffle=True, seed=train_cfg.seed)
    val = ExampleDataset(examples["val"], pad_id, context, cfg.mask_prompt)
    val_batches = (lambda: val.batches(train_cfg.batch_size)) if len(val) else None
    return loader, val_batches


def tuning_settings(
    task: str, base_run: str | Path, template: Template, lora: LoRAConfig | None, **extra: Any
) -> dict[str, Any]:
    """The settings a fine-tuning run saves as ``finetune.json`` and ``--resume`` checks."""
    return {
        "task": task,
        "base": str(Path(base_run).resolve()),
        "template": template.name,
        "system": template.system,
        "lora": asdict(lora) if lora is not None else None,
        **extra,
    }


def save_tuned(
    out: Path, model: nn.Module, tokenizer: Any, template: Template, lora, base_run
) -> None:
    """Full weights as an ordinary run, or (LoRA) the adapter alone; the template either way."""
    from scratchllm.train.checkpoint import save_run

    model = model.cpu().eval()
    if lora is None:
        save_run(out, model, model.cfg, tokenizer)
    else:
        save_adapter(model, out, lora, base_run)
        tokenizer.save(out)
    save_template(template, out)


def finetune_instruct(
    base_run: str | Path,
    data: str | Path,
    out_dir: str | Path,
    cfg: InstructConfig | None = None,
    train_cfg: TrainConfig | None = None,
    *,
    log: Log = print,
    progress: bool = True,
) -> InstructReport:
    """Instruction-tune the run at ``base_run`` on ``data``; writes ``out_dir`` and responses."""
    cfg = cfg or InstructConfig()
    train_cfg = train_cfg or TrainConfig()
    out = Path(out_dir)
    torch.manual_seed(train_cfg.seed)
    template = get_template(cfg.template, cfg.system)
    skips = SkipReport()
    located = located_conversations(data, skip_invalid=cfg.skip_invalid, skips=skips)
    model, tokenizer = prepare_model(base_run, template, cfg.lora, log)
    context = model.cfg.context_length
    parts = split_items(located, cfg.split, seed=train_cfg.seed)
    examples = {
        name: encode_conversations(
            [conv for _, conv in p],
            template,
            tokenizer,
            context,
            on_overflow=cfg.on_overflow,
            skips=skips,
            names=[where for where, _ in p],
        )
        for name, p in zip(("train", "val"), parts[:2], strict=True)
    }
    log(
        f"data: {len(located)} conversations -> {len(examples['train'])} train, "
        f"{len(examples['val'])} validation, {len(parts[2])} held out; {skips.summary()}"
    )
    pad_id = tokenizer.eot_id if tokenizer.eot_id is not None else 0
    loader, val_batches = build_loaders(examples, pad_id, context, cfg, train_cfg)
    settings = tuning_settings(
        "instruct",
        base_run,
        template,
        cfg.lora,
        mask_prompt=cfg.mask_prompt,
        split=list(cfg.split),
        on_overflow=cfg.on_overflow,
        skip_invalid=cfg.skip_invalid,
        examples={"train": len(examples["train"]), "val": len(examples["val"])},
        data_sha256=examples_sha256([*examples["train"], *examples["val"]]),
    )
    resume_from = start_run(out, cfg.resume, settings, train_cfg, model, log)
    trainer = Trainer(model, train_cfg, loader, val_batches, run_dir=out, progress=progress)
    result = run_trainer(trainer, resume_from, log)
    held_out = [conv for _, conv in parts[2][: cfg.max_responses]]  # [:None] = all
    sizes = {"train": len(examples["train"]), "val": len(examples["val"]), "test": len(held_out)}
    if result.stopped in INTERRUPTED:  # a checkpoint was saved; the rest waits for --resume
        return InstructReport(
            out, result, sizes, skips, [], 0.0, 0.0, checkpoint=newest_checkpoint(out)
        )
    model = trainer.model.eval()
    save_tuned(out, model, tokenizer, template, cfg.lora, base_run)
    responses = generate_responses(model, tokenizer, template, held_out, cfg.max_new_tokens)
    judge_mean = None
    if cfg.judge_url:
        scores = judge_responses(responses, cfg.judge_url, cfg.judge_model, log=log)
        if scores is not None:
            for row, score in zip(responses, scores, strict=True):
                row["score"] = score
            valid = [s for s in scores if s is not None]
            judge_mean = sum(valid) / len(valid) if valid else None
    write_jsonl(out / RESPONSES_FILE, responses)
    n = max(len(responses), 1)
    return InstructReport(
        run_dir=out,
        result=result,
        sizes=sizes,
        skips=skips,
        responses=responses,
        stop_rate=sum(r["stopped"] for r in responses) / n,
        exact_match=sum(r["exact_match"] for r in responses) / n,
        judge_mean=judge_mean,
    )


# ------------------------------------------------------------------------------- responses


@torch.no_grad()
def respond(
    model: nn.Module,
    tokenizer: Any,
    template: Template,
    messages: Sequence[Message],
    max_new_tokens: int,
) -> tuple[str, bool]:
    """Greedy response to a conversation; returns (text, stopped at the template's end token)."""
    from scratchllm.generate import SamplingConfig, generate

    device = next(model.parameters()).device
    prompt = template.encode_prompt(tokenizer, messages)
    context = model.cfg.context_length
    budget = min(max_new_tokens, context - len(prompt))
    if budget < 1:
        return "", False
    stop_ids = template.stop_token_ids(tokenizer)
    idx = torch.tensor([prompt], dtype=torch.long, device=device)
    out = generate(model, idx, budget, SamplingConfig(temperature=0.0), eot_id=stop_ids[0])
    new = out[0, len(prompt) :].tolist()
    cut = next((i for i, t in enumerate(new) if t in stop_ids), None)
    return tokenizer.decode(new[:cut] if cut is not None else new), cut is not None


def generate_responses(
    model: nn.Module,
    tokenizer: Any,
    template: Template,
    conversations: Sequence[list[Message]],
    max_new_tokens: int,
) -> list[dict[str, Any]]:
    """Responses to held-out conversations (their final assistant turn is the reference)."""
    was_training = model.training
    model.eval()
    rows = []
    for conv in conversations:
        prompt, reference = conv[:-1], conv[-1]["content"]
        text, stopped = respond(model, tokenizer, template, prompt, max_new_tokens)
        rows.append(
            {
                "messages": prompt,
                "prompt": template.render_prompt(prompt),
                "reference": reference,
                "response": text,
                "stopped": stopped,
                "exact_match": text.strip() == reference.strip(),
            }
        )
    model.train(was_training)
    return rows


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    atomic_write_bytes(path, text.encode("utf-8"))


# ------------------------------------------------------------------------------------ judge

JUDGE_PROMPT = (
    "You grade answers. Task given to a model:\n{prompt}\n\nReference answer:\n{reference}\n\n"
    "Model's answer:\n{response}\n\nRate the model's answer from 0 (useless) to 100 (as good as "
    "the reference or better). Reply with the number only."
)


def judge_responses(
    rows: Sequence[dict[str, Any]],
    url: str,
    model: str = "judge",
    *,
    timeout: float = 30.0,
    log: Log = print,
) -> list[int | None] | None:
    """0-100 scores from an OpenAI-compatible ``/chat/completions`` endpoint at ``url``.

    Returns None (after one clear message) when no endpoint answers, so a run without a judge
    still completes; a reply without a number scores None.
    """
    endpoint = url.rstrip("/") + "/chat/completions"
    scores: list[int | None] = []
    for row in rows:
        text = JUDGE_PROMPT.format(**{k: row[k] for k in ("prompt", "reference", "response")})
        body = {"model": model, "messages": [{"role": "user", "content": text}], "temperature": 0}
        request = urllib.request.Request(
            endpoint, json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as reply:
                answer = json.loads(reply.read())["choices"][0]["message"]["content"]
        except (urllib.error.URLError, OSError, ValueError, KeyError, IndexError, TypeError) as exc:
            if not scores:
                log(f"judge: no OpenAI-compatible endpoint answered at {endpoint} ({exc}); skipped")
                return None
            scores.append(None)
            continue
        match = re.search(r"\d+", str(answer))
        scores.append(min(100, int(match.group())) if match else None)
    return scores
