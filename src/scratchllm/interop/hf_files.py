"""Hugging Face checkpoint directories: read them into our models lean, write ours out.

Reading: safetensors files are memory-mapped and every tensor is a view of the mapping, so nothing
is read until used; the model is built on the meta device and those views are assigned into it.
Peak memory therefore stays near one copy of the weights (only BERT/Llama-MHA's fused q/k/v are
concatenated into new memory). Writing streams one tensor at a time into a temporary file that is
renamed into place, so exporting never holds a second copy of the model either.
"""

from __future__ import annotations

import json
import mmap
import os
import pickle
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from scratchllm.errors import CheckpointError
from scratchllm.interop.hf import (
    BERT,
    config_from_hf,
    export_layout,
    hf_config,
    ignored,
    normalise_keys,
    rules_for,
    to_ours,
    to_theirs,
)
from scratchllm.model.config import ModelConfig
from scratchllm.model.encoder import EncoderModel
from scratchllm.model.gpt import GPTModel, init_weights
from scratchllm.model.heads import MLMHead, Pooler

SAFETENSORS, SAFETENSORS_INDEX = "model.safetensors", "model.safetensors.index.json"
TORCH_BIN, TORCH_BIN_INDEX = "pytorch_model.bin", "pytorch_model.bin.index.json"
DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
# BERT heads a checkpoint may lack (BertModel has no MLM head, BertForMaskedLM no pooler):
# our part name -> the checkpoint's key prefix. Missing ones are freshly initialised.
BERT_PARTS = {"pooler": "bert.pooler.", "mlm_head": "cls.predictions."}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
HUB_FILES = [
    "config.json",
    "*.safetensors",
    SAFETENSORS_INDEX,
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
]


# ---- reading tensors -----------------------------------------------------------------------


