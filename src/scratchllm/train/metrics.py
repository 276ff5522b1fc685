"""Metrics: JSON Lines records, FLOPs and MFU (plots: ``scratchllm.viz.plot_training``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

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


class MetricsLog:
    """Append-only JSON Lines file; each record is flushed so a crash loses at most one line."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self.records: list[dict[str, Any]] = []
        if self.path and self.path.exists():
            self.records = read_metrics(self.path)

    def write(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    def truncate_after(self, step: int) -> None:
        """Drop records past ``step`` (used on resume, so a rerun does not log a step twice)."""
        self.records = [r for r in self.records if r.get("step", 0) <= step]
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            text = "".join(json.dumps(r) + "\n" for r in self.records)
            self.path.write_text(text, encoding="utf-8")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Records of a metrics.jsonl file; a torn last line (from a crash) is ignored."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
