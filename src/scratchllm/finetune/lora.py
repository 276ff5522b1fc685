"""LoRA: low-rank adapters that wrap ``nn.Linear`` so a big model is tuned through a few weights.

A wrapped layer computes ``base(x) + dropout(x) @ A.T @ B.T * (alpha / r)`` with the base frozen,
``A`` [r, in] initialised like a linear layer and ``B`` [out, r] initialised to zero, so a freshly
wrapped model computes exactly what it did before (Hu et al. 2021, "LoRA", section 4.1). The model
classes never know about LoRA: ``apply_lora`` swaps modules in place, ``merge_lora`` folds
``B @ A * scale`` back into the base weight and swaps the plain ``nn.Linear`` back.

Adapters are saved alone (``adapter.safetensors`` + ``adapter.json``) and loaded onto the base run.
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import Tensor, nn

from scratchllm.errors import CheckpointError, ConfigError
from scratchllm.train.checkpoint import atomic_write_bytes, atomic_write_json, read_json

ADAPTER_WEIGHTS = "adapter.safetensors"
ADAPTER_CONFIG = "adapter.json"
ADAPTER_FORMAT = "scratchllm-lora"
# Wrapped by default: every linear layer inside the attention and MLP modules of each block.
DEFAULT_TARGETS = ("attn", "mlp")


class LoRALinear(nn.Module):
    """``nn.Linear`` plus a trainable rank-``r`` update; the wrapped layer is frozen."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__()
        if r < 1:
            raise ConfigError(f"LoRA rank r={r} must be >= 1")
        self.base = base
        self.r = r
        self.alpha = alpha
        self.scaling = alpha / r
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.enabled = True  # False = behave like the base layer (e.g. as a DPO reference)
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, **factory))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, **factory))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # nn.Linear's own init
        for p in self.base.parameters():
            p.requires_grad_(False)

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    @property
    def weight(self) -> Tensor:
        """The base weight (so code that reads ``layer.weight`` keeps working)."""
        return self.base.weight

    def delta_weight(self) -> Tensor:
        """The update ``B @ A * scale`` [out, in] that merging adds to the base weight."""
        return (self.lora_B @ self.lora_A) * self.scaling

    def forward(self, x: Tensor) -> Tensor:
        out = self.base(x)
        if not self.enabled:
            return out
        update = self.dropout(x) @ self.lora_A.t() @ self.lora_B.t()  # [..., in] -> [..., out]
        return out + update * self.scaling

    def merged(self) -> nn.Linear:
        """A plain ``nn.Linear`` holding base + update (the wrapper itself is unchanged)."""
        linear = nn.Linear(
            self.in_features,
            self.out_features,
            bias=self.base.bias is not None,
            device=self.base.weight.device,
            dtype=self.base.weight.dtype,
        )
        with torch.no_grad():
            linear.weight.copy_(self.base.weight + self.delta_weight().to(self.base.weight.dtype))
            if self.base.bias is not None:
                linear.bias.copy_(self.base.bias)
        return linear

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha}, scaling={self.scaling:g}"


@dataclass
class LoRAConfig:
    r: int = 8  # rank of the update
    alpha: float = 16.0  # the update is scaled by alpha / r
    dropout: float = 0.0  # dropout on the adapter's input
    targets: list[str] = field(
        default_factory=lambda: list(DEFAULT_TARGETS)
    )  # module path pieces to wrap

    def __post_init__(self) -> None:
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r < 1:
            raise ConfigError(f"LoRAConfig.r={self.r!r} must be a positive integer")
        for name in ("alpha", "dropout"):  # read back from JSON, they can be any value
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"LoRAConfig.{name}={value!r} must be a number")
        if not self.alpha > 0:
            raise ConfigError(f"LoRAConfig.alpha={self.alpha!r} must be > 0")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"LoRAConfig.dropout={self.dropout!r} must be in [0, 1)")
        if not isinstance(self.targets, list | tuple) or not all(
            isinstance(t, str) for t in self.targets
        ):
            raise ConfigError(f"LoRAConfig.targets={self.targets!r} must be a list of names")
        if not self.targets:
            raise ConfigError("LoRAConfig.targets is empty: name at least one linear layer")