def read_safetensors(path: Path) -> dict[str, Tensor]:
    """Every tensor of a safetensors file as a view of a private memory map (nothing read yet)."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            n = int.from_bytes(f.read(8), "little") if size >= 8 else -1
            if not 0 < n <= size - 8:
                raise ValueError(f"header length {n} does not fit a {size}-byte file")
            header = json.loads(f.read(n))
            # ACCESS_COPY: writable pages private to us (training may update them in place).
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    data = torch.frombuffer(mapped, dtype=torch.uint8)  # [size] bytes, shares the mapping
    base, out = 8 + n, {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = DTYPES[info["dtype"]]
            start, end = (base + o for o in info["data_offsets"])
            raw = data[start:end]
            if start % dtype.itemsize or not base <= start <= end <= size:
                raise ValueError("misaligned or out of range")
            out[name] = raw.view(dtype).view(info["shape"])
        except (KeyError, ValueError, RuntimeError, TypeError) as exc:
            raise CheckpointError(f"{path}: bad header entry for {name!r} ({exc})") from None
    return out


def read_torch_bin(path: Path) -> dict[str, Tensor]:
    """A pytorch_model.bin, unpickled with weights_only=True (no code runs), mapped if possible."""
    try:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # the legacy (non-zip) format cannot be memory-mapped
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError) as exc:
        raise CheckpointError(f"{path}: not a loadable weights-only torch file ({exc})") from None
    if not isinstance(sd, dict) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise CheckpointError(f"{path}: expected a dict of tensors")
    return sd


def read_weights(directory: Path) -> dict[str, Tensor]:
    """The tensors of a HF directory: single or sharded safetensors, else pytorch_model.bin."""
    for single, index, reader in (
        (SAFETENSORS, SAFETENSORS_INDEX, read_safetensors),
        (TORCH_BIN, TORCH_BIN_INDEX, read_torch_bin),
    ):
        if (directory / single).is_file():
            return reader(directory / single)
        if (directory / index).is_file():
            weight_map = _read_json(directory / index).get("weight_map")
            if not isinstance(weight_map, dict):
                raise CheckpointError(f"{directory / index}: field 'weight_map' is missing")
            out: dict[str, Tensor] = {}
            for shard in sorted(set(weight_map.values())):
                if not (directory / shard).is_file():
                    raise CheckpointError(f"{directory / shard}: shard listed in {index} missing")
                out.update(reader(directory / shard))
            return out
    raise CheckpointError(
        f"{directory}: no weights found (looked for {SAFETENSORS}, {SAFETENSORS_INDEX}, "
        f"{TORCH_BIN}, {TORCH_BIN_INDEX})"
    )


def _read_json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return obj


# ---- building our model --------------------------------------------------------------------


def check_tensors(
    expected: Mapping[str, tuple[int, ...]],
    found: Mapping[str, Tensor],
    unexpected: list[str],
    where: str,
) -> None:
    """Raise one CheckpointError listing every missing, unexpected and mis-shaped tensor."""
    missing = sorted(set(expected) - set(found))
    shapes = [
        f"{k} {tuple(found[k].shape)} (expected {shape})"
        for k, shape in expected.items()
        if k in found and tuple(found[k].shape) != shape
    ]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
        if items:
            problems.append(f"{len(items)} {label}: {', '.join(items)}")
    if problems:
        raise CheckpointError(f"{where}: tensors do not fit the config: " + "; ".join(problems))


def build_model(
    layout: str,
    cfg: ModelConfig,
    tensors: Mapping[str, Tensor],
    *,
    dtype: torch.dtype | None = None,
    where: str = "checkpoint",
) -> tuple[nn.Module, list[str]]:
    """Our model holding `tensors` (HF names); returns it and the parts freshly initialised.

    Built on the meta device, so no memory is spent on weights that are then overwritten.
    """
    encoder = layout == BERT
    with torch.device("meta"):
        model = EncoderModel(cfg) if encoder else GPTModel(cfg)
    names = normalise_keys(list(tensors), layout)  # canonical -> as in the file
    absent = [p for p, prefix in BERT_PARTS.items() if encoder and not _has(names, prefix)]
    rules = rules_for(layout, cfg, frozenset(absent))
    meta = model.state_dict()
    expected = {k: tuple(t.shape) for k, t in to_theirs(rules, meta).items()}
    unexpected = sorted(
        names[k] for k in names if k not in expected and not ignored(k, layout, cfg)
    )
    found = {k: tensors[names[k]] for k in names if k in expected}
    check_tensors(expected, found, unexpected, where)
    state = to_ours(rules, found)
    if dtype is not None:
        state = {k: v.to(dtype) for k, v in state.items()}
    model.load_state_dict(state, strict=False, assign=True)
    for part in absent:  # e.g. BertForMaskedLM has no pooler: start it as training would
        fresh = Pooler(cfg) if part == "pooler" else MLMHead(cfg)
        init_weights(fresh, cfg)
        setattr(model, part, fresh.to(model.embed.wte.weight.dtype))
    _tie(model, cfg)
    assert not any(t.is_meta for t in model.state_dict().values()), "a tensor was not loaded"
    return model.eval(), absent


def _has(names: Mapping[str, str], prefix: str) -> bool:
    return any(k.startswith(prefix) for k in names)


def _tie(model: nn.Module, cfg: ModelConfig) -> None:
    """One shared Parameter for tied matrices (assign=True loaded them as separate objects)."""
    if not cfg.tie_embeddings:
        return
    if isinstance(model, EncoderModel):
        model.mlm_head.decoder.weight = model.embed.wte.weight
    else:
        model.lm_head.weight = model.embed.wte.weight


# ---- sources -------------------------------------------------------------------------------


def how_to_download(repo_id: str) -> str:
    return (
        f"download config.json and model.safetensors (or its shards and "
        f"{SAFETENSORS_INDEX}), with vocab.json + merges.txt or tokenizer.json, from "
        f"https://huggingface.co/{repo_id}/tree/main into one directory and pass that directory"
    )


def resolve_source(src: str | Path, cache_dir: str | Path | None = None) -> Path:
    """A local directory as is; a Hub id downloaded first (needs huggingface_hub and network)."""
    path = Path(src)
    if path.is_dir():
        return path
    if path.exists() or not HUB_ID.match(str(src)) or ".." in str(src):
        raise CheckpointError(f"{src}: not a directory with a Hugging Face checkpoint")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise CheckpointError(
            f"{src!r} is not a local directory, and downloading it from the Hugging Face Hub "
            f"needs huggingface_hub (pip install 'scratchllm[hub]'); or {how_to_download(str(src))}"
        ) from None
    try:
        local = snapshot_download(str(src), allow_patterns=HUB_FILES, cache_dir=cache_dir)
    except Exception as exc:  # network, authentication, unknown repository: all end the same way
        raise CheckpointError(
            f"{src!r} is not a local directory (none at {path.resolve()}), and downloading it as "
            f"a Hugging Face Hub id failed ({type(exc).__name__}: {' '.join(str(exc).split())}); "
            f"without network access, {how_to_download(str(src))}"
        ) from None
    return Path(local)


@dataclass
class HFCheckpoint:
    """An imported checkpoint: our model, its config, the HF layout and what was not in it."""

    model: nn.Module
    cfg: ModelConfig
    layout: str
    directory: Path
    initialised: list[str] = field(default_factory=list)  # parts not in the checkpoint


def load_hf(
    src: str | Path, *, dtype: torch.dtype | None = None, cache_dir: str | Path | None = None
) -> HFCheckpoint:
    """Our model from a HF directory (config.json + weights) or Hub id; dtype None = as stored."""
    directory = resolve_source(src, cache_dir)
    layout, cfg = config_from_hf(_read_json(directory / "config.json"))
    tensors = read_weights(directory)
    model, absent = build_model(layout, cfg, tensors, dtype=dtype, where=str(directory))
    return HFCheckpoint(model, cfg, layout, directory, absent)


# ---- writing -------------------------------------------------------------------------------


def unique_tensors(model: nn.Module) -> dict[str, Tensor]:
    """Parameters and buffers with tied duplicates dropped (the first name is kept)."""
    return dict(model.named_parameters()) | dict(model.named_buffers())


def write_safetensors(
    path: str | Path, tensors: Mapping[str, Tensor], metadata: dict[str, str] | None = None
) -> None:
    """Stream tensors into a safetensors file, one at a time, then rename it into place."""
    path = Path(path)
    header: dict[str, object] = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for name, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        header[name] = {
            "dtype": DTYPE_NAMES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # tensor data starts 8-byte aligned
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        from scratchllm.train.checkpoint import file_mode

        os.fchmod(fd, file_mode())  # as its sibling files get (mkstemp makes it owner-only)
        with os.fdopen(fd, "wb") as f:
            f.write(len(blob).to_bytes(8, "little") + blob)
            for t in tensors.values():
                flat = t.detach().to("cpu").contiguous().reshape(-1)
                f.write(flat.view(torch.uint8).numpy().data)  # no extra copy
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_hf(
    model: nn.Module, directory: str | Path, *, skip_parts: tuple[str, ...] = ()
) -> dict[str, object]:
    """Write config.json + model.safetensors in the HF layout; returns the config written.

    `skip_parts` leaves out BERT heads that never held trained weights (see HFCheckpoint).
    """
    cfg: ModelConfig = model.cfg
    layout = export_layout(cfg, isinstance(model, EncoderModel))
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rules = rules_for(layout, cfg, frozenset(skip_parts))
    tensors = to_theirs(rules, model.state_dict())
    dtype = model.embed.wte.weight.dtype
    write_safetensors(directory / SAFETENSORS, tensors, {"format": "pt"})
    config = hf_config(cfg, layout, dtype)
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return config
