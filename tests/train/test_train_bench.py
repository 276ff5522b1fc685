"""The training benchmarks run (at a tiny size, on CPU) and print a table with a ratio column."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.mark.parametrize(
    "script,args",
    [("train.py", ["--tiny", "--minimal"]), ("gpu_train.py", ["--tiny", "--no-compile"])],
)
def test_training_benchmark_runs_tiny(script, args):
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert any("transformers" in r and "1.00x" in r for r in rows)
    ratio = re.compile(r"\| +\d+\.\d\dx \|")  # the ratio column, e.g. "|  1.52x |"
    assert any(r.startswith("| scratchllm GPTModel") and ratio.search(r) for r in rows)