def _matches(name: str, targets: Sequence[str]) -> bool:
    """A target names a module path piece: ``"qkv"``, ``"attn"``, ``"blocks.0.mlp"``, ``"lm_head"``."""
    return any(f".{t}." in f".{name}." for t in targets)


def apply_lora(
    model: nn.Module,
    targets: Sequence[str] = DEFAULT_TARGETS,
    r: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
) -> list[str]:
    """Freeze ``model`` and wrap each ``nn.Linear`` whose name ends with a target; returns the names.

    A target matches a linear layer when it is a dotted piece of the layer's name: ``"qkv"`` and
    ``"out_proj"`` name layers, ``"attn"`` and ``"mlp"`` every linear layer inside such modules,
    ``"blocks.0"`` the first block. A target that matches nothing raises, naming the layers.
    """
    # a list or tuple as given; anything else (a number or string read from JSON) is refused there
    listed = list(targets) if isinstance(targets, list | tuple) else targets
    LoRAConfig(r=r, alpha=alpha, dropout=dropout, targets=listed)
    wrapped = [name for name, _ in lora_layers(model)]
    if wrapped:  # a second pass would wrap the frozen base layers and freeze the first adapters
        raise ConfigError(
            f"the model already has LoRA adapters on {len(wrapped)} layer(s) (e.g. {wrapped[0]}); "
            "merge them first (merge_lora) or start from the base model"
        )
    for p in model.parameters():
        p.requires_grad_(False)
    found = [
        name
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and _matches(name, targets)
    ]
    unmatched = [t for t in targets if not any(_matches(n, [t]) for n in found)]
    if not found or unmatched:
        linears = sorted(
            {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)}
        )
        raise ConfigError(
            f"LoRA target(s) {unmatched or list(targets)} match no nn.Linear in the model; "
            f"its linear layers are named {linears}"
        )
    for name in found:
        parent, child = _parent(model, name)
        setattr(parent, child, LoRALinear(getattr(parent, child), r, alpha, dropout))
    return found


def _parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent_name, _, child = name.rpartition(".")
    return (model.get_submodule(parent_name) if parent_name else model), child


def lora_layers(model: nn.Module) -> Iterator[tuple[str, LoRALinear]]:
    for name, m in model.named_modules():
        if isinstance(m, LoRALinear):
            yield name, m


def merge_lora(model: nn.Module) -> int:
    """Fold every adapter into its base weight and unwrap it; returns how many were merged.

    The merged model computes the same function (up to float rounding) with no extra matmuls, and
    its state dict has the base model's names again, so it saves as an ordinary run. An adapter on
    a layer whose weight is shared (an output head tied to the token embedding) gives that layer
    its own merged weight, and ``model.cfg.tie_embeddings`` becomes False so the run saves and
    loads as it computes. Parameters are left trainable again as in a freshly built model.
    """
    layers = list(lora_layers(model))
    uses = Counter(id(p) for _, p in model.named_parameters(remove_duplicate=False))
    untied = False
    for name, layer in layers:
        parent, child = _parent(model, name)
        untied |= uses[id(layer.base.weight)] > 1  # e.g. an lm_head tied to the embedding
        setattr(parent, child, layer.merged())
    cfg = getattr(model, "cfg", None)
    if untied and getattr(cfg, "tie_embeddings", False):
        # The merged head differs from the embedding now: saved as tied, one would be lost.
        model.cfg = replace(cfg, tie_embeddings=False)
    for p in model.parameters():
        p.requires_grad_(True)
    return len(layers)


