"""`scratchllm pretrain`: a pretraining job described by a TOML/JSON file plus overrides.

A job file has top-level keys and three tables (every key is optional)::

    out = "runs/shakespeare-char"   # run directory
    objective = "next-token"        # or "masked" (BERT-style encoder)
    resume = "auto"                 # continue from the newest checkpoint in `out`, if any
    overwrite = false               # replace an earlier run's outputs in `out` (else refused)

    [data]
    path = "input.txt"              # file, directory, glob or "builtin"
    shards = ""                     # or a directory from `scratchllm data prepare`
    tokenizer = "bpe"               # "bpe" (trained here), "char", "word", or a tokenizer path
    vocab_size = 4096               # for a trained BPE tokenizer
    val_fraction = 0.1              # share of documents (or, for one document, of tokens)
    stride = 0                      # window stride; 0 = context_length (no overlap)

    [model]                         # ModelConfig fields; `preset` picks a base to override
    preset = "tiny"
    n_layer = 4

    [train]                         # TrainConfig fields
    max_steps = 2000

Overrides use dotted keys: ``--set train.lr=1e-3 --set model.n_layer=6``.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scratchllm.errors import CheckpointError, ConfigError, check_field_types

OBJECTIVES = ("next-token", "masked")
TOP_LEVEL = {"out", "objective", "resume", "overwrite", "data", "model", "train"}
DATA_KEYS = {"path", "shards", "tokenizer", "vocab_size", "val_fraction", "stride"}


@dataclass
class DataSpec:
    path: str = "builtin"  # text source: file, directory, glob or "builtin"
    shards: str = ""  # prepared shard directory (overrides path)
    tokenizer: str = "bpe"  # "bpe" | "char" | "word" | path to a saved tokenizer
    vocab_size: int = 4096  # BPE vocabulary size when the tokenizer is trained here
    val_fraction: float = 0.1  # held-out share
    stride: int = 0  # window stride; 0 = context_length

    def __post_init__(self) -> None:
        check_field_types(self, "data")
        if self.vocab_size < 1:
            raise ConfigError(f"data.vocab_size must be >= 1, got {self.vocab_size}")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"data.val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.stride < 0:
            raise ConfigError(f"data.stride must be >= 0 (0 = context_length), got {self.stride}")


@dataclass
class Job:
    out: str = "runs/pretrain"
    objective: str = "next-token"
    resume: str = ""  # "", "auto" or a checkpoint directory
    overwrite: bool = False  # start over in an `out` that holds an earlier run's outputs
    data: DataSpec = field(default_factory=DataSpec)
    model: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _parse_value(text: str) -> Any:
    """A command-line value as TOML would read it (numbers, booleans, strings)."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def load_job(path: str | None, overrides: list[str] = ()) -> Job:
    """Read a job file (TOML or JSON) and apply ``key=value`` overrides; validate every key."""
    raw: dict[str, Any] = {}
    if path:
        file = Path(path)
        try:
            text = file.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {file}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"{file}: not UTF-8 text ({exc.reason} at byte {exc.start})"
            ) from None
        try:
            raw = json.loads(text) if file.suffix == ".json" else tomllib.loads(text)
        except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{file}: cannot parse ({exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a table (object) of keys")
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        *sections, name = parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"override {item!r}: the key {key!r} has an empty part")
        node = raw
        for section in sections:
            node = node.setdefault(section, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {section} is not a table")
        node[name] = _parse_value(value.strip())
    unknown = set(raw) - TOP_LEVEL
    if unknown:
        raise ConfigError(f"unknown config key(s): {', '.join(sorted(unknown))}")
    for table in ("data", "model", "train"):
        if not isinstance(raw.get(table, {}), dict):
            raise ConfigError(f"[{table}] must be a table of keys, got {raw[table]!r}")
    for key in ("out", "objective", "resume"):
        if key in raw and not isinstance(raw[key], str):
            raise ConfigError(f"{key} must be a string, got {raw[key]!r}")
    data = raw.get("data", {})
    bad = set(data) - DATA_KEYS
    if bad:
        raise ConfigError(f"unknown [data] key(s): {', '.join(sorted(bad))}")
    job = Job(
        out=str(raw.get("out", Job.out)),
        objective=str(raw.get("objective", Job.objective)),
        resume=str(raw.get("resume", "")),
        overwrite=raw.get("overwrite", False),
        data=DataSpec(**data),
        model=dict(raw.get("model", {})),
        train=dict(raw.get("train", {})),
    )
    if job.objective not in OBJECTIVES:
        raise ConfigError(f"objective must be one of {OBJECTIVES}, got {job.objective!r}")
    if not isinstance(job.overwrite, bool):
        raise ConfigError(f"overwrite must be true or false, got {job.overwrite!r}")
    return job


def resolve_configs(job: Job, vocab_size: int):
    """The ModelConfig and TrainConfig a job describes (each validated, naming bad fields)."""
    from scratchllm.model import ModelConfig, get_preset
    from scratchllm.train.config import TrainConfig

    fields = dict(job.model)
    preset = fields.pop("preset", None)
    fields["vocab_size"] = vocab_size
    if preset:
        model_cfg = get_preset(preset, **fields)
    else:
        defaults = {"context_length": 128, "n_embd": 192, "n_layer": 4, "n_head": 6}
        model_cfg = ModelConfig.from_dict({**defaults, **fields})
    return model_cfg, TrainConfig.from_dict(job.train)


def build_tokenizer(spec: DataSpec, train_texts: list[str], run_dir: Path, objective: str = ""):
    """The job's tokenizer: reloaded from the run on resume, loaded from a path, or trained
    (with a ``[MASK]`` special token when the objective is masked-token prediction)."""
    from scratchllm.tokenizer import BPETokenizer, WordTokenizer, load_tokenizer
    from scratchllm.tokenizer.bpe import ENDOFTEXT
    from scratchllm.tokenizer.simple import DEFAULT_SPECIALS

    masked = objective == "masked"
    if (run_dir / "tokenizer.json").exists():
        return load_tokenizer(run_dir)
    if spec.tokenizer == "bpe":
        specials = (ENDOFTEXT, "[MASK]") if masked else (ENDOFTEXT,)
        return BPETokenizer.train(train_texts, spec.vocab_size, special_tokens=specials)
    if spec.tokenizer in ("char", "word"):
        specials = {**DEFAULT_SPECIALS, "mask": "[MASK]"} if masked else None
        return WordTokenizer.train(train_texts, mode=spec.tokenizer, specials=specials)
    return load_tokenizer(spec.tokenizer)


def build_data(job: Job, seed: int):
    """(tokenizer, train ids or shard dir, validation ids) for a job."""
    from scratchllm.data.sources import read_text_sources, split_documents
    from scratchllm.tokenizer import load_tokenizer
    from scratchllm.train.pretrain import split_ids

    run_dir = Path(job.out)
    if job.data.shards:
        from scratchllm.data.shards import open_shards, read_index, tokenizer_hash

        index = read_index(job.data.shards)  # a missing or unfinished directory, named
        if job.data.tokenizer in ("bpe", "char", "word"):
            raise ConfigError(
                f"data.shards needs data.tokenizer to be the directory of the tokenizer the "
                f"shards were prepared with, not {job.data.tokenizer!r}"
            )
        tokenizer = load_tokenizer(job.data.tokenizer)
        if tokenizer_hash(tokenizer) != index.settings.tokenizer_hash:
            raise ConfigError(
                f"data.tokenizer {job.data.tokenizer} is not the tokenizer "
                f"{job.data.shards} was prepared with (its sha256 differs from index.json's)"
            )
        val = open_shards(job.data.shards, "val")
        val_ids = np.concatenate(val) if val else np.zeros(0, dtype=np.int64)
        return tokenizer, None, val_ids
    docs = read_text_sources(job.data.path)
    train_docs, val_docs = split_documents(docs, job.data.val_fraction, seed=seed)
    tokenizer = build_tokenizer(job.data, [d.text for d in train_docs], run_dir, job.objective)
    train_ids, val_ids = split_ids(train_docs, val_docs, tokenizer, job.data.val_fraction)
    return tokenizer, train_ids, val_ids


def latest_checkpoint(run_dir: Path) -> Path | None:
    from scratchllm.train.checkpoint import list_checkpoints

    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def run_job(job: Job, progress: bool = True, log=print):
    """Run a pretraining job end to end; returns the TrainResult. Under torchrun it joins the
    process group and leaves it at the end (also on an error)."""
    from scratchllm.train.distributed import shutdown_distributed

    try:
        result = _run_job(job, progress, log)
    except BaseException:
        shutdown_distributed(synchronize=False)  # the other ranks may never reach a barrier
        raise
    shutdown_distributed()
    return result


def _run_job(job: Job, progress: bool, log):
    from scratchllm.data.loaders import EpochLoader, ShardSampler
    from scratchllm.data.windows import WindowDataset
    from scratchllm.model import EncoderModel, GPTModel
    from scratchllm.train.checkpoint import atomic_write_json, clear_run, run_entries, save_run
    from scratchllm.train.distributed import device_for, init_distributed
    from scratchllm.train.loop import Trainer
    from scratchllm.train.objectives import MaskedLM, masked_lm_loss, next_token_loss
    from scratchllm.train.pretrain import sampler

    seed = int(job.train.get("seed", 1337))
    run_dir = Path(job.out)
    resume = latest_checkpoint(run_dir) if job.resume == "auto" else job.resume
    if resume and (Path(resume) / "checkpoints").is_dir():  # a run directory: its newest one
        resume = latest_checkpoint(Path(resume))
        if resume is None:
            raise CheckpointError(f"{job.resume}: the run has no complete checkpoint to resume")
    earlier = [] if resume else run_entries(run_dir)
    if earlier and not job.overwrite:
        how = "resume it with --resume, " if latest_checkpoint(run_dir) else ""
        raise ConfigError(
            f"{run_dir} already holds a run ({', '.join(earlier)}): {how}replace it with "
            "--overwrite, or choose another --out"
        )
    info = init_distributed(str(job.train.get("device", "auto")))
    if earlier and info.is_main:
        clear_run(run_dir)
        log(f"removed the earlier run's outputs from {run_dir}: {', '.join(earlier)}")
    if earlier and info.enabled:
        torch.distributed.barrier()  # no rank reads the run directory before it is cleared
    torch.manual_seed(seed)
    tokenizer, train_ids, val_ids = build_data(job, seed)
    model_cfg, train_cfg = resolve_configs(job, tokenizer.vocab_size)
    train_cfg.device = device_for(info, train_cfg.device)
    if resume:  # before anything is written: a mismatch leaves the run as it was
        _check_resumable(Path(resume), model_cfg, train_cfg, job)
    ctx = model_cfg.context_length
    stride = job.data.stride or ctx
    if job.data.shards:
        loader = ShardSampler.from_dir(
            job.data.shards, "train", train_cfg.batch_size, ctx, seed=seed
        )
    else:
        loader = EpochLoader(WindowDataset(train_ids, ctx, stride), train_cfg.batch_size, seed=seed)
    val_loader = None
    if len(val_ids) > 1:
        val_ds = WindowDataset(val_ids, ctx, ctx, last="pad", pad_id=tokenizer.eot_id or 0)
        val_loader = EpochLoader(val_ds, train_cfg.batch_size, shuffle=False, drop_last=False)

    def val_batches():
        val_loader.load_state_dict({"epoch": 0, "batch_index": 0})
        return iter(val_loader)

    train_eval_batches = None
    if train_cfg.eval_train:  # a fixed, unshuffled pass over training windows (first shard)
        if train_ids is None:
            from scratchllm.data.shards import open_shards

            train_ids = open_shards(job.data.shards, "train")[0]
        train_eval_ds = WindowDataset(train_ids, ctx, ctx)

        def train_eval_batches():
            return iter(
                EpochLoader(train_eval_ds, train_cfg.batch_size, shuffle=False, drop_last=False)
            )

    if job.objective == "masked":
        mask_id = _mask_token_id(tokenizer)
        model = EncoderModel(model_cfg)
        specials = tuple(tokenizer.special_tokens.values())
        recipe = MaskedLM(mask_id=mask_id, vocab_size=model_cfg.vocab_size, special_ids=specials)
        loss_fn = masked_lm_loss(recipe)
    else:
        model, loss_fn = GPTModel(model_cfg), next_token_loss
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        tokenizer.save(run_dir)
        atomic_write_json(run_dir / "job.json", job.to_dict())
    trainer = Trainer(
        model,
        train_cfg,
        loader,
        val_batches if val_loader else None,
        run_dir=run_dir,
        loss_fn=loss_fn,
        progress=progress,
        dist=info,
        sample=None if job.objective == "masked" else sampler(tokenizer, "", 32, seed),
        train_eval_batches=train_eval_batches,
    )
    if resume:
        trainer.resume(resume)
        log(f"resumed from {resume} at step {trainer.step}")
    result = trainer.fit()
    final_model = trainer.unsharded_model()  # collective under FSDP: every rank must call it
    if info.is_main:
        save_run(run_dir, final_model, model_cfg, tokenizer)
    return result


def _mask_token_id(tokenizer) -> int:
    specials = tokenizer.special_tokens
    for name in ("[MASK]", "<|mask|>"):
        if name in specials:
            return specials[name]
    raise ConfigError(
        "objective 'masked' needs a [MASK] special token; the tokenizer has "
        f"{sorted(specials)} — train one with a [MASK] special token"
    )


def _check_resumable(directory: Path, model_cfg, train_cfg, job: Job | None = None) -> None:
    """A checkpoint from another configuration cannot be resumed: name the fields that differ."""
    from scratchllm.train.checkpoint import read_json, verify_checkpoint
    from scratchllm.train.config import RESUME_KEYS

    verify_checkpoint(directory)  # complete and intact before anything is read from it
    state = read_json(directory / "state.json")
    saved = state.get("train_config", {})
    mine = train_cfg.to_dict()
    # only an unchanged config reproduces the uninterrupted run; RESUME_KEYS must not change
    diff = [
        f"train.{k}: {saved[k]} in checkpoint, {mine[k]} now"
        for k in RESUME_KEYS
        if k in saved and saved[k] != mine[k]
    ]
    # The data settings that decide the token ids and windows, from the run's job.json.
    saved_job = directory.parent.parent / "job.json"
    if job is not None and saved_job.exists():
        before = read_json(saved_job)
        before = before if isinstance(before, dict) else {}
        now = job.to_dict()
        if before.get("objective", now["objective"]) != now["objective"]:
            diff.append(f"objective: {before['objective']} in checkpoint, {now['objective']} now")
        for key in ("tokenizer", "vocab_size", "val_fraction", "stride", "path", "shards"):
            old, new = before.get("data", {}).get(key), now["data"][key]
            if old is not None and old != new:
                diff.append(f"data.{key}: {old} in checkpoint, {new} now")
    saved_model = state.get("model_config")
    if saved_model:
        now = model_cfg.to_dict()
        diff += [
            f"model.{k}: {saved_model[k]} in checkpoint, {now.get(k)} now"
            for k in saved_model
            if saved_model[k] != now.get(k)
        ]
    if diff:
        raise CheckpointError(
            f"{directory}: cannot resume, configuration differs: " + "; ".join(diff)
        )
