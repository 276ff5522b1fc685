"""Training curves of one or more runs: loss, learning rate and throughput against step."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scratchllm.errors import DataError
from scratchllm.viz._figure import DPI, pyplot, save

METRICS_FILE = "metrics.jsonl"


def run_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records of ``run_dir/metrics.jsonl``.

    A missing file raises naming it; lines that are not JSON objects with a ``step`` (a torn
    write, a stray edit) are skipped with one warning that counts them and names the first;
    a file with no records at all is a DataError.
    """
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics file (is {run_dir} a training run?)")
    records: list[dict[str, Any]] = []
    bad: list[int] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict) and isinstance(record.get("step"), int | float):
            records.append(record)
        else:
            bad.append(n)
    if not records:
        raise DataError(f"no metrics records in {path}")
    if bad:
        warnings.warn(
            f"{path}: skipped {len(bad)} line(s) that are not metrics records (first: line "
            f"{bad[0]})",
            stacklevel=2,
        )
    return records


def _series(records: Sequence[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    pairs = [(r["step"], r[key]) for r in records if isinstance(r.get(key), int | float)]
    pairs = [(s, v) for s, v in pairs if math.isfinite(v)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def plot_training(
    runs: Sequence[str | Path | tuple[str, Sequence[dict[str, Any]]]],
    out: str | Path,
    *,
    title: str = "Training curves",
) -> Path:
    """Loss (train and validation), learning rate and tokens/s against step, one colour per run.

    ``runs``: run directories, or ``(label, records)`` pairs. Returns the path written.
    """
    if not runs:
        raise ValueError("plot_training needs at least one run")
    named = [r if isinstance(r, tuple) else (Path(r).name, run_metrics(r)) for r in runs]
    plt = pyplot()
    fig, (ax_loss, ax_lr, ax_tps) = plt.subplots(1, 3, figsize=(15, 4.2), dpi=DPI)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for n, (label, records) in enumerate(named):
        colour = colours[n % len(colours)]
        steps, loss = _series(records, "loss")
        ax_loss.plot(steps, loss, color=colour, alpha=0.8, label=f"{label} train")
        steps, val = _series(records, "val_loss")
        if steps:
            ax_loss.plot(steps, val, "o--", color=colour, label=f"{label} validation")
        ax_lr.plot(*_series(records, "lr"), color=colour, label=label)
        ax_tps.plot(*_series(records, "tokens_per_s"), color=colour, label=label)
    ax_loss.set(xlabel="step", ylabel="cross-entropy (nats/token)", title=title)
    ax_lr.set(xlabel="step", ylabel="learning rate", title="Learning rate")
    ax_tps.set(xlabel="step", ylabel="tokens/s", title="Throughput")
    for ax in (ax_loss, ax_lr, ax_tps):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save(fig, out)
