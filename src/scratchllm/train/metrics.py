"""Metrics: JSON Lines records, FLOPs and MFU (plots: ``scratchllm.viz.plot_training``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from scratchllm.errors import ConfigError

# Dense bf16 tensor-core peak (TFLOP/s, without sparsity) from each vendor's data sheet, matched
# against torch.cuda.get_device_name(). Longest names first so "H100 PCIe" wins over "H100".
PEAK_BF16_TFLOPS: dict[str, float] = {
    "H200": 989.0,
    "H100 PCIe": 756.0,
    "H100": 989.0,
    "GH200": 989.0,
    "B200": 2250.0,
    "A100": 312.0,
    "A10G": 125.0,
    "A10": 125.0,
    "L40S": 362.0,
    "L4": 121.0,
    "RTX 4090": 165.0,
    "RTX 3090": 71.0,
    "V100": 125.0,  # fp16 (V100 has no bf16)
    "T4": 65.0,  # fp16
}


def peak_tflops(device: torch.device) -> float | None:
    """Peak bf16 TFLOP/s of a CUDA device, or None when unknown (MFU is then not reported)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key in sorted(PEAK_BF16_TFLOPS, key=len, reverse=True):
        if key in name:
            return PEAK_BF16_TFLOPS[key]
    return None


def flops_per_token(n_params: int, n_layer: int, n_embd: int, context_length: int) -> float:
    """Training FLOPs per token: 6N for the matmuls plus 12·L·T·C for attention scores (PaLM, B.)."""
    return 6.0 * n_params + 12.0 * n_layer * n_embd * context_length


# TensorBoard tag of each metric field; a field not listed goes under "train/<field>".
TENSORBOARD_TAGS = {
    "loss": "train/loss",
    "lr": "train/lr",
    "grad_norm": "train/grad_norm",
    "tokens_per_s": "train/tokens_per_s",
    "mfu": "train/mfu",
    "train_eval_loss": "train/eval_loss",
    "val_loss": "val/loss",
    "val_ppl": "val/perplexity",
}
NOT_SCALARS = ("step", "tokens", "elapsed_s")


def tensorboard_writer(log_dir: str | Path, purge_step: int | None = None):
    """A `torch.utils.tensorboard.SummaryWriter`, or a clear error when tensorboard is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch raises ImportError when the tensorboard package is absent
        raise ConfigError(
            "TrainConfig.tensorboard=true needs the tensorboard package: "
            "pip install 'scratchllm[tensorboard]' (or set train.tensorboard=false)"
        ) from None
    return SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)


class MetricsLog:
    """Append-only JSON Lines file; each record is flushed so a crash loses at most one line.

    With ``tensorboard_dir`` every numeric field is also written as a TensorBoard scalar (tags in
    `TENSORBOARD_TAGS`, x axis = optimizer step) and every generated sample as text.
    """

    def __init__(self, path: str | Path | None, tensorboard_dir: str | Path | None = None):
        self.path = Path(path) if path else None
        self.records: list[dict[str, Any]] = []
        if self.path and self.path.exists():
            self.records = read_metrics(self.path)
        self.tensorboard_dir = Path(tensorboard_dir) if tensorboard_dir else None
        self._tb = None
        if self.tensorboard_dir is not None:
            self._tb = tensorboard_writer(self.tensorboard_dir)  # fails early when not installed

    def write(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        if self.tensorboard_dir is not None:
            if self._tb is None:  # reopened after close(), e.g. a second Trainer.fit()
                self._tb = tensorboard_writer(self.tensorboard_dir)
            step = int(record.get("step", 0))
            for key, value in record.items():
                if key == "sample" and isinstance(value, str):
                    self._tb.add_text("sample", value, step)
                elif key not in NOT_SCALARS and isinstance(value, (int, float)):
                    self._tb.add_scalar(TENSORBOARD_TAGS.get(key, f"train/{key}"), value, step)
            self._tb.flush()

    def truncate_after(self, step: int) -> None:
        """Drop records past ``step`` (used on resume, so a rerun does not log a step twice)."""
        self.records = [r for r in self.records if r.get("step", 0) <= step]
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            text = "".join(json.dumps(r) + "\n" for r in self.records)
            self.path.write_text(text, encoding="utf-8")
        if self._tb is not None:  # TensorBoard hides events past step+1 written by earlier runs
            self._tb.close()
            self._tb = tensorboard_writer(self.tensorboard_dir, purge_step=step + 1)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Records of a metrics.jsonl file; a torn last line (from a crash) is ignored."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