@contextlib.contextmanager
def lora_disabled(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` as its base (adapters off), e.g. as the frozen reference in DPO."""
    layers = [m for _, m in lora_layers(model)]
    previous = [m.enabled for m in layers]
    for m in layers:
        m.enabled = False
    try:
        yield model
    finally:
        for m, flag in zip(layers, previous, strict=True):
            m.enabled = flag


def count_trainable(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts, each shared tensor counted once."""
    params = list(model.parameters())  # parameters() yields a tied tensor once
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def trainable_summary(model: nn.Module) -> str:
    trainable, total = count_trainable(model)
    return (
        f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / max(total, 1):.2f}%)"
    )


# ---------------------------------------------------------------------------------------- files


def adapter_state(model: nn.Module) -> dict[str, Tensor]:
    """The adapter tensors only (``...lora_A`` / ``...lora_B``), on the CPU."""
    return {
        name: t.detach().to("cpu").contiguous()
        for name, t in model.state_dict().items()
        if name.endswith((".lora_A", ".lora_B"))
    }


def base_weights_digest(base_run: str | Path) -> str | None:
    """SHA-256 of the weights file a base run's model comes from: ``model.safetensors``, or for a
    base that is itself an unmerged adapter run, its ``adapter.safetensors`` (whose own record
    pins the next base). None when the base holds neither (nothing to check)."""
    from scratchllm.train.checkpoint import WEIGHTS_FILE, sha256_file

    for name in (WEIGHTS_FILE, ADAPTER_WEIGHTS):
        path = Path(base_run) / name
        if path.is_file():
            return sha256_file(path)
    return None


def check_base(run_dir: Path, record: dict[str, Any], base: str | Path) -> None:
    """CheckpointError unless ``base`` holds the weights the adapter in ``run_dir`` was trained
    on (as ``adapter.json`` records them; an adapter saved before the record existed passes)."""
    want = record.get("base_weights_sha256")
    if want is None:
        return
    got = base_weights_digest(base)
    if got != want:
        trained_on = record.get("base_run") or "another run"
        raise CheckpointError(
            f"{run_dir / ADAPTER_CONFIG}: the adapter was trained on the weights of "
            f"{trained_on} (SHA-256 {want[:12]}...), but {base} holds other weights "
            f"({'none found' if got is None else f'SHA-256 {got[:12]}...'}); an adapter on "
            "other weights gives a model nobody trained. To merge anyway: "
            f"`scratchllm lora merge --run {run_dir} --base {base} --any-base`"
        )


def save_adapter(
    model: nn.Module, directory: str | Path, config: LoRAConfig, base_run: str | Path | None
) -> Path:
    """Write ``adapter.safetensors`` and ``adapter.json`` (rank, alpha, targets, base run)."""
    directory = Path(directory)
    tensors = adapter_state(model)
    if not tensors:
        raise ConfigError("the model has no LoRA layers to save; call apply_lora first")
    atomic_write_bytes(
        directory / ADAPTER_WEIGHTS, save(tensors, metadata={"format": ADAPTER_FORMAT})
    )
    record = {
        "format": ADAPTER_FORMAT,
        "version": 1,
        "lora": asdict(config),
        "base_run": str(Path(base_run).resolve()) if base_run else None,
        # which weights the adapter was trained on: merging it onto others is refused
        "base_weights_sha256": base_weights_digest(base_run) if base_run else None,
        "layers": sorted({n.rsplit(".", 1)[0] for n in tensors}),
    }
    atomic_write_json(directory / ADAPTER_CONFIG, record)
    return directory / ADAPTER_WEIGHTS


def read_adapter_config(directory: str | Path) -> tuple[LoRAConfig, dict[str, Any]]:
    """The adapter's ``LoRAConfig`` and its raw record (which names the base run)."""
    path = Path(directory) / ADAPTER_CONFIG
    record = read_json(path)
    if not isinstance(record, dict) or record.get("format") != ADAPTER_FORMAT:
        raise CheckpointError(f"{path}: not a scratchllm LoRA adapter config")
    base = record.get("base_run")
    if base is not None and not isinstance(base, str):
        raise CheckpointError(f"{path}: field 'base_run' must be a path, got {base!r}")
    digest = record.get("base_weights_sha256")
    if digest is not None and not isinstance(digest, str):
        raise CheckpointError(
            f"{path}: field 'base_weights_sha256' must be a hex digest, got {digest!r}"
        )
    try:
        return LoRAConfig(**record["lora"]), record
    except (KeyError, TypeError, ValueError) as exc:  # ValueError: LoRAConfig's own checks
        raise CheckpointError(f"{path}: field 'lora' is missing or malformed ({exc})") from None


def load_adapter(model: nn.Module, directory: str | Path) -> LoRAConfig:
    """Apply LoRA as recorded in ``directory`` to a base ``model`` and load the adapter tensors."""
    directory = Path(directory)
    config, record = read_adapter_config(directory)
    path = directory / ADAPTER_WEIGHTS
    try:
        tensors = load_file(path, device="cpu")
    except FileNotFoundError:
        raise CheckpointError(f"{path}: adapter weights not found") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    names = set(apply_lora(model, config.targets, config.r, config.alpha, config.dropout))
    expected = adapter_state(model)
    problems = [f"unexpected tensor {k}" for k in sorted(set(tensors) - set(expected))]
    problems += [f"missing tensor {k}" for k in sorted(set(expected) - set(tensors))]
    problems += [
        f"{k}: shape {tuple(tensors[k].shape)} in file, {tuple(v.shape)} in model"
        for k, v in expected.items()
        if k in tensors and tensors[k].shape != v.shape
    ]
    if problems:
        raise CheckpointError(
            f"{path}: adapter does not fit the base model ({len(names)} layers wrapped): "
            + "; ".join(problems)
        )
    model.load_state_dict(tensors, strict=False)
    return config


def merge_adapter_run(
    run_dir: str | Path, base_run: str | Path | None = None, *, any_base: bool = False
) -> tuple[Path, int]:
    """Turn an adapter directory into a standalone run: base + adapter, merged, saved in place.

    Returns the directory and the number of merged layers. The base run is the one recorded in
    ``adapter.json`` unless ``base_run`` is given; either way it must hold the weights the
    adapter was trained on (`check_base`), unless ``any_base``. The run keeps the adapter
    directory's tokenizer when it has one, as `load_adapter_run` does.
    """
    from scratchllm.tokenizer import load_tokenizer
    from scratchllm.train.checkpoint import TOKENIZER_FILE, load_run, save_run

    run_dir = Path(run_dir)
    _, record = read_adapter_config(run_dir)
    base = base_run or record.get("base_run")
    if not base:
        raise CheckpointError(f"{run_dir / ADAPTER_CONFIG}: no base run recorded; pass --base")
    if not any_base:
        check_base(run_dir, record, base)
    run = load_run(base)
    load_adapter(run.model, run_dir)
    n = merge_lora(run.model)
    tokenizer = load_tokenizer(run_dir) if (run_dir / TOKENIZER_FILE).exists() else run.tokenizer
    save_run(run_dir, run.model.eval(), run.model.cfg, tokenizer)
    return run_dir, n


def is_adapter_run(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds an adapter that was never merged (adapter.json, no config.json)."""
    from scratchllm.train.checkpoint import CONFIG_FILE

    run_dir = Path(run_dir)
    return (run_dir / ADAPTER_CONFIG).is_file() and not (run_dir / CONFIG_FILE).exists()


def load_adapter_run(run_dir: str | Path, device: str | torch.device = "cpu") -> Any:
    """Load an unmerged adapter directory as a `Run`: its base run (from ``adapter.json``) with the
    adapter applied and merged in memory, and the adapter directory's tokenizer. Nothing is
    written; ``scratchllm lora merge`` makes the standalone run. A missing base run raises a
    ``CheckpointError`` that says how to merge with another base."""
    from scratchllm.tokenizer import load_tokenizer
    from scratchllm.train.checkpoint import TOKENIZER_FILE, Run, load_run

    run_dir = Path(run_dir)
    _, record = read_adapter_config(run_dir)
    base = record.get("base_run")
    merge = f"`scratchllm lora merge --run {run_dir} --base BASE_RUN`"
    if not base or not Path(base).is_dir():
        where = f"its base run {base} is not found" if base else "it records no base run"
        raise CheckpointError(
            f"{run_dir} is a LoRA adapter run (adapter.json, no config.json) and {where}; "
            f"merge it with {merge} to make a standalone run"
        )
    check_base(run_dir, record, base)
    run = load_run(base)
    load_adapter(run.model, run_dir)
    merge_lora(run.model)
    tokenizer = load_tokenizer(run_dir) if (run_dir / TOKENIZER_FILE).exists() else run.tokenizer
    model = run.model.requires_grad_(False).to(device).eval()
    # the base run's config record, plus the adapter's record (which names the base)
    return Run(run_dir, model, tokenizer, {**run.config, "adapter": record})
